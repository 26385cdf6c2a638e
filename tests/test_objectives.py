"""Any Pyro ELBO drives the trainer: named objectives, ELBO instances, refusals, param-store parameters.

Estimator checks run on the linear-Gaussian SimVAE of ``test_simvae.py``, whose
log p(x) is known in closed form.
"""

from __future__ import annotations

import math
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from pyro.nn import PyroModule, PyroParam
from test_simvae import LATENT, exact_log_evidence, joint_moments, make_model, sample_data
from torch import nn

from pssl.cli import main
from pssl.config import Component, Config
from pssl.datasets import load_dataset
from pssl.inference.compose import compose
from pssl.inference.objectives import OBJECTIVES, Objective, ObjectiveError, build_objective
from pssl.inference.train import Trainer, train
from pssl.models import MODELS, ViewBatch, build_for_data, make_view_batch, sites
from pssl.models.base import SSLModel
from pssl.models.priors import LatentPrior

TINY = {"hidden": (32,)}
HEAD = {"proj_hidden": 16, "proj_dim": 8}
MODEL_OPTIONS = {
    "simclr": HEAD,
    "clip": HEAD,
    "moco": {**HEAD, "queue_size": 64},
    "vicreg": HEAD,
    "barlow": HEAD,
}
PAIRED = ("clip", "simvae-multimodal")


@pytest.fixture(autouse=True)
def fresh_param_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


@pytest.fixture(scope="module")
def digits():
    return {
        "digits": load_dataset("digits", {"limit": 200}, seed=0),
        "paired-digits": load_dataset("paired-digits", {"limit": 200}, seed=0),
    }


def small_config(out: Path, model: str = "vae", **changes) -> Config:
    data = "paired-digits" if model in PAIRED else "digits"
    base = dict(
        model=Component(model, dict(MODEL_OPTIONS.get(model, {}))),
        data=Component(data, {"limit": 200}),
        encoder=Component("mlp", dict(TINY)),
        decoder=Component("mlp", dict(TINY)),
        latent_dim=4,
        batch_size=16,
        epochs=1,
        lr=1e-3,
        out=str(out),
        progress=False,
    )
    base.update(changes)
    return Config(**base)


def trainer_for(tmp_path: Path, digits, model: str = "vae", **changes) -> Trainer:
    config = small_config(tmp_path / "run", model, **changes)
    return Trainer(config, data=digits[config.data.name])


# --------------------------------------------------------------------------- trainer == plain Pyro


@pytest.mark.parametrize("name", sorted(MODELS.names()))
def test_trainer_loss_is_plain_trace_elbo_times_batch_fraction(tmp_path: Path, digits, name: str) -> None:
    """One plain ``Trace_ELBO`` loss on a batch equals the trainer's loss times N / B (same weights, seed)."""
    trainer = trainer_for(tmp_path, digits, name)
    batch = trainer.make_batch(torch.arange(trainer.batch_items))
    trainer.model.train()
    pyro.set_rng_seed(7)
    ours = trainer.objective(batch)
    pyro.set_rng_seed(7)
    plain = Trace_ELBO().differentiable_loss(
        trainer.model.model, trainer.model.guide, batch.views, batch.index, num_items=batch.num_items
    )
    fraction = batch.batch_size / batch.num_items
    torch.testing.assert_close(ours.loss, plain * fraction, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(ours.terms["elbo"], -plain.detach() / batch.num_items, rtol=1e-5, atol=1e-5)
    named = sum(
        v for k, v in ours.terms.items() if k not in ("elbo", "alignment", "uniformity", "logit_scale")
    )
    torch.testing.assert_close(named, ours.terms["elbo"], rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- named objectives train


@pytest.mark.parametrize(
    ("model", "objective", "options"),
    [
        ("vae", "tracegraph", {}),
        ("vae", "tracemeanfield", {}),
        ("simvae", "iwae", {"num_particles": "4", "vectorize_particles": "true"}),
        ("simvae", "renyi", {"alpha": "0.5", "num_particles": "3"}),
        ("simvae", "trace", {"num_particles": "3", "vectorize_particles": "true"}),
        ("simvae-multimodal", "iwae", {"num_particles": "2", "vectorize_particles": "true"}),
    ],
)
def test_named_objectives_train_and_log_terms(tmp_path: Path, digits, model, objective, options) -> None:
    trainer = trainer_for(tmp_path, digits, model, objective=Component(objective, options))
    start = [p.detach().clone() for _, p in trainer.parameters]
    index = torch.arange(trainer.batch_items)
    outputs = [trainer.step(trainer.make_batch(index)) for _ in range(2)]
    assert all(o is not None for o in outputs)
    terms = outputs[-1].terms
    for name in ("reconstruction", "prior", "entropy", "elbo"):
        assert name in terms and math.isfinite(float(terms[name])), (name, terms)
    if objective in ("iwae", "renyi"):
        assert "objective" in terms
    moved = [not torch.equal(a, p.detach()) for a, (_, p) in zip(start, trainer.parameters)]
    assert all(moved)


def test_a_pyro_elbo_instance_is_accepted_from_python(tmp_path: Path, digits) -> None:
    elbo = pyro.infer.RenyiELBO(alpha=0.0, num_particles=3, max_plate_nesting=2)
    result = train(small_config(tmp_path / "run", "simvae", epochs=1), data=digits["digits"], objective=elbo)
    assert result.history or result.epochs
    assert "train_objective" in result.epochs[-1]
    resolved = (tmp_path / "run" / "config.json").read_text()
    assert "RenyiELBO(alpha=0, num_particles=3)" in resolved


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("model", "objective", "options", "reason"),
    [
        ("simvae", "tracemeanfield", {}, "mean-field"),
        ("simvae", "tracemeanfield", {"__y_guide": "plugin"}, "mean-field"),
        ("vae", "traceenum", {}, "nothing to"),
        ("simclr", "iwae", {}, "point mass"),
        ("vicreg", "trace", {"num_particles": "2"}, "point mass"),
    ],
)
def test_invalid_pairs_are_refused_before_training(
    tmp_path: Path, digits, model, objective, options, reason
) -> None:
    model_options = dict(MODEL_OPTIONS.get(model, {}))
    if "__y_guide" in options:
        model_options["y_guide"] = options.pop("__y_guide")
    config = small_config(tmp_path / "run", model, objective=Component(objective, options))
    config.model.options.update(model_options)
    with pytest.raises(ObjectiveError, match=reason) as caught:
        compose(config, data=digits[config.data.name])
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "run").exists()


def test_cli_refuses_an_invalid_pair_with_exit_code_2(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "model=simvae",
            "objective=tracemeanfield",
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
    assert len(error.splitlines()) == 1 and "mean-field" in error and "objective=trace" in error
    assert not out.exists()


def test_a_jit_elbo_is_refused_by_the_trainer_with_its_plain_counterpart(tmp_path: Path, digits) -> None:
    with pytest.raises(ObjectiveError, match="Trace_ELBO"):
        compose(small_config(tmp_path / "run"), data=digits["digits"], objective=pyro.infer.JitTrace_ELBO())


def test_renyi_refuses_a_pair_that_registers_no_parameter(double) -> None:
    """RenyiELBO backpropagates only when the traces hold param sites: refuse rather than train nothing."""
    model, batch, _ = linear_gaussian()  # its encoder and decoder hold plain tensors, no parameters
    with pytest.raises(ObjectiveError, match="register none"):
        Objective(model, build_objective("iwae")).prepare(batch)


def test_cli_rejects_unknown_objectives_and_options(tmp_path: Path, capsys) -> None:
    assert main(["train", "objective=elbo2", f"out={tmp_path / 'a'}"]) == 2
    assert "accepted: trace, tracegraph, renyi, iwae, tracemeanfield, traceenum" in capsys.readouterr().err
    assert main(["train", "objective=renyi", "objective.alpha=1", f"out={tmp_path / 'b'}"]) == 2
    assert "alpha" in capsys.readouterr().err


# --------------------------------------------------------------------------- estimators, exact answers


def linear_gaussian(num_items: int = 3, num_views: int = 2):
    pyro.set_rng_seed(0)
    torch.set_default_dtype(torch.float64)
    model = make_model(num_views)
    views = sample_data(model, num_items, num_views)
    batch = ViewBatch(views, torch.arange(num_items), num_items)
    return model, batch, exact_log_evidence(model, views).mean()


def marginal_posterior_guide(model, inflate: float = 2.0):
    """q(z_ij) = N(E[z_ij | x_i], inflate * Var[z_ij | x_i]) per view (mean-field), q(y | z) exact.

    Close to the posterior but not equal (cross-view correlations dropped, variance inflated),
    so the ELBO has a gap of a few nats that importance weighting closes.
    """

    def guide(batch: ViewBatch) -> None:
        num_items, num_views = batch.views.shape[:2]
        mean_x, cov_x, cov_zx = joint_moments(model, num_views)
        eye_d = torch.eye(LATENT)
        cov_z = 1.3**2 * torch.kron(torch.ones(num_views, num_views), eye_d) + 0.6**2 * torch.eye(
            num_views * LATENT
        )
        gain = cov_zx @ torch.linalg.inv(cov_x)
        mean = ((batch.views.reshape(num_items, -1) - mean_x) @ gain.T).reshape(num_items, num_views, LATENT)
        var = torch.diagonal(cov_z - gain @ cov_zx.T).reshape(num_views, LATENT) * inflate
        with pyro.plate(sites.ITEMS, size=batch.num_items, subsample=batch.index, dim=sites.ITEMS_DIM):
            with pyro.plate(sites.VIEWS, num_views, dim=sites.VIEWS_DIM):
                z = pyro.sample(sites.VIEW_LATENT, dist.Normal(mean, var.sqrt()).to_event(1))
            pyro.sample(sites.CONTENT, model.content_posterior(z))

    return guide


@pytest.fixture
def double():
    previous = torch.get_default_dtype()
    yield
    torch.set_default_dtype(previous)


def bound(model, batch, name: str, seeds: int = 20, guide=None, **options) -> float:
    """Mean over ``seeds`` of the objective's value per item (``objective`` for renyi, else ``elbo``)."""
    objective = Objective(model, build_objective(name, options), guide=guide)
    values = []
    for seed in range(seeds):
        pyro.set_rng_seed(seed)
        with torch.no_grad():
            terms = objective(batch).terms
        values.append(float(terms.get("objective", terms["elbo"])))
    return sum(values) / len(values)


def test_iwae_is_tighter_than_trace_and_converges_to_log_evidence(double) -> None:
    """Seeds 0..19; the gap to log p(x) shrinks with K and is < 0.05 nats per item at K = 1024."""
    model, batch, exact = linear_gaussian()
    guide = marginal_posterior_guide(model)
    elbo = bound(model, batch, "trace", guide=guide)
    gaps = [
        float(exact) - bound(model, batch, "iwae", guide=guide, num_particles=k, vectorize_particles=True)
        for k in (1, 8, 64, 1024)
    ]
    assert float(exact) - elbo > 0.5, "the guide is not the posterior: the ELBO has a gap"
    assert abs(gaps[0] - (float(exact) - elbo)) < 0.5  # K = 1 is the ELBO (other draws)
    assert all(g >= -0.05 for g in gaps), gaps  # a lower bound, up to Monte Carlo error
    assert gaps[0] > gaps[1] > gaps[2] > gaps[3], gaps
    assert gaps[-1] < 0.05, gaps


def test_renyi_alpha_zero_equals_iwae(double) -> None:
    model, batch, _ = linear_gaussian()
    outputs = []
    for name, options in (("iwae", {"num_particles": 5}), ("renyi", {"alpha": 0.0, "num_particles": 5})):
        pyro.set_rng_seed(3)
        outputs.append(Objective(model, build_objective(name, options))(batch))
    torch.testing.assert_close(outputs[0].loss, outputs[1].loss, rtol=0, atol=0)
    torch.testing.assert_close(outputs[0].terms["objective"], outputs[1].terms["objective"], rtol=0, atol=0)


def test_tracegraph_has_the_loss_and_gradient_of_trace(double) -> None:
    """Same draws (seed 4): equal loss; equal gradients for a reparameterised guide."""
    model, batch, _ = linear_gaussian()
    model.decoder.weight.requires_grad_(True)
    losses, grads = [], []
    for name in ("trace", "tracegraph"):
        model.decoder.weight.grad = None
        pyro.set_rng_seed(4)
        output = Objective(model, build_objective(name))(batch)
        if not output.backward_done:
            output.loss.backward()
        losses.append(output.loss.detach())
        grads.append(model.decoder.weight.grad.clone())
    torch.testing.assert_close(losses[0], losses[1].to(losses[0].dtype))
    torch.testing.assert_close(grads[0], grads[1])


def test_minibatch_iwae_bound_is_per_item(double) -> None:
    """The trainer scales before the log-mean-exp: a batch's bound is the sum of its items' bounds."""
    model, batch, _ = linear_gaussian(num_items=4)
    objective = Objective(
        model,
        build_objective("iwae", {"num_particles": 1000, "vectorize_particles": True}),
        guide=marginal_posterior_guide(model),
    )
    pyro.set_rng_seed(0)
    whole = float(objective(ViewBatch(batch.views, batch.index, 100)).terms["objective"])
    single = []
    for i in range(4):
        pyro.set_rng_seed(i + 1)
        item = ViewBatch(batch.views[i : i + 1], batch.index[i : i + 1], 100)
        single.append(float(objective(item).terms["objective"]))
    assert abs(whole - sum(single) / 4) < 0.02


# --------------------------------------------------------------------------- enumeration


class MixtureViews(SSLModel):
    """c_i ~ Cat(pi) (enumerated), z_ij | c ~ N(mu_c, I), x_ij | z ~ N(W z, 0.5^2), q(z | x) = N(A x, s^2)."""

    generative = True
    guide_networks = ("encoder",)
    pyro_name = "mixture-views"

    def __init__(self, components: int = 3, latent: int = 2, pixels: int = 4) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.logits = nn.Parameter(torch.randn(components, generator=gen))
        self.means = nn.Parameter(2 * torch.randn(components, latent, generator=gen))
        self.decoder = nn.Linear(latent, pixels)
        self.encoder = nn.Linear(pixels, 2 * latent)
        self.latent = latent

    def model_program(self, batch: ViewBatch) -> None:
        with pyro.plate(sites.ITEMS, size=batch.num_items, subsample=batch.index, dim=sites.ITEMS_DIM):
            c = pyro.sample("c", dist.Categorical(logits=self.logits), infer={"enumerate": "parallel"})
            with pyro.plate(sites.VIEWS, batch.num_views, dim=sites.VIEWS_DIM):
                z = pyro.sample(sites.VIEW_LATENT, dist.Normal(self.means[c], 1.0).to_event(1))
                loc = self.decoder(z).reshape(*z.shape[:-1], 1, 1, -1)
                pyro.sample(sites.OBSERVATION, dist.Normal(loc, 0.5).to_event(3), obs=batch.views)

    def guide_program(self, batch: ViewBatch) -> None:
        with pyro.plate(sites.ITEMS, size=batch.num_items, subsample=batch.index, dim=sites.ITEMS_DIM):
            loc, raw = self.encoder(batch.views.flatten(-3)).chunk(2, dim=-1)
            with pyro.plate(sites.VIEWS, batch.num_views, dim=sites.VIEWS_DIM):
                pyro.sample(sites.VIEW_LATENT, dist.Normal(loc, raw.exp()).to_event(1))


def mixture_batch() -> tuple[MixtureViews, ViewBatch]:
    model = MixtureViews()
    views = torch.randn(5, 2, 1, 1, 4, generator=torch.Generator().manual_seed(1))
    return model, ViewBatch(views, torch.arange(5), 20)


def test_traceenum_sums_the_discrete_site_exactly_and_keeps_named_terms() -> None:
    model, batch = mixture_batch()
    objective = Objective(model, build_objective("traceenum"))
    assert objective.prepare(batch) == {}
    pyro.set_rng_seed(0)
    output = objective(batch)
    pyro.set_rng_seed(0)
    guide_trace = poutine.trace(model.guide).get_trace(batch)
    z = guide_trace.nodes["z"]["value"]  # (B, J, d)
    log_q = guide_trace.nodes["z"]["fn"].log_prob(z).sum()
    log_pi = torch.log_softmax(model.logits, -1)
    per_component = torch.stack(
        [log_pi[k] + dist.Normal(model.means[k], 1.0).log_prob(z).sum((-2, -1)) for k in range(len(log_pi))]
    )  # explicit loop over components: (K, B)
    marginal = torch.logsumexp(per_component, 0).sum()
    loc = model.decoder(z).reshape(5, 2, 1, 1, 4)
    reconstruction = dist.Normal(loc, 0.5).to_event(3).log_prob(batch.views).sum()
    expected = marginal + reconstruction - log_q  # the minibatch sum of per-item ELBOs
    torch.testing.assert_close(-output.loss, expected, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(
        output.terms["reconstruction"], reconstruction.detach() / 5, rtol=1e-5, atol=1e-5
    )
    torch.testing.assert_close(output.terms["prior"], marginal.detach() / 5, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(output.terms["entropy"], -log_q.detach() / 5, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["trace", "iwae", "tracegraph"])
def test_enumerated_site_is_refused_by_elbos_that_cannot_enumerate(name: str) -> None:
    model, batch = mixture_batch()
    with pytest.raises(ObjectiveError, match="cannot enumerate site.*'c'.*objective=traceenum"):
        Objective(model, build_objective(name)).prepare(batch)


def test_every_registered_objective_has_a_builder() -> None:
    assert OBJECTIVES.names() == ["trace", "tracegraph", "renyi", "iwae", "tracemeanfield", "traceenum"]


# --------------------------------------------------------------------------- param-store parameters


class LearnedScalePrior(LatentPrior):
    """N(loc, softplus(raw)^2 I) whose loc and raw scale are ``pyro.param`` sites (not nn.Parameters)."""

    def distribution(self, batch_shape: tuple[int, ...]) -> dist.TorchDistribution:
        loc = pyro.param("prior_loc", torch.zeros(self.latent_dim))
        scale = pyro.param("prior_scale", torch.ones(self.latent_dim), constraint=dist.constraints.positive)
        return dist.Normal(loc, scale).expand((*batch_shape, self.latent_dim)).to_event(1)


def vae_with_param_prior():
    torch.manual_seed(0)  # a model passed in is built by the caller, before the run's seeding
    method = build_for_data(
        "vae", (1, 8, 8), latent_dim=4, encoder=Component("mlp", TINY), decoder=Component("mlp", TINY)
    )
    method.prior = LearnedScalePrior(4)
    return method


def test_pyro_param_in_a_prior_trains_and_resumes_bit_for_bit(tmp_path: Path, digits) -> None:
    data = digits["digits"]
    config = dict(epochs=2, lr=1e-2)
    straight = train(small_config(tmp_path / "a", **config), data=data, model=vae_with_param_prior())
    loc = pyro.get_param_store()["prior_loc"].detach().clone()
    scale = pyro.get_param_store()["prior_scale"].detach().clone()
    assert not torch.equal(loc, torch.zeros(4)) and not torch.equal(scale, torch.ones(4)), (
        "pyro.param did not move"
    )

    # same run in two halves: the second half in a "new process" (store cleared) resumes from the checkpoint
    train(small_config(tmp_path / "b", **{**config, "epochs": 1}), data=data, model=vae_with_param_prior())
    pyro.clear_param_store()
    resumed = train(
        small_config(tmp_path / "b", **config, resume=True), data=data, model=vae_with_param_prior()
    )
    assert torch.equal(pyro.get_param_store()["prior_loc"], loc)
    assert torch.equal(pyro.get_param_store()["prior_scale"], scale)
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


class ScaleGuide(PyroModule):
    """A user's guide: the method's encoder mean and a learned scale per dimension (a PyroParam)."""

    def __init__(self, encoder: nn.Module, latent_dim: int) -> None:
        super().__init__()
        self._encoder = [encoder]  # the method's own network, trained as the method's parameter
        self.log_scale = PyroParam(torch.full((latent_dim,), -1.0))

    def forward(self, views, index=None, num_items=None, **unused) -> None:
        batch = make_view_batch(views, index, num_items)
        loc, _ = self._encoder[0](batch.views)
        with (
            pyro.plate(sites.ITEMS, size=batch.num_items, subsample=batch.index, dim=sites.ITEMS_DIM),
            pyro.plate(sites.VIEWS, batch.num_views, dim=sites.VIEWS_DIM),
        ):
            pyro.sample(sites.VIEW_LATENT, dist.Normal(loc, self.log_scale.exp()).to_event(1))


def test_a_pyro_module_guide_from_python_trains_and_resumes_bit_for_bit(tmp_path: Path, digits) -> None:
    data = digits["digits"]

    def run(out: Path, epochs: int, resume: bool = False) -> tuple:
        torch.manual_seed(0)
        method = build_for_data(
            "vae", data, latent_dim=4, encoder=Component("mlp", TINY), decoder=Component("mlp", TINY)
        )
        guide = ScaleGuide(method.encoder, 4)
        config = small_config(out, epochs=epochs, lr=1e-2, resume=resume)
        return train(config, data=data, model=method, guide=guide), guide

    straight, guide = run(tmp_path / "a", 2)
    assert not torch.equal(guide.log_scale.detach(), torch.full((4,), -1.0)), "the PyroParam did not move"
    assert "log_scale" in (tmp_path / "a" / "config.json").read_text()
    run(tmp_path / "b", 1)  # the first half leaves its trained value in the param store ...
    resumed, resumed_guide = run(tmp_path / "b", 2, resume=True)  # ... which the resumed run must not adopt
    assert torch.equal(resumed_guide.log_scale.detach(), guide.log_scale.detach())
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
