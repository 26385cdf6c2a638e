"""The hierarchical importance proposal and AIS against exact answers.

Linear-Gaussian models with orthogonal decoder columns (so the likelihood of one view,
as a function of z, is a diagonal Gaussian):

    y ~ p(y),  z_j | y ~ N(y, sigma^2 I),  x_j | z_j ~ N(W z_j + b, tau^2 I).

Their encoder is the exact single-view posterior under the Gaussian moments of the
marginal prior of z, N(mu_z, v_z): q(z_j | x_j) has precision 1/v_z + diag(W^T W)/tau^2.
Dividing that prior out gives back the exact likelihood message, so the hierarchical
proposal is the exact posterior, for a Gaussian p(y) and (component by component) for a
Gaussian mixture p(y): every importance weight equals log p(x).
"""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pssl.diagnostics import (
    compare_held_out,
    diagnose,
    evidence_summary,
    held_out_elpd,
    importance_sample,
    pareto_summary,
    to_inference_data,
)
from pssl.diagnostics.ais import ais_log_evidence, sigmoid_schedule
from pssl.diagnostics.proposal import TemperingError
from pssl.models import sites
from pssl.models.likelihoods import BernoulliLikelihood, GaussianLikelihood
from pssl.models.priors import GaussianPrior, GaussianViewPrior, build_prior
from pssl.models.simvae import SimVAE
from pssl.models.vae import VAE

D, LATENT, PRIOR_SCALE, VIEW_SCALE, NOISE, J = 3, 2, 1.3, 0.6, 0.4, 2
EXACT = {"proposal_scale": 1.0}
"""The proposal with its messages unwidened: exact where the encoder is."""


@pytest.fixture(autouse=True)
def double_precision():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


class LinearDecoder(nn.Module):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.weight, self.bias = weight, bias

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (z @ self.weight.T + self.bias).reshape(*z.shape[:-1], 1, 1, D)


class LinearEncoder(nn.Module):
    """q(z | x) = N(A x + c, diag(scale^2)), fixed."""

    def __init__(self, A: torch.Tensor, c: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.A, self.c, self.scale = A, c, scale
        self.latent_dim = LATENT
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc = x.reshape(*x.shape[:-3], D) @ self.A.T + self.c
        return loc, self.scale.expand_as(loc)


def decoder_weights() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(D, LATENT, generator=gen))
    return (q * torch.tensor([1.5, 0.7])).contiguous(), torch.randn(D, generator=gen)


def exact_encoder(marginal_mean: torch.Tensor, marginal_var: torch.Tensor, *, noise: float = NOISE):
    """The single-view posterior of z under the prior N(marginal_mean, marginal_var) (diagonal)."""
    W, b = decoder_weights()
    precision = 1 / marginal_var + (W * W).sum(0) / noise**2
    A = (W / noise**2).T / precision[:, None]
    return LinearEncoder(A, -A @ b + marginal_mean / marginal_var / precision, precision.rsqrt())


def gaussian_simvae(y_guide: str = "exact", *, encoder_scale: float = 1.0) -> SimVAE:
    W, b = decoder_weights()
    encoder = exact_encoder(torch.zeros(LATENT), torch.full((LATENT,), PRIOR_SCALE**2 + VIEW_SCALE**2))
    encoder.scale = encoder.scale * encoder_scale
    return SimVAE(
        encoder,
        LinearDecoder(W, b),
        GaussianPrior(LATENT, scale=PRIOR_SCALE),
        GaussianViewPrior(LATENT, scale=VIEW_SCALE),
        # likelihood scale 50 on N(., 50 NOISE^2) is the proper density N(., NOISE^2)
        GaussianLikelihood(std=NOISE * math.sqrt(50.0), link="identity", scale=50.0),
        y_guide=y_guide,
        beta=0.3,
    ).double()


def views_covariance(component_variance: torch.Tensor, num_views: int = J) -> torch.Tensor:
    """Cov of the J stacked views given the content component: y variance ``component_variance``."""
    W, _ = decoder_weights()
    eye_j, eye_d = torch.eye(num_views), torch.eye(LATENT)
    cov_z = torch.kron(
        torch.ones(num_views, num_views), torch.diag(component_variance)
    ) + VIEW_SCALE**2 * torch.kron(eye_j, eye_d)
    big_w = torch.kron(eye_j, W)
    return big_w @ cov_z @ big_w.T + NOISE**2 * torch.eye(num_views * D)


def gaussian_evidence(views: torch.Tensor) -> torch.Tensor:
    _, b = decoder_weights()
    normal = dist.MultivariateNormal(b.repeat(J), views_covariance(torch.full((LATENT,), PRIOR_SCALE**2)))
    return normal.log_prob(views.reshape(views.shape[0], -1))


def sample_views(num_items: int, seed: int = 0) -> torch.Tensor:
    _, b = decoder_weights()
    normal = dist.MultivariateNormal(b.repeat(J), views_covariance(torch.full((LATENT,), PRIOR_SCALE**2)))
    torch.manual_seed(seed)
    return normal.sample((num_items,)).reshape(num_items, J, 1, 1, D)


# --- the hierarchical proposal is exact where the model is ----------------------------------


@pytest.mark.parametrize("y_guide", ["exact", "plugin", "amortised"])
def test_hierarchical_proposal_gives_exact_log_evidence_whatever_the_y_guide(y_guide: str) -> None:
    model = gaussian_simvae(y_guide)
    views = sample_views(12)
    samples = importance_sample(model, views, num_samples=6, seed=0, **EXACT)
    exact = gaussian_evidence(views)
    torch.testing.assert_close(samples.log_weights, exact.expand(6, -1), rtol=0, atol=1e-9)
    evidence = evidence_summary(samples, eight_bit=False)
    assert evidence["is_bound"] and evidence["proposal"] == "hierarchical"
    assert evidence["tempering"] == "proper"
    # The training guide is a poorer proposal: its weights vary (the plug-in's are not weights at all).
    if y_guide != "plugin":
        guide = importance_sample(model, views, num_samples=6, seed=0, proposal="guide")
        assert float(guide.log_weights.std(0).mean()) > 0.1


def test_hierarchical_proposal_is_exact_for_a_vae() -> None:
    W, b = decoder_weights()
    model = VAE(
        exact_encoder(torch.zeros(LATENT), torch.ones(LATENT)),
        LinearDecoder(W, b),
        GaussianPrior(LATENT),
        GaussianLikelihood(std=NOISE, link="identity"),
    ).double()
    views = sample_views(10)
    one_view = dist.MultivariateNormal(b, W @ W.T + NOISE**2 * torch.eye(D))
    exact = one_view.log_prob(views.reshape(10, J, D)).sum(1)
    samples = importance_sample(model, views, num_samples=5, seed=1, **EXACT)
    torch.testing.assert_close(samples.log_weights, exact.expand(5, -1), rtol=0, atol=1e-9)


def gmm_simvae() -> tuple[SimVAE, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    prior = build_prior("gmm", LATENT, {"components": 3, "spread": 1.0}).double()
    weights = F.softmax(prior.logits, -1).detach()
    means, scales = prior.means.detach(), prior.scales().detach()
    mean_y = (weights[:, None] * means).sum(0)
    var_y = (weights[:, None] * (scales**2 + means**2)).sum(0) - mean_y**2
    W, b = decoder_weights()
    model = SimVAE(
        exact_encoder(mean_y, var_y + VIEW_SCALE**2),
        LinearDecoder(W, b),
        prior,
        GaussianViewPrior(LATENT, scale=VIEW_SCALE),
        GaussianLikelihood(std=NOISE, link="identity"),
        y_guide="plugin",
    ).double()
    return model, weights, means, scales


def test_gmm_prior_sums_its_component_exactly_through_to_inference_data() -> None:
    model, weights, means, scales = gmm_simvae()
    views = sample_views(8)
    W, b = decoder_weights()
    big_w = torch.kron(torch.eye(J), W)
    per_component = torch.stack(
        [
            weights[c].log()
            + dist.MultivariateNormal(
                big_w @ means[c].repeat(J) + b.repeat(J), views_covariance(scales[c] ** 2)
            ).log_prob(views.reshape(8, -1))
            for c in range(3)
        ]
    )
    exact = torch.logsumexp(per_component, 0)
    idata = to_inference_data(model, views, num_samples=5, num_prior_draws=3, num_predictive_draws=2, **EXACT)
    weights_drawn = torch.from_numpy(idata.importance_sampling["log_weight"].values[0])
    torch.testing.assert_close(weights_drawn, exact.expand(5, -1), rtol=0, atol=1e-9)
    assert idata.importance_sampling.attrs["proposal"] == "hierarchical"
    assert idata.prior["c"].shape == (1, 3, 8)  # the prior group keeps the sampled component


class GlobalNoiseVAE(VAE):
    """A VAE whose observation noise is a global latent, log tau ~ N(0, 1), outside the items plate."""

    def model_program(self, batch) -> None:
        log_noise = pyro.sample("log_noise", dist.Normal(torch.tensor(0.0), torch.tensor(1.0)))
        with pyro.plate(sites.ITEMS, size=batch.num_items, subsample=batch.index, dim=sites.ITEMS_DIM):
            with pyro.plate(sites.VIEWS, batch.num_views, dim=sites.VIEWS_DIM):
                latent = self.prior.pyro_sample(sites.VIEW_LATENT, (batch.batch_size, batch.num_views))
                loc = self.decoder(latent)
                pyro.sample(sites.OBSERVATION, dist.Normal(loc, log_noise.exp()).to_event(3), obs=batch.views)


def test_a_global_latent_needs_guide_and_its_draws_condition_the_estimate() -> None:
    W, b = decoder_weights()
    model = GlobalNoiseVAE(
        exact_encoder(torch.zeros(LATENT), torch.ones(LATENT)),
        LinearDecoder(W, b),
        GaussianPrior(LATENT),
        GaussianLikelihood(std=NOISE, link="identity"),
    ).double()
    views = sample_views(6)
    with pytest.raises(ValueError, match=r"global latent sites \['log_noise'\].*guide="):
        to_inference_data(model, views, num_samples=3)

    def global_guide(*args, **kwargs) -> None:  # the posterior of the global latent: a point at log tau
        pyro.sample("log_noise", dist.Delta(torch.tensor(math.log(NOISE))))

    idata = to_inference_data(model, views, num_samples=4, guide=global_guide, num_prior_draws=0, **EXACT)
    exact = (
        dist.MultivariateNormal(b, W @ W.T + NOISE**2 * torch.eye(D)).log_prob(views.reshape(6, J, D)).sum(1)
    )
    np.testing.assert_allclose(idata.importance_sampling["log_px"].values, exact.numpy(), atol=1e-9)
    assert "log_noise" not in idata.posterior  # a global draw is conditioned on, not an item's latent


# --- AIS ----------------------------------------------------------------------------------------


def test_ais_is_exact_from_the_exact_proposal_and_converges_from_a_poor_one() -> None:
    views = sample_views(6, seed=3)
    exact = gaussian_evidence(views)
    result = ais_log_evidence(gaussian_simvae(), views, num_chains=2, num_steps=4, leapfrog_steps=2, **EXACT)
    torch.testing.assert_close(result.log_weights, exact.expand(2, -1), rtol=0, atol=1e-9)
    assert result.tempering == "proper"
    # A proposal 2x too narrow: importance sampling with as many draws is off by about a nat, AIS is not.
    # (AIS's log-weight variance falls as 1/T; with 4 chains and T = 300 the error is about 0.1.)
    poor = gaussian_simvae(encoder_scale=0.5)
    ais = ais_log_evidence(poor, views, num_chains=4, num_steps=300, leapfrog_steps=2, seed=0, **EXACT)
    samples = importance_sample(poor, views, num_samples=4, seed=0, **EXACT)
    is_error = float((torch.logsumexp(samples.log_weights, 0) - math.log(4) - exact).abs().mean())
    ais_error = float((ais.log_px - exact).abs().mean())
    assert ais_error < 0.2, (ais_error, is_error)
    assert is_error > 3 * ais_error, (ais_error, is_error)
    assert 0.3 < float(ais.acceptance.mean()) < 1.0


def test_sigmoid_schedule_runs_from_0_to_1_increasing() -> None:
    betas = sigmoid_schedule(50)
    assert float(betas[0]) == 0.0 and float(betas[-1]) == 1.0 and bool((betas.diff() > 0).all())


# --- tempering, views ----------------------------------------------------------------------------


def tempered_bernoulli() -> SimVAE:
    W, b = decoder_weights()
    encoder = exact_encoder(torch.zeros(LATENT), torch.full((LATENT,), PRIOR_SCALE**2 + VIEW_SCALE**2))
    return SimVAE(
        encoder,
        LinearDecoder(W, b),
        GaussianPrior(LATENT, scale=PRIOR_SCALE),
        GaussianViewPrior(LATENT, scale=VIEW_SCALE),
        BernoulliLikelihood(scale=99.5),
        y_guide="plugin",
    ).double()


def test_tempered_bernoulli_is_refused_or_scored_untempered_and_labelled() -> None:
    model = tempered_bernoulli()
    views = (torch.rand(5, J, 1, 1, D, generator=torch.Generator().manual_seed(0)) > 0.5).double()
    with pytest.raises(
        TemperingError, match=r"Bernoulli is tempered \(scale 99.5\).*not a normalised density"
    ):
        importance_sample(model, views, num_samples=3)
    with pytest.raises(TemperingError):
        to_inference_data(model, views, num_samples=3)
    samples = importance_sample(model, views, num_samples=3, tempering="untempered")
    assert samples.tempering == "untempered"
    assert evidence_summary(samples, eight_bit=False)["tempering"] == "untempered"
    # diagnose reports the refusal in one line and still measures the representation.
    from pssl.augment import ViewAugmenter

    images = views[:, 0]
    out = diagnose(model, images, augmenter=ViewAugmenter.identity(), num_views=J, num_samples=3)
    assert "not a normalised density" in out["log_evidence"]["refused"]
    assert out["readings"]["log_evidence"].startswith("no log p(x):") and "structure" in out
    out = diagnose(
        model, images, augmenter=ViewAugmenter.identity(), num_views=J, num_samples=3, tempering="untempered"
    )
    assert "of the untempered model" in out["readings"]["log_evidence"]


def noisy_views(images: torch.Tensor, num_views: int, generator: torch.Generator) -> torch.Tensor:
    """A test augmenter: J copies with Gaussian noise drawn from ``generator``."""
    noise = torch.randn(
        images.shape[0], num_views, *images.shape[1:], generator=generator, dtype=images.dtype
    )
    return images[:, None] + 0.1 * noise


def test_compare_held_out_refuses_models_scored_on_different_views() -> None:
    model = gaussian_simvae()
    images = sample_views(10)[:, 0]
    options = {"augmenter": noisy_views, "num_views": J, "num_samples": 5, "num_prior_draws": 0}
    first = to_inference_data(model, images, views_seed=0, seed=0, **options)
    other_seed = to_inference_data(gaussian_simvae("plugin"), images, views_seed=0, seed=1, **options)
    other_views = to_inference_data(model, images, views_seed=1, seed=0, **options)
    table = compare_held_out({"a": first, "b": other_seed})  # another run's draws, the same views
    assert set(table.index) == {"a", "b"}
    assert held_out_elpd(first)["views"].endswith("views_seed=0")
    with pytest.raises(ValueError, match="different views.*views_seed"):
        compare_held_out({"a": first, "c": other_views})


def test_the_default_widened_proposal_stays_accurate_on_the_exact_model() -> None:
    # Wider than the exact posterior, its weights are bounded; it spends draws (ESS), not accuracy.
    views = sample_views(20)
    samples = importance_sample(gaussian_simvae(), views, num_samples=300, seed=0)
    summary, _, _ = pareto_summary(samples)
    assert samples.proposal_scale > 1 and summary["khat_median"] < 0.7  # seeded: 0.49
    estimate = torch.logsumexp(samples.log_weights, 0) - math.log(300)
    # The price of the margin where the encoder is exact: K = 300 draws give 0.1 nats (0.29 at most)
    # against exactly 0 at proposal_scale = 1.
    assert float((estimate - gaussian_evidence(views)).abs().mean()) < 0.2  # seeded: 0.10


def test_a_flat_content_prior_is_flagged_as_improper() -> None:
    from pssl.models.priors import FlatPrior

    model = gaussian_simvae()
    model.content_prior = FlatPrior(LATENT).double()
    evidence = evidence_summary(importance_sample(model, sample_views(4), num_samples=3), eight_bit=False)
    assert evidence["improper_sites"] == ["y"]


def test_khat_of_the_hierarchical_proposal_on_a_mismatched_encoder_is_reported() -> None:
    # An encoder 3x too narrow makes heavy-tailed weights; k-hat says so (it is not hidden by the proposal).
    summary, khat, _ = pareto_summary(
        importance_sample(gaussian_simvae(encoder_scale=1 / 3), sample_views(20), num_samples=200, **EXACT)
    )
    assert summary["share_above_0_7"] > 0.5


def test_pssl_diagnose_on_a_gmm_prior_run_with_ais(tmp_path, capsys) -> None:
    import json

    from pssl.cli import main

    torch.set_default_dtype(torch.float32)
    out = tmp_path / "gmm"
    tiny = [
        "epochs=1",
        "batch_size=32",
        "latent_dim=3",
        "encoder.hidden=16",
        "decoder.hidden=16",
        "progress=false",
    ]
    options = ["model=simvae", "prior=gmm", "prior.components=3", "objective=traceenum", "data=digits"]
    assert main(["train", *options, "data.limit=96", f"out={out}", *tiny]) == 0
    code = main(
        ["diagnose", str(out), "--num-samples", "10", "--max-items", "6", "--estimator", "ais"]
        + ["--ais-chains", "2", "--ais-steps", "3", "--views-seed", "4"]
    )
    assert code == 0
    written = json.loads((out / "diagnostics.json").read_text())
    assert written["views_seed"] == 4 and written["views"].endswith("views_seed=4")
    assert written["log_evidence"]["proposal"] == "hierarchical" and written["log_evidence"]["is_bound"]
    assert math.isfinite(written["log_evidence"]["log_px_iwae_nats"])
    assert written["ais"]["num_chains"] == 2 and math.isfinite(written["ais"]["log_px_ais_nats"])
    assert "AIS log p(x)" in capsys.readouterr().out
