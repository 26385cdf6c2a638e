"""Figures written into run directories (matplotlib, Agg backend, PNG files)."""

from __future__ import annotations

from pathlib import Path

import torch

from pssl.rundir import save_figure


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def image_grid(rows: list[torch.Tensor], path: str | Path, *, row_titles: list[str] | None = None) -> Path:
    """Save rows of images as one PNG.

    Args:
        rows: each ``(n, C, H, W)`` floats in [0, 1]; all rows have the same ``n``.
        path: output PNG path.
        row_titles: one label per row.
    """
    plt = _pyplot()
    num_rows, num_cols = len(rows), rows[0].shape[0]
    fig, axes = plt.subplots(num_rows, num_cols, figsize=(num_cols * 0.9, num_rows * 1.0), squeeze=False)
    for r, images in enumerate(rows):
        for c in range(num_cols):
            ax = axes[r][c]
            image = images[c].detach().float().clamp(0, 1).cpu()
            if image.shape[0] == 1:
                ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(image.permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0 and row_titles:
                ax.set_ylabel(row_titles[r], fontsize=7)
    fig.tight_layout()
    path = Path(path)
    try:
        save_figure(fig, path, dpi=100)
    finally:
        plt.close(fig)
    return path


def loss_curves(
    history: list[dict[str, float]],
    path: str | Path,
    *,
    title: str = "",
    labels: dict[str, str] | None = None,
) -> Path | None:
    """Plot every logged term (nats per item) against the step; ``None`` if nothing was logged.

    ``labels`` gives a panel title per term name (e.g. what the summed ``elbo`` term really is).
    """
    if not history:
        return None
    plt = _pyplot()
    keys = [k for k in history[0] if k not in ("step", "epoch")]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.6), squeeze=False)
    steps = [row["step"] for row in history]
    for ax, key in zip(axes[0], keys):
        ax.plot(steps, [row.get(key, float("nan")) for row in history])
        ax.set_title((labels or {}).get(key, key), fontsize=9)
        ax.set_xlabel("step", fontsize=8)
    fig.suptitle(title + " (nats per item)", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    try:
        save_figure(fig, path, dpi=100)
    finally:
        plt.close(fig)
    return path
