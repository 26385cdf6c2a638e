"""Every registered method is a Pyro model/guide pair that Pyro itself trains, samples and traces.

Nothing here goes through pssl's training loop: plain ``pyro.infer.SVI``,
``Predictive`` and ``JitTrace_ELBO`` on tensors of views.
"""

from __future__ import annotations

import warnings

import pyro
import pyro.optim
import pytest
import torch
from pyro.infer import SVI, JitTrace_ELBO, Predictive, Trace_ELBO

from pssl.augment import build_augmenter
from pssl.config import Component
from pssl.datasets import dataset_defaults, load_dataset
from pssl.models import MODELS, SSLModel, ViewBatch, build_for_data

SMALL = {"encoder": Component("mlp", {"hidden": (32,)}), "decoder": Component("mlp", {"hidden": (32,)})}
HEAD = {"proj_hidden": 16, "proj_dim": 8}
OPTIONS = {
    "simclr": HEAD,
    "clip": HEAD,
    "moco": {**HEAD, "queue_size": 64},
    "vicreg": HEAD,
    "barlow": HEAD,
}
PAIRED = ("clip", "simvae-multimodal")
ITEMS = 16


@pytest.fixture(scope="module")
def digits():
    return {
        "digits": load_dataset("digits", {"limit": 300}, seed=0),
        "paired-digits": load_dataset("paired-digits", {"limit": 300}, seed=0),
    }


@pytest.fixture(autouse=True)
def fresh_param_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


def views_for(data, seed: int = 0) -> torch.Tensor:
    images = data.train.float_images()[:ITEMS]
    augmenter = build_augmenter(dataset_defaults(data.name).augment, data.train.image_shape, {})
    return augmenter(images, 2, torch.Generator().manual_seed(seed))


def method_and_views(name: str, digits) -> tuple[SSLModel, torch.Tensor, int]:
    data = digits["paired-digits" if name in PAIRED else "digits"]
    torch.manual_seed(0)
    method = build_for_data(name, data, latent_dim=4, **SMALL, **OPTIONS.get(name, {}))
    return method, views_for(data), len(data.train)


def fixed_loss(method: SSLModel, views: torch.Tensor, num_items: int, state: dict) -> float:
    """Trace_ELBO loss (10 particles, seed 0) with ``state`` loaded (buffers and all)."""
    method.load_state_dict(state)
    pyro.set_rng_seed(0)
    with torch.no_grad():
        return Trace_ELBO(num_particles=10).loss(method.model, method.guide, views, num_items=num_items)


@pytest.mark.parametrize("name", sorted(MODELS.names()))
def test_plain_svi_moves_every_parameter_and_lowers_the_loss(name: str, digits) -> None:
    method, views, num_items = method_and_views(name, digits)
    start = {k: v.detach().clone() for k, v in method.state_dict().items()}
    trainable = {n for n, p in method.named_parameters() if p.requires_grad}
    svi = SVI(method.model, method.guide, pyro.optim.Adam({"lr": 3e-3}), Trace_ELBO())
    pyro.set_rng_seed(1)
    for _ in range(8):
        svi.step(views, torch.arange(ITEMS), num_items=num_items)
        method.after_step()
    moved = {n for n, p in method.named_parameters() if not torch.equal(p.detach(), start[n])}
    assert trainable - moved == set(), (
        f"{name}: parameters plain SVI did not train: {sorted(trainable - moved)}"
    )
    store = pyro.get_param_store()
    assert {f"{name}$$${n}" for n in trainable} == set(store.keys())
    # the loss of the trained weights against the starting weights, same noise, same buffers
    # (MoCo's queue and key networks as they are now), so only the trained weights differ
    trained = {k: v.detach().clone() for k, v in method.state_dict().items()}
    untrained = {k: (start[k] if k in trainable else trained[k]) for k in start}
    before = fixed_loss(method, views, num_items, untrained)
    after = fixed_loss(method, views, num_items, trained)
    assert after < before, f"{name}: loss {before:.6g} -> {after:.6g} after 8 plain SVI steps"


def test_moco_after_step_is_the_plain_pyro_hook(digits) -> None:
    method, views, num_items = method_and_views("moco", digits)
    queue = method.queue.clone()
    keys = [p.detach().clone() for p in method.key_backbone.parameters()]
    svi = SVI(method.model, method.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
    svi.step(views, num_items=num_items)
    assert torch.equal(method.queue, queue), "the queue changes only in the hook"
    method.after_step()
    assert int(method.queue_pointer) == ITEMS
    assert not torch.equal(method.queue[:ITEMS], queue[:ITEMS]) and torch.equal(
        method.queue[ITEMS:], queue[ITEMS:]
    )
    assert all(not torch.equal(a, b) for a, b in zip(keys, method.key_backbone.parameters()))
    assert not any(k.startswith("moco$$$key_") for k in pyro.get_param_store().keys())


def test_a_second_model_of_the_same_name_trains(digits) -> None:
    """A stale param-store entry of the same name is re-pointed, not silently trained instead."""
    first, views, num_items = method_and_views("vae", digits)
    SVI(first.model, first.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO()).step(
        views, num_items=num_items
    )
    second, _, _ = method_and_views("vae", digits)
    start = [p.detach().clone() for p in second.parameters()]
    SVI(second.model, second.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO()).step(
        views, num_items=num_items
    )
    assert all(not torch.equal(a, b) for a, b in zip(start, second.parameters()))
    store = pyro.get_param_store()
    assert all(store.get_param(f"vae$$${n}") is p for n, p in second.named_parameters())


def test_view_batch_and_tensor_arguments_give_the_same_trace(digits) -> None:
    method, views, num_items = method_and_views("simvae", digits)
    index = torch.arange(3, 3 + ITEMS)
    pyro.set_rng_seed(0)
    by_tensors = pyro.poutine.trace(method.guide).get_trace(views, index, num_items)
    pyro.set_rng_seed(0)
    by_batch = pyro.poutine.trace(method.guide).get_trace(ViewBatch(views, index, num_items))
    assert torch.equal(by_tensors.nodes["z"]["value"], by_batch.nodes["z"]["value"])
    assert torch.equal(by_tensors.nodes["items"]["value"], index)


@pytest.mark.parametrize("name", ["simvae", "vae", "simvae-multimodal"])
def test_prior_predictive_samples_views_in_the_likelihoods_support(name: str, digits) -> None:
    method, views, _ = method_and_views(name, digits)
    pyro.set_rng_seed(0)
    samples = Predictive(method.model, num_samples=3)(num_items=ITEMS)
    x = samples["x"]
    if name == "simvae-multimodal":  # the two modalities (top, bottom halves) are its views
        views = torch.stack([views[:, 0, :, :4], views[:, -1, :, 4:]], dim=1)
    assert x.shape == (3, *views.shape)
    # Bernoulli likelihood on grey digits: binary samples, unlike the grey data
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(x[0], views) and not torch.equal(x[0], x[1])


@pytest.mark.parametrize("name", ["simvae", "vae"])
def test_posterior_predictive_has_the_views_shape(name: str, digits) -> None:
    method, views, num_items = method_and_views(name, digits)
    pyro.set_rng_seed(0)
    one_call = Predictive(method.model, guide=method.guide, num_samples=4)(views, observe=False)
    assert one_call["x"].shape == (4, *views.shape)
    assert not torch.equal(one_call["x"][0], views)
    # the two-stage form: guide draws, then the model given only the items
    posterior = Predictive(method.guide, num_samples=4)(views, num_items=num_items)
    predictive = Predictive(method.model, posterior_samples=posterior, return_sites=["x"])
    x = predictive(index=torch.arange(ITEMS), num_items=num_items, num_views=2)["x"]
    assert x.shape == (4, *views.shape)


def test_discriminative_model_refuses_to_sample_views(digits) -> None:
    method, _, _ = method_and_views("simclr", digits)
    with pytest.raises(ValueError, match="discriminative"):
        method.model(num_items=4)


@pytest.mark.parametrize("name", ["simvae", "vae", "simvae-multimodal"])
def test_jit_trace_elbo_trains_generative_methods(name: str, digits) -> None:
    method, views, num_items = method_and_views(name, digits)
    start = [p.detach().clone() for p in method.parameters()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        svi = SVI(
            method.model, method.guide, pyro.optim.Adam({"lr": 1e-3}), JitTrace_ELBO(ignore_jit_warnings=True)
        )
        losses = [svi.step(views, torch.arange(ITEMS), num_items=num_items) for _ in range(3)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert all(not torch.equal(a, b) for a, b in zip(start, method.parameters()))


def test_build_for_data_checks_the_data_and_names() -> None:
    images = torch.rand(10, 1, 8, 8) * 2  # outside the Bernoulli likelihood's [0, 1]
    with pytest.raises(ValueError):
        build_for_data("simvae", images)
    with pytest.raises(ValueError, match="nosuch"):
        build_for_data("nosuch", (1, 8, 8))
    method = build_for_data("vae", (1, 8, 8), latent_dim=3, likelihood="gaussian")
    assert method.latent_dim == 3 and method.num_views == 2
