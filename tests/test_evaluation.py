"""Tests for pssl.evaluation: every probe against known answers and against scikit-learn.

Statistical checks state their tolerance; every random draw is seeded. Chance
tolerances are about five standard errors of an accuracy on the test split
(``sqrt(p (1 - p) / n)``, ~0.01 for 2000 items) plus room for selection noise.
"""

from __future__ import annotations

import json
import math
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from pssl.evaluation import (
    CONTENT_PROBES,
    PROBES,
    ClusterProbe,
    KNNProbe,
    LinearProbe,
    MLPProbe,
    Probe,
    ProbeResult,
    RidgeProbe,
    build_probe,
    cluster_evaluation,
    evaluate,
    evaluate_augmentation_style,
    evaluate_content,
    evaluate_style,
    evaluation_protocol,
    extract_features,
    factor_predictability,
    hungarian_accuracy,
    knn_probe,
    linear_probe,
    mlp_probe,
    ridge_probe,
    run_probe,
)

SIZES = (2000, 1000, 2000)  # train, val, test


def split3(x: Tensor, y: Tensor, sizes: tuple[int, int, int] = SIZES) -> tuple[Tensor, ...]:
    """``(train_x, train_y, val_x, val_y, test_x, test_y)`` from consecutive blocks."""
    a, b, _ = sizes
    return x[:a], y[:a], x[a : a + b], y[a : a + b], x[a + b :], y[a + b :]


def blobs(seed: int, *, classes: int = 3, dim: int = 5, separation: float = 10.0) -> tuple[Tensor, ...]:
    """Well-separated Gaussian classes (unit noise, means ``separation`` apart in scale)."""
    g = torch.Generator().manual_seed(seed)
    n = sum(SIZES)
    means = torch.randn(classes, dim, generator=g) * separation
    y = torch.randint(0, classes, (n,), generator=g)
    return split3(means[y] + torch.randn(n, dim, generator=g), y)


def noise(seed: int, *, classes: int = 4, dim: int = 5) -> tuple[Tensor, ...]:
    """Features independent of the labels."""
    g = torch.Generator().manual_seed(seed)
    n = sum(SIZES)
    return split3(torch.randn(n, dim, generator=g), torch.randint(0, classes, (n,), generator=g))


def circle(seed: int) -> tuple[Tensor, ...]:
    """2-D uniform features; class 1 inside the circle of radius sqrt(2/pi) (half the square)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(sum(SIZES), 2, generator=g) * 2 - 1
    y = (x.norm(dim=1) < math.sqrt(2 / math.pi)).long()
    return split3(x, y)


# --------------------------------------------------------------------------- hungarian


def test_hungarian_accuracy_on_hand_made_examples() -> None:
    assert hungarian_accuracy([0, 0, 1, 1, 2, 2], [1, 1, 2, 2, 0, 0]) == 1.0  # a relabelling
    assert hungarian_accuracy([0, 0, 0, 1], [0, 0, 1, 1]) == 0.75
    assert hungarian_accuracy([0, 1, 2, 3], [0, 0, 1, 1]) == 0.5  # more clusters than classes
    assert hungarian_accuracy([5, 5, 5, 5], [0, 1, 2, 3]) == 0.25  # one cluster matches one class
    # Clusters x classes table [[3, 2], [2, 0]]: greedy takes the 3 first and scores 3/7;
    # the optimal matching crosses over, 2 + 2 = 4 of 7.
    pred = torch.tensor([0, 0, 0, 0, 0, 1, 1])
    labels = torch.tensor([0, 0, 0, 1, 1, 0, 0])
    assert hungarian_accuracy(pred, labels) == pytest.approx(4 / 7)
    assert hungarian_accuracy(np.array([3, 3, 9]), np.array([-1, -1, 4])) == 1.0  # any integer ids


def test_hungarian_accuracy_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="same length"):
        hungarian_accuracy([0, 1], [0])
    with pytest.raises(ValueError, match="empty"):
        hungarian_accuracy([], [])


# --------------------------------------------------------------------------- linear


def test_linear_probe_separable_classes() -> None:
    result = linear_probe(*blobs(0))
    assert isinstance(result, ProbeResult)
    assert result.accuracy >= 0.98
    assert result.selected["C"] in (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
    assert result.extra["converged"]


def test_linear_probe_chance_on_independent_features() -> None:
    result = linear_probe(*noise(1))
    assert abs(result.accuracy - 0.25) < 0.05  # 4 balanced classes, 2000 test items, seed 1


def _codes(*ys: Tensor) -> list[np.ndarray]:
    classes = torch.unique(ys[0])
    return [torch.searchsorted(classes, y).numpy() for y in ys]


def test_linear_probe_matches_scikit_learn() -> None:
    """The selected C refitted by ``StandardScaler + LogisticRegression`` directly: same predictions."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    tr_x, tr_y, va_x, va_y, te_x, te_y = blobs(2, classes=4, separation=1.0)
    probe = LinearProbe().set_task("classification")
    probe.fit(tr_x.double().numpy(), tr_y.numpy(), va_x.double().numpy(), va_y.numpy())
    ours = probe.predict(te_x.double().numpy())
    scaler = StandardScaler().fit(tr_x.double().numpy())
    reference = LogisticRegression(C=probe.selected_["C"], max_iter=1000, tol=1e-4)
    reference.fit(scaler.transform(tr_x.double().numpy()), tr_y.numpy())
    expected = reference.predict(scaler.transform(te_x.double().numpy()))
    assert 0.5 < float((te_y.numpy() == ours).mean()) < 0.98  # overlapping classes: not trivial
    np.testing.assert_array_equal(ours, expected)


def test_linear_probe_classes_unseen_in_training_count_as_errors() -> None:
    tr_x, tr_y, va_x, va_y, te_x, te_y = blobs(3)
    te_y = te_y.clone()
    te_y[:100] = 7  # never seen in training
    result = linear_probe(tr_x, tr_y, va_x, va_y, te_x, te_y)
    assert result.accuracy <= 1 - 100 / len(te_y) + 1e-9


def test_linear_probe_rejects_bad_input() -> None:
    tr_x, tr_y, va_x, va_y, te_x, te_y = blobs(0)
    with pytest.raises(ValueError, match="val_x has 4 features"):
        linear_probe(tr_x, tr_y, va_x[:, :4], va_y, te_x, te_y)
    with pytest.raises(TypeError, match="integer or bool classes"):
        linear_probe(tr_x, tr_y.float(), va_x, va_y, te_x, te_y)
    with pytest.raises(ValueError, match="grid"):
        linear_probe(tr_x, tr_y, va_x, va_y, te_x, te_y, grid=(1.0, -1.0))
    with pytest.raises(ValueError, match="non-finite"):
        linear_probe(tr_x.clone().fill_(float("nan")), tr_y, va_x, va_y, te_x, te_y)
    with pytest.raises(ValueError, match=r"shape \(2000,\)"):
        linear_probe(tr_x, tr_y[:10], va_x, va_y, te_x, te_y)


# --------------------------------------------------------------------------- mlp


def test_mlp_probe_is_a_torch_module_trained_by_torch_optim() -> None:
    """The head is ``nn.Sequential(Linear, ReLU, Linear)``; its predictions are its own argmax."""
    tr_x, tr_y, va_x, va_y, te_x, te_y = blobs(0)
    probe = MLPProbe(max_steps=300).set_task("classification")
    probe.fit(*(t.double().numpy() if t.is_floating_point() else t.numpy() for t in (tr_x, tr_y, va_x, va_y)))
    assert isinstance(probe.head_, nn.Module)
    assert [type(m) for m in probe.head_.layers] == [nn.Linear, nn.ReLU, nn.Linear]
    features = torch.from_numpy(probe.scaler_.transform(te_x.double().numpy())).float()
    expected = probe.head_(features).argmax(1).numpy()
    np.testing.assert_array_equal(probe.predict(te_x.double().numpy()), expected)
    assert probe.settings()["optimiser"] == "torch.optim.Adam"


def test_mlp_probe_matches_a_near_perfect_linear_probe() -> None:
    """Where the linear probe is near-perfect the MLP is within 0.01 of it (2000 test items, seed 0)."""
    data = blobs(0, classes=5, dim=8, separation=2.0)
    linear = linear_probe(*data)
    mlp = mlp_probe(*data)
    assert linear.accuracy > 0.97
    assert mlp.accuracy >= linear.accuracy - 0.01


def test_mlp_probe_beats_the_linear_probe_on_a_nonlinear_factor() -> None:
    data = circle(0)
    mlp = mlp_probe(*data, lr=3e-3, max_steps=2500)
    linear = linear_probe(*data)
    assert mlp.accuracy > 0.95 and linear.accuracy < 0.65


def test_mlp_probe_trains_to_its_plateau_and_selects_the_step_on_validation() -> None:
    result = mlp_probe(*noise(2), patience=300, eval_every=20)
    curve = result.extra["val_curve"]
    accuracies = [point["accuracy"] for point in curve]
    best = max(accuracies)
    assert result.val_accuracy == best
    assert result.selected["step"] in [p["step"] for p in curve if p["accuracy"] == best]
    # Label-independent features: validation stops improving, and training stops `patience` steps later.
    assert result.extra["stopped"] == "plateau"
    assert result.extra["steps_run"] < 20000
    assert abs(result.accuracy - 0.25) < 0.05
    assert result.selected["hidden"] == 256  # default width max(d, 256)
    assert mlp_probe(*blobs(0), max_steps=10, hidden=5).selected["hidden"] == 5


def test_mlp_probe_is_seeded() -> None:
    data = blobs(4, separation=1.0)
    a = mlp_probe(*data, max_steps=100, seed=3)
    b = mlp_probe(*data, max_steps=100, seed=3)
    c = mlp_probe(*data, max_steps=100, seed=4)
    assert a.extra["val_curve"] == b.extra["val_curve"]
    assert a.extra["val_curve"] != c.extra["val_curve"]


def test_mlp_probe_rejects_bad_settings() -> None:
    data = blobs(0)
    for kwargs, message in (
        ({"max_steps": 0}, "max_steps"),
        ({"lr": -1.0}, "lr"),
        ({"patience": 0}, "patience"),
        ({"hidden": 0}, "hidden"),
        ({"batch_size": 1.5}, "batch_size"),
        ({"weight_decay": -1.0}, "weight_decay"),
    ):
        with pytest.raises(ValueError, match=message):
            mlp_probe(*data, **kwargs)


# --------------------------------------------------------------------------- knn


def test_knn_probe_separable_classes() -> None:
    result = knn_probe(*blobs(0))
    assert result.accuracy >= 0.98
    assert result.selected["metric"] in ("cosine", "euclidean")
    assert len(result.extra["val_by_setting"]) == 10


def test_knn_probe_chance_on_independent_features() -> None:
    result = knn_probe(*noise(3))
    assert abs(result.accuracy - 0.25) < 0.05


def test_knn_finds_a_circle_the_linear_probe_cannot() -> None:
    data = circle(1)
    knn = knn_probe(*data, metrics=("euclidean",))
    linear = linear_probe(*data)
    assert knn.accuracy > 0.93
    assert linear.accuracy < 0.65  # the best linear rule is little better than the majority (~0.5)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_knn_probe_matches_scikit_learn(metric: str) -> None:
    """Same predictions as ``KNeighborsClassifier`` / ``KNeighborsRegressor`` with the selected k."""
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor

    tr_x, tr_y, va_x, va_y, te_x, te_y = blobs(5, classes=4, separation=1.0)
    arrays = [t.double().numpy() for t in (tr_x, va_x, te_x)]
    probe = KNNProbe(metrics=(metric,)).set_task("classification")
    probe.fit(arrays[0], tr_y.numpy(), arrays[1], va_y.numpy())
    reference = KNeighborsClassifier(n_neighbors=probe.selected_["k"], metric=metric)
    reference.fit(arrays[0], tr_y.numpy())
    np.testing.assert_array_equal(probe.predict(arrays[2]), reference.predict(arrays[2]))
    target = arrays[0][:, 0] ** 2
    regressor = KNNProbe(metrics=(metric,), ks=(3, 7)).set_task("regression")
    regressor.fit(arrays[0], target, arrays[1], arrays[1][:, 0] ** 2)
    reference = KNeighborsRegressor(n_neighbors=regressor.selected_["k"], metric=metric)
    reference.fit(arrays[0], target)
    np.testing.assert_allclose(regressor.predict(arrays[2]), reference.predict(arrays[2]))


def test_ridge_and_cluster_probes_match_scikit_learn() -> None:
    from sklearn.linear_model import Ridge
    from sklearn.mixture import GaussianMixture
    from sklearn.preprocessing import StandardScaler

    tr_x, tr_y, va_x, va_y, te_x, te_y = blobs(6, classes=3, separation=2.0)
    arrays = [t.double().numpy() for t in (tr_x, va_x, te_x)]
    scaler = StandardScaler().fit(arrays[0])
    target = arrays[0] @ np.array([1.0, -2.0, 0.5, 0.0, 0.0]) + np.random.default_rng(0).normal(size=2000)
    ridge = RidgeProbe().fit(arrays[0], target, arrays[1], arrays[1] @ np.array([1.0, -2.0, 0.5, 0.0, 0.0]))
    reference = Ridge(alpha=ridge.selected_["alpha"]).fit(scaler.transform(arrays[0]), target)
    np.testing.assert_allclose(ridge.predict(arrays[2]), reference.predict(scaler.transform(arrays[2])))
    result = ridge_probe(tr_x, torch.from_numpy(target), va_x, va_x[:, 0], te_x, te_x[:, 0])
    assert result.selected["alpha"] in RidgeProbe().alphas
    cluster = ClusterProbe(seed=1).fit(arrays[0], tr_y.numpy(), arrays[1], va_y.numpy())
    mixture = GaussianMixture(3, covariance_type="full", max_iter=200, random_state=1)
    mixture.fit(scaler.transform(arrays[0]))
    np.testing.assert_array_equal(cluster.predict(arrays[2]), mixture.predict(scaler.transform(arrays[2])))


def test_knn_probe_skips_k_larger_than_the_training_split() -> None:
    tr_x, tr_y, va_x, va_y, te_x, te_y = blobs(0)
    result = knn_probe(tr_x[:20], tr_y[:20], va_x, va_y, te_x, te_y, ks=(1, 5, 50))
    assert result.extra["skipped_ks"] == [50]
    with pytest.raises(ValueError, match="metrics"):
        knn_probe(tr_x, tr_y, va_x, va_y, te_x, te_y, metrics=("manhattan",))


# --------------------------------------------------------------------------- clustering


def test_cluster_evaluation_separable_and_invariant_to_label_permutation() -> None:
    tr_x, tr_y, _, _, te_x, te_y = blobs(0)
    result = cluster_evaluation(tr_x, tr_y, eval_features=te_x, eval_labels=te_y, seed=0)
    assert result["accuracy"] >= 0.98
    assert result["nmi"] > 0.9 and result["ari"] > 0.9
    assert result["selected"] == {"num_clusters": 3, "covariance_type": "full"}
    permutation = torch.tensor([2, 0, 1])
    permuted = cluster_evaluation(tr_x, permutation[tr_y], eval_features=te_x, eval_labels=permutation[te_y])
    for key in ("accuracy", "nmi", "ari"):
        assert permuted[key] == result[key]


def test_cluster_evaluation_near_zero_information_on_independent_features() -> None:
    tr_x, tr_y, _, _, te_x, te_y = noise(4)
    result = cluster_evaluation(tr_x, tr_y, eval_features=te_x, eval_labels=te_y, covariance_type="diag")
    assert result["nmi"] < 0.02 and abs(result["ari"]) < 0.02
    assert result["accuracy"] < 0.35  # matching inflates chance (0.25) slightly


def test_cluster_evaluation_rejects_bad_input() -> None:
    tr_x, tr_y, *_ = blobs(0)
    with pytest.raises(ValueError, match="covariance_type"):
        cluster_evaluation(tr_x, tr_y, covariance_type="banana")
    with pytest.raises(ValueError, match="both"):
        cluster_evaluation(tr_x, tr_y, eval_features=tr_x)
    with pytest.raises(ValueError, match="num_clusters"):
        cluster_evaluation(tr_x[:2], tr_y[:2], num_clusters=3)


# --------------------------------------------------------------------------- factors


def test_factor_predictability_discrete_nonlinear() -> None:
    result = factor_predictability(*circle(2), kind="discrete")
    assert result["metric"] == "accuracy"
    assert result["knn"] > 0.93 and result["linear"] < 0.65
    assert set(result["selected"]) == {"linear", "knn"}


def test_factor_predictability_continuous_nonlinear() -> None:
    g = torch.Generator().manual_seed(6)
    x = torch.rand(sum(SIZES), 2, generator=g) * 2 - 1
    target = torch.cos(2 * math.pi * x[:, 0])  # even in x: no linear trend at all
    result = factor_predictability(*split3(x, target), kind="continuous")
    assert result["metric"] == "r2"
    assert result["knn"] > 0.9
    assert abs(result["linear"]) < 0.02


def test_factor_predictability_continuous_linear_target_has_the_expected_r2() -> None:
    """y = x_0 + e with Var(x_0) = Var(e) = 1: population R^2 = 1/2 (tolerance 0.05 at 2000 items)."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(sum(SIZES), 3, generator=g)
    target = x[:, 0] + torch.randn(sum(SIZES), generator=g)
    result = factor_predictability(*split3(x, target), kind="continuous")
    assert result["linear"] == pytest.approx(0.5, abs=0.05)
    assert result["knn"] < result["linear"] + 0.02  # a noisy linear target: kNN cannot beat the line
    with pytest.raises(ValueError, match="kind"):
        factor_predictability(*split3(x, target), kind="ordinal")


# --------------------------------------------------------------------------- selection is blind to test


def test_selection_ignores_test_labels() -> None:
    tr_x, tr_y, va_x, va_y, te_x, te_y = blobs(8, classes=4, separation=1.0)
    garbage = torch.full_like(te_y, -1)
    for probe, kwargs in ((linear_probe, {}), (mlp_probe, {"max_steps": 300}), (knn_probe, {})):
        honest = probe(tr_x, tr_y, va_x, va_y, te_x, te_y, **kwargs)
        blind = probe(tr_x, tr_y, va_x, va_y, te_x, garbage, **kwargs)
        assert blind.selected == honest.selected
        assert blind.val_accuracy == honest.val_accuracy
        assert blind.accuracy == 0.0 < honest.accuracy
    g = torch.Generator().manual_seed(9)
    everything = torch.cat([tr_x, va_x, te_x])
    target = torch.sin(everything[:, 0]) + 0.1 * torch.randn(sum(SIZES), generator=g)
    f_tr, f_va, f_te = target[:2000], target[2000:3000], target[3000:]
    honest = factor_predictability(tr_x, f_tr, va_x, f_va, te_x, f_te, kind="continuous")
    blind = factor_predictability(
        tr_x, f_tr, va_x, f_va, te_x, torch.randn(2000, generator=g), kind="continuous"
    )
    assert blind["selected"] == honest["selected"] and blind["val"] == honest["val"]


@pytest.mark.parametrize("name", ["linear", "mlp", "knn", "ridge", "cluster"])
def test_every_probe_selects_without_reading_test_features(name: str) -> None:
    """Perturbing only the test features leaves every probe's selection and validation score unchanged."""
    tr_x, tr_y, va_x, va_y, te_x, te_y = blobs(10, classes=3, separation=1.5)
    scrambled = te_x[torch.randperm(len(te_x), generator=torch.Generator().manual_seed(0))] * 7.0 + 3.0
    task = build_probe(name).tasks[0]
    if task == "regression":
        tr_y, va_y, te_y = (x[:, 0] * 2.0 for x in (tr_x, va_x, te_x))
    else:
        tr_y, va_y, te_y = (torch.from_numpy(c) for c in _codes(tr_y, va_y, te_y))
    options = {"max_steps": 300} if name == "mlp" else {}
    results = [
        run_probe(build_probe(name, options, task=task), tr_x, tr_y, va_x, va_y, test, te_y)
        for test in (te_x, scrambled)
    ]
    assert results[0].selected == results[1].selected
    assert results[0].val_accuracy == results[1].val_accuracy
    assert results[0].accuracy != results[1].accuracy  # the test features did matter to the score


def test_probes_are_registered_and_one_file_adds_one() -> None:
    """A new probe is a Probe subclass registered by name; evaluate runs it like the built-in ones."""
    assert set(CONTENT_PROBES) <= set(PROBES.names()) and "ridge" in PROBES
    for entry in PROBES.entries():
        assert issubclass(entry.factory, Probe)

    class Nearest(Probe):
        name = "nearest-mean"
        tasks = ("classification",)

        def __init__(self, *, seed: int = 0) -> None:
            self.seed, self.task = seed, "classification"

        def fit(self, train_x, train_y, val_x, val_y):  # type: ignore[no-untyped-def]
            self.means_ = np.stack([train_x[train_y == c].mean(0) for c in range(train_y.max() + 1)])
            self.selected_, self.diagnostics_ = {}, {}
            self.val_score_ = float((self.predict(val_x) == val_y).mean())
            return self

        def predict(self, x):  # type: ignore[no-untyped-def]
            return ((x[:, None] - self.means_[None]) ** 2).sum(-1).argmin(1)

    PROBES.register("nearest-mean", help="test probe")(Nearest)
    try:
        result = evaluate_content(LinearEncoder(16, 6), fake_splits(factors=False), probes=("nearest-mean",))
        assert result["nearest-mean"]["accuracy"] > 0.8
    finally:
        PROBES._entries.pop("nearest-mean")


# --------------------------------------------------------------------------- collapsed features


def test_probes_survive_a_collapsed_representation() -> None:
    """Constant features (a collapsed SSL encoder) give majority-class accuracy, not an error."""
    tr_x, tr_y, va_x, va_y, te_x, te_y = blobs(0)
    zeros = [torch.zeros_like(x) for x in (tr_x, va_x, te_x)]
    majority = float((te_y == torch.mode(tr_y).values).double().mean())
    args = (zeros[0], tr_y, zeros[1], va_y, zeros[2], te_y)
    assert linear_probe(*args).accuracy == pytest.approx(majority)
    assert mlp_probe(*args, max_steps=50).accuracy <= max(majority, 0.4)
    assert knn_probe(*args).accuracy < 0.5
    result = cluster_evaluation(zeros[0], tr_y, eval_features=zeros[2], eval_labels=te_y)
    assert result["nmi"] == pytest.approx(0.0, abs=1e-9)


# --------------------------------------------------------------------------- features and end-to-end


class LinearEncoder(nn.Module):
    """Fake model: ``encode`` flattens the image and applies a fixed linear map."""

    def __init__(self, pixels: int, dim: int, seed: int = 0) -> None:
        super().__init__()
        self.register_buffer(
            "weight", torch.randn(pixels, dim, generator=torch.Generator().manual_seed(seed))
        )
        self.calls: list[int] = []

    def encode(self, images: Tensor) -> Tensor:
        self.calls.append(images.shape[0])
        assert not self.training and not torch.is_grad_enabled()  # test-internal check of the contract
        return images.flatten(1) @ self.weight


def fake_split(n: int, seed: int, *, factors: bool = True) -> SimpleNamespace:
    """1x4x4 uint8 images: class c lights pixel c; "level" scales every pixel; "mark" lights pixel 15."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=g)
    level = torch.rand(n, generator=g)
    mark = torch.randint(0, 2, (n,), generator=g)
    images = torch.rand(n, 16, generator=g) * 40 + 100 * level[:, None]
    images[torch.arange(n), labels] += 100
    images[:, 15] += 100 * mark
    data = SimpleNamespace(images=images.clamp(0, 255).to(torch.uint8).view(n, 1, 4, 4), labels=labels)
    data.num_classes = 3
    if factors:
        data.factors = {"level": level, "mark": mark}
        data.factor_kinds = {"level": "continuous", "mark": "discrete"}
    else:
        data.factors, data.factor_kinds = {}, {}
    return data


def fake_splits(*, factors: bool = True, sizes: tuple[int, int, int] = (300, 100, 150)) -> SimpleNamespace:
    return SimpleNamespace(
        **{
            name: fake_split(n, i, factors=factors)
            for i, (name, n) in enumerate(zip(("train", "val", "test"), sizes))
        }
    )


def fake_augmenter(
    images: Tensor, num_views: int, generator: torch.Generator, *, return_params: bool = False
) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
    """Scale brightness by ``U(0.3, 1)`` and mirror with probability 1/2; also a constant and a vector."""
    batch = images.shape[0]
    scale = torch.rand(batch, num_views, generator=generator) * 0.7 + 0.3
    flip = torch.rand(batch, num_views, generator=generator) < 0.5
    views = images[:, None] * scale[..., None, None, None]
    views = torch.where(flip[..., None, None, None], views.flip(-1), views)
    params = {
        "scale": scale,
        "flip": flip,
        "constant": torch.zeros(batch, num_views),
        "pair": torch.stack([scale, 1 - scale], -1),
    }
    return (views, params) if return_params else views


def test_extract_features_contract() -> None:
    data = fake_split(50, 0)
    model = LinearEncoder(16, 4)
    model.train()
    features = extract_features(model, data, batch_size=7)
    assert features.shape == (50, 4) and features.dtype == torch.float32 and features.device.type == "cpu"
    assert model.training  # mode restored
    assert model.calls == [7] * 7 + [1]
    expected = (data.images.float() / 255).flatten(1) @ model.weight
    torch.testing.assert_close(features, expected)
    torch.testing.assert_close(extract_features(model, data.images.float() / 255), expected)


def test_extract_features_rejects_bad_models_and_data() -> None:
    data = fake_split(10, 0)
    with pytest.raises(TypeError, match="uint8"):
        extract_features(LinearEncoder(16, 4), data.images.to(torch.int32))
    with pytest.raises(TypeError, match="encode"):
        extract_features(nn.Linear(2, 2), data)

    class Bad(nn.Module):
        def __init__(self, out: Tensor) -> None:
            super().__init__()
            self.out = out

        def encode(self, images: Tensor) -> Tensor:
            return self.out.expand(images.shape[0], *self.out.shape[1:])

    with pytest.raises(ValueError, match=r"\(B, d\)"):
        extract_features(Bad(torch.zeros(1, 2, 2)), data)
    with pytest.raises(ValueError, match="non-finite"):
        extract_features(Bad(torch.full((1, 2), float("nan"))), data)


def test_evaluate_content_end_to_end() -> None:
    splits = fake_splits(factors=False)
    result = evaluate_content(LinearEncoder(16, 6), splits)
    assert set(result) == set(CONTENT_PROBES)
    for probe in ("linear", "mlp", "knn"):
        assert 0.9 <= result[probe]["accuracy"] <= 1.0, probe
        assert result[probe]["selected"]
    # GMM on separable clusters: measured accuracy 0.69, NMI 0.59 (chance: about 1 / classes, NMI 0)
    assert result["cluster"]["accuracy"] > 0.5 and result["cluster"]["nmi"] > 0.3
    json.dumps(result)
    only = evaluate_content(LinearEncoder(16, 6), splits, probes=("linear",))
    assert set(only) == {"linear"}
    assert only["linear"]["accuracy"] == result["linear"]["accuracy"]


def test_evaluate_everything_with_factors_and_augmentations() -> None:
    splits = fake_splits()
    options = {"mlp": {"max_steps": 50}}
    result = evaluate(LinearEncoder(16, 6), splits, augmenter=fake_augmenter, options=options)
    assert set(result) == {"content", "style", "augmentation", "protocol"}
    style = result["style"]
    assert set(style["factors"]) == {"level", "mark"}
    assert style["factors"]["level"]["metric"] == "r2" and style["factors"]["mark"]["metric"] == "accuracy"
    assert style["factors"]["level"]["linear"] > 0.8  # brightness is a linear function of the pixels
    assert style["mean_linear"] == pytest.approx(
        (style["factors"]["level"]["linear"] + style["factors"]["mark"]["linear"]) / 2
    )
    assert set(style["mean_by_metric"]) == {"accuracy", "r2"}
    augmentation = result["augmentation"]
    assert set(augmentation["factors"]) == {"scale", "flip", "pair[0]", "pair[1]"}
    assert augmentation["skipped"] == {"constant": "constant on the training split"}
    assert augmentation["factors"]["flip"]["kind"] == "discrete"
    assert augmentation["factors"]["scale"]["linear"] > 0.3  # the view's brightness is readable
    assert augmentation["items"] == {"train": 300, "val": 100, "test": 150}
    protocol = result["protocol"]
    assert protocol["sizes"] == {"train": 300, "val": 100, "test": 150}
    assert protocol["mlp"]["max_steps"] == 50 and protocol["linear"]["grid"] == [
        1e-3,
        1e-2,
        1e-1,
        1.0,
        10.0,
        100.0,
    ]
    assert "augmentation" in protocol
    json.loads(json.dumps(result))


def test_evaluate_style_is_none_without_factors_and_evaluate_omits_it() -> None:
    splits = fake_splits(factors=False)
    assert evaluate_style(LinearEncoder(16, 6), splits) is None
    result = evaluate(LinearEncoder(16, 6), splits, probes=("linear",))
    assert set(result) == {"content", "protocol"}


def test_augmentation_style_on_one_data_set_and_multiple_views() -> None:
    data = fake_split(200, 0)
    result = evaluate_augmentation_style(
        LinearEncoder(16, 6), data, fake_augmenter, num_views=2, max_items=50
    )
    assert result["items"] == {"train": 50, "val": 40, "test": 40}
    assert result["num_views"] == 2
    assert "scale" in result["factors"]


def test_evaluation_rejects_bad_options_and_splits() -> None:
    splits = fake_splits(factors=False)
    model = LinearEncoder(16, 6)
    with pytest.raises(ValueError, match="unknown evaluation options section 'mpl'"):
        evaluate(model, splits, options={"mpl": {"epochs": 1}})
    with pytest.raises(ValueError, match=r"unknown option mlp.epoch;"):
        evaluate(model, splits, options={"mlp": {"epoch": 1}})
    with pytest.raises(ValueError, match="mlp.patience"):
        evaluate(model, splits, options={"mlp": {"patience": 0}})
    with pytest.raises(ValueError, match="unknown probe .svm."):
        evaluate_content(model, splits, probes=("svm",))
    empty_val = SimpleNamespace(train=splits.train, val=fake_split(0, 1, factors=False), test=splits.test)
    with pytest.raises(ValueError, match="val split is empty"):
        evaluate(model, empty_val)
    with pytest.raises(TypeError, match=r"\.train"):
        evaluate(model, SimpleNamespace(train=splits.train))


def test_evaluation_protocol_is_json_and_reflects_options() -> None:
    protocol = evaluation_protocol(seed=3, options={"knn": {"ks": (1, 3)}})
    assert protocol["seed"] == 3
    assert protocol["knn"]["ks"] == [1, 3]
    assert protocol["refit"].startswith("train only")
    assert "augmentation" not in protocol
    json.dumps(protocol)


# --------------------------------------------------------------------------- timing


@pytest.mark.slow
def test_content_probe_timing_on_60000_by_10_features() -> None:
    """The benchmark's scale: 54k train / 6k val / 10k test, 10-d features, 10 classes."""

    class Identity(nn.Module):
        def encode(self, images: Tensor) -> Tensor:
            return images.flatten(1)

    g = torch.Generator().manual_seed(0)
    n, dim, classes = 70000, 10, 10
    labels = torch.randint(0, classes, (n,), generator=g)
    features = torch.randn(classes, dim, generator=g)[labels] + torch.randn(n, dim, generator=g)

    def part(a: int, b: int) -> SimpleNamespace:
        return SimpleNamespace(images=features[a:b].view(-1, 1, 1, dim), labels=labels[a:b])

    splits = SimpleNamespace(train=part(0, 54000), val=part(54000, 60000), test=part(60000, n))
    start = time.perf_counter()
    result = evaluate_content(Identity(), splits)
    total = time.perf_counter() - start
    for probe, values in result.items():
        print(f"{probe}: accuracy {values['accuracy']:.4f} in {values['seconds']:.2f} s")
    print(f"content evaluation of 60,000 x 10 features: {total:.1f} s on {torch.get_num_threads()} threads")
    assert result["linear"]["accuracy"] > 0.5


# --- what the probes fit on (leakage and selection checks) -----------------------------------------


def probe_problem(seed: int = 0):
    """Train and validation splits with deliberately different feature statistics."""
    g = np.random.default_rng(seed)
    train_x = g.normal(0.0, 1.0, size=(120, 5))
    train_y = (train_x[:, 0] + 0.5 * g.normal(size=120) > 0).astype(np.int64)
    val_x = g.normal(3.0, 4.0, size=(60, 5))  # shifted and wider: a scaler fitted on it differs
    val_y = (val_x[:, 0] - 3.0 + 0.5 * g.normal(size=60) > 0).astype(np.int64)
    return train_x, train_y, val_x, val_y


def test_mlp_probe_standardises_with_training_statistics_only() -> None:
    from pssl.evaluation.mlp import MLPProbe

    train_x, train_y, val_x, val_y = probe_problem()
    probe = MLPProbe(hidden=8, max_steps=20, patience=5).fit(train_x, train_y, val_x, val_y)
    np.testing.assert_allclose(probe.scaler_.mean_, train_x.mean(0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(probe.scaler_.scale_, train_x.std(0), rtol=1e-12, atol=0)


def test_linear_probe_selects_c_on_validation_accuracy() -> None:
    from pssl.evaluation.linear import LinearProbe

    train_x, train_y, val_x, val_y = probe_problem()
    probe = LinearProbe().fit(train_x, train_y, val_x, val_y)
    by_c = probe.diagnostics_["val_accuracy_by_C"]
    for c, reported in by_c.items():  # each reported score is the refitted estimator's validation accuracy
        refit = probe.estimator(float(c)).fit(train_x, train_y)
        assert reported == pytest.approx(float((refit.predict(val_x) == val_y).mean())), c
    best = max(sorted(by_c, key=float), key=lambda c: (by_c[c], -float(c)))
    assert probe.selected_["C"] == pytest.approx(float(best))
