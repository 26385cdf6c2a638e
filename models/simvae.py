r"""SimVAE: the hierarchical latent-variable model behind self-supervised learning.

Generative story for item ``i`` with ``J`` views (plates ``items`` and ``views``):

.. math::

    y_i \sim p(y), \qquad
    z_{ij} \mid y_i \sim p(z \mid y_i) \;(\text{default } N(y_i, \sigma_{zy}^2 I)), \qquad
    x_{ij} \mid z_{ij} \sim p_\theta(x \mid z_{ij}).

Guide: ``q(z_ij | x_ij) = N(mu_phi(x_ij), diag sigma_phi^2(x_ij))`` (one encoder
for every view) and a y-guide ``q(y_i | z_i1..z_iJ)``, one of

* ``exact``: the conjugate posterior ``p(y | z_1..J)`` when p(y) and p(z | y) are
  Gaussian (flat p(y) is the zero-precision limit). With precisions
  ``lambda_0`` of p(y) and ``J / sigma_zy^2`` of the views' mean ``zbar``::

      q(y | z) = N( (lambda_0 m_0 + (J / sigma_zy^2) zbar) / Lambda, Lambda^-1 I ),
      Lambda = lambda_0 + J / sigma_zy^2.

  Then ``log p(z | y) + log p(y) - log q(y | z) = log p(z_1..J)`` for every
  sampled y, so the ELBO equals the collapsed bound exactly (no extra variance).
* ``plugin``: a point mass at ``zbar`` (the reference implementation's choice);
  its y-terms are ``log p(y = zbar) + sum_j log N(z_j; zbar, sigma_zy^2 I)``.
* ``amortised``: a Gaussian with mean ``zbar + g(zbar)`` and learned scale
  ``softplus(h(zbar))``, for priors without a conjugate form.

``beta`` scales every latent site (model and guide) through ``poutine.scale``:
``beta = 1`` is the ELBO, ``beta < 1`` the beta-VAE-style weighting that a
likelihood scale of ``1 / beta`` also gives.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from torch import nn

from pssl.models import sites
from pssl.models.base import MODELS, ModelSpec, SSLModel, ViewBatch, check_num_views
from pssl.models.encoders import GaussianEncoder
from pssl.models.likelihoods import Likelihood, build_likelihood
from pssl.models.priors import LatentPrior, ViewPrior, as_prior, build_prior, build_view_prior
from pssl.networks import build_decoder

Y_GUIDES = ("exact", "plugin", "amortised")


def conjugate_content_posterior(
    views_latent: torch.Tensor,
    view_scale: torch.Tensor,
    prior_mean: torch.Tensor,
    prior_precision: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of p(y | z_1..J) for Gaussian p(y) and p(z | y) = N(y, view_scale^2 I).

    Args:
        views_latent: ``(..., J, d)`` view latents of each item.
        view_scale: scalar sigma_zy.
        prior_mean, prior_precision: ``(d,)`` of p(y); precision 0 for a flat prior.

    Returns:
        ``(mean, std)``, each ``(..., 1, d)``.
    """
    num_views = views_latent.shape[-2]
    zbar = views_latent.mean(dim=-2, keepdim=True)
    data_precision = num_views / view_scale.pow(2)
    precision = prior_precision + data_precision
    mean = (prior_precision * prior_mean + data_precision * zbar) / precision
    return mean, precision.rsqrt().expand_as(mean)


def collapsed_log_prior(
    views_latent: torch.Tensor, view_scale: float | torch.Tensor, prior_scale: float | None
) -> torch.Tensor:
    """Closed-form ``log p(z_1..J) = log integral p(y) prod_j N(z_j; y, sigma_zy^2 I) dy``.

    For p(y) = N(0, s^2 I) (``prior_scale = s``) this is the Gaussian marginal with
    all constants; for a flat p(y) (``prior_scale = None``) the improper
    marginal, whose y-integral contributes ``(d/2) log(2 pi sigma_zy^2 / J)``.

    Args:
        views_latent: ``(..., J, d)``.

    Returns:
        ``(...)`` log-density per item.
    """
    view_scale = torch.as_tensor(view_scale, dtype=views_latent.dtype, device=views_latent.device)
    num_views, latent_dim = views_latent.shape[-2:]
    var = view_scale.pow(2)
    zbar = views_latent.mean(dim=-2, keepdim=True)
    spread = (views_latent - zbar).pow(2).sum(dim=(-2, -1))
    # prod_j N(z_j; y, var) = N(zbar; y, var/J) * exp(-spread / (2 var)) * const
    log_const = -0.5 * (num_views - 1) * latent_dim * torch.log(
        2 * math.pi * var
    ) - 0.5 * latent_dim * math.log(num_views)
    log_views = log_const - spread / (2 * var)
    if prior_scale is None:
        return log_views
    marginal_var = prior_scale**2 + var / num_views
    zbar = zbar.squeeze(-2)
    log_mean = -0.5 * (
        zbar.pow(2).sum(-1) / marginal_var + latent_dim * torch.log(2 * math.pi * marginal_var)
    )
    return log_views + log_mean


class AmortisedContentGuide(nn.Module):
    """q(y | z_1..J) = N(zbar + g(zbar), softplus(h(zbar))^2): learned for non-conjugate priors."""

    def __init__(self, latent_dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent_dim, hidden), nn.SiLU(), nn.Linear(hidden, 2 * latent_dim))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.constant_(self.net[-1].bias, 0.0)
        self.latent_dim = latent_dim

    def forward(self, views_latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        zbar = views_latent.mean(dim=-2, keepdim=True)
        shift, raw_scale = self.net(zbar).split(self.latent_dim, dim=-1)
        return zbar + shift, F.softplus(raw_scale - 2.0) + 1e-4


class SimVAE(SSLModel):
    """SimVAE as a Pyro model/guide pair (see the module docstring for the maths).

    Args:
        encoder: amortised q(z | x).
        decoder: network mapping ``(..., d)`` to raw ``(..., C, H, W)`` likelihood parameters.
        content_prior: p(y): a :class:`LatentPrior`, or any Pyro distribution over a
            ``latent_dim`` vector (or a callable returning one), wrapped in a
            :class:`~pssl.models.priors.DistributionPrior`.
        view_prior: p(z | y).
        likelihood: p(x | z).
        y_guide: ``exact``, ``plugin`` or ``amortised``; ``auto`` picks ``exact``
            when p(y) and p(z | y) are Gaussian, else ``amortised``.
        beta: weight of the latent terms (``poutine.scale``).
    """

    generative = True
    min_views = 2
    guide_networks = ("encoder", "content_guide")
    pyro_name = "simvae"

    def __init__(
        self,
        encoder: GaussianEncoder,
        decoder: nn.Module,
        content_prior: LatentPrior | dist.TorchDistribution,
        view_prior: ViewPrior,
        likelihood: Likelihood,
        *,
        y_guide: str = "auto",
        beta: float = 1.0,
    ) -> None:
        super().__init__()
        content_prior = as_prior(content_prior)
        if content_prior.needs_encoder:
            raise ValueError(
                f"{type(content_prior).__name__} is defined through the encoder q(z|x) and is a VAE prior "
                "(model=vae); choose another p(y) for SimVAE"
            )
        if content_prior.latent_dim != encoder.latent_dim:
            raise ValueError(
                f"p(y) is over {content_prior.latent_dim} dimensions but the encoder gives latent_dim="
                f"{encoder.latent_dim}"
            )
        self.encoder = encoder
        self.decoder = decoder
        self.content_prior = content_prior
        self.view_prior = view_prior
        self.likelihood = likelihood
        self.latent_dim = encoder.latent_dim
        self.representation_dim = self.latent_dim
        conjugate = content_prior.gaussian() is not None and view_prior.gaussian_scale() is not None
        if y_guide == "auto":
            y_guide = "exact" if conjugate else "amortised"
        if y_guide not in Y_GUIDES:
            raise ValueError(f"unknown y_guide {y_guide!r}; accepted: auto, {', '.join(Y_GUIDES)}")
        if y_guide == "exact" and not conjugate:
            raise ValueError(
                f"y_guide='exact' needs a Gaussian or flat p(y) and a Gaussian p(z|y); got "
                f"{type(content_prior).__name__} and {type(view_prior).__name__}: "
                "use y_guide=amortised or plugin"
            )
        if not beta > 0 or not math.isfinite(beta):
            raise ValueError(f"beta must be a positive finite number, got {beta!r}")
        self.y_guide = y_guide
        self.beta = float(beta)
        self.content_guide = AmortisedContentGuide(self.latent_dim) if y_guide == "amortised" else None

    # --- Pyro programs -----------------------------------------------------------------

    def model_program(self, batch: ViewBatch) -> None:
        """p(y) p(z | y) p(x | z) over the batch; x is sampled when ``batch.views`` is ``None``."""
        if not batch.observed and not self.content_prior.proper:
            raise ValueError(
                f"cannot sample views: the content prior {type(self.content_prior).__name__} is improper"
            )
        num_items, num_views = batch.batch_size, batch.num_views
        with pyro.plate(sites.ITEMS, size=batch.num_items, subsample=batch.index, dim=sites.ITEMS_DIM):
            with poutine.scale(scale=self.beta):
                content = self.content_prior.pyro_sample(sites.CONTENT, (num_items, 1))
            with pyro.plate(sites.VIEWS, num_views, dim=sites.VIEWS_DIM):
                with poutine.scale(scale=self.beta):
                    latent = pyro.sample(sites.VIEW_LATENT, self.view_prior.distribution(content))
                with poutine.scale(scale=self.likelihood.scale):
                    pyro.sample(
                        sites.OBSERVATION, self.likelihood.distribution(self.decoder(latent)), obs=batch.views
                    )

    def guide_program(self, batch: ViewBatch) -> None:
        """q(z | x) q(y | z) over the batch."""
        with pyro.plate(sites.ITEMS, size=batch.num_items, subsample=batch.index, dim=sites.ITEMS_DIM):
            loc, scale = self.encoder(batch.views)
            with (
                pyro.plate(sites.VIEWS, batch.num_views, dim=sites.VIEWS_DIM),
                poutine.scale(scale=self.beta),
            ):
                latent = pyro.sample(sites.VIEW_LATENT, dist.Normal(loc, scale).to_event(1))
            with poutine.scale(scale=self.beta):
                pyro.sample(sites.CONTENT, self.content_posterior(latent))

    def content_posterior(self, views_latent: torch.Tensor) -> dist.TorchDistribution:
        """q(y | z_1..J) for ``views_latent`` of shape ``(B, J, d)``; batch shape ``(B, 1)``."""
        if self.y_guide == "exact":
            prior_mean, prior_precision = self.content_prior.gaussian()
            mean, std = conjugate_content_posterior(
                views_latent, self.view_prior.gaussian_scale(), prior_mean, prior_precision
            )
            return dist.Normal(mean, std).to_event(1)
        if self.y_guide == "plugin":
            return dist.Delta(views_latent.mean(dim=-2, keepdim=True), event_dim=1)
        mean, std = self.content_guide(views_latent)
        return dist.Normal(mean, std).to_event(1)

    # --- public interface --------------------------------------------------------------

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)[0]

    @property
    def num_clusters(self) -> int | None:
        """K when p(y) has a discrete component (``prior=gmm``), else ``None``."""
        return getattr(self.content_prior, "num_components", None) if self.content_prior.enumerated else None

    def view_means(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, J, d)``: the encoder means of the views an image gives (J = 1 here)."""
        return self.encoder(images)[0].unsqueeze(-2)

    def cluster_log_probabilities(self, images: torch.Tensor) -> torch.Tensor:
        r"""``log p(c | z_1..J)`` ``(B, K)`` of each image's content component (``prior=gmm``).

        The model's posterior over the component given the encoder means
        ``z_j = mu_phi(x_j)`` of the image's views (one view for a plain image;
        the two halves for ``simvae-multimodal``), with y integrated out. For
        p(z | y) = N(y, sigma_zy^2 I), ``prod_j N(z_j; y, sigma_zy^2 I)`` depends on y
        only through ``zbar`` as ``N(zbar; y, sigma_zy^2 / J)``, so

        .. math::

            p(c \mid z_{1..J}) \propto \pi_c\, N(\bar z; m_c, \operatorname{diag}(s_c^2 + \sigma_{zy}^2 / J)).

        For a non-Gaussian p(z | y), ``zbar`` stands in for y: ``p(c | y = zbar)``.

        Raises:
            ValueError: if the content prior has no discrete component.
        """
        if self.num_clusters is None:
            raise ValueError(
                f"clusters need a content prior with a discrete component (prior=gmm); "
                f"this model's is {type(self.content_prior).__name__}"
            )
        means = self.view_means(images)
        view_scale = self.view_prior.gaussian_scale()
        extra = 0.0 if view_scale is None else view_scale.pow(2) / means.shape[-2]
        return self.content_prior.component_log_posterior(means.mean(dim=-2), extra)

    def cluster(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B,)`` int64: ``argmax_c p(c | z_1..J)`` (:meth:`cluster_log_probabilities`)."""
        return self.cluster_log_probabilities(images).argmax(dim=-1)

    def check_data(self, images: torch.Tensor, *, name: str = "data") -> None:
        self.likelihood.check_data(images, name=name)

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        return self.likelihood.mean(self.decoder(self.encode(images)))

    def sample_images(self, num_samples: int) -> torch.Tensor:
        if not self.content_prior.proper:
            raise ValueError(
                f"cannot sample images: the content prior {type(self.content_prior).__name__} is improper"
            )
        content = self.content_prior.distribution((num_samples,)).sample()
        latent = self.view_prior.distribution(content).sample()
        return self.likelihood.mean(self.decoder(latent))

    def describe(self) -> dict[str, object]:
        return {
            "y_guide": self.y_guide,
            "content_prior": type(self.content_prior).__name__,
            "view_prior": type(self.view_prior).__name__,
            "likelihood": type(self.likelihood).__name__,
            **({"clusters": self.num_clusters} if self.num_clusters is not None else {}),
        }


@MODELS.register(
    "simvae", help="SimVAE: content y, per-view z ~ p(z|y), decoder p(x|z); y_guide exact/plugin/amortised"
)
def build_simvae(*, spec: ModelSpec, y_guide: str = "auto", beta: float = 1.0) -> SimVAE:
    check_num_views("simvae", spec.num_views, SimVAE.min_views)
    encoder = GaussianEncoder(spec.image_shape, spec.latent_dim, spec.encoder)
    decoder = build_decoder(spec.decoder.name, spec.latent_dim, spec.image_shape, spec.decoder.options)
    return SimVAE(
        encoder,
        decoder,
        build_prior(spec.prior.name, spec.latent_dim, spec.prior.options, image_shape=spec.image_shape),
        build_view_prior(spec.view_prior.name, spec.latent_dim, spec.view_prior.options),
        build_likelihood(spec.likelihood.name, spec.likelihood.options, image_shape=spec.image_shape),
        y_guide=y_guide,
        beta=beta,
    )
