"""The ``gmm`` content prior: an explicit component site ``c`` that ``TraceEnum_ELBO`` sums out.

SimVAE with ``c ~ Categorical(pi)``, ``y | c ~ N(m_c, diag s_c^2)``: the enumerated
loss is checked against the explicit per-item sum over components written with
``torch.distributions`` in a loop (float64, same guide noise), against label
permutations, and by training; the model's clusters ``argmax_c p(c | z)`` are
checked against Bayes' rule written out with full-covariance Gaussians.
"""

from __future__ import annotations

import pyro
import pyro.optim
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Predictive, TraceEnum_ELBO

from pssl.config import Component
from pssl.models import sites
from pssl.models.base import ViewBatch
from pssl.models.encoders import GaussianEncoder
from pssl.models.likelihoods import BernoulliLikelihood
from pssl.models.priors import PRIORS, GaussianMixturePrior, GaussianViewPrior, LaplaceViewPrior, build_prior
from pssl.models.simvae import SimVAE
from pssl.networks import build_decoder

IMAGE = (1, 8, 8)
LATENT, COMPONENTS, ITEMS, BATCH, VIEWS = 3, 4, 40, 6, 2


@pytest.fixture(autouse=True)
def double_precision():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def tiny_model(*, beta: float = 1.0, view_prior=None, seed: int = 0) -> SimVAE:
    """A small SimVAE with the gmm prior whose mixture parameters are all distinct (not the init's ties)."""
    torch.manual_seed(seed)
    encoder = GaussianEncoder(IMAGE, LATENT, Component("mlp", {"hidden": "16"}))
    decoder = build_decoder("mlp", LATENT, IMAGE, {"hidden": "16"})
    prior = build_prior("gmm", LATENT, {"components": COMPONENTS})
    with torch.no_grad():
        prior.logits.copy_(torch.randn(COMPONENTS))
        prior.raw_scales.add_(0.3 * torch.randn(COMPONENTS, LATENT))
    return SimVAE(
        encoder, decoder, prior, view_prior or GaussianViewPrior(LATENT), BernoulliLikelihood(), beta=beta
    )


def tiny_batch(seed: int = 1) -> ViewBatch:
    g = torch.Generator().manual_seed(seed)
    views = (torch.rand(BATCH, VIEWS, *IMAGE, generator=g) > 0.5).double()
    return ViewBatch(views, torch.randperm(ITEMS, generator=g)[:BATCH], ITEMS)


def enum_loss(model: SimVAE, batch: ViewBatch, seed: int) -> torch.Tensor:
    pyro.set_rng_seed(seed)
    return TraceEnum_ELBO(max_plate_nesting=sites.MAX_PLATE_NESTING).differentiable_loss(
        model.model, model.guide, batch
    )


def explicit_loss(model: SimVAE, batch: ViewBatch, seed: int) -> torch.Tensor:
    """-ELBO with log p(y) = log sum_k pi_k N(y; m_k, s_k^2) summed by a loop over k, same guide noise."""
    pyro.set_rng_seed(seed)
    guide = poutine.trace(model.guide).get_trace(batch)
    z = guide.nodes[sites.VIEW_LATENT]["value"]  # (B, J, d)
    y = guide.nodes[sites.CONTENT]["value"]  # (B, 1, d)
    normal = torch.distributions.Normal
    loc, scale = model.encoder(batch.views)
    log_q_z = normal(loc, scale).log_prob(z).sum((-1, -2))
    y_mean, y_std = model.content_guide(z)
    log_q_y = normal(y_mean, y_std).log_prob(y).sum((-1, -2))
    prior = model.content_prior
    log_weights = torch.log_softmax(prior.logits, dim=0)
    scales = torch.nn.functional.softplus(prior.raw_scales) + prior.min_scale
    per_component = []
    for k in range(COMPONENTS):
        per_component.append(log_weights[k] + normal(prior.means[k], scales[k]).log_prob(y).sum((-1, -2)))
    log_p_y = torch.logsumexp(torch.stack(per_component), dim=0)
    log_p_z = normal(y, model.view_prior.scale()).log_prob(z).sum((-1, -2))
    logits = model.decoder(z)
    log_p_x = torch.distributions.Bernoulli(logits=logits).log_prob(batch.views).sum((-1, -2, -3, -4))
    beta = model.beta
    per_item = log_p_x + beta * (log_p_z + log_p_y - log_q_z - log_q_y)
    return -per_item.sum() * ITEMS / BATCH


@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_traceenum_loss_equals_explicit_sum_over_components(beta: float) -> None:
    model, batch = tiny_model(beta=beta), tiny_batch()
    for seed in (0, 1):
        expected = explicit_loss(model, batch, seed)
        torch.testing.assert_close(enum_loss(model, batch, seed), expected, rtol=1e-10, atol=1e-8)


def test_enumerated_site_is_left_of_the_plates_and_sampled_without_enumeration() -> None:
    model, batch = tiny_model(), tiny_batch()
    guide = poutine.trace(model.guide).get_trace(batch)
    replayed = poutine.replay(model.model, trace=guide)
    enumerated = poutine.trace(poutine.enum(replayed, first_available_dim=-3)).get_trace(batch)
    component = enumerated.nodes[sites.CONTENT_COMPONENT]
    assert component["infer"]["enumerate"] == "parallel"
    assert component["value"].shape == (COMPONENTS, 1, 1)
    assert enumerated.nodes[sites.CONTENT]["fn"].batch_shape == (COMPONENTS, BATCH, 1)
    # with y from the guide, the decoder path never sees the enumeration dim
    assert enumerated.nodes[sites.OBSERVATION]["fn"].batch_shape == (BATCH, VIEWS)
    # with y drawn given each component (no guide), the dim broadcasts through z into the decoder
    unguided = poutine.trace(poutine.enum(model.model, first_available_dim=-3)).get_trace(batch)
    assert unguided.nodes[sites.OBSERVATION]["fn"].batch_shape == (COMPONENTS, BATCH, VIEWS)
    sampled = poutine.trace(model.model).get_trace(batch)
    value = sampled.nodes[sites.CONTENT_COMPONENT]["value"]
    assert value.shape == (BATCH, 1) and int(value.min()) >= 0 and int(value.max()) < COMPONENTS


def test_permuting_component_labels_leaves_the_loss_unchanged() -> None:
    model, batch = tiny_model(), tiny_batch()
    before = enum_loss(model, batch, seed=5).detach()
    prior = model.content_prior
    perm = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        prior.means.copy_(prior.means[perm].clone())
    # means alone permuted: a different mixture, a different loss (so the check below can fail)
    assert not torch.allclose(enum_loss(model, batch, seed=5).detach(), before, rtol=1e-6, atol=0)
    with torch.no_grad():
        prior.raw_scales.copy_(prior.raw_scales[perm].clone())
        prior.logits.copy_(prior.logits[perm].clone())
    torch.testing.assert_close(enum_loss(model, batch, seed=5).detach(), before, rtol=1e-12, atol=1e-9)


def test_plain_pyro_svi_with_traceenum_trains_every_parameter() -> None:
    pyro.clear_param_store()
    model, batch = tiny_model(), tiny_batch()
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    before = sum(enum_loss(model, batch, seed) for seed in range(4)).item()
    elbo = TraceEnum_ELBO(max_plate_nesting=sites.MAX_PLATE_NESTING)
    svi = SVI(model.model, model.guide, pyro.optim.Adam({"lr": 2e-2}), elbo)
    for _ in range(40):
        svi.step(batch.views, batch.index, num_items=ITEMS)
    after = sum(enum_loss(model, batch, seed) for seed in range(4)).item()
    assert after < before
    unchanged = [name for name, p in model.named_parameters() if torch.equal(p, start[name])]
    assert not unchanged, f"parameters not trained: {unchanged}"
    pyro.clear_param_store()


def test_predictive_samples_components_and_views_from_the_prior() -> None:
    model = tiny_model()
    draws = Predictive(model.model, num_samples=3, return_sites=[sites.CONTENT_COMPONENT, sites.OBSERVATION])(
        num_items=5
    )
    assert draws[sites.CONTENT_COMPONENT].shape == (3, 5, 1)
    assert int(draws[sites.CONTENT_COMPONENT].max()) < COMPONENTS
    assert draws[sites.OBSERVATION].shape == (3, 5, VIEWS, *IMAGE)
    assert set(draws[sites.OBSERVATION].unique().tolist()) <= {0.0, 1.0}


def test_vectorised_particles_enumerate_left_of_the_particle_plate() -> None:
    model, batch = tiny_model(), tiny_batch()
    elbo = TraceEnum_ELBO(
        max_plate_nesting=sites.MAX_PLATE_NESTING, num_particles=3, vectorize_particles=True
    )
    loss = elbo.differentiable_loss(model.model, model.guide, batch)
    assert loss.shape == () and torch.isfinite(loss)


def test_clusters_follow_bayes_rule_with_y_integrated_out() -> None:
    model = tiny_model()
    images = (torch.rand(7, *IMAGE, generator=torch.Generator().manual_seed(2)) > 0.5).double()
    log_post = model.cluster_log_probabilities(images)
    assert log_post.shape == (7, COMPONENTS)
    z = model.encoder(images)[0]
    prior = model.content_prior
    variance = prior.scales().pow(2) + model.view_prior.scale().pow(2)
    log_joint = torch.stack(
        [
            torch.log_softmax(prior.logits, 0)[k]
            + torch.distributions.MultivariateNormal(prior.means[k], torch.diag(variance[k])).log_prob(z)
            for k in range(COMPONENTS)
        ],
        dim=-1,
    )
    expected = log_joint - log_joint.logsumexp(-1, keepdim=True)
    torch.testing.assert_close(log_post, expected)
    torch.testing.assert_close(model.cluster(images), expected.argmax(-1))
    assert model.num_clusters == COMPONENTS and model.describe()["clusters"] == COMPONENTS


def test_clusters_with_a_non_gaussian_view_prior_use_the_views_mean() -> None:
    model = tiny_model(view_prior=LaplaceViewPrior(LATENT))
    images = torch.rand(5, *IMAGE, generator=torch.Generator().manual_seed(4))
    z = model.encoder(images)[0]
    torch.testing.assert_close(
        model.cluster_log_probabilities(images), model.content_prior.component_log_posterior(z)
    )


def test_gmm_is_registered_and_checks_its_options() -> None:
    prior = build_prior("gmm", LATENT, {"components": 10})
    assert isinstance(prior, GaussianMixturePrior) and prior.enumerated and prior.num_components == 10
    assert "gmm" in PRIORS
    with pytest.raises(ValueError, match="prior.components"):
        build_prior("gmm", LATENT, {"components": 0})
    with pytest.raises(ValueError, match="y_guide='exact'"):
        SimVAE(
            GaussianEncoder(IMAGE, LATENT, Component("mlp", {"hidden": "8"})),
            build_decoder("mlp", LATENT, IMAGE, {"hidden": "8"}),
            prior,
            GaussianViewPrior(LATENT),
            BernoulliLikelihood(),
            y_guide="exact",
        )


def test_models_without_a_discrete_component_do_not_cluster() -> None:
    model = tiny_model()
    model.content_prior = build_prior("mixture", LATENT, {"components": 3})
    assert model.num_clusters is None
    with pytest.raises(ValueError, match="prior=gmm"):
        model.cluster(torch.rand(2, *IMAGE))


def test_evaluation_scores_the_models_own_clusters_on_the_test_split() -> None:
    from pssl.datasets import DataSplits, TensorData
    from pssl.evaluation import evaluate_content, hungarian_accuracy

    torch.set_default_dtype(torch.float32)
    model = tiny_model().float()
    g = torch.Generator().manual_seed(6)

    def split(n: int) -> TensorData:
        images = torch.randint(0, 256, (n, *IMAGE), generator=g, dtype=torch.uint8)
        return TensorData(images, torch.randint(0, 3, (n,), generator=g), num_classes=3)

    splits = DataSplits(train=split(30), val=split(10), test=split(20), name="digits")
    content = evaluate_content(model, splits, probes=("cluster",))
    with torch.no_grad():
        expected = hungarian_accuracy(model.cluster(splits.test.images.float() / 255), splits.test.labels)
    assert content["model_cluster"]["accuracy"] == pytest.approx(expected)
    assert content["model_cluster"]["selected"] == {"num_clusters": COMPONENTS}
    model.content_prior = build_prior("gaussian", LATENT).float()
    assert "model_cluster" not in evaluate_content(model, splits, probes=("cluster",))


# --------------------------------------------------------------------------- through the trainer


def gmm_config(out, objective: str = "traceenum"):
    from pssl.config import Config

    return Config(
        model=Component("simvae"),
        data=Component("digits", {"limit": 200}),
        prior=Component("gmm", {"components": COMPONENTS}),
        objective=Component(objective),
        encoder=Component("mlp", {"hidden": (32,)}),
        decoder=Component("mlp", {"hidden": (32,)}),
        latent_dim=LATENT,
        batch_size=16,
        epochs=1,
        lr=1e-2,
        out=str(out),
        progress=False,
    )


def test_trainer_with_traceenum_trains_the_mixture_and_the_run_clusters(tmp_path) -> None:
    from pssl.datasets import load_dataset
    from pssl.evaluation import evaluate_content
    from pssl.inference.objectives import Objective, build_objective
    from pssl.inference.train import train

    torch.set_default_dtype(torch.float32)
    pyro.clear_param_store()
    data = load_dataset("digits", {"limit": 200}, seed=0)
    result = train(gmm_config(tmp_path / "run"), data=data)
    model = result.model
    assert model.num_clusters == COMPONENTS
    assert not torch.equal(model.content_prior.logits.detach(), torch.zeros(COMPONENTS))
    terms = result.epochs[-1]
    assert all(torch.isfinite(torch.tensor(float(v))) for k, v in terms.items() if k.startswith("train_"))
    # the trainer's loss is Pyro's TraceEnum_ELBO loss on the same batch, times B / N
    views = (data.train.float_images()[:BATCH] > 0.5).float().unsqueeze(1).expand(-1, VIEWS, -1, -1, -1)
    batch = ViewBatch(views.contiguous(), torch.arange(BATCH), len(data.train))
    objective = Objective(model, build_objective("traceenum"))
    pyro.set_rng_seed(3)
    trainer_loss = objective(batch).loss
    pyro.set_rng_seed(3)
    pyro_loss = TraceEnum_ELBO(max_plate_nesting=sites.MAX_PLATE_NESTING).differentiable_loss(
        model.model, model.guide, batch.views, batch.index, num_items=batch.num_items
    )
    torch.testing.assert_close(trainer_loss, pyro_loss * BATCH / len(data.train), rtol=1e-5, atol=1e-3)
    content = evaluate_content(model, data, probes=("cluster",))
    assert 0.0 <= content["model_cluster"]["accuracy"] <= 1.0
    pyro.clear_param_store()


def test_a_non_enumerating_objective_is_refused_in_one_line(tmp_path, capsys) -> None:
    from pssl.cli import main

    out = tmp_path / "run"
    code = main(
        [
            "train",
            "model=simvae",
            "prior=gmm",
            f"prior.components={COMPONENTS}",
            "objective=trace",
            "data=digits",
            "data.limit=100",
            "encoder=mlp",
            "encoder.hidden=16",
            "decoder=mlp",
            "decoder.hidden=16",
            "epochs=1",
            f"out={out}",
            "progress=false",
        ]
    )
    error = capsys.readouterr().err.strip()
    assert code == 2
    assert len(error.splitlines()) == 1 and "'c'" in error and "objective=traceenum" in error
    assert not out.exists()


def test_a_vae_with_the_gmm_prior_enumerates_one_component_per_view() -> None:
    from pssl.models.vae import VAE

    torch.manual_seed(0)
    encoder = GaussianEncoder(IMAGE, LATENT, Component("mlp", {"hidden": "16"}))
    decoder = build_decoder("mlp", LATENT, IMAGE, {"hidden": "16"})
    vae = VAE(encoder, decoder, build_prior("gmm", LATENT, {"components": COMPONENTS}), BernoulliLikelihood())
    batch = tiny_batch()
    guide = poutine.trace(vae.guide).get_trace(batch)
    replayed = poutine.replay(vae.model, trace=guide)
    enumerated = poutine.trace(poutine.enum(replayed, first_available_dim=-3)).get_trace(batch)
    assert enumerated.nodes[sites.CONTENT_COMPONENT]["value"].shape == (COMPONENTS, 1, 1)
    assert enumerated.nodes[sites.VIEW_LATENT]["fn"].batch_shape == (COMPONENTS, BATCH, VIEWS)
    loss = enum_loss(vae, batch, seed=0)
    assert torch.isfinite(loss)
