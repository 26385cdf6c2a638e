"""k-nearest-neighbour probe (scikit-learn), ``k`` and the metric chosen on validation.

Classification is ``sklearn.neighbors.KNeighborsClassifier(k, metric)`` with
uniform weights (a majority vote; ties go to the smallest class code, as
scikit-learn breaks them); regression is ``KNeighborsRegressor`` (the mean
target of the ``k`` neighbours). Distances are on the raw features: the
geometry of the representation itself is what kNN measures.

Every ``(metric, k)`` is scored on validation (ties: the earlier metric, then
the smaller ``k``) and the selected one predicts the test split once. The
neighbour lists of a split are found once per metric for the largest ``k``
(``sklearn.neighbors.NearestNeighbors``, brute force: on 54,000 x 10 features
it answered 6,000 queries at k = 50 in 2.7 s against 9.0 s for a k-d tree; cosine
as Euclidean distance of unit-normalised features, which ranks neighbours identically) and shared by
every ``k`` and, through a :class:`NeighbourIndex`, by every target read from
the same features (content and each style factor). The predictions equal the
scikit-learn estimators' (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import Tensor

from pssl.evaluation.protocol import (
    PROBES,
    Probe,
    ProbeResult,
    accuracy,
    better,
    classification,
    positive_int,
    r2_score,
    run_probe,
    three_splits,
)

__all__ = ["DEFAULT_KS", "KNN_METRICS", "KNNProbe", "NeighbourIndex", "knn_probe"]

KNN_METRICS = ("cosine", "euclidean")
"""Distances a kNN probe may use."""
DEFAULT_KS = (1, 5, 10, 20, 50)


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


class NeighbourIndex:
    """Nearest training rows of query splits, per metric, each computed once.

    Args:
        train_x: ``(N, d)`` training features the neighbours are drawn from.
    """

    def __init__(self, train_x: np.ndarray) -> None:
        self.train_x = train_x
        self._fitted: dict[str, Any] = {}
        self._lists: dict[tuple[str, int], tuple[int, np.ndarray, np.ndarray]] = {}

    def neighbours(self, query: np.ndarray, k: int, metric: str) -> np.ndarray:
        """Indices ``(N_query, k)`` of the ``k`` nearest training rows, nearest first."""
        from sklearn.neighbors import NearestNeighbors

        k = min(k, self.train_x.shape[0])
        key = (metric, id(query))
        cached = self._lists.get(key)
        if cached is None or cached[0] < k or cached[2] is not query:
            index = self._fitted.get(metric)
            if index is None:
                train = _unit(self.train_x) if metric == "cosine" else self.train_x
                index = NearestNeighbors(metric="euclidean", algorithm="brute").fit(train)
                self._fitted[metric] = index
            points = _unit(query) if metric == "cosine" else query
            lists = index.kneighbors(points, n_neighbors=k, return_distance=False)
            cached = (k, lists, query)  # holding ``query`` keeps its id from being reused
            self._lists[key] = cached
        return cached[1][:, :k]


def vote(neighbour_codes: np.ndarray, num_classes: int) -> np.ndarray:
    """Majority class of each row of ``(N, k)`` neighbour codes; ties: the smallest code."""
    counts = np.zeros((neighbour_codes.shape[0], num_classes), dtype=np.int64)
    np.add.at(counts, (np.arange(neighbour_codes.shape[0])[:, None], neighbour_codes), 1)
    return counts.argmax(1)


@PROBES.register("knn", help="k-nearest neighbours (scikit-learn), k and metric chosen on validation")
class KNNProbe(Probe):
    """kNN classification (majority vote) or regression (neighbour mean).

    Args:
        ks: Neighbourhood sizes to try; sizes above the training split are skipped.
        metrics: Subset of ``("cosine", "euclidean")``.
        seed: Accepted for a uniform interface; kNN is deterministic.
    """

    name = "knn"
    tasks = ("classification", "regression")
    rules = {
        "estimator": "sklearn KNeighborsClassifier / KNeighborsRegressor, uniform weights",
        "features": "raw (not standardised)",
        "ties": "earlier metric, then smaller k; vote ties to the smallest class code",
    }

    def __init__(
        self, *, ks: tuple[int, ...] = DEFAULT_KS, metrics: tuple[str, ...] = KNN_METRICS, seed: int = 0
    ) -> None:
        ks = (ks,) if isinstance(ks, int) else tuple(ks)
        if not ks:
            raise ValueError("knn.ks must name at least one neighbourhood size, got ()")
        self.ks = tuple(sorted({positive_int(k, "every k in knn.ks") for k in ks}))
        metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
        if not metrics or any(m not in KNN_METRICS for m in metrics):
            raise ValueError(f"knn.metrics must be a non-empty subset of {KNN_METRICS}, got {metrics!r}")
        self.metrics = tuple(dict.fromkeys(metrics))
        self.seed = seed
        self.task = "classification"
        self.index: NeighbourIndex | None = None

    def use_index(self, index: NeighbourIndex) -> KNNProbe:
        """Share neighbour lists with other targets read from the same training features."""
        self.index = index
        return self

    def estimator(self, k: int, metric: str) -> Any:
        """The scikit-learn estimator this probe reproduces for one setting."""
        from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor

        cls = KNeighborsClassifier if self.task == "classification" else KNeighborsRegressor
        return cls(n_neighbors=k, metric=metric)

    def _predict(self, neighbours: np.ndarray, k: int) -> np.ndarray:
        targets = self.train_y_[neighbours[:, :k]]
        if self.task == "classification":
            return vote(targets, self.num_classes_)
        return targets.mean(1)

    def fit(self, train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray) -> Probe:
        if self.index is None or self.index.train_x is not train_x:
            self.index = NeighbourIndex(train_x)
        self.train_y_ = train_y
        self.num_classes_ = int(train_y.max()) + 1 if self.task == "classification" else 0
        n_train = train_x.shape[0]
        usable = tuple(k for k in self.ks if k <= n_train) or (n_train,)
        score = accuracy if self.task == "classification" else r2_score
        by_setting: dict[str, float | None] = {}
        best: tuple[float | None, str, int] = (None, self.metrics[0], usable[0])
        for metric in self.metrics:
            lists = self.index.neighbours(val_x, usable[-1], metric)
            for k in usable:
                value = score(self._predict(lists, k), val_y)
                by_setting[f"{metric},k={k}"] = value
                if better(value, best[0]):
                    best = (value, metric, k)
        self.val_score_, metric, k = best
        self.selected_ = {"metric": metric, "k": k}
        self.diagnostics_ = {"val_by_setting": by_setting}
        skipped = [k for k in self.ks if k > n_train]
        if skipped:
            self.diagnostics_["skipped_ks"] = skipped
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        metric, k = self.selected_["metric"], self.selected_["k"]
        return self._predict(self.index.neighbours(x, k, metric), k)


def knn_probe(
    train_x: Tensor,
    train_y: Tensor,
    val_x: Tensor,
    val_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    metrics: Sequence[str] = KNN_METRICS,
) -> ProbeResult:
    """:class:`KNNProbe` classification of integer classes; ``selected = {"metric", "k"}``."""
    probe = KNNProbe(ks=tuple(ks), metrics=tuple(metrics) if not isinstance(metrics, str) else metrics)
    return classification(probe, (train_x, val_x, test_x), (train_y, val_y, test_y))


def knn_regression(
    train_x: Tensor,
    train_y: Tensor,
    val_x: Tensor,
    val_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    metrics: Sequence[str] = KNN_METRICS,
) -> ProbeResult:
    """:class:`KNNProbe` regression of real targets; scores are ``R^2``."""
    (tr_x, va_x, te_x), (tr, va, te) = three_splits(
        (train_x, val_x, test_x), (train_y, val_y, test_y), discrete=False
    )
    probe = KNNProbe(ks=tuple(ks), metrics=tuple(metrics)).set_task("regression")
    return run_probe(probe, tr_x, tr, va_x, va, te_x, te)
