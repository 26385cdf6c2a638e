r"""Linear probe: L2-penalised multinomial logistic regression (scikit-learn).

For each ``C`` of the grid, ``sklearn.linear_model.LogisticRegression(C)`` with
the L-BFGS solver minimises over ``W`` (``d x K``) and ``b``

.. math::
    \sum_i -\log \mathrm{softmax}(W^\top \tilde x_i + b)_{y_i} + \frac{1}{2C}\lVert W \rVert^2,

with ``\tilde x = (x - \mu_{train}) / \sigma_{train}`` (``StandardScaler`` fitted
on the training split). The ``C`` with the highest validation accuracy is
selected (ties: the smallest ``C``, the strongest penalty).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import Tensor

from pssl.evaluation.protocol import (
    PROBES,
    Probe,
    ProbeResult,
    accuracy,
    classification,
    positive_grid,
    positive_int,
    positive_number,
)

__all__ = ["DEFAULT_C_GRID", "LinearProbe", "linear_probe"]

DEFAULT_C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


def _single_class(probe: Probe, train_y: np.ndarray, val_y: np.ndarray, selected: dict[str, Any]) -> Probe:
    """Every classifier predicts the one class seen in training; nothing to select."""
    probe.model_ = None
    probe.selected_ = selected
    probe.val_score_ = accuracy(np.zeros_like(val_y), val_y)
    probe.diagnostics_ = {"note": "one class in the training split"}
    return probe


@PROBES.register("linear", help="logistic regression (scikit-learn, L-BFGS), C chosen on validation")
class LinearProbe(Probe):
    """Multinomial logistic regression on standardised features, ``C`` chosen on validation.

    Args:
        grid: Inverse penalty strengths ``C`` to try (scikit-learn's convention).
        max_iter: L-BFGS iterations per ``C``.
        tolerance: L-BFGS stopping tolerance (``tol``).
        seed: Accepted for a uniform interface; the fit is deterministic.
    """

    name = "linear"
    tasks = ("classification",)
    rules = {
        "estimator": "sklearn StandardScaler + LogisticRegression(solver='lbfgs'), L2 on weights, not bias",
        "ties": "smallest C",
    }

    def __init__(
        self,
        *,
        grid: tuple[float, ...] = DEFAULT_C_GRID,
        max_iter: int = 1000,
        tolerance: float = 1e-4,
        seed: int = 0,
    ) -> None:
        self.grid = positive_grid(grid, "linear.grid")
        self.max_iter = positive_int(max_iter, "linear.max_iter")
        self.tolerance = positive_number(tolerance, "linear.tolerance")
        self.seed = seed
        self.task = "classification"

    def estimator(self, C: float) -> Any:
        """The scikit-learn pipeline fitted for one ``C``."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(
            StandardScaler(), LogisticRegression(C=C, max_iter=self.max_iter, tol=self.tolerance)
        )

    def fit(self, train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray) -> Probe:
        if len(np.unique(train_y)) < 2:
            return _single_class(self, train_y, val_y, {"C": None})
        from sklearn.exceptions import ConvergenceWarning

        by_c: dict[float, tuple[float, Any, bool]] = {}
        for c in sorted(self.grid):
            model = self.estimator(c)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                model.fit(train_x, train_y)
            converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
            by_c[c] = (accuracy(model.predict(val_x), val_y), model, converged)
        best = max(sorted(by_c), key=lambda c: (by_c[c][0], -c))
        self.model_ = by_c[best][1]
        self.selected_ = {"C": best}
        self.val_score_ = by_c[best][0]
        self.diagnostics_ = {
            "val_accuracy_by_C": {repr(c): v[0] for c, v in by_c.items()},
            "train_accuracy": accuracy(self.model_.predict(train_x), train_y),
            "iterations": int(np.max(self.model_[-1].n_iter_)),
            "converged": by_c[best][2],
            "refit": "train only",
        }
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.model_ is None:
            return np.zeros(x.shape[0], dtype=np.int64)
        return self.model_.predict(x)


def linear_probe(
    train_x: Tensor,
    train_y: Tensor,
    val_x: Tensor,
    val_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    seed: int = 0,
    grid: Sequence[float] = DEFAULT_C_GRID,
    max_iter: int = 1000,
    tolerance: float = 1e-4,
) -> ProbeResult:
    """:class:`LinearProbe` on features ``(N_split, d)`` and integer classes ``(N_split,)``.

    Classes absent from training count as errors. Returns a :class:`ProbeResult`
    with ``selected = {"C": ...}``.
    """
    probe = LinearProbe(grid=tuple(grid), max_iter=max_iter, tolerance=tolerance, seed=seed)
    return classification(probe, (train_x, val_x, test_x), (train_y, val_y, test_y))
