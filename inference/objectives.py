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

Validation: Pyro's and torch's argument and support checks (``pyro.enable_validation``,
distributions' ``validate_args``) cost a few elementwise passes and Python calls per
site on every evaluation. With ``validate="first"`` (the default) they run, as the
global settings say, on the first evaluation of each *batch signature* (views shape,
dtype and device, ``extras`` shapes, train/eval mode, autocast), where a wrong shape,
an invalid parameter or a value outside a distribution's support shows up, and are
switched off for later evaluations of a signature already checked. A value that
goes bad later (NaN, an infinite log-density) still surfaces: the loss or a named
site goes non-finite, which the training loop reports (and can skip). The data are
checked against the likelihood's support once, before training
(:meth:`~pssl.models.base.SSLModel.check_data`). ``validate="always"`` keeps the
global settings on every evaluation; ``validate="never"`` switches the checks off
throughout.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pyro.distributions
import pyro.infer
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import site_is_subsample
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


VALIDATE_MODES = ("first", "always", "never")
"""When :class:`ELBO` runs Pyro's and torch's validation checks (see the module docstring)."""


@contextmanager
def validation_disabled() -> Iterator[None]:
    """Switch Pyro's (infer, poutine, distributions) and torch's distribution checks off, then restore each.

    Unlike ``pyro.validation_enabled(False)``, torch's own default
    (``Distribution.set_default_validate_args``) is restored to what it was, not to
    Pyro's flag.
    """
    torch_default = torch.distributions.Distribution._validate_args
    saved = (
        pyro.infer.is_validation_enabled(),
        poutine.is_validation_enabled(),
        pyro.distributions.is_validation_enabled(),
    )
    pyro.infer.enable_validation(False)
    poutine.enable_validation(False)
    pyro.distributions.enable_validation(False)  # also sets torch's default validate_args
    try:
        yield
    finally:
        pyro.infer.enable_validation(saved[0])
        poutine.enable_validation(saved[1])
        pyro.distributions.enable_validation(saved[2])
        torch.distributions.Distribution.set_default_validate_args(torch_default)


def site_log_prob_sum(trace: Trace, name: str, site: dict) -> torch.Tensor:
    """``sum(scale * mask * log p(value))`` of one sample site: Pyro's ``log_prob_sum``, computed alone.

    The same arithmetic as ``Trace.compute_log_prob`` (``scale_and_mask`` then a sum),
    without storing the per-element ``log_prob`` in the trace; a ``ValueError`` is
    re-raised with the trace's shapes, worded as Pyro words it.
    """
    try:
        log_p = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
    except ValueError as err:
        shapes = trace.format_shapes(last_site=name)
        raise ValueError(f"Error while computing log_prob at site '{name}':\n{err}\n{shapes}").with_traceback(
            err.__traceback__
        ) from err
    return scale_and_mask(log_p, site["scale"], site["mask"]).sum()


def _autocast_state(device_type: str) -> tuple[bool, torch.dtype | None]:
    """Whether autocast is on for ``device_type``, and to which dtype (``(False, None)`` if unknown)."""
    try:
        if torch.is_autocast_enabled(device_type):
            return True, torch.get_autocast_dtype(device_type)
    except (TypeError, RuntimeError, AttributeError):  # older torch, or a device type autocast lacks
        pass
    return False, None


class ELBO(nn.Module):
    """Single-particle Trace_ELBO over ``method.model`` / ``method.guide``, split into named terms.

    Args:
        method: any :class:`~pssl.models.base.SSLModel`.
        validate: ``first`` (default), ``always`` or ``never``: when Pyro's and torch's
            validation checks run (see the module docstring).

    Shapes:
        ``forward(batch)`` with ``batch.views`` ``(B, J, C, H, W)`` returns an
        :class:`ObjectiveOutput` whose ``loss`` is a scalar.

    Raises:
        ValueError: for an unknown ``validate``.
    """

    def __init__(self, method: SSLModel, *, validate: str = "first") -> None:
        super().__init__()
        if validate not in VALIDATE_MODES:
            raise ValueError(f"unknown validate {validate!r}; accepted: {', '.join(VALIDATE_MODES)}")
        self.method = method
        self.validate = validate
        self._validated: set[Hashable] = set()

    def signature(self, batch: ViewBatch) -> Hashable:
        """What makes two evaluations alike for validation: shapes, dtype, device, mode, autocast."""
        views = batch.views
        return (
            tuple(views.shape),
            views.dtype,
            views.device,
            tuple(sorted((k, tuple(v.shape), v.dtype) for k, v in batch.extras.items())),
            self.method.training,
            _autocast_state(views.device.type),
        )

    def forward(self, batch: ViewBatch) -> ObjectiveOutput:
        if self.validate == "always":
            return self._evaluate(batch)
        if self.validate == "first":
            key = self.signature(batch)
            if key not in self._validated:
                output = self._evaluate(batch)
                self._validated.add(key)
                return output
        with validation_disabled():
            return self._evaluate(batch)

    def _evaluate(self, batch: ViewBatch) -> ObjectiveOutput:
        # The handlers' own traces, not get_trace()'s copies; subsample sites are skipped below.
        guide = poutine.trace(self.method.guide)
        guide(batch)
        model = poutine.trace(poutine.replay(self.method.model, trace=guide.trace))
        model(batch)

        sums: dict[str, torch.Tensor] = {}
        site_log_prob: dict[str, torch.Tensor] = {}
        diagnostics: dict[str, torch.Tensor] = {}
        for trace, in_guide in ((model.trace, False), (guide.trace, True)):
            for name, site in trace.nodes.items():
                if site["type"] != "sample" or site_is_subsample(site):
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
                value = site_log_prob_sum(trace, name, site)
                site_log_prob[("guide/" if in_guide else "model/") + name] = value
                term = term_of_site(name, site, in_guide=in_guide)
                contribution = -value if in_guide else value
                sums[term] = contribution if term not in sums else sums[term] + contribution

        values = list(sums.values())
        elbo = sum(values[1:], values[0]) if values else torch.zeros((), device=batch.views.device)
        num_items = batch.num_items
        loss = -elbo * (batch.batch_size / num_items)
        terms = {name: (value / num_items).detach() for name, value in sums.items()}
        terms["elbo"] = (elbo / num_items).detach()
        terms.update(diagnostics)
        return ObjectiveOutput(loss=loss, terms=terms, site_log_prob=site_log_prob)
