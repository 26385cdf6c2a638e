"""Priors over latent vectors: p(y) for content, p(z | y) for views, p(z) for a VAE.

A prior is a small ``torch.nn.Module`` (so learned parameters live in the model's
``state_dict``) that returns a Pyro distribution with one event dimension of
size ``latent_dim`` for a requested batch shape. Priors that are Gaussian also
expose their mean and precision, which is what lets SimVAE use the exact
conjugate posterior for y (see :mod:`pssl.models.simvae`).

Two registries choose them by name:

* ``PRIORS``: priors over a free latent vector (p(y) in SimVAE, p(z) in a VAE).
* ``VIEW_PRIORS``: conditional priors p(z | y) centred on the content latent.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from torch import nn

from pssl.registry import Registry

PRIORS: Registry[LatentPrior] = Registry("prior")
VIEW_PRIORS: Registry[ViewPrior] = Registry("view prior")


class LatentPrior(nn.Module):
    """Base class for a prior over a ``latent_dim`` vector.

    Attributes:
        latent_dim: size of the latent vector (the event dimension).
        proper: False for improper priors (flat), which have a log-density but
            cannot be sampled.
    """

    proper: bool = True

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        if not isinstance(latent_dim, int) or latent_dim < 1:
            raise ValueError(f"latent_dim must be a positive integer, got {latent_dim!r}")
        self.latent_dim = latent_dim

    def distribution(self, batch_shape: tuple[int, ...]) -> dist.TorchDistribution:
        """The prior with batch shape ``batch_shape`` and event shape ``(latent_dim,)``."""
        raise NotImplementedError

    def gaussian(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(mean, precision)``, each ``(latent_dim,)``, if the prior is a diagonal Gaussian.

        A flat prior is the limit of zero precision. ``None`` means no Gaussian form.
        """
        return None

    def _anchor(self) -> torch.Tensor:
        """A tensor on the module's device and dtype, for building constants."""
        for tensor in self.buffers():
            return tensor
        for tensor in self.parameters():
            return tensor
        return torch.zeros(())


@PRIORS.register("gaussian", help="isotropic Gaussian N(0, scale^2 I); conjugate, so SimVAE's y-guide is exact")
class GaussianPrior(LatentPrior):
    """p(v) = N(v; 0, scale^2 I)."""

    def __init__(self, latent_dim: int, *, scale: float = 1.0) -> None:
        super().__init__(latent_dim)
        if not scale > 0 or not math.isfinite(scale):
            raise ValueError(f"prior.scale must be a positive finite number, got {scale!r}")
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.full((latent_dim,), float(scale)))

    def distribution(self, batch_shape: tuple[int, ...]) -> dist.TorchDistribution:
        return dist.Normal(self.loc, self.scale).expand(tuple(batch_shape) + (self.latent_dim,)).to_event(1)

    def gaussian(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.loc, self.scale.pow(-2)


@PRIORS.register("flat", help="improper flat prior, log p = 0 (the uniform-over-items reading of p(y)); not samplable")
class FlatPrior(LatentPrior):
    """Improper p(v) ∝ 1. Its Gaussian form has zero precision."""

    proper = False

    def __init__(self, latent_dim: int) -> None:
        super().__init__(latent_dim)
        self.register_buffer("loc", torch.zeros(latent_dim))

    def distribution(self, batch_shape: tuple[int, ...]) -> dist.TorchDistribution:
        return dist.ImproperUniform(
            dist.constraints.real, batch_shape=torch.Size(batch_shape), event_shape=torch.Size([self.latent_dim])
        )

    def gaussian(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.loc, torch.zeros_like(self.loc)


class ViewPrior(nn.Module):
    """Base class for p(z | y): a distribution over each view's latent given its item's y."""

    def distribution(self, content: torch.Tensor) -> dist.TorchDistribution:
        """p(z | y) with batch shape ``content.shape[:-1]`` and event shape ``content.shape[-1:]``."""
        raise NotImplementedError

    def gaussian_scale(self) -> torch.Tensor | None:
        """sigma_zy (scalar tensor) if p(z | y) = N(y, sigma_zy^2 I), else ``None``."""
        return None


@VIEW_PRIORS.register(
    "gaussian", help="p(z|y) = N(y, scale^2 I); scale^2 = 0.15 as in the reference; learn=true fits it"
)
class GaussianViewPrior(ViewPrior):
    """p(z | y) = N(z; y, sigma_zy^2 I), with sigma_zy fixed or learned (positive via log)."""

    def __init__(self, latent_dim: int, *, scale: float = 0.15**0.5, learn: bool = False) -> None:
        super().__init__()
        if not scale > 0 or not math.isfinite(scale):
            raise ValueError(f"view_prior.scale must be a positive finite number, got {scale!r}")
        log_scale = torch.tensor(math.log(scale))
        if learn:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    def distribution(self, content: torch.Tensor) -> dist.TorchDistribution:
        return dist.Normal(content, self.log_scale.exp().expand_as(content)).to_event(1)

    def gaussian_scale(self) -> torch.Tensor:
        return self.log_scale.exp()


def build_prior(name: str | LatentPrior, latent_dim: int, options: dict | None = None) -> LatentPrior:
    """Build a registered prior by name, or pass a ready :class:`LatentPrior` through."""
    if isinstance(name, LatentPrior):
        return name
    return PRIORS.build(name, options, latent_dim=latent_dim)


def build_view_prior(name: str | ViewPrior, latent_dim: int, options: dict | None = None) -> ViewPrior:
    """Build a registered view prior by name, or pass a ready :class:`ViewPrior` through."""
    if isinstance(name, ViewPrior):
        return name
    return VIEW_PRIORS.build(name, options, latent_dim=latent_dim)
