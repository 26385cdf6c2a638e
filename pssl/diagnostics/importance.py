r"""Importance sampling from the guide: log p(x), Pareto k-hat, posterior collapse.

For a generative method the guide ``q`` is a proposal for the posterior. With
``K`` draws ``(z^(k), y^(k)) ~ q(z, y | x_i)`` for the ``J`` views ``x_i = (x_i1..x_iJ)``
of item ``i``, the log importance weights are

.. math::

    \log w_i^{(k)} = \log p(x_i, z_i^{(k)}, y_i^{(k)}) - \log q(z_i^{(k)}, y_i^{(k)} \mid x_i),

every model site minus every guide latent site, summed over the item's views.
Then

* ``ELBO_i = mean_k log w_i^(k)`` (the single-sample bound, averaged),
* ``IWAE_i = logsumexp_k log w_i^(k) - log K`` (Burda et al. 2016), a lower bound on
  ``log p(x_i)`` in expectation that increases to it as ``K`` grows,
* ``IWAE_i - ELBO_i >= 0`` estimates (from below) how far q is from the posterior.

The weights are computed from **unscaled** per-site log-densities: the items
plate's ``N / B`` subsample factor, ``beta`` and the likelihood's tempering
``scale`` are ``poutine.scale`` factors, i.e. training devices, and are not part of
the probability model, so they are left out and the result is the model's true
``log p(x)``.

Sampling replicates every item ``K`` times along the batch (``(K * B, J, C, H, W)``
views, particle-major) rather than adding a particle plate, so any method whose
model and guide accept a batch of items works unchanged. Every latent site must
sit inside the ``items`` plate, so that its log-density can be summed per item.

The Pareto k-hat of each item's weights (PSIS, Vehtari et al. 2024) says whether
the estimate can be trusted: with ``S`` draws the threshold is
``min(1 - 1 / log10(S), 0.7)``; above it the weights have too heavy a tail
(q is narrower than, or misplaced against, the posterior).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites
from torch.distributions import Independent, Normal

from pssl.models import sites
from pssl.models.base import SSLModel, ViewBatch

CONSTANT_WEIGHT_SPREAD = 1e-6
"""Log weights spread (max - min, nats) below which an item's ratios count as constant (k-hat := 0)."""

ACTIVE_UNIT_THRESHOLD = 0.01
"""A latent dimension is active when Cov_x(E_q[z]) exceeds this (Burda et al. 2016)."""

KHAT_BAD = 0.7
"""Above this k-hat the importance-sampling estimate is unreliable for any sample size."""


def arviz() -> Any:
    """Import ArviZ without its import-time refactoring notice."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz as az
    return az


@contextlib.contextmanager
def forked_rng(seed: int, device: torch.device | str) -> Iterator[None]:
    """Run a block with the global torch RNG seeded to ``seed``, restoring its state afterwards.

    Pyro draws from the global torch generator; forking keeps diagnostics from
    changing the caller's random stream.
    """
    device = torch.device(device)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def trace_pair(model: SSLModel, batch: ViewBatch) -> tuple[poutine.Trace, poutine.Trace]:
    """Guide trace and the model trace replayed on it, with subsample sites pruned."""
    guide_trace = poutine.trace(model.guide).get_trace(batch)
    model_trace = poutine.trace(poutine.replay(model.model, trace=guide_trace)).get_trace(batch)
    return prune_subsample_sites(guide_trace), prune_subsample_sites(model_trace)


def sample_sites(trace: poutine.Trace, *, observed: bool | None = None) -> dict[str, dict]:
    """The trace's sample sites (only observed or only latent ones if ``observed`` is set)."""
    out = {}
    for name, site in trace.nodes.items():
        if site["type"] != "sample":
            continue
        if observed is not None and bool(site["is_observed"]) != observed:
            continue
        out[name] = site
    return out


def _items_frame(name: str, site: dict):
    for frame in site["cond_indep_stack"]:
        if frame.name == sites.ITEMS:
            return frame
    raise ValueError(
        f"site {name!r} is outside the {sites.ITEMS!r} plate, so its log-density cannot be split per item; "
        "importance-sampling diagnostics need every sample site inside that plate"
    )


def per_item_log_prob(name: str, site: dict, num_items: int) -> torch.Tensor:
    """Unscaled ``log p(value)`` of one site, summed over everything but the items dimension.

    Returns:
        ``(num_items,)``. The site's ``scale`` (subsample factor, beta, tempering) is not applied.
    """
    log_prob = site["fn"].log_prob(site["value"])
    dim = _items_frame(name, site).dim
    if log_prob.dim() < -dim or log_prob.shape[dim] != num_items:
        raise ValueError(
            f"site {name!r} has log-density shape {tuple(log_prob.shape)}, "
            f"expected {num_items} items at dim {dim}"
        )
    return log_prob.movedim(dim, 0).reshape(num_items, -1).sum(1)


def _innermost(fn: Any) -> Any:
    while hasattr(fn, "base_dist") and type(fn).__name__ in ("ExpandedDistribution", "MaskedDistribution"):
        fn = fn.base_dist
    return fn


def factorised_base(fn: Any) -> Any | None:
    """The per-dimension distribution of ``fn`` when it is ``Independent(base, 1)`` with a scalar ``base``."""
    fn = _innermost(fn)
    if isinstance(fn, Independent) and fn.reinterpreted_batch_ndims == 1 and fn.base_dist.event_shape == ():
        return fn.base_dist
    return None


def factorised_normal(fn: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(loc, scale)`` broadcast to the sample shape when ``fn`` is a diagonal Normal, else ``None``."""
    base = factorised_base(fn)
    if base is not None and isinstance(_innermost(base), Normal):
        return base.mean, base.stddev
    return None


def is_point_mass(fn: Any) -> bool:
    fn = _innermost(fn)
    while isinstance(fn, Independent):
        fn = _innermost(fn.base_dist)
    return type(fn).__name__ == "Delta"


@dataclass
class ViewMarginal:
    """The marginal prior of one view's latent, read off a trace.

    Attributes:
        kind: ``"prior"`` (z has no latent parent: a VAE's p(z)), ``"marginal"``
            (p(y) = N(m, s^2), p(z | y) = N(y, sigma^2): z ~ N(m, s^2 + sigma^2)) or
            ``"conditional"`` (anything else: only p(z | parents) is available).
        loc, scale: ``(d,)`` of the Gaussian marginal (``None`` for ``"conditional"``).
        view_variance: sigma^2 per dimension for ``"marginal"`` (and for a flat p(y)), else ``None``.
        content_variance: s^2 per dimension for ``"marginal"`` (``inf`` for a flat p(y)), else ``None``.
    """

    kind: str
    loc: torch.Tensor | None = None
    scale: torch.Tensor | None = None
    view_variance: torch.Tensor | None = None
    content_variance: torch.Tensor | None = None

    def within_to_across_ratio(self) -> float | None:
        """The within-item / across-item variance ratio this prior implies for z (see
        :func:`pssl.diagnostics.structure.structure_metrics`).

        ``sum_k sigma_k^2 / sum_k (s_k^2 + sigma_k^2)``: 1 for a prior without a
        content latent (views independent), 0 for a flat p(y) (s = infinity),
        ``0.15 / 1.15 = 0.130`` for SimVAE's defaults (s^2 = 1, sigma^2 = 0.15).
        """
        if self.kind == "prior":
            return 1.0
        if self.view_variance is None or self.content_variance is None:
            return None
        if not torch.isfinite(self.content_variance).all():
            return 0.0
        return float(self.view_variance.sum() / (self.content_variance + self.view_variance).sum())


def view_marginal(model_trace: poutine.Trace, latent: str = sites.VIEW_LATENT) -> ViewMarginal | None:
    """Recognise the prior of ``latent`` in a model trace (see :class:`ViewMarginal`).

    The hierarchical case is recognised by checking that the Normal of z is
    centred exactly on the sampled y, and that p(y) is a diagonal Normal (or flat).
    """
    latents = sample_sites(model_trace, observed=False)
    if latent not in latents:
        return None
    z_site = latents[latent]
    z_normal = factorised_normal(z_site["fn"])
    parents = [name for name in latents if name != latent]
    if not parents:
        if z_normal is None:
            return ViewMarginal("conditional")
        loc, scale = z_normal
        flat_loc, flat_scale = loc.reshape(-1, loc.shape[-1]), scale.reshape(-1, scale.shape[-1])
        if not (
            torch.equal(flat_loc, flat_loc[:1].expand_as(flat_loc))
            and torch.equal(flat_scale, flat_scale[:1].expand_as(flat_scale))
        ):
            return ViewMarginal("conditional")
        return ViewMarginal("prior", loc=flat_loc[0], scale=flat_scale[0])
    if len(parents) == 1 and z_normal is not None:
        y_site = latents[parents[0]]
        loc, scale = z_normal
        y_value = y_site["value"]
        try:
            centred = torch.equal(loc, y_value.expand_as(loc))
        except RuntimeError:
            centred = False
        view_variance = scale.reshape(-1, scale.shape[-1])[0].pow(2)
        if centred:
            y_normal = factorised_normal(y_site["fn"])
            if y_normal is not None:
                y_loc, y_scale = (t.reshape(-1, t.shape[-1])[0] for t in y_normal)
                content_variance = y_scale.pow(2)
                return ViewMarginal(
                    "marginal",
                    loc=y_loc,
                    scale=(content_variance + view_variance).sqrt(),
                    view_variance=view_variance,
                    content_variance=content_variance,
                )
            if type(_innermost(y_site["fn"])).__name__ == "ImproperUniform":
                return ViewMarginal(
                    "conditional",
                    view_variance=view_variance,
                    content_variance=torch.full_like(view_variance, math.inf),
                )
    return ViewMarginal("conditional")


def gaussian_kl(
    loc_q: torch.Tensor, scale_q: torch.Tensor, loc_p: torch.Tensor, scale_p: torch.Tensor
) -> torch.Tensor:
    """Elementwise KL(N(loc_q, scale_q^2) || N(loc_p, scale_p^2))."""
    return (
        torch.log(scale_p / scale_q) + (scale_q.pow(2) + (loc_q - loc_p).pow(2)) / (2 * scale_p.pow(2)) - 0.5
    )


@dataclass
class ImportanceSamples:
    """Everything one importance-sampling pass over a set of items collects.

    Attributes:
        log_weights: ``(K, N)`` float64 log importance weights (nats per item).
        log_likelihood: ``(K, N)`` ``log p(x_i | z^(k))`` (observed sites only).
        latents: guide latent draws by site name, each ``(K, N, ...)``.
        latent_dims: dimension names of each ``latents`` entry after ``(draw, item)``.
        observed_statistics: image statistics of the views, each ``(N, J)``.
        replicated_statistics: the same of ``x_rep ~ p(x | z^(k))``, each ``(K, N, J)``.
        posterior_mean: ``(N, J, d)`` guide mean of z (for active units), or ``None``.
        kl_per_dim: ``(d,)`` mean KL of q(z | x) to the reference prior per dimension (nats per view).
        kl_reference: ``"prior"``, ``"marginal"`` or ``"conditional"`` (see :func:`view_marginal`).
        point_mass_sites: guide latent sites that are point masses (weights are then not a bound).
        discrete_observation: whether the likelihood is a probability mass function
            (read off the ``x`` site's support).
        binary_observation: whether that pmf is over {0, 1} (Bernoulli): on grey values it is
            then a cross-entropy, not a probability.
        num_dims: observed values per item, counted from the ``x`` site's value
            (``J C H W`` for views of ``(C, H, W)`` images; ``C H W`` for the
            multimodal SimVAE, whose two "views" are the two half-images).
        view_marginal: the recognised prior of z (or ``None``).
        observed: ``(N, ...)`` the ``x`` site's observed value per item (what log p(x) refers to).
        view_shape: ``(J, C, H, W)`` of the views the model was given.
        latent_site_shapes: the per-item shape of each guide latent in the trace
            (to put stored draws back into a trace, e.g. for predictive draws).
        proposal: ``"hierarchical"`` (:mod:`pssl.diagnostics.proposal`) or ``"guide"``.
        tempering: how the likelihood's tempering was scored: ``"none"`` (untempered model),
            ``"proper"`` (a tempered Gaussian/Laplace scored as the proper density it is) or
            ``"untempered"`` (the tempering dropped; the estimate is of another model than
            the one trained).
        proposal_scale: the hierarchical proposal's message std factor (``None`` for the guide).
        improper_sites: latent sites with an improper prior (flat): p(x) is then not
            normalised and log p(x) is defined only up to a constant.
    """

    log_weights: torch.Tensor
    log_likelihood: torch.Tensor
    latents: dict[str, torch.Tensor] = field(default_factory=dict)
    latent_dims: dict[str, tuple[str, ...]] = field(default_factory=dict)
    observed_statistics: dict[str, torch.Tensor] = field(default_factory=dict)
    replicated_statistics: dict[str, torch.Tensor] = field(default_factory=dict)
    posterior_mean: torch.Tensor | None = None
    kl_per_dim: torch.Tensor | None = None
    kl_reference: str | None = None
    point_mass_sites: list[str] = field(default_factory=list)
    discrete_observation: bool = False
    binary_observation: bool = False
    num_dims: int = 0
    view_marginal: ViewMarginal | None = None
    observed: torch.Tensor | None = None
    view_shape: tuple[int, ...] = ()
    latent_site_shapes: dict[str, torch.Size] = field(default_factory=dict)
    proposal: str = "guide"
    tempering: str = "none"
    improper_sites: list[str] = field(default_factory=list)
    proposal_scale: float | None = None

    @property
    def num_samples(self) -> int:
        return self.log_weights.shape[0]

    @property
    def num_items(self) -> int:
        return self.log_weights.shape[1]


def _site_dims(name: str, site: dict, value_rest: torch.Size) -> tuple[tuple[str, ...], torch.Size]:
    """Dimension names of a latent's value after ``(draw, item)``, and the shape with size-1 dims dropped."""
    event_ndims = len(site["fn"].event_shape)
    batch_rest = value_rest[: len(value_rest) - event_ndims]
    frames = {frame.dim: frame.name for frame in site["cond_indep_stack"]}
    names, keep = [], []
    for position, size in enumerate(batch_rest):
        dim = position - len(batch_rest)  # as a negative batch dimension, the plates' convention
        if frames.get(dim) == sites.VIEWS:
            names.append("view")
            keep.append(size)
        elif size == 1:
            continue
        else:
            names.append(f"{name}_dim{position}")
            keep.append(size)
    if event_ndims == 1:
        names.append("latent")
    else:
        names.extend(f"{name}_event{i}" for i in range(event_ndims))
    keep.extend(value_rest[len(batch_rest) :])
    return tuple(names), torch.Size(keep)


@torch.no_grad()
def importance_sample(
    model: SSLModel,
    views: torch.Tensor,
    *,
    num_samples: int = 100,
    seed: int = 0,
    max_images_per_pass: int = 4096,
    statistics: Any = None,
    keep_latents: bool = True,
    proposal: str = "hierarchical",
    guide: Any = None,
    tempering: str = "auto",
    proposal_scale: float | None = None,
) -> ImportanceSamples:
    """Draw ``num_samples`` proposal samples per item and weigh them against the model.

    Args:
        model: a generative method.
        views: ``(N, J, C, H, W)`` float views of ``N`` items.
        num_samples: K, draws per item (K = 1 gives the ELBO; k-hat needs K >= 2).
        seed: seeds the draws (the caller's RNG state is restored afterwards).
        max_images_per_pass: at most this many replicated views go through the
            networks at once (items and then particles are chunked to fit).
        statistics: ``images (..., C, H, W) -> dict[str, (...)]`` for predictive
            checks; default :func:`pssl.diagnostics.predictive.image_statistics`.
        keep_latents: keep the latent draws (float32, ``(K, N, ...)`` each).
        proposal: ``"hierarchical"`` (default): the proposal of
            :mod:`pssl.diagnostics.proposal`, built from the model's priors and the
            encoder's per-view Gaussians, whatever y-guide the model was trained with;
            ``"guide"``: the model's own guide (not a proposal when it has point masses).
        guide: a guide for global latents (sites outside the items plate), called with the
            model's arguments. Its draws are used as posterior draws given the training
            data, so each item's estimate is the held-out predictive
            ``log E_{q(theta)} p(x_i | theta)`` (``log p(theta) - log q(theta)`` does not enter).
            With it, each particle is a separate pass (one global draw per particle).
        tempering: ``"auto"``: a tempered Gaussian or Laplace likelihood is scored as the
            proper density it is, any other tempered likelihood raises
            :class:`~pssl.diagnostics.proposal.TemperingError`; ``"untempered"``: score the
            model without its tempering (labelled ``tempering: untempered``).
        proposal_scale: std factor of the hierarchical proposal's messages (default
            :data:`~pssl.diagnostics.proposal.DEFAULT_PROPOSAL_SCALE`; 1 is exact where the
            encoder is the exact single-view posterior).

    Returns:
        :class:`ImportanceSamples`.
    """
    from pssl.diagnostics.predictive import image_statistics
    from pssl.diagnostics.proposal import PROPOSALS, TEMPERINGS

    statistics = statistics or image_statistics
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    if proposal not in PROPOSALS:
        raise ValueError(f"unknown proposal {proposal!r}; accepted: {', '.join(PROPOSALS)}")
    if tempering not in TEMPERINGS:
        raise ValueError(f"unknown tempering {tempering!r}; accepted: {', '.join(TEMPERINGS)}")
    if guide is not None and proposal != "hierarchical":
        raise ValueError("guide= (global latents) needs proposal='hierarchical'")
    if views.dim() != 5:
        raise ValueError(f"views must be (items, views, C, H, W), got shape {tuple(views.shape)}")
    if not model.generative:
        raise ValueError(
            f"{type(model).__name__} does not model images; importance sampling needs a generative method"
        )
    num_items, num_views = views.shape[:2]
    total = num_samples
    items_per_pass = max(1, min(num_items, max_images_per_pass // (total * num_views)))
    particles_per_pass = max(1, min(total, max_images_per_pass // (items_per_pass * num_views)))
    if guide is not None:
        particles_per_pass = 1

    log_weights = torch.empty(total, num_items, dtype=torch.float64)
    log_lik = torch.empty(total, num_items, dtype=torch.float64)
    result = ImportanceSamples(
        log_weights=log_weights, log_likelihood=log_lik, view_shape=tuple(views.shape[1:]), proposal=proposal
    )
    observed_chunks: list[torch.Tensor] = []
    kl_sum: torch.Tensor | None = None
    kl_count = 0
    posterior_means = []
    was_training = model.training
    model.eval()
    try:
        with forked_rng(seed, views.device):
            for start in range(0, num_items, items_per_pass):
                chunk = views[start : start + items_per_pass]
                b = chunk.shape[0]
                chunk_proposal = None
                if proposal == "hierarchical":
                    chunk_proposal = proposal_for_items(
                        model, chunk, guide=guide, tempering=tempering, proposal_scale=proposal_scale
                    )
                    result.proposal_scale = chunk_proposal.proposal_scale
                    guide_trace, model_trace = chunk_proposal.guide_trace, chunk_proposal.model_trace
                    posterior_means.append(_posterior_mean(guide_trace, b))
                    observed_chunks.append(_observed_value(model_trace, b))
                    kl = _kl_per_dim(guide_trace, model_trace, result, particles_are_fresh=True, num_items=b)
                    if kl is not None:
                        kl_sum = kl[0] if kl_sum is None else kl_sum + kl[0]
                        kl_count += kl[1]
                for p0 in range(0, total, particles_per_pass):
                    k = min(particles_per_pass, total - p0)
                    replicated = chunk.repeat(k, 1, 1, 1, 1)
                    batch = ViewBatch(
                        views=replicated,
                        index=torch.arange(b, device=views.device).repeat(k),
                        num_items=k * b,
                    )
                    slot = (slice(p0, p0 + k), slice(start, start + b))
                    if chunk_proposal is not None:
                        _record_proposal_pass(
                            result,
                            model,
                            chunk_proposal,
                            batch,
                            k,
                            slot,
                            statistics,
                            keep_latents,
                            tempering,
                            guide,
                        )
                        continue
                    guide_trace, model_trace = trace_pair(model, batch)
                    _record_pass(
                        result,
                        guide_trace,
                        model_trace,
                        slot,
                        statistics,
                        keep_latents,
                        views.device,
                        tempering,
                    )
                    kl = _kl_per_dim(
                        guide_trace, model_trace, result, particles_are_fresh=p0 == 0, num_items=b
                    )
                    if kl is not None:
                        kl_sum = kl[0] if kl_sum is None else kl_sum + kl[0]
                        kl_count += kl[1]
                    if p0 == 0:
                        posterior_means.append(_posterior_mean(guide_trace, b))
                        observed_chunks.append(_observed_value(model_trace, b))
    finally:
        model.train(was_training)
    if observed_chunks and all(o is not None for o in observed_chunks):
        result.observed = torch.cat(observed_chunks)
        result.num_dims = int(result.observed[0].numel())
        result.observed_statistics = statistics(result.observed)
    else:
        result.num_dims = int(np.prod(views.shape[1:]))
        result.observed_statistics = statistics(views)
    if posterior_means and all(m is not None for m in posterior_means):
        result.posterior_mean = torch.cat(posterior_means)
    if kl_sum is not None and kl_count:
        result.kl_per_dim = (kl_sum / kl_count).float()
    return result


@dataclass
class ItemsProposal:
    """The hierarchical proposal for one chunk of items, with the traces it was read from."""

    proposal: Any
    guide_trace: poutine.Trace
    model_trace: poutine.Trace
    likelihood_scale: float
    proposal_scale: float


def proposal_for_items(
    model: SSLModel,
    views: torch.Tensor,
    *,
    guide: Any = None,
    tempering: str = "auto",
    proposal_scale: float | None = None,
) -> ItemsProposal:
    """Build :class:`~pssl.diagnostics.proposal.HierarchicalProposal` for ``(B, J, C, H, W)`` views.

    Raises:
        TemperingError: for a tempered likelihood without a proper form under ``tempering="auto"``.
    """
    from pssl.diagnostics.proposal import (
        DEFAULT_PROPOSAL_SCALE,
        _site_scale,
        build_proposal,
        guide_values,
        observation_density,
        traced_model,
    )

    b = views.shape[0]
    batch = ViewBatch(views=views, index=torch.arange(b, device=views.device), num_items=b)
    global_values = guide_values(guide, batch)
    guide_trace = prune_subsample_sites(poutine.trace(model.guide).get_trace(batch))
    model_trace = prune_subsample_sites(
        poutine.trace(
            poutine.replay(poutine.condition(model.model, data=global_values), trace=guide_trace)
        ).get_trace(batch)
    )
    x_site = sample_sites(model_trace, observed=True).get(sites.OBSERVATION)
    if x_site is None:
        raise ValueError(f"{type(model).__name__}'s model has no observed {sites.OBSERVATION!r} site")
    from pssl.diagnostics.proposal import is_global

    unguided = sorted(
        name
        for name, site in sample_sites(model_trace, observed=False).items()
        if is_global(site) and name not in global_values
    )
    if unguided:
        raise ValueError(
            f"the model has global latent sites {unguided} (outside the {sites.ITEMS!r} plate); pass guide= "
            "with a guide for them (its draws are used as posterior draws given the training data)"
        )
    scale = _site_scale(x_site)
    observation_density(x_site["fn"], scale, tempering)  # refuses an improper tempering before any work
    local = {
        name: s["value"]
        for name, s in sample_sites(guide_trace, observed=False).items()
        if name in (sites.CONTENT, sites.VIEW_LATENT)
    }
    structure = traced_model(model, batch, {**local, **global_values})
    proposal_scale = DEFAULT_PROPOSAL_SCALE if proposal_scale is None else float(proposal_scale)
    built = build_proposal(
        structure,
        guide_trace,
        likelihood_scale=scale if tempering == "untempered" else 1.0,
        proposal_scale=proposal_scale,
    )
    return ItemsProposal(built, guide_trace, model_trace, scale, proposal_scale)


def _record_proposal_pass(
    result: ImportanceSamples,
    model: SSLModel,
    chunk_proposal: ItemsProposal,
    batch: ViewBatch,
    k: int,
    slot: tuple[slice, slice],
    statistics: Any,
    keep_latents: bool,
    tempering: str,
    guide: Any,
) -> None:
    """One pass of the hierarchical proposal: draw, weigh, record at ``slot = (draws, items)``."""
    from pssl.diagnostics.proposal import guide_values, model_log_density, observation_density, traced_model

    b = slot[1].stop - slot[1].start
    total, num_items = result.log_weights.shape
    proposal = chunk_proposal.proposal.replicate(k)
    values = proposal.sample()
    trace = traced_model(model, batch, {**values, **guide_values(guide, batch)})
    log_p, log_lik, label = model_log_density(trace, k * b, tempering=tempering)
    log_w = log_p - proposal.log_prob(values).double()
    result.tempering = label
    for name in values:
        if type(_innermost(trace.nodes[name]["fn"])).__name__ == "ImproperUniform" and (
            name not in result.improper_sites
        ):
            result.improper_sites.append(name)
    result.log_weights[slot] = log_w.reshape(k, b).cpu()
    result.log_likelihood[slot] = log_lik.reshape(k, b).cpu()
    x_site = trace.nodes[sites.OBSERVATION]
    result.discrete_observation = bool(x_site["fn"].support.is_discrete)
    result.binary_observation = _is_binary_support(x_site["fn"].support)
    if keep_latents:
        for name, value in values.items():
            site = trace.nodes[name]
            dims, shape = _site_dims(name, site, value.shape[1:])
            if name not in result.latents:
                result.latents[name] = torch.empty(total, num_items, *shape)
                result.latent_dims[name] = dims
                result.latent_site_shapes[name] = value.shape[1:]
            result.latents[name][slot] = value.reshape(k, b, *shape).float().cpu()
    if x_site["value"].dim() != 5:
        return
    from pssl.diagnostics.proposal import _site_scale

    fn, _ = observation_density(x_site["fn"], _site_scale(x_site), tempering)
    num_views = x_site["value"].shape[1]
    for key, value in statistics(fn.sample()).items():
        if key not in result.replicated_statistics:
            result.replicated_statistics[key] = torch.empty(total, num_items, num_views)
        result.replicated_statistics[key][slot] = value.reshape(k, b, num_views).float().cpu()


def _record_pass(
    result: ImportanceSamples,
    guide_trace: poutine.Trace,
    model_trace: poutine.Trace,
    slot: tuple[slice, slice],
    statistics: Any,
    keep_latents: bool,
    device: torch.device,
    tempering: str = "auto",
) -> None:
    """Store one pass's weights, latents and replicated statistics at ``slot = (draws, items)``."""
    k = slot[0].stop - slot[0].start
    b = slot[1].stop - slot[1].start
    total, num_items = result.log_weights.shape
    log_w, log_lik = _log_weights(guide_trace, model_trace, k * b, result, device, tempering)
    result.log_weights[slot] = log_w.reshape(k, b).cpu()
    result.log_likelihood[slot] = log_lik.reshape(k, b).cpu()
    if keep_latents:
        for name, site in sample_sites(guide_trace, observed=False).items():
            dims, shape = _site_dims(name, site, site["value"].shape[1:])
            if name not in result.latents:
                result.latents[name] = torch.empty(total, num_items, *shape)
                result.latent_dims[name] = dims
                result.latent_site_shapes[name] = site["value"].shape[1:]
            result.latents[name][slot] = site["value"].reshape(k, b, *shape).float().cpu()
    observed = sample_sites(model_trace, observed=True).get(sites.OBSERVATION)
    if observed is None or observed["value"].dim() != 5:
        return
    num_views = observed["value"].shape[1]
    from pssl.diagnostics.proposal import _site_scale, observation_density

    replicate_fn, _ = observation_density(observed["fn"], _site_scale(observed), tempering)
    for key, value in statistics(replicate_fn.sample()).items():
        if key not in result.replicated_statistics:
            result.replicated_statistics[key] = torch.empty(total, num_items, num_views)
        result.replicated_statistics[key][slot] = value.reshape(k, b, num_views).float().cpu()


def _observed_value(model_trace: poutine.Trace, num_items: int) -> torch.Tensor | None:
    """``(B, ...)`` observed value of the ``x`` site for the first replica of each item."""
    site = sample_sites(model_trace, observed=True).get(sites.OBSERVATION)
    if site is None or site["value"].dim() < 4:
        return None
    return site["value"][:num_items].float().cpu()


def _posterior_mean(guide_trace: poutine.Trace, num_items: int) -> torch.Tensor | None:
    """``(B, J, d)`` guide mean of z for the first replica of each item (``None`` without a z site)."""
    site = sample_sites(guide_trace, observed=False).get(sites.VIEW_LATENT)
    if site is None:
        return None
    try:
        mean = site["fn"].mean
    except NotImplementedError:
        mean = site["value"]
    mean = mean.expand_as(site["value"])[:num_items]
    return mean.reshape(num_items, -1, mean.shape[-1]).float().cpu()


def _is_binary_support(support: Any) -> bool:
    """Whether a support is {0, 1} (a Bernoulli pmf), looking through ``independent``."""
    from torch.distributions import constraints

    while hasattr(support, "base_constraint"):
        support = support.base_constraint
    return support is constraints.boolean


def _log_weights(
    guide_trace: poutine.Trace,
    model_trace: poutine.Trace,
    num_items: int,
    result: ImportanceSamples,
    device: torch.device,
    tempering: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    from pssl.diagnostics.proposal import _site_scale, observation_density

    guide_latents = sample_sites(guide_trace, observed=False)
    model_latents = sample_sites(model_trace, observed=False)
    missing = sorted(set(model_latents) - set(guide_latents))
    if missing:
        raise ValueError(
            f"model latent sites {missing} are not in the guide; importance weights need a proposal "
            "for every latent"
        )
    log_w = torch.zeros(num_items, dtype=torch.float64, device=device)
    log_lik = torch.zeros_like(log_w)
    for name, site in sample_sites(model_trace).items():
        if name == sites.OBSERVATION:
            fn, result.tempering = observation_density(site["fn"], _site_scale(site), tempering)
            site = {**site, "fn": fn}
        value = per_item_log_prob(name, site, num_items).double()
        log_w = log_w + value
        if site["is_observed"]:
            log_lik = log_lik + value
            if name == sites.OBSERVATION:
                result.discrete_observation = bool(site["fn"].support.is_discrete)
                result.binary_observation = _is_binary_support(site["fn"].support)
    for name, site in guide_latents.items():
        if is_point_mass(site["fn"]) and name not in result.point_mass_sites:
            result.point_mass_sites.append(name)
        log_w = log_w - per_item_log_prob(name, site, num_items).double()
    return log_w, log_lik


def _kl_per_dim(
    guide_trace: poutine.Trace,
    model_trace: poutine.Trace,
    result: ImportanceSamples,
    *,
    particles_are_fresh: bool,
    num_items: int,
) -> tuple[torch.Tensor, int] | None:
    """Summed per-dimension KL of q(z | x) to the reference prior, and the number of terms summed."""
    q_site = sample_sites(guide_trace, observed=False).get(sites.VIEW_LATENT)
    p_site = sample_sites(model_trace, observed=False).get(sites.VIEW_LATENT)
    if q_site is None or p_site is None:
        return None
    if result.view_marginal is None:
        result.view_marginal = view_marginal(model_trace)
    marginal = result.view_marginal
    q_normal = factorised_normal(q_site["fn"])
    if marginal is not None and marginal.kind in ("prior", "marginal") and q_normal is not None:
        if not particles_are_fresh:
            return None  # analytic: the guide's parameters do not depend on the draw
        loc, scale = (t.expand_as(q_site["value"])[:num_items] for t in q_normal)
        loc, scale = loc.reshape(-1, loc.shape[-1]), scale.reshape(-1, scale.shape[-1])
        kl = gaussian_kl(loc, scale, marginal.loc.to(loc), marginal.scale.to(loc))
        result.kl_reference = marginal.kind
        return kl.sum(0).double().cpu(), kl.shape[0]
    q_base, p_base = factorised_base(q_site["fn"]), factorised_base(p_site["fn"])
    if q_base is None or p_base is None:
        return None
    value = q_site["value"]
    kl = q_base.log_prob(value) - p_base.log_prob(value)
    kl = kl.reshape(-1, kl.shape[-1])
    result.kl_reference = "conditional"
    return kl.sum(0).double().cpu(), kl.shape[0]


# --- summaries ---------------------------------------------------------------------------


def bits_per_dim(
    nats_per_item: float,
    num_dims: int,
    *,
    continuous: bool,
    eight_bit: bool,
    likelihood: Any = None,
) -> float:
    r"""Convert a negative log-likelihood in nats per item to bits per dimension.

    With a :class:`~pssl.models.likelihoods.Likelihood` object this is
    :func:`pssl.models.likelihoods.bits_per_dim` (the library's convention). Otherwise

    .. math::

        \text{bpd} = \frac{\text{nats} + [\text{continuous and 8-bit}]\; D \log 255}{D \log 2}:

    8-bit data are scaled as ``k / 255``, so a density on [0, 1] becomes a
    probability of the ``1/255``-wide bin around each value, which adds
    ``log 255`` nats per dimension; a probability mass function (e.g. Bernoulli)
    needs no correction. Non-finite input gives ``nan``.
    """
    if not math.isfinite(nats_per_item):
        return math.nan
    from pssl.models import likelihoods

    if likelihood is not None and isinstance(likelihood, likelihoods.Likelihood):
        library_bpd = getattr(likelihoods, "bits_per_dim", None)
        if library_bpd is not None:
            return float(library_bpd(nats_per_item, num_dims, likelihood=likelihood, data_is_8bit=eight_bit))
    correction = num_dims * math.log(255.0) if continuous and eight_bit else 0.0
    return (nats_per_item + correction) / (num_dims * math.log(2.0))


def evidence_summary(
    samples: ImportanceSamples, *, eight_bit: bool, likelihood: Any = None
) -> dict[str, Any]:
    """Log p(x) per item (IWAE), ELBO, their gap and bits per dimension.

    Args:
        samples: an importance-sampling pass.
        eight_bit: the data are 8-bit values scaled to [0, 1] (applies the
            dequantisation offset of :func:`bits_per_dim` for continuous likelihoods).
        likelihood: the model's likelihood object, if it has one (decides the
            bits-per-dimension convention; otherwise the trace's support does).

    Returns:
        Floats in nats per item (``*_nats``), their standard errors over items, and ``bits_per_dim``.
    """
    lw = samples.log_weights
    k = lw.shape[0]
    iwae = torch.logsumexp(lw, 0) - math.log(k)
    elbo = lw.mean(0)
    gap = iwae - elbo
    n = lw.shape[1]

    def se(values: torch.Tensor) -> float:
        return float(values.std() / math.sqrt(n)) if n > 1 else float("nan")

    log_px = float(iwae.mean())
    continuous = not samples.discrete_observation
    return {
        "num_samples": k,
        "num_items": n,
        "dims_per_item": samples.num_dims,
        "log_px_iwae_nats": log_px,
        "log_px_iwae_se": se(iwae),
        "elbo_nats": float(elbo.mean()),
        "elbo_se": se(elbo),
        "iwae_minus_elbo_nats": float(gap.mean()),
        "reconstruction_nats": float(samples.log_likelihood.mean()),
        "bits_per_dim": bits_per_dim(
            -log_px, samples.num_dims, continuous=continuous, eight_bit=eight_bit, likelihood=likelihood
        ),
        "dequantised": bool(continuous and eight_bit),
        "discrete_likelihood": bool(samples.discrete_observation),
        "binary_likelihood": bool(samples.binary_observation),
        "is_bound": not samples.point_mass_sites,
        "point_mass_sites": list(samples.point_mass_sites),
        "proposal": samples.proposal,
        "tempering": samples.tempering,
        "improper_sites": list(samples.improper_sites),
        "proposal_scale": samples.proposal_scale,
    }


def per_item_evidence(log_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(IWAE_i, ELBO_i)``, each ``(N,)``, from ``(K, N)`` log weights."""
    k = log_weights.shape[0]
    return torch.logsumexp(log_weights, 0) - math.log(k), log_weights.mean(0)


def iwae_log_evidence(
    model: SSLModel,
    views: torch.Tensor,
    *,
    num_samples: int,
    seed: int = 0,
    max_images_per_pass: int = 4096,
    **proposal_options: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Per-item IWAE estimate of log p(x_i) and the per-item ELBO, from ``K`` guide draws.

    .. math::

        \widehat{\log p}(x_i) = \log \frac{1}{K} \sum_{k=1}^K w_i^{(k)}, \qquad
        \text{ELBO}_i = \frac{1}{K} \sum_{k=1}^K \log w_i^{(k)},

    with ``w`` the unscaled importance weights of :func:`importance_sample`. By
    Jensen ``E[IWAE_K] <= log p(x_i)``, increasing in ``K`` and converging to it
    (Burda et al. 2016); the two agree only when every weight of an item is equal
    (q is the exact posterior).

    Args:
        model: a generative method; its guide is the proposal.
        views: ``(N, J, C, H, W)`` views of ``N`` items.
        num_samples: K.
        seed: seeds the draws.
        max_images_per_pass: memory bound (see :func:`importance_sample`).
        proposal_options: ``proposal``, ``guide``, ``tempering`` of :func:`importance_sample`.

    Returns:
        ``(iwae, elbo)``, each ``(N,)`` float64, nats per item.
    """
    samples = importance_sample(
        model,
        views,
        num_samples=num_samples,
        seed=seed,
        max_images_per_pass=max_images_per_pass,
        keep_latents=False,
        **proposal_options,
    )
    if samples.point_mass_sites:
        raise ValueError(
            f"the guide has point-mass sites {samples.point_mass_sites}: its ratios are not importance "
            "weights, so there is no IWAE estimate of log p(x)"
        )
    return per_item_evidence(samples.log_weights)


def smoothed_log_weights(log_weights: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PSIS: each item's normalised, Pareto-smoothed log weights and their k-hat.

    Args:
        log_weights: ``(K, N)`` log importance weights.

    Returns:
        ``(smoothed (K, N), khat (N,))``; ``logsumexp`` of each smoothed column is 0.
        Items with constant weights (spread below :data:`CONSTANT_WEIGHT_SPREAD`)
        get uniform weights and k-hat 0.
    """
    lw = np.asarray(log_weights, dtype=np.float64).T.copy()  # (N, K): ArviZ wants samples last
    if lw.shape[1] < 2:
        raise ValueError(f"PSIS needs at least 2 draws per item, got {lw.shape[1]}")
    constant = (lw.max(1) - lw.min(1)) < CONSTANT_WEIGHT_SPREAD
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        smoothed, khat = arviz().psislw(lw, reff=1.0)
    smoothed, khat = np.asarray(smoothed, dtype=np.float64), np.asarray(khat, dtype=np.float64)
    smoothed[constant] = -math.log(lw.shape[1])
    khat[constant] = 0.0
    return smoothed.T, khat


def resample_indices(smoothed: np.ndarray, num_draws: int, generator: torch.Generator) -> np.ndarray:
    """Multinomial resampling: ``(num_draws, N)`` indices into each item's ``K`` draws.

    Draw ``s`` of item ``i`` picks proposal draw ``k`` with probability
    ``exp(smoothed[k, i])``, so resampled draws are (approximately, for finite K)
    distributed as the posterior: sampling-importance-resampling with PSIS weights.
    """
    probs = torch.from_numpy(np.exp(smoothed)).T  # (N, K)
    probs = probs / probs.sum(1, keepdim=True)
    picks = torch.multinomial(probs, num_draws, replacement=True, generator=generator)
    return picks.T.numpy()


def khat_threshold(num_samples: int) -> float:
    """PSIS's sample-size-dependent reliability threshold ``min(1 - 1/log10(S), 0.7)``."""
    return min(1.0 - 1.0 / math.log10(num_samples), KHAT_BAD) if num_samples > 1 else -math.inf


def pareto_khat(log_weights: torch.Tensor | np.ndarray) -> np.ndarray:
    """Per-item Pareto k-hat of ``(K, N)`` log importance weights (ArviZ's PSIS).

    Items whose log weights spread by less than :data:`CONSTANT_WEIGHT_SPREAD` nats
    have constant ratios (bounded weights, q equal to the posterior up to rounding);
    a tail fit to rounding noise is meaningless, so their k-hat is reported as 0.
    """
    lw = np.asarray(log_weights, dtype=np.float64).T.copy()  # (N, K): ArviZ wants samples last
    if lw.shape[1] < 2:
        raise ValueError(f"Pareto k-hat needs at least 2 draws per item, got {lw.shape[1]}")
    spread = lw.max(1) - lw.min(1)
    _, khat = arviz().psislw(lw, reff=1.0)
    khat = np.asarray(khat, dtype=np.float64)
    khat[spread < CONSTANT_WEIGHT_SPREAD] = 0.0
    return khat


def importance_ess(log_weights: torch.Tensor) -> torch.Tensor:
    """Per-item importance-sampling effective sample size ``1 / sum_k wbar_k^2`` (``wbar`` normalised)."""
    normalised = torch.softmax(log_weights.double(), 0)
    return 1.0 / normalised.pow(2).sum(0)


def pareto_summary(samples: ImportanceSamples) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Share of items with k-hat above the thresholds, and the importance-sampling ESS.

    Returns:
        ``(summary, khat (N,), ess (N,))``.
    """
    khat = pareto_khat(samples.log_weights)
    ess = importance_ess(samples.log_weights).numpy()
    k = samples.num_samples
    threshold = khat_threshold(k)
    finite = np.where(np.isfinite(khat), khat, np.inf)
    summary = {
        "num_samples": k,
        "khat_threshold": threshold,
        "share_above_threshold": float(np.mean(finite > threshold)),
        "share_above_0_7": float(np.mean(finite > KHAT_BAD)),
        "khat_median": float(np.median(finite)),
        "khat_max": float(np.max(finite)),
        "ess_mean": float(ess.mean()),
        "ess_median": float(np.median(ess)),
        "ess_fraction_mean": float(ess.mean() / k),
    }
    return summary, khat, ess


def collapse_summary(samples: ImportanceSamples) -> dict[str, Any]:
    """KL per latent dimension and active units (Burda et al. 2016).

    ``kl_per_dim`` is nats per view, averaged over items and views; its reference
    (``kl_reference``) is the VAE prior p(z), SimVAE's marginal prior of one view
    ``N(m, (s^2 + sigma^2) I)`` (Gaussian p(y) and p(z | y)), or otherwise the
    conditional p(z | y) at the guide's y (Monte Carlo over the draws).
    A dimension is active when the variance over data of the guide mean of z
    exceeds :data:`ACTIVE_UNIT_THRESHOLD`.
    """
    out: dict[str, Any] = {"kl_reference": samples.kl_reference}
    out["kl_per_dim"] = samples.kl_per_dim.tolist() if samples.kl_per_dim is not None else None
    out["kl_total"] = float(samples.kl_per_dim.sum()) if samples.kl_per_dim is not None else None
    if samples.posterior_mean is not None:
        means = samples.posterior_mean.reshape(-1, samples.posterior_mean.shape[-1]).double()
        activity = means.var(0) if means.shape[0] > 1 else torch.zeros(means.shape[-1], dtype=torch.float64)
        active = activity > ACTIVE_UNIT_THRESHOLD
        out.update(
            {
                "mean_variance_per_dim": activity.tolist(),
                "active_units": int(active.sum()),
                "latent_dim": int(means.shape[-1]),
                "active_dims": [int(i) for i in torch.nonzero(active).flatten()],
            }
        )
    return out


__all__ = [
    "ACTIVE_UNIT_THRESHOLD",
    "ImportanceSamples",
    "ViewMarginal",
    "bits_per_dim",
    "collapse_summary",
    "evidence_summary",
    "importance_ess",
    "importance_sample",
    "iwae_log_evidence",
    "khat_threshold",
    "pareto_khat",
    "pareto_summary",
    "per_item_evidence",
    "per_item_log_prob",
    "resample_indices",
    "smoothed_log_weights",
    "trace_pair",
    "view_marginal",
]
