"""TensorBoard logging of a run (``logger=tensorboard``), in addition to the CSV files.

A :class:`TensorBoardLogger` is a pair of training-loop callbacks
(``on_step_end``, ``on_epoch_end``, see :class:`pssl.inference.train.Trainer`)
plus :meth:`TensorBoardLogger.log_embedding` for the evaluated representation.
It writes, under ``RUN_DIR/tensorboard/``, with :class:`torch.utils.tensorboard.SummaryWriter`:

* ``train/<term>`` every ``log_every`` optimiser steps: the mean of each named
  objective term (nats per item) over those steps, and ``lr``;
* ``epoch/train_<term>`` and ``epoch/val_<term>`` at every epoch end (the rows of
  ``epochs.csv``), with ``lr``, throughput and seconds;
* ``reconstructions`` and ``prior_samples`` image grids at every epoch end, for
  generative methods (the same validation images every epoch);
* the test representation (``model.encode`` of up to 2,000 un-augmented test
  images) in the embedding projector, labelled by class and by every style
  factor, with the images as sprites.

View it with ``tensorboard --logdir runs/``. Only the main process writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["LOGGERS", "TensorBoardLogger", "check_logger"]

LOGGERS = ("csv", "tensorboard")
"""Values of ``logger=``: CSV files only, or CSV files and TensorBoard."""


def check_logger(name: str) -> str:
    """``name`` if it is a known logger, else a ``ValueError`` naming the accepted ones."""
    if name not in LOGGERS:
        raise ValueError(f"unknown logger {name!r}; accepted: {', '.join(LOGGERS)}")
    return name


def _float_images(images: Tensor) -> Tensor:
    return images.float().div(255.0) if images.dtype == torch.uint8 else images.float()


class TensorBoardLogger:
    """Training-loop callbacks writing a run's curves, images and embedding to TensorBoard.

    Args:
        run_dir: The run directory; events go to ``run_dir / "tensorboard"``.
        num_images: Images in the reconstruction and prior-sample grids.
    """

    def __init__(self, run_dir: str | Path, *, num_images: int = 16) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:  # the tensorboard package is a dependency; say how to get it
            raise RuntimeError(
                f"logger=tensorboard needs the tensorboard package ({err}); pip install tensorboard"
            ) from None
        self.log_dir = Path(run_dir) / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        self.num_images = num_images
        self._window: dict[str, float] = {}
        self._window_steps = 0

    # --- callbacks ---------------------------------------------------------------------

    @staticmethod
    def _lr(trainer: Any) -> float | None:
        optimiser = getattr(trainer, "optimizer", None) or getattr(trainer, "optimiser", None)
        if optimiser is None:
            return None
        return float(optimiser.param_groups[0]["lr"])

    def on_step_end(self, trainer: Any, batch: Any, output: Any) -> None:
        """Average the step's terms; every ``log_every`` steps write them and the learning rate."""
        if not getattr(trainer, "is_main", True):
            return
        if output is not None:
            for key, value in output.terms.items():
                self._window[key] = self._window.get(key, 0.0) + float(value)
            self._window_steps += 1
        step = int(trainer.global_step)
        if self._window_steps and step % trainer.config.log_every == 0:
            for key, total in self._window.items():
                self.writer.add_scalar(f"train/{key}", total / self._window_steps, step)
            lr = self._lr(trainer)
            if lr is not None:
                self.writer.add_scalar("train/lr", lr, step)
            self._window, self._window_steps = {}, 0

    def on_epoch_end(self, trainer: Any, row: dict[str, float]) -> None:
        """Write the epoch's training and validation terms, learning rate and image grids."""
        if not getattr(trainer, "is_main", True):
            return
        step = int(row.get("step", trainer.global_step))
        for key, value in row.items():
            if key in ("step", "epoch"):
                continue
            if isinstance(value, (int, float)):
                self.writer.add_scalar(f"epoch/{key}", float(value), step)
        lr = self._lr(trainer)
        if lr is not None:
            self.writer.add_scalar("epoch/lr", lr, step)
        self.log_images(trainer.model, trainer.data, step)
        self.writer.flush()

    def log_images(self, model: Any, data: Any, step: int) -> None:
        """Reconstructions (data above, reconstruction below) and prior samples of a generative method."""
        if not getattr(model, "generative", False):
            return
        split = data.val if len(data.val) else data.test
        device = next(model.parameters()).device
        images = _float_images(split.images[: self.num_images]).to(device)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                recon = model.reconstruct(images).float().clamp(0, 1).cpu()
                self.writer.add_images("reconstructions", torch.cat([images.cpu(), recon]), step)
                try:
                    samples = model.sample_images(images.shape[0]).float().clamp(0, 1).cpu()
                    self.writer.add_images("prior_samples", samples, step)
                except ValueError:
                    pass  # an improper prior has nothing to sample
        finally:
            model.train(was_training)

    def log_embedding(self, model: Any, data: Any, step: int, *, max_items: int = 2000) -> None:
        """The test representation in the embedding projector, labelled by class and style factors."""
        from pssl.evaluation import extract_features

        test = data.test if len(data.test) else data.val
        count = min(len(test), max_items)
        images = test.images[:count]
        features = extract_features(model, images)
        factors = getattr(test, "factors", {}) or {}
        columns = ["class", *factors]
        rows = []
        for i in range(count):
            row = [str(int(test.labels[i]))]
            for name in factors:
                value = factors[name][i]
                row.append(f"{float(value):.3g}" if value.is_floating_point() else str(int(value)))
            rows.append(row)
        metadata: Any = rows if len(columns) > 1 else [r[0] for r in rows]
        self.writer.add_embedding(
            features,
            metadata=metadata,
            metadata_header=columns if len(columns) > 1 else None,
            label_img=_float_images(images),
            global_step=step,
            tag="representation",
        )
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
