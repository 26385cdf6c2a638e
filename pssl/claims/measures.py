"""The numbers a claim reads from a finished (or partly trained) run, cached on disk.

* ``content``: ``content.linear.accuracy`` (test), and for selection
  ``content.linear.val_accuracy`` (validation split carved from the training items);
* ``style``: ``style.mean_linear``, the mean over the data set's recorded style
  factors of the linear style probe's test score (accuracy or R^2);
* ``structure``: ``within_to_across`` of :func:`pssl.compare.structure_of_run`
  (J augmented views of up to 1,024 test images, the run's own augmentation).

At the end of training and for the default representation, content and style
come from the run's ``metrics.json``, written by the run layer
(:func:`pssl.experiment.finish_run`). Everything else (the projection-head
representation of C5, earlier checkpoints for the budget curves, the structure
measure) is computed by loading the run (:func:`pssl.inference.runs.load_run`)
and running the same evaluation (:func:`pssl.evaluation.evaluate`, linear
probes); the result is written once to ``CACHE/<run>/<checkpoint>-<repr>.json``
so a second invocation reads it instead.

The per-epoch validation objective (``epochs.csv``, written by the training
loop) gives the plateau: :func:`plateau_epoch`.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pssl.rundir import write_json

PLATEAU_BAND = 0.05
"""A curve is on its plateau once every later epoch stays this close (share of range) to its final value."""


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """The run's ``metrics.json`` (the end of training)."""
    return json.loads((Path(run_dir) / "metrics.json").read_text())


def metric_value(metrics: dict[str, Any], measure: str, *, split: str = "test") -> float:
    """``content`` or ``style`` of an evaluation's metrics; NaN when absent."""
    try:
        if measure == "content":
            key = "accuracy" if split == "test" else "val_accuracy"
            return float(metrics["content"]["linear"][key])
        if measure == "style":
            return float(metrics["style"]["mean_linear"])
    except (KeyError, TypeError, ValueError):
        return math.nan
    raise ValueError(f"no metric for measure {measure!r}; accepted: content, style")


def _evaluate_checkpoint(run_dir: Path, checkpoint: Path | None, representation: str) -> dict[str, float]:
    """Content and style of one checkpoint under one representation (linear probes, the run's seed)."""
    from pssl.evaluation import evaluate
    from pssl.inference.runs import load_run

    result = load_run(run_dir, checkpoint=checkpoint)
    model = result.model
    if representation != "backbone":
        if not hasattr(model, "representation"):
            raise ValueError(
                f"{run_dir}: model {result.config.model.name!r} has no {representation} representation"
            )
        model.representation = representation
    metrics = evaluate(model, result.data, seed=result.config.seed, probes=("linear",))
    return {
        "content": metric_value(metrics, "content"),
        "style": metric_value(metrics, "style"),
        "global_step": int(result.global_step),
    }


def _structure(run_dir: Path, checkpoint: Path | None) -> dict[str, float]:
    from pssl.compare import structure_of_run

    out = structure_of_run(run_dir, checkpoint=checkpoint)
    return {"structure": float(out["within_to_across"])}


def checkpoint_fractions(run_dir: Path) -> list[tuple[float, Path]]:
    """``(share of the training steps, checkpoint)`` for every checkpoint kept in the run, oldest first."""
    from pssl.inference.checkpoint import list_checkpoints

    found = list_checkpoints(run_dir)
    if not found:
        return []
    steps = [int(p.stem.split("-")[-1]) for p in found]
    final = max(steps)
    return [(step / final, path) for step, path in zip(steps, found)]


@dataclass
class MeasureReader:
    """Reads measures of runs, caching what it computes under ``cache``.

    Attributes:
        root: the claims folder (run directories are below it).
        cache: where computed measures are kept.
    """

    root: Path
    cache: Path

    def _cache_file(self, run_dir: Path, checkpoint: Path | None, kind: str) -> Path:
        relative = Path(run_dir).resolve().relative_to(self.root.resolve())
        name = checkpoint.stem if checkpoint is not None else "final"
        return self.cache / relative / f"{name}-{kind}.json"

    def _cached(self, path: Path, compute: Any) -> dict[str, float]:
        if path.is_file():
            try:
                return json.loads(path.read_text())
            except (OSError, ValueError):
                pass  # damaged: computed again
        value = compute()
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, value)
        return value

    def value(
        self, run_dir: Path, measure: str, *, representation: str = "backbone", checkpoint: Path | None = None
    ) -> float:
        """The measure of a run at its end (``checkpoint=None``) or at an earlier checkpoint."""
        run_dir = Path(run_dir)
        if measure == "structure":
            if representation != "backbone":
                raise ValueError("the structure measure reads the default representation only")
            path = self._cache_file(run_dir, checkpoint, "structure")
            return float(self._cached(path, lambda: _structure(run_dir, checkpoint))["structure"])
        if measure not in ("content", "style"):
            raise ValueError(f"unknown measure {measure!r}; accepted: content, style, structure")
        if checkpoint is None and representation == "backbone":
            return metric_value(read_metrics(run_dir), measure)
        if checkpoint is None:
            from pssl.inference.checkpoint import list_checkpoints

            checkpoint = list_checkpoints(run_dir)[-1]
        path = self._cache_file(run_dir, checkpoint, f"evaluation-{representation}")
        values = self._cached(path, lambda: _evaluate_checkpoint(run_dir, checkpoint, representation))
        return float(values[measure]) if values.get(measure) is not None else math.nan


def validation_curve(run_dir: Path) -> list[float]:
    """The validation objective after each epoch (``val_elbo`` of ``epochs.csv``; higher is better)."""
    path = Path(run_dir) / "epochs.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    values = []
    for row in rows:
        try:
            values.append(float(row["val_elbo"]))
        except (KeyError, TypeError, ValueError):
            values.append(math.nan)
    return values


def plateau_epoch(curve: list[float], band: float = PLATEAU_BAND) -> int | None:
    """The first epoch (1-based) after which the curve stays within ``band`` of its range of its final value.

    With ``v_1..v_E`` the per-epoch values and ``R = max v - min v``, it is the
    smallest ``e`` with ``|v_k - v_E| <= band * R`` for every ``k >= e``. ``None``
    for an empty or non-finite curve.
    """
    values = [v for v in curve if math.isfinite(v)]
    if not values or len(values) != len(curve):
        return None
    final, spread = values[-1], max(values) - min(values)
    epoch = len(values)
    for k in range(len(values) - 1, -1, -1):
        if abs(values[k] - final) > band * spread:
            break
        epoch = k + 1
    return epoch


def last_quarter_change(curve: list[float]) -> float:
    """``|v_E - v_{ceil(3E/4)}|`` as a share of the curve's range: how much the last quarter still moved."""
    values = [v for v in curve if math.isfinite(v)]
    if len(values) < 2 or len(values) != len(curve):
        return math.nan
    spread = max(values) - min(values)
    start = values[min(len(values) - 1, math.ceil(0.75 * len(values)) - 1)]
    return abs(values[-1] - start) / spread if spread > 0 else 0.0


__all__ = [
    "PLATEAU_BAND",
    "MeasureReader",
    "checkpoint_fractions",
    "last_quarter_change",
    "metric_value",
    "plateau_epoch",
    "read_metrics",
    "validation_curve",
]
