r"""A trained model's draws on held-out items as an ArviZ ``InferenceData``; groups mean what ArviZ assumes.

:func:`to_inference_data` importance-samples the local latents of ``N`` held-out
items from the guide (``K`` draws each; see :mod:`pssl.diagnostics.importance`)
and writes (one chain throughout):

* ``posterior``: draws that represent the **posterior** over each item's local
  latents, ``z (chain, draw, item, view, latent)`` and ``y (chain, draw, item, latent)``:
  sampling-importance-resampling of the ``K`` guide draws with their PSIS-smoothed
  weights (Pareto-smoothed importance sampling, Vehtari et al. 2024). Where an
  item's k-hat is above the threshold the resampled draws are not trustworthy
  either (they can only repeat the few heavy draws). ``az.summary``,
  ``az.plot_posterior`` and ``az.plot_trace`` read this group; resampled draws
  repeat, so the ESS that ``az.summary`` prints overstates the information in
  them: the importance-sampling ESS is ``importance_sampling.ess``.
* ``sample_stats``: ``proposal_draw (chain, draw, item)``, which guide draw each
  posterior draw repeats.
* ``variational_posterior`` (non-standard group): the raw draws from the guide q,
  aligned with ``importance_sampling.log_weight``.
* ``importance_sampling`` (non-standard group): ``log_weight (chain, draw, item)``,
  the unscaled ``log p(x, z[, y]) - log q(z[, y] | x)`` of each guide draw, and per
  item ``log_px`` (the IWAE estimate of log p(x_i), nats per item), ``elbo``,
  ``khat`` (PSIS Pareto k-hat of the weights; ``az.plot_khat`` plots it) and
  ``ess`` (importance-sampling effective sample size).
* ``prior``: ``y (chain, draw, latent)`` and ``z (chain, draw, view, latent)`` drawn
  from the model; ``prior_predictive``: ``x (chain, draw, view, channel, row, col)``
  decoded from them, and the image statistics of
  :mod:`pssl.diagnostics.predictive`. Each prior draw is one imagined item.
* ``posterior_predictive``: ``x_rep ~ p(x | z)`` at the first ``num_predictive_draws``
  posterior draws, as pixels ``x (chain, draw, item, view, channel, row, col)`` and
  as the named image statistics ``(chain, draw, item, view)``;
  ``observed_data``: the observed ``x`` of each item (the value of the model's
  ``x`` site, i.e. exactly what ``log_px`` is the log-probability of) and the same
  statistics. So ``az.plot_ppc(idata, var_names=["mean_intensity"])`` checks a
  statistic, and ``az.plot_ppc(idata, var_names=["x"])`` the pixel values.

**No ``log_likelihood`` group**, on purpose: ``az.loo`` and ``az.waic`` estimate
the predictive density of an observation from posterior draws of *global*
parameters. Here the draws are of per-item latents and the networks are point
estimates; leaving item ``i`` out leaves its latents at their prior, and PSIS-LOO
becomes the harmonic-mean estimator of ``p(x_i)``, whose ratios
``1 / p(x_i | z)`` have no finite variance for images. The quantity that *is*
comparable across models is the held-out ``log p(x_i)`` of test items, which
:func:`pssl.diagnostics.elpd.held_out_elpd` turns into an ``ELPDData`` for
``az.compare``. ``az.loo``/``az.waic``/``az.plot_loo_pit`` on the object returned
here (or by :func:`read_netcdf`) raise :class:`LooNotApplicableError` with that
reason; on a file opened with ``az.from_netcdf`` they raise ArviZ's own
"log likelihood not found" ``TypeError`` (the file's attributes carry the reason).
"""

from __future__ import annotations

import functools
import hashlib
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites

from pssl.diagnostics.importance import (
    ImportanceSamples,
    _site_dims,
    arviz,
    forked_rng,
    importance_ess,
    importance_sample,
    khat_threshold,
    per_item_evidence,
    resample_indices,
    sample_sites,
    smoothed_log_weights,
)
from pssl.models import sites
from pssl.models.base import SSLModel, ViewBatch

DEFAULT_PREDICTIVE_DRAWS = 20
"""Posterior draws per item decoded into replicated images (pixels are the bulk of the file)."""

DEFAULT_PRIOR_DRAWS = 20
"""Prior draws, each imagining as many items as are diagnosed."""

LOO_REFUSAL = (
    "az.loo/az.waic do not apply to pssl's InferenceData: its posterior draws are of per-item local latents "
    "(z, y) while the networks are point estimates, so leaving item i out leaves its latents at their prior "
    "and PSIS-LOO reduces to the harmonic-mean estimator of p(x_i), whose importance ratios 1/p(x_i|z) have "
    "no finite variance for images; there is no log_likelihood group for that reason. Compare models on "
    "held-out items instead: pssl.diagnostics.held_out_elpd(idata) is an ArviZ ELPDData of the "
    "importance-sampled log p(x_i) of the held-out items, which az.compare accepts."
)


class LooNotApplicableError(TypeError):
    """``az.loo``, ``az.waic`` or ``az.plot_loo_pit`` asked for the (deliberately absent) log-likelihood."""


@functools.cache
def _inference_data_class() -> type:
    az = arviz()

    class PsslInferenceData(az.InferenceData):
        """An ``InferenceData`` that says why it has no ``log_likelihood`` group when asked for one."""

        def __getattr__(self, name: str) -> Any:
            if name == "log_likelihood":
                raise LooNotApplicableError(LOO_REFUSAL)
            raise AttributeError(name)

    PsslInferenceData.__qualname__ = PsslInferenceData.__name__ = "PsslInferenceData"
    return PsslInferenceData


def _plain_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """netCDF attributes must be strings or numbers."""
    out = {}
    for key, value in attrs.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = int(value)
        elif isinstance(value, (np.floating, np.integer)):
            value = value.item()
        elif not isinstance(value, (int, float, str)):
            value = str(value)
        out[key] = value
    return out


def observed_fingerprint(observed: torch.Tensor) -> str:
    """A short hash of the observed values (float32): two ELPDs are comparable only if these agree."""
    data = np.ascontiguousarray(observed.detach().float().cpu().numpy())
    return hashlib.sha256(data.tobytes() + str(data.shape).encode()).hexdigest()[:16]


def _image_dims(prefix: tuple[str, ...], event_ndim: int) -> tuple[str, ...]:
    names = ("channel", "row", "col")
    extra = tuple(f"x_dim{i}" for i in range(max(0, event_ndim - 3)))
    return (*prefix, *extra, *names[-min(event_ndim, 3) :])


def _x_dims(prefix: tuple[str, ...], per_item_shape: torch.Size) -> tuple[str, ...]:
    """Names of an ``x`` value's dims: ``view`` then the image dims (``channel, row, col``)."""
    if len(per_item_shape) >= 4:
        extra = tuple(f"x_dim{i}" for i in range(len(per_item_shape) - 4))
        return (*prefix, "view", *extra, "channel", "row", "col")
    return _image_dims(prefix, len(per_item_shape))


def _statistic_dims(prefix: tuple[str, ...], per_item_shape: torch.Size) -> tuple[str, ...]:
    return (*prefix, "view") if len(per_item_shape) >= 4 else prefix


@torch.no_grad()
def _predictive_draws(
    model: SSLModel,
    latents: dict[str, torch.Tensor],
    site_shapes: dict[str, torch.Size],
    view_shape: tuple[int, ...],
    x_shape: torch.Size,
    *,
    max_images_per_pass: int,
    tempering: str = "none",
) -> torch.Tensor:
    """``x_rep ~ p(x | latents)`` for ``(S, N, ...)`` latent draws; returns ``(S, N, *x_shape)``.

    The model runs on placeholder views of ``view_shape`` with every latent
    conditioned on the given draw; the replicate is a draw of its ``x`` site's
    distribution (which depends on the latents only).
    """
    num_draws, num_items = next(iter(latents.values())).shape[:2]
    device, dtype = _device_dtype(model)
    out = torch.empty(num_draws, num_items, *x_shape)
    images_per_item = max(1, int(view_shape[0]))
    items_per_pass = max(1, min(num_items, max_images_per_pass // images_per_item))
    for start in range(0, num_items, items_per_pass):
        stop = min(num_items, start + items_per_pass)
        b = stop - start
        draws_per_pass = max(1, min(num_draws, max_images_per_pass // (b * images_per_item)))
        for d0 in range(0, num_draws, draws_per_pass):
            d1 = min(num_draws, d0 + draws_per_pass)
            k = d1 - d0
            data = {
                name: value[d0:d1, start:stop]
                .reshape(k * b, *site_shapes[name])
                .to(device=device, dtype=dtype)
                for name, value in latents.items()
            }
            placeholder = torch.zeros(k * b, *view_shape, device=device, dtype=dtype)
            replicate = _replicate(model, placeholder, data, tempering=tempering)
            out[d0:d1, start:stop] = replicate.reshape(k, b, *x_shape).cpu()
    return out


def _device_dtype(model: SSLModel) -> tuple[torch.device, torch.dtype]:
    anchor = next(iter(model.parameters()), None)
    if anchor is None:
        return torch.device("cpu"), torch.get_default_dtype()
    return anchor.device, anchor.dtype


def _replicate(
    model: SSLModel, views: torch.Tensor, data: dict[str, torch.Tensor], *, tempering: str = "none"
) -> torch.Tensor:
    """One draw of the ``x`` site given conditioned latents (``views`` only set the shapes).

    With ``tempering="proper"`` the draw is from the proper density a tempered Gaussian or
    Laplace likelihood stands for (what ``log_px`` scores).
    """
    from pssl.diagnostics.proposal import _site_scale, observation_density

    batch = ViewBatch(
        views=views, index=torch.arange(views.shape[0], device=views.device), num_items=views.shape[0]
    )
    trace = prune_subsample_sites(poutine.trace(poutine.condition(model.model, data=data)).get_trace(batch))
    site = sample_sites(trace, observed=True).get(sites.OBSERVATION)
    if site is None:
        raise ValueError(f"{type(model).__name__}'s model has no observed {sites.OBSERVATION!r} site")
    fn = site["fn"]
    if tempering == "proper":
        fn, _ = observation_density(fn, _site_scale(site), "auto")
    return fn.sample().float()


@torch.no_grad()
def prior_draws(
    model: SSLModel, view_shape: tuple[int, ...], num_draws: int, *, seed: int = 0
) -> tuple[dict[str, torch.Tensor], torch.Tensor] | None:
    """``num_draws`` items imagined from the model: latent draws and the ``x`` drawn from them.

    The model runs on ``num_draws`` placeholder items of ``view_shape`` ``(J, C, H, W)``;
    every latent is drawn from its prior and ``x`` from its likelihood.

    Returns:
        ``(latents, x)``: ``latents[name]`` is ``(dims, values (S, ...))`` (dimension names after
        the draw; size-1 dims dropped) and ``x`` is ``(S, *x shape)``; ``None`` if the prior
        cannot be sampled (improper).
    """
    device, dtype = _device_dtype(model)
    placeholder = torch.zeros(num_draws, *view_shape, device=device, dtype=dtype)
    batch = ViewBatch(views=placeholder, index=torch.arange(num_draws, device=device), num_items=num_draws)
    was_training = model.training
    model.eval()
    try:
        with forked_rng(seed, device):
            trace = prune_subsample_sites(poutine.trace(model.model).get_trace(batch))
            site = sample_sites(trace, observed=True).get(sites.OBSERVATION)
            if site is None:
                return None
            x = site["fn"].sample().float().cpu()
    except (NotImplementedError, ValueError):  # an improper prior has no sampler
        return None
    finally:
        model.train(was_training)
    latents = {}
    for name, latent in sample_sites(trace, observed=False).items():
        dims, shape = _site_dims(name, latent, latent["value"].shape[1:])
        latents[name] = (dims, latent["value"].float().cpu().reshape(num_draws, *shape))
    return latents, x


def build_inference_data(
    model: SSLModel,
    samples: ImportanceSamples,
    *,
    num_draws: int | None = None,
    num_predictive_draws: int = DEFAULT_PREDICTIVE_DRAWS,
    num_prior_draws: int = DEFAULT_PRIOR_DRAWS,
    seed: int = 0,
    max_images_per_pass: int = 4096,
    item_index: np.ndarray | None = None,
    attrs: dict[str, Any] | None = None,
) -> Any:
    """The ``InferenceData`` of the module docstring from an importance-sampling pass of ``model``.

    Args:
        model: the model that produced ``samples``.
        samples: :func:`~pssl.diagnostics.importance.importance_sample` with ``keep_latents=True``.
        num_draws: resampled posterior draws per item (default: K).
        num_predictive_draws: posterior draws decoded into ``posterior_predictive`` (0: none).
        num_prior_draws: items drawn from the prior (0: no ``prior``/``prior_predictive``).
        seed: seeds the resampling and the predictive and prior draws.
        max_images_per_pass: memory bound of the decoding passes.
        item_index: ``(N,)`` positions of the items in their split (default ``0..N-1``).
        attrs: extra attributes stored on every group (model name, data set, ...).

    Raises:
        ValueError: if the guide has point-mass sites (its ratios are not importance weights)
            or the pass kept no latents.
    """
    import xarray as xr

    if samples.point_mass_sites:
        raise ValueError(
            f"the guide has point-mass sites {samples.point_mass_sites}: its ratios are not importance "
            "weights, "
            "so there is no posterior to resample and no log p(x) to estimate (for SimVAE use "
            "y_guide=exact or amortised)"
        )
    if not samples.latents or samples.observed is None:
        raise ValueError("build_inference_data needs an importance_sample pass with keep_latents=True")
    num_samples, num_items = samples.log_weights.shape
    num_draws = num_samples if num_draws is None else int(num_draws)
    if num_draws < 1:
        raise ValueError(f"num_draws must be >= 1, got {num_draws}")
    num_predictive_draws = min(int(num_predictive_draws), num_draws)
    items = np.arange(num_items) if item_index is None else np.asarray(item_index)

    smoothed, khat = smoothed_log_weights(samples.log_weights)
    ess = importance_ess(samples.log_weights).numpy()
    log_px, elbo = per_item_evidence(samples.log_weights)
    generator = torch.Generator().manual_seed(seed)
    picks = resample_indices(smoothed, num_draws, generator)  # (S, N)
    gather = torch.from_numpy(picks)

    posterior_latents = {}
    for name, value in samples.latents.items():
        index = gather.reshape(num_draws, num_items, *([1] * (value.dim() - 2))).expand(
            num_draws, num_items, *value.shape[2:]
        )
        posterior_latents[name] = torch.gather(value, 0, index)

    threshold = khat_threshold(num_samples)
    discrete = bool(samples.discrete_observation)
    common = _plain_attrs(
        {
            "created_by": "pssl.diagnostics.to_inference_data",
            "num_items": num_items,
            "num_proposal_draws": num_samples,
            "units": "nats per item (log_px, elbo, log_weight)",
            "observed_values_per_item": samples.num_dims,
            "likelihood_is_discrete": discrete,
            "observed_fingerprint": observed_fingerprint(samples.observed),
            "proposal": samples.proposal,
            "tempering": samples.tempering,
            "loo_note": LOO_REFUSAL,
            **(attrs or {}),
        }
    )

    def dataset(variables: dict[str, Any], coords: dict[str, Any], extra: dict[str, Any] | None = None):
        used = {d for dims, _ in variables.values() for d in dims}
        ds = xr.Dataset(variables, coords={k: v for k, v in coords.items() if k in used})
        ds.attrs.update(common)
        ds.attrs.update(_plain_attrs(extra or {}))
        return ds

    def latent_vars(values: dict[str, torch.Tensor], prefix: tuple[str, ...]) -> dict[str, Any]:
        return {
            name: ((*prefix, *samples.latent_dims[name]), value.numpy()[None])
            for name, value in values.items()
        }

    post_coords = {"chain": [0], "draw": np.arange(num_draws), "item": items}
    proposal_coords = {"chain": [0], "draw": np.arange(num_samples), "item": items}
    groups: dict[str, Any] = {}
    groups["posterior"] = dataset(
        latent_vars(posterior_latents, ("chain", "draw", "item")),
        post_coords,
        {
            "note": "importance-resampled guide draws (PSIS-smoothed weights): draws from the posterior of "
            "each "
            "item's local latents; unreliable where importance_sampling.khat exceeds khat_threshold",
            "khat_threshold": threshold,
        },
    )
    groups["sample_stats"] = dataset(
        {"proposal_draw": (("chain", "draw", "item"), picks[None].astype(np.int64))},
        post_coords,
        {"note": "index of the variational_posterior draw that each posterior draw repeats"},
    )
    groups["variational_posterior"] = dataset(
        latent_vars(samples.latents, ("chain", "draw", "item")),
        proposal_coords,
        {
            "note": "raw draws from the guide q(z[, y] | x): the importance-sampling proposal, "
            "not the posterior"
        },
    )
    groups["importance_sampling"] = dataset(
        {
            "log_weight": (("chain", "draw", "item"), samples.log_weights.numpy()[None]),
            "log_px": (("item",), log_px.numpy()),
            "elbo": (("item",), elbo.numpy()),
            "khat": (("item",), khat),
            "ess": (("item",), ess),
        },
        proposal_coords,
        {
            "log_weight_note": "log p(x, z[, y]) - log q(z[, y] | x) of the proposal named in 'proposal' "
            "(hierarchical: built from the model's priors and the encoder, see pssl.diagnostics.proposal; "
            "guide: the training guide), without beta or minibatch factor, summed over the item's observed "
            "values; a tempered likelihood is scored as stated in 'tempering'; aligned with "
            "variational_posterior",
            "log_px_note": "IWAE estimate logsumexp_k log_weight - log K of the held-out log p(x_i)",
            "khat_note": "PSIS Pareto k-hat of each item's importance ratios p(x,z)/q(z|x)",
            "khat_threshold": threshold,
            "is_bound": 1,
            "proposal": samples.proposal,
            "tempering": samples.tempering,
        },
    )

    x_shape = samples.observed.shape[1:]
    observed_stats = {k: v.numpy() for k, v in _statistics(samples.observed).items()}
    observed_vars = {"x": (_x_dims(("item",), x_shape), samples.observed.numpy())}
    observed_vars.update({k: (_statistic_dims(("item",), x_shape), v) for k, v in observed_stats.items()})
    item_coords = {"item": items}
    groups["observed_data"] = dataset(
        observed_vars,
        item_coords,
        {"note": "the observed value of the model's x site for each held-out item (what log_px scores)"},
    )
    if num_predictive_draws > 0:
        replicated = _predictive_draws(
            model,
            {k: v[:num_predictive_draws] for k, v in posterior_latents.items()},
            samples.latent_site_shapes,
            samples.view_shape,
            x_shape,
            max_images_per_pass=max_images_per_pass,
            tempering=samples.tempering,
        )
        pp_vars = {"x": (_x_dims(("chain", "draw", "item"), x_shape), replicated.numpy()[None])}
        pp_vars.update(
            {
                k: (_statistic_dims(("chain", "draw", "item"), x_shape), v.numpy()[None])
                for k, v in _statistics(replicated).items()
            }
        )
        groups["posterior_predictive"] = dataset(
            pp_vars,
            {"chain": [0], "draw": np.arange(num_predictive_draws), "item": items},
            {"note": "x_rep ~ p(x | z[, y]) at the first posterior draws of each item"},
        )
    if num_prior_draws > 0:
        # Each prior draw imagines as many items as were observed, so every prior_predictive
        # variable has the observed_data's shape per draw (what az.plot_ppc(group="prior") needs).
        drawn = prior_draws(model, samples.view_shape, num_prior_draws * num_items, seed=seed + 1)
        if drawn is not None:
            latents, x = drawn
            prior_vars = {}
            for name, (dims, value) in latents.items():
                value = value.reshape(num_prior_draws, num_items, *value.shape[1:])
                prior_vars[name] = (("chain", "draw", "item", *dims), value.numpy()[None])
            x = x.reshape(num_prior_draws, num_items, *x.shape[1:])
            prior_coords = {"chain": [0], "draw": np.arange(num_prior_draws), "item": items}
            groups["prior"] = dataset(
                prior_vars,
                prior_coords,
                {"note": f"latents drawn from the model's prior: {num_items} imagined items per draw"},
            )
            ppd = {"x": (_x_dims(("chain", "draw", "item"), x.shape[2:]), x.numpy()[None])}
            ppd.update(
                {
                    k: (_statistic_dims(("chain", "draw", "item"), x.shape[2:]), v.numpy()[None])
                    for k, v in _statistics(x).items()
                }
            )
            groups["prior_predictive"] = dataset(
                ppd,
                prior_coords,
                {
                    "note": "x drawn from p(x | z) at the prior draws, as many imagined items per draw as "
                    "observed items (item i of a draw is not related to observed item i)"
                },
            )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the two non-standard groups
        return _inference_data_class()(**groups)


def _statistics(values: torch.Tensor) -> dict[str, torch.Tensor]:
    from pssl.diagnostics.predictive import image_statistics

    return image_statistics(values)


def to_inference_data(
    model: SSLModel,
    images: torch.Tensor,
    *,
    augmenter: Any = None,
    num_views: int | None = None,
    num_samples: int = 100,
    num_draws: int | None = None,
    num_predictive_draws: int = DEFAULT_PREDICTIVE_DRAWS,
    num_prior_draws: int = DEFAULT_PRIOR_DRAWS,
    seed: int = 0,
    views_seed: int = 0,
    max_images_per_pass: int = 4096,
    attrs: dict[str, Any] | None = None,
    proposal: str = "hierarchical",
    guide: Any = None,
    tempering: str = "auto",
    proposal_scale: float | None = None,
) -> Any:
    """Diagnose any generative pssl model on held-out images as an ArviZ ``InferenceData``.

    Works from Python for any model with ``model``/``guide`` over a
    :class:`~pssl.models.base.ViewBatch` (built by name or by hand, any prior);
    ``pssl diagnose RUN_DIR`` calls it. Groups: see the module docstring.

    Args:
        model: a generative method (``model.generative``).
        images: ``(N, C, H, W)`` held-out images (``uint8`` or floats), or ready
            ``(N, J, C, H, W)`` views.
        augmenter: draws the ``J`` views of each image (``augmenter(images, J, generator)``);
            ``None`` uses ``J`` copies of the image.
        num_views: J (default: the model's ``min_views``); ignored for ready views.
        num_samples: K guide draws per item (the proposal).
        num_draws: resampled posterior draws per item (default K).
        num_predictive_draws: posterior draws decoded into ``posterior_predictive``.
        num_prior_draws: items drawn from the prior.
        seed: seeds every draw (proposal, resampling, predictive and prior draws).
        views_seed: seeds the augmenter's views (default 0 for every run, whatever its
            training seed), so that models are scored on the same observed values; it is
            recorded with the augmenter and J in the ``views`` attribute that
            :func:`~pssl.diagnostics.elpd.compare_held_out` checks.
        max_images_per_pass: memory bound.
        attrs: extra attributes for every group.
        proposal: ``"hierarchical"`` or ``"guide"`` (see
            :func:`~pssl.diagnostics.importance.importance_sample`).
        guide: a guide for global latents (sites outside the items plate); see
            :func:`~pssl.diagnostics.importance.importance_sample`.
        tempering: ``"auto"`` or ``"untempered"`` (see
            :func:`~pssl.diagnostics.importance.importance_sample`).
        proposal_scale: see :func:`~pssl.diagnostics.importance.importance_sample`.

    Returns:
        An ``arviz.InferenceData`` (a subclass whose missing ``log_likelihood`` explains itself).

    Raises:
        ValueError: for a discriminative method, a point-mass guide, or malformed images.

    Example:
        >>> idata = to_inference_data(model, test_images[:128], num_samples=200)
        >>> az.plot_khat(idata.importance_sampling.khat.values)
        >>> az.compare({"simvae": held_out_elpd(idata), "vae": held_out_elpd(other)})
    """
    views = images_to_views(model, images, augmenter=augmenter, num_views=num_views, seed=views_seed)
    samples = importance_sample(
        model,
        views,
        num_samples=num_samples,
        seed=seed,
        max_images_per_pass=max_images_per_pass,
        proposal=proposal,
        guide=guide,
        tempering=tempering,
        proposal_scale=proposal_scale,
    )
    description = views_description(augmenter, views.shape[1], views_seed, ready=images.dim() == 5)
    return build_inference_data(
        model,
        samples,
        num_draws=num_draws,
        num_predictive_draws=num_predictive_draws,
        num_prior_draws=num_prior_draws,
        seed=seed,
        max_images_per_pass=max_images_per_pass,
        attrs={"model": type(model).__name__, "seed": seed, "views": description, **(attrs or {})},
    )


def views_description(augmenter: Any, num_views: int, views_seed: int, *, ready: bool = False) -> str:
    """How the scored views were made: the augmenter, J and ``views_seed`` (compared across models)."""
    if ready:
        return f"ready views, J={num_views}"
    if augmenter is None:
        return f"identical copies, J={num_views}"
    transform = getattr(augmenter, "transform", None)
    name = (
        repr(transform)
        if transform is not None
        else getattr(augmenter, "__qualname__", type(augmenter).__name__)
    )
    return f"augmenter={name}, J={num_views}, views_seed={views_seed}"


def images_to_views(
    model: SSLModel,
    images: torch.Tensor,
    *,
    augmenter: Any = None,
    num_views: int | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """``(N, J, C, H, W)`` float views of held-out images, in the model's dtype and device."""
    from pssl.diagnostics.structure import as_model_input

    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if not getattr(model, "generative", False):
        raise ValueError(
            f"{type(model).__name__} does not model images (a discriminative method has no p(x)): "
            "there is no posterior or log p(x) to put in an InferenceData"
        )
    if images.dim() == 5:
        if augmenter is not None:
            raise ValueError("images are ready (N, J, C, H, W) views; pass augmenter=None")
        return as_model_input(model, images)
    if images.dim() != 4:
        raise ValueError(
            f"images must be (N, C, H, W) images or (N, J, C, H, W) views, got shape {tuple(images.shape)}"
        )
    if images.shape[0] < 1:
        raise ValueError("images is empty")
    floats = as_model_input(model, images)
    num_views = int(getattr(model, "min_views", 1)) if num_views is None else int(num_views)
    if num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    if augmenter is None:
        return floats[:, None].expand(-1, num_views, -1, -1, -1).contiguous()
    return augmenter(floats, num_views, torch.Generator().manual_seed(seed))


def as_pssl_inference_data(idata: Any) -> Any:
    """``idata``'s groups in the :class:`LooNotApplicableError`-raising ``InferenceData`` subclass."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return _inference_data_class()(**{group: idata[group] for group in idata.groups()})


def write_netcdf(idata: Any, path: str | Path) -> Path:
    """Write ``idata`` to ``path`` (h5netcdf engine), atomically."""
    from pssl.rundir import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        idata.to_netcdf(str(tmp), engine="h5netcdf")
    return path


def read_netcdf(path: str | Path) -> Any:
    """Read an ``InferenceData`` written by :func:`write_netcdf` (loaded into memory).

    Returns the subclass whose missing ``log_likelihood`` explains itself (see the module docstring).
    """
    az = arviz()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        idata = az.from_netcdf(str(path), engine="h5netcdf")
        idata = as_pssl_inference_data(idata)
        for group in idata.groups():
            idata[group].load()
    return idata


__all__ = [
    "DEFAULT_PREDICTIVE_DRAWS",
    "DEFAULT_PRIOR_DRAWS",
    "LOO_REFUSAL",
    "LooNotApplicableError",
    "as_pssl_inference_data",
    "build_inference_data",
    "images_to_views",
    "observed_fingerprint",
    "prior_draws",
    "read_netcdf",
    "to_inference_data",
    "views_description",
    "write_netcdf",
]
