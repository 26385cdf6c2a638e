r"""Latent structure of a representation over augmented views, for every method.

Given the representations ``f_ij = encode(x_ij)`` of ``J`` augmented views of
``N`` items (``(N, J, d)``), per dimension ``k``:

* within-item variance ``W_k = (1/N) sum_i (1/(J-1)) sum_j (f_ijk - fbar_ik)^2``,
  the unbiased spread of one item's views;
* across-item variance ``A_k = (1/J) sum_j (1/(N-1)) sum_i (f_ijk - fbar_.jk)^2``,
  the unbiased spread of one view's representation over items;
* ``within_to_across = sum_k W_k / sum_k A_k`` (and per dimension). It is 0 when
  every view of an item has the same representation and about 1 when the
  representation does not depend on the item at all.

**What SimVAE's prior implies.** Under ``y ~ N(0, s^2 I)``,
``z_j | y ~ N(y, sigma^2 I)``: ``E[W_k] = sigma^2`` (the unbiased within-item
variance) and ``E[A_k] = Var(z_jk) = s^2 + sigma^2``, so the prior's ratio is
``sigma^2 / (s^2 + sigma^2)``, whatever ``J``: ``0.15 / 1.15 = 0.130`` for the
defaults ``s^2 = 1, sigma^2 = 0.15``. (The variance-components ratio
``sigma^2 / s^2 = 0.15`` is reported as ``within_to_item_effect``: its denominator
``Var_i(fbar_i) - W / J`` estimates ``s^2``, because
``E[Var_i(fbar_ik)] = s^2 + sigma^2 / J``.) A VAE prior (no content latent)
implies 1, a flat p(y) implies 0. The encoder mean is not a prior draw, so the
prior's value is a reference point, not a target.

Also (Wang & Isola 2020), on L2-normalised features ``u = f / ||f||``:

* ``alignment = E ||u_ij - u_ij'||^2`` over positive pairs (views of one item, j < j'),
  0 (identical) to 4 (opposite);
* ``uniformity = log E exp(-2 ||u_ij - u_i'j'||^2)`` over pairs of different items,
  lower is more uniform on the sphere (0 means all features coincide);

and the effective rank (Roy & Vetterli 2007) of the centred ``(N J, d)`` feature
matrix: ``exp(-sum_k p_k log p_k)`` with ``p_k = s_k / sum s`` its normalised
singular values, from 1 (one direction) to ``d`` (isotropic).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from pssl.datasets.core import as_float_images
from pssl.models.base import SSLModel, ViewBatch
from pssl.rundir import save_figure


def effective_rank(features: torch.Tensor, *, centre: bool = True) -> float:
    """Roy & Vetterli's effective rank of an ``(n, d)`` matrix (centred by default)."""
    if features.dim() != 2:
        raise ValueError(f"features must be (n, d), got shape {tuple(features.shape)}")
    x = features.double()
    if centre:
        x = x - x.mean(0, keepdim=True)
    singular = torch.linalg.svdvals(x)
    total = singular.sum()
    if not total > 0:
        return 0.0
    p = singular / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def alignment(features: torch.Tensor) -> float:
    """Mean squared distance between L2-normalised views of one item, ``(N, J, d)`` with J >= 2."""
    u = F.normalize(features.double(), dim=-1)
    num_views = u.shape[1]
    total, count = 0.0, 0
    for a in range(num_views):
        for b in range(a + 1, num_views):
            total += float((u[:, a] - u[:, b]).pow(2).sum(-1).sum())
            count += u.shape[0]
    return total / count


def uniformity(features: torch.Tensor, *, t: float = 2.0, max_points: int = 2048, chunk: int = 1024) -> float:
    """``log mean exp(-t ||u - u'||^2)`` over L2-normalised features of different items, ``(N, J, d)``.

    Uses the first ``max(2, max_points // J)`` items (the pair count grows quadratically).
    """
    features = features[: max(2, max_points // features.shape[1])]
    num_items, num_views = features.shape[:2]
    if num_items < 2:
        return float("nan")
    u = F.normalize(features.double(), dim=-1).reshape(num_items * num_views, -1)
    item = torch.arange(num_items, device=u.device).repeat_interleave(num_views)
    parts = []
    for start in range(0, u.shape[0], chunk):
        block = u[start : start + chunk]
        sq = torch.cdist(block, u).pow(2)
        other = item[start : start + chunk, None] != item[None, :]
        parts.append((-t * sq)[other])
    values = torch.cat(parts)
    return float(torch.logsumexp(values, 0) - math.log(values.numel()))


def structure_metrics(features: torch.Tensor) -> dict[str, Any]:
    """The metrics of the module docstring for representations ``(N, J, d)`` (N >= 2, J >= 2).

    Returns:
        Plain dict: ``within_to_across`` (overall), ``within_to_across_per_dim``,
        ``within_variance``/``across_variance`` (summed over dims), ``within_to_item_effect``
        (``None`` when the item-effect estimate is not positive), ``alignment``,
        ``uniformity``, ``effective_rank``, ``representation_dim``.
    """
    if features.dim() != 3:
        raise ValueError(f"features must be (items, views, dim), got shape {tuple(features.shape)}")
    num_items, num_views, dim = features.shape
    if num_items < 2 or num_views < 2:
        raise ValueError(f"need at least 2 items and 2 views, got {num_items} items and {num_views} views")
    f = features.double()
    within = f.var(1, unbiased=True).mean(0)  # (d,)
    across = f.var(0, unbiased=True).mean(0)  # (d,)
    item_means = f.mean(1).var(0, unbiased=True)
    item_effect = item_means - within / num_views
    per_dim = torch.where(across > 0, within / across.clamp_min(1e-300), torch.full_like(across, math.nan))
    effect_total = float(item_effect.sum())
    return {
        "within_to_across": float(within.sum() / across.sum()) if across.sum() > 0 else math.nan,
        "within_to_across_per_dim": per_dim.tolist(),
        "within_variance": float(within.sum()),
        "across_variance": float(across.sum()),
        "within_to_item_effect": float(within.sum()) / effect_total if effect_total > 0 else None,
        "alignment": alignment(f),
        "uniformity": uniformity(f),
        "effective_rank": effective_rank(f.reshape(num_items * num_views, dim)),
        "representation_dim": int(dim),
        "num_items": int(num_items),
        "num_views": int(num_views),
    }


def as_model_input(model: SSLModel, images: torch.Tensor) -> torch.Tensor:
    """Images as floats in the model's dtype and on its device (``uint8`` scaled by 1/255)."""
    anchor = next(iter(model.parameters()), None)
    dtype = anchor.dtype if anchor is not None else torch.get_default_dtype()
    device = anchor.device if anchor is not None else images.device
    return as_float_images(images, dtype=dtype, device=device)


@torch.no_grad()
def encode_views(model: SSLModel, views: torch.Tensor, *, batch_size: int = 512) -> torch.Tensor:
    """``model.encode`` on ``(N, J, C, H, W)`` views, in chunks; returns ``(N, J, d)`` on the CPU."""
    flat = views.reshape(-1, *views.shape[2:])
    parts = [
        model.encode(flat[s : s + batch_size]).float().cpu() for s in range(0, flat.shape[0], batch_size)
    ]
    return torch.cat(parts).reshape(views.shape[0], views.shape[1], -1)


@torch.no_grad()
def prior_implied_ratios(model: SSLModel, views: torch.Tensor) -> dict[str, float | None]:
    """The within/across and within/item-effect ratios the method's prior implies (``None`` if unknown).

    Read from a model trace on a few items (see :func:`pssl.diagnostics.importance.view_marginal`);
    discriminative methods have no prior over representations and get ``None``.
    """
    from pssl.diagnostics.importance import trace_pair, view_marginal

    if not model.generative:
        return {"within_to_across": None, "within_to_item_effect": None}
    few = views[: min(4, views.shape[0])]
    batch = ViewBatch(views=few, index=torch.arange(few.shape[0], device=few.device), num_items=few.shape[0])
    _, model_trace = trace_pair(model, batch)
    marginal = view_marginal(model_trace)
    if marginal is None:
        return {"within_to_across": None, "within_to_item_effect": None}
    effect = None
    if marginal.view_variance is not None and marginal.content_variance is not None:
        effect = float(marginal.view_variance.sum() / marginal.content_variance.sum())
    return {"within_to_across": marginal.within_to_across_ratio(), "within_to_item_effect": effect}


@torch.no_grad()
def representation_structure(
    model: SSLModel,
    images: torch.Tensor,
    augmenter: Any,
    num_views: int,
    generator: torch.Generator,
    *,
    batch_size: int = 512,
) -> dict[str, Any]:
    """Structure of ``model.encode`` over ``num_views`` augmented views of each image.

    Args:
        model: any method (only ``encode`` is used, plus a model trace for generative ones).
        images: ``(N, C, H, W)`` floats in [0, 1] (``uint8`` is scaled by 1/255).
        augmenter: a :class:`pssl.augment.ViewAugmenter` (``augmenter(images, J, generator)``).
        num_views: J >= 2.
        generator: the augmentation randomness.

    Returns:
        :func:`structure_metrics` plus ``prior_within_to_across`` and
        ``prior_within_to_item_effect`` (see :func:`prior_implied_ratios`).
    """
    if isinstance(num_views, bool) or not isinstance(num_views, int) or num_views < 2:
        raise ValueError(f"num_views must be an integer >= 2 to compare views of an item, got {num_views!r}")
    images = as_model_input(model, images)
    was_training = model.training
    model.eval()
    try:
        views = augmenter(images, num_views, generator)
        features = encode_views(model, views, batch_size=batch_size)
        out = structure_metrics(features)
        implied = prior_implied_ratios(model, views)
    finally:
        model.train(was_training)
    out["prior_within_to_across"] = implied["within_to_across"]
    out["prior_within_to_item_effect"] = implied["within_to_item_effect"]
    return out


def structure_reading(structure: dict[str, Any]) -> str:
    """One line saying what the structure metrics mean."""
    ratio = structure["within_to_across"]
    implied = structure.get("prior_within_to_across")
    erank, dim = structure["effective_rank"], structure["representation_dim"]
    if ratio < 0.05:
        shape = "views of an item collapse to nearly one point (style discarded)"
    elif ratio < 0.5:
        shape = "views of an item cluster, items stay apart"
    elif ratio < 0.9:
        shape = "views of an item cluster only loosely"
    else:
        shape = "views of an item are as far apart as different items (no item structure)"
    line = f"within/across-item variance ratio {ratio:.3g}: {shape}"
    if implied is not None:
        line += f" (the prior implies {implied:.3g})"
    return line + f"; effective rank {erank:.3g} of {dim} dimensions"


def compare_structure(results: dict[str, dict[str, Any]], path: str | Path) -> Path:
    """Plot the latent-structure metrics of several methods side by side.

    Args:
        results: method name -> :func:`representation_structure` dict, or a
            diagnostics dict holding one under ``"structure"``.
        path: output PNG.

    Returns:
        ``path``.
    """
    if not results:
        raise ValueError("results is empty: pass at least one method's structure metrics")
    from pssl.diagnostics.plots import pyplot

    plt = pyplot()
    names = list(results)
    metrics = [results[n].get("structure", results[n]) for n in names]
    panels = [
        ("within_to_across", "within / across-item variance"),
        ("alignment", "alignment (lower: tighter views)"),
        ("uniformity", "uniformity (lower: more uniform)"),
        ("effective_rank_fraction", "effective rank / dim"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.0), squeeze=False)
    positions = list(range(len(names)))
    for ax, (key, title) in zip(axes[0], panels):
        if key == "effective_rank_fraction":
            values = [m["effective_rank"] / m["representation_dim"] for m in metrics]
        else:
            values = [m[key] for m in metrics]
        ax.bar(positions, values, color=[f"C{i % 10}" for i in positions])
        if key == "within_to_across":
            for i, m in enumerate(metrics):
                implied = m.get("prior_within_to_across")
                if implied is not None:
                    ax.plot([i - 0.4, i + 0.4], [implied, implied], color="k", linestyle="--", linewidth=1)
        ax.set_xticks(positions)
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        ax.set_title(title, fontsize=9)
    fig.suptitle("latent structure over augmented views (dashed: the prior's ratio)", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    try:
        save_figure(fig, path, dpi=100)
    finally:
        plt.close(fig)
    return path


__all__ = [
    "alignment",
    "compare_structure",
    "effective_rank",
    "encode_views",
    "prior_implied_ratios",
    "representation_structure",
    "structure_metrics",
    "structure_reading",
    "uniformity",
]
