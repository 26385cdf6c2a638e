"""What a method's training objective is, and how many values it observes per item, read off its traces.

Both are decided from one guide trace and the model trace replayed on it, so they
hold for any model/guide pair (registered or built in Python):

* :func:`objective_label`: the objective is an ``elbo`` (a lower bound on log p(x)
  of an item's views, nats per item) only when the model observes ``x``, every
  guide latent has a density (no point masses), no site is rescaled (likelihood
  tempering, ``beta``) and every prior is proper. Otherwise it is an objective
  under its own name with ``is_bound: false``: discriminative methods are named
  after their log-factor or categorical sites (``infonce``;
  ``invariance+variance+covariance`` for VICReg), a rescaled generative objective
  is a ``tempered_elbo``, one with point-mass guide sites a ``plugin_elbo`` and one
  with an improper prior an ``improper_elbo``.
* :func:`observed_values_per_item`: the number of scalar values of the ``x`` site per
  item, the ``D`` of bits per dimension (``J C H W`` for J views of ``C x H x W``
  images; ``C H W`` for the multimodal SimVAE, whose two views are half-images).
"""

from __future__ import annotations

from typing import Any

import torch

from pssl.diagnostics.importance import _innermost, is_point_mass, sample_sites, trace_pair
from pssl.models import sites
from pssl.models.base import SSLModel, ViewBatch


def _full_batch(views: torch.Tensor) -> ViewBatch:
    """The views as a whole data set (``num_items = B``), so no minibatch scale enters the trace."""
    return ViewBatch(
        views=views, index=torch.arange(views.shape[0], device=views.device), num_items=views.shape[0]
    )


@torch.no_grad()
def objective_label(model: SSLModel, views: torch.Tensor) -> dict[str, Any]:
    """Name the method's training objective and say whether it bounds log p(x).

    Args:
        model: any method.
        views: ``(B, J, C, H, W)`` a few views in the model's dtype and device (only traced).

    Returns:
        ``{"name", "is_bound", "unit", "note"}``; ``unit`` is ``"nats per item"``.
    """
    was_training = model.training
    model.eval()
    try:
        guide_trace, model_trace = trace_pair(model, _full_batch(views))
    finally:
        model.train(was_training)
    observed = sample_sites(model_trace, observed=True)
    # pyro.deterministic sites are recorded diagnostics, not terms of the objective.
    factors = [
        name
        for name, s in observed.items()
        if name != sites.OBSERVATION and not s.get("infer", {}).get("_deterministic", False)
    ]
    point_mass = [
        name for name, s in sample_sites(guide_trace, observed=False).items() if is_point_mass(s["fn"])
    ]
    scaled = sorted(
        {
            name
            for trace in (guide_trace, model_trace)
            for name, s in sample_sites(trace).items()
            if not _is_one(s.get("scale", 1.0))
        }
    )
    improper = [
        name
        for name, s in sample_sites(model_trace, observed=False).items()
        if type(_innermost(s["fn"])).__name__ == "ImproperUniform"
        or type(_innermost(getattr(_innermost(s["fn"]), "base_dist", s["fn"]))).__name__ == "ImproperUniform"
    ]
    unit = "nats per item"
    if sites.OBSERVATION not in observed or factors:
        name = "+".join(factors) or "objective"
        return {
            "name": name,
            "is_bound": False,
            "unit": unit,
            "note": f"the {name} objective (minus its loss) of a discriminative method"
            + (f" with point-mass guide sites {point_mass}" if point_mass else "")
            + ": not a bound on log p(x)",
        }
    if point_mass:
        return {
            "name": "plugin_elbo",
            "is_bound": False,
            "unit": unit,
            "note": f"point-mass guide sites {point_mass}: the objective omits their entropy and is not a "
            "bound on log p(x)",
        }
    if improper:
        return {
            "name": "improper_elbo",
            "is_bound": False,
            "unit": unit,
            "note": f"improper prior at sites {improper}: p(x) is not normalised, so there is no log p(x) "
            "to bound",
        }
    if scaled:
        return {
            "name": "tempered_elbo",
            "is_bound": False,
            "unit": unit,
            "note": f"sites {scaled} are rescaled (likelihood tempering or beta): not a bound on log p(x); "
            "pssl diagnose scores a tempered Gaussian as its proper density and refuses other tempered "
            "likelihoods (--tempering untempered scores the untempered model)",
        }
    return {
        "name": "elbo",
        "is_bound": True,
        "unit": unit,
        "note": "evidence lower bound on log p(x) of an item's views",
    }


@torch.no_grad()
def observed_values_per_item(model: SSLModel, views: torch.Tensor) -> int:
    """Scalar values of the ``x`` site per item (the ``D`` of bits per dimension).

    Args:
        model: a generative method.
        views: ``(B, J, C, H, W)`` a few views (only traced).

    Raises:
        ValueError: if the model has no observed ``x`` site.
    """
    was_training = model.training
    model.eval()
    try:
        _, model_trace = trace_pair(model, _full_batch(views))
    finally:
        model.train(was_training)
    site = sample_sites(model_trace, observed=True).get(sites.OBSERVATION)
    if site is None:
        raise ValueError(f"{type(model).__name__}'s model has no observed {sites.OBSERVATION!r} site")
    return int(site["value"][0].numel())


def _is_one(scale: Any) -> bool:
    if isinstance(scale, torch.Tensor):
        return bool(torch.all(scale == 1))
    return float(scale) == 1.0


def name_training_objective(
    label: dict[str, Any], objective: str, options: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``label`` (:func:`objective_label`) renamed for the Pyro objective the run was trained with.

    :func:`objective_label` reads the model and guide only; an ``elbo`` label is renamed when
    the estimator of the summed objective is another one:

    * ``iwae`` (Renyi with alpha = 0, K particles): ``iwae``, a lower bound on log p(x) at
      least as tight as the ELBO (Burda et al. 2016);
    * ``renyi`` with ``alpha``: ``renyi(alpha=A)``. Its K-sample estimate is a lower bound
      on log p(x) in expectation for 0 <= alpha < 1 (Li and Turner 2016); for alpha > 1 the
      Renyi bound lies below the ELBO but its K-sample estimate is not guaranteed to be a
      bound, and for alpha < 0 it lies above log p(x): ``is_bound`` is false for both.

    Other objectives (``trace``, ``tracegraph``, ``tracemeanfield``, ``traceenum``) estimate
    the ELBO itself and keep the label. A label that is not ``elbo`` (discriminative,
    tempered, plug-in, improper) is returned unchanged.
    """
    if label.get("name") != "elbo":
        return label
    options = dict(options or {})
    particles = int(options.get("num_particles", 8))
    if objective == "iwae":
        return {
            **label,
            "name": "iwae",
            "is_bound": True,
            "note": f"importance-weighted bound with K={particles} particles (Renyi alpha = 0): a lower "
            "bound on log p(x) of an item's views, at least as tight as the ELBO",
        }
    if objective == "renyi":
        alpha = float(options.get("alpha", 0.0))
        bound = 0.0 <= alpha < 1.0
        return {
            **label,
            "name": f"renyi(alpha={alpha:g})",
            "is_bound": bound,
            "note": f"Renyi bound with alpha={alpha:g}, K={particles} particles: "
            + (
                "a lower bound on log p(x) in expectation"
                if bound
                else "its K-sample estimate is not a bound on log p(x)"
            ),
        }
    return label


__all__ = ["name_training_objective", "objective_label", "observed_values_per_item"]
