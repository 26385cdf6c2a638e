"""The training loop: one loop for every method.

``train(config)`` loads the data, resolves defaults that depend on it, builds
the method by name, and fits it with Adam on the objective of
:mod:`pssl.inference.objectives`. The loop never branches on the method: it
draws a minibatch of item indices, makes ``J`` augmented views on the training
device, evaluates the objective, steps, calls the method's ``after_step`` hook,
and logs the named terms.

A run directory holds plain files: ``config.json`` (resolved), ``history.csv``
(one row per ``log_every`` steps), ``epochs.csv`` (one row per epoch, with
validation terms and throughput) and ``checkpoint-<step>.pt``.

Reproducibility: everything random derives from ``config.seed`` through
:func:`seed_everything`, called once. Checkpoints hold every RNG state, the data
order generator's state at the start of the epoch and the position in it, so a
run stopped anywhere and resumed produces the same parameters as an
uninterrupted one (on CPU).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch

from pssl.augment import ViewAugmenter, build_augmenter, default_preset
from pssl.config import Component, Config, ConfigError
from pssl.data import DataSplits, TensorData, load_dataset
from pssl.inference.checkpoint import (
    CheckpointError,
    capture_rng_state,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from pssl.inference.objectives import ELBO, NonFiniteError, ObjectiveOutput
from pssl.models.base import MODELS, ModelSpec, SSLModel, ViewBatch, build_model
from pssl.models.likelihoods import default_likelihood
from pssl.networks import default_networks

# Fields that may differ between a checkpoint's config and the config resuming it.
RESUMABLE_CHANGES = (
    "epochs",
    "resume",
    "progress",
    "log_every",
    "keep_checkpoints",
    "checkpoint_every",
    "device",
)


class TrainingInterrupted(KeyboardInterrupt):
    """Raised after SIGINT/SIGTERM once a checkpoint has been written; resume continues the run."""


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        model: the trained method (in eval mode).
        config: the resolved configuration.
        data: the data splits used.
        run_dir: where config, history and checkpoints were written.
        history: logged rows (step, epoch, terms in nats per item, ...).
        epochs: per-epoch rows (mean training terms, validation terms, seconds, images per second).
        skipped_steps: steps skipped for non-finite values (``nonfinite=skip``).
    """

    model: SSLModel
    config: Config
    data: DataSplits
    run_dir: Path
    history: list[dict[str, float]] = field(default_factory=list)
    epochs: list[dict[str, float]] = field(default_factory=list)
    skipped_steps: int = 0


def seed_everything(seed: int) -> None:
    """The one place a run's randomness is seeded (torch, CUDA, numpy, Python, Pyro)."""
    pyro.set_rng_seed(seed)  # seeds torch (and CUDA), numpy and random
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; otherwise the named device, checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; accepted: auto, cpu, cuda, cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device={name!r} requested but CUDA is not available on this machine; use device=cpu"
        )
    return device


def resolve_config(config: Config, data: DataSplits) -> Config:
    """Fill the components left as ``None`` with defaults that depend on the data.

    Encoder/decoder follow the image shape, the likelihood the channels, the
    augmentation preset the data set, the priors are Gaussian.
    """
    shape = data.train.image_shape
    encoder, decoder = default_networks(shape)
    base_name = config.data.name
    defaults = {
        "prior": Component("gaussian"),
        "view_prior": Component("gaussian"),
        "likelihood": Component(default_likelihood(shape)),
        "encoder": Component(encoder),
        "decoder": Component(decoder),
        "augment": Component(default_preset(base_name)),
    }
    changes = {k: v for k, v in defaults.items() if getattr(config, k) is None}
    return dataclasses.replace(config, **changes)


def model_spec(config: Config, image_shape: tuple[int, int, int]) -> ModelSpec:
    """The :class:`ModelSpec` a resolved config describes."""
    return ModelSpec(
        image_shape=tuple(image_shape),
        latent_dim=config.latent_dim,
        num_views=config.num_views,
        encoder=config.encoder,
        decoder=config.decoder,
        prior=config.prior,
        view_prior=config.view_prior,
        likelihood=config.likelihood,
    )


def build_from_config(config: Config, image_shape: tuple[int, int, int]) -> SSLModel:
    """Build the method a resolved config names (used by training and by loading a run)."""
    return build_model(config.model.name, model_spec(config, image_shape), config.model.options)


def default_run_dir(config: Config) -> Path:
    return Path("runs") / f"{config.model.name}-{config.data.name}-seed{config.seed}"


def _float_images(images: torch.Tensor) -> torch.Tensor:
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()


def check_training_data(model: SSLModel, data: TensorData, *, chunk: int = 4096, name: str) -> None:
    """Let the method reject data outside its likelihood's support before any step."""
    for start in range(0, len(data), chunk):
        model.check_data(_float_images(data.images[start : start + chunk]), name=name)


class Trainer:
    """Holds the state of one run; :meth:`fit` runs it. Most users call :func:`train`."""

    def __init__(
        self,
        config: Config,
        *,
        data: DataSplits | None = None,
        model: SSLModel | None = None,
        on_epoch_end: Callable[[Trainer, dict[str, float]], None] | None = None,
    ) -> None:
        self.device = resolve_device(config.device)
        self.run_dir = Path(config.out) if config.out else default_run_dir(config)
        seed_everything(config.seed)
        self.data = (
            data
            if data is not None
            else load_dataset(config.data.name, config.data.options, seed=config.seed)
        )
        if len(self.data.train) == 0:
            raise ValueError(f"data set {config.data.name!r} has no training items")
        self.config = resolve_config(config, self.data)
        self.custom_model = model is not None
        self.model = (
            model if model is not None else build_from_config(self.config, self.data.train.image_shape)
        ).to(self.device)
        if self.config.num_views < self.model.min_views:
            raise ValueError(
                f"model {self.config.model.name!r} needs num_views >= {self.model.min_views}, "
                f"got num_views={self.config.num_views}"
            )
        check_training_data(self.model, self.data.train, name=f"data set {self.config.data.name!r}")
        self.augmenter: ViewAugmenter = build_augmenter(
            self.config.augment.name, self.data.train.image_shape, self.config.augment.options
        )
        self.objective = ELBO(self.model)
        self.optimizer = torch.optim.Adam(
            [p for p in self.model.parameters() if p.requires_grad],
            lr=self.config.lr,
            eps=self.config.adam_eps,
            weight_decay=self.config.weight_decay,
        )
        self.augment_generator = torch.Generator(device=self.device).manual_seed(config.seed + 1)
        self.order_generator = torch.Generator().manual_seed(config.seed + 2)
        self.train_images = self.data.train.images.to(self.device)
        self.num_items = len(self.data.train)
        self.batch_items = min(self.config.batch_size, self.num_items)
        self.steps_per_epoch = self.num_items // self.batch_items
        self.on_epoch_end = on_epoch_end
        # progress counters
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.epoch_order_state = self.order_generator.get_state()
        self.history: list[dict[str, float]] = []
        self.epoch_rows: list[dict[str, float]] = []
        self.skipped_steps = 0
        self._stop_signal: int | None = None

    # --- state -------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "model_name": self.config.model.name,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "epoch_order_state": self.epoch_order_state,
            "rng": capture_rng_state({"augment": self.augment_generator, "order": self.order_generator}),
            "history": self.history,
            "epochs": self.epoch_rows,
            "skipped_steps": self.skipped_steps,
        }

    def load_state_dict(self, state: dict[str, Any], *, source: str) -> None:
        saved = Config.from_dict(state["config"])
        mine = {k: v for k, v in self.config.to_dict().items() if k not in RESUMABLE_CHANGES}
        theirs = {k: v for k, v in saved.to_dict().items() if k not in RESUMABLE_CHANGES}
        if mine != theirs:
            diff = sorted(k for k in mine if mine[k] != theirs.get(k))
            raise CheckpointError(
                f"checkpoint {source} was written by a different configuration (differs in: {', '.join(diff)}; "
                f"it holds model {state.get('model_name')!r}); resume with the run's own config "
                f"(`pssl resume RUN_DIR`) or choose a new out="
            )
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as err:
            raise CheckpointError(
                f"checkpoint {source} does not fit model {self.config.model.name!r}: {err}"
            ) from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch = int(state["epoch"])
        self.step_in_epoch = int(state["step_in_epoch"])
        self.global_step = int(state["global_step"])
        self.epoch_order_state = state["epoch_order_state"]
        restore_rng_state(state["rng"], {"augment": self.augment_generator, "order": self.order_generator})
        self.history = list(state["history"])
        self.epoch_rows = list(state["epochs"])
        self.skipped_steps = int(state["skipped_steps"])

    def save(self) -> Path:
        path = save_checkpoint(
            self.state_dict(),
            checkpoint_path(self.run_dir, self.global_step),
            keep=self.config.keep_checkpoints,
        )
        self._write_tables()
        return path

    def _prepare_run_dir(self) -> None:
        existing = list_checkpoints(self.run_dir)
        if self.config.resume:
            latest = latest_checkpoint(self.run_dir)
            if latest is None:
                if existing:
                    raise CheckpointError(
                        f"no readable checkpoint in {self.run_dir} (tried {len(existing)} files)"
                    )
                raise CheckpointError(
                    f"resume=true but {self.run_dir} holds no checkpoint; start the run without resume=true"
                )
            self.load_state_dict(load_checkpoint(latest, map_location=self.device), source=str(latest))
        elif existing:
            raise ValueError(
                f"run directory {self.run_dir} already holds checkpoints; pass resume=true to continue that run "
                "or choose another out= (nothing was overwritten)"
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        resolved = self.config.to_dict()
        resolved["resolved"] = {"model": self.model.describe(), "custom_model": self.custom_model}
        _atomic_write(self.run_dir / "config.json", _json(resolved))

    # --- the loop ----------------------------------------------------------------------

    def make_batch(self, index: torch.Tensor) -> ViewBatch:
        images = _float_images(self.train_images[index.to(self.train_images.device)])
        views = self.augmenter(images, self.config.num_views, self.augment_generator)
        return ViewBatch(views=views, index=index.to(self.device), num_items=self.num_items)

    def step(self, batch: ViewBatch) -> ObjectiveOutput | None:
        """One optimiser step; returns the objective output, or ``None`` if the step was skipped."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        autocast = torch.autocast(
            device_type=self.device.type, dtype=torch.bfloat16, enabled=self.config.precision == "bf16"
        )
        with autocast:
            output = self.objective(batch)
        problem = None
        if not torch.isfinite(output.loss):
            bad = output.nonfinite_sites() or [k for k, v in output.terms.items() if not torch.isfinite(v)]
            problem = f"loss is {output.loss.item()} at step {self.global_step}; non-finite sites/terms: {', '.join(bad)}"
        else:
            output.loss.backward()
            bad = [
                n
                for n, p in self.model.named_parameters()
                if p.grad is not None and not torch.isfinite(p.grad).all()
            ]
            if bad:
                problem = (
                    f"non-finite gradient at step {self.global_step} in parameters: {', '.join(bad[:8])}"
                )
        if problem is not None:
            if self.config.nonfinite == "skip":
                self.skipped_steps += 1
                self.optimizer.zero_grad(set_to_none=True)
                return None
            last = latest_checkpoint(self.run_dir)
            raise NonFiniteError(
                f"{problem}. Training stopped; the last good checkpoint is "
                f"{last if last else '(none written yet)'}; nonfinite=skip skips such steps instead"
            )
        self.optimizer.step()
        self.model.after_step()
        return output

    def fit(self) -> TrainResult:
        self._prepare_run_dir()
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:
            try:
                signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread: leave handlers alone
                previous = {}
                break
        try:
            self._fit()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self.model.eval()
        return TrainResult(
            model=self.model,
            config=self.config,
            data=self.data,
            run_dir=self.run_dir,
            history=self.history,
            epochs=self.epoch_rows,
            skipped_steps=self.skipped_steps,
        )

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._stop_signal = signum

    def _fit(self) -> None:
        from tqdm.auto import tqdm

        while self.epoch < self.config.epochs:
            self.order_generator.set_state(self.epoch_order_state)
            order = torch.randperm(self.num_items, generator=self.order_generator)
            epoch_start = time.perf_counter()
            sums: dict[str, float] = {}
            window: dict[str, float] = {}
            window_steps = 0
            counted = 0
            bar = tqdm(
                total=self.steps_per_epoch,
                initial=self.step_in_epoch,
                desc=f"{self.config.model.name} epoch {self.epoch + 1}/{self.config.epochs}",
                disable=not self.config.progress,
                leave=False,
                dynamic_ncols=True,
            )
            steps_this_session = 0
            while self.step_in_epoch < self.steps_per_epoch:
                start = self.step_in_epoch * self.batch_items
                batch = self.make_batch(order[start : start + self.batch_items])
                output = self.step(batch)
                self.step_in_epoch += 1
                self.global_step += 1
                steps_this_session += 1
                bar.update(1)
                if output is not None:
                    terms = {k: float(v) for k, v in output.terms.items()}
                    counted += 1
                    window_steps += 1
                    for k, v in terms.items():
                        sums[k] = sums.get(k, 0.0) + v
                        window[k] = window.get(k, 0.0) + v
                    bar.set_postfix({k: f"{v:.4g}" for k, v in terms.items()}, refresh=False)
                if window_steps and self.global_step % self.config.log_every == 0:
                    row = {
                        "step": self.global_step,
                        "epoch": self.epoch + self.step_in_epoch / self.steps_per_epoch,
                    }
                    row.update({k: v / window_steps for k, v in window.items()})
                    self.history.append(row)
                    window, window_steps = {}, 0
                if self._stop_signal is not None:
                    bar.close()
                    path = self.save()
                    raise TrainingInterrupted(
                        f"stopped by signal {self._stop_signal} at step {self.global_step}; checkpoint {path}; "
                        "resume with resume=true"
                    )
                if self.config.checkpoint_every and self.global_step % self.config.checkpoint_every == 0:
                    self.save()
            bar.close()
            seconds = time.perf_counter() - epoch_start
            self.epoch += 1
            self.step_in_epoch = 0
            self.epoch_order_state = self.order_generator.get_state()
            row = {"epoch": self.epoch, "step": self.global_step, "seconds": seconds}
            images = steps_this_session * self.batch_items * self.config.num_views
            row["images_per_second"] = images / seconds if seconds > 0 else math.nan
            row.update({f"train_{k}": v / max(counted, 1) for k, v in sums.items()})
            row.update({f"val_{k}": v for k, v in self.validation_terms().items()})
            self.epoch_rows.append(row)
            if self.on_epoch_end is not None:
                self.on_epoch_end(self, row)
            self.save()
            if self.config.progress:
                shown = {k: row[k] for k in row if k.startswith(("train_elbo", "val_elbo")) or k == "seconds"}
                print(
                    f"epoch {self.epoch}/{self.config.epochs} "
                    + " ".join(f"{k}={v:.4g}" for k, v in shown.items())
                )

    @torch.no_grad()
    def validation_terms(self, *, max_items: int = 2048) -> dict[str, float]:
        """Objective terms (nats per item) on up to ``max_items`` validation items, fixed augmentation seed.

        The RNG states are saved and restored, so validation does not change the
        training trajectory.
        """
        val = self.data.val
        if len(val) < self.model.min_views or len(val) < 2:
            return {}
        saved = torch.get_rng_state()
        saved_cuda = torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None
        generator = torch.Generator(device=self.device).manual_seed(self.config.seed + 12345)
        torch.manual_seed(self.config.seed + 54321)
        self.model.eval()
        count = min(len(val), max_items)
        batch_items = min(self.batch_items, count)
        sums: dict[str, float] = {}
        batches = 0
        for start in range(0, count - batch_items + 1, batch_items):
            index = torch.arange(start, start + batch_items)
            images = _float_images(val.images[index].to(self.device))
            views = self.augmenter(images, self.config.num_views, generator)
            output = self.objective(ViewBatch(views=views, index=index.to(self.device), num_items=count))
            for k, v in output.terms.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            batches += 1
        torch.set_rng_state(saved)
        if saved_cuda is not None:
            torch.cuda.set_rng_state_all(saved_cuda)
        return {k: v / batches for k, v in sums.items()} if batches else {}

    def _write_tables(self) -> None:
        _atomic_write(self.run_dir / "history.csv", _csv(self.history))
        _atomic_write(self.run_dir / "epochs.csv", _csv(self.epoch_rows))


def train(
    config: Config,
    *,
    data: DataSplits | None = None,
    model: SSLModel | None = None,
) -> TrainResult:
    """Train the method ``config`` describes and return it with its history.

    Args:
        config: the run configuration (see :class:`pssl.config.Config`).
        data: data splits to use instead of loading ``config.data`` by name.
        model: a ready method (e.g. a SimVAE with a custom prior) instead of
            building ``config.model`` by name; pass the same one again to resume.

    Example:
        >>> from pssl.config import Config, Component
        >>> result = train(Config(model=Component("simvae"), data=Component("digits"), epochs=2))
        >>> z = result.model.encode(images)   # (B, latent_dim) encoder means
    """
    return Trainer(config, data=data, model=model).fit()


def load_run(run_dir: str | Path, *, device: str = "cpu", data: DataSplits | None = None) -> TrainResult:
    """Rebuild a trained method from its run directory (config by name + newest checkpoint).

    Raises:
        CheckpointError: if the folder holds no readable checkpoint.
        FileNotFoundError: if ``config.json`` is missing.
    """
    run_dir = Path(run_dir)
    config_file = run_dir / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} not found: {run_dir} is not a pssl run directory")
    raw = _json_load(config_file)
    resolved = raw.pop("resolved", {})
    if resolved.get("custom_model"):
        raise CheckpointError(
            f"{run_dir} was trained with a model object passed from Python; rebuild that model and "
            "load the checkpoint's 'model' state into it"
        )
    config = dataclasses.replace(Config.from_dict(raw), device=device)
    latest = latest_checkpoint(run_dir)
    if latest is None:
        raise CheckpointError(f"no readable checkpoint in {run_dir}")
    if data is None:
        data = load_dataset(config.data.name, config.data.options, seed=config.seed)
    model = build_from_config(config, data.train.image_shape)
    state = load_checkpoint(latest, map_location=device)
    if state.get("model_name") != config.model.name:
        raise CheckpointError(
            f"checkpoint {latest} holds model {state.get('model_name')!r}, config says {config.model.name!r}"
        )
    model.load_state_dict(state["model"])
    model.to(device).eval()
    return TrainResult(
        model=model,
        config=config,
        data=data,
        run_dir=run_dir,
        history=list(state["history"]),
        epochs=list(state["epochs"]),
        skipped_steps=int(state["skipped_steps"]),
    )


# --- small file helpers ----------------------------------------------------------------


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _json(data: Any) -> str:
    import json

    return json.dumps(data, indent=2) + "\n"


def _json_load(path: Path) -> dict[str, Any]:
    import json

    return json.loads(path.read_text())


def _csv(rows: list[dict[str, float]]) -> str:
    if not rows:
        return ""
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


__all__ = [
    "MODELS",
    "TrainResult",
    "Trainer",
    "TrainingInterrupted",
    "build_from_config",
    "load_run",
    "resolve_config",
    "seed_everything",
    "train",
]
