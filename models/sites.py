"""Sample-site and plate names, and plate dimensions, defined once.

Models and guides write the same names, and objectives, diagnostics and tests
read traces by them.

Plate layout (right-most batch dimensions, event dimensions excluded):

* ``ITEMS`` at dim ``ITEMS_DIM = -2``: one entry per data item (group of views),
  with ``size`` = number of training items and ``subsample`` = the minibatch
  indices, so log-densities are scaled to per-data-set quantities.
* ``VIEWS`` at dim ``VIEWS_DIM = -1``: the ``J`` views of an item.

So a per-view latent ``z`` has batch shape ``(B, J)`` and a per-item content
latent ``y`` has batch shape ``(B, 1)``, which broadcasts against ``z``.

``MAX_PLATE_NESTING = 2``: enumerated discrete sites (``CONTENT_COMPONENT``) take
dims left of both plates, from ``-3`` on, which is what
``TraceEnum_ELBO(max_plate_nesting=MAX_PLATE_NESTING)`` allocates.
"""

from __future__ import annotations

CONTENT = "y"
"""Per-item content latent y_i."""
VIEW_LATENT = "z"
"""Per-view latent z_ij."""
OBSERVATION = "x"
"""Observed view x_ij."""
CONTENT_COMPONENT = "c"
"""Discrete mixture component c_i of a content prior with an explicit cluster site
(``prior=gmm``); enumerated, not sampled, by ``TraceEnum_ELBO``."""

ITEMS = "items"
VIEWS = "views"
ITEMS_DIM = -2
VIEWS_DIM = -1

MAX_PLATE_NESTING = 2
"""How many plate dimensions the models use (``items`` and ``views``); an ELBO's
``max_plate_nesting``, so particle and enumeration dimensions go to the left of them."""
