"""Reference points for every comparison: what a representation gets without self-supervision.

Each baseline gives an ``encode(images) -> (B, d)`` module that the evaluation
reads exactly as it reads a trained method, so a table row for a baseline means
the same as one for SimVAE or SimCLR:

* ``pixels``: the flattened image itself (``C * H * W`` features);
* ``pca``: the principal components of the training images, as many as the
  configuration's ``latent_dim`` (``sklearn.decomposition.PCA`` fitted on the
  training split);
* ``random``: the configuration's encoder network, randomly initialised with the
  run's seed and never trained (``latent_dim`` outputs);
* ``supervised``: the same encoder trained with labels (an upper bound): a linear
  softmax head on its ``latent_dim`` outputs, cross-entropy on augmented views of
  the training items (the configuration's augmentation preset, one view per item
  per step), Adam with the configuration's ``lr``, ``adam_eps``,
  ``weight_decay``, ``batch_size`` and ``epochs``. The representation is the
  encoder output, as for the self-supervised methods.

:func:`run_baseline` writes a run directory like a trained method's
(``config.json`` with its resolved record, ``metrics.json`` with ``content``,
``style``, ``augmentation``, ``protocol`` and ``training``), so ``pssl compare``
reuses, reports and tabulates it the same way.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pssl.config import Config
from pssl.datasets import DataSplits, load_dataset

logger = logging.getLogger(__name__)

BASELINES: dict[str, str] = {
    "pixels": "raw pixels, flattened (no training)",
    "pca": "PCA of the training images to latent_dim components (no training)",
    "random": "the configuration's encoder, randomly initialised and never trained",
    "supervised": "the configuration's encoder trained with labels (cross-entropy on augmented views): "
    "an upper bound",
}
"""Baseline names and what each is; ``pssl compare models=pixels,pca,random,supervised``."""


def is_baseline(name: str) -> bool:
    """Whether ``name`` is a baseline rather than a registered method."""
    return name in BASELINES


def _float(images: Tensor) -> Tensor:
    return images.float().div(255.0) if images.dtype == torch.uint8 else images.float()


class PixelEncoder(nn.Module):
    """``encode(images (B, C, H, W)) -> (B, C * H * W)``: the pixels are the representation."""

    def encode(self, images: Tensor) -> Tensor:
        return images.flatten(1).float()


class PCAEncoder(nn.Module):
    """Projection on the leading principal components of the training images.

    Args:
        images: Training images ``(N, C, H, W)`` (``uint8`` or float in ``[0, 1]``).
        components: How many components (at most ``min(N, C * H * W)``).
        seed: Seeds the randomised solver when scikit-learn picks one.
    """

    def __init__(self, images: Tensor, components: int, seed: int) -> None:
        super().__init__()
        from sklearn.decomposition import PCA

        flat = _float(images).flatten(1).double().numpy()
        count = min(components, *flat.shape)
        pca = PCA(n_components=count, random_state=seed).fit(flat)
        self.register_buffer("mean", torch.from_numpy(pca.mean_).float())
        self.register_buffer("components", torch.from_numpy(pca.components_).float())
        self.explained_variance_ratio = float(pca.explained_variance_ratio_.sum())

    def encode(self, images: Tensor) -> Tensor:
        return (images.flatten(1).float() - self.mean) @ self.components.T


class EncoderBaseline(nn.Module):
    """The configuration's encoder network as a representation (``random`` and ``supervised``)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def encode(self, images: Tensor) -> Tensor:
        return self.encoder(images)


def build_encoder_network(config: Config, image_shape: tuple[int, int, int]) -> nn.Module:
    """The encoder the configuration names (or the default for the image shape), ``latent_dim`` outputs."""
    from pssl.networks import build_encoder, default_networks

    encoder = config.encoder
    name = encoder.name if encoder is not None else default_networks(image_shape)[0]
    options = dict(encoder.options) if encoder is not None else {}
    return build_encoder(name, image_shape, config.latent_dim, options)


def train_supervised(
    encoder: nn.Module, data: DataSplits, config: Config, *, log: Callable[[str], None] = logger.info
) -> list[dict[str, float]]:
    """Train ``encoder`` + a linear head on the labels of augmented training views.

    Each step draws ``batch_size`` items (a seeded permutation per epoch), one
    augmented view of each (the configuration's preset), and takes one Adam step
    on the mean cross-entropy. Returns one row per epoch (``epoch``, ``train_loss``,
    ``val_accuracy`` on un-augmented validation images, ``seconds``).
    """
    from pssl.augment import build_augmenter

    train = data.train
    image_shape = tuple(train.image_shape)
    config = baseline_config(config, data)
    augmenter = build_augmenter(config.augment.name, image_shape, dict(config.augment.options), data=data)
    num_classes = int(train.num_classes or int(train.labels.max()) + 1)
    head = nn.Linear(config.latent_dim, num_classes)
    model = nn.Sequential(encoder, head)
    optimiser = torch.optim.Adam(
        model.parameters(), lr=config.lr, eps=config.adam_eps, weight_decay=config.weight_decay
    )
    generator = torch.Generator().manual_seed(config.seed + 1)
    images, labels = train.images, train.labels.long()
    count = images.shape[0]
    batch = min(config.batch_size, count)
    history: list[dict[str, float]] = []
    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(count, generator=generator)
        total, steps = 0.0, 0
        for first in range(0, count, batch):
            rows = order[first : first + batch]
            views = augmenter(_float(images[rows]), 1, generator)[:, 0]
            loss = nn.functional.cross_entropy(model(views), labels[rows])
            if not math.isfinite(float(loss.detach())):
                raise FloatingPointError(f"supervised baseline: the cross-entropy became {float(loss)}")
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total, steps = total + float(loss.detach()), steps + 1
        model.eval()
        with torch.no_grad():
            val = data.val
            accuracy = (
                float((model(_float(val.images)).argmax(1) == val.labels).double().mean())
                if len(val)
                else math.nan
            )
        row = {
            "epoch": epoch,
            "train_loss": total / max(steps, 1),
            "val_accuracy": accuracy,
            "seconds": time.perf_counter() - start,
        }
        history.append(row)
        log(f"supervised epoch {epoch}: loss {row['train_loss']:.4f}, val accuracy {accuracy:.3f}")
    return history


def build_baseline(name: str, config: Config, data: DataSplits) -> tuple[nn.Module, dict[str, Any]]:
    """The representation of baseline ``name`` and what was done to get it (for ``metrics.json``)."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; accepted: {', '.join(BASELINES)}")
    image_shape = tuple(data.train.image_shape)
    training: dict[str, Any] = {"baseline": name, "description": BASELINES[name]}
    if name == "pixels":
        return PixelEncoder(), training
    if name == "pca":
        encoder = PCAEncoder(data.train.images, config.latent_dim, config.seed)
        training["explained_variance_ratio"] = encoder.explained_variance_ratio
        return encoder, training
    torch.manual_seed(config.seed)  # the network's initialisation, as a trained method's
    network = build_encoder_network(config, image_shape)
    if name == "supervised":
        history = train_supervised(network, data, config)
        training["epochs_history"] = history
        training["seconds_per_epoch"] = sum(r["seconds"] for r in history) / max(len(history), 1)
    return EncoderBaseline(network).eval(), training


def baseline_config(config: Config, data: DataSplits) -> Config:
    """``config`` with the data set's declared defaults filled in, as a trained method's run gets them."""
    from pssl.inference.compose import resolve_config

    return resolve_config(config, data)


def run_baseline(
    config: Config,
    *,
    probes: tuple[str, ...] = ("linear",),
    augmentation_style: bool = False,
    data: DataSplits | None = None,
) -> dict[str, Any]:
    """Build (and for ``supervised`` train) a baseline, evaluate it, write its run directory.

    Args:
        config: ``config.model.name`` is the baseline; ``config.out`` its run directory.
        probes: Content probes.
        augmentation_style: Also read the augmentation parameters of views.
        data: The splits (default: loaded from ``config.data`` with ``config.seed``).

    Returns:
        The metrics written to ``RUN_DIR/metrics.json``.
    """
    from pssl.augment import build_augmenter
    from pssl.evaluation import evaluate
    from pssl.rundir import claim, write_json

    name = config.model.name
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; accepted: {', '.join(BASELINES)}")
    if config.model.options:
        raise ValueError(f"baseline {name!r} takes no model options, got {sorted(config.model.options)}")
    run_dir = (
        Path(config.out) if config.out else Path("runs") / f"{name}-{config.data.name}-seed{config.seed}"
    )
    with claim(run_dir):
        start = time.perf_counter()
        data = (
            data
            if data is not None
            else load_dataset(config.data.name, config.data.options, seed=config.seed)
        )
        config = baseline_config(config, data)
        record = config.to_dict()
        record["out"] = str(run_dir)
        record["resolved"] = {"baseline": name, "image_shape": list(data.train.image_shape)}
        write_json(run_dir / "config.json", record)
        torch_threads = torch.get_num_threads()
        representation, training = build_baseline(name, config, data)
        from pssl.datasets.descriptor import evaluation_splits

        views = build_augmenter(
            config.augment.name, data.train.image_shape, config.augment.options, data=data
        )
        augmenter = views if augmentation_style else None
        data = evaluation_splits(data, views)  # probes read images like the training views (e.g. binarised)
        metrics = evaluate(
            representation, data, seed=config.seed, device="cpu", probes=probes, augmenter=augmenter
        )
        torch.set_num_threads(torch_threads)
        metrics["training"] = {
            "model": name,
            "data": config.data.name,
            "epochs": config.epochs,
            "finished": True,
            "seconds": time.perf_counter() - start,
            **training,
        }
        write_json(run_dir / "metrics.json", metrics)
    return metrics
