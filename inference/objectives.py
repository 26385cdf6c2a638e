r"""Objectives: a Pyro ELBO over a method's model/guide pair, as a ``torch.nn.Module``.

For a minibatch of ``B`` items out of ``N``, the items plate scales every
log-density by ``N / B``, so the traced ELBO estimates the whole-data-set

.. math::

    \mathcal{L} = \sum_{\text{model sites } s} \log p(s \mid \cdot)
                 - \sum_{\text{guide sites } s} \log q(s \mid \cdot).

The module returns the loss that the optimiser minimises,
``-L * B / N`` (the minibatch *sum* over items, as in the reference
implementation), and the named terms in **nats per item** (``L / N`` split):

* ``reconstruction``: the observation site ``x`` (log p(x | z), with its tempering scale);
* ``prior``: every latent site in the model (log p(y) + log p(z | y), or log p(z));
* ``entropy``: minus every latent site in the guide (-log q; zero for point masses);
* one term per other observed site or ``pyro.factor`` (the discriminative methods'
  log-factors, e.g. ``infonce``, ``invariance``), under its own site name.

``elbo`` is their sum. The computation is Pyro's ``Trace_ELBO`` estimator with
one particle (reparameterised guide sites; non-reparameterised latent guide
sites are refused, since their score-function term is not included; a model
site's distribution only scores the guide's value, so improper or
non-reparameterised model priors are fine), split by site.

Diagnostics: a ``pyro.deterministic`` site in the model (e.g. SimCLR's
``alignment`` and ``uniformity``) is not part of the ELBO or the loss; its
value (averaged, detached) is reported in ``terms`` under its site name, in
its own units rather than nats, so the training loop logs it like a term.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites
from torch import nn

from pssl.models import sites
from pssl.models.base import SSLModel, ViewBatch


class NonFiniteError(FloatingPointError):
    """A loss term or gradient went NaN or infinite; the message names the site or term."""


@dataclass
class ObjectiveOutput:
    """Result of one objective evaluation.

    Attributes:
        loss: scalar to minimise (the minibatch sum of per-item negative ELBO).
        terms: named terms in nats per item (detached scalars), including ``elbo``, plus
            the model's ``pyro.deterministic`` diagnostics in their own units.
        site_log_prob: per-site scaled log-density sums (model sites as ``model/<name>``,
            guide sites as ``guide/<name>``), not detached; used to name the culprit
            when something goes non-finite.
    """

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]
    site_log_prob: dict[str, torch.Tensor]

    def nonfinite_sites(self) -> list[str]:
        return [name for name, value in self.site_log_prob.items() if not torch.isfinite(value).all()]


def term_of_site(name: str, site: dict, *, in_guide: bool) -> str:
    """The named term a trace site contributes to (see module docstring)."""
    if in_guide:
        return "entropy"
    if site["is_observed"]:
        return "reconstruction" if name == sites.OBSERVATION else name
    return "prior"


class ELBO(nn.Module):
    """Single-particle Trace_ELBO over ``method.model`` / ``method.guide``, split into named terms.

    Args:
        method: any :class:`~pssl.models.base.SSLModel`.

    Shapes:
        ``forward(batch)`` with ``batch.views`` ``(B, J, C, H, W)`` returns an
        :class:`ObjectiveOutput` whose ``loss`` is a scalar.
    """

    def __init__(self, method: SSLModel) -> None:
        super().__init__()
        self.method = method

    def forward(self, batch: ViewBatch) -> ObjectiveOutput:
        guide_trace = poutine.trace(self.method.guide).get_trace(batch)
        model_trace = poutine.trace(poutine.replay(self.method.model, trace=guide_trace)).get_trace(batch)
        guide_trace = prune_subsample_sites(guide_trace)
        model_trace = prune_subsample_sites(model_trace)
        model_trace.compute_log_prob()
        guide_trace.compute_log_prob()

        device = batch.views.device
        sums: dict[str, torch.Tensor] = {}
        site_log_prob: dict[str, torch.Tensor] = {}
        diagnostics: dict[str, torch.Tensor] = {}
        for trace, in_guide in ((model_trace, False), (guide_trace, True)):
            for name, site in trace.nodes.items():
                if site["type"] != "sample":
                    continue
                if site["infer"].get("_deterministic"):  # pyro.deterministic: a diagnostic, not a density
                    if not in_guide:
                        diagnostics[name] = site["value"].detach().float().mean()
                    continue
                if in_guide and site["is_observed"]:
                    continue
                if in_guide and not site["fn"].has_rsample:
                    raise ValueError(
                        f"site {name!r} is not reparameterisable; this objective covers reparameterised "
                        "latent sites only"
                    )
                value = site["log_prob_sum"]
                site_log_prob[("guide/" if in_guide else "model/") + name] = value
                term = term_of_site(name, site, in_guide=in_guide)
                contribution = -value if in_guide else value
                sums[term] = sums.get(term, torch.zeros((), device=device)) + contribution

        elbo = sum(sums.values(), torch.zeros((), device=device))
        num_items = batch.num_items
        loss = -elbo * (batch.batch_size / num_items)
        terms = {name: (value / num_items).detach() for name, value in sums.items()}
        terms["elbo"] = (elbo / num_items).detach()
        terms.update(diagnostics)
        return ObjectiveOutput(loss=loss, terms=terms, site_log_prob=site_log_prob)
