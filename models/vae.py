r"""The plain VAE baseline on the same augmented views: SimVAE without y.

.. math::

    z_{ij} \sim p(z) \;(\text{default } N(0, I)), \qquad x_{ij} \mid z_{ij} \sim p_\theta(x \mid z_{ij}),

independently for every view, with guide ``q(z | x) = N(mu_phi(x), diag sigma_phi^2(x))``.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn

from pssl.models import sites
from pssl.models.base import MODELS, ModelSpec, SSLModel, ViewBatch
from pssl.models.encoders import GaussianEncoder
from pssl.models.likelihoods import Likelihood, build_likelihood
from pssl.models.priors import LatentPrior, as_prior, build_prior
from pssl.networks import build_decoder


class VAE(SSLModel):
    """A VAE over views, as a Pyro model/guide pair. ``beta`` scales the latent sites.

    ``prior`` is a proper :class:`LatentPrior` or any Pyro distribution over a
    ``latent_dim`` vector (wrapped in a :class:`~pssl.models.priors.DistributionPrior`).
    A prior defined through the encoder (``needs_encoder``, the VampPrior) is
    bound to this model's encoder here.
    """

    generative = True
    min_views = 1
    guide_networks = ("encoder",)
    pyro_name = "vae"

    def __init__(
        self,
        encoder: GaussianEncoder,
        decoder: nn.Module,
        prior: LatentPrior | dist.TorchDistribution,
        likelihood: Likelihood,
        *,
        beta: float = 1.0,
    ) -> None:
        super().__init__()
        prior = as_prior(prior)
        if prior.latent_dim != encoder.latent_dim:
            raise ValueError(
                f"p(z) is over {prior.latent_dim} dimensions but the encoder gives "
                f"latent_dim={encoder.latent_dim}"
            )
        if prior.needs_encoder:
            prior.bind(encoder)
        if not prior.proper:
            raise ValueError(f"a VAE needs a proper prior p(z); {type(prior).__name__} is improper")
        if not beta > 0 or not math.isfinite(beta):
            raise ValueError(f"beta must be a positive finite number, got {beta!r}")
        self.encoder = encoder
        self.decoder = decoder
        self.prior = prior
        self.likelihood = likelihood
        self.beta = float(beta)
        self.latent_dim = encoder.latent_dim
        self.representation_dim = self.latent_dim

    def model_program(self, batch: ViewBatch) -> None:
        """p(z) p(x | z) per view; x is sampled when ``batch.views`` is ``None``."""
        with pyro.plate(sites.ITEMS, size=batch.num_items, subsample=batch.index, dim=sites.ITEMS_DIM):
            with pyro.plate(sites.VIEWS, batch.num_views, dim=sites.VIEWS_DIM):
                with poutine.scale(scale=self.beta):
                    latent = self.prior.pyro_sample(sites.VIEW_LATENT, (batch.batch_size, batch.num_views))
                with poutine.scale(scale=self.likelihood.scale):
                    pyro.sample(
                        sites.OBSERVATION, self.likelihood.distribution(self.decoder(latent)), obs=batch.views
                    )

    def guide_program(self, batch: ViewBatch) -> None:
        """q(z | x) per view."""
        with pyro.plate(sites.ITEMS, size=batch.num_items, subsample=batch.index, dim=sites.ITEMS_DIM):
            loc, scale = self.encoder(batch.views)
            with (
                pyro.plate(sites.VIEWS, batch.num_views, dim=sites.VIEWS_DIM),
                poutine.scale(scale=self.beta),
            ):
                pyro.sample(sites.VIEW_LATENT, dist.Normal(loc, scale).to_event(1))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)[0]

    def check_data(self, images: torch.Tensor, *, name: str = "data") -> None:
        self.likelihood.check_data(images, name=name)

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        return self.likelihood.mean(self.decoder(self.encode(images)))

    def sample_images(self, num_samples: int) -> torch.Tensor:
        latent = self.prior.distribution((num_samples,)).sample()
        return self.likelihood.mean(self.decoder(latent))

    def describe(self) -> dict[str, object]:
        return {"prior": type(self.prior).__name__, "likelihood": type(self.likelihood).__name__}


@MODELS.register("vae", help="plain VAE on the same augmented views: z ~ p(z) per view, no content latent")
def build_vae(*, spec: ModelSpec, beta: float = 1.0) -> VAE:
    encoder = GaussianEncoder(spec.image_shape, spec.latent_dim, spec.encoder)
    decoder = build_decoder(spec.decoder.name, spec.latent_dim, spec.image_shape, spec.decoder.options)
    return VAE(
        encoder,
        decoder,
        build_prior(spec.prior.name, spec.latent_dim, spec.prior.options, image_shape=spec.image_shape),
        build_likelihood(spec.likelihood.name, spec.likelihood.options, image_shape=spec.image_shape),
        beta=beta,
    )
