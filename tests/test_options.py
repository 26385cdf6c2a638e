"""Options reach the objective: each option, set as a user sets it, changes the loss as it should.

Every method is configured the way ``pssl train`` configures it (``key=value``
tokens through :func:`pssl.config.parse_overrides` / ``apply_overrides``, then
built by name through the registry), and its loss is Pyro's own
``Trace_ELBO`` on a fixed batch. Each test then checks the loss against what the
option means:

* discriminative methods: the loss equals ``B`` times the published loss of
  :mod:`pssl.models.losses` evaluated with the *configured* value (temperature,
  VICReg's three weights, Barlow Twins' off-diagonal weight), on the embeddings
  the method itself produces (see :mod:`pssl.models.discriminative` for the
  factor ``B``);
* generative methods: ``beta`` scales the log-density ratio of every latent site
  (y and z, in model and guide) and nothing else; the likelihood's ``scale``
  scales the x site and nothing else.

A factory that drops an option, or a guide that forgets ``beta`` on one site,
fails here even though the method still trains.
"""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

from pssl.augment import build_augmenter
from pssl.config import Config, apply_overrides, parse_overrides
from pssl.datasets import dataset_defaults, load_dataset
from pssl.models import build_for_data
from pssl.models.losses import barlow_twins_terms, moco_terms, nt_xent_terms, published_loss, vicreg_terms

ITEMS = 16
SMALL = [
    "encoder=mlp",
    "encoder.hidden=32",
    "decoder=mlp",
    "decoder.hidden=32",
    "latent_dim=4",
    "num_views=2",
]
HEAD = ["model.proj_hidden=16", "model.proj_dim=8", "model.proj_batch_norm=false"]


@pytest.fixture(scope="module")
def data():
    return {name: load_dataset(name, {"limit": 200}, seed=0) for name in ("digits", "paired-digits")}


@pytest.fixture(autouse=True)
def fresh_param_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


def configured(tokens: list[str], data, *, seed: int = 0):
    """The method ``pssl train TOKENS`` would build (same weights for the same seed), and a fixed batch."""
    config = apply_overrides(Config(), parse_overrides([*SMALL, *tokens]))
    splits = data["paired-digits" if config.model.name in ("clip", "simvae-multimodal") else "digits"]
    torch.manual_seed(seed)
    method = build_for_data(
        config.model.name,
        splits,
        latent_dim=config.latent_dim,
        num_views=config.num_views,
        likelihood=config.likelihood,
        encoder=config.encoder,
        decoder=config.decoder,
        **config.model.options,
    )
    images = splits.train.float_images()[:ITEMS]
    augmenter = build_augmenter(dataset_defaults(splits.name).augment, splits.train.image_shape, {})
    views = augmenter(images, config.num_views, torch.Generator().manual_seed(1))
    return method, views


def loss(method, views, num_items: int = ITEMS) -> float:
    """Pyro's Trace_ELBO loss; with ``num_items = B`` the batch is the data set (no minibatch scaling)."""
    pyro.set_rng_seed(0)
    with torch.no_grad():
        return Trace_ELBO().loss(method.model, method.guide, views, torch.arange(ITEMS), num_items=num_items)


def spread(method, factor: float = 1.5) -> None:
    """Redraw backbone and head weights with std ``factor / sqrt(fan_in)`` (seed 0).

    At their default initialisation the embeddings of these tiny networks nearly
    coincide, so the invariance and covariance terms are ~1e-4 of the loss and a
    wrong weight on them would hide under the tolerance; spread out, every term
    is a sizeable part of the loss.
    """
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in [*method.backbone.parameters(), *method.head.parameters()]:
            fan_in = parameter.shape[-1] if parameter.dim() > 1 else 1
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * factor / fan_in**0.5)


def embeddings(method, views) -> torch.Tensor:
    with torch.no_grad():
        return method.head(method.backbone(views))


# --- discriminative methods: the configured value is the one in the published loss ----------


def test_simclr_temperature_reaches_the_loss(data) -> None:
    method, views = configured(["model=simclr", *HEAD, "model.temperature=0.1"], data)
    expected = ITEMS * published_loss(nt_xent_terms(embeddings(method, views), temperature=0.1))
    assert loss(method, views) == pytest.approx(float(expected), rel=1e-5)
    default = ITEMS * published_loss(nt_xent_terms(embeddings(method, views), temperature=0.5))
    assert abs(float(expected) - float(default)) > 1e-3 * abs(
        float(default)
    )  # 100x the tolerance: the check tells them apart


def test_moco_temperature_reaches_the_loss(data) -> None:
    # the queue must hold one step's keys and be smaller than the data set: N = 64 items, B = 16
    method, views = configured(["model=moco", *HEAD, "model.queue_size=32", "model.temperature=0.7"], data)
    with torch.no_grad():
        query = method.head(method.backbone(views[:, :1]))[:, 0]
        key = method.keys(views[:, 1])
        queue = method.queue.clone()
    expected = 64 * published_loss(moco_terms(query, key, queue, temperature=0.7))  # (N / B) * B * L
    assert loss(method, views, num_items=64) == pytest.approx(float(expected), rel=1e-5)
    default = 64 * published_loss(moco_terms(query, key, queue, temperature=0.2))
    assert abs(float(expected) - float(default)) > 1e-3 * abs(float(default))


@pytest.mark.parametrize(
    "weights",
    [
        {"invariance_weight": 5.0, "variance_weight": 25.0, "covariance_weight": 1.0},
        {"invariance_weight": 25.0, "variance_weight": 7.0, "covariance_weight": 1.0},
        {"invariance_weight": 25.0, "variance_weight": 25.0, "covariance_weight": 40.0},
        {"invariance_weight": 25.0, "variance_weight": 25.0, "covariance_weight": 1.0, "gamma": 3.0},
    ],
    ids=["invariance", "variance", "covariance", "gamma"],
)
def test_vicreg_weights_reach_the_loss(data, weights) -> None:
    tokens = [f"model.{k}={v}" for k, v in weights.items()]
    method, views = configured(["model=vicreg", *HEAD, *tokens], data)
    spread(method)
    expected = ITEMS * published_loss(vicreg_terms(embeddings(method, views), **weights))
    assert loss(method, views) == pytest.approx(float(expected), rel=1e-5)
    default = ITEMS * published_loss(vicreg_terms(embeddings(method, views)))
    assert abs(float(expected) - float(default)) > 1e-3 * abs(float(default))


def test_barlow_off_diagonal_weight_reaches_the_loss(data) -> None:
    method, views = configured(["model=barlow", *HEAD, "model.off_diagonal_weight=0.5"], data)
    spread(method)
    expected = ITEMS * published_loss(barlow_twins_terms(embeddings(method, views), off_diagonal_weight=0.5))
    assert loss(method, views) == pytest.approx(float(expected), rel=1e-5)
    default = ITEMS * published_loss(barlow_twins_terms(embeddings(method, views)))
    assert abs(float(expected) - float(default)) > 1e-3 * abs(float(default))


def test_clip_temperature_sets_the_logit_scale_in_the_loss(data) -> None:
    method, views = configured(["model=clip", *HEAD, "model.temperature=0.5"], data)
    assert float(method.log_logit_scale) == pytest.approx(math.log(1 / 0.5))
    other, _ = configured(["model=clip", *HEAD, "model.temperature=0.05"], data)
    assert float(other.log_logit_scale) == pytest.approx(math.log(1 / 0.05))
    # same networks, only the logit scale differs: a sharper softmax changes the loss
    assert abs(loss(method, views) - loss(other, views)) > 1e-2


# --- generative methods: beta on every latent site, scale on the observed one ------------------


def site_log_ratios(method, views) -> dict[str, tuple[float, float]]:
    """Per site: (scale, scaled log-density) of model minus guide, from one seeded draw."""
    pyro.set_rng_seed(0)
    index = torch.arange(ITEMS)
    with torch.no_grad():
        guide = poutine.trace(method.guide).get_trace(views, index, num_items=ITEMS)
        model = poutine.trace(poutine.replay(method.model, trace=guide)).get_trace(
            views, index, num_items=ITEMS
        )
    model.compute_log_prob()
    guide.compute_log_prob()
    out = {}
    for trace, sign in ((model, "model"), (guide, "guide")):
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site["name"].startswith("_"):
                continue
            scale = site["scale"]
            scale = float(scale) if not isinstance(scale, torch.Tensor) else float(scale.mean())
            out[f"{sign}:{name}"] = (scale, float(site["log_prob_sum"]))
    return out


@pytest.mark.parametrize("model", ["simvae", "vae", "simvae-multimodal"])
def test_beta_scales_every_latent_site_and_only_those(model: str, data) -> None:
    plain, views = configured([f"model={model}"], data)
    tempered, _ = configured([f"model={model}", "model.beta=0.25"], data)
    base, scaled = site_log_ratios(plain, views), site_log_ratios(tempered, views)
    assert base.keys() == scaled.keys()
    latent = [k for k in base if k.split(":")[1] in ("y", "z") or k.split(":")[1].startswith(("y", "z"))]
    observed = [k for k in base if k.startswith("model:") and k not in latent]
    assert any(k.endswith(":y") for k in latent) == model.startswith("simvae")
    assert any(k.startswith("guide:") for k in latent) and observed
    for key in latent:
        assert scaled[key][0] == pytest.approx(0.25 * base[key][0]), key
        assert scaled[key][1] == pytest.approx(0.25 * base[key][1], rel=1e-5, abs=1e-4), key
    for key in observed:
        assert scaled[key] == pytest.approx(base[key], rel=1e-6), key
    elbo = sum(v for k, (_, v) in scaled.items() if k.startswith("model:")) - sum(
        v for k, (_, v) in scaled.items() if k.startswith("guide:")
    )
    assert loss(tempered, views) == pytest.approx(-elbo, rel=1e-5)


@pytest.mark.parametrize("model", ["simvae", "vae"])
def test_likelihood_scale_scales_the_observed_site_only(model: str, data) -> None:
    plain, views = configured([f"model={model}", "likelihood=bernoulli"], data)
    scaled_method, _ = configured([f"model={model}", "likelihood=bernoulli", "likelihood.scale=3"], data)
    base, scaled = site_log_ratios(plain, views), site_log_ratios(scaled_method, views)
    observed = [k for k in base if k.endswith(":x") or k.split(":")[1].startswith("x")]
    assert observed
    for key in base:
        factor = 3.0 if key in observed else 1.0
        assert scaled[key][1] == pytest.approx(factor * base[key][1], rel=1e-5, abs=1e-4), key
