"""Importance samples as an ArviZ ``InferenceData`` (written to netCDF).

Groups (one chain; ``draw`` indexes the K guide samples; ``item`` the held-out items):

* ``posterior``: every guide latent, e.g. ``z (chain, draw, item, view, latent)`` and
  ``y (chain, draw, item, latent)``. The draws come from q, not from the posterior:
  ``az.summary`` describes the proposal (its R-hat is undefined with one chain).
* ``log_likelihood``: ``x (chain, draw, item)``, the log importance weights
  ``log p(x, z[, y]) - log q(z[, y] | x)`` of the item's group of views. ``az.waic``'s
  ``lppd`` over them equals the IWAE estimate of ``log p(x)``. This is an
  importance-sampled, in-sample log predictive density, **not leave-one-out**:
  what ``az.loo`` and ``az.compare`` print from it is not cross-validation
  (the note is stored in the group's attributes).
* ``posterior_predictive``: image statistics of ``x_rep ~ p(x | z)`` per draw,
  ``(chain, draw, item, view)``; ``observed_data``: the same statistics of the views,
  ``(item, view)``; so ``az.plot_ppc`` compares them.
* ``importance_sampling``: per item ``log_px_iwae``, ``elbo``, ``khat`` (PSIS of the
  weights; plot with ``az.plot_khat(idata.importance_sampling.khat.values)``) and ``ess``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from pssl.diagnostics.importance import ImportanceSamples, arviz, per_item_evidence

NOT_LOO_NOTE = (
    "log_likelihood 'x' holds log importance weights log p(x,z[,y]) - log q(z[,y]|x) of each item's views, "
    "one per guide draw; waic's lppd over them is the IWAE estimate of log p(x). It is an importance-sampled "
    "in-sample log predictive density, NOT leave-one-out: loo/compare values computed from it are not "
    "cross-validation."
)


def _plain_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """netCDF attributes must be strings or numbers."""
    out = {}
    for key, value in attrs.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = int(value)
        elif not isinstance(value, (int, float, str)):
            value = str(value)
        out[key] = value
    return out


def to_inference_data(
    samples: ImportanceSamples,
    *,
    khat: np.ndarray,
    ess: np.ndarray,
    item_index: np.ndarray | None = None,
    attrs: dict[str, Any] | None = None,
) -> Any:
    """Build the ``InferenceData`` of the module docstring from an importance-sampling pass.

    Args:
        samples: the pass.
        khat, ess: ``(N,)`` per-item Pareto k-hat and importance-sampling ESS.
        item_index: ``(N,)`` positions of the items in their split (default ``0..N-1``).
        attrs: extra attributes stored on every group (model name, seed, ...).
    """
    import xarray as xr

    az = arviz()
    num_samples, num_items = samples.log_weights.shape
    items = np.arange(num_items) if item_index is None else np.asarray(item_index)
    coords: dict[str, Any] = {"chain": [0], "draw": np.arange(num_samples), "item": items}
    common = _plain_attrs(dict(attrs or {}))

    posterior = {}
    for name, value in samples.latents.items():
        dims = ("chain", "draw", "item", *samples.latent_dims[name])
        posterior[name] = (dims, value.numpy()[None])
    log_lik = {"x": (("chain", "draw", "item"), samples.log_weights.numpy()[None])}
    replicated = {
        k: (("chain", "draw", "item", "view"), v.numpy()[None])
        for k, v in samples.replicated_statistics.items()
    }
    observed = {
        k: (("item", "view"), v.numpy()) for k, v in samples.observed_statistics.items() if k in replicated
    }
    iwae, elbo = per_item_evidence(samples.log_weights)
    per_item = {
        "log_px_iwae": (("item",), iwae.numpy()),
        "elbo": (("item",), elbo.numpy()),
        "khat": (("item",), np.asarray(khat, dtype=np.float64)),
        "ess": (("item",), np.asarray(ess, dtype=np.float64)),
    }

    def dataset(variables: dict[str, Any], extra: dict[str, Any] | None = None) -> xr.Dataset:
        used = {d for dims, _ in variables.values() for d in dims}
        ds = xr.Dataset(variables, coords={k: v for k, v in coords.items() if k in used})
        ds.attrs.update(common)
        ds.attrs.update(_plain_attrs(extra or {}))
        return ds

    groups: dict[str, xr.Dataset] = {}
    if posterior:
        groups["posterior"] = dataset(posterior, {"note": "draws from the guide q, not from the posterior"})
    groups["log_likelihood"] = dataset(log_lik, {"note": NOT_LOO_NOTE})
    if replicated:
        groups["posterior_predictive"] = dataset(
            replicated, {"note": "image statistics of x_rep ~ p(x | z), z ~ q"}
        )
        groups["observed_data"] = dataset(observed, {"note": "image statistics of the held-out views"})
    groups["importance_sampling"] = dataset(
        per_item,
        {
            "num_samples": num_samples,
            "khat_note": "PSIS Pareto k-hat of each item's importance ratios p(x,z)/q(z|x)",
            "is_bound": not samples.point_mass_sites,
        },
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the custom importance_sampling group
        return az.InferenceData(**groups)


def write_netcdf(idata: Any, path: str | Path) -> Path:
    """Write ``idata`` to ``path`` (h5netcdf engine), atomically."""
    import os

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        idata.to_netcdf(str(tmp), engine="h5netcdf")
    os.replace(tmp, path)
    return path


def read_netcdf(path: str | Path) -> Any:
    """Read an ``InferenceData`` written by :func:`write_netcdf`."""
    az = arviz()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return az.from_netcdf(str(path), engine="h5netcdf")


__all__ = ["NOT_LOO_NOTE", "read_netcdf", "to_inference_data", "write_netcdf"]
