"""Probes that measure what a trained representation knows (PAPER section 5).

Evaluation reads a model only through ``model.encode(images) -> (B, d)``
(:mod:`~pssl.evaluation.features`). Every probe follows one protocol
(:mod:`~pssl.evaluation.protocol`): fit on the training split, select its
hyperparameters on the validation split carved from the training items, predict
the test split once; test labels never enter a selection. Probes are
scikit-learn estimators or, for the MLP, a ``torch.nn.Module`` trained with
``torch.optim``, and are registered by name in :data:`PROBES`:

* ``linear``: logistic regression, ``C`` on validation (:mod:`~pssl.evaluation.linear`);
* ``mlp``: one-hidden-layer ReLU head trained to its plateau (:mod:`~pssl.evaluation.mlp`);
* ``knn``: k-nearest neighbours, ``k`` and metric on validation (:mod:`~pssl.evaluation.knn`);
* ``ridge``: ridge regression of real-valued factors (:mod:`~pssl.evaluation.ridge`);
* ``cluster``: a Gaussian mixture scored by Hungarian accuracy, NMI, ARI
  (:mod:`~pssl.evaluation.cluster`); a model that clusters by itself
  (``model.num_clusters``, e.g. SimVAE with ``prior=gmm``) also gets
  ``model_cluster``: its own ``model.cluster(images)`` on the test split, scored
  the same way (:func:`~pssl.evaluation.cluster.model_cluster_evaluation`).

Content is the class label; style is each named factor of a data set
(:func:`evaluate_style`) and each augmentation parameter of a view
(:func:`evaluate_augmentation_style`), read linearly and by kNN
(:mod:`~pssl.evaluation.style`). :func:`evaluate` runs everything from one
feature extraction. Adding a probe is one module: subclass :class:`Probe`,
register it in :data:`PROBES`, import it here.
"""

from pssl.evaluation.protocol import PROBES, Probe, ProbeResult, build_probe, run_probe  # isort: skip
from pssl.evaluation.linear import LinearProbe, linear_probe  # isort: skip
from pssl.evaluation.mlp import MLPHead, MLPProbe, mlp_probe  # isort: skip
from pssl.evaluation.knn import KNN_METRICS, KNNProbe, knn_probe, knn_regression  # isort: skip
from pssl.evaluation.ridge import RidgeProbe, ridge_probe  # isort: skip
from pssl.evaluation.cluster import (  # isort: skip
    ClusterProbe,
    cluster_evaluation,
    hungarian_accuracy,
    model_cluster_evaluation,
)
from pssl.evaluation.features import extract_features
from pssl.evaluation.runner import (
    CONTENT_PROBES,
    DEFAULT_OPTIONS,
    check_evaluation,
    check_probes,
    content_probe_names,
    evaluate,
    evaluate_augmentation_style,
    evaluate_content,
    evaluate_style,
    evaluation_protocol,
)
from pssl.evaluation.style import factor_predictability

__all__ = [
    "CONTENT_PROBES",
    "DEFAULT_OPTIONS",
    "KNN_METRICS",
    "PROBES",
    "ClusterProbe",
    "KNNProbe",
    "LinearProbe",
    "MLPHead",
    "MLPProbe",
    "Probe",
    "ProbeResult",
    "RidgeProbe",
    "build_probe",
    "check_evaluation",
    "check_probes",
    "cluster_evaluation",
    "content_probe_names",
    "evaluate",
    "evaluate_augmentation_style",
    "evaluate_content",
    "evaluate_style",
    "evaluation_protocol",
    "extract_features",
    "factor_predictability",
    "hungarian_accuracy",
    "knn_probe",
    "knn_regression",
    "linear_probe",
    "mlp_probe",
    "model_cluster_evaluation",
    "ridge_probe",
    "run_probe",
]
