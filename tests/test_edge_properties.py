"""Properties at the edges, where a one-line bug is invisible with default settings.

Each test states an invariant any correct implementation satisfies, checked where
the defaults hide mistakes: ties in probe selection, NaN among compare results,
several particles, K draws != N items, J > 2 views, ranges whose bound is not 1,
and the momentum update of every key network. Each was broken once on purpose
(the comment at each test says how) and seen to fail.

Seeds are fixed; tolerances are stated where floating point enters.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pssl.augment import ColorJitter, _check_range
from pssl.compare import summarise
from pssl.diagnostics.importance import importance_ess, importance_sample, pareto_khat, per_item_evidence
from pssl.diagnostics.labels import observed_values_per_item
from pssl.evaluation.knn import KNNProbe
from pssl.evaluation.linear import LinearProbe
from pssl.evaluation.ridge import RidgeProbe
from pssl.inference.objectives import Objective, build_objective
from pssl.models.base import MODELS, ViewBatch
from pssl.models.build import build_for_data
from pssl.models.multimodal import modality_pair
from pssl.models.simvae import collapsed_log_prior, conjugate_content_posterior

SHAPE = (1, 8, 8)

# --- ties in probe selection ---------------------------------------------------------------------


def tied_classification(seed: int) -> tuple[np.ndarray, ...]:
    """Two well-separated classes: every setting of every probe gets validation accuracy 1."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], 20)
    x = rng.normal(size=(40, 3)) * 0.05 + y[:, None] * 10.0
    return x, y, x.copy(), y.copy()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_linear_ties_choose_the_smallest_c_whatever_the_grid_order(seed: int) -> None:
    # broken once: key (accuracy, +c) chose the largest C
    rng = np.random.default_rng(seed)
    grid = tuple(float(c) for c in rng.permutation([0.01, 0.1, 1.0, 10.0, 100.0]))
    probe = LinearProbe(grid=grid).fit(*tied_classification(seed))
    scores = {float(c): v for c, v in probe.diagnostics_["val_accuracy_by_C"].items()}
    best = max(scores.values())
    tied = [c for c, v in scores.items() if v == best]
    assert len(tied) >= 2  # the data make a tie
    assert probe.selected_["C"] == min(tied)
    assert probe.val_score_ == best


@pytest.mark.parametrize("seed", [0, 1])
def test_knn_ties_choose_the_earlier_metric_then_the_smaller_k(seed: int) -> None:
    # broken once: `better` with >= chose the last tied setting
    probe = KNNProbe(ks=(7, 3, 5), metrics=("cosine", "euclidean")).fit(*tied_classification(seed))
    by_setting = probe.diagnostics_["val_by_setting"]
    best = max(by_setting.values())
    order = [f"{m},k={k}" for m in ("cosine", "euclidean") for k in (3, 5, 7)]
    tied = [key for key in order if by_setting[key] == best]
    assert len(tied) >= 2  # the data make a tie
    metric, k = tied[0].split(",k=")
    assert probe.selected_ == {"metric": metric, "k": int(k)} and probe.val_score_ == best


def test_ridge_ties_choose_the_larger_alpha_and_the_best_score() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 2))
    y = np.zeros(30)  # every alpha predicts 0 exactly: all tie
    probe = RidgeProbe(alphas=(0.1, 100.0, 1.0)).fit(x, y + 1.0, x, y + 1.0)
    values = list(probe.diagnostics_["val_by_alpha"].values())
    assert len(set(values)) == 1
    assert probe.selected_["alpha"] == 100.0
    x2 = rng.normal(size=(60, 3))
    y2 = x2 @ np.array([1.0, -2.0, 0.5]) + rng.normal(size=60) * 0.1
    probe = RidgeProbe(alphas=(0.01, 1.0, 1e4)).fit(x2[:40], y2[:40], x2[40:], y2[40:])
    assert probe.val_score_ == max(v for v in probe.diagnostics_["val_by_alpha"].values() if v is not None)


# --- NaN in compare summaries --------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_compare_summary_ignores_nan_and_missing_like_absent_rows(seed: int) -> None:
    # broken once: NaN rows counted in n (the mean became NaN)
    rng = np.random.default_rng(seed)
    rows, clean = [], []
    for model in ("a", "b"):
        for s in range(4):
            value = float(rng.normal())
            rows.append({"model": model, "seed": s, "acc": value})
            clean.append(rows[-1])
    for model in ("a", "b"):
        rows.append({"model": model, "seed": 9, "acc": float("nan")})
        rows.append({"model": model, "seed": 10})
    rows = [rows[i] for i in rng.permutation(len(rows))]
    assert summarise(rows, "acc").keys() == summarise(clean, "acc").keys()
    for model, (mean, half, n) in summarise(rows, "acc").items():
        expected = summarise(clean, "acc")[model]
        assert n == expected[2] == 4
        assert mean == pytest.approx(expected[0]) and half == pytest.approx(expected[1])
        assert math.isfinite(mean) and math.isfinite(half)
    only_nan = [{"model": "c", "seed": 0, "acc": float("nan")}]
    assert summarise(only_nan, "acc") == {}


# --- several particles ---------------------------------------------------------------------------


def batch(num_items: int, num_views: int, seed: int = 0) -> ViewBatch:
    g = torch.Generator().manual_seed(seed)
    views = torch.rand((num_items, num_views, *SHAPE), generator=g)
    return ViewBatch(views, torch.arange(num_items), num_items * 5)


@pytest.mark.parametrize("name", ["simvae", "vae"])
@pytest.mark.parametrize("particles,vectorize", [(1, False), (3, False), (3, True)])
def test_named_terms_add_up_to_the_elbo_with_several_particles(name, particles, vectorize) -> None:
    # broken once: terms divided by the item count only (K times too large for K > 1)
    torch.manual_seed(0)
    method = build_for_data(name, SHAPE, encoder="mlp", decoder="mlp")
    options = {"num_particles": particles, "vectorize_particles": vectorize}
    objective = Objective(method, build_objective("trace", options))
    with torch.no_grad():
        out = objective(batch(4, 3))
    named = {k: v for k, v in out.terms.items() if k != "elbo" and not k.startswith("diag")}
    total = sum(
        float(v) for k, v in named.items() if k in {"reconstruction", "prior", "entropy", "view_prior"}
    )
    total = sum(float(v) for v in named.values()) if not total else total
    assert total == pytest.approx(float(out.terms["elbo"]), rel=1e-5, abs=1e-3)


@pytest.mark.parametrize("name", MODELS.names())
def test_several_particles_are_refused_exactly_for_point_mass_guides(name: str) -> None:
    # every particle of a point-mass guide is the same draw: K > 1 is refused before training,
    # and accepted for every method whose guide samples (broken once: the check skipped the
    # vectorised case)
    from pssl.inference.objectives import ObjectiveError

    torch.manual_seed(0)
    method = build_for_data(name, SHAPE, encoder="mlp")
    stochastic = method.generative
    for particles, vectorize in ((1, False), (3, False), (3, True)):
        options = {"num_particles": particles, "vectorize_particles": vectorize}
        objective = Objective(method, build_objective("trace", options))
        if particles == 1 or stochastic:
            objective.prepare(batch(4, 2))
        else:
            with pytest.raises(ObjectiveError, match="point mass"):
                objective.prepare(batch(4, 2))


# --- K draws != N items ------------------------------------------------------------------------------


@pytest.mark.parametrize("k,n", [(5, 3), (2, 7), (9, 1)])
def test_per_item_quantities_reduce_over_draws_not_items(k: int, n: int) -> None:
    # broken once: logsumexp over dim 1 (items) instead of 0 (draws)
    g = torch.Generator().manual_seed(k * 10 + n)
    log_weights = torch.randn((k, n), generator=g, dtype=torch.float64) * 2
    iwae, elbo = per_item_evidence(log_weights)
    assert iwae.shape == elbo.shape == (n,)
    assert torch.all(iwae >= elbo - 1e-12)  # Jensen, item by item
    shift = torch.arange(n, dtype=torch.float64)
    iwae_shifted, elbo_shifted = per_item_evidence(log_weights + shift)
    assert torch.allclose(iwae_shifted - iwae, shift) and torch.allclose(elbo_shifted - elbo, shift)
    constant = per_item_evidence(torch.zeros((k, n), dtype=torch.float64) + shift)
    assert torch.allclose(constant[0], shift) and torch.allclose(constant[1], shift)
    ess = importance_ess(log_weights)
    assert ess.shape == (n,) and torch.all(ess >= 1 - 1e-9) and torch.all(ess <= k + 1e-9)
    assert torch.allclose(
        importance_ess(torch.zeros((k, n))), torch.full((n,), float(k), dtype=torch.float64)
    )
    if k >= 2:
        assert pareto_khat(log_weights).shape == (n,)


def test_importance_sampling_with_k_not_n_and_three_views() -> None:
    # broken once: the chunked passes concatenated along items instead of draws
    torch.manual_seed(0)
    method = build_for_data("simvae", SHAPE, encoder="mlp", decoder="mlp", num_views=3).eval()
    views = batch(3, 3).views
    for max_images in (4096, 9):  # one pass, and chunks of items and particles
        samples = importance_sample(method, views, num_samples=5, seed=0, max_images_per_pass=max_images)
        assert samples.log_weights.shape == (5, 3) and samples.log_likelihood.shape == (5, 3)
        assert all(v.shape[:2] == (5, 3) for v in samples.latents.values())
        assert all(v.shape == (3, 3) for v in samples.observed_statistics.values())
        assert all(v.shape == (5, 3, 3) for v in samples.replicated_statistics.values())
        assert samples.num_dims == 3 * 64
        assert torch.isfinite(samples.log_weights).all()


# --- J > 1 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_views", [1, 2, 3, 5])
def test_conjugate_content_posterior_is_the_exact_posterior_for_any_j(num_views: int) -> None:
    # log p(y) + sum_j log N(z_j; y, s^2) - log q(y) = log p(z_1..J) for every y: broken once by
    # data precision 2 / s^2 (J fixed at 2)
    g = torch.Generator().manual_seed(num_views)
    d, prior_scale, view_scale = 4, 1.7, torch.tensor(0.4, dtype=torch.float64)
    z = torch.randn((2, num_views, d), generator=g, dtype=torch.float64)
    mean, std = conjugate_content_posterior(
        z,
        view_scale,
        torch.zeros(d, dtype=torch.float64),
        torch.full((d,), prior_scale**-2, dtype=torch.float64),
    )
    evidence = collapsed_log_prior(z, view_scale, prior_scale)
    for _ in range(3):
        y = torch.randn((2, 1, d), generator=g, dtype=torch.float64)
        joint = torch.distributions.Normal(0.0, prior_scale).log_prob(y).sum((-2, -1))
        joint = joint + torch.distributions.Normal(y, view_scale).log_prob(z).sum((-2, -1))
        posterior = torch.distributions.Normal(mean, std).log_prob(y).sum((-2, -1))
        assert torch.allclose(joint - posterior, evidence, atol=1e-9)


@pytest.mark.parametrize("num_views", [2, 3, 4])
def test_observed_values_count_every_view(num_views: int) -> None:
    # broken once: C H W only (the views plate left out)
    torch.manual_seed(0)
    method = build_for_data("simvae", SHAPE, encoder="mlp", decoder="mlp", num_views=num_views)
    assert observed_values_per_item(method, batch(2, num_views).views) == num_views * 64


def test_paired_methods_take_modality_a_from_view_0_and_b_from_the_last_view() -> None:
    views = torch.arange(2 * 3 * 1 * 4 * 2, dtype=torch.float32).reshape(2, 3, 1, 4, 2)
    first, second = modality_pair(views)
    assert torch.equal(first, views[:, 0, :, :2]) and torch.equal(second, views[:, 2, :, 2:])


@pytest.mark.parametrize("name", MODELS.names())
def test_every_method_trains_a_step_with_three_views(name: str) -> None:
    # the objective runs with J = 3 (not only the default 2) and gives a finite loss and terms
    torch.manual_seed(0)
    shape = SHAPE
    method = build_for_data(name, shape, encoder="mlp", num_views=3)
    objective = Objective(method, build_objective("trace"))
    out = objective(batch(6, 3))
    assert torch.isfinite(out.loss) and all(torch.isfinite(v) for v in out.terms.values())


# --- ranges whose bound is not 1 ------------------------------------------------------------------


def test_range_checks_hold_for_any_bounds() -> None:
    # broken once: `b > 1.0` instead of `b > high`
    rng = np.random.default_rng(0)
    for _ in range(200):
        low, high = sorted(rng.uniform(-5, 5, size=2))
        a, b = rng.uniform(low - 1, high + 1, size=2)
        accepted = low <= a <= b <= high
        if accepted:
            assert _check_range((a, b), "r", low=low, high=high) == (a, b)
        else:
            with pytest.raises(ValueError, match=f"r must be .* {low}"):
                _check_range((a, b), "r", low=low, high=high)


@pytest.mark.parametrize("strength", [0.0, 0.1, 0.25, 0.5])
def test_hue_jitter_stays_within_its_half_turn_bound(strength: float) -> None:
    jitter = ColorJitter(hue=strength)
    assert jitter.hue == (-strength, strength)
    params = jitter.sample_params(500, torch.Generator().manual_seed(0))
    assert params["hue"].min() >= -strength and params["hue"].max() <= strength
    for bad in (0.5 + 1e-6, 0.7, (-0.6, 0.1), (0.2, 0.51), (0.3, 0.1)):
        with pytest.raises(ValueError, match="hue"):
            ColorJitter(hue=bad)
    assert ColorJitter(hue=(-0.5, 0.5)).hue == (-0.5, 0.5)


# --- momentum update of every key network -----------------------------------------------------------


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.99])
def test_every_key_network_moves_toward_its_query_network(momentum: float) -> None:
    # broken once: only the key backbone was updated (the key head stayed at its start)
    torch.manual_seed(0)
    method = build_for_data("moco", SHAPE, encoder="mlp", momentum=momentum, queue_size=16)
    keys = {
        name[len("key_") :]: module for name, module in method.named_children() if name.startswith("key_")
    }
    assert set(keys) >= {"backbone", "head"}
    with torch.no_grad():
        for query_name in keys:
            for p in getattr(method, query_name).parameters():
                p.add_(torch.randn_like(p))
    before = {q: [p.clone() for p in keys[q].parameters()] for q in keys}
    query = {q: [p.clone() for p in getattr(method, q).parameters()] for q in keys}
    method.after_step()
    for q, key_net in keys.items():
        params = list(key_net.parameters())
        assert len(params) == len(query[q]) > 0
        for new, old, target in zip(params, before[q], query[q]):
            assert torch.allclose(new, momentum * old + (1 - momentum) * target, atol=1e-6), q
        for p in params:
            assert not p.requires_grad


def test_momentum_update_is_not_a_gradient_step() -> None:
    torch.manual_seed(0)
    method = build_for_data("moco", SHAPE, encoder="mlp", momentum=0.9, queue_size=16)
    query = [p.clone() for p in method.backbone.parameters()]
    method.after_step()
    assert all(torch.equal(a, b) for a, b in zip(query, method.backbone.parameters()))
