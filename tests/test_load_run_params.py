"""load_run restores pyro.param values of a model built in Python, or refuses with the reason."""

from __future__ import annotations

from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch

from pssl.config import Component, Config
from pssl.datasets import load_dataset
from pssl.inference.checkpoint import CheckpointError
from pssl.inference.runs import load_run
from pssl.inference.train import train
from pssl.models import sites
from pssl.models.encoders import GaussianEncoder
from pssl.models.likelihoods import GaussianLikelihood
from pssl.models.priors import GaussianPrior
from pssl.models.vae import VAE
from pssl.networks import build_decoder


class NoiseParamVAE(VAE):
    """A VAE whose observation noise is a ``pyro.param`` (positive) created in the model."""

    def model_program(self, batch) -> None:
        noise = pyro.param("observation_noise", torch.tensor(0.5), constraint=dist.constraints.positive)
        with pyro.plate(sites.ITEMS, size=batch.num_items, subsample=batch.index, dim=sites.ITEMS_DIM):
            with pyro.plate(sites.VIEWS, batch.num_views, dim=sites.VIEWS_DIM):
                latent = self.prior.pyro_sample(sites.VIEW_LATENT, (batch.batch_size, batch.num_views))
                loc = torch.sigmoid(self.decoder(latent))
                pyro.sample(sites.OBSERVATION, dist.Normal(loc, noise).to_event(3), obs=batch.views)


def build(config: Config) -> NoiseParamVAE:
    torch.manual_seed(0)
    return NoiseParamVAE(
        GaussianEncoder((1, 8, 8), 3, Component("mlp", {"hidden": "16"})),
        build_decoder("mlp", 3, (1, 8, 8), {"hidden": "16"}),
        GaussianPrior(3),
        GaussianLikelihood(),
    )


def test_load_run_restores_pyro_param_values_or_refuses(tmp_path: Path) -> None:
    pyro.clear_param_store()
    config = Config(
        model=Component("vae"),
        data=Component("digits", {"limit": 96}),
        latent_dim=3,
        batch_size=32,
        epochs=2,
        lr=1e-2,
        out=str(tmp_path / "run"),
        progress=False,
        device="cpu",
    )
    data = load_dataset("digits", {"limit": 96}, seed=0)
    train(config, data=data, model=build(config))
    trained = float(pyro.param("observation_noise"))
    assert abs(trained - 0.5) > 1e-3  # it was trained
    with pytest.raises(CheckpointError, match=r"model object passed from Python.*load_run\(run_dir, model="):
        load_run(tmp_path / "run", data=data)
    pyro.clear_param_store()
    pyro.param("observation_noise", torch.tensor(0.5), constraint=dist.constraints.positive)  # a stale value
    run = load_run(tmp_path / "run", data=data, model=build(config))
    assert float(pyro.param("observation_noise")) == pytest.approx(trained, rel=1e-6)
    # The weights came back too: the same reconstruction as the trained model's.
    assert isinstance(run.model, NoiseParamVAE)
    pyro.clear_param_store()
