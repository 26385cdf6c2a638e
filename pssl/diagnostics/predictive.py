r"""Posterior and prior predictive checks on image statistics.

A posterior predictive check compares a statistic ``T`` of each held-out view
``x_ij`` with the same statistic of replicated views
``x_rep ~ p(x | z), z ~ q(z | x_ij)`` (Gelman et al.). The predictive p-value of a
view is ``P(T(x_rep) >= T(x_ij))`` (ties count half); values near 0 or 1 for most
views mean the model systematically under- or over-produces that statistic.

The statistics, per image ``(C, H, W)`` with ``P = C H W`` pixels:

* ``mean_intensity``: ``(1/P) sum_p x_p``;
* ``pixel_variance``: ``(1/P) sum_p (x_p - mean)^2``, the image's contrast;
* ``bright_fraction``: share of pixels above 0.5;
* ``total_variation``: ``(1/P) (sum |x_{h+1,w} - x_{h,w}| + sum |x_{h,w+1} - x_{h,w}|)``,
  how much edge or noise the image carries.

Replicated views are *samples* of p(x | z), not its mean: a Bernoulli
likelihood on grey images replicates binary images, and the check shows it.
"""

from __future__ import annotations

import numpy as np
import torch

from pssl.models.base import SSLModel

STATISTICS = ("mean_intensity", "pixel_variance", "bright_fraction", "total_variation")


def image_statistics(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The statistics of the module docstring for every image.

    Args:
        images: ``(..., C, H, W)`` floats.

    Returns:
        One ``(...)`` tensor per name in :data:`STATISTICS`.
    """
    if images.dim() < 3:
        raise ValueError(f"images must be (..., C, H, W), got shape {tuple(images.shape)}")
    images = images.float()
    pixels = images.shape[-3] * images.shape[-2] * images.shape[-1]
    flat = images.flatten(-3)
    vertical = (images[..., 1:, :] - images[..., :-1, :]).abs().flatten(-3).sum(-1)
    horizontal = (images[..., :, 1:] - images[..., :, :-1]).abs().flatten(-3).sum(-1)
    return {
        "mean_intensity": flat.mean(-1),
        "pixel_variance": flat.var(-1, unbiased=False),
        "bright_fraction": (flat > 0.5).float().mean(-1),
        "total_variation": (vertical + horizontal) / pixels,
    }


def predictive_pvalues(observed: torch.Tensor, replicated: torch.Tensor) -> torch.Tensor:
    """``P(T_rep >= T_obs)`` per observed value, ties counting half.

    Args:
        observed: ``(...)``; replicated: ``(K, ...)``.
    """
    above = (replicated > observed).double().mean(0)
    ties = (replicated == observed).double().mean(0)
    return above + 0.5 * ties


def predictive_summary(
    observed: dict[str, torch.Tensor], replicated: dict[str, torch.Tensor]
) -> dict[str, dict[str, float]]:
    """Per statistic: observed and replicated means, mean predictive p-value, and the share
    of views whose observed value falls outside the central 95% of its replicates."""
    out: dict[str, dict[str, float]] = {}
    for name, obs in observed.items():
        if name not in replicated:
            continue
        rep = replicated[name].double()
        obs = obs.double()
        pvalues = predictive_pvalues(obs, rep)
        low, high = torch.quantile(rep, 0.025, dim=0), torch.quantile(rep, 0.975, dim=0)
        out[name] = {
            "observed_mean": float(obs.mean()),
            "replicated_mean": float(rep.mean()),
            "pvalue_mean": float(pvalues.mean()),
            "share_outside_95": float(((obs < low) | (obs > high)).double().mean()),
        }
    return out


@torch.no_grad()
def prior_samples(model: SSLModel, num_samples: int, *, seed: int = 0) -> torch.Tensor | None:
    """Decoded prior samples ``(num_samples, C, H, W)``, or ``None`` if the prior cannot be sampled."""
    from pssl.diagnostics.importance import forked_rng

    anchor = next(iter(model.parameters()), None)
    device = anchor.device if anchor is not None else torch.device("cpu")
    try:
        with forked_rng(seed, device):
            return model.sample_images(num_samples).cpu()
    except (ValueError, NotImplementedError):
        return None


def as_numpy(values: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in values.items()}


__all__ = [
    "STATISTICS",
    "as_numpy",
    "image_statistics",
    "predictive_pvalues",
    "predictive_summary",
    "prior_samples",
]
