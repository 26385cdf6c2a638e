"""One experiment end to end: train a method, evaluate it, write metrics and figures.

This is what ``pssl train`` runs and what ``pssl demo`` and ``pssl compare``
repeat. It sits above training (:mod:`pssl.inference`) and evaluation
(:mod:`pssl.evaluation`), which do not know of each other.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import torch

from pssl.collectives import one_process
from pssl.config import Config
from pssl.datasets import DataSplits
from pssl.datasets.core import as_float_images
from pssl.evaluation import CONTENT_PROBES, check_probes
from pssl.inference.train import TrainResult, default_run_dir, train
from pssl.models.base import SSLModel
from pssl.plots import image_grid, loss_curves
from pssl.rundir import claim
from pssl.rundir import write_json as _write_json

logger = logging.getLogger(__name__)

DEFAULT_PROBES = ("linear",)


def run_experiment(
    config: Config,
    *,
    data: DataSplits | None = None,
    model: SSLModel | None = None,
    probes: tuple[str, ...] = DEFAULT_PROBES,
    augmentation_style: bool = False,
) -> dict[str, Any]:
    """Train ``config``'s method, evaluate it, and write ``metrics.json`` and figures.

    The run directory is claimed (:func:`pssl.rundir.claim`: locked, refused if it
    holds someone else's files) before anything is loaded, and held until the
    metrics are written.

    Returns:
        The metrics dict written to ``RUN_DIR/metrics.json``.
    """
    run_dir = Path(config.out) if config.out else default_run_dir(config)
    main_process = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 writes
    with claim(run_dir) if main_process else contextlib.nullcontext():
        board = None
        callbacks: dict[str, Any] = {}
        if config.logger == "tensorboard" and main_process:
            from pssl.tensorboard_logger import TensorBoardLogger

            board = TensorBoardLogger(run_dir)
            callbacks = {"on_epoch_end": board.on_epoch_end, "on_step_end": board.on_step_end}
        try:
            result = train(config, data=data, model=model, **callbacks)
            if not result.is_main:
                return {}
            # Rank 0 alone from here: the other ranks may have left, so nothing may wait for them.
            with one_process():
                metrics = finish_run(result, probes=probes, augmentation_style=augmentation_style)
                if board is not None:
                    board.log_embedding(result.model, result.data, int(metrics["training"].get("steps", 0)))
            return metrics
        finally:
            if board is not None:
                board.close()


def finish_run(
    result: TrainResult, *, probes: tuple[str, ...] = DEFAULT_PROBES, augmentation_style: bool = False
) -> dict[str, Any]:
    """Evaluate a trained run and write its metrics and figures into its run directory.

    ``metrics.json`` only ever describes the end of training: a checkpoint from
    mid-training (an interrupted run, or one chosen with ``--checkpoint``) is
    evaluated into ``metrics-step<N>.json`` instead, marked ``"finished": false``.

    Args:
        result: a trained run (or a :class:`pssl.inference.runs.LoadedRun`).
        probes: content probes to run (``linear``, ``mlp``, ``knn``, ``cluster``).
        augmentation_style: also measure how well the representation of a view
            predicts that view's augmentation parameters (the run's own preset).

    It runs on one process (under ``torchrun``, rank 0 alone, after the others
    have left): the model's collectives act as with one process
    (:func:`pssl.collectives.one_process`).

    Returns:
        The metrics, with ``"file"`` naming where they were written.
    """
    with one_process():
        return _finish_run(result, probes=probes, augmentation_style=augmentation_style)


def _finish_run(result: TrainResult, *, probes: tuple[str, ...], augmentation_style: bool) -> dict[str, Any]:
    from pssl.augment import build_augmenter
    from pssl.evaluation import evaluate

    model, run_dir = result.model, result.run_dir
    checkpoint = getattr(result, "checkpoint", None)
    finished = getattr(result, "finished", True) and getattr(result, "newest", True)
    check_probes(probes)
    device = next(model.parameters()).device
    augmenter = None
    if augmentation_style:
        augment = result.config.augment
        augmenter = build_augmenter(
            augment.name, result.data.train.image_shape, augment.options, data=result.data
        )
    metrics = evaluate(
        model, result.data, seed=result.config.seed, device=device, probes=probes, augmenter=augmenter
    )
    last = result.epochs[-1] if result.epochs else {}
    label = training_objective_label(result)
    metrics["training"] = {
        "model": result.config.model.name,
        "data": result.config.data.name,
        "epochs": result.config.epochs,
        "steps": int(last.get("step", 0)),
        "skipped_steps": result.skipped_steps,
        "seconds_per_epoch": _mean(row["seconds"] for row in result.epochs),
        "images_per_second": _mean(row["images_per_second"] for row in result.epochs),
        "objective": label,
        "final_terms_nats_per_item": labelled_terms(last, label),
    }
    metrics["training"].update(validation_bits_per_dim_entry(result, label))
    if checkpoint is not None:
        metrics["training"]["checkpoint"] = Path(checkpoint).name
        metrics["training"]["steps"] = int(getattr(result, "global_step", metrics["training"]["steps"]))
    metrics["training"]["finished"] = bool(finished)
    if finished:
        target = run_dir / "metrics.json"
        write_json(target, metrics)
        write_figures(result, label=label)
    else:
        target = run_dir / f"metrics-step{metrics['training']['steps']:09d}.json"
        logger.warning(
            "%s is not the end of training: metrics written to %s, metrics.json left as it was",
            Path(checkpoint).name if checkpoint is not None else "the model",
            target.name,
        )
        write_json(target, metrics)
    return metrics


def _probe_views(result: TrainResult, count: int = 2) -> torch.Tensor:
    """A few training images as identical views, in the model's dtype and device (for tracing only)."""
    model = result.model
    anchor = next(iter(model.parameters()), None)
    images = result.data.train.images[:count]
    floats = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    if anchor is not None:
        floats = floats.to(device=anchor.device, dtype=anchor.dtype)
    num_views = max(result.config.num_views, 1)
    return floats[:, None].expand(-1, num_views, -1, -1, -1).contiguous()


def training_objective_label(result: TrainResult) -> dict[str, Any]:
    """What the run's training objective is (see :func:`pssl.diagnostics.labels.objective_label`)."""
    from pssl.diagnostics.labels import name_training_objective, objective_label

    objective = result.config.objective
    return name_training_objective(
        objective_label(result.model, _probe_views(result)), objective.name, objective.options
    )


def labelled_terms(last: dict[str, Any], label: dict[str, Any]) -> dict[str, float]:
    """The last epoch's ``train_*``/``val_*`` terms, with the summed objective named for what it is.

    The training loop calls the sum of the terms ``elbo`` for every method; it is kept as
    ``{split}_elbo`` only when it is the ELBO, and is otherwise written as
    ``{split}_objective`` (its name, e.g. ``iwae``, and ``is_bound`` are in ``training.objective``).
    """
    terms = {k: v for k, v in last.items() if k.startswith(("train_", "val_"))}
    if label["is_bound"] and label["name"] == "elbo":
        return terms
    return {(f"{k[: -len('elbo')]}objective" if k.endswith("_elbo") else k): v for k, v in terms.items()}


def validation_bits_per_dim_entry(result: TrainResult, label: dict[str, Any]) -> dict[str, Any]:
    """``val_bits_per_dim`` and what it is (``val_bits_per_dim_info``); ``None`` where it is not defined."""
    from pssl.diagnostics.labels import observed_values_per_item

    model = result.model
    likelihood = getattr(model, "likelihood", None)
    if not model.generative or likelihood is None:
        return {"val_bits_per_dim": None}
    dims = observed_values_per_item(model, _probe_views(result))
    value = validation_bits_per_dim(result, label=label, dims=dims)
    images = result.data.train.images
    eight_bit = images.dtype == torch.uint8
    discrete = bool(getattr(likelihood, "discrete", False))
    binary_pmf = type(likelihood).__name__ == "BernoulliLikelihood"
    grey = binary_pmf and not bool(((images == 0) | (images == (255 if eight_bit else 1))).all())
    info: dict[str, Any] = {
        "observed_values_per_item": dims,
        "likelihood": type(likelihood).__name__,
        "discrete_likelihood": discrete,
        "dequantised": bool(not discrete and eight_bit),
        "bound": f"upper bound on -log2 p(x) per dimension (from the validation {label['name']})",
    }
    if value is None:
        info["note"] = f"not defined: the training objective is a {label['name']} ({label['note']})"
    elif grey:
        info["note"] = (
            "Bernoulli likelihood on grey values: a cross-entropy, not a code length; comparable only with "
            "other Bernoulli numbers on the same data"
        )
    return {"val_bits_per_dim": value, "val_bits_per_dim_info": info}


def validation_bits_per_dim(
    result: TrainResult, *, label: dict[str, Any] | None = None, dims: int | None = None
) -> float | None:
    """The validation negative ELBO in bits per dimension (an upper bound on -log2 p(x) per dimension).

    Only for generative methods whose objective is an ELBO (untempered, no point
    masses, proper prior; see :func:`pssl.diagnostics.labels.objective_label`). The
    dimension count is the number of values of the model's ``x`` site per item
    (:func:`pssl.diagnostics.labels.observed_values_per_item`), and the conventions
    (the 8-bit correction for densities) are those of
    :func:`pssl.models.likelihoods.bits_per_dim`. For tempered runs, ``pssl diagnose``
    gives importance-sampled values of the true model.
    """
    from pssl.diagnostics.labels import observed_values_per_item
    from pssl.models.likelihoods import bits_per_dim

    model = result.model
    likelihood = getattr(model, "likelihood", None)
    last = result.epochs[-1] if result.epochs else {}
    elbo = last.get("val_elbo")
    if not model.generative or likelihood is None or elbo is None:
        return None
    label = label or training_objective_label(result)
    if not label["is_bound"]:
        return None
    dims = dims or observed_values_per_item(model, _probe_views(result))
    eight_bit = result.data.train.images.dtype == torch.uint8
    try:
        return bits_per_dim(-float(elbo), dims, likelihood=likelihood, data_is_8bit=eight_bit)
    except ValueError:
        return None


def write_figures(result: TrainResult, *, count: int = 10, label: dict[str, Any] | None = None) -> list[Path]:
    """Loss curves for every method; reconstructions and prior samples for generative ones.

    The training loop logs every method's summed objective as ``elbo``; the loss-curve panel
    is titled by what it is (``label``, see :func:`training_objective_label`).
    """
    written: list[Path] = []
    label = label or training_objective_label(result)
    summed = "elbo (bound on log p(x))" if label["is_bound"] else f"{label['name']} (not a bound on log p(x))"
    curves = loss_curves(
        result.history,
        result.run_dir / "loss_curves.png",
        title=result.config.model.name,
        labels={"elbo": summed},
    )
    if curves is not None:
        written.append(curves)
    model = result.model
    if not model.generative:
        return written
    device = next(model.parameters()).device
    test = result.data.test if len(result.data.test) else result.data.val
    images = as_float_images(test.images[:count], device=device)
    with torch.no_grad():
        rows = [images.cpu(), model.reconstruct(images).cpu()]
        titles = ["data", "reconstruction"]
        try:
            rows.append(model.sample_images(images.shape[0]).cpu())
            titles.append("prior sample")
        except ValueError:
            pass  # improper prior: nothing to sample
    written.append(image_grid(rows, result.run_dir / "reconstructions.png", row_titles=titles))
    return written


def evaluate_run(
    run_dir: str | Path,
    *,
    device: str = "cpu",
    probes: tuple[str, ...] = CONTENT_PROBES,
    checkpoint: str | Path | None = None,
    allow_download: bool = False,
    data_root: str | None = None,
) -> dict[str, Any]:
    """Re-evaluate a run directory (``pssl evaluate``), holding its lock throughout.

    Uses the newest checkpoint (an error names it if it cannot be read) or
    ``checkpoint``; see :func:`finish_run` for where the metrics go and
    :func:`pssl.inference.runs.load_run` for the other arguments.
    """
    from pssl.inference.runs import load_run
    from pssl.rundir import read_run_config

    check_probes(probes)
    read_run_config(run_dir)  # a folder that is not a run: one line, nothing created
    with claim(run_dir, create=False):
        result = load_run(
            run_dir, device=device, checkpoint=checkpoint, allow_download=allow_download, data_root=data_root
        )
        return finish_run(result, probes=probes, augmentation_style=True)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically write ``data`` as JSON (through :func:`pssl.rundir.write_json`)."""
    _write_json(path, data)


def _mean(values: Any) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")
