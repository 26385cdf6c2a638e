"""Diagnostic figures (matplotlib Agg, PNG): k-hat, predictive checks, latent activity."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from pssl.rundir import save_figure


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> Path:
    plt = pyplot()
    path = Path(path)
    try:
        save_figure(fig, path, dpi=100)
    finally:
        plt.close(fig)
    return path


def plot_khat(khat: np.ndarray, threshold: float, path: str | Path, *, title: str = "") -> Path:
    """ArviZ's k-hat plot of per-item Pareto k-hat, with the sample-size threshold marked."""
    from pssl.diagnostics.importance import arviz

    az, plt = arviz(), pyplot()
    fig, ax = plt.subplots(figsize=(6, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        az.plot_khat(np.asarray(khat), show_hlines=True, ax=ax)
    ax.axhline(threshold, color="C3", linestyle=":", linewidth=1, label=f"threshold {threshold:.2f}")
    ax.set_xlabel("item")
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title(title or "Pareto k-hat of importance weights (per item)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_ppc(idata: Any, path: str | Path, *, num_pp_samples: int = 50, seed: int = 0) -> Path:
    """``az.plot_ppc`` of the image statistics (replicated draws against the held-out views)."""
    from pssl.diagnostics.importance import arviz
    from pssl.diagnostics.predictive import STATISTICS

    az, plt = arviz(), pyplot()
    names = [k for k in STATISTICS if k in idata.posterior_predictive.data_vars]
    fig, axes = plt.subplots(1, len(names), figsize=(3.4 * len(names), 2.8), squeeze=False)
    draws = idata.posterior_predictive.sizes["draw"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        az.plot_ppc(
            idata,
            var_names=names,
            num_pp_samples=min(num_pp_samples, draws),
            random_seed=seed,
            ax=axes[0],
            textsize=8,
        )
    fig.suptitle(
        "posterior predictive check: image statistics of x_rep ~ p(x | z), z ~ posterior", fontsize=9
    )
    fig.tight_layout()
    return _save(fig, path)


def plot_prior_predictive(idata: Any, path: str | Path, *, count: int = 10) -> Path:
    """The first ``count`` prior-predictive draws of ``x`` (an imagined item per column), a row per view."""
    import torch

    from pssl.plots import image_grid

    x = np.asarray(idata.prior_predictive["x"].values[0])
    if "item" in idata.prior_predictive["x"].dims:  # (draw, item, ...): the first draw's imagined items
        x = x[0]
    x = torch.from_numpy(x[:count])
    if x.dim() == 5:  # (draw, view, C, H, W): one row per view
        rows = [x[:, j] for j in range(x.shape[1])]
        titles = [f"view {j}" for j in range(x.shape[1])]
    else:
        rows, titles = [x], ["x"]
    return image_grid(rows, path, row_titles=titles)


def plot_latents(collapse: dict[str, Any], path: str | Path, *, threshold: float) -> Path:
    """KL per latent dimension and the variance of the posterior mean (active-unit criterion)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(8, 2.8), squeeze=False)
    kl = collapse.get("kl_per_dim")
    if kl is not None:
        axes[0][0].bar(range(len(kl)), kl)
        reference = {"prior": "p(z)", "marginal": "marginal p(z)", "conditional": "p(z|y)"}.get(
            collapse.get("kl_reference"), "prior"
        )
        axes[0][0].set_title(f"KL(q(z|x) || {reference}) per dim (nats per view)", fontsize=9)
    activity = collapse.get("mean_variance_per_dim")
    if activity is not None:
        axes[0][1].bar(range(len(activity)), activity)
        axes[0][1].axhline(threshold, color="C3", linestyle=":", linewidth=1)
        axes[0][1].set_yscale("log")
        axes[0][1].set_title(
            f"Cov_x E_q[z] per dim: {collapse['active_units']} of {collapse['latent_dim']} active", fontsize=9
        )
    for ax in axes[0]:
        ax.set_xlabel("latent dimension", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


__all__ = ["plot_khat", "plot_latents", "plot_ppc", "plot_prior_predictive", "pyplot"]
