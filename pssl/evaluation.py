"""Probes that measure what a trained representation knows (PAPER section 5).

Evaluation reads a model only through ``model.encode(images) -> (B, d)``, the
deterministic representation of un-augmented images (the encoder mean for
SimVAE and the VAE, the backbone output for discriminative SSL). Features are
extracted once per split and every probe works on those cached features.

Content (the class label):

* ``linear``: multinomial logistic regression with an L2 penalty
  (:func:`linear_probe`);
* ``mlp``: the reference ``d-d-C`` head, one hidden ReLU layer trained with
  Adam (:func:`mlp_probe`);
* ``knn``: k-nearest-neighbour majority vote (:func:`knn_probe`);
* ``cluster``: a Gaussian mixture with one component per class, scored by
  Hungarian-matched accuracy, NMI and ARI (:func:`cluster_evaluation`).

Style (named factors of a data set, and the parameters of augmentations):
linear and kNN predictability of each factor (:func:`factor_predictability`).

Selection protocol, shared by every probe: hyperparameters (the penalty, the
epoch, ``k`` and the metric) are chosen on the *validation* split carved from
the training items. The test split is scored once, with the chosen setting, by
a model fitted on the training split only (no refit on train + validation).
Test labels never enter a selection; the one exception is labelled as such:
:func:`mlp_probe` also reports the reference code's optimistic number, the best
test accuracy over epochs. Accuracies are fractions in ``[0, 1]``.

Features are standardised with the mean and standard deviation of the training
split (a dimension with zero spread is left unscaled) for the linear, MLP,
ridge and clustering probes. kNN uses the raw features: the geometry of the
representation itself is what it measures.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment, minimize
from torch import Tensor, nn

__all__ = [
    "CONTENT_PROBES",
    "DEFAULT_OPTIONS",
    "KNN_METRICS",
    "ProbeResult",
    "cluster_evaluation",
    "evaluate",
    "evaluate_augmentation_style",
    "evaluate_content",
    "evaluate_style",
    "evaluation_protocol",
    "extract_features",
    "factor_predictability",
    "hungarian_accuracy",
    "knn_probe",
    "linear_probe",
    "mlp_probe",
]

CONTENT_PROBES = ("linear", "mlp", "knn", "cluster")
"""Names of the content probes, in the order they run."""
KNN_METRICS = ("cosine", "euclidean")
"""Distances a kNN probe may use."""
FACTOR_KINDS = ("discrete", "continuous")
"""Kinds of a style factor: class-valued (accuracy) or real-valued (R^2)."""

DEFAULT_C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
DEFAULT_RIDGE_GRID = (1e2, 1e1, 1.0, 1e-1, 1e-2, 1e-3, 1e-4)
DEFAULT_KS = (1, 5, 10, 20, 50)

DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {
    "linear": {"grid": DEFAULT_C_GRID, "max_iter": 500, "tolerance": 1e-5},
    "mlp": {"hidden": None, "epochs": 200, "lr": 3e-4, "patience": 10, "batch_size": 256},
    "knn": {"ks": DEFAULT_KS, "metrics": KNN_METRICS},
    "cluster": {"covariance_type": "full", "max_iter": 200},
    "factor": {
        "grid": DEFAULT_C_GRID,
        "ridge_grid": DEFAULT_RIDGE_GRID,
        "ks": DEFAULT_KS,
        "metrics": KNN_METRICS,
    },
    "augmentation": {"num_views": 1, "max_items": 10000},
}
"""Every probe's settings; :func:`evaluate` accepts per-section overrides (``options``)."""

_BLOCK_ELEMENTS = 1 << 22  # kNN distance block: 16 MB of float32 stays in cache (measured ~1.7x faster)


# --------------------------------------------------------------------------- #
# Results and checks
# --------------------------------------------------------------------------- #


@dataclass
class ProbeResult:
    """Outcome of one supervised probe.

    Attributes:
        accuracy: Test accuracy (fraction in ``[0, 1]``) of the selected setting,
            fitted on the training split only.
        val_accuracy: Validation accuracy of the selected setting (the selection criterion).
        selected: The chosen hyperparameters.
        extra: Diagnostics (validation curve, iterations, timings, ...).
    """

    accuracy: float
    val_accuracy: float
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


def _features(x: Any, name: str) -> Tensor:
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


def _targets(y: Any, n: int, name: str, *, discrete: bool) -> Tensor:
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


def _check_dims(train_x: Tensor, others: Sequence[tuple[Tensor, str]]) -> None:
    for x, name in others:
        if x.shape[1] != train_x.shape[1]:
            raise ValueError(f"{name} has {x.shape[1]} features but train_x has {train_x.shape[1]}")


def _three_splits(
    xs: Sequence[Any], ys: Sequence[Any], *, discrete: bool, target: str = "y"
) -> tuple[list[Tensor], list[Tensor]]:
    """Validate train / val / test features ``(N_split, d)`` and targets ``(N_split,)``."""
    names = ("train", "val", "test")
    feats = [_features(x, f"{name}_x") for x, name in zip(xs, names)]
    _check_dims(feats[0], ((feats[1], "val_x"), (feats[2], "test_x")))
    targets = [
        _targets(y, x.shape[0], f"{name}_{target}", discrete=discrete) for y, x, name in zip(ys, feats, names)
    ]
    return feats, targets


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _positive_grid(values: Any, name: str) -> tuple[float, ...]:
    try:
        grid = tuple(float(v) for v in values)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of positive numbers, got {values!r}") from None
    if not grid or any(not math.isfinite(v) or v <= 0 for v in grid):
        raise ValueError(f"{name} must be a non-empty sequence of positive numbers, got {values!r}")
    return grid


def _knn_settings(ks: Any, metrics: Any) -> tuple[tuple[int, ...], tuple[str, ...]]:
    ks = tuple(ks)
    if not ks:
        raise ValueError("ks must name at least one neighbourhood size, got ()")
    for k in ks:
        _positive_int(k, "every k in ks")
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    if not metrics or any(m not in KNN_METRICS for m in metrics):
        raise ValueError(f"metrics must be a non-empty subset of {KNN_METRICS}, got {metrics!r}")
    return tuple(sorted(set(ks))), tuple(dict.fromkeys(metrics))


class _Standardiser:
    """``(x - mean) / std`` with the training split's statistics (zero spread -> unscaled)."""

    def __init__(self, train_x: Tensor) -> None:
        x = train_x.double()
        self.mean = x.mean(0)
        std = x.std(0, correction=0)
        self.std = torch.where(std > 1e-12 * (1.0 + self.mean.abs()), std, torch.ones_like(std))

    def __call__(self, x: Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
        return ((x.double() - self.mean) / self.std).to(dtype)


def _encode_classes(train_y: Tensor, *others: Tensor) -> tuple[Tensor, list[Tensor]]:
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


def _accuracy(pred: Tensor, codes: Tensor) -> float:
    return float((pred == codes).double().mean())


def _r2(pred: Tensor, y: Tensor) -> float | None:
    """Coefficient of determination on one split; ``None`` where ``y`` does not vary."""
    total = float(((y - y.mean()) ** 2).sum())
    if total <= 1e-12 * max(1.0, float((y**2).sum())):
        return None
    return 1.0 - float(((y - pred) ** 2).sum()) / total


def _better(value: float | None, best: float | None) -> bool:
    return value is not None and (best is None or value > best)


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread, then restore the previous count.

    The probes issue many small or cache-sized operations; splitting each across
    threads saves little, and on a busy machine a thread pool waiting for its
    workers makes a 60-microsecond matrix product take milliseconds (measured: the
    60,000 x 10 content evaluation ran 2x slower on two threads than on one).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# --------------------------------------------------------------------------- #
# Feature extraction
# --------------------------------------------------------------------------- #


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def _float_images(images: Tensor, name: str) -> Tensor:
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    if images.is_floating_point():
        return images.float()
    raise TypeError(f"{name} must be uint8 (0..255) or float in [0, 1], got dtype {images.dtype}")


def _encode_batches(
    model: nn.Module,
    batches: Callable[[torch.device], Any],
    device: torch.device | str | None,
) -> Tensor:
    """Run ``model.encode`` on every batch that ``batches(device)`` yields; ``(N, d)`` on the CPU."""
    encode = getattr(model, "encode", None)
    if not callable(encode):
        raise TypeError(f"model must have an encode(images) method, got {type(model).__name__}")
    device = torch.device(device) if device is not None else _model_device(model)
    was_training = model.training
    model.eval()
    outputs = []
    try:
        with torch.no_grad():
            for images in batches(device):
                out = encode(images)
                if not isinstance(out, Tensor) or out.ndim != 2 or out.shape[0] != images.shape[0]:
                    shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                    raise ValueError(
                        f"model.encode must return (B, d) for B={images.shape[0]} images, got {shape}"
                    )
                outputs.append(out.detach().to("cpu", torch.float32))
    finally:
        model.train(was_training)
    features = torch.cat(outputs) if outputs else torch.empty(0, 0)
    bad = int((~torch.isfinite(features)).any(1).sum())
    if bad:
        raise ValueError(f"model.encode returned non-finite features for {bad} of {features.shape[0]} items")
    return features


def extract_features(
    model: nn.Module, data: Any, *, batch_size: int = 1024, device: torch.device | str | None = None
) -> Tensor:
    """Representations of every image of ``data``.

    The model is put in eval mode (and restored to its previous mode afterwards)
    and called under ``torch.no_grad()`` in chunks of ``batch_size`` on ``device``
    (default: where the model's parameters live).

    Args:
        model: Module with ``encode(images (B, C, H, W) float in [0, 1]) -> (B, d)``.
        data: An object with ``.images`` (``uint8`` ``(N, C, H, W)``, divided by 255,
            or float already in ``[0, 1]``), or such an images tensor itself.
        batch_size: Images per call of ``encode``.
        device: Where to run the model.

    Returns:
        ``(N, d)`` ``float32`` features on the CPU.

    Raises:
        TypeError: if the images are neither ``uint8`` nor float, or the model has no ``encode``.
        ValueError: if ``encode`` returns a wrong shape or non-finite values.
    """
    images = data if isinstance(data, Tensor) else getattr(data, "images", None)
    if not isinstance(images, Tensor) or images.ndim != 4:
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise TypeError(f"data must be an (N, C, H, W) images tensor or have .images, got {got}")
    batch_size = _positive_int(batch_size, "batch_size")
    _float_images(images[:0], "data.images")  # dtype check before any work
    if images.shape[0] == 0:
        raise ValueError("data holds no images")

    def batches(dev: torch.device):
        for start in range(0, images.shape[0], batch_size):
            yield _float_images(images[start : start + batch_size].to(dev), "data.images")

    return _encode_batches(model, batches, device)


# --------------------------------------------------------------------------- #
# Linear probe: L2-penalised multinomial logistic regression
# --------------------------------------------------------------------------- #


def _fit_softmax(
    x1: Tensor, onehot: Tensor, codes: Tensor, C: float, start: Tensor, *, max_iter: int, tolerance: float
) -> tuple[Tensor, int, bool]:
    r"""Minimise ``mean_i CE(W^T x_i, y_i) + ||W_{:d}||^2 / (2 C N)`` with L-BFGS.

    This is scikit-learn's ``LogisticRegression(C)`` objective divided by ``C N``
    (same minimiser); the bias row (last row of ``W``) is not penalised.

    Args:
        x1: ``(N, d + 1)`` float64 standardised features with a trailing column of ones.
        onehot: ``(N, K)`` float64 one-hot classes; ``codes`` the same as ``(N,)`` indices.
        start: ``(d + 1, K)`` warm start.

    Returns:
        ``W`` ``(d + 1, K)``, the number of iterations and whether the gradient tolerance was met.
    """
    n = x1.shape[0]
    lam = 1.0 / (C * n)
    mask = torch.ones_like(start)
    mask[-1] = 0.0

    def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
        w = torch.from_numpy(flat).view_as(start)
        z = x1 @ w
        zmax = z.amax(1, keepdim=True)
        e = torch.exp(z - zmax)
        s = e.sum(1, keepdim=True)
        loss = float((zmax + s.log()).mean() - z.gather(1, codes[:, None]).mean())
        wm = w * mask
        loss += 0.5 * lam * float((wm * wm).sum())
        grad = x1.T @ (e.div_(s).sub_(onehot)) / n + lam * wm
        return loss, grad.numpy().ravel()

    res = minimize(
        objective,
        start.numpy().ravel(),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iter, "gtol": tolerance, "ftol": 64 * np.finfo(float).eps},
    )
    w = torch.from_numpy(np.asarray(res.x, dtype=np.float64)).view_as(start).clone()
    return w, int(res.nit), bool(res.success)


def _linear_probe(
    train_x: Tensor,
    train_codes: Tensor,
    num_classes: int,
    val_x: Tensor,
    val_codes: Tensor,
    test_x: Tensor,
    test_codes: Tensor,
    *,
    grid: tuple[float, ...],
    max_iter: int,
    tolerance: float,
) -> ProbeResult:
    """:func:`linear_probe` on validated tensors with labels already coded ``0..K-1``."""
    start_time = time.perf_counter()
    scale = _Standardiser(train_x)

    def with_bias(x: Tensor) -> Tensor:
        z = scale(x)
        return torch.cat([z, torch.ones(z.shape[0], 1, dtype=z.dtype)], 1)

    x1, v1 = with_bias(train_x), with_bias(val_x)
    if num_classes < 2:
        # One class in training: every probe predicts it; nothing to select.
        val_acc = _accuracy(torch.zeros_like(val_codes), val_codes)
        return ProbeResult(
            _accuracy(torch.zeros_like(test_codes), test_codes),
            val_acc,
            {"C": None},
            {"note": "one class in the training split", "refit": "train only"},
        )
    onehot = torch.nn.functional.one_hot(train_codes, num_classes).double()
    w = torch.zeros(x1.shape[1], num_classes, dtype=torch.float64)
    by_c: dict[float, tuple[float, Tensor, int, bool]] = {}
    # Increasing C: each solution warm-starts the next, less penalised, problem.
    with _one_thread():
        for c in sorted(set(grid)):
            w, iterations, converged = _fit_softmax(
                x1, onehot, train_codes, c, w, max_iter=max_iter, tolerance=tolerance
            )
            by_c[c] = (_accuracy((v1 @ w).argmax(1), val_codes), w, iterations, converged)
    # Highest validation accuracy; ties go to the strongest penalty (smallest C).
    best_c = max(sorted(by_c), key=lambda c: (by_c[c][0], -c))
    val_acc, w, iterations, converged = by_c[best_c]
    test_acc = _accuracy((with_bias(test_x) @ w).argmax(1), test_codes)  # the one look at test
    return ProbeResult(
        test_acc,
        val_acc,
        {"C": best_c},
        {
            "val_accuracy_by_C": {repr(c): v[0] for c, v in by_c.items()},
            "train_accuracy": _accuracy((x1 @ w).argmax(1), train_codes),
            "iterations": iterations,
            "converged": converged,
            "refit": "train only",
            "seconds": time.perf_counter() - start_time,
        },
    )


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
    max_iter: int = 500,
    tolerance: float = 1e-5,
) -> ProbeResult:
    r"""Multinomial logistic regression on standardised features, ``C`` chosen on validation.

    For each ``C`` in ``grid`` (fitted in increasing order, each warm-started
    from the previous solution) it minimises, over ``W`` (``d x K``) and ``b``,

    .. math::
        \frac{1}{N}\sum_i -\log \mathrm{softmax}(W^\top \tilde x_i + b)_{y_i}
        + \frac{1}{2 C N}\lVert W \rVert^2,

    scikit-learn's ``LogisticRegression(C=C)`` objective up to the factor ``C N``,
    with ``\tilde x = (x - \mu_{train}) / \sigma_{train}``, by L-BFGS (float64). The
    ``C`` with the highest validation accuracy is selected (ties: the smallest
    ``C``); its model, fitted on the training split only (no refit on
    train + validation), predicts the test split once.

    Args:
        train_x, val_x, test_x: Features ``(N_split, d)``.
        train_y, val_y, test_y: Integer classes ``(N_split,)``; classes absent
            from training count as errors.
        seed: Accepted for a uniform interface; the fit is deterministic
            (zero initialisation, full-batch L-BFGS).
        grid: Inverse penalty strengths ``C`` to try.
        max_iter: L-BFGS iterations per ``C``.
        tolerance: Stop when every gradient entry is below this.

    Returns:
        :class:`ProbeResult` with ``selected = {"C": ...}``.
    """
    del seed
    (train_x, val_x, test_x), ys = _three_splits(
        (train_x, val_x, test_x), (train_y, val_y, test_y), discrete=True
    )
    classes, (tr, va, te) = _encode_classes(*ys)
    if not (isinstance(tolerance, (int, float)) and tolerance > 0):
        raise ValueError(f"tolerance must be a positive number, got {tolerance!r}")
    return _linear_probe(
        train_x,
        tr,
        len(classes),
        val_x,
        va,
        test_x,
        te,
        grid=_positive_grid(grid, "grid"),
        max_iter=_positive_int(max_iter, "max_iter"),
        tolerance=float(tolerance),
    )


# --------------------------------------------------------------------------- #
# MLP probe
# --------------------------------------------------------------------------- #


class _MLPHead:
    r"""``d -> hidden -> K`` ReLU network trained by Adam, with hand-written gradients.

    Forward: ``h = relu(x W_1 + b_1)``, ``logits = h W_2 + b_2``. For the mean
    cross-entropy over a batch of ``B`` rows, with ``P = softmax(logits) - onehot``:
    ``dW_2 = h^T P / B``, ``db_2 = sum P / B``, ``dH = (P W_2^T) * [h > 0] / B``,
    ``dW_1 = x^T dH``, ``db_1 = sum dH``. All parameters live in one flat buffer so
    Adam is a handful of vector operations per step: eager autograd on a network this
    small spends most of its time in per-operation overhead.

    Initialisation matches ``torch.nn.Linear``: every entry ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``.
    Adam matches ``torch.optim.Adam`` (betas 0.9, 0.999; eps 1e-8; no weight decay).
    """

    beta1, beta2, eps = 0.9, 0.999, 1e-8

    def __init__(
        self, dim: int, hidden: int, num_classes: int, lr: float, generator: torch.Generator
    ) -> None:
        shapes = {"w1": (dim, hidden), "b1": (hidden,), "w2": (hidden, num_classes), "b2": (num_classes,)}
        fan_in = {"w1": dim, "b1": dim, "w2": hidden, "b2": hidden}
        sizes = [math.prod(s) for s in shapes.values()]
        self.params = torch.empty(sum(sizes))
        self.grad = torch.zeros_like(self.params)
        self.m = torch.zeros_like(self.params)
        self.v = torch.zeros_like(self.params)
        self.p: dict[str, Tensor] = {}
        self.g: dict[str, Tensor] = {}
        for (name, shape), p, g in zip(shapes.items(), self.params.split(sizes), self.grad.split(sizes)):
            self.p[name], self.g[name] = p.view(shape), g.view(shape)
        # torch.nn.Linear draws the weight, then the bias, for each layer in turn.
        for name in ("w1", "b1", "w2", "b2"):
            bound = 1.0 / math.sqrt(fan_in[name])
            self.p[name].uniform_(-bound, bound, generator=generator)
        self.lr = lr
        self.steps = 0

    def logits(self, x: Tensor) -> Tensor:
        h = torch.addmm(self.p["b1"], x, self.p["w1"]).clamp_(min=0.0)
        return torch.addmm(self.p["b2"], h, self.p["w2"])

    def step(self, x: Tensor, onehot: Tensor) -> None:
        """One Adam step on the mean cross-entropy of the batch ``x`` ``(B, d)``, ``onehot`` ``(B, K)``."""
        p, g = self.p, self.g
        h = torch.addmm(p["b1"], x, p["w1"]).clamp_(min=0.0)
        d_logits = torch.softmax(torch.addmm(p["b2"], h, p["w2"]), 1).sub_(onehot).div_(x.shape[0])
        torch.mm(h.T, d_logits, out=g["w2"])
        torch.sum(d_logits, 0, out=g["b2"])
        d_h = (d_logits @ p["w2"].T).masked_fill_(h <= 0, 0.0)
        torch.mm(x.T, d_h, out=g["w1"])
        torch.sum(d_h, 0, out=g["b1"])
        self.steps += 1
        self.m.lerp_(self.grad, 1.0 - self.beta1)
        self.v.mul_(self.beta2).addcmul_(self.grad, self.grad, value=1.0 - self.beta2)
        bias1 = 1.0 - self.beta1**self.steps
        bias2 = 1.0 - self.beta2**self.steps
        denom = (self.v.sqrt() / math.sqrt(bias2)).add_(self.eps)
        self.params.addcdiv_(self.m, denom, value=-self.lr / bias1)


def _mlp_probe(
    train_x: Tensor,
    train_codes: Tensor,
    num_classes: int,
    val_x: Tensor,
    val_codes: Tensor,
    test_x: Tensor,
    test_codes: Tensor,
    *,
    hidden: int | None,
    epochs: int,
    lr: float,
    patience: int,
    batch_size: int,
    seed: int,
) -> ProbeResult:
    """:func:`mlp_probe` on validated tensors with labels already coded ``0..K-1``."""
    start_time = time.perf_counter()
    scale = _Standardiser(train_x)
    xs, vs, ts = (scale(x, torch.float32) for x in (train_x, val_x, test_x))
    hidden = xs.shape[1] if hidden is None else hidden
    generator = torch.Generator().manual_seed(seed)
    head = _MLPHead(xs.shape[1], hidden, max(num_classes, 1), lr, generator)
    onehot = torch.nn.functional.one_hot(train_codes, max(num_classes, 1)).float()
    n = xs.shape[0]
    best_val, best_epoch, best_test = -1.0, 0, 0.0
    optimistic, optimistic_epoch = -1.0, 0
    val_curve: list[float] = []
    epoch = 0
    with _one_thread():
        for epoch in range(1, epochs + 1):
            perm = torch.randperm(n, generator=generator)
            xe, ye = xs[perm], onehot[perm]  # one gather per epoch; the batches are views
            for start in range(0, n, batch_size):
                head.step(xe[start : start + batch_size], ye[start : start + batch_size])
            val_acc = _accuracy(head.logits(vs).argmax(1), val_codes)
            # Test accuracy of every epoch feeds only the optimistic (test-selected) number.
            test_acc = _accuracy(head.logits(ts).argmax(1), test_codes)
            val_curve.append(val_acc)
            if test_acc > optimistic:
                optimistic, optimistic_epoch = test_acc, epoch
            if val_acc > best_val:
                best_val, best_epoch, best_test = val_acc, epoch, test_acc
            elif epoch - best_epoch >= patience:
                break
    return ProbeResult(
        best_test,
        best_val,
        {"epoch": best_epoch, "hidden": hidden, "lr": lr, "batch_size": batch_size, "patience": patience},
        {
            "optimistic_test_accuracy": optimistic,
            "optimistic_test_epoch": optimistic_epoch,
            "epochs_run": epoch,
            "val_curve": val_curve,
            "seconds": time.perf_counter() - start_time,
        },
    )


def mlp_probe(
    train_x: Tensor,
    train_y: Tensor,
    val_x: Tensor,
    val_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    hidden: int | None = None,
    epochs: int = 200,
    lr: float = 3e-4,
    patience: int = 10,
    batch_size: int = 256,
    seed: int = 0,
) -> ProbeResult:
    r"""One-hidden-layer ReLU classifier, early-stopped on validation accuracy.

    The reference ``d-d-C`` head: ``logits = W_2 relu(W_1 \tilde x + b_1) + b_2`` on
    standardised features, trained with Adam (``lr``, minibatches of
    ``batch_size``, reshuffled every epoch) on the mean cross-entropy. After
    every epoch the validation accuracy is measured; training stops after
    ``patience`` epochs without a strict improvement (or after ``epochs``). The
    selected epoch is the one with the best validation accuracy (the first, on
    ties), and the reported ``accuracy`` is the test accuracy of the weights at
    that epoch (equivalent to restoring them).

    ``extra["optimistic_test_accuracy"]`` is the best test accuracy over the
    epochs run, i.e. the epoch chosen *on the test set* as the reference code
    does. It is optimistically biased and is reported only for comparison with
    published numbers; no selection here reads it.

    Args:
        train_x, val_x, test_x: Features ``(N_split, d)``.
        train_y, val_y, test_y: Integer classes ``(N_split,)``.
        hidden: Hidden width; ``None`` uses the feature dimension ``d``.
        epochs: Maximum number of passes over the training split.
        lr: Adam learning rate (reference: 3e-4).
        patience: Epochs without validation improvement before stopping.
        batch_size: Training rows per Adam step.
        seed: Seeds the initialisation and the shuffles.

    Returns:
        :class:`ProbeResult` with ``selected["epoch"]`` (1-based) and the settings.
    """
    (train_x, val_x, test_x), ys = _three_splits(
        (train_x, val_x, test_x), (train_y, val_y, test_y), discrete=True
    )
    classes, (tr, va, te) = _encode_classes(*ys)
    if hidden is not None:
        _positive_int(hidden, "hidden")
    if not (isinstance(lr, (int, float)) and not isinstance(lr, bool) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    return _mlp_probe(
        train_x,
        tr,
        len(classes),
        val_x,
        va,
        test_x,
        te,
        hidden=hidden,
        epochs=_positive_int(epochs, "epochs"),
        lr=float(lr),
        patience=_positive_int(patience, "patience"),
        batch_size=_positive_int(batch_size, "batch_size"),
        seed=seed,
    )


# --------------------------------------------------------------------------- #
# k nearest neighbours
# --------------------------------------------------------------------------- #


def _neighbours(train_x: Tensor, query_x: Tensor, k: int, metric: str) -> Tensor:
    """Indices ``(N_query, k)`` of the ``k`` nearest training rows, nearest first.

    ``cosine`` ranks by ``<q, t> / (|q| |t|)`` (a zero vector is similar to nothing);
    ``euclidean`` by ``|t|^2 - 2 <q, t>``, the squared distance less ``|q|^2``.
    """
    if metric == "cosine":
        train = torch.nn.functional.normalize(train_x, dim=1)
        query = torch.nn.functional.normalize(query_x, dim=1)
        offset, alpha, largest = torch.zeros(train.shape[0]), 1.0, True
    else:
        train, query = train_x, query_x
        offset, alpha, largest = (train * train).sum(1), -2.0, False
    out = torch.empty(query.shape[0], k, dtype=torch.int64)
    rows = max(16, _BLOCK_ELEMENTS // train.shape[0])
    with _one_thread():  # blocks are cache-sized; on a busy machine threads cost more than they save
        for start in range(0, query.shape[0], rows):
            scores = torch.addmm(offset, query[start : start + rows], train.T, alpha=alpha)
            out[start : start + rows] = scores.topk(k, dim=1, largest=largest, sorted=True).indices
    return out


class _NeighbourCache:
    """Nearest training rows of the validation and test rows, per metric, computed once.

    Content kNN and every style factor read the same neighbour lists.
    """

    def __init__(self, train_x: Tensor, val_x: Tensor, test_x: Tensor) -> None:
        self.train_x, self.val_x, self.test_x = train_x, val_x, test_x
        self._lists: dict[str, tuple[int, Tensor, Tensor]] = {}

    def get(self, metric: str, k: int) -> tuple[Tensor, Tensor]:
        k = min(k, self.train_x.shape[0])
        cached = self._lists.get(metric)
        if cached is None or cached[0] < k:
            cached = (
                k,
                _neighbours(self.train_x, self.val_x, k, metric),
                _neighbours(self.train_x, self.test_x, k, metric),
            )
            self._lists[metric] = cached
        return cached[1][:, :k], cached[2][:, :k]


def _vote(neighbour_codes: Tensor, k: int, num_classes: int) -> Tensor:
    """Majority class among the first ``k`` neighbours ``(N, >=k)``; ties go to nearer neighbours.

    Neighbour ``r`` (0 = nearest) votes ``1 + (k - r) / (k (k + 1))``; the bonuses sum
    to at most 1/2, so they only break ties between equal counts.
    """
    rank = torch.arange(k, dtype=torch.float64)
    weights = (1.0 + (k - rank) / (k * (k + 1))).expand(neighbour_codes.shape[0], k)
    scores = torch.zeros(neighbour_codes.shape[0], num_classes, dtype=torch.float64)
    return scores.scatter_add_(1, neighbour_codes[:, :k], weights).argmax(1)


def _knn_select(
    cache: _NeighbourCache,
    ks: tuple[int, ...],
    metrics: tuple[str, ...],
    predict: Callable[[Tensor, int], Tensor],
    score_val: Callable[[Tensor], float | None],
    score_test: Callable[[Tensor], float | None],
) -> tuple[float | None, float | None, dict[str, Any], dict[str, Any]]:
    """Choose ``(metric, k)`` by validation score; score the choice on test once.

    Ties go to the earlier metric in ``metrics``, then the smaller ``k``.
    """
    n_train = cache.train_x.shape[0]
    usable = tuple(k for k in ks if k <= n_train) or (n_train,)
    by_setting: dict[str, float | None] = {}
    best: tuple[float | None, str, int] = (None, metrics[0], usable[0])
    for metric in metrics:
        val_nbrs, _ = cache.get(metric, usable[-1])
        for k in usable:
            value = score_val(predict(val_nbrs, k))
            by_setting[f"{metric},k={k}"] = value
            if _better(value, best[0]):
                best = (value, metric, k)
    val_score, metric, k = best
    _, test_nbrs = cache.get(metric, k)
    test_score = score_test(predict(test_nbrs, k))
    extra: dict[str, Any] = {"val_by_setting": by_setting}
    skipped = [k for k in ks if k > n_train]
    if skipped:
        extra["skipped_ks"] = skipped
    return test_score, val_score, {"metric": metric, "k": k}, extra


def _knn_classify(
    cache: _NeighbourCache,
    train_codes: Tensor,
    num_classes: int,
    val_codes: Tensor,
    test_codes: Tensor,
    ks: tuple[int, ...],
    metrics: tuple[str, ...],
) -> ProbeResult:
    start_time = time.perf_counter()

    def predict(nbrs: Tensor, k: int) -> Tensor:
        return _vote(train_codes[nbrs], k, max(num_classes, 1))

    test_acc, val_acc, selected, extra = _knn_select(
        cache,
        ks,
        metrics,
        predict,
        lambda pred: _accuracy(pred, val_codes),
        lambda pred: _accuracy(pred, test_codes),
    )
    extra["seconds"] = time.perf_counter() - start_time
    return ProbeResult(float(test_acc), float(val_acc), selected, extra)


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
    """k-nearest-neighbour classification, ``k`` and the metric chosen on validation.

    Each validation or test row takes the majority class of its ``k`` nearest
    training rows (ties: the class whose neighbours are nearer) under cosine
    similarity or Euclidean distance of the raw features. Every ``(metric, k)``
    is scored on validation (ties: earlier metric, then smaller ``k``); the best
    is scored once on test. Neighbours are found by exact, chunked top-k on
    dense distance blocks. ``k`` larger than the training split is skipped.

    Args:
        train_x, val_x, test_x: Features ``(N_split, d)``.
        train_y, val_y, test_y: Integer classes ``(N_split,)``.
        ks: Neighbourhood sizes to try.
        metrics: Subset of ``("cosine", "euclidean")``.

    Returns:
        :class:`ProbeResult` with ``selected = {"metric": ..., "k": ...}``.
    """
    (train_x, val_x, test_x), ys = _three_splits(
        (train_x, val_x, test_x), (train_y, val_y, test_y), discrete=True
    )
    classes, (tr, va, te) = _encode_classes(*ys)
    ks, metrics = _knn_settings(ks, metrics)
    return _knn_classify(_NeighbourCache(train_x, val_x, test_x), tr, len(classes), va, te, ks, metrics)


# --------------------------------------------------------------------------- #
# Clustering
# --------------------------------------------------------------------------- #


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
    """Gaussian-mixture clustering scored against the classes.

    Fits ``sklearn.mixture.GaussianMixture`` (``covariance_type`` ``"full"`` by
    default: clusters of a learned representation are rarely axis-aligned;
    k-means initialisation, one initialisation, seeded) with ``num_clusters``
    components on standardised ``features``, then assigns each item of the
    evaluation set (``eval_features``, default ``features`` itself) to its most
    probable component. Labels take no part in the fit; they only score it.

    Args:
        features: Fitting features ``(N, d)`` (the training split in :func:`evaluate`).
        labels: Classes ``(N,)`` of ``features``; give the default number of clusters
            and the scores when no evaluation set is given.
        num_clusters: Number of components; ``None`` counts the classes in ``labels``.
        seed: Seeds the mixture's initialisation.
        eval_features, eval_labels: The set to score (the test split in :func:`evaluate`).
        covariance_type: ``"full"``, ``"diag"``, ``"tied"`` or ``"spherical"``.
        max_iter: EM iterations.

    Returns:
        ``{"accuracy"`` (Hungarian-matched, :func:`hungarian_accuracy`), ``"nmi"``,
        ``"ari"``, ``"selected": {"num_clusters", "covariance_type"}``, ``"converged"``}.
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
    from sklearn.mixture import GaussianMixture

    start_time = time.perf_counter()
    features = _features(features, "features")
    labels = _targets(labels, features.shape[0], "labels", discrete=True)
    if (eval_features is None) != (eval_labels is None):
        raise ValueError("give both eval_features and eval_labels, or neither")
    if eval_features is None:
        eval_x, eval_y = features, labels
    else:
        eval_x = _features(eval_features, "eval_features")
        _check_dims(features, ((eval_x, "eval_features"),))
        eval_y = _targets(eval_labels, eval_x.shape[0], "eval_labels", discrete=True)
    if num_clusters is None:
        num_clusters = len(torch.unique(labels))
    num_clusters = _positive_int(num_clusters, "num_clusters")
    if num_clusters > features.shape[0]:
        raise ValueError(f"num_clusters={num_clusters} exceeds the {features.shape[0]} items to fit on")
    covariance_types = ("full", "diag", "tied", "spherical")
    if covariance_type not in covariance_types:
        raise ValueError(f"covariance_type must be one of {covariance_types}, got {covariance_type!r}")
    scale = _Standardiser(features)
    mixture = GaussianMixture(
        n_components=num_clusters,
        covariance_type=covariance_type,
        max_iter=_positive_int(max_iter, "max_iter"),
        n_init=1,
        random_state=seed,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # non-convergence is reported in the result instead
        mixture.fit(scale(features).numpy())
    pred = mixture.predict(scale(eval_x).numpy())
    truth = eval_y.numpy()
    return {
        "accuracy": hungarian_accuracy(pred, truth),
        "nmi": float(normalized_mutual_info_score(truth, pred)),
        "ari": float(adjusted_rand_score(truth, pred)),
        "selected": {"num_clusters": num_clusters, "covariance_type": covariance_type},
        "converged": bool(mixture.converged_),
        "seconds": time.perf_counter() - start_time,
    }


# --------------------------------------------------------------------------- #
# Factor predictability
# --------------------------------------------------------------------------- #


def _ridge_select(
    train_z: Tensor,
    train_y: Tensor,
    val_z: Tensor,
    val_y: Tensor,
    test_z: Tensor,
    test_y: Tensor,
    grid: tuple[float, ...],
) -> tuple[float | None, float | None, dict[str, Any], dict[str, Any]]:
    r"""Ridge regression on standardised features, ``alpha`` chosen by validation R^2.

    ``w = (Z^T Z / N + alpha I)^{-1} Z^T (y - \bar y) / N`` with centred ``Z``.
    Ties go to the larger ``alpha``.
    """
    n = train_z.shape[0]
    z_mean, y_mean = train_z.mean(0), train_y.mean()
    zc = train_z - z_mean
    gram, cross = zc.T @ zc / n, zc.T @ (train_y - y_mean) / n
    eye = torch.eye(gram.shape[0], dtype=gram.dtype)
    by_alpha: dict[str, float | None] = {}
    val_score: float | None = None
    alpha, w = None, None
    for candidate in sorted(set(grid), reverse=True):
        weights = torch.linalg.solve(gram + candidate * eye, cross)
        value = _r2((val_z - z_mean) @ weights + y_mean, val_y)
        by_alpha[repr(candidate)] = value
        if w is None or _better(value, val_score):
            val_score, alpha, w = value, candidate, weights
    test_score = _r2((test_z - z_mean) @ w + y_mean, test_y)
    return test_score, val_score, {"alpha": alpha}, {"val_by_alpha": by_alpha}


def _factor_predictability(
    train_x: Tensor,
    train_f: Tensor,
    val_f: Tensor,
    test_f: Tensor,
    *,
    kind: str,
    scaled: tuple[Tensor, Tensor, Tensor],
    cache: _NeighbourCache,
    options: Mapping[str, Any],
) -> dict[str, Any]:
    """:func:`factor_predictability` given standardised features and shared neighbour lists."""
    ks, metrics = _knn_settings(options["ks"], options["metrics"])
    if kind == "discrete":
        classes, (tr, va, te) = _encode_classes(train_f, val_f, test_f)
        linear = _linear_probe(
            train_x,
            tr,
            len(classes),
            cache.val_x,
            va,
            cache.test_x,
            te,
            grid=_positive_grid(options["grid"], "factor grid"),
            max_iter=DEFAULT_OPTIONS["linear"]["max_iter"],
            tolerance=DEFAULT_OPTIONS["linear"]["tolerance"],
        )
        knn = _knn_classify(cache, tr, len(classes), va, te, ks, metrics)
        return {
            "linear": linear.accuracy,
            "knn": knn.accuracy,
            "metric": "accuracy",
            "val": {"linear": linear.val_accuracy, "knn": knn.val_accuracy},
            "selected": {"linear": linear.selected, "knn": knn.selected},
        }
    lin_test, lin_val, lin_sel, _ = _ridge_select(
        scaled[0],
        train_f,
        scaled[1],
        val_f,
        scaled[2],
        test_f,
        _positive_grid(options["ridge_grid"], "ridge_grid"),
    )

    def predict(nbrs: Tensor, k: int) -> Tensor:
        return train_f[nbrs[:, :k]].mean(1)

    knn_test, knn_val, knn_sel, _ = _knn_select(
        cache, ks, metrics, predict, lambda p: _r2(p, val_f), lambda p: _r2(p, test_f)
    )
    return {
        "linear": lin_test,
        "knn": knn_test,
        "metric": "r2",
        "val": {"linear": lin_val, "knn": knn_val},
        "selected": {"linear": lin_sel, "knn": knn_sel},
    }


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
    grid: Sequence[float] = DEFAULT_C_GRID,
    ridge_grid: Sequence[float] = DEFAULT_RIDGE_GRID,
    ks: Sequence[int] = DEFAULT_KS,
    metrics: Sequence[str] = KNN_METRICS,
) -> dict[str, Any]:
    r"""How well one factor can be read from the features, linearly and non-linearly.

    * ``kind="discrete"``: the linear reader is :func:`linear_probe` (``C`` from
      ``grid``) and the non-linear one :func:`knn_probe`; scores are test accuracies.
    * ``kind="continuous"``: the linear reader is ridge regression on standardised
      features, ``min_w (1/N) sum_i (y_i - w^T \tilde x_i - b)^2 + alpha |w|^2`` with
      ``alpha`` from ``ridge_grid`` (ties: larger ``alpha``); the non-linear one
      predicts the mean target of the ``k`` nearest training rows. Scores are test
      ``R^2 = 1 - sum (y - \hat y)^2 / sum (y - \bar y)^2`` (``\bar y`` the test mean;
      0 for predicting the mean, negative when worse; ``None`` when the test
      targets do not vary).

    Every hyperparameter is chosen on the validation split; test is scored once.

    Args:
        train_x, val_x, test_x: Features ``(N_split, d)``.
        train_f, val_f, test_f: Factor values ``(N_split,)`` (integers for discrete).
        kind: ``"discrete"`` or ``"continuous"``.
        seed: Accepted for a uniform interface; every reader here is deterministic.
        grid, ridge_grid, ks, metrics: Candidate hyperparameters.

    Returns:
        ``{"linear": float, "knn": float, "metric": "accuracy" | "r2",
        "val": {"linear", "knn"}, "selected": {"linear": {...}, "knn": {...}}}``.
    """
    del seed
    if kind not in FACTOR_KINDS:
        raise ValueError(f"kind must be one of {FACTOR_KINDS}, got {kind!r}")
    (train_x, val_x, test_x), fs = _three_splits(
        (train_x, val_x, test_x), (train_f, val_f, test_f), discrete=kind == "discrete", target="f"
    )
    scale = _Standardiser(train_x)
    return _factor_predictability(
        train_x,
        *fs,
        kind=kind,
        scaled=(scale(train_x), scale(val_x), scale(test_x)),
        cache=_NeighbourCache(train_x, val_x, test_x),
        options={"grid": grid, "ridge_grid": ridge_grid, "ks": ks, "metrics": metrics},
    )


# --------------------------------------------------------------------------- #
# Options and protocol
# --------------------------------------------------------------------------- #


def _resolve_options(options: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """:data:`DEFAULT_OPTIONS` updated by ``options``; unknown sections or keys raise."""
    resolved = {section: dict(values) for section, values in DEFAULT_OPTIONS.items()}
    if options is None:
        return resolved
    if not isinstance(options, Mapping):
        raise TypeError(f"options must be a mapping of section -> settings, got {type(options).__name__}")
    for section, values in options.items():
        if section not in resolved:
            raise ValueError(f"unknown evaluation options section {section!r}; accepted: {sorted(resolved)}")
        if not isinstance(values, Mapping):
            raise TypeError(f"options[{section!r}] must be a mapping, got {type(values).__name__}")
        for key, value in values.items():
            if key not in resolved[section]:
                raise ValueError(f"unknown option {section}.{key}; accepted: {sorted(resolved[section])}")
            resolved[section][key] = value
    return resolved


def _check_probes(probes: Any) -> tuple[str, ...]:
    probes = (probes,) if isinstance(probes, str) else tuple(probes)
    unknown = [p for p in probes if p not in CONTENT_PROBES]
    if unknown:
        raise ValueError(f"unknown content probes {unknown}; accepted: {CONTENT_PROBES}")
    return probes


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value


def evaluation_protocol(
    *,
    seed: int = 0,
    probes: Sequence[str] = CONTENT_PROBES,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    augmentation: bool = False,
) -> dict[str, Any]:
    """Every setting that produced the evaluation numbers, for ``metrics.json["protocol"]``.

    Args:
        seed: The evaluation seed.
        probes: Content probes that ran.
        options: The overrides given to :func:`evaluate`.
        augmentation: Whether augmentation-style probes ran.

    Returns:
        A JSON-ready dict: the resolved options of every probe plus the fixed rules
        (features, standardisation, selection split, tie-breaking, refit policy).
    """
    resolved = _resolve_options(options)
    protocol: dict[str, Any] = {
        "seed": seed,
        "features": "model.encode of un-augmented images, eval mode, no grad",
        "selection": "validation split carved from the training items; test scored once per probe",
        "refit": "train only (no refit on train + validation)",
        "standardisation": "train mean and std (zero-spread dimensions unscaled); all probes but kNN",
        "content_probes": list(_check_probes(probes)),
        "linear": {
            **resolved["linear"],
            "model": "multinomial logistic regression, L2 on weights (not bias), sklearn C convention",
            "solver": "scipy L-BFGS-B, float64, warm-started along increasing C",
            "ties": "smallest C",
        },
        "mlp": {
            **resolved["mlp"],
            "architecture": "d-hidden-C, ReLU; hidden=None means d",
            "optimiser": "Adam(betas=(0.9, 0.999), eps=1e-8), mean cross-entropy",
            "early_stopping": "patience on validation accuracy; test accuracy of the best validation epoch",
            "optimistic_test_accuracy": "best test accuracy over epochs, i.e. selected on test as the "
            "reference code does (optimistic)",
        },
        "knn": {**resolved["knn"], "features": "raw", "vote": "majority, ties to nearer neighbours"},
        "cluster": {
            **resolved["cluster"],
            "model": "sklearn GaussianMixture, k-means init, n_init=1",
            "num_clusters": "number of classes",
            "fit_on": "train",
            "evaluated_on": "test",
            "accuracy": "Hungarian-matched",
        },
        "style": {
            **resolved["factor"],
            "discrete": "accuracy: logistic regression (C from grid) and kNN vote",
            "continuous": "R^2: ridge regression (alpha from ridge_grid, ties larger) and kNN mean",
            "means": "mean_linear/mean_knn average every factor's score (accuracy or R^2, 1 = perfect); "
            "mean_by_metric averages accuracies and R^2 separately",
        },
    }
    if augmentation:
        protocol["augmentation"] = {
            **resolved["augmentation"],
            "targets": "every non-constant scalar entry of the augmenter's parameters of each view",
            "kinds": "bool and integer entries discrete, float entries continuous",
            "split": "each split's items augmented with its own seeded generator; "
            "a single data set is split 60/20/20 by items",
        }
    return _jsonable(protocol)


# --------------------------------------------------------------------------- #
# Whole-model evaluation
# --------------------------------------------------------------------------- #


@dataclass
class _SplitFeatures:
    """Features and labels of train / val / test, extracted once."""

    train_x: Tensor
    val_x: Tensor
    test_x: Tensor
    train_y: Tensor
    val_y: Tensor
    test_y: Tensor
    num_classes: int | None = None
    _cache: _NeighbourCache | None = None
    _scaled: tuple[Tensor, Tensor, Tensor] | None = None

    @property
    def neighbours(self) -> _NeighbourCache:
        if self._cache is None:
            self._cache = _NeighbourCache(self.train_x, self.val_x, self.test_x)
        return self._cache

    @property
    def scaled(self) -> tuple[Tensor, Tensor, Tensor]:
        if self._scaled is None:
            scale = _Standardiser(self.train_x)
            self._scaled = (scale(self.train_x), scale(self.val_x), scale(self.test_x))
        return self._scaled


def _splits_of(splits: Any) -> tuple[Any, Any, Any]:
    parts = tuple(getattr(splits, name, None) for name in ("train", "val", "test"))
    for name, part in zip(("train", "val", "test"), parts):
        if part is None or not hasattr(part, "images"):
            raise TypeError(f"splits must have .train, .val and .test with .images; .{name} is {part!r}")
        if len(part.images) == 0:
            hint = " (selection needs a validation split: use val_fraction > 0)" if name == "val" else ""
            raise ValueError(f"the {name} split is empty{hint}")
    return parts


def _extract_splits(
    model: nn.Module, splits: Any, *, batch_size: int, device: torch.device | str | None
) -> _SplitFeatures:
    train, val, test = _splits_of(splits)
    xs = [extract_features(model, part, batch_size=batch_size, device=device) for part in (train, val, test)]
    ys = [
        _targets(part.labels, x.shape[0], f"{name}.labels", discrete=True)
        for part, x, name in zip((train, val, test), xs, ("train", "val", "test"))
    ]
    num_classes = getattr(train, "num_classes", None)
    return _SplitFeatures(*xs, *ys, num_classes=num_classes if isinstance(num_classes, int) else None)


def _content(
    feats: _SplitFeatures, probes: tuple[str, ...], seed: int, opts: dict[str, dict[str, Any]]
) -> dict:
    classes, (tr, va, te) = _encode_classes(feats.train_y, feats.val_y, feats.test_y)
    args = (feats.train_x, tr, len(classes), feats.val_x, va, feats.test_x, te)
    results: dict[str, Any] = {}
    for probe in probes:
        if probe == "linear":
            o = opts["linear"]
            results[probe] = _linear_probe(
                *args,
                grid=_positive_grid(o["grid"], "linear.grid"),
                max_iter=_positive_int(o["max_iter"], "linear.max_iter"),
                tolerance=float(o["tolerance"]),
            ).to_dict()
        elif probe == "mlp":
            o = opts["mlp"]
            hidden = o["hidden"] if o["hidden"] is None else _positive_int(o["hidden"], "mlp.hidden")
            results[probe] = _mlp_probe(
                *args,
                hidden=hidden,
                epochs=_positive_int(o["epochs"], "mlp.epochs"),
                lr=float(o["lr"]),
                patience=_positive_int(o["patience"], "mlp.patience"),
                batch_size=_positive_int(o["batch_size"], "mlp.batch_size"),
                seed=seed,
            ).to_dict()
        elif probe == "knn":
            ks, metrics = _knn_settings(opts["knn"]["ks"], opts["knn"]["metrics"])
            results[probe] = _knn_classify(feats.neighbours, tr, len(classes), va, te, ks, metrics).to_dict()
        else:
            num_clusters = feats.num_classes or len(torch.unique(torch.cat([feats.train_y, feats.val_y])))
            results[probe] = cluster_evaluation(
                feats.train_x,
                feats.train_y,
                num_clusters=min(num_clusters, feats.train_x.shape[0]),
                seed=seed,
                eval_features=feats.test_x,
                eval_labels=feats.test_y,
                covariance_type=opts["cluster"]["covariance_type"],
                max_iter=opts["cluster"]["max_iter"],
            )
    return results


def evaluate_content(
    model: nn.Module,
    splits: Any,
    *,
    seed: int = 0,
    probes: Sequence[str] = CONTENT_PROBES,
    device: torch.device | str | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    batch_size: int = 1024,
) -> dict[str, Any]:
    """Content probes on the model's features of un-augmented images.

    Args:
        model: Module with ``encode(images) -> (B, d)``.
        splits: Object with ``.train``, ``.val`` and ``.test``, each with ``.images``
            and ``.labels`` (and optionally ``.num_classes``).
        seed: Seeds the MLP probe and the mixture initialisation.
        probes: Subset of ``("linear", "mlp", "knn", "cluster")``.
        device: Where to run the model (default: its parameters' device).
        options: Per-probe overrides of :data:`DEFAULT_OPTIONS`, e.g. ``{"mlp": {"epochs": 20}}``.
        batch_size: Images per ``encode`` call.

    Returns:
        ``{probe: {"accuracy", "val_accuracy", "selected", ...}}`` for the
        supervised probes and ``{"accuracy", "nmi", "ari", "selected", ...}`` for
        ``"cluster"`` (fitted on train, scored on test); accuracies are fractions.
    """
    probes = _check_probes(probes)
    opts = _resolve_options(options)
    feats = _extract_splits(model, splits, batch_size=batch_size, device=device)
    return _content(feats, probes, seed, opts)


def _factor_kind(part: Any, name: str, values: Tensor) -> str:
    kind = getattr(part, "factor_kinds", {}).get(name)
    if kind is None:
        kind = "continuous" if values.is_floating_point() else "discrete"
    if kind not in FACTOR_KINDS:
        raise ValueError(f"factor kind of {name!r} must be one of {FACTOR_KINDS}, got {kind!r}")
    return kind


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(sum(kept) / len(kept)) if kept else None


def _summarise(factors: dict[str, dict[str, Any]], skipped: dict[str, str]) -> dict[str, Any]:
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


def _style(
    feats: _SplitFeatures,
    targets: dict[str, tuple[str, Tensor, Tensor, Tensor]],
    opts: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Predictability of every ``name -> (kind, train, val, test)`` target from ``feats``."""
    factors: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for name, (kind, train_f, val_f, test_f) in targets.items():
        if len(torch.unique(train_f)) < 2:
            skipped[name] = "constant on the training split"
            continue
        result = _factor_predictability(
            feats.train_x,
            train_f,
            val_f,
            test_f,
            kind=kind,
            scaled=feats.scaled,
            cache=feats.neighbours,
            options=opts["factor"],
        )
        factors[name] = {"kind": kind, **result}
    return _summarise(factors, skipped)


def _factor_targets(splits: Any) -> tuple[dict[str, tuple[str, Tensor, Tensor, Tensor]], dict[str, str]]:
    train, val, test = _splits_of(splits)
    targets: dict[str, tuple[str, Tensor, Tensor, Tensor]] = {}
    missing: dict[str, str] = {}
    for name, values in (getattr(train, "factors", None) or {}).items():
        kind = _factor_kind(train, name, values)
        others = [getattr(part, "factors", {}).get(name) for part in (val, test)]
        if any(o is None for o in others):
            missing[name] = "missing from the validation or test split"
            continue
        discrete = kind == "discrete"
        targets[name] = (
            kind,
            *(
                _targets(v, len(part.images), f"{split}.factors[{name!r}]", discrete=discrete)
                for v, part, split in zip((values, *others), (train, val, test), ("train", "val", "test"))
            ),
        )
    return targets, missing


def evaluate_style(
    model: nn.Module,
    splits: Any,
    *,
    seed: int = 0,
    device: torch.device | str | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    batch_size: int = 1024,
) -> dict[str, Any] | None:
    """Predictability of the data set's named style factors from the features.

    Args:
        model: Module with ``encode(images) -> (B, d)``.
        splits: ``.train/.val/.test`` with ``.images`` and ``.factors`` (name ->
            ``(N,)``), optionally ``.factor_kinds`` (otherwise float factors are
            continuous, integer ones discrete).
        seed: Evaluation seed (every reader here is deterministic).
        device: Where to run the model.
        options: Overrides of :data:`DEFAULT_OPTIONS` (section ``"factor"``).
        batch_size: Images per ``encode`` call.

    Returns:
        ``None`` when the training split has no factors; otherwise
        ``{"factors": {name: {"kind", "linear", "knn", "metric", "val", "selected"}},
        "mean_linear", "mean_knn", "mean_by_metric", "skipped"}``. ``mean_linear``
        and ``mean_knn`` average every factor's test score (accuracy for discrete,
        R^2 for continuous factors: both are 1 for a perfectly readable factor, but
        chance is ``~1/classes`` for one and 0 for the other); ``mean_by_metric``
        gives the two averages separately, ``{"accuracy": {...}, "r2": {...}}``.
        Factors constant on the training split are listed in ``skipped``.
    """
    del seed
    opts = _resolve_options(options)
    targets, missing = _factor_targets(splits)
    if not targets and not missing:
        return None
    feats = _extract_splits(model, splits, batch_size=batch_size, device=device)
    result = _style(feats, targets, opts)
    result["skipped"].update(missing)
    return result


def _augmentation_parts(data: Any, max_items: int | None, seed: int) -> list[tuple[str, Tensor]]:
    """``[(split, images)]`` for train / val / test, each capped at ``max_items`` (seeded)."""
    generator = torch.Generator().manual_seed(seed)
    if all(hasattr(data, name) for name in ("train", "val", "test")):
        parts = [(name, getattr(data, name).images) for name in ("train", "val", "test")]
    else:
        images = data if isinstance(data, Tensor) else getattr(data, "images", None)
        if not isinstance(images, Tensor) or images.ndim != 4:
            raise TypeError(
                f"data must be splits (.train/.val/.test) or have .images, got {type(data).__name__}"
            )
        order = torch.randperm(images.shape[0], generator=generator)
        n_train, n_val = int(0.6 * len(order)), int(0.2 * len(order))
        parts = [
            ("train", images[order[:n_train]]),
            ("val", images[order[n_train : n_train + n_val]]),
            ("test", images[order[n_train + n_val :]]),
        ]
    capped = []
    for name, images in parts:
        if max_items is not None and images.shape[0] > max_items:
            images = images[torch.randperm(images.shape[0], generator=generator)[:max_items].sort().values]
        if images.shape[0] == 0:
            raise ValueError(f"the {name} split for augmentation style is empty")
        capped.append((name, images))
    return capped


def _augmented_features(
    model: nn.Module,
    images: Tensor,
    augmenter: Callable[..., Any],
    *,
    num_views: int,
    generator: torch.Generator,
    batch_size: int,
    device: torch.device | str | None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Features ``(N J, d)`` of ``J`` augmented views per image and their parameters ``(N J, ...)``."""
    params: dict[str, list[Tensor]] = {}
    per_call = max(1, batch_size // num_views)

    def batches(dev: torch.device):
        for start in range(0, images.shape[0], per_call):
            chunk = _float_images(images[start : start + per_call].to(dev), "augmentation images")
            out = augmenter(chunk, num_views, generator, return_params=True)
            if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], Mapping)):
                raise TypeError("augmenter(..., return_params=True) must return (views, params dict)")
            views, batch_params = out
            if views.ndim != 5 or views.shape[:2] != (chunk.shape[0], num_views):
                raise ValueError(
                    f"augmenter must return views (B, J, C, H, W) with B={chunk.shape[0]}, J={num_views}; "
                    f"got {tuple(views.shape)}"
                )
            for key, value in batch_params.items():
                value = torch.as_tensor(value)
                if value.shape[:2] != (chunk.shape[0], num_views):
                    raise ValueError(
                        f"augmentation parameter {key!r} must be (B, J, ...), got {tuple(value.shape)}"
                    )
                params.setdefault(key, []).append(value.detach().cpu().flatten(0, 1))
            yield views.flatten(0, 1)

    features = _encode_batches(model, batches, device)
    return features, {key: torch.cat(chunks) for key, chunks in params.items()}


def _scalar_columns(params: dict[str, Tensor]) -> dict[str, tuple[str, Tensor]]:
    """Every parameter entry as its own ``(kind, (M,) values)`` column, named ``key`` or ``key[i,j]``."""
    columns: dict[str, tuple[str, Tensor]] = {}
    for key, value in params.items():
        kind = "continuous" if value.is_floating_point() else "discrete"
        flat = value.reshape(value.shape[0], -1)
        trailing = tuple(value.shape[1:])
        for j in range(flat.shape[1]):
            name = key if not trailing else f"{key}[{','.join(map(str, np.unravel_index(j, trailing)))}]"
            columns[name] = (kind, flat[:, j])
    return columns


def evaluate_augmentation_style(
    model: nn.Module,
    data: Any,
    augmenter: Callable[..., Any],
    *,
    num_views: int = 1,
    seed: int = 0,
    device: torch.device | str | None = None,
    max_items: int | None = 10000,
    batch_size: int = 1024,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """How well the augmentation parameters of a view can be read from its representation.

    Each image is augmented ``num_views`` times by
    ``augmenter(images (B, C, H, W), num_views, generator, return_params=True)``,
    which returns views ``(B, J, C, H, W)`` and parameters ``{key: (B, J, ...)}``.
    Every view is encoded and every scalar entry of every parameter becomes one
    target (``key`` or ``key[i,j]``; bool and integer entries discrete, floats
    continuous). Each target gets :func:`factor_predictability`'s linear and kNN
    readers: fitted on the training items' views, selected on validation,
    scored on test. An invariant representation scores at chance (accuracy of
    the majority class, R^2 near 0); a representation that keeps style scores high.

    Args:
        model: Module with ``encode(images) -> (B, d)``.
        data: Splits (``.train/.val/.test`` with ``.images``), or one data set
            (``.images`` or an images tensor) split 60/20/20 by items (seeded).
        augmenter: The view generator, e.g. a :class:`pssl.augment.ViewAugmenter`.
        num_views: Views per image ``J``.
        seed: Seeds the split, the item caps and the augmentation draws.
        device: Where to run the model and the augmenter.
        max_items: Cap on images per split (a seeded random subset); ``None`` uses all.
        batch_size: Views per ``encode`` call.
        options: Overrides of :data:`DEFAULT_OPTIONS` (section ``"factor"``).

    Returns:
        Same layout as :func:`evaluate_style` (``"factors"`` holds one entry per
        parameter target; targets constant on the training views are ``skipped``),
        plus ``"num_views"`` and ``"items"`` (images used per split).
    """
    num_views = _positive_int(num_views, "num_views")
    if max_items is not None:
        max_items = _positive_int(max_items, "max_items")
    if not callable(augmenter):
        raise TypeError(f"augmenter must be callable, got {type(augmenter).__name__}")
    opts = _resolve_options(options)
    parts = _augmentation_parts(data, max_items, seed)
    xs, columns = [], []
    for offset, (_, images) in enumerate(parts):
        generator = torch.Generator().manual_seed(seed * 3 + offset)  # one stream per split
        x, params = _augmented_features(
            model,
            images,
            augmenter,
            num_views=num_views,
            generator=generator,
            batch_size=batch_size,
            device=device,
        )
        xs.append(x)
        columns.append(_scalar_columns(params))
    dummy = [torch.zeros(x.shape[0], dtype=torch.int64) for x in xs]
    feats = _SplitFeatures(*xs, *dummy)
    targets: dict[str, tuple[str, Tensor, Tensor, Tensor]] = {}
    for name, (kind, train_values) in columns[0].items():
        discrete = kind == "discrete"
        values = [
            _targets(train_values, xs[0].shape[0], name, discrete=discrete),
            *(
                _targets(cols[name][1], x.shape[0], name, discrete=discrete)
                for cols, x in zip(columns[1:], xs[1:])
            ),
        ]
        targets[name] = (kind, *values)
    result = _style(feats, targets, opts)
    result["num_views"] = num_views
    result["items"] = {name: int(images.shape[0]) for name, images in parts}
    return result


def evaluate(
    model: nn.Module,
    splits: Any,
    *,
    seed: int = 0,
    device: torch.device | str | None = None,
    augmenter: Callable[..., Any] | None = None,
    probes: Sequence[str] = CONTENT_PROBES,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    batch_size: int = 1024,
) -> dict[str, Any]:
    """Every evaluation of a trained model, from one extraction of its features.

    Args:
        model: Module with ``encode(images) -> (B, d)``.
        splits: ``.train/.val/.test`` with ``.images``, ``.labels`` and optionally ``.factors``.
        seed: Evaluation seed.
        device: Where to run the model.
        augmenter: When given, also runs :func:`evaluate_augmentation_style`
            (``options["augmentation"]`` sets ``num_views`` and ``max_items``).
        probes: Content probes to run.
        options: Overrides of :data:`DEFAULT_OPTIONS`, section by section.
        batch_size: Images per ``encode`` call.

    Returns:
        ``{"content": ..., "style": ... (when the data has factors), "augmentation": ...
        (when an augmenter is given), "protocol": ...}``; the protocol also records
        the split sizes, the feature dimension and the seconds each part took.
    """
    probes = _check_probes(probes)
    opts = _resolve_options(options)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    feats = _extract_splits(model, splits, batch_size=batch_size, device=device)
    timings["features"] = time.perf_counter() - start
    start = time.perf_counter()
    result: dict[str, Any] = {"content": _content(feats, probes, seed, opts)}
    timings["content"] = time.perf_counter() - start
    targets, missing = _factor_targets(splits)
    if targets or missing:
        start = time.perf_counter()
        result["style"] = _style(feats, targets, opts)
        result["style"]["skipped"].update(missing)
        timings["style"] = time.perf_counter() - start
    if augmenter is not None:
        start = time.perf_counter()
        result["augmentation"] = evaluate_augmentation_style(
            model,
            splits,
            augmenter,
            num_views=opts["augmentation"]["num_views"],
            seed=seed,
            device=device,
            max_items=opts["augmentation"]["max_items"],
            batch_size=batch_size,
            options=options,
        )
        timings["augmentation"] = time.perf_counter() - start
    protocol = evaluation_protocol(
        seed=seed, probes=probes, options=options, augmentation=augmenter is not None
    )
    protocol["sizes"] = {"train": len(feats.train_x), "val": len(feats.val_x), "test": len(feats.test_x)}
    protocol["feature_dim"] = int(feats.train_x.shape[1])
    protocol["seconds"] = timings
    result["protocol"] = protocol
    return result
