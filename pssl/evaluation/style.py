r"""How well a style factor can be read from a representation, linearly and non-linearly.

* a discrete factor (a class: colour index, flip) is read by the ``linear``
  probe (logistic regression) and the ``knn`` classifier; scores are test accuracies;
* a continuous factor (position, scale, brightness) is read by the ``ridge``
  probe and the ``knn`` regressor; scores are test ``R^2`` (``None`` when the
  test targets do not vary).

Every reader follows the protocol of :mod:`pssl.evaluation.protocol`
(selection on validation, test scored once) and takes its options from the
same sections as the content probes (``linear``, ``ridge``, ``knn``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pssl.evaluation.knn import KNNProbe, NeighbourIndex
from pssl.evaluation.protocol import (
    FACTOR_KINDS,
    as_array,
    build_probe,
    encode_classes,
    run_probe,
    three_splits,
)

__all__ = ["FeatureSet", "factor_predictability", "summarise_factors"]

READERS = {"discrete": ("linear", "knn"), "continuous": ("ridge", "knn")}
"""Probe of each reader (``"linear"`` then ``"knn"`` in the results) per factor kind."""


@dataclass
class FeatureSet:
    """Features of train / val / test as ``float64`` arrays, with neighbour lists shared by every target."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    _index: NeighbourIndex | None = field(default=None, repr=False)

    @classmethod
    def of(cls, train: Tensor, val: Tensor, test: Tensor) -> FeatureSet:
        return cls(*(as_array(x, np.float64) for x in (train, val, test)))

    @property
    def index(self) -> NeighbourIndex:
        if self._index is None:
            self._index = NeighbourIndex(self.train)
        return self._index


def read_factor(
    feats: FeatureSet,
    kind: str,
    targets: tuple[Tensor, Tensor, Tensor],
    options: Mapping[str, Mapping[str, Any]],
    seed: int,
) -> dict[str, Any]:
    """Both readers of one factor; ``targets`` are validated ``(train, val, test)`` vectors."""
    if kind not in FACTOR_KINDS:
        raise ValueError(f"kind must be one of {FACTOR_KINDS}, got {kind!r}")
    if kind == "discrete":
        _, codes = encode_classes(*targets)
        values = [c.numpy() for c in codes]
        task = "classification"
    else:
        values = [t.numpy() for t in targets]
        task = "regression"
    results = {}
    for slot, name in zip(("linear", "knn"), READERS[kind]):
        probe = build_probe(name, _with_seed(name, options.get(name, {}), seed), task=task)
        if isinstance(probe, KNNProbe):
            probe.use_index(feats.index)
        results[slot] = run_probe(probe, feats.train, values[0], feats.val, values[1], feats.test, values[2])
    return {
        "linear": results["linear"].accuracy,
        "knn": results["knn"].accuracy,
        "metric": "accuracy" if kind == "discrete" else "r2",
        "readers": {"linear": READERS[kind][0], "knn": "knn"},
        "val": {slot: r.val_accuracy for slot, r in results.items()},
        "selected": {slot: r.selected for slot, r in results.items()},
    }


def _with_seed(name: str, options: Mapping[str, Any], seed: int) -> dict[str, Any]:
    from pssl.evaluation.protocol import PROBES

    merged = dict(options)
    if "seed" in PROBES.entry(name).parameters():
        merged.setdefault("seed", seed)
    return merged


def factor_predictability(
    train_x: Tensor,
    train_f: Tensor,
    val_x: Tensor,
    val_f: Tensor,
    test_x: Tensor,
    test_f: Tensor,
    *,
    kind: str,
    seed: int = 0,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Linear and kNN predictability of one factor from features ``(N_split, d)``.

    Args:
        train_f, val_f, test_f: Factor values ``(N_split,)`` (integers for discrete).
        kind: ``"discrete"`` or ``"continuous"``.
        seed: Passed to readers that take one.
        options: Per-probe options (sections ``linear``, ``ridge``, ``knn``).

    Returns:
        A dict with the test scores ``linear`` and ``knn``, ``metric`` (``"accuracy"`` or
        ``"r2"``), ``readers``, the validation scores ``val`` (``linear``, ``knn``) and the
        ``selected`` hyperparameters of each.
    """
    if kind not in FACTOR_KINDS:
        raise ValueError(f"kind must be one of {FACTOR_KINDS}, got {kind!r}")
    (tr_x, va_x, te_x), fs = three_splits(
        (train_x, val_x, test_x), (train_f, val_f, test_f), discrete=kind == "discrete", target="f"
    )
    return read_factor(FeatureSet.of(tr_x, va_x, te_x), kind, tuple(fs), options or {}, seed)


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(sum(kept) / len(kept)) if kept else None


def summarise_factors(factors: dict[str, dict[str, Any]], skipped: dict[str, str]) -> dict[str, Any]:
    """Per-factor results plus their means (all factors, and per metric)."""
    by_metric: dict[str, dict[str, float | None]] = {}
    for metric in ("accuracy", "r2"):
        rows = [r for r in factors.values() if r["metric"] == metric]
        if rows:
            by_metric[metric] = {
                "linear": _mean([r["linear"] for r in rows]),
                "knn": _mean([r["knn"] for r in rows]),
                "count": len(rows),
            }
    return {
        "factors": factors,
        "mean_linear": _mean([r["linear"] for r in factors.values()]),
        "mean_knn": _mean([r["knn"] for r in factors.values()]),
        "mean_by_metric": by_metric,
        "skipped": skipped,
    }


def read_factors(
    feats: FeatureSet,
    targets: dict[str, tuple[str, Tensor, Tensor, Tensor]],
    options: Mapping[str, Mapping[str, Any]],
    seed: int,
) -> dict[str, Any]:
    """Predictability of every ``name -> (kind, train, val, test)`` target from ``feats``."""
    factors: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for name, (kind, train_f, val_f, test_f) in targets.items():
        if len(torch.unique(train_f)) < 2:
            skipped[name] = "constant on the training split"
            continue
        factors[name] = {"kind": kind, **read_factor(feats, kind, (train_f, val_f, test_f), options, seed)}
    return summarise_factors(factors, skipped)
