"""Discriminative SSL as inference: losses against loop implementations, the Pyro models against the
published losses, degenerate cases, MoCo's state, training, and one conformance battery over every
registered model."""

from __future__ import annotations

import copy
import importlib.util
import math
from pathlib import Path

import pyro
import pytest
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites
from torch import nn

from pssl.config import Component, Config
from pssl.datasets import load_dataset, split_modalities
from pssl.inference.objectives import ELBO
from pssl.inference.runs import load_run
from pssl.inference.train import train
from pssl.models import MODELS, ModelSpec, ViewBatch, build_model, losses, sites
from pssl.models.contrastive import CLIP, MoCo, SimCLR
from pssl.models.redundancy import BarlowTwins, VICReg

DISCRIMINATIVE = ("simclr", "clip", "moco", "vicreg", "barlow")
PAIRED = ("clip", "simvae-multimodal")
TINY = Component("mlp", {"hidden": "16"})


@pytest.fixture
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


# --------------------------------------------------------------------------- loop references
# Written from the papers' formulas with plain Python loops over items, views and features.


def unit(vector: torch.Tensor) -> torch.Tensor:
    return vector / vector.pow(2).sum().sqrt()


def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    total = a.new_zeros(())
    for f in range(a.shape[0]):
        total = total + a[f] * b[f]
    return total


def loop_nt_xent(embeddings: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent; for J > 2 each anchor averages -log softmax over its J - 1 positives."""
    items, views, _ = embeddings.shape
    points = [(i, j) for i in range(items) for j in range(views)]
    u = {p: unit(embeddings[p[0], p[1]]) for p in points}
    total = embeddings.new_zeros(())
    for anchor in points:
        denominator = embeddings.new_zeros(())
        for other in points:
            if other != anchor:
                denominator = denominator + torch.exp(dot(u[anchor], u[other]) / temperature)
        positives = [(anchor[0], k) for k in range(views) if k != anchor[1]]
        for positive in positives:
            numerator = torch.exp(dot(u[anchor], u[positive]) / temperature)
            total = total - torch.log(numerator / denominator) / len(positives)
    return total / len(points)


def loop_clip(first: torch.Tensor, second: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    items = first.shape[0]
    a = [unit(first[i]) for i in range(items)]
    b = [unit(second[i]) for i in range(items)]
    loss_a, loss_b = first.new_zeros(()), first.new_zeros(())
    for i in range(items):
        row = sum(torch.exp(scale * dot(a[i], b[k])) for k in range(items))
        column = sum(torch.exp(scale * dot(a[k], b[i])) for k in range(items))
        loss_a = loss_a - torch.log(torch.exp(scale * dot(a[i], b[i])) / row)
        loss_b = loss_b - torch.log(torch.exp(scale * dot(a[i], b[i])) / column)
    return (loss_a / items + loss_b / items) / 2


def loop_moco(
    query: torch.Tensor, key: torch.Tensor, queue: torch.Tensor, temperature: float
) -> torch.Tensor:
    total = query.new_zeros(())
    for i in range(query.shape[0]):
        q = unit(query[i])
        positive = torch.exp(dot(q, unit(key[i])) / temperature)
        negatives = sum(torch.exp(dot(q, unit(queue[n])) / temperature) for n in range(queue.shape[0]))
        total = total - torch.log(positive / (positive + negatives))
    return total / query.shape[0]


def loop_vicreg_parts(first: torch.Tensor, second: torch.Tensor, eps: float = 1e-4, gamma: float = 1.0):
    """Unweighted (s, (v(Z) + v(Z')) / 2, c(Z) + c(Z')) of the official VICReg implementation.

    ``s`` is the published ``mse_loss``; the variance hinge is averaged over the two
    branches (the paper's eq. 6 writes a sum), the covariance summed.
    """
    items, features = first.shape
    invariance = first.new_zeros(())
    for i in range(items):
        for f in range(features):
            invariance = invariance + (first[i, f] - second[i, f]) ** 2
    invariance = invariance / (items * features)
    variance, covariance = first.new_zeros(()), first.new_zeros(())
    for z in (first, second):
        means = [sum(z[i, f] for i in range(items)) / items for f in range(features)]
        for f in range(features):
            var = sum((z[i, f] - means[f]) ** 2 for i in range(items)) / (items - 1)
            variance = variance + torch.clamp(gamma - torch.sqrt(var + eps), min=0) / (2 * features)
        for f in range(features):
            for g in range(features):
                if f != g:
                    c = sum((z[i, f] - means[f]) * (z[i, g] - means[g]) for i in range(items)) / (items - 1)
                    covariance = covariance + c**2 / features
    return invariance, variance, covariance


def loop_vicreg(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    invariance, variance, covariance = loop_vicreg_parts(first, second)
    return 25 * invariance + 25 * variance + 1 * covariance


def loop_barlow(
    first: torch.Tensor, second: torch.Tensor, lam: float = 5e-3, eps: float = 1e-5
) -> torch.Tensor:
    items, features = first.shape

    def standardised(z: torch.Tensor) -> list[list[torch.Tensor]]:
        out = [[None] * features for _ in range(items)]
        for f in range(features):
            mean = sum(z[i, f] for i in range(items)) / items
            var = sum((z[i, f] - mean) ** 2 for i in range(items)) / items
            for i in range(items):
                out[i][f] = (z[i, f] - mean) / torch.sqrt(var + eps)
        return out

    a, b = standardised(first), standardised(second)
    loss = first.new_zeros(())
    for f in range(features):
        for g in range(features):
            c = sum(a[i][f] * b[i][g] for i in range(items)) / items
            loss = loss + ((1 - c) ** 2 if f == g else lam * c**2)
    return loss


# --------------------------------------------------------------------------- small fixed networks


class LinearBackbone(nn.Module):
    """Flatten and a fixed random linear map: ``(..., C, H, W) -> (..., output_dim)``."""

    def __init__(self, image_shape: tuple[int, int, int], output_dim: int, seed: int) -> None:
        super().__init__()
        self.image_shape, self.output_dim = image_shape, output_dim
        generator = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(output_dim, math.prod(image_shape), generator=generator) * 0.5)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(-3) @ self.weight.T


class LinearHead(nn.Module):
    def __init__(self, input_dim: int, output_dim: int, seed: int) -> None:
        super().__init__()
        self.output_dim = output_dim
        generator = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(output_dim, input_dim, generator=generator))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features @ self.weight.T


SHAPE = (1, 4, 3)


def fixed_batch(items: int = 5, views: int = 2, num_items: int = 40, seed: int = 0) -> ViewBatch:
    generator = torch.Generator().manual_seed(seed)
    return ViewBatch(torch.rand(items, views, *SHAPE, generator=generator), torch.arange(items), num_items)


def grads_of(loss: torch.Tensor, params: list[nn.Parameter]) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, params))


# --------------------------------------------------------------------------- pure losses vs loops


@pytest.mark.parametrize("views", [2, 3])
def test_nt_xent_value_and_gradient_match_loop(float64, views: int) -> None:
    embeddings = torch.randn(4, views, 5, generator=torch.Generator().manual_seed(1), requires_grad=True)
    ours = losses.published_loss(losses.nt_xent_terms(embeddings, 0.3))
    reference = loop_nt_xent(embeddings, 0.3)
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(grads_of(ours, [embeddings]), grads_of(reference, [embeddings]))


def test_clip_value_and_gradient_match_loop(float64) -> None:
    generator = torch.Generator().manual_seed(2)
    first = torch.randn(5, 4, generator=generator, requires_grad=True)
    second = torch.randn(5, 4, generator=generator, requires_grad=True)
    scale = torch.tensor(3.0, requires_grad=True)
    ours = losses.published_loss(losses.clip_terms(first, second, scale))
    reference = loop_clip(first, second, scale)
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(
        grads_of(ours, [first, second, scale]), grads_of(reference, [first, second, scale])
    )


def test_moco_value_and_gradient_match_loop(float64) -> None:
    generator = torch.Generator().manual_seed(3)
    query = torch.randn(4, 3, generator=generator, requires_grad=True)
    key, queue = torch.randn(4, 3, generator=generator), torch.randn(7, 3, generator=generator)
    ours = losses.published_loss(losses.moco_terms(query, key, queue, 0.2))
    reference = loop_moco(query, key, queue, 0.2)
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(grads_of(ours, [query]), grads_of(reference, [query]))


def test_vicreg_value_and_gradient_match_loop(float64) -> None:
    embeddings = torch.randn(6, 2, 4, generator=torch.Generator().manual_seed(4), requires_grad=True)
    terms = losses.vicreg_terms(embeddings)
    assert set(terms) == {"invariance", "variance", "covariance"}
    invariance, variance, covariance = loop_vicreg_parts(embeddings[:, 0], embeddings[:, 1])
    torch.testing.assert_close(terms["invariance"].mean(), 25 * invariance)
    torch.testing.assert_close(terms["variance"].mean(), 25 * variance)
    torch.testing.assert_close(terms["covariance"].mean(), covariance)
    ours, reference = losses.published_loss(terms), loop_vicreg(embeddings[:, 0], embeddings[:, 1])
    torch.testing.assert_close(grads_of(ours, [embeddings]), grads_of(reference, [embeddings]))


def official_vicreg(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """VICReg as the official implementation writes it for two branches (matrix form, weights 25/25/1).

    Independent of :func:`loop_vicreg_parts`: batch matrix products instead of loops.
    """
    batch, features = x.shape
    invariance = F.mse_loss(x, y)
    x, y = x - x.mean(dim=0), y - y.mean(dim=0)
    std_x, std_y = torch.sqrt(x.var(dim=0) + 1e-4), torch.sqrt(y.var(dim=0) + 1e-4)
    variance = torch.mean(F.relu(1 - std_x)) / 2 + torch.mean(F.relu(1 - std_y)) / 2
    off = ~torch.eye(features, dtype=torch.bool)
    cov_x, cov_y = (x.T @ x) / (batch - 1), (y.T @ y) / (batch - 1)
    covariance = cov_x[off].pow(2).sum() / features + cov_y[off].pow(2).sum() / features
    return 25.0 * invariance + 25.0 * variance + 1.0 * covariance


def test_vicreg_matches_the_official_formula_with_averaged_variance(float64) -> None:
    """Value and gradient equal the official implementation's loss, variance averaged over branches.

    The embeddings are scaled so that some features' standard deviations fall below
    gamma = 1 (the hinge is active) and others do not: a summed variance term would
    differ by the whole hinge.
    """
    generator = torch.Generator().manual_seed(14)
    scales = torch.tensor([0.2, 0.5, 2.0, 0.1, 3.0])
    embeddings = (torch.randn(16, 2, 5, generator=generator) * scales).requires_grad_(True)
    terms = losses.vicreg_terms(embeddings)
    ours = losses.published_loss(terms)
    reference = official_vicreg(embeddings[:, 0], embeddings[:, 1])
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(grads_of(ours, [embeddings]), grads_of(reference, [embeddings]))
    x, y = embeddings[:, 0].detach(), embeddings[:, 1].detach()
    hinge = [F.relu(1 - torch.sqrt(z.var(dim=0) + 1e-4)).mean() for z in (x, y)]
    assert float(hinge[0] + hinge[1]) > 0.1  # the hinge is active, so the test can fail
    torch.testing.assert_close(terms["variance"][0], 25.0 * (hinge[0] + hinge[1]) / 2)


def test_barlow_value_and_gradient_match_loop(float64) -> None:
    embeddings = torch.randn(6, 2, 4, generator=torch.Generator().manual_seed(5), requires_grad=True)
    ours = losses.published_loss(losses.barlow_twins_terms(embeddings))
    reference = loop_barlow(embeddings[:, 0], embeddings[:, 1])
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(grads_of(ours, [embeddings]), grads_of(reference, [embeddings]))


def test_terms_against_a_larger_batch_split_the_full_terms(float64) -> None:
    """Items ``offset..`` told apart from a whole (e.g. gathered) batch get the whole batch's terms."""
    generator = torch.Generator().manual_seed(6)
    whole = torch.randn(6, 2, 4, generator=generator)
    for offset in (0, 3):
        part = whole[offset : offset + 3]
        logits = losses.info_nce_logits(part, 0.3, candidates=whole, offset=offset)
        torch.testing.assert_close(logits, losses.info_nce_logits(whole, 0.3)[offset : offset + 3])
        torch.testing.assert_close(
            losses.info_nce_positive_index(3, 2, offset=offset),
            losses.info_nce_positive_index(6, 2)[offset : offset + 3],
        )
        for terms in (losses.vicreg_terms, losses.barlow_twins_terms):
            split, full = terms(part, batch_embeddings=whole), terms(whole)
            for name in full:
                torch.testing.assert_close(split[name], full[name][offset : offset + 3])
        a, b = whole[:, 0], whole[:, 1]
        split = losses.clip_terms(
            a[offset : offset + 3], b[offset : offset + 3], 2.0, all_first=a, all_second=b, offset=offset
        )
        torch.testing.assert_close(
            split["infonce"], losses.clip_terms(a, b, 2.0)["infonce"][offset : offset + 3]
        )


# --------------------------------------------------------------------------- degenerate cases


def test_identical_views_give_zero_invariance() -> None:
    embeddings = torch.randn(8, 1, 5).expand(8, 2, 5)
    assert float(losses.vicreg_terms(embeddings)["invariance"].abs().max()) == 0.0


def test_collapsed_representation_pays_the_full_variance_hinge() -> None:
    eps, gamma = 1e-4, 1.0
    collapsed = torch.full((8, 2, 5), 0.3)
    terms = losses.vicreg_terms(collapsed, variance_weight=1.0, gamma=gamma, eps=eps)
    # per view: (1/p) sum_f (gamma - sqrt(0 + eps)) = gamma - sqrt(eps); averaged over the two views
    torch.testing.assert_close(terms["variance"], torch.full((8,), gamma - math.sqrt(eps)))
    assert float(terms["covariance"].abs().max()) == 0.0
    spread = losses.vicreg_terms(torch.randn(64, 2, 5) * 3, variance_weight=1.0)
    assert float(spread["variance"][0]) < 0.05 < float(terms["variance"][0])


def test_infonce_of_orthogonal_matched_pairs_approaches_zero_as_temperature_falls(float64) -> None:
    items = 4
    embeddings = torch.eye(items).unsqueeze(1).expand(items, 2, items)  # views agree; items orthogonal
    values = []
    for temperature in (1.0, 0.3, 0.1, 0.03):
        value = float(losses.published_loss(losses.nt_xent_terms(embeddings, temperature)))
        # closed form: log(1 + (2B - 2) exp(-1 / tau)); positives at cosine 1, negatives at 0
        assert value == pytest.approx(math.log1p((2 * items - 2) * math.exp(-1 / temperature)), rel=1e-9)
        values.append(value)
    assert values == sorted(values, reverse=True) and values[-1] < 1e-12
    clip = losses.published_loss(losses.clip_terms(torch.eye(items), torch.eye(items), 1 / 0.03))
    assert float(clip) < 1e-12


def test_perfectly_decorrelated_twins_have_zero_barlow_loss(float64) -> None:
    signs = torch.tensor(
        [[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]]
    )  # zero mean, unit var, orthogonal
    embeddings = signs.unsqueeze(1).expand(4, 2, 2)
    total = losses.published_loss(losses.barlow_twins_terms(embeddings, eps=0.0))
    assert float(total) == pytest.approx(0.0, abs=1e-12)


# --------------------------------------------------------------------------- Pyro models vs published losses


def run_elbo(method: nn.Module, batch: ViewBatch):
    method.train()
    return ELBO(method)(batch)


def test_simclr_categorical_log_likelihood_is_minus_nt_xent(float64) -> None:
    for views in (2, 3):
        batch = fixed_batch(views=views)
        method = SimCLR(LinearBackbone(SHAPE, 3, seed=0), LinearHead(3, 4, seed=1), temperature=0.4)
        out = run_elbo(method, batch)
        embeddings = method.head(method.backbone(batch.views))
        reference = loop_nt_xent(embeddings, 0.4)
        torch.testing.assert_close(out.terms["infonce"], -reference.detach())  # nats per item = -NT-Xent
        torch.testing.assert_close(out.terms["elbo"], -reference.detach())
        assert float(out.terms["prior"]) == 0.0 and float(out.terms["entropy"]) == 0.0
        torch.testing.assert_close(out.loss, batch.batch_size * reference)  # loss = B * published mean loss
        params = list(method.parameters())
        torch.testing.assert_close(grads_of(out.loss, params), grads_of(batch.batch_size * reference, params))
        # the diagnostics are reported but leave the loss alone
        assert {"alignment", "uniformity"} <= set(out.terms)


def test_clip_model_is_symmetric_infonce(float64) -> None:
    batch = fixed_batch(items=4, views=2)
    half = split_modalities(batch.views[:, 0])[0].shape[-3:]
    method = CLIP(
        LinearBackbone(tuple(half), 3, seed=0),
        LinearBackbone(tuple(half), 3, seed=1),
        LinearHead(3, 4, seed=2),
        LinearHead(3, 4, seed=3),
    )
    out = run_elbo(method, batch)
    first = method.first_head(method.first_backbone(split_modalities(batch.views[:, 0])[0]))
    second = method.second_head(method.second_backbone(split_modalities(batch.views[:, -1])[1]))
    reference = loop_clip(first, second, method.log_logit_scale.exp())
    torch.testing.assert_close(out.terms["infonce"], -reference.detach())
    torch.testing.assert_close(out.loss, batch.batch_size * reference)
    params = list(method.parameters())
    assert any(p is method.log_logit_scale for p in params)
    torch.testing.assert_close(grads_of(out.loss, params), grads_of(batch.batch_size * reference, params))
    assert float(method.log_logit_scale.detach()) == pytest.approx(math.log(1 / 0.07))


def test_clip_logit_scale_is_clamped_at_100() -> None:
    method = CLIP(
        LinearBackbone((1, 2, 3), 3, 0),
        LinearBackbone((1, 2, 3), 3, 1),
        LinearHead(3, 4, 2),
        LinearHead(3, 4, 3),
    )
    with torch.no_grad():
        method.log_logit_scale.fill_(math.log(500.0))
    assert float(method.logit_scale().detach()) == pytest.approx(100.0)
    method.after_step()
    assert float(method.log_logit_scale) == pytest.approx(math.log(100.0))


def test_moco_model_is_infonce_against_key_and_queue(float64) -> None:
    batch = fixed_batch(items=4)
    method = MoCo(LinearBackbone(SHAPE, 3, seed=0), LinearHead(3, 4, seed=1), queue_size=6, temperature=0.2)
    with torch.no_grad():  # let the key networks differ from the query networks
        method.key_backbone.weight.add_(0.3)
    out = run_elbo(method, batch)
    query = method.head(method.backbone(batch.views[:, 0]))
    key = method.key_head(method.key_backbone(batch.views[:, 1]))
    reference = loop_moco(query, key.detach(), method.queue, 0.2)
    torch.testing.assert_close(out.terms["infonce"], -reference.detach())
    torch.testing.assert_close(out.loss, batch.batch_size * reference)
    params = [p for p in method.parameters() if p.requires_grad]
    torch.testing.assert_close(grads_of(out.loss, params), grads_of(batch.batch_size * reference, params))
    assert not any(p.requires_grad for p in method.key_backbone.parameters())


@pytest.mark.parametrize(
    ("cls", "names", "reference"),
    [
        (VICReg, {"invariance", "variance", "covariance"}, loop_vicreg),
        (BarlowTwins, {"on_diagonal", "off_diagonal"}, loop_barlow),
    ],
)
def test_redundancy_models_are_their_published_losses(float64, cls, names, reference) -> None:
    batch = fixed_batch(items=6)
    method = cls(LinearBackbone(SHAPE, 3, seed=0), LinearHead(3, 4, seed=1))
    out = run_elbo(method, batch)
    embeddings = method.head(method.backbone(batch.views))
    expected = reference(embeddings[:, 0], embeddings[:, 1])
    assert names <= set(out.terms)
    torch.testing.assert_close(sum(out.terms[n] for n in names), -expected.detach())
    torch.testing.assert_close(out.loss, batch.batch_size * expected)
    params = list(method.parameters())
    torch.testing.assert_close(grads_of(out.loss, params), grads_of(batch.batch_size * expected, params))


def test_vicreg_terms_are_separate_factor_sites() -> None:
    batch = fixed_batch(items=6)
    method = VICReg(LinearBackbone(SHAPE, 3, seed=0), LinearHead(3, 4, seed=1))
    guide = poutine.trace(method.guide).get_trace(batch)
    model = poutine.trace(poutine.replay(method.model, trace=guide)).get_trace(batch)
    for name in ("invariance", "variance", "covariance"):
        site = model.nodes[name]
        assert site["is_observed"] and site["fn"].batch_shape == (6, 1)  # per item, in the items plate
        assert [f.name for f in site["cond_indep_stack"]] == [sites.ITEMS]


@pytest.mark.parametrize("name", ["simclr", "clip", "vicreg", "barlow"])
def test_batch_of_one_item_is_refused(name: str) -> None:
    method = build_model(name, spec_for(name), small_options(name))
    with pytest.raises(ValueError, match="at least 2 items"):
        run_elbo(method, ViewBatch(torch.rand(1, 2, 1, 8, 8), torch.arange(1), 10))


# --------------------------------------------------------------------------- MoCo state


def test_moco_after_step_moves_key_networks_and_enqueues_the_step_keys() -> None:
    method = MoCo(LinearBackbone(SHAPE, 3, seed=0), LinearHead(3, 4, seed=1), queue_size=10, momentum=0.9)
    batch = fixed_batch(items=6)
    expected_keys = method.keys(batch.views[:, 1])
    out = run_elbo(method, batch)
    out.loss.backward()
    with torch.no_grad():
        for p in method.parameters():
            if p.requires_grad:
                p.sub_(0.5 * p.grad)
    key_before = method.key_backbone.weight.detach().clone()
    queue_before = method.queue.clone()
    method.after_step()
    torch.testing.assert_close(
        method.key_backbone.weight, 0.9 * key_before + 0.1 * method.backbone.weight.detach()
    )
    torch.testing.assert_close(method.queue[:6], expected_keys)
    torch.testing.assert_close(method.queue[6:], queue_before[6:])
    assert int(method.queue_pointer) == 6
    # the second step wraps around the ring buffer
    second = fixed_batch(items=6, seed=1)
    run_elbo(method, second)
    keys = method._pending_keys.clone()
    method.after_step()
    torch.testing.assert_close(method.queue[6:], keys[:4])
    torch.testing.assert_close(method.queue[:2], keys[4:])
    assert int(method.queue_pointer) == 2
    method.after_step()  # no pending keys: nothing enqueued
    assert int(method.queue_pointer) == 2


def test_moco_queue_must_be_smaller_than_the_data() -> None:
    method = MoCo(LinearBackbone(SHAPE, 3, seed=0), LinearHead(3, 4, seed=1), queue_size=40)
    with pytest.raises(ValueError, match="queue_size=40"):
        run_elbo(method, fixed_batch(items=5, num_items=40))
    method.eval()  # validation batches are not checked
    ELBO(method)(fixed_batch(items=5, num_items=40))


def test_moco_queue_defaults_to_what_the_data_can_fill_and_survives_reloading() -> None:
    """Unset, the queue is min(4096, half the items) in whole steps, sized at the first batch."""
    from pssl.models.contrastive import default_queue_size

    assert default_queue_size(1293, 64) == 640
    assert default_queue_size(100000, 256) == 4096
    assert default_queue_size(100, 64) == 64
    with pytest.raises(ValueError, match="more training items"):
        default_queue_size(64, 64)
    method = MoCo(LinearBackbone(SHAPE, 3, seed=0), LinearHead(3, 4, seed=1))
    assert method.queue_size is None and method.queue.shape == (0, 4)
    run_elbo(method, fixed_batch(items=5, num_items=40))
    assert method.queue_size == 20 and method.queue.shape == (20, 4)
    assert method.describe()["queue_size"] == 20 and method.describe()["queue_size_from_data"]
    fresh = MoCo(LinearBackbone(SHAPE, 3, seed=0), LinearHead(3, 4, seed=1))
    fresh.load_state_dict(method.state_dict())  # a checkpoint restores the size it was trained with
    assert fresh.queue_size == 20 and torch.equal(fresh.queue, method.queue)


# --------------------------------------------------------------------------- conformance battery


def spec_for(name: str, image_shape: tuple[int, int, int] = (1, 8, 8)) -> ModelSpec:
    return ModelSpec(
        image_shape=image_shape,
        latent_dim=3,
        num_views=2,
        encoder=TINY,
        decoder=TINY,
        prior=Component("gaussian"),
        view_prior=Component("gaussian"),
        likelihood=Component("bernoulli"),
    )


def small_options(name: str) -> dict:
    options: dict = {}
    if name in DISCRIMINATIVE:
        options.update(proj_hidden=8, proj_dim=6)
    if name == "moco":
        options.update(queue_size=8)
    return options


def non_trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k not in trainable}


def seeded_loss(model: nn.Module, batch: ViewBatch) -> torch.Tensor:
    pyro.set_rng_seed(0)
    return ELBO(model)(batch).loss


@pytest.mark.parametrize("name", MODELS.names())
def test_conformance(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, spec_for(name), small_options(name))
    batch = ViewBatch(
        torch.rand(6, 2, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.arange(6), 24
    )
    model.check_data(batch.views[:, 0])
    model.train()
    # model and guide share their latent sites
    guide = prune_subsample_sites(poutine.trace(model.guide).get_trace(batch))
    trace = prune_subsample_sites(poutine.trace(poutine.replay(model.model, trace=guide)).get_trace(batch))
    latent_model = {n for n, s in trace.nodes.items() if s["type"] == "sample" and not s["is_observed"]}
    latent_guide = {n for n, s in guide.nodes.items() if s["type"] == "sample" and not s["is_observed"]}
    assert latent_model == latent_guide and sites.VIEW_LATENT in latent_guide
    # representation
    with torch.no_grad():
        codes = model.encode(torch.rand(5, 1, 8, 8))
    assert codes.shape == (5, model.representation_dim)
    # a few steps lower the loss on a fixed batch (with non-trained state such as MoCo's queue held)
    before = seeded_loss(model, batch)
    assert torch.isfinite(before)
    held = non_trainable_state(model)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(5):
        optimizer.zero_grad()
        seeded_loss(model, batch).backward()
        optimizer.step()
        model.after_step()
    model.load_state_dict(held, strict=False)
    after = seeded_loss(model, batch)
    assert float(after) < float(before), f"{name}: loss {float(before):.4g} -> {float(after):.4g}"
    # state_dict round trip
    torch.manual_seed(1)
    twin = build_model(name, spec_for(name), small_options(name))
    twin.load_state_dict(model.state_dict())
    model.eval(), twin.eval()
    with torch.no_grad():
        images = torch.rand(4, 1, 8, 8)
        torch.testing.assert_close(twin.encode(images), model.encode(images))
        torch.testing.assert_close(seeded_loss(twin, batch), seeded_loss(model, batch))


@pytest.mark.parametrize("name", DISCRIMINATIVE + ("simvae-multimodal",))
def test_projection_and_modality_representations(name: str) -> None:
    options = small_options(name)
    if name in DISCRIMINATIVE:
        projected = build_model(name, spec_for(name), {**options, "representation": "projection"})
        assert projected.encode(torch.rand(3, 1, 8, 8)).shape == (3, 6) == (3, projected.representation_dim)
    if name in PAIRED:
        both = build_model(name, spec_for(name), {**options, "encode_modality": "both"})
        assert both.encode(torch.rand(3, 1, 8, 8)).shape == (3, 6) == (3, both.representation_dim)


def test_multimodal_simvae_observes_the_two_halves_as_views() -> None:
    model = build_model("simvae-multimodal", spec_for("simvae-multimodal"))
    batch = ViewBatch(torch.rand(5, 2, 1, 8, 8), torch.arange(5), 10)
    guide = poutine.trace(model.guide).get_trace(batch)
    trace = poutine.trace(poutine.replay(model.model, trace=guide)).get_trace(batch)
    expected = torch.stack([batch.views[:, 0, :, :4], batch.views[:, 1, :, 4:]], dim=1)
    torch.testing.assert_close(trace.nodes[sites.OBSERVATION]["value"], expected)
    assert trace.nodes[sites.VIEW_LATENT]["value"].shape == (5, 2, 3)
    assert model.reconstruct(torch.rand(2, 1, 8, 8)).shape == (2, 1, 8, 8)
    assert model.sample_images(3).shape == (3, 1, 8, 8)
    with pytest.raises(ValueError, match="even image height"):
        build_model("simvae-multimodal", spec_for("simvae-multimodal", (1, 7, 8)))


# --------------------------------------------------------------------------- training through the one loop


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", {"limit": 256}, seed=0)


@pytest.fixture(scope="module")
def paired_digits():
    return load_dataset("paired-digits", {"limit": 256}, seed=0)


def tiny_config(out: Path, name: str, **changes) -> Config:
    options = small_options(name)
    if name == "moco":  # batch norm in the head: the tiny MLP's outputs start nearly collinear
        options.update(queue_size=64, proj_batch_norm=True)
    base = dict(
        model=Component(name, options),
        data=Component("paired-digits" if name in PAIRED else "digits", {"limit": 256}),
        encoder=Component("mlp", {"hidden": "32,16"}),
        decoder=Component("mlp", {"hidden": "16,32"}),
        augment=Component("digits", {"vertical_flip": 0.0}),  # a flip would swap the paired halves
        latent_dim=4,
        batch_size=32,
        epochs=3,
        lr=3e-3,
        log_every=1,
        out=str(out),
        progress=False,
    )
    base.update(changes)
    return Config(**base)


@pytest.mark.parametrize("name", DISCRIMINATIVE + ("simvae-multimodal",))
def test_training_lowers_the_loss(tmp_path: Path, digits, paired_digits, name: str) -> None:
    result = train(tiny_config(tmp_path / name, name), data=paired_digits if name in PAIRED else digits)
    elbo = [row["elbo"] for row in result.history]  # one row per step
    first, last = sum(elbo[2:6]) / 4, sum(elbo[-4:]) / 4  # from step 3: MoCo's queue holds real keys by then
    assert last > first, f"{name}: per-item ELBO {first:.4g} -> {last:.4g}"
    assert all(math.isfinite(v) for v in elbo)


def test_moco_resume_is_exact_and_keeps_the_queue(tmp_path: Path, digits) -> None:
    moco = Component("moco", {**small_options("moco"), "queue_size": 48, "proj_batch_norm": True})
    straight = train(tiny_config(tmp_path / "a", "moco", epochs=2, model=moco), data=digits)
    train(tiny_config(tmp_path / "b", "moco", epochs=1, model=moco), data=digits)
    torch.manual_seed(12345)
    resumed = train(tiny_config(tmp_path / "b", "moco", epochs=2, resume=True, model=moco), data=digits)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and "queue" in a and "queue_pointer" in a
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"{key} differs")
    loaded = load_run(tmp_path / "b", data=digits)
    torch.testing.assert_close(loaded.model.queue, straight.model.queue, rtol=0, atol=0)
    steps = straight.epochs[-1]["step"]
    assert int(loaded.model.queue_pointer) == steps * 32 % 48 != 0


@pytest.mark.skipif(importlib.util.find_spec("pssl.evaluation") is None, reason="pssl.evaluation not present")
def test_cli_trains_simclr(tmp_path: Path) -> None:
    from pssl.cli import main

    code = main(
        [
            "train",
            "model=simclr",
            "model.proj_hidden=16",
            "model.proj_dim=8",
            "data=digits",
            "data.limit=128",
            "encoder=mlp",
            "encoder.hidden=32,16",
            "decoder=mlp",
            "decoder.hidden=16",
            "epochs=1",
            "batch_size=32",
            "progress=false",
            f"out={tmp_path / 'cli'}",
        ]
    )
    assert code == 0
    assert (tmp_path / "cli" / "history.csv").is_file()


def test_unknown_representation_is_refused() -> None:
    with pytest.raises(ValueError, match="representation"):
        build_model("simclr", spec_for("simclr"), {"representation": "head"})
    with pytest.raises(ValueError, match="encode_modality"):
        build_model("clip", spec_for("clip"), {"encode_modality": "left"})


def test_deterministic_diagnostics_do_not_change_the_loss(float64) -> None:
    batch = fixed_batch()
    method = SimCLR(LinearBackbone(SHAPE, 3, seed=0), LinearHead(3, 4, seed=1))
    out = run_elbo(method, batch)
    hidden = poutine.block(method.model, hide_fn=lambda msg: msg["infer"].get("_deterministic", False))
    stripped = copy.copy(method)
    stripped.model = hidden
    torch.testing.assert_close(ELBO(stripped)(batch).loss, out.loss)
    embeddings = F.normalize(method.head(method.backbone(batch.views)), dim=-1)
    torch.testing.assert_close(
        out.terms["alignment"], (embeddings[:, 0] - embeddings[:, 1]).pow(2).sum(-1).mean().float()
    )
