"""Clustering probe: a Gaussian mixture (scikit-learn) scored against the classes.

``sklearn.mixture.GaussianMixture`` with one component per class (full
covariances by default: clusters of a learned representation are rarely
axis-aligned; k-means initialisation, one initialisation, seeded) is fitted on
the standardised training features; labels take no part in the fit. Each test
item goes to its most probable component, scored by the Hungarian-matched
accuracy (:func:`hungarian_accuracy`), NMI and ARI.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pssl.evaluation.protocol import (
    PROBES,
    Probe,
    as_features,
    as_targets,
    positive_int,
    run_probe,
)

__all__ = [
    "COVARIANCE_TYPES",
    "ClusterProbe",
    "cluster_evaluation",
    "hungarian_accuracy",
    "model_cluster_evaluation",
]

COVARIANCE_TYPES = ("full", "diag", "tied", "spherical")


def hungarian_accuracy(pred: Any, labels: Any) -> float:
    """Accuracy of cluster assignments under the best one-to-one matching of clusters to classes.

    Builds the contingency table ``n[c, y]`` (items of cluster ``c`` with class
    ``y``) and solves the assignment problem ``max sum_c n[c, pi(c)]`` over
    one-to-one maps ``pi`` (:func:`scipy.optimize.linear_sum_assignment`).
    Clusters left unmatched (more clusters than classes) count as errors.

    Args:
        pred: Cluster ids ``(N,)``, any integers.
        labels: True classes ``(N,)``, any integers.

    Returns:
        Fraction of items whose cluster is matched to their class.
    """
    from scipy.optimize import linear_sum_assignment

    pred_np = np.asarray(pred.cpu() if isinstance(pred, Tensor) else pred).reshape(-1)
    labels_np = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels).reshape(-1)
    if pred_np.shape != labels_np.shape:
        raise ValueError(
            f"pred and labels must have the same length, got {pred_np.size} and {labels_np.size}"
        )
    if pred_np.size == 0:
        raise ValueError("pred and labels are empty")
    _, pred_ids = np.unique(pred_np, return_inverse=True)
    _, label_ids = np.unique(labels_np, return_inverse=True)
    table = np.zeros((pred_ids.max() + 1, label_ids.max() + 1), dtype=np.int64)
    np.add.at(table, (pred_ids, label_ids), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / pred_np.size)


@PROBES.register(
    "cluster", help="Gaussian mixture (scikit-learn), one component per class, Hungarian accuracy"
)
class ClusterProbe(Probe):
    """Unsupervised: a Gaussian mixture fitted on the training features.

    Args:
        num_clusters: Components; ``None`` counts the classes of the training labels.
        covariance_type: ``"full"``, ``"diag"``, ``"tied"`` or ``"spherical"``.
        max_iter: EM iterations.
        seed: Seeds the mixture's initialisation.
    """

    name = "cluster"
    tasks = ("clustering",)
    rules = {
        "estimator": "sklearn StandardScaler + GaussianMixture, k-means init, n_init=1",
        "fit_on": "train (labels unused except to count classes)",
        "accuracy": "Hungarian-matched on test; also NMI and ARI",
    }

    def __init__(
        self,
        *,
        num_clusters: int | None = None,
        covariance_type: str = "full",
        max_iter: int = 200,
        seed: int = 0,
    ) -> None:
        if num_clusters is not None:
            positive_int(num_clusters, "cluster.num_clusters")
        if covariance_type not in COVARIANCE_TYPES:
            raise ValueError(f"covariance_type must be one of {COVARIANCE_TYPES}, got {covariance_type!r}")
        self.num_clusters = num_clusters
        self.covariance_type = covariance_type
        self.max_iter = positive_int(max_iter, "cluster.max_iter")
        self.seed = seed
        self.task = "clustering"

    def fit(self, train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray) -> Probe:
        from sklearn.mixture import GaussianMixture
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        count = self.num_clusters or len(np.unique(train_y))
        if count > train_x.shape[0]:
            raise ValueError(f"num_clusters={count} exceeds the {train_x.shape[0]} items to fit on")
        mixture = GaussianMixture(
            n_components=count,
            covariance_type=self.covariance_type,
            max_iter=self.max_iter,
            n_init=1,
            random_state=self.seed,
        )
        self.model_ = make_pipeline(StandardScaler(), mixture)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # non-convergence is reported in the result instead
            self.model_.fit(train_x)
        self.selected_ = {"num_clusters": count, "covariance_type": self.covariance_type}
        self.val_score_ = hungarian_accuracy(self.model_.predict(val_x), val_y)
        self.diagnostics_ = {"converged": bool(mixture.converged_)}
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.model_.predict(x)


def cluster_evaluation(
    features: Tensor,
    labels: Tensor,
    *,
    num_clusters: int | None = None,
    seed: int = 0,
    eval_features: Tensor | None = None,
    eval_labels: Tensor | None = None,
    covariance_type: str = "full",
    max_iter: int = 200,
) -> dict[str, Any]:
    """Gaussian-mixture clustering of ``features`` scored on ``eval_features`` (default: the same).

    Args:
        features: Fitting features ``(N, d)`` (the training split in :func:`pssl.evaluation.evaluate`).
        labels: Classes ``(N,)`` of ``features``: give the default number of
            clusters, and the scores when no evaluation set is given.
        num_clusters: Number of components; ``None`` counts the classes in ``labels``.
        seed: Seeds the mixture's initialisation.
        eval_features, eval_labels: The set to score (the test split in ``evaluate``).
        covariance_type: ``"full"``, ``"diag"``, ``"tied"`` or ``"spherical"``.
        max_iter: EM iterations.

    Returns:
        ``{"accuracy"`` (Hungarian-matched), ``"nmi"``, ``"ari"``,
        ``"selected": {"num_clusters", "covariance_type"}``, ``"converged"``, ...}.
    """
    x = as_features(features, "features")
    y = as_targets(labels, x.shape[0], "labels", discrete=True)
    if (eval_features is None) != (eval_labels is None):
        raise ValueError("give both eval_features and eval_labels, or neither")
    if eval_features is None:
        eval_x, eval_y = x, y
    else:
        eval_x = as_features(eval_features, "eval_features")
        if eval_x.shape[1] != x.shape[1]:
            raise ValueError(f"eval_features has {eval_x.shape[1]} features but features has {x.shape[1]}")
        eval_y = as_targets(eval_labels, eval_x.shape[0], "eval_labels", discrete=True)
    probe = ClusterProbe(
        num_clusters=num_clusters if num_clusters is not None else len(torch.unique(y)),
        covariance_type=covariance_type,
        max_iter=max_iter,
        seed=seed,
    )
    # No separate validation set here: the fitting set stands in (the mixture selects nothing).
    result = run_probe(probe, x, y, x, y, eval_x, eval_y).to_dict()
    result.pop("val_accuracy", None)
    return result


def model_cluster_evaluation(
    model: Any, data: Any, *, batch_size: int = 1024, device: torch.device | str | None = None
) -> dict[str, Any]:
    """The model's own clustering of ``data``, scored against its classes like the ``cluster`` probe.

    For a model whose generative story has a discrete cluster latent: it sets
    ``num_clusters`` and offers ``cluster(images) -> (B,)`` (SimVAE with
    ``prior=gmm`` answers ``argmax_c p(c | x)``). Nothing is fitted here; the
    clusters are the trained model's. Runs in eval mode under ``torch.no_grad()``.

    Args:
        model: Module with ``num_clusters`` and ``cluster(images)``.
        data: ``.images`` (``uint8`` or float in ``[0, 1]``) and ``.labels``.
        batch_size: Images per ``cluster`` call.
        device: Where to run the model (default: its parameters' device).

    Returns:
        ``{"accuracy"`` (Hungarian-matched), ``"nmi"``, ``"ari"``,
        ``"selected": {"num_clusters"}``, ``"clusters_used"``, ``"seconds"}``.

    Raises:
        TypeError: if the model has no clusters of its own, or ``data`` no images.
    """
    import time

    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from pssl.evaluation.features import float_images, model_device

    start = time.perf_counter()
    num_clusters = getattr(model, "num_clusters", None)
    if not num_clusters:
        name = type(model).__name__
        raise TypeError(f"{name} has no clusters of its own (num_clusters is {num_clusters!r})")
    images = getattr(data, "images", None)
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[0] == 0:
        raise TypeError("data must have .images, a non-empty (N, C, H, W) tensor")
    truth = as_targets(data.labels, images.shape[0], "labels", discrete=True).numpy()
    batch_size = positive_int(batch_size, "batch_size")
    device = torch.device(device) if device is not None else model_device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            pred = torch.cat(
                [
                    model.cluster(float_images(images[i : i + batch_size].to(device), "data.images")).cpu()
                    for i in range(0, images.shape[0], batch_size)
                ]
            ).numpy()
    finally:
        model.train(was_training)
    return {
        "accuracy": hungarian_accuracy(pred, truth),
        "nmi": float(normalized_mutual_info_score(truth, pred)),
        "ari": float(adjusted_rand_score(truth, pred)),
        "selected": {"num_clusters": int(num_clusters)},
        "clusters_used": int(len(np.unique(pred))),
        "seconds": time.perf_counter() - start,
    }
