r"""Ridge probe: linear regression of a real-valued factor (scikit-learn).

For each ``alpha`` of the grid, ``sklearn.linear_model.Ridge(alpha)`` minimises

.. math::
    \sum_i (y_i - w^\top \tilde x_i - b)^2 + \alpha \lVert w \rVert^2

on standardised features (``StandardScaler`` fitted on the training split). The
``alpha`` with the highest validation ``R^2`` is selected (ties: the larger
``alpha``). Scores are ``R^2 = 1 - sum (y - \hat y)^2 / sum (y - \bar y)^2``
on the test split (0 for predicting the mean, negative when worse).
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
    better,
    positive_grid,
    r2_score,
    run_probe,
    three_splits,
)

__all__ = ["DEFAULT_ALPHA_GRID", "RidgeProbe", "ridge_probe"]

DEFAULT_ALPHA_GRID = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4)


@PROBES.register("ridge", help="ridge regression (scikit-learn) of a real-valued factor, alpha on validation")
class RidgeProbe(Probe):
    """Ridge regression on standardised features, ``alpha`` chosen by validation ``R^2``.

    Args:
        alphas: Penalty strengths to try (scikit-learn's convention: the squared
            error is summed, not averaged).
        seed: Accepted for a uniform interface; the fit is deterministic.
    """

    name = "ridge"
    tasks = ("regression",)
    rules = {"estimator": "sklearn StandardScaler + Ridge", "ties": "larger alpha"}

    def __init__(self, *, alphas: tuple[float, ...] = DEFAULT_ALPHA_GRID, seed: int = 0) -> None:
        self.alphas = positive_grid(alphas, "ridge.alphas")
        self.seed = seed
        self.task = "regression"

    def estimator(self, alpha: float) -> Any:
        """The scikit-learn pipeline fitted for one ``alpha``."""
        from sklearn.linear_model import Ridge
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), Ridge(alpha=alpha))

    def fit(self, train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray) -> Probe:
        by_alpha: dict[str, float | None] = {}
        fitted = []
        for alpha in sorted(self.alphas, reverse=True):
            model = self.estimator(alpha).fit(train_x, train_y)
            value = r2_score(model.predict(val_x), val_y)
            by_alpha[repr(alpha)] = value
            fitted.append((value, alpha, model))
        best = fitted[0]
        for candidate in fitted[1:]:
            if better(candidate[0], best[0]):
                best = candidate
        self.val_score_, alpha, self.model_ = best
        self.selected_ = {"alpha": alpha}
        self.diagnostics_ = {"val_by_alpha": by_alpha}
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.model_.predict(x)


def ridge_probe(
    train_x: Tensor,
    train_y: Tensor,
    val_x: Tensor,
    val_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    alphas: Sequence[float] = DEFAULT_ALPHA_GRID,
) -> ProbeResult:
    """:class:`RidgeProbe` on features ``(N_split, d)`` and real targets ``(N_split,)``; scores: ``R^2``."""
    (tr_x, va_x, te_x), (tr, va, te) = three_splits(
        (train_x, val_x, test_x), (train_y, val_y, test_y), discrete=False
    )
    return run_probe(RidgeProbe(alphas=tuple(alphas)), tr_x, tr, va_x, va, te_x, te)
