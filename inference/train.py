"""The training loop: one loop for every method and every Pyro ELBO.

:class:`Trainer` receives built parts (:class:`~pssl.inference.compose.RunParts`:
data, method, augmenter, objective, optimiser; :func:`~pssl.inference.compose.compose`
builds them from a config) and fits them. ``train(config)`` does both. The loop
never branches on the method or the ELBO: it draws a minibatch of item
indices, makes ``J`` augmented views on the training device, evaluates the
objective (a Pyro ELBO, :mod:`pssl.inference.objectives`), steps the fused Adam
over the method's parameters and the Pyro param-store parameters its model and
guide create, calls the method's ``after_step`` hook, and logs the named terms.

A run directory holds plain files: ``config.json`` (resolved), ``history.csv``
(one row per ``log_every`` steps), ``epochs.csv`` (one row per epoch, with
validation terms and throughput) and ``checkpoint-<step>.pt`` (the method's
state, the param-store parameters by name, the optimiser, counters and RNGs).

Reproducibility: everything random derives from ``config.seed``. The model is
initialised after :func:`seed_everything`; each epoch's data order comes from a
seeded permutation whose state the checkpoints hold; step ``t``'s augmentations
and model noise come from streams seeded by ``(seed, t, rank)``
(:func:`pssl.inference.distributed.step_seed`). So a run stopped anywhere
(end of epoch, ``checkpoint_every``, SIGINT/SIGTERM) and resumed produces the
same parameters as an uninterrupted one (on CPU), whatever the RNG state of the
resuming process.

Several processes: under ``torchrun`` every process runs this loop on its slice
of each global batch and the gradients are summed over processes, so ``W``
processes take the steps one process would take on the concatenated batch; see
:mod:`pssl.inference.distributed` for the exact semantics. Only rank 0 writes
files; checkpoints do not depend on the number of processes.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pssl.config import Config
from pssl.datasets import DataSplits, evaluation_splits
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
from pssl.inference.compose import (
    RunParts,
    build_from_config,
    compose,
    float_images,
    floating_dtype,
    resolve_config,
    seed_everything,
)
from pssl.inference.distributed import DistributedContext, derive_seed, resolve_device, step_seed
from pssl.inference.objectives import NonFiniteError, ObjectiveOutput, method_errors
from pssl.inference.precision import network_compute
from pssl.inference.runs import load_run  # loading a run lives with its checks in runs
from pssl.models.base import MODELS, SSLModel, ViewBatch
from pssl.rundir import RESUMABLE_CHANGES, RunLock, claim, write_csv, write_json

logger = logging.getLogger(__name__)

MAX_SKIPPED_SHARE = 0.5
"""With ``nonfinite=skip``, an epoch in which more than this share of the steps (or every step)
was skipped as non-finite stops the run with an error: its model is not a trained one."""

StepCallback = Callable[["Trainer", ViewBatch, "ObjectiveOutput | None"], None]


class TrainingInterrupted(KeyboardInterrupt):
    """Raised after SIGINT/SIGTERM once a checkpoint has been written; resume continues the run."""


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        model: the trained method (in eval mode).
        config: the resolved configuration.
        data: the data splits as evaluation reads them: the training data, with the
            images passed through the deterministic pixel-wise step that ends the
            views' augmentation when there is one (binarised when the views were,
            :func:`pssl.datasets.evaluation_splits`), so probes, diagnostics and
            figures see the kind of data the method was trained on.
        run_dir: where config, history and checkpoints were written.
        history: logged rows (step, epoch, terms in nats per item, ...).
        epochs: per-epoch rows (mean training terms, validation terms, seconds, images per second).
        skipped_steps: steps skipped for non-finite values (``nonfinite=skip``).
        rank: this process's rank (0 with one process).
        world_size: number of processes that trained the model together.
    """

    model: SSLModel
    config: Config
    data: DataSplits
    run_dir: Path
    history: list[dict[str, float]] = field(default_factory=list)
    epochs: list[dict[str, float]] = field(default_factory=list)
    skipped_steps: int = 0
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the process that wrote the run directory (evaluate and report there)."""
        return self.rank == 0


def default_run_dir(config: Config) -> Path:
    return Path("runs") / f"{config.model.name}-{config.data.name}-seed{config.seed}"


def nonfinite_gradients(named_parameters: list[tuple[str, torch.nn.Parameter]]) -> list[str]:
    """Names of the parameters whose gradient holds a NaN or an infinity.

    First one reduction over every gradient, which is non-finite whenever any entry
    is (one device sync): on CPU the sum of all entries (a NaN, or infinities of both
    signs, give NaN; one pass that reads each gradient once, about twice as fast as
    the 2-norm), elsewhere the fused total 2-norm. Only then, to name the culprits
    (or to clear a reduction that overflowed on huge but finite gradients), one check
    per parameter.
    """
    named = [(n, p.grad) for n, p in named_parameters if p.grad is not None]
    if not named:
        return []
    grads = [g for _, g in named]
    total_norm = getattr(torch.nn.utils, "get_total_norm", None)  # torch >= 2.6
    if grads[0].device.type == "cpu" or total_norm is None:
        total = torch.stack([g.sum().float() for g in grads]).sum()
    else:
        total = total_norm(grads)
    if torch.isfinite(total):
        return []
    return [n for n, g in named if not torch.isfinite(g).all()]


class Trainer:
    """Holds the state of one run (one process of it, under ``torchrun``); :meth:`fit` runs it.

    Most users call :func:`train`.

    Args:
        parts: the built run (:func:`~pssl.inference.compose.compose`). A
            :class:`~pssl.config.Config` is accepted too and composed here, with
            ``data``, ``model``, ``guide``, ``objective`` and ``sync_batchnorm``
            passed on to :func:`~pssl.inference.compose.compose`.
        on_epoch_end: called on every rank as ``on_epoch_end(trainer, row)`` after each epoch.
        on_step_end: called on every rank as ``on_step_end(trainer, batch, output)`` after
            each step (``output`` is ``None`` for a skipped step; gradients are still
            in the parameters' ``.grad``, summed over ranks).

    Raises:
        ValueError: (including :class:`~pssl.config.ConfigError`) for a configuration
            the data, the method or the objective cannot use; nothing is written before
            these checks.
    """

    def __init__(
        self,
        parts: RunParts | Config,
        *,
        data: DataSplits | None = None,
        model: SSLModel | None = None,
        guide: Callable[..., Any] | None = None,
        objective: Any = None,
        on_epoch_end: Callable[[Trainer, dict[str, float]], None] | None = None,
        on_step_end: StepCallback | None = None,
        sync_batchnorm: bool = True,
    ) -> None:
        if isinstance(parts, Config):
            parts = compose(
                parts, data=data, model=model, guide=guide, objective=objective, sync_batchnorm=sync_batchnorm
            )
        elif any(v is not None for v in (data, model, guide, objective)):
            raise TypeError(
                "data, model, guide and objective are parts of a RunParts; pass them to compose()"
            )
        self.parts = parts
        self.dist: DistributedContext = parts.dist
        self.device = self.dist.device
        self.config = parts.config
        self.data = parts.data
        self.model = parts.model
        self.augmenter = parts.augmenter
        self.objective = parts.objective
        self.optimizer = parts.optimizer
        self.parameters = parts.parameters
        self.pyro_params = parts.pyro_params
        self.custom_model = parts.custom_model
        self.custom_objective = parts.custom_objective
        self.run_dir = Path(self.config.out) if self.config.out else default_run_dir(self.config)
        self.num_items = len(self.data.train)
        self.batch_items = min(self.config.batch_size, self.num_items)
        self.steps_per_epoch = self.num_items // self.batch_items
        self.dtype = floating_dtype(self.model)
        # Reseeded at every step from (seed, step, rank); see step_seed.
        self.augment_generator = torch.Generator(device=self.device)
        self.order_generator = torch.Generator().manual_seed(self.config.seed + 2)
        self.train_images = self.data.train.images.to(self.device)
        self.on_epoch_end = on_epoch_end
        self.on_step_end = on_step_end
        # progress counters
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.epoch_order_state = self.order_generator.get_state()
        self.history: list[dict[str, float]] = []
        self.epoch_rows: list[dict[str, float]] = []
        self.skipped_steps = 0
        # Running sums behind the logged rows (epoch means, history windows); checkpointed, so a
        # resumed run logs the same numbers as an uninterrupted one.
        self.running: dict[str, float] = {}
        self._last_save = time.monotonic()
        self._stop_signal: int | None = None
        self._stop_agreed = False
        self._lock: RunLock | None = None

    @property
    def is_main(self) -> bool:
        """Whether this process is rank 0 (writes files, shows progress)."""
        return self.dist.is_main

    @property
    def _stats_dtype(self) -> torch.dtype:
        # logged terms are reduced in float64 (MPS has no float64)
        return torch.float32 if self.device.type == "mps" else torch.float64

    # --- state -------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint: replicated model and optimiser state, counters, data order, rank 0's RNGs.

        Nothing in it depends on the number of processes (``world_size`` is recorded
        for information only).
        """
        return {
            "config": self.config.to_dict(),
            "model_name": self.config.model.name,
            "model": self.model.state_dict(),
            "pyro_params": {name: value.detach().clone() for name, value in self.pyro_params.items()},
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "epoch_order_state": self.epoch_order_state,
            "rng": capture_rng_state({"order": self.order_generator}),
            "history": self.history,
            "epochs": self.epoch_rows,
            "skipped_steps": self.skipped_steps,
            "running_sums": dict(self.running),
            "world_size": self.dist.world_size,
        }

    def load_state_dict(self, state: dict[str, Any], *, source: str) -> None:
        saved = Config.from_dict(state["config"])
        mine = {k: v for k, v in self.config.to_dict().items() if k not in RESUMABLE_CHANGES}
        theirs = {k: v for k, v in saved.to_dict().items() if k not in RESUMABLE_CHANGES}
        if mine != theirs:
            diff = sorted(k for k in mine if mine[k] != theirs.get(k))
            raise CheckpointError(
                f"checkpoint {source} was written by a different configuration "
                f"(differs in: {', '.join(diff)}; it holds model {state.get('model_name')!r}); "
                "resume with the run's own config (`pssl resume RUN_DIR`) or choose a new out="
            )
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as err:
            raise CheckpointError(
                f"checkpoint {source} does not fit model {self.config.model.name!r}: {err}"
            ) from None
        saved_params = state.get("pyro_params", {})
        if set(saved_params) != set(self.pyro_params):
            raise CheckpointError(
                f"checkpoint {source} holds Pyro param-store parameters {sorted(saved_params) or '(none)'} "
                f"but the model and guide create {sorted(self.pyro_params) or '(none)'}"
            )
        with torch.no_grad():
            for name, value in self.pyro_params.items():
                if saved_params[name].shape != value.shape:
                    raise CheckpointError(
                        f"checkpoint {source}: param-store parameter {name!r} has shape "
                        f"{tuple(saved_params[name].shape)}, the model's has {tuple(value.shape)}"
                    )
                value.copy_(saved_params[name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch = int(state["epoch"])
        self.step_in_epoch = int(state["step_in_epoch"])
        self.global_step = int(state["global_step"])
        self.epoch_order_state = state["epoch_order_state"].cpu()
        restore_rng_state(state["rng"], {"order": self.order_generator})
        self.history = list(state["history"])
        self.epoch_rows = list(state["epochs"])
        self.skipped_steps = int(state["skipped_steps"])
        self.running = {k: float(v) for k, v in state.get("running_sums", {}).items()}

    def save(self) -> Path:
        """Write a checkpoint and the tables (rank 0 only; other ranks just return the path)."""
        path = checkpoint_path(self.run_dir, self.global_step)
        if not self.is_main:
            return path
        path = save_checkpoint(self.state_dict(), path, keep=self.config.keep_checkpoints)
        self._write_tables()
        self._last_save = time.monotonic()
        return path

    def _checkpoint_to_resume(self) -> str | None:
        """Rank 0's decision: the checkpoint to resume from, ``None`` for a fresh run, or an error."""
        existing = list_checkpoints(self.run_dir)
        if self.config.resume:
            latest = latest_checkpoint(self.run_dir)
            if latest is None:
                if existing:
                    try:
                        load_checkpoint(existing[-1])
                        reason = "it loads now; retry"
                    except (CheckpointError, OSError) as err:
                        reason = str(err)
                    raise CheckpointError(
                        f"no readable checkpoint in {self.run_dir} (tried {len(existing)} files; "
                        f"the newest: {reason})"
                    )
                raise CheckpointError(
                    f"resume=true but {self.run_dir} holds no checkpoint; start the run without resume=true"
                )
            return str(latest)
        if existing:
            raise ValueError(
                f"run directory {self.run_dir} already holds checkpoints; pass resume=true to continue "
                "that run or choose another out= (nothing was overwritten)"
            )
        return None

    def _prepare_run_dir(self) -> None:
        chosen = self.dist.run_on_main(self._checkpoint_to_resume)
        if chosen is not None:
            try:
                state = load_checkpoint(chosen, map_location=self.device)
            except FileNotFoundError:
                raise CheckpointError(
                    f"rank {self.dist.rank} cannot find {chosen}, which rank 0 resumes from; every process "
                    "must see the run directory (a shared file system)"
                ) from None
            self.load_state_dict(state, source=chosen)
            trained = self.epoch + self.step_in_epoch / self.steps_per_epoch
            if trained > self.config.epochs:
                raise ValueError(
                    f"run {self.run_dir} has already trained {trained:g} epochs; epochs={self.config.epochs} "
                    f"would not continue it (pass epochs > {trained:g} to train longer; nothing was changed)"
                )
        if self.is_main:
            resolved = self.config.to_dict()
            resolved["resolved"] = {
                "model": self.model.describe(),
                "objective": self.objective.label,
                "custom_model": self.custom_model,
                "custom_objective": self.custom_objective,
                "pyro_params": sorted(self.pyro_params),
                "world_size": self.dist.world_size,
            }
            write_json(self.run_dir / "config.json", resolved)
            if chosen is not None:
                self._write_tables()  # the tables match the checkpoint the run continues from
        self.dist.broadcast_module(self.model)
        self.dist.broadcast_tensors(list(self.pyro_params.values()))

    # --- the loop ----------------------------------------------------------------------

    def make_batch(self, global_index: torch.Tensor) -> ViewBatch:
        """This rank's share of a step's items ``(batch_size,) -> ViewBatch`` of ``batch_size / W`` items.

        The views are drawn from the ``augment`` stream of the current step and rank.
        """
        index = self.dist.shard(global_index)
        images = float_images(self.train_images[index.to(self.train_images.device)], self.dtype)
        self.augment_generator.manual_seed(
            step_seed(self.config.seed, "augment", self.global_step, self.dist.rank)
        )
        views = self.augmenter(images, self.config.num_views, self.augment_generator)
        return ViewBatch(views=views, index=index.to(self.device), num_items=self.num_items)

    def evaluate(self, batch: ViewBatch) -> ObjectiveOutput:
        """The objective on ``batch``; a method's own ``ValueError``/``TypeError`` reaches the user as raised.

        Pyro re-raises an error from inside a model or guide with the trace's
        shape table appended; the error the method raised (e.g. "needs at least 2
        items per batch") is re-raised instead, chained to Pyro's for debugging.
        """
        with method_errors():
            return self.objective(batch)

    def _seed_model_noise(self, seed: int) -> None:
        """Seed the default generators the model's noise comes from: the CPU's and this device's.

        The same seeding as ``torch.manual_seed`` for every draw the step makes, without
        its visit to each accelerator backend (CUDA, XPU, MTIA, MPS), which cost
        0.1-0.25 ms a call here, a few percent of a small network's step.
        """
        torch.default_generator.manual_seed(seed)
        if self.device.type == "cpu":
            return
        generators = torch.cuda.default_generators if self.device.type == "cuda" else ()
        index = self.device.index or 0
        if index < len(generators):  # CUDA is initialised (the model is on it)
            generators[index].manual_seed(seed)
        else:
            torch.manual_seed(seed)

    def step(self, batch: ViewBatch) -> ObjectiveOutput | None:
        """One optimiser step on this rank's ``batch``; ``None`` if the step was skipped.

        Seeds the model-noise stream of (step, rank), evaluates the objective (the
        sum over this rank's items), then in one collective learns whether any
        rank's loss is non-finite or was asked to stop, and the terms' means over
        ranks; backpropagates, sums the gradients over ranks, checks them, and steps.
        The returned terms are the global means (nats per item); ``loss`` is this rank's.

        Raises:
            NonFiniteError: naming the sites/terms (loss) or parameters (gradient)
                that went non-finite, unless ``nonfinite=skip``.
        """
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        self._seed_model_noise(step_seed(self.config.seed, "model", self.global_step, self.dist.rank))
        with network_compute(self.config.precision, self.device.type):
            output = self.evaluate(batch)
        local_problem = None
        if not torch.isfinite(output.loss):
            bad = output.nonfinite_sites() or [k for k, v in output.terms.items() if not torch.isfinite(v)]
            local_problem = (
                f"loss is {output.loss.item()} at step {self.global_step}; "
                f"non-finite sites/terms: {', '.join(bad) or '(none named)'}"
            )
        names = sorted(output.terms)
        flags = [float(local_problem is not None), float(self._stop_signal is not None)]
        stats = torch.cat(
            [
                torch.tensor(flags, dtype=self._stats_dtype, device=self.device),
                *(output.terms[k].detach().reshape(1).to(self._stats_dtype) for k in names),
            ]
        )
        totals = self.dist.sum(stats).tolist()  # one collective and one device sync per step
        self._stop_agreed = self._stop_agreed or totals[1] > 0
        terms = {k: torch.tensor(totals[2 + i] / self.dist.world_size) for i, k in enumerate(names)}

        problem = None
        if totals[0] > 0:
            reports = self.dist.gather_objects(local_problem)
            if self.dist.enabled:
                problem = "; ".join(f"rank {r}: {p}" for r, p in enumerate(reports) if p)
            else:
                problem = local_problem
        else:
            if not output.backward_done:
                output.loss.backward()
            self.dist.sum_gradients(p for _, p in self.parameters)
            bad = nonfinite_gradients(self.parameters)
            if bad:
                more = f" and {len(bad) - 8} more" if len(bad) > 8 else ""
                problem = (
                    f"non-finite gradient at step {self.global_step} in parameters: "
                    f"{', '.join(bad[:8])}{more} (the loss itself was finite)"
                )
        if problem is not None:
            if self.config.nonfinite == "skip":
                self.skipped_steps += 1
                self.optimizer.zero_grad(set_to_none=True)
                return None
            raise NonFiniteError(f"{problem}. {self._nonfinite_advice()}")
        self.optimizer.step()
        self.model.after_step()
        return ObjectiveOutput(loss=output.loss.detach(), terms=terms, site_log_prob=output.site_log_prob)

    def fit(self) -> TrainResult:
        """Train (or continue) the run; the run directory is locked throughout (rank 0).

        Raises:
            TrainingInterrupted: after SIGINT/SIGTERM, once a consistent checkpoint is
                written (also for a signal during a save or validation, or after the last
                step: the run is then complete but not evaluated).
            NonFiniteError: a non-finite loss or gradient (``nonfinite=stop``), too many
                skipped steps (``nonfinite=skip``), or non-finite validation terms.
            RunDirectoryError: the run directory is in use or holds someone else's files.
        """
        if self.is_main:
            self._lock = claim(self.run_dir)
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:
            try:
                signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread: leave handlers alone
                previous = {}
                break
        try:
            self._prepare_run_dir()
            self._fit()
            if self._should_stop():  # a signal after the last step: complete, but stop here
                self._interrupt(complete=True)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self._lock is not None:
                self._lock.release()
                self._lock = None
        self.dist.barrier()  # rank 0's last checkpoint is on disk when any rank returns
        self.model.eval()
        return TrainResult(
            model=self.model,
            config=self.config,
            data=evaluation_splits(self.data, self.augmenter),
            run_dir=self.run_dir,
            history=self.history,
            epochs=self.epoch_rows,
            skipped_steps=self.skipped_steps,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )

    def _on_signal(self, signum: int, frame: Any) -> None:
        # Only a flag: the loop acts on it between steps, after a save or validation in progress.
        self._stop_signal = signum

    def _interrupt(self, *, complete: bool = False) -> None:
        """Write a checkpoint (unless one of this step exists) and raise :class:`TrainingInterrupted`."""
        path = checkpoint_path(self.run_dir, self.global_step)
        if not (complete and path.is_file()):
            path = self.save()
        self.dist.barrier()
        signum = self._stop_signal if self._stop_signal is not None else "on another rank"
        if complete:
            detail = f"training is complete (checkpoint {path}) but was not evaluated"
        else:
            detail = f"at step {self.global_step}; checkpoint {path}"
        raise TrainingInterrupted(
            f"stopped by signal {signum} {detail}; continue with `pssl resume {self.run_dir}`"
        )

    def _nonfinite_advice(self) -> str:
        """What to do after a non-finite stop, naming only options that work from here."""
        if not self.is_main:
            return f"Training stopped; the last good checkpoint is in {self.run_dir} (written by rank 0)"
        last = latest_checkpoint(self.run_dir)
        if last is None:
            return (
                "Training stopped before any checkpoint; start again with a smaller lr, or with "
                "nonfinite=skip to skip such steps"
            )
        return (
            f"Training stopped; the last good checkpoint is {last}; continue from it skipping such steps "
            f"with `pssl resume {self.run_dir} nonfinite=skip`, or start a new run with a smaller lr"
        )

    def _should_stop(self) -> bool:
        # With several ranks only the agreed flag counts, so every rank stops after the same step.
        if self.dist.enabled:
            return self._stop_agreed
        return self._stop_agreed or self._stop_signal is not None

    def _fit(self) -> None:
        from tqdm.auto import tqdm

        running = self.running  # "train/<term>", "window/<term>", "counted", "window_steps", "skipped"
        while self.epoch < self.config.epochs:
            if self._should_stop():
                self._interrupt()
            self.order_generator.set_state(self.epoch_order_state)
            order = torch.randperm(self.num_items, generator=self.order_generator)
            epoch_start = time.perf_counter()
            bar = tqdm(
                total=self.steps_per_epoch,
                initial=self.step_in_epoch,
                desc=f"{self.config.model.name} epoch {self.epoch + 1}/{self.config.epochs}",
                disable=not (self.config.progress and self.is_main),
                leave=False,
                dynamic_ncols=True,
            )
            steps_this_session = 0
            while self.step_in_epoch < self.steps_per_epoch:
                if self._should_stop():  # e.g. a signal during the previous save or validation
                    bar.close()
                    self._interrupt()
                start = self.step_in_epoch * self.batch_items
                batch = self.make_batch(order[start : start + self.batch_items])
                output = self.step(batch)
                self.step_in_epoch += 1
                self.global_step += 1
                steps_this_session += 1
                bar.update(1)
                if output is None:
                    running["skipped"] = running.get("skipped", 0.0) + 1
                else:
                    terms = {k: float(v) for k, v in output.terms.items()}
                    running["counted"] = running.get("counted", 0.0) + 1
                    running["window_steps"] = running.get("window_steps", 0.0) + 1
                    for k, v in terms.items():
                        running[f"train/{k}"] = running.get(f"train/{k}", 0.0) + v
                        running[f"window/{k}"] = running.get(f"window/{k}", 0.0) + v
                    bar.set_postfix({k: f"{v:.4g}" for k, v in terms.items()}, refresh=False)
                window_steps = running.get("window_steps", 0.0)
                if window_steps and self.global_step % self.config.log_every == 0:
                    row = {
                        "step": self.global_step,
                        "epoch": self.epoch + self.step_in_epoch / self.steps_per_epoch,
                    }
                    window = {k[7:]: v for k, v in running.items() if k.startswith("window/")}
                    row.update({k: v / window_steps for k, v in window.items()})
                    self.history.append(row)
                    for key in [k for k in running if k.startswith("window/")] + ["window_steps"]:
                        running.pop(key, None)
                if self.on_step_end is not None:
                    self.on_step_end(self, batch, output)
                if self._should_stop():
                    bar.close()
                    self._interrupt()
                if self.config.checkpoint_every and self.global_step % self.config.checkpoint_every == 0:
                    self.save()
            bar.close()
            seconds = time.perf_counter() - epoch_start
            self._check_skipped()
            validation = self.validation_terms()
            bad = sorted(k for k, v in validation.items() if not math.isfinite(v))
            if bad:
                raise NonFiniteError(
                    f"validation terms {', '.join(bad)} are not finite after epoch {self.epoch + 1} "
                    f"({', '.join(f'{k}={validation[k]}' for k in bad)}); no metrics were written. "
                    f"{self._nonfinite_advice()}"
                )
            self.epoch += 1
            self.step_in_epoch = 0
            self.epoch_order_state = self.order_generator.get_state()
            row = {"epoch": self.epoch, "step": self.global_step, "seconds": seconds}
            images = steps_this_session * self.batch_items * self.config.num_views
            row["images_per_second"] = images / seconds if seconds > 0 else math.nan
            counted = max(running.get("counted", 0.0), 1.0)
            row.update({f"train_{k[6:]}": v / counted for k, v in running.items() if k.startswith("train/")})
            row.update({f"val_{k}": v for k, v in validation.items()})
            self.epoch_rows.append(row)
            for key in [k for k in running if k.startswith("train/")] + ["counted", "skipped"]:
                running.pop(key, None)
            if self.on_epoch_end is not None:
                self.on_epoch_end(self, row)
            last_epoch = self.epoch >= self.config.epochs
            if last_epoch or time.monotonic() - self._last_save >= self.config.checkpoint_seconds:
                self.save()
            elif self.is_main:
                self._write_tables()  # cheap: the tables stay current between checkpoints
            if self.is_main:
                shown = {k: row[k] for k in row if k.startswith(("train_elbo", "val_elbo")) or k == "seconds"}
                (logger.info if self.config.progress else logger.debug)(
                    "epoch %d/%d %s",
                    self.epoch,
                    self.config.epochs,
                    " ".join(f"{k}={v:.4g}" for k, v in shown.items()),
                )

    def _check_skipped(self) -> None:
        """Stop a run whose epoch was (mostly) skipped as non-finite: its model is not a trained one."""
        skipped = int(self.running.get("skipped", 0.0))
        if not skipped:
            return
        if skipped == self.steps_per_epoch or skipped > MAX_SKIPPED_SHARE * self.steps_per_epoch:
            raise NonFiniteError(
                f"{skipped} of {self.steps_per_epoch} steps of epoch {self.epoch + 1} were non-finite and "
                f"skipped (nonfinite=skip stops above {MAX_SKIPPED_SHARE:.0%}): the model is not trained "
                "and no metrics were written; start a new run with a smaller lr or a likelihood suited "
                "to the data"
            )

    @torch.no_grad()
    def validation_terms(self, *, max_items: int = 2048) -> dict[str, float]:
        """Objective terms (nats per item) on up to ``max_items`` validation items, fixed seeds.

        Validation batches are split over ranks like training batches (each rank
        evaluates its slice; the terms are averaged over ranks), with
        augmentation and noise seeded per (batch, rank). The RNG states are saved
        and restored, so validation does not change the training trajectory.
        """
        val = self.data.val
        world = self.dist.world_size
        count = min(len(val), max_items)
        batch_items = min(self.batch_items, count) // world * world
        if len(val) < self.model.min_views or count < 2 or batch_items < world:
            return {}
        saved = torch.get_rng_state()
        saved_cuda = torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None
        generator = torch.Generator(device=self.device)
        self.model.eval()
        sums: dict[str, torch.Tensor] = {}
        batches = 0
        for start in range(0, count - batch_items + 1, batch_items):
            index = self.dist.shard(torch.arange(start, start + batch_items))
            seed, rank = self.config.seed, self.dist.rank
            generator.manual_seed(derive_seed(seed, "validation-augment", batches, rank))
            self._seed_model_noise(derive_seed(seed, "validation-model", batches, rank))
            images = float_images(val.images[index].to(self.device), self.dtype)
            views = self.augmenter(images, self.config.num_views, generator)
            output = self.evaluate(ViewBatch(views=views, index=index.to(self.device), num_items=count))
            for k, v in output.terms.items():
                sums[k] = sums.get(k, 0.0) + v.detach().to(self._stats_dtype)
            batches += 1
        torch.set_rng_state(saved)
        if saved_cuda is not None:
            torch.cuda.set_rng_state_all(saved_cuda)
        if not batches:
            return {}
        names = sorted(sums)
        totals = self.dist.sum(torch.stack([sums[k] for k in names]).to(self.device)).tolist()
        return {k: v / (batches * world) for k, v in zip(names, totals)}

    def _write_tables(self) -> None:
        write_csv(self.run_dir / "history.csv", self.history)
        write_csv(self.run_dir / "epochs.csv", self.epoch_rows)


def train(
    config: Config,
    *,
    data: DataSplits | None = None,
    model: SSLModel | None = None,
    guide: Callable[..., Any] | None = None,
    objective: Any = None,
    on_epoch_end: Callable[[Trainer, dict[str, float]], None] | None = None,
    on_step_end: StepCallback | None = None,
) -> TrainResult:
    """Train the method ``config`` describes and return it with its history.

    Under ``torchrun`` every process calls this; they train one model together
    (see :mod:`pssl.inference.distributed`) and rank 0 writes the run directory
    (``TrainResult.is_main``).

    Args:
        config: the run configuration (see :class:`pssl.config.Config`).
        data: data splits to use instead of loading ``config.data`` by name.
        model: a ready method (e.g. a SimVAE with a custom prior) instead of
            building ``config.model`` by name; pass the same one again to resume.
        guide: a guide to train instead of the method's own (same arguments as its model).
        objective: a Pyro ELBO instance (e.g. ``pyro.infer.RenyiELBO(alpha=0.5,
            num_particles=4, max_plate_nesting=2)``) or a registered name instead of
            ``config.objective``.
        on_epoch_end, on_step_end: callbacks of the loop (see :class:`Trainer`), e.g. a
            :class:`pssl.tensorboard_logger.TensorBoardLogger`'s.

    Example:
        >>> from pssl.config import Config, Component
        >>> result = train(Config(model=Component("simvae"), data=Component("digits"), epochs=2))
        >>> z = result.model.encode(images)   # (B, latent_dim) encoder means
    """
    parts = compose(config, data=data, model=model, guide=guide, objective=objective)
    return Trainer(parts, on_epoch_end=on_epoch_end, on_step_end=on_step_end).fit()


__all__ = [
    "MODELS",
    "TrainResult",
    "Trainer",
    "TrainingInterrupted",
    "resolve_device",
    "build_from_config",
    "load_run",
    "resolve_config",
    "seed_everything",
    "train",
]
