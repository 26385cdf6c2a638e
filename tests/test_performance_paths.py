"""Fast paths give the answers of the plain paths: bf16 autocast, validation switched off after a check.

* ``precision=bf16`` (bf16 compute in the networks, :mod:`pssl.inference.precision`) gives
  the fp32 loss and terms of the same step within bf16's resolution (tolerance stated
  below), and is really in effect (run as if the CPU had native bf16).
* :class:`~pssl.inference.objectives.ELBO` with ``validate="first"`` runs Pyro's and
  torch's checks on the first evaluation of each batch signature only, gives
  bit-identical losses to ``validate="always"``, still raises on a bad first batch,
  and leaves the global validation settings as it found them.
"""

from __future__ import annotations

from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch

from pssl.config import Component, Config
from pssl.datasets import DataSplits, TensorData
from pssl.inference import precision
from pssl.inference.objectives import ELBO, validation_disabled
from pssl.inference.train import Trainer
from pssl.models import sites
from pssl.models.base import SSLModel, ViewBatch

SMALL = {"hidden": "64,32"}

# bf16 keeps 8 significant bits (relative spacing 2^-8 ~ 0.4%); the loss is a sum of many
# such products, whose rounding errors partly cancel. Measured here: 0.02% (SimVAE), 0.07% (SimCLR).
BF16_RELATIVE_TOLERANCE = 1e-2


def synthetic_splits(count: int = 96) -> DataSplits:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, 1, 12, 12), generator=generator, dtype=torch.uint8)
    data = TensorData.from_tensors(images, torch.randint(0, 3, (count,), generator=generator))
    return DataSplits(data, data, data, name="fashionmnist")


def first_step(tmp_path: Path, model: str, precision: str) -> tuple[torch.Tensor, dict[str, float]]:
    config = Config(
        model=Component(model),
        data=Component("fashionmnist"),
        encoder=Component("mlp", dict(SMALL)),
        decoder=Component("mlp", dict(SMALL)),
        latent_dim=4,
        batch_size=16,
        device="cpu",
        precision=precision,
        progress=False,
        out=str(tmp_path / precision),
    )
    trainer = Trainer(config, data=synthetic_splits())
    output = trainer.step(trainer.make_batch(torch.arange(16)))
    assert output is not None
    return output.loss, {k: float(v) for k, v in output.terms.items()}


@pytest.mark.parametrize("model", ["simvae", "simclr"])
def test_bf16_step_matches_fp32_within_tolerance(tmp_path: Path, model: str, monkeypatch) -> None:
    monkeypatch.setattr(precision, "cpu_flags", lambda cpuinfo="/proc/cpuinfo": {"avx512_bf16"})
    loss32, terms32 = first_step(tmp_path, model, "fp32")
    loss16, terms16 = first_step(tmp_path, model, "bf16")
    assert loss16.dtype == torch.float32  # the objective is summed in fp32
    assert float(loss16) != float(loss32), "bf16 had no effect on the step"
    torch.testing.assert_close(loss16, loss32, rtol=BF16_RELATIVE_TOLERANCE, atol=0.0)
    assert terms16.keys() == terms32.keys()
    elbo_scale = abs(terms32["elbo"])  # terms near 0 (e.g. a small entropy) are compared on the ELBO's scale
    for name, value in terms32.items():
        scale = abs(value) if name in ("alignment", "uniformity") else max(abs(value), elbo_scale)
        assert abs(terms16[name] - value) <= BF16_RELATIVE_TOLERANCE * scale, (name, terms16[name], value)


class RecordingModel(SSLModel):
    """One Normal latent per view with a chosen scale; records whether validation was on when called."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale
        self.loc = torch.nn.Parameter(torch.zeros(2))
        self.validation: list[bool] = []

    def model(self, batch: ViewBatch) -> None:
        with pyro.plate(sites.ITEMS, size=batch.num_items, subsample=batch.index, dim=sites.ITEMS_DIM):
            with pyro.plate(sites.VIEWS, batch.num_views, dim=sites.VIEWS_DIM):
                z = pyro.sample(sites.VIEW_LATENT, dist.Normal(0.0, 1.0).expand([2]).to_event(1))
                mean = z.sum(-1)[..., None, None, None].expand(batch.views.shape)
                pyro.sample(sites.OBSERVATION, dist.Normal(mean, 1.0).to_event(3), obs=batch.views)

    def guide(self, batch: ViewBatch) -> None:
        self.validation.append(pyro.distributions.is_validation_enabled())
        shape = (batch.batch_size, batch.num_views, 2)
        with pyro.plate(sites.ITEMS, size=batch.num_items, subsample=batch.index, dim=sites.ITEMS_DIM):
            with pyro.plate(sites.VIEWS, batch.num_views, dim=sites.VIEWS_DIM):
                scale = torch.full(shape, self.scale)
                pyro.sample(sites.VIEW_LATENT, dist.Normal(self.loc.expand(shape), scale).to_event(1))


def batch_of(items: int, seed: int = 0) -> ViewBatch:
    views = torch.rand(items, 2, 1, 2, 2, generator=torch.Generator().manual_seed(seed))
    return ViewBatch(views, torch.arange(items), 100)


def test_first_mode_validates_each_new_signature_once_then_not() -> None:
    model = RecordingModel()
    objective = ELBO(model)
    with pyro.validation_enabled(True):
        for _ in range(3):
            objective(batch_of(4))
        objective(batch_of(5))  # a new shape is checked again
        model.eval()
        objective(batch_of(5))  # so is a new mode
        objective(batch_of(5))
        assert pyro.distributions.is_validation_enabled()  # restored after every call
    assert model.validation == [True, False, False, True, True, False]


def test_first_mode_gives_bit_identical_losses_to_always() -> None:
    model = RecordingModel()
    fast, checked = ELBO(model), ELBO(model, validate="always")
    for seed in range(3):
        batch = batch_of(4, seed)
        torch.manual_seed(seed)
        a = fast(batch)
        torch.manual_seed(seed)
        b = checked(batch)
        assert torch.equal(a.loss, b.loss)
        assert a.terms.keys() == b.terms.keys()
        assert all(torch.equal(a.terms[k], b.terms[k]) for k in a.terms)


def test_bad_parameters_still_raise_on_the_first_batch_but_not_when_never_validated() -> None:
    with pyro.validation_enabled(True):
        with pytest.raises(ValueError, match="scale"):
            ELBO(RecordingModel(scale=-1.0))(batch_of(4))
        output = ELBO(RecordingModel(scale=-1.0), validate="never")(batch_of(4))
    assert not torch.isfinite(output.loss)  # left to the training loop's non-finite check


def test_validation_disabled_restores_torch_default_independently_of_pyro() -> None:
    torch_default = torch.distributions.Distribution._validate_args
    try:
        with pyro.validation_enabled(True):
            torch.distributions.Distribution.set_default_validate_args(False)
            with validation_disabled():
                assert not pyro.distributions.is_validation_enabled()
            assert pyro.distributions.is_validation_enabled()
            assert torch.distributions.Distribution._validate_args is False
    finally:
        torch.distributions.Distribution.set_default_validate_args(torch_default)


def test_unknown_validate_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown validate 'sometimes'; accepted: first, always, never"):
        ELBO(RecordingModel(), validate="sometimes")
