"""The evaluation protocol every probe follows, and the registry of probes.

A probe is a small estimator with one shape (:class:`Probe`):

1. ``fit(train_x, train_y, val_x, val_y)`` fits every candidate setting on the
   training split and selects one by its score on the validation split (carved
   from the training items). The fitted model of the selected setting is kept;
   nothing is refitted on train + validation.
2. ``predict(test_x)`` is called once, and :func:`run_probe` scores it.

Test features and labels never reach ``fit``, so no selection can read them. The
probe's settings and the fixed rules it follows are recorded with its result
(``settings``) and in ``metrics.json["protocol"]`` (:func:`evaluation_protocol`).

Probes register by name in :data:`PROBES`, like priors or likelihoods; adding a
probe is one module that subclasses :class:`Probe` and registers it. Options
given by name (``{"mlp": {"patience": 500}}``) are checked against the probe's
constructor signature.
"""

from __future__ import annotations

import abc
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from pssl.checks import positive_int, positive_number  # noqa: F401  (re-exported to the probes)
from pssl.registry import Registry

__all__ = [
    "FACTOR_KINDS",
    "PROBES",
    "TASKS",
    "Probe",
    "ProbeResult",
    "build_probe",
    "encode_classes",
    "run_probe",
]

PROBES: Registry[Probe] = Registry("probe")
"""Probes by name; each entry's factory is a :class:`Probe` subclass."""

TASKS = ("classification", "regression", "clustering")
"""What a probe predicts: a class, a real value, or an unsupervised partition."""
FACTOR_KINDS = ("discrete", "continuous")
"""Kinds of a style factor: class-valued (accuracy) or real-valued (R^2)."""


@dataclass
class ProbeResult:
    """Outcome of one probe.

    Attributes:
        accuracy: Test score of the selected setting, fitted on the training split
            only: accuracy (a fraction in ``[0, 1]``) for classification and
            clustering (Hungarian-matched), ``R^2`` for regression (``None`` when
            the test targets do not vary).
        val_accuracy: Validation score of the selected setting (the selection criterion).
        selected: The chosen hyperparameters.
        extra: Settings, diagnostics (validation curve, iterations, timings, ...).
    """

    accuracy: float | None
    val_accuracy: float | None
    selected: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """``{"accuracy", "val_accuracy", "selected", **extra}``, plain JSON-ready values."""
        return {
            "accuracy": self.accuracy,
            "val_accuracy": self.val_accuracy,
            "selected": dict(self.selected),
            **self.extra,
        }


class Probe(abc.ABC):
    """One estimator shape for every probe: fit and select on train/validation, predict test once.

    Subclasses set :attr:`tasks`, take their hyperparameters (candidate grids and
    fixed settings) as keyword-only constructor arguments with defaults, and
    implement :meth:`fit` and :meth:`predict`. ``fit`` must leave
    ``selected_`` (the chosen hyperparameters), ``val_score_`` (their
    validation score) and ``diagnostics_`` (anything else worth recording).

    Inputs are numpy arrays: features ``(N, d)`` ``float64``; targets ``(N,)``,
    class codes ``0..K-1`` (``int64``, ``-1`` for a class absent from training,
    which counts as an error) for classification, ``float64`` for regression.
    """

    name: ClassVar[str] = ""
    tasks: ClassVar[tuple[str, ...]] = ("classification",)
    rules: ClassVar[dict[str, str]] = {}
    """Fixed rules (estimator, solver, tie-breaking) recorded in the protocol."""

    task: str
    selected_: dict[str, Any]
    val_score_: float | None
    diagnostics_: dict[str, Any]

    def settings(self) -> dict[str, Any]:
        """The constructor settings of this probe (JSON-ready) plus its fixed rules."""
        entry = PROBES.entry(self.name) if self.name in PROBES else None
        names = entry.parameters() if entry is not None else {}
        values = {k: _jsonable(getattr(self, k)) for k in names if hasattr(self, k)}
        return {**values, **self.rules}

    def set_task(self, task: str) -> Probe:
        """Choose what this probe predicts (``"classification"`` or ``"regression"``)."""
        if task not in self.tasks:
            raise ValueError(f"probe {self.name!r} cannot do {task}; it does {', '.join(self.tasks)}")
        self.task = task
        return self

    @abc.abstractmethod
    def fit(self, train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray) -> Probe:
        """Fit every candidate on train, select on validation; keep the selected fitted model."""

    @abc.abstractmethod
    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predictions ``(N,)`` of the selected model: class codes, values, or cluster ids."""


def build_probe(name: str, options: Mapping[str, Any] | None = None, *, task: str | None = None) -> Probe:
    """The probe registered as ``name`` with ``options`` (checked against its signature)."""
    probe = PROBES.build(name, dict(options or {}))
    return probe.set_task(task or probe.tasks[0])


# --------------------------------------------------------------------------- checks and scores


def as_features(x: Any, name: str) -> Tensor:
    """``x`` as a finite 2-D ``float32`` CPU tensor ``(N, d)``, or raise."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a tensor or array of shape (N, d), got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (N, d), got {tuple(x.shape)}")
    if not (x.is_floating_point() or x.dtype in (torch.int64, torch.int32, torch.uint8)):
        raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
    x = x.detach().to("cpu", torch.float32)
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty; every split needs at least one item")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} has {int((~torch.isfinite(x)).sum())} non-finite values")
    return x


def as_targets(y: Any, n: int, name: str, *, discrete: bool) -> Tensor:
    """``y`` as a CPU vector of ``n`` entries: ``int64`` if ``discrete`` else ``float64``."""
    if isinstance(y, np.ndarray):
        y = torch.from_numpy(y)
    if not isinstance(y, Tensor):
        raise TypeError(f"{name} must be a tensor or array of shape ({n},), got {type(y).__name__}")
    if tuple(y.shape) != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match its features, got {tuple(y.shape)}")
    y = y.detach().cpu()
    if discrete:
        if y.is_floating_point() or y.is_complex():
            raise TypeError(f"{name} must hold integer or bool classes, got dtype {y.dtype}")
        return y.to(torch.int64)
    y = y.to(torch.float64)
    if not torch.isfinite(y).all():
        raise ValueError(f"{name} has {int((~torch.isfinite(y)).sum())} non-finite values")
    return y


def three_splits(
    xs: Sequence[Any], ys: Sequence[Any], *, discrete: bool, target: str = "y"
) -> tuple[list[Tensor], list[Tensor]]:
    """Validate train / val / test features ``(N_split, d)`` and targets ``(N_split,)``."""
    names = ("train", "val", "test")
    feats = [as_features(x, f"{name}_x") for x, name in zip(xs, names)]
    for x, name in zip(feats[1:], names[1:]):
        if x.shape[1] != feats[0].shape[1]:
            raise ValueError(f"{name}_x has {x.shape[1]} features but train_x has {feats[0].shape[1]}")
    targets = [
        as_targets(y, x.shape[0], f"{name}_{target}", discrete=discrete)
        for y, x, name in zip(ys, feats, names)
    ]
    return feats, targets


def encode_classes(train_y: Tensor, *others: Tensor) -> tuple[Tensor, list[Tensor]]:
    """Classes seen in training and every label vector as indices into them.

    Labels of the validation or test split that never occur in training become
    ``-1``: no probe can predict them, so they count as errors.
    """
    classes = torch.unique(train_y)
    codes = []
    for y in (train_y, *others):
        pos = torch.searchsorted(classes, y).clamp_(max=len(classes) - 1)
        codes.append(torch.where(classes[pos] == y, pos, torch.full_like(pos, -1)))
    return classes, codes


def accuracy(pred: np.ndarray, codes: np.ndarray) -> float:
    """Fraction of ``pred`` equal to ``codes``."""
    return float(np.mean(np.asarray(pred) == np.asarray(codes)))


def r2_score(pred: np.ndarray, y: np.ndarray) -> float | None:
    """Coefficient of determination on one split; ``None`` where ``y`` does not vary."""
    y = np.asarray(y, dtype=np.float64)
    total = float(((y - y.mean()) ** 2).sum())
    if total <= 1e-12 * max(1.0, float((y**2).sum())):
        return None
    return 1.0 - float(((y - np.asarray(pred, dtype=np.float64)) ** 2).sum()) / total


def better(value: float | None, best: float | None) -> bool:
    """``value`` strictly above ``best`` (``None`` is below everything)."""
    return value is not None and (best is None or value > best)


def positive_grid(values: Any, name: str) -> tuple[float, ...]:
    """A non-empty, duplicate-free tuple of positive numbers, in the given order."""
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of positive numbers, got {values!r}")
    try:
        grid = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a sequence of positive numbers, got {values!r}") from None
    if not grid or any(not math.isfinite(v) or v <= 0 for v in grid):
        raise ValueError(f"{name} must be a non-empty sequence of positive numbers, got {values!r}")
    return tuple(dict.fromkeys(grid))


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


# --------------------------------------------------------------------------- running a probe


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run BLAS, OpenMP and torch on one thread inside, then restore the previous counts.

    Probes issue many small or cache-sized operations; splitting each across
    threads saves little, and on a busy machine a pool waiting for its workers
    costs more than it saves (measured on 2 shared cores: scikit-learn's logistic
    regression on 54,000 x 10 features took 7.5 s on two threads, 1.7 s on one).
    """
    from threadpoolctl import threadpool_limits

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(previous)


def as_array(x: Tensor | np.ndarray, dtype: Any = None) -> np.ndarray:
    """A numpy view of ``x`` (arrays pass through untouched, so shared caches recognise them)."""
    if isinstance(x, np.ndarray):
        return x if dtype is None or x.dtype == dtype else x.astype(dtype)
    x = x.detach().cpu()
    if dtype is np.float64:
        x = x.double()
    return x.numpy()


def run_probe(
    probe: Probe,
    train_x: Tensor | np.ndarray,
    train_y: Tensor | np.ndarray,
    val_x: Tensor | np.ndarray,
    val_y: Tensor | np.ndarray,
    test_x: Tensor | np.ndarray,
    test_y: Tensor | np.ndarray,
) -> ProbeResult:
    """Fit ``probe`` on train, select on validation, score its one prediction of test.

    Args:
        probe: A probe with its task set.
        train_x, val_x, test_x: Validated features ``(N_split, d)`` (:func:`three_splits`).
        train_y, val_y, test_y: Class codes (:func:`encode_classes`) for
            classification; real targets for regression; class labels (used only
            to score, and to count clusters) for clustering.

    Returns:
        :class:`ProbeResult`; ``extra`` holds the settings, diagnostics and the seconds taken.
    """
    start = time.perf_counter()
    as_np = [as_array(x, np.float64) for x in (train_x, val_x, test_x)]
    targets = [as_array(y) for y in (train_y, val_y, test_y)]
    with single_threaded():
        probe.fit(as_np[0], targets[0], as_np[1], targets[1])
        prediction = probe.predict(as_np[2])  # the one look at the test split
    extra: dict[str, Any] = {}
    if probe.task == "classification":
        score: float | None = accuracy(prediction, targets[2])
    elif probe.task == "regression":
        score = r2_score(prediction, targets[2])
    else:
        from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

        from pssl.evaluation.cluster import hungarian_accuracy

        score = hungarian_accuracy(prediction, targets[2])
        extra["nmi"] = float(normalized_mutual_info_score(targets[2], prediction))
        extra["ari"] = float(adjusted_rand_score(targets[2], prediction))
    extra.update(_jsonable(probe.diagnostics_))
    extra["settings"] = probe.settings()
    extra["seconds"] = time.perf_counter() - start
    return ProbeResult(score, probe.val_score_, _jsonable(probe.selected_), extra)


def classification(probe: Probe, xs: Sequence[Any], ys: Sequence[Any]) -> ProbeResult:
    """Validate three splits, code the classes seen in training, and run a classifier probe."""
    (train_x, val_x, test_x), labels = three_splits(xs, ys, discrete=True)
    _, (tr, va, te) = encode_classes(*labels)
    return run_probe(probe.set_task("classification"), train_x, tr, val_x, va, test_x, te)
