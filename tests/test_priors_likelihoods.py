"""Priors and likelihoods: a conformance battery over every registered pair, closed forms, refusals.

The battery is parametrised from the registries, so a newly registered prior,
view prior or likelihood gets every check by registering.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pssl.augment import build_augmenter
from pssl.config import Component, Config
from pssl.datasets import load_dataset
from pssl.inference.objectives import ELBO, build_objective
from pssl.inference.train import train
from pssl.models.base import ModelSpec, ViewBatch, build_model
from pssl.models.encoders import GaussianEncoder
from pssl.models.likelihoods import (
    LIKELIHOODS,
    BernoulliLikelihood,
    ContinuousBernoulliLikelihood,
    DiscretizedLogistic,
    DiscretizedLogisticLikelihood,
    GaussianLikelihood,
    LaplaceLikelihood,
    LearnedGaussianLikelihood,
    bits_per_dim,
    build_likelihood,
    continuous_bernoulli_log_normalizer,
)
from pssl.models.priors import (
    PRIORS,
    VIEW_PRIORS,
    DistributionPrior,
    GaussianPrior,
    GaussianViewPrior,
    MixturePrior,
    StudentTPrior,
    VampPrior,
    build_prior,
    build_view_prior,
)
from pssl.models.simvae import SimVAE
from pssl.models.vae import VAE
from pssl.networks import build_decoder

LATENT = 3
TINY = {"hidden": "16"}
IMAGE_SHAPE = (1, 8, 8)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tensors here are tiny: intra-op threads only add synchronisation (and slow a busy machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", {"limit": 128}, seed=0)


@pytest.fixture(scope="module")
def fixed_batch(digits) -> ViewBatch:
    """32 items x 2 augmented views of the digits, drawn once."""
    images = digits.train.float_images(torch.arange(32))
    augmenter = build_augmenter("digits", digits.train.image_shape)
    views = augmenter(images, 2, torch.Generator().manual_seed(0))
    return ViewBatch(views=views, index=torch.arange(32), num_items=len(digits.train))


def spec(
    prior: str = "gaussian", likelihood: str = "bernoulli", view_prior: str = "gaussian", **options
) -> ModelSpec:
    return ModelSpec(
        image_shape=IMAGE_SHAPE,
        latent_dim=LATENT,
        num_views=2,
        encoder=Component("mlp", dict(TINY)),
        decoder=Component("mlp", dict(TINY)),
        prior=Component(prior, options.get("prior_options", {})),
        view_prior=Component(view_prior, options.get("view_prior_options", {})),
        likelihood=Component(likelihood, options.get("likelihood_options", {})),
    )


def tiny_parts() -> tuple[GaussianEncoder, nn.Module]:
    encoder = GaussianEncoder(IMAGE_SHAPE, LATENT, Component("mlp", dict(TINY)))
    decoder = build_decoder("mlp", LATENT, IMAGE_SHAPE, dict(TINY))
    return encoder, decoder


def fit_steps(model: nn.Module, batch: ViewBatch, steps: int = 5, lr: float = 1e-2) -> list[float]:
    """Adam steps on one fixed batch with common random numbers (the same noise every step).

    A prior with an enumerated site (``gmm``) is fitted with ``traceenum``, the only
    objective that accepts it; every other prior with the default ``trace``.
    """
    prior = getattr(model, "content_prior", None) or getattr(model, "prior", None)
    objective = ELBO(model, build_objective("traceenum") if getattr(prior, "enumerated", False) else None)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        pyro.set_rng_seed(0)
        output = objective(batch)
        assert torch.isfinite(output.loss), output.nonfinite_sites()
        for name, value in output.terms.items():
            assert torch.isfinite(value), name
        optimizer.zero_grad()
        output.loss.backward()
        for name, param in model.named_parameters():
            assert param.grad is None or torch.isfinite(param.grad).all(), name
        optimizer.step()
        losses.append(float(output.loss.detach()))
    return losses


def assert_decreases(losses: list[float]) -> None:
    first, last = sum(losses[:2]) / 2, sum(losses[-2:]) / 2
    assert last < first, f"loss did not decrease: {losses}"


def check_samples(model: nn.Module, prior, batch: ViewBatch) -> None:
    """Prior samples, decoded samples and likelihood samples have the right shape and support."""
    model.eval()
    with torch.no_grad():
        if prior.proper:
            latent = prior.distribution((5,)).sample()
            assert latent.shape == (5, LATENT) and torch.isfinite(latent).all()
            images = model.sample_images(5)
            assert images.shape == (5, *IMAGE_SHAPE) and torch.isfinite(images).all()
            assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0  # sigmoid links: means in [0, 1]
        else:
            with pytest.raises(ValueError, match="improper"):
                model.sample_images(5)
        decoded = model.decoder(model.encode(batch.views[:4, 0]))
        drawn = model.likelihood.distribution(decoded).sample()
        assert drawn.shape == (4, *IMAGE_SHAPE)
        model.likelihood.check_data(drawn, name="likelihood samples")  # samples lie in the declared support
        assert model.reconstruct(batch.views[:4, 0]).shape == (4, *IMAGE_SHAPE)


def _factory_attr(registry, name: str, attr: str, default):
    return getattr(registry.entry(name).factory, attr, default)


SIMVAE_PRIORS = [n for n in PRIORS.names() if not _factory_attr(PRIORS, n, "needs_encoder", False)]
VAE_PRIORS = [n for n in PRIORS.names() if _factory_attr(PRIORS, n, "proper", True)]
NON_CONJUGATE = {"laplace", "studentt", "mixture", "gmm"}


# --- the battery ----------------------------------------------------------------------------


@pytest.mark.parametrize("likelihood", LIKELIHOODS.names())
@pytest.mark.parametrize("prior", SIMVAE_PRIORS)
def test_simvae_battery(prior: str, likelihood: str, digits, fixed_batch: ViewBatch) -> None:
    torch.manual_seed(0)
    model = build_model("simvae", spec(prior, likelihood))
    expected_guide = "amortised" if prior in NON_CONJUGATE else "exact"
    if prior in ("gaussian", "flat") or prior in NON_CONJUGATE:
        assert model.y_guide == expected_guide
    model.check_data(digits.train.float_images())  # the data lie in every likelihood's support
    assert_decreases(fit_steps(model, fixed_batch))
    check_samples(model, model.content_prior, fixed_batch)


@pytest.mark.parametrize("likelihood", LIKELIHOODS.names())
@pytest.mark.parametrize("prior", VAE_PRIORS)
def test_vae_battery(prior: str, likelihood: str, fixed_batch: ViewBatch) -> None:
    torch.manual_seed(0)
    model = build_model("vae", spec(prior, likelihood))
    assert_decreases(fit_steps(model, fixed_batch))
    check_samples(model, model.prior, fixed_batch)


@pytest.mark.parametrize("y_guide", ["auto", "plugin"])
@pytest.mark.parametrize("view_prior", VIEW_PRIORS.names())
def test_view_prior_battery(view_prior: str, y_guide: str, fixed_batch: ViewBatch) -> None:
    torch.manual_seed(0)
    model = build_model("simvae", spec(view_prior=view_prior), {"y_guide": y_guide})
    if y_guide == "auto":
        assert model.y_guide == ("exact" if view_prior == "gaussian" else "amortised")
    latent = model.view_prior.distribution(torch.zeros(4, 1, LATENT)).sample()
    assert latent.shape == (4, 1, LATENT)
    assert_decreases(fit_steps(model, fixed_batch))
    check_samples(model, model.content_prior, fixed_batch)


@pytest.mark.parametrize("learn", [False, True])
@pytest.mark.parametrize("view_prior", VIEW_PRIORS.names())
def test_learned_view_scale_is_a_parameter(view_prior: str, learn: bool) -> None:
    module = build_view_prior(view_prior, LATENT, {"scale": "0.5", "learn": str(learn).lower()})
    assert any(p.numel() for p in module.parameters()) == learn
    torch.testing.assert_close(module.scale(), torch.tensor(0.5))


def test_custom_distribution_prior_battery(fixed_batch: ViewBatch) -> None:
    """A user-supplied correlated Gaussian p(y): amortised guide, trains, samples."""
    torch.manual_seed(0)
    cov = torch.tensor([[1.0, 0.8, 0.0], [0.8, 1.0, 0.0], [0.0, 0.0, 2.0]])
    encoder, decoder = tiny_parts()
    model = SimVAE(
        encoder,
        decoder,
        dist.MultivariateNormal(torch.zeros(LATENT), covariance_matrix=cov),  # wrapped automatically
        GaussianViewPrior(LATENT),
        BernoulliLikelihood(),
    )
    assert isinstance(model.content_prior, DistributionPrior)
    assert model.y_guide == "amortised"
    assert_decreases(fit_steps(model, fixed_batch))
    check_samples(model, model.content_prior, fixed_batch)


def test_learned_distribution_prior_is_trained_and_saved(fixed_batch: ViewBatch) -> None:
    class LearnedCorrelatedGaussian(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.loc = nn.Parameter(torch.zeros(LATENT))
            self.raw_tril = nn.Parameter(torch.zeros(LATENT, LATENT))

        def forward(self) -> dist.MultivariateNormal:
            tril = torch.tril(self.raw_tril, -1) + torch.diag(self.raw_tril.diagonal().exp())
            return dist.MultivariateNormal(self.loc, scale_tril=tril)

    torch.manual_seed(0)
    encoder, decoder = tiny_parts()
    model = VAE(encoder, decoder, DistributionPrior(LearnedCorrelatedGaussian()), BernoulliLikelihood())
    assert {"prior.source.loc", "prior.source.raw_tril"} <= set(model.state_dict())
    before = model.prior.source.raw_tril.detach().clone()
    fit_steps(model, fixed_batch, steps=3)
    assert not torch.equal(before, model.prior.source.raw_tril.detach())


def test_distribution_prior_recognises_diagonal_gaussian() -> None:
    loc, scale = torch.tensor([0.5, -1.0, 0.0]), torch.tensor([2.0, 1.0, 0.5])
    prior = DistributionPrior(dist.Normal(loc, scale).to_event(1))
    mean, precision = prior.gaussian()
    torch.testing.assert_close(mean, loc)
    torch.testing.assert_close(precision, scale.pow(-2))
    encoder, decoder = tiny_parts()
    assert (
        SimVAE(encoder, decoder, prior, GaussianViewPrior(LATENT), BernoulliLikelihood()).y_guide == "exact"
    )
    improper = DistributionPrior(dist.ImproperUniform(dist.constraints.real, (), (LATENT,)))
    assert not improper.proper
    assert (
        DistributionPrior(lambda: dist.StudentT(2.0, torch.zeros(LATENT), 1.0).to_event(1)).gaussian() is None
    )


def test_vampprior_is_bound_to_the_vae_encoder_and_matches_its_definition() -> None:
    torch.manual_seed(0)
    model = build_model("vae", spec("vampprior", prior_options={"components": "4"}))
    prior = model.prior
    assert isinstance(prior, VampPrior) and prior._encoder is model.encoder
    assert not any(k.startswith("prior.encoder") for k in model.state_dict())  # encoder saved once
    z = torch.randn(6, LATENT)
    loc, scale = model.encoder(prior.pseudo_inputs())  # (K, d)
    per_component = dist.Normal(loc, scale).to_event(1).log_prob(z[:, None, :])  # (6, K)
    expected = torch.logsumexp(per_component, dim=-1) - math.log(4)
    torch.testing.assert_close(prior.distribution((6,)).log_prob(z), expected)


# --- closed forms ---------------------------------------------------------------------------


def test_gaussian_vae_prior_analytic_kl_matches_monte_carlo() -> None:
    """KL(q || p) for q = N(mu, diag sigma^2), p = N(0, s^2 I): analytic vs MC, and vs the ELBO's terms.

    Seed 0. MC tolerance: 4 standard errors of the sample mean (a false alarm rate ~6e-5 per comparison
    for a correct implementation).
    """
    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    encoder, decoder = tiny_parts()
    model = VAE(encoder, decoder, GaussianPrior(LATENT, scale=1.3), BernoulliLikelihood())
    images = torch.rand(64, 1, *IMAGE_SHAPE)  # (items, 1 view, C, H, W)
    with torch.no_grad():
        loc, scale = encoder(images[:, 0])
        q = dist.Normal(loc, scale).to_event(1)
        p = model.prior.distribution((64,))
        analytic = torch.distributions.kl_divergence(q, p)  # (64,)
        # Independent formula: sum_k log(s / sigma_k) + (sigma_k^2 + mu_k^2) / (2 s^2) - 1/2.
        formula = (math.log(1.3) - scale.log() + (scale**2 + loc**2) / (2 * 1.3**2) - 0.5).sum(-1)
        torch.testing.assert_close(analytic, formula)
        z = q.sample((4_000,))
        samples = q.log_prob(z) - p.log_prob(z)  # (4000, 64)
        mc, se = samples.mean(0), samples.std(0) / math.sqrt(samples.shape[0])
        assert ((mc - analytic).abs() < 4 * se).all()
        # The objective's prior + entropy terms are -KL per item (averaged over the 64 items) in expectation.
        batch = ViewBatch(views=images, index=torch.arange(64), num_items=64)
        objective = ELBO(model)
        runs = []
        for _ in range(40):
            out = objective(batch)
            runs.append(out.terms["prior"] + out.terms["entropy"])
        runs = torch.stack(runs)
        se_runs = runs.std() / math.sqrt(len(runs))
        assert abs(float(runs.mean() + analytic.mean())) < 4 * float(se_runs)


def test_continuous_bernoulli_normaliser_matches_integral_and_formula() -> None:
    lam = torch.tensor([-40.0, -5.0, -1e-4, 0.0, 1e-4, 0.7, 5.0, 20.0, 40.0], dtype=torch.float64)
    ours = continuous_bernoulli_log_normalizer(lam)
    # log C = -log integral_0^1 exp(lam x) dx, by the trapezoid rule on a fine grid.
    x = torch.linspace(0, 1, 200_001, dtype=torch.float64)
    integral = torch.trapezoid(torch.exp(lam[:, None] * x), x, dim=-1)
    torch.testing.assert_close(ours, -integral.log(), rtol=1e-7, atol=1e-7)
    # In float32 at large logits (where torch's own normaliser drifts by 0.2 nats at 20).
    x32 = torch.tensor([0.3, 0.7])
    for value in (20.0, -20.0, 29.0):
        likelihood = ContinuousBernoulliLikelihood()
        log_p = likelihood.distribution(torch.full((1, 1, 2), value)).log_prob(x32.reshape(1, 1, 2))
        exact = sum(value * xi + math.log(abs(value)) - math.log(abs(math.expm1(value))) for xi in (0.3, 0.7))
        assert abs(float(log_p) - exact) < 1e-4
    # The mean is the distribution's mean, the integral of x p(x).
    mean = ContinuousBernoulliLikelihood().mean(torch.tensor([[[3.0, -1e-5]]]))
    grid = torch.linspace(0, 1, 100_001)
    for m, logit in zip(mean.reshape(-1), (3.0, -1e-5)):
        density = torch.exp(logit * grid + continuous_bernoulli_log_normalizer(torch.tensor(logit)))
        assert abs(float(m) - float(torch.trapezoid(grid * density, grid))) < 1e-4


def test_continuous_bernoulli_clamps_logits() -> None:
    likelihood = ContinuousBernoulliLikelihood(max_logit=10.0)
    x = torch.ones(1, 1, 1)
    at_clamp = likelihood.distribution(torch.full((1, 1, 1), 10.0)).log_prob(x)
    beyond = likelihood.distribution(torch.full((1, 1, 1), 1e4)).log_prob(x)
    torch.testing.assert_close(at_clamp, beyond)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_discretized_logistic_bins_sum_to_one(dtype: torch.dtype) -> None:
    loc = torch.tensor([-0.3, 0.0, 0.2, 0.5, 0.999, 1.4], dtype=dtype)
    scale = torch.tensor([0.05, 0.001, 0.3, 0.01, 0.02, 0.1], dtype=dtype)
    d = DiscretizedLogistic(loc[:, None], scale[:, None])  # batch (6, 1)
    grid = torch.arange(256, dtype=dtype) / 255
    log_p = d.log_prob(grid)  # (6, 256)
    total = torch.logsumexp(log_p, dim=-1)
    torch.testing.assert_close(
        total, torch.zeros_like(total), atol=1e-5 if dtype == torch.float32 else 1e-10, rtol=0
    )
    # Independent formula in float64: CDF differences, tails at the edges.
    loc64, s64, g64 = loc.double()[:, None], scale.double()[:, None], grid.double()
    cdf = lambda t: torch.sigmoid((t - loc64) / s64)  # noqa: E731
    expected = cdf(g64 + 0.5 / 255) - cdf(g64 - 0.5 / 255)
    expected[:, 0] = cdf(torch.tensor(0.5 / 255, dtype=torch.float64))[:, 0]
    expected[:, -1] = 1 - cdf(torch.tensor(1 - 0.5 / 255, dtype=torch.float64))[:, 0]
    torch.testing.assert_close(log_p.exp().double(), expected, atol=1e-6, rtol=1e-4)
    # The mean is sum_k (k/255) P(k).
    torch.testing.assert_close(d.mean[:, 0].double(), (expected * g64).sum(-1), atol=1e-5, rtol=1e-5)
    # Samples lie on the grid.
    draws = d.sample((100,))
    torch.testing.assert_close(draws * 255, (draws * 255).round())


def test_discretized_logistic_rounds_off_grid_values() -> None:
    d = DiscretizedLogistic(torch.tensor(0.4), torch.tensor(0.05))
    on = torch.tensor(100 / 255)
    torch.testing.assert_close(d.log_prob(on + 0.3 / 255), d.log_prob(on))


def test_laplace_and_gaussian_log_densities_match_formulas() -> None:
    torch.manual_seed(0)
    decoded = torch.randn(2, *IMAGE_SHAPE)
    x = torch.rand(2, *IMAGE_SHAPE)
    mu = torch.sigmoid(decoded)
    laplace = LaplaceLikelihood(image_shape=IMAGE_SHAPE, std=0.2)
    b = 0.2 / math.sqrt(2)
    expected = (-(x - mu).abs() / b - math.log(2 * b)).sum((-3, -2, -1))
    torch.testing.assert_close(laplace.distribution(decoded).log_prob(x), expected)
    learned = LearnedGaussianLikelihood(image_shape=IMAGE_SHAPE, std=0.3, per_pixel=True)
    assert learned.std().shape == IMAGE_SHAPE
    torch.testing.assert_close(learned.std(), torch.full(IMAGE_SHAPE, 0.3))
    expected = (-((x - mu) ** 2) / (2 * 0.09) - 0.5 * math.log(2 * math.pi * 0.09)).sum((-3, -2, -1))
    torch.testing.assert_close(learned.distribution(decoded).log_prob(x), expected)
    assert sum(p.numel() for p in learned.parameters()) == math.prod(IMAGE_SHAPE)
    assert sum(p.numel() for p in LaplaceLikelihood(image_shape=None).parameters()) == 0
    assert sum(p.numel() for p in LaplaceLikelihood(image_shape=None, learn=True).parameters()) == 1


def test_student_t_and_mixture_prior_log_densities_match_formulas() -> None:
    torch.manual_seed(0)
    v = torch.randn(5, LATENT) * 2
    prior = StudentTPrior(LATENT, df=2.5, scale=0.7)
    nu, s = 2.5, 0.7
    per_coordinate = (
        math.lgamma((nu + 1) / 2)
        - math.lgamma(nu / 2)
        - 0.5 * math.log(nu * math.pi * s**2)
        - (nu + 1) / 2 * torch.log1p(v**2 / (nu * s**2))
    )
    torch.testing.assert_close(prior.distribution((5,)).log_prob(v), per_coordinate.sum(-1))
    mixture = MixturePrior(LATENT, components=4, spread=2.0, component_scale=0.6)
    with torch.no_grad():
        mixture.logits.copy_(torch.tensor([0.0, 1.0, -1.0, 0.5]))
    weights = torch.softmax(mixture.logits, 0)
    components = dist.Normal(mixture.means, mixture.scales()).to_event(1).log_prob(v[:, None, :])  # (5, K)
    expected = torch.logsumexp(components + weights.log(), dim=-1)
    torch.testing.assert_close(mixture.distribution((5,)).log_prob(v), expected)
    torch.testing.assert_close(mixture.scales(), torch.full((4, LATENT), 0.6))


def test_bits_per_dim_convention() -> None:
    d = 2 * 64
    assert bits_per_dim(100.0, d, likelihood="discretized-logistic") == pytest.approx(100 / (d * math.log(2)))
    assert bits_per_dim(100.0, d, likelihood=BernoulliLikelihood()) == pytest.approx(100 / (d * math.log(2)))
    corrected = (100 + d * math.log(255)) / (d * math.log(2))
    assert bits_per_dim(100.0, d, likelihood="gaussian") == pytest.approx(corrected)
    assert bits_per_dim(100.0, d, likelihood=GaussianLikelihood(), data_is_8bit=False) == pytest.approx(
        100 / (d * math.log(2))
    )
    with pytest.raises(ValueError, match="8-bit"):
        bits_per_dim(100.0, d, likelihood="discretized-logistic", data_is_8bit=False)
    with pytest.raises(ValueError, match="num_dims"):
        bits_per_dim(100.0, 0, likelihood="gaussian")
    # The correction's sign and size: a smooth Gaussian density on the 8-bit grid vs the pmf of its bins.
    mu, sigma = 0.4, 0.1
    x = torch.arange(1, 255, dtype=torch.float64) / 255  # interior grid values
    normal = torch.distributions.Normal(torch.tensor(mu, dtype=torch.float64), sigma)
    density_nats = float(-normal.log_prob(x).sum())
    pmf_nats = float(-(normal.cdf(x + 0.5 / 255) - normal.cdf(x - 0.5 / 255)).log().sum())
    from_density = bits_per_dim(density_nats, len(x), likelihood="gaussian")
    from_pmf = bits_per_dim(pmf_nats, len(x), likelihood="discretized-logistic")
    # Second-order (curvature within a bin) error ~1e-3 bits here; without the correction it is log2(255) ~ 8.
    assert from_density == pytest.approx(from_pmf, abs=2e-3)
    assert bits_per_dim(density_nats, len(x), likelihood="gaussian", data_is_8bit=False) < from_pmf - 7.9


# --- refusals before any training step -------------------------------------------------------


@pytest.mark.parametrize("name", ["bernoulli", "continuous-bernoulli"])
def test_unit_interval_likelihood_refuses_data_outside_0_1(name: str) -> None:
    model = build_model("simvae", spec(likelihood=name))
    with pytest.raises(ValueError, match=r"outside the support \[0, 1\]"):
        model.check_data(torch.linspace(-0.5, 1.5, 64).reshape(1, *IMAGE_SHAPE), name="my data")


def test_discretized_logistic_refuses_non_8bit_data(digits) -> None:
    model = build_model("vae", spec(likelihood="discretized-logistic"))
    images = digits.train.float_images()
    model.check_data(images)  # the data layer's uint8 / 255 values are on the grid
    with pytest.raises(ValueError, match="not 8-bit data"):
        model.check_data((images + 0.3 / 255).clamp(0, 1))
    with pytest.raises(ValueError, match="8-bit"):
        model.check_data(images * 1.5)


@pytest.mark.parametrize("df", ["0", "-1", "nan"])
def test_student_t_refuses_non_positive_df(df: str) -> None:
    # NaN is refused by the shared finite check of every numeric option, the others by the prior
    with pytest.raises(ValueError, match=r"prior\.df(: expected a finite number| must be a positive finite)"):
        build_prior("studentt", LATENT, {"df": df})
    with pytest.raises(ValueError, match=r"view_prior\.df(: expected a finite number| must be a positive)"):
        build_view_prior("studentt", LATENT, {"df": df})


def test_bad_df_stops_training_before_any_step(tmp_path: Path, digits) -> None:
    config = Config(
        data=Component("digits", {"limit": 128}),
        prior=Component("studentt", {"df": "0"}),
        encoder=Component("mlp", dict(TINY)),
        decoder=Component("mlp", dict(TINY)),
        out=str(tmp_path / "run"),
        progress=False,
    )
    with pytest.raises(ValueError, match=r"prior\.df"):
        train(config, data=digits)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("build", "accepted"),
    [
        (lambda: build_prior("cauchy", LATENT), PRIORS.names()),
        (lambda: build_view_prior("cauchy", LATENT), VIEW_PRIORS.names()),
        (lambda: build_likelihood("poisson"), LIKELIHOODS.names()),
    ],
)
def test_unknown_names_list_the_accepted_ones(build, accepted: list[str]) -> None:
    with pytest.raises(ValueError, match="accepted: " + ", ".join(accepted)):
        build()


def test_unknown_option_lists_the_accepted_ones() -> None:
    with pytest.raises(ValueError, match="accepted: df, scale"):
        build_prior("studentt", LATENT, {"dof": "3"})


def test_flat_prior_refused_for_a_vae() -> None:
    with pytest.raises(ValueError, match="proper prior"):
        build_model("vae", spec("flat"))


@pytest.mark.parametrize(("prior", "view_prior"), [("laplace", "gaussian"), ("gaussian", "studentt")])
def test_exact_y_guide_refused_for_non_conjugate_priors(prior: str, view_prior: str) -> None:
    with pytest.raises(ValueError, match="y_guide='exact'"):
        build_model("simvae", spec(prior, view_prior=view_prior), {"y_guide": "exact"})


def test_vampprior_refused_for_simvae_and_unbound_use() -> None:
    with pytest.raises(ValueError, match="VAE prior"):
        build_model("simvae", spec("vampprior"))
    with pytest.raises(ValueError, match="not bound"):
        VampPrior(LATENT, IMAGE_SHAPE).distribution((2,))


def test_distribution_prior_refusals() -> None:
    with pytest.raises(TypeError, match="Pyro distribution"):
        DistributionPrior(torch.distributions.Normal(torch.zeros(LATENT), 1.0))
    with pytest.raises(ValueError, match="event shape"):
        DistributionPrior(dist.Normal(0.0, 1.0))
    with pytest.raises(ValueError, match="batch shape"):
        DistributionPrior(dist.Normal(torch.zeros(2, LATENT), 1.0).to_event(1))
    with pytest.raises(TypeError, match="Pyro distribution"):
        DistributionPrior(42)
    encoder, decoder = tiny_parts()
    with pytest.raises(ValueError, match="latent_dim"):
        VAE(encoder, decoder, dist.Normal(torch.zeros(LATENT + 1), 1.0).to_event(1), BernoulliLikelihood())


def test_per_pixel_spread_needs_learning() -> None:
    with pytest.raises(ValueError, match="learn=true"):
        build_likelihood("laplace", {"per_pixel": "true"}, image_shape=IMAGE_SHAPE)
    with pytest.raises(ValueError, match="image shape"):
        LearnedGaussianLikelihood(image_shape=None, per_pixel=True)
    learned = build_likelihood("discretized-logistic", {"per_pixel": "true"}, image_shape=IMAGE_SHAPE)
    assert isinstance(learned, DiscretizedLogisticLikelihood)
    with pytest.raises(ValueError, match="built for"):
        learned.check_data(torch.zeros(2, 1, 4, 4))


# --- the chosen y-guide is recorded -------------------------------------------------------------


def test_resolved_y_guide_is_written_to_config_json(tmp_path: Path, digits) -> None:
    config = Config(
        data=Component("digits", {"limit": 128}),
        prior=Component("laplace"),
        likelihood=Component("continuous-bernoulli"),
        encoder=Component("mlp", dict(TINY)),
        decoder=Component("mlp", dict(TINY)),
        latent_dim=LATENT,
        batch_size=64,
        epochs=1,
        out=str(tmp_path / "run"),
        progress=False,
    )
    train(config, data=digits)
    resolved = json.loads((tmp_path / "run" / "config.json").read_text())["resolved"]["model"]
    assert resolved["y_guide"] == "amortised"
    assert resolved["content_prior"] == "LaplacePrior"
    assert resolved["likelihood"] == "ContinuousBernoulliLikelihood"
