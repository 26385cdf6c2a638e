"""Posterior diagnostics against exact answers.

The importance-sampling checks use the linear-Gaussian SimVAE of test_simvae.py:
    y ~ N(0, s^2 I),  z_j | y ~ N(y, sigma^2 I),  x_j | z_j ~ N(W z_j + b, tau^2 I),
whose log p(x_1..J) and posterior are exact. The exact posterior factorises as
    p(y | x_1..J) prod_j p(z_j | y, x_j),
with x_j | y ~ N(W y + b, C), C = sigma^2 W W^T + tau^2 I, so
    p(y | x) = N(P_y^-1 W^T C^-1 sum_j (x_j - b), P_y^-1),   P_y = I / s^2 + J W^T C^-1 W,
    p(z_j | y, x_j) = N(P_z^-1 (y / sigma^2 + W^T (x_j - b) / tau^2), P_z^-1),
    P_z = I / sigma^2 + W^T W / tau^2.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import matplotlib
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pssl.augment import ViewAugmenter
from pssl.config import Component, Config
from pssl.datasets import load_dataset
from pssl.diagnostics import (
    LOO_REFUSAL,
    LooNotApplicableError,
    collapse_summary,
    compare_held_out,
    compare_structure,
    diagnose,
    diagnose_run,
    effective_rank,
    evidence_summary,
    held_out_elpd,
    importance_sample,
    iwae_log_evidence,
    pareto_summary,
    read_netcdf,
    representation_structure,
    structure_metrics,
    to_inference_data,
    write_netcdf,
)
from pssl.diagnostics.importance import arviz, bits_per_dim, khat_threshold
from pssl.diagnostics.report import markdown
from pssl.inference.train import train
from pssl.models import sites
from pssl.models.base import ViewBatch
from pssl.models.likelihoods import GaussianLikelihood
from pssl.models.priors import FlatPrior, GaussianPrior, GaussianViewPrior
from pssl.models.simvae import SimVAE
from pssl.models.vae import VAE

matplotlib.use("Agg")

D, LATENT, PRIOR_SCALE, VIEW_SCALE, NOISE = 3, 2, 1.3, 0.6, 0.4
NUM_VIEWS = 2
GUIDE = {"proposal": "guide"}
"""These tests check importance sampling from the model's (or a hand-written) guide;
test_diagnostic_proposal.py checks the hierarchical proposal."""


@pytest.fixture(autouse=True)
def double_precision():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


# --- the linear-Gaussian SimVAE (as in test_simvae.py) ------------------------------------


class LinearDecoder(nn.Module):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.weight, self.bias = weight, bias

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = z @ self.weight.T + self.bias
        return out.reshape(*z.shape[:-1], 1, 1, self.weight.shape[0])


class LinearEncoder(nn.Module):
    """q(z_j | x_j) = N(A x_j + c, diag(scale^2)), fixed."""

    def __init__(self, A: torch.Tensor, c: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.A, self.c, self.scale = A, c, scale
        self.latent_dim = A.shape[0]
        self.anchor = nn.Parameter(torch.zeros(()))  # so the model has a parameter (device lookup)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = x.reshape(*x.shape[:-3], self.A.shape[1])
        loc = flat @ self.A.T + self.c
        return loc, self.scale.expand_as(loc)


def make_model(y_guide: str = "exact") -> SimVAE:
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(D, LATENT, generator=gen)
    bias = torch.randn(D, generator=gen)
    A = torch.randn(LATENT, D, generator=gen) * 0.3
    encoder = LinearEncoder(A, torch.zeros(LATENT), torch.full((LATENT,), 0.5))
    model = SimVAE(
        encoder,
        LinearDecoder(weight, bias),
        GaussianPrior(LATENT, scale=PRIOR_SCALE),
        GaussianViewPrior(LATENT, scale=VIEW_SCALE),
        # scale 50 on N(., 50 NOISE^2) is the proper density N(., NOISE^2); beta is not part of p(x)
        GaussianLikelihood(std=NOISE * math.sqrt(50.0), link="identity", scale=50.0),
        y_guide=y_guide,
        beta=0.3,  # nor must beta
    )
    return model.double()


def joint_moments(model: SimVAE, num_views: int) -> tuple[torch.Tensor, torch.Tensor]:
    W, b = model.decoder.weight, model.decoder.bias
    eye_j, eye_d = torch.eye(num_views), torch.eye(LATENT)
    cov_z = PRIOR_SCALE**2 * torch.kron(torch.ones(num_views, num_views), eye_d) + VIEW_SCALE**2 * torch.kron(
        eye_j, eye_d
    )
    big_w = torch.kron(eye_j, W)
    cov_x = big_w @ cov_z @ big_w.T + NOISE**2 * torch.eye(num_views * D)
    return b.repeat(num_views), cov_x


def sample_data(model: SimVAE, num_items: int, seed: int = 0) -> torch.Tensor:
    mean_x, cov_x = joint_moments(model, NUM_VIEWS)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(num_items, mean_x.shape[0], generator=gen)
    x = mean_x + noise @ torch.linalg.cholesky(cov_x).T
    return x.reshape(num_items, NUM_VIEWS, 1, 1, D)


def exact_log_evidence(model: SimVAE, views: torch.Tensor) -> torch.Tensor:
    mean_x, cov_x = joint_moments(model, views.shape[1])
    return dist.MultivariateNormal(mean_x, cov_x).log_prob(views.reshape(views.shape[0], -1))


def posterior_guide(model: SimVAE, *, std_factor: float = 1.0, shift: float = 0.0):
    """The exact posterior p(y | x) prod_j p(z_j | y, x_j), its std scaled by ``std_factor``
    and its means shifted by ``shift`` posterior standard deviations."""
    W, b = model.decoder.weight, model.decoder.bias
    C = VIEW_SCALE**2 * W @ W.T + NOISE**2 * torch.eye(D)
    C_inv = torch.linalg.inv(C)
    eye = torch.eye(LATENT)

    def guide(batch: ViewBatch) -> None:
        x = batch.views.reshape(batch.batch_size, batch.num_views, D) - b
        P_y = eye / PRIOR_SCALE**2 + batch.num_views * W.T @ C_inv @ W
        cov_y = torch.linalg.inv(P_y)
        mean_y = (x.sum(1) @ C_inv @ W) @ cov_y  # cov_y symmetric
        P_z = eye / VIEW_SCALE**2 + W.T @ W / NOISE**2
        cov_z = torch.linalg.inv(P_z)
        tril_y = torch.linalg.cholesky(cov_y) * std_factor
        tril_z = torch.linalg.cholesky(cov_z) * std_factor
        with pyro.plate(sites.ITEMS, size=batch.num_items, subsample=batch.index, dim=sites.ITEMS_DIM):
            loc_y = mean_y[:, None] + shift * torch.diagonal(cov_y).sqrt()
            y = pyro.sample(sites.CONTENT, dist.MultivariateNormal(loc_y, scale_tril=tril_y))
            loc_z = (y / VIEW_SCALE**2 + x @ W / NOISE**2) @ cov_z + shift * torch.diagonal(cov_z).sqrt()
            with pyro.plate(sites.VIEWS, batch.num_views, dim=sites.VIEWS_DIM):
                pyro.sample(sites.VIEW_LATENT, dist.MultivariateNormal(loc_z, scale_tril=tril_z))

    return guide


def model_with_guide(**guide_options) -> SimVAE:
    model = make_model()
    model.guide = posterior_guide(model, **guide_options)
    return model


# --- importance sampling -------------------------------------------------------------------


def test_exact_posterior_gives_exact_log_evidence_and_small_khat() -> None:
    model = model_with_guide()
    views = sample_data(model, 12)
    samples = importance_sample(model, views, num_samples=50, seed=0, **GUIDE)
    exact = exact_log_evidence(model, views)
    # With the exact posterior the weight p(x, z, y) / q(z, y | x) = p(x) for every draw, with
    # the likelihood's tempering scale (50) and beta (0.3) left out as they must be.
    torch.testing.assert_close(samples.log_weights, exact.expand(50, -1), rtol=1e-9, atol=1e-9)
    summary, khat, ess = pareto_summary(samples)
    assert (khat < 0.5).all()
    torch.testing.assert_close(torch.as_tensor(ess), torch.full((12,), 50.0))
    evidence = evidence_summary(samples, eight_bit=False)
    assert evidence["log_px_iwae_nats"] == pytest.approx(float(exact.mean()), abs=1e-9)
    assert evidence["iwae_minus_elbo_nats"] == pytest.approx(0.0, abs=1e-9)
    assert evidence["bits_per_dim"] == pytest.approx(-float(exact.mean()) / (NUM_VIEWS * D * math.log(2)))


def test_iwae_converges_to_exact_log_evidence() -> None:
    # An over-dispersed, shifted guide: bounded weights, so the IS estimate converges.
    model = model_with_guide(std_factor=1.5, shift=0.5)
    views = sample_data(model, 20)
    exact = exact_log_evidence(model, views)
    errors = {}
    for k in (1, 1000):
        samples = importance_sample(model, views, num_samples=k, seed=1, **GUIDE)
        iwae = torch.logsumexp(samples.log_weights, 0) - math.log(k)
        errors[k] = float((iwae - exact).abs().mean())
    assert errors[1000] < errors[1] / 10
    assert errors[1000] < 0.1  # nats per item; seeded (measured 0.046; K = 1: 3.2)
    # the library's own estimate, as reported: the IWAE bound, not the mean log weight (the ELBO)
    evidence = evidence_summary(samples, eight_bit=False)
    assert evidence["log_px_iwae_nats"] == pytest.approx(float(iwae.mean()), abs=1e-9)
    assert abs(evidence["log_px_iwae_nats"] - float(exact.mean())) < 0.1
    assert evidence["iwae_minus_elbo_nats"] > 0.1  # a wider guide: the ELBO is clearly lower
    _, khat, _ = pareto_summary(samples)
    assert (khat < 0.5).all()  # a wider proposal: light-tailed ratios


def test_iwae_is_below_log_evidence_on_average() -> None:
    model = model_with_guide(std_factor=1.5, shift=0.5)
    views = sample_data(model, 20)
    exact = exact_log_evidence(model, views)
    for k, must_be_below in ((3, False), (1, True)):
        diffs = []
        for seed in range(10):
            samples = importance_sample(model, views, num_samples=k, seed=seed, **GUIDE)
            diffs.append(torch.logsumexp(samples.log_weights, 0) - math.log(k) - exact)
        diffs = torch.stack(diffs).flatten()
        se = float(diffs.std() / math.sqrt(diffs.numel()))
        # Jensen: E[IWAE_K] <= log p(x). One-sided, 3 standard errors (seeded).
        assert float(diffs.mean()) <= 3 * se
        if must_be_below:  # the K = 1 bound (the ELBO) is clearly below: the check has power
            assert float(diffs.mean()) < -3 * se


def test_over_narrow_guide_has_large_khat() -> None:
    model = model_with_guide(std_factor=0.1)
    views = sample_data(model, 12)
    summary, khat, ess = pareto_summary(importance_sample(model, views, num_samples=200, seed=0, **GUIDE))
    assert np.median(khat) > 0.7
    assert summary["share_above_0_7"] >= 0.75
    assert summary["share_above_threshold"] >= summary["share_above_0_7"]
    assert summary["ess_fraction_mean"] < 0.2


def test_simvae_exact_y_guide_log_weights_match_independent_computation() -> None:
    model = make_model()
    views = sample_data(model, 5)
    samples = importance_sample(model, views, num_samples=4, seed=3, **GUIDE)
    # Recompute from the stored draws: log p(y) + sum_j [log p(z_j | y) + log p(x_j | z_j) - log q(z_j | x_j)]
    #  - log q(y | z), with no scales.
    z, y = samples.latents["z"].double(), samples.latents["y"].double()
    loc, scale = model.encoder(views)
    W, b = model.decoder.weight, model.decoder.bias
    log_p = (
        dist.Normal(0.0, PRIOR_SCALE).log_prob(y).sum(-1)
        + dist.Normal(y[:, :, None], VIEW_SCALE).log_prob(z).sum((-1, -2))
        + dist.Normal(z @ W.T + b, NOISE).log_prob(views.reshape(5, NUM_VIEWS, D)).sum((-1, -2))
    )
    log_q_z = dist.Normal(loc, scale).log_prob(z).sum((-1, -2))
    precision = 1 / PRIOR_SCALE**2 + NUM_VIEWS / VIEW_SCALE**2
    post_mean = (NUM_VIEWS / VIEW_SCALE**2) / precision * z.mean(-2)
    log_q_y = dist.Normal(post_mean, precision**-0.5).log_prob(y).sum(-1)
    # z and y were stored in float32.
    torch.testing.assert_close(samples.log_weights, log_p - log_q_z - log_q_y, rtol=1e-5, atol=1e-4)


def test_simvae_amortised_y_guide_log_weights_match_independent_computation() -> None:
    """The learned q(y | z_1..J) enters the weight, not the exact conjugate posterior."""
    model = make_model(y_guide="amortised")
    assert model.content_guide is not None
    with torch.no_grad():  # away from its zero initialisation, so it differs from any closed form
        generator = torch.Generator().manual_seed(5)
        for parameter in model.content_guide.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype) * 0.3)
    views = sample_data(model, 5)
    samples = importance_sample(model, views, num_samples=4, seed=3, **GUIDE)
    z, y = samples.latents["z"].double(), samples.latents["y"].double()
    loc, scale = model.encoder(views)
    W, b = model.decoder.weight, model.decoder.bias
    log_p = (
        dist.Normal(0.0, PRIOR_SCALE).log_prob(y).sum(-1)
        + dist.Normal(y[:, :, None], VIEW_SCALE).log_prob(z).sum((-1, -2))
        + dist.Normal(z @ W.T + b, NOISE).log_prob(views.reshape(5, NUM_VIEWS, D)).sum((-1, -2))
    )
    log_q_z = dist.Normal(loc, scale).log_prob(z).sum((-1, -2))
    with torch.no_grad():
        mean, std = model.content_guide(z)
    log_q_y = dist.Normal(mean.squeeze(-2), std.squeeze(-2)).log_prob(y).sum(-1)
    torch.testing.assert_close(samples.log_weights, log_p - log_q_z - log_q_y, rtol=1e-5, atol=1e-4)
    precision = 1 / PRIOR_SCALE**2 + NUM_VIEWS / VIEW_SCALE**2
    exact = dist.Normal((NUM_VIEWS / VIEW_SCALE**2) / precision * z.mean(-2), precision**-0.5)
    assert not torch.allclose(log_q_y, exact.log_prob(y).sum(-1), atol=1e-2), "the exact guide was used"


def test_chunking_does_not_change_the_draws_statistics() -> None:
    model = make_model()
    views = sample_data(model, 6)
    whole = importance_sample(model, views, num_samples=8, seed=0, **GUIDE)
    chunked = importance_sample(model, views, num_samples=8, seed=0, max_images_per_pass=6, **GUIDE)
    assert chunked.log_weights.shape == whole.log_weights.shape
    assert torch.isfinite(chunked.log_weights).all()
    assert chunked.latents["z"].shape == whole.latents["z"].shape == (8, 6, NUM_VIEWS, LATENT)
    # Analytic KL depends only on the guide's parameters, not on the draws or the chunking.
    torch.testing.assert_close(chunked.kl_per_dim, whole.kl_per_dim)


# --- posterior collapse ----------------------------------------------------------------------


def test_dead_latent_dimensions_are_not_active() -> None:
    latent = 5
    gen = torch.Generator().manual_seed(4)
    A = torch.randn(latent, D, generator=gen)
    A[[1, 3, 4]] = 0.0  # the mean of these dims ignores x
    encoder = LinearEncoder(A, torch.zeros(latent), torch.ones(latent))
    encoder.scale = torch.tensor([0.3, 1.0, 0.3, 1.0, 1.0])
    model = VAE(
        encoder,
        LinearDecoder(torch.randn(D, latent, generator=gen), torch.zeros(D)),
        GaussianPrior(latent),
        GaussianLikelihood(std=NOISE, link="identity"),
    ).double()
    views = torch.randn(40, 2, 1, 1, D, generator=gen)
    samples = importance_sample(model, views, num_samples=4, seed=0, **GUIDE)
    collapse = collapse_summary(samples)
    assert collapse["active_units"] == 2
    assert collapse["active_dims"] == [0, 2]
    assert collapse["kl_reference"] == "prior"
    kl = torch.tensor(collapse["kl_per_dim"])
    # Dead dims: q = N(0, 1) = p(z) exactly, so KL = 0; live dims carry information.
    torch.testing.assert_close(kl[[1, 3, 4]], torch.zeros(3), atol=1e-6, rtol=0)
    assert (kl[[0, 2]] > 0.5).all()
    # The analytic KL of a live dim agrees with a direct computation.
    loc = views.reshape(-1, D) @ A[0]
    expected = (math.log(1 / 0.3) + (0.3**2 + loc.pow(2)) / 2 - 0.5).mean()
    assert kl[0] == pytest.approx(float(expected), rel=1e-5)


def test_simvae_kl_uses_marginal_prior_of_one_view() -> None:
    model = make_model()
    views = sample_data(model, 10)
    samples = importance_sample(model, views, num_samples=2, seed=0, **GUIDE)
    assert samples.kl_reference == "marginal"
    loc, scale = model.encoder(views)
    marginal = math.sqrt(PRIOR_SCALE**2 + VIEW_SCALE**2)
    expected = (torch.log(marginal / scale) + (scale**2 + loc**2) / (2 * marginal**2) - 0.5).mean((0, 1))
    torch.testing.assert_close(samples.kl_per_dim.double(), expected, rtol=1e-5, atol=1e-6)


# --- ArviZ ------------------------------------------------------------------------------------


def exact_posterior_of_y(model: SimVAE, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``(N, d)`` and covariance ``(d, d)`` of p(y | x_1..J) (module docstring)."""
    W, b = model.decoder.weight, model.decoder.bias
    C_inv = torch.linalg.inv(VIEW_SCALE**2 * W @ W.T + NOISE**2 * torch.eye(D))
    x = views.reshape(views.shape[0], views.shape[1], D) - b
    cov_y = torch.linalg.inv(torch.eye(LATENT) / PRIOR_SCALE**2 + views.shape[1] * W.T @ C_inv @ W)
    return (x.sum(1) @ C_inv @ W) @ cov_y, cov_y


def test_iwae_function_differs_from_elbo_for_unequal_weights_and_converges() -> None:
    # The model's own amortised guide (a fixed linear encoder) is not the posterior: unequal weights.
    model = make_model()
    views = sample_data(model, 10)
    exact = exact_log_evidence(model, views)
    iwae, elbo = iwae_log_evidence(model, views, num_samples=50, seed=0, **GUIDE)
    assert (iwae - elbo > 0.1).all()  # Jensen, strictly: the weights of every item are unequal
    # With the exact posterior as guide every weight equals p(x): IWAE = ELBO = log p(x).
    exact_guide = model_with_guide()
    iwae_exact, elbo_exact = iwae_log_evidence(exact_guide, views, num_samples=5, seed=0, **GUIDE)
    torch.testing.assert_close(iwae_exact, exact, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(elbo_exact, exact, rtol=1e-9, atol=1e-9)
    # Convergence as K grows, with a proposal whose weights are bounded (over-dispersed, shifted).
    wide = model_with_guide(std_factor=1.5, shift=0.5)
    errors = [
        float((iwae_log_evidence(wide, views, num_samples=k, seed=1, **GUIDE)[0] - exact).abs().mean())
        for k in (1, 10, 1000)
    ]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.1  # nats per item, seeded


def test_held_out_elpd_matches_exact_sum_and_item_spread() -> None:
    az = arviz()
    model = model_with_guide(std_factor=1.5, shift=0.5)
    views = sample_data(model, 60, seed=5)
    exact = exact_log_evidence(model, views)
    samples = importance_sample(model, views, num_samples=2000, seed=0, **GUIDE)
    elpd = held_out_elpd(samples)
    # Monte Carlo error of the sum: the IWAE bias is about -Var(w)/(2 K p^2) per item, and the noise is
    # of the same order; with K = 2000 and bounded weights both are far below 0.5 nats over 60 items.
    assert float(elpd["elpd_loo"]) == pytest.approx(float(exact.sum()), abs=0.5)
    # The standard error is ArviZ's sqrt(N Var_i log p(x_i)) and matches the exact per-item spread.
    exact_se = math.sqrt(60 * float(exact.var(unbiased=False)))
    assert float(elpd["se"]) == pytest.approx(exact_se, rel=0.01)
    assert elpd["n_data_points"] == 60 and elpd["n_samples"] == 2000 and not elpd["warning"]
    np.testing.assert_allclose(elpd["loo_i"].values, exact.numpy(), atol=0.25)  # per item, seeded (max 0.12)
    assert "not leave-one-out" in str(elpd)
    # ArviZ's compare takes it as is.
    table = az.compare({"a": elpd, "b": held_out_elpd(samples)})
    assert set(table.index) == {"a", "b"}


def test_az_compare_ranks_the_correct_model_above_a_misspecified_one() -> None:
    az = arviz()
    # Both use a wide proposal (twice the correct posterior's sd), good for either posterior.
    correct = model_with_guide(std_factor=2.0)
    views = sample_data(correct, 80, seed=7)
    wrong = model_with_guide(std_factor=2.0)
    wrong.likelihood = GaussianLikelihood(std=2 * NOISE, link="identity").double()  # wrong decoder noise
    elpds = {}
    for name, model in (("wrong", wrong), ("correct", correct)):
        idata = to_inference_data(
            model, views, num_samples=500, num_prior_draws=0, num_predictive_draws=0, **GUIDE
        )
        elpds[name] = held_out_elpd(idata)
    table = compare_held_out(elpds)
    assert list(table.index) == ["correct", "wrong"]
    assert table.loc["wrong", "elpd_diff"] > 3 * table.loc["wrong", "dse"]
    assert table.attrs["estimator"].startswith("held-out log p(x_i)")
    # The paired standard error of the difference is ArviZ's sqrt(N Var_i(diff_i)).
    diff = elpds["correct"]["loo_i"].values - elpds["wrong"]["loo_i"].values
    assert table.loc["wrong", "dse"] == pytest.approx(math.sqrt(80 * np.var(diff)), rel=1e-9)
    assert az.compare(elpds).index[0] == "correct"
    # Stacking weights do not depend on a per-item offset common to all models, and stay defined
    # at the thousands of nats per item of real images (where ArviZ's exp() alone underflows).
    far = {name: e.copy() for name, e in elpds.items()}
    for e in far.values():
        e["loo_i"] = e["loo_i"] - 5000.0
        e["elpd_loo"] = float(e["loo_i"].sum())
    far_table = compare_held_out(far)
    np.testing.assert_allclose(far_table["weight"].values, table["weight"].values, atol=1e-4)
    assert far_table.loc["correct", "weight"] > 0.9
    # Scores of different observed values are refused.
    other = held_out_elpd(
        importance_sample(correct, sample_data(correct, 80, seed=8), num_samples=20, **GUIDE)
    )
    with pytest.raises(ValueError, match="different observed values"):
        compare_held_out({"correct": elpds["correct"], "other": other})


def test_resampled_posterior_has_exact_moments_even_with_a_too_narrow_guide() -> None:
    model = model_with_guide(std_factor=0.8)  # q narrower than the posterior (variance 0.64x)
    views = sample_data(model, 4, seed=2)
    idata = to_inference_data(
        model, views, num_samples=20000, num_predictive_draws=0, num_prior_draws=0, seed=3, **GUIDE
    )
    mean_y, cov_y = exact_posterior_of_y(model, views)
    for group, expected_ratio in (("posterior", 1.0), ("variational_posterior", 0.64)):
        y = torch.from_numpy(idata[group]["y"].values[0])  # (S, N, d)
        ratio = y.var(0) / torch.diagonal(cov_y)
        if group == "posterior":
            # Resampled draws: the exact mean and variance. Monte Carlo error with importance ESS ~5000
            # of 20000 and 20000 resampled draws: ~0.016 posterior sd for the mean; seeded, measured
            # max 0.06 sd and variance ratios 0.93-1.02; tolerances 0.1 sd and 12%.
            z_scores = (y.mean(0) - mean_y) / torch.diagonal(cov_y).sqrt()
            assert z_scores.abs().max() < 0.1
            assert ratio.sub(1.0).abs().max() < 0.12
        else:  # the raw guide draws are too narrow: the check has power
            assert ratio.mean() == pytest.approx(expected_ratio, abs=0.03)
    assert (idata.importance_sampling["khat"].values < 0.7).all()


def test_inference_data_groups_round_trip_and_standard_arviz_tools_run(tmp_path: Path) -> None:
    az = arviz()
    model = model_with_guide(std_factor=1.2)
    views = sample_data(model, 6)
    idata = to_inference_data(
        model, views, num_samples=40, num_prior_draws=30, attrs={"data": "linear"}, **GUIDE
    )
    path = write_netcdf(idata, tmp_path / "diagnostics.nc")
    back = read_netcdf(path)
    assert set(back.groups()) == {
        "posterior",
        "sample_stats",
        "variational_posterior",
        "importance_sampling",
        "observed_data",
        "posterior_predictive",
        "prior",
        "prior_predictive",
    }
    assert back.posterior["z"].dims == ("chain", "draw", "item", "view", "latent")
    assert back.posterior["z"].shape == (1, 40, 6, NUM_VIEWS, LATENT)
    # Each prior draw imagines as many items as were observed (the shape az.plot_ppc(group="prior") needs).
    assert back.prior["y"].dims == ("chain", "draw", "item", "latent")
    assert back.prior["y"].shape == (1, 30, 6, LATENT)
    assert back.prior_predictive["x"].shape == (1, 30, 6, NUM_VIEWS, 1, 1, D)
    # observed_data holds what log_px scores: the x site's values.
    np.testing.assert_allclose(back.observed_data["x"].values, views.numpy())
    samples = importance_sample(model, views, num_samples=40, seed=0, **GUIDE)
    np.testing.assert_allclose(back.importance_sampling["log_weight"].values[0], samples.log_weights.numpy())
    iwae = torch.logsumexp(samples.log_weights, 0) - math.log(40)
    np.testing.assert_allclose(back.importance_sampling["log_px"].values, iwae.numpy())
    # Each posterior draw repeats the proposal draw named in sample_stats.
    picks = back.sample_stats["proposal_draw"].values[0]
    proposal = back.variational_posterior["y"].values[0]
    np.testing.assert_array_equal(back.posterior["y"].values[0], proposal[picks, np.arange(6)[None]])
    # Prior draws of y have the prior's spread (30 draws x 2 dims; loose, seeded).
    assert float(back.prior["y"].std()) == pytest.approx(PRIOR_SCALE, rel=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert len(az.summary(back, var_names=["y"])) == 6 * LATENT
        az.plot_khat(back.importance_sampling["khat"].values)
        az.plot_ppc(back, var_names=["mean_intensity"], num_pp_samples=10, random_seed=0)
        az.plot_ppc(back, var_names=["x"], num_pp_samples=5, random_seed=0)
        az.plot_ppc(back, group="prior", var_names=["total_variation"], num_pp_samples=10, random_seed=0)
        az.plot_posterior(back, var_names=["y"], coords={"item": [0]})
        az.plot_trace(back, var_names=["y"], coords={"item": [0, 1]})
        table = az.compare({"model": held_out_elpd(back), "file": held_out_elpd(az.from_netcdf(path))})
        az.plot_compare(table)
    matplotlib.pyplot.close("all")


def test_to_inference_data_for_a_model_built_in_python_with_a_custom_prior() -> None:
    from pssl.models import DistributionPrior

    # A correlated (non-diagonal) content prior: no conjugate q(y|z), so the amortised y-guide.
    cov = 0.5 * torch.eye(LATENT) + 0.5
    model = make_model()
    model = SimVAE(
        model.encoder,
        model.decoder,
        DistributionPrior(dist.MultivariateNormal(torch.zeros(LATENT), covariance_matrix=cov)),
        GaussianViewPrior(LATENT, scale=VIEW_SCALE),
        GaussianLikelihood(std=NOISE, link="identity"),
    ).double()
    assert model.y_guide == "amortised"
    images = sample_data(make_model(), 7)[:, 0]  # (N, C, H, W) images: J identical views
    idata = to_inference_data(model, images, num_views=2, num_samples=30, num_prior_draws=400, **GUIDE)
    assert idata.posterior["y"].shape == (1, 30, 7, LATENT)
    assert idata.observed_data["x"].shape == (7, 2, 1, 1, D)
    # Prior draws of y follow the custom prior: its correlation 0.5 (400 draws; loose, seeded).
    y = torch.from_numpy(idata.prior["y"].values[0]).reshape(-1, LATENT)
    assert float(torch.corrcoef(y.T)[0, 1]) == pytest.approx(0.5, abs=0.15)
    assert np.isfinite(held_out_elpd(idata)["elpd_loo"])


def test_to_inference_data_refuses_discriminative_and_point_mass_guides() -> None:
    method = ViewEncoder(torch.randn(3, 2))
    with pytest.raises(ValueError, match="does not model images"):
        to_inference_data(method, torch.rand(4, 1, 1, D), **GUIDE)
    plugin = make_model()
    plugin.y_guide = "plugin"
    with pytest.raises(ValueError, match="point-mass sites"):
        to_inference_data(plugin, sample_data(plugin, 4), num_samples=3, **GUIDE)


def test_az_loo_on_the_file_raises_the_documented_error(tmp_path: Path) -> None:
    az = arviz()
    model = model_with_guide(std_factor=1.2)
    idata = to_inference_data(model, sample_data(model, 5), num_samples=20, num_prior_draws=0, **GUIDE)
    path = write_netcdf(idata, tmp_path / "diagnostics.nc")
    # Through pssl (in memory or read back): the reason, in ArviZ's own entry points.
    for data in (idata, read_netcdf(path)):
        for call in (az.loo, az.waic, lambda d: az.plot_loo_pit(d, y="x")):
            with pytest.raises(LooNotApplicableError, match="harmonic-mean estimator") as err:
                call(data)
            assert "held_out_elpd" in str(err.value)
        with pytest.raises(LooNotApplicableError):
            az.compare({"a": data, "b": data})
    # A plain ArviZ reader: no log_likelihood group, so ArviZ refuses; the reason is in the attributes.
    plain = az.from_netcdf(path)
    assert "log_likelihood" not in plain.groups()
    with pytest.raises(TypeError, match="log likelihood not found"):
        az.loo(plain)
    assert plain.posterior.attrs["loo_note"] == LOO_REFUSAL
    matplotlib.pyplot.close("all")


# --- representation structure ------------------------------------------------------------------


def test_structure_of_identical_views_and_item_independent_views() -> None:
    gen = torch.Generator().manual_seed(0)
    items = torch.randn(400, 1, 6, generator=gen)
    identical = structure_metrics(items.expand(400, 3, 6))
    assert identical["within_to_across"] == pytest.approx(0.0, abs=1e-12)
    assert identical["alignment"] == pytest.approx(0.0, abs=1e-12)
    independent = structure_metrics(torch.randn(400, 3, 6, generator=gen))
    assert independent["within_to_across"] == pytest.approx(1.0, abs=0.08)
    # The SimVAE prior's own draws: ratio sigma^2 / (s^2 + sigma^2), item effect sigma^2 / s^2.
    y = torch.randn(3000, 1, 6, generator=gen)
    z = y + math.sqrt(0.15) * torch.randn(3000, 3, 6, generator=gen)
    prior = structure_metrics(z)
    assert prior["within_to_across"] == pytest.approx(0.15 / 1.15, rel=0.05)
    assert prior["within_to_item_effect"] == pytest.approx(0.15, rel=0.05)
    # Uniformity: features spread over the sphere are more uniform (lower) than clustered ones.
    clustered = structure_metrics(1.0 + 0.1 * torch.randn(100, 2, 6, generator=gen))
    assert independent["uniformity"] < clustered["uniformity"] - 1.0


def test_effective_rank_of_isotropic_and_rank_one_features() -> None:
    gen = torch.Generator().manual_seed(1)
    isotropic = torch.randn(5000, 8, generator=gen)
    assert effective_rank(isotropic) == pytest.approx(8.0, rel=0.02)
    rank_one = torch.randn(500, 1, generator=gen) * torch.randn(1, 8, generator=gen)
    assert effective_rank(rank_one) == pytest.approx(1.0, abs=1e-6)


class ViewEncoder(nn.Module):
    """A discriminative-style method: encode only."""

    generative = False

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1) @ self.weight


def test_representation_structure_for_an_encoder_and_compare_plot(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(2)
    method = ViewEncoder(torch.randn(16, 4, generator=gen))
    images = torch.rand(30, 1, 4, 4, generator=gen)
    result = representation_structure(
        method, images, ViewAugmenter.identity(), 2, torch.Generator().manual_seed(0)
    )
    assert result["within_to_across"] == pytest.approx(0.0, abs=1e-12)  # identity views
    assert result["prior_within_to_across"] is None
    simvae = representation_structure(
        make_model(),
        sample_data(make_model(), 30)[:, 0],
        ViewAugmenter.identity(),
        2,
        torch.Generator().manual_seed(0),
    )
    assert simvae["prior_within_to_across"] == pytest.approx(VIEW_SCALE**2 / (PRIOR_SCALE**2 + VIEW_SCALE**2))
    assert simvae["prior_within_to_item_effect"] == pytest.approx(VIEW_SCALE**2 / PRIOR_SCALE**2)
    path = compare_structure({"encoder": result, "simvae": {"structure": simvae}}, tmp_path / "structure.png")
    assert path.is_file() and path.stat().st_size > 0
    with pytest.raises(ValueError, match="num_views"):
        representation_structure(method, images, ViewAugmenter.identity(), 1, torch.Generator())


def test_diagnose_a_discriminative_method_writes_structure_only(tmp_path: Path) -> None:
    method = ViewEncoder(torch.randn(16, 4, generator=torch.Generator().manual_seed(3)))
    images = (torch.rand(20, 1, 4, 4, generator=torch.Generator().manual_seed(4)) * 255).to(torch.uint8)
    out = diagnose(
        method, images, augmenter=ViewAugmenter.identity(), num_views=2, out_dir=tmp_path, name="enc", **GUIDE
    )
    assert set(out["readings"]) == {"structure"}
    assert "log_evidence" not in out
    assert (tmp_path / "diagnostics_structure.png").is_file()
    written = json.loads((tmp_path / "diagnostics.json").read_text())
    assert written["structure"]["prior_within_to_across"] is None
    assert not (tmp_path / "diagnostics.nc").exists()


def test_point_mass_y_guide_and_flat_prior_are_flagged() -> None:
    plugin = make_model()
    plugin.y_guide = "plugin"
    samples = importance_sample(plugin, sample_data(plugin, 4), num_samples=3, seed=0, **GUIDE)
    evidence = evidence_summary(samples, eight_bit=False)
    assert not evidence["is_bound"] and evidence["point_mass_sites"] == ["y"]
    flat = make_model()
    flat.content_prior = FlatPrior(LATENT).double()
    samples = importance_sample(flat, sample_data(flat, 4), num_samples=3, seed=0, **GUIDE)
    # Flat p(y): no proper marginal for one view; the KL is to p(z | y) at the guide's y (Monte Carlo).
    assert samples.kl_reference == "conditional"
    assert samples.view_marginal.within_to_across_ratio() == 0.0


# --- conventions ------------------------------------------------------------------------------


def test_bits_per_dim_dequantisation_convention() -> None:
    assert bits_per_dim(100 * math.log(2), 100, continuous=False, eight_bit=True) == pytest.approx(1.0)
    # A density on 8-bit data scaled as k / 255: + log 255 per dimension (the bin probability).
    assert bits_per_dim(100 * math.log(2), 100, continuous=True, eight_bit=True) == pytest.approx(
        1 + math.log2(255)
    )
    # With the model's likelihood object the library's convention decides, and agrees.
    gaussian = GaussianLikelihood(std=0.1)
    assert bits_per_dim(
        100 * math.log(2), 100, continuous=False, eight_bit=True, likelihood=gaussian
    ) == pytest.approx(1 + math.log2(255))
    assert bits_per_dim(100 * math.log(2), 100, continuous=True, eight_bit=False) == pytest.approx(1.0)
    assert khat_threshold(100) == pytest.approx(0.5)
    assert khat_threshold(10**6) == pytest.approx(0.7)


def small_model(name: str, likelihood: str) -> object:
    from pssl.models.base import ModelSpec, build_model

    spec = ModelSpec(
        image_shape=(1, 8, 8),
        latent_dim=3,
        num_views=2,
        encoder=Component("mlp", {"hidden": "16"}),
        decoder=Component("mlp", {"hidden": "16"}),
        prior=Component("gaussian"),
        view_prior=Component("gaussian"),
        likelihood=Component(likelihood),
    )
    return build_model(name, spec).double()


def test_multimodal_bits_per_dim_counts_the_observed_half_images() -> None:
    from pssl.diagnostics.labels import observed_values_per_item
    from pssl.diagnostics.report import evidence_reading

    torch.manual_seed(0)
    model = small_model("simvae-multimodal", "bernoulli")
    views = (torch.rand(6, 2, 1, 8, 8) > 0.5).double()  # binary: Bernoulli is then a true pmf
    samples = importance_sample(model, views, num_samples=8, seed=0, **GUIDE)
    # Hand count: modality A is the top half (1 x 4 x 8) of view 0, modality B the bottom half of
    # view 1: 32 + 32 = 64 observed values per item, not J x C x H x W = 128.
    assert samples.num_dims == 64 == observed_values_per_item(model, views)
    assert samples.observed.shape == (6, 2, 1, 4, 8)
    evidence = evidence_summary(samples, eight_bit=True, likelihood=model.likelihood)
    assert evidence["dims_per_item"] == 64
    assert evidence["bits_per_dim"] == pytest.approx(-evidence["log_px_iwae_nats"] / (64 * math.log(2)))
    assert "discrete likelihood" in evidence_reading(evidence)


def test_discretised_logistic_is_labelled_discrete() -> None:
    from pssl.diagnostics.report import evidence_reading

    torch.manual_seed(1)
    model = small_model("simvae", "discretized-logistic")
    views = torch.randint(0, 256, (5, 2, 1, 8, 8)).double() / 255
    samples = importance_sample(model, views, num_samples=6, seed=0, **GUIDE)
    assert samples.discrete_observation and not samples.binary_observation
    evidence = evidence_summary(samples, eight_bit=True, likelihood=model.likelihood)
    assert evidence["discrete_likelihood"] and not evidence["dequantised"]
    # A pmf: no dequantisation offset, and log p(x) <= 0.
    assert evidence["log_px_iwae_nats"] < 0
    assert evidence["bits_per_dim"] == pytest.approx(-evidence["log_px_iwae_nats"] / (128 * math.log(2)))
    reading = evidence_reading(evidence)
    assert "discrete likelihood" in reading and "dequantised" not in reading
    idata = to_inference_data(model, views, num_samples=6, num_prior_draws=4, num_predictive_draws=2, **GUIDE)
    assert idata.importance_sampling.attrs["likelihood_is_discrete"] == 1


def test_diagnose_readings_for_an_over_narrow_guide() -> None:
    model = model_with_guide(std_factor=0.1)
    images = sample_data(model, 10)[:, 0]
    out = diagnose(model, images, augmenter=ViewAugmenter.identity(), num_views=2, num_samples=50, **GUIDE)
    assert set(out["readings"]) == {
        "log_evidence",
        "khat",
        "collapse",
        "predictive",
        "held_out_elpd",
        "structure",
    }
    assert (
        out["held_out_elpd"]["num_items"] == 10
        and "az.loo does not apply" in out["readings"]["held_out_elpd"]
    )
    assert out["readings"]["khat"].startswith("k-hat above 0.7 for")
    assert "nats per item" in out["readings"]["log_evidence"]
    # Identity views: both views of an item are equal, so their representations are too.
    assert out["structure"]["within_to_across"] == pytest.approx(0.0, abs=1e-12)
    text = markdown(out)
    assert out["readings"]["khat"] in text and "| bits per dimension |" in text


# --- end to end ----------------------------------------------------------------------------------


def test_diagnose_run_end_to_end(tmp_path: Path) -> None:
    torch.set_default_dtype(torch.float32)
    data = load_dataset("digits", {"limit": 128}, seed=0)
    config = Config(
        model=Component("simvae"),
        data=Component("digits", {"limit": 128}),
        encoder=Component("mlp", {"hidden": "32,16"}),
        decoder=Component("mlp", {"hidden": "16,32"}),
        latent_dim=4,
        batch_size=32,
        epochs=1,
        lr=1e-3,
        out=str(tmp_path / "run"),
        progress=False,
        device="cpu",
    )
    train(config, data=data)
    out = diagnose_run(tmp_path / "run", num_samples=20, max_items=16)
    run = tmp_path / "run"
    for name in (
        "diagnostics.json",
        "diagnostics.md",
        "diagnostics.nc",
        "diagnostics_khat.png",
        "diagnostics_ppc.png",
        "diagnostics_latents.png",
        "diagnostics_prior_samples.png",
        "diagnostics_structure.png",
    ):
        assert (run / name).is_file(), name
    written = json.loads((run / "diagnostics.json").read_text())
    assert written["num_items"] == 16 and written["num_samples"] == 20
    assert written["log_evidence"]["dims_per_item"] == 2 * 64
    assert written["collapse"]["latent_dim"] == 4
    assert math.isfinite(written["log_evidence"]["log_px_iwae_nats"])
    assert written["log_evidence"]["iwae_minus_elbo_nats"] >= 0
    assert out["readings"].keys() == written["readings"].keys()
    idata = read_netcdf(run / "diagnostics.nc")
    assert idata.posterior["z"].shape == (1, 20, 16, 2, 4)
    matplotlib.pyplot.close("all")
