"""Observation models p(x | z): the decoder's raw output mapped to a distribution over an image.

A likelihood is a ``torch.nn.Module`` (learned scales are parameters) that

* turns the decoder's raw output ``(..., C, H, W)`` into a Pyro distribution
  whose event is the whole image (three event dimensions);
* gives the image-space mean, for reconstructions and samples;
* declares the data it accepts and checks a data set against it before any
  training step (:meth:`Likelihood.check_data`);
* carries a tempering ``scale``: the log-likelihood is multiplied by it through
  ``poutine.scale``. The reference setup uses ``scale = 1 / sigma_x^2 ~ 99.5``
  with a Bernoulli likelihood, which is the same as weighting the latent terms
  by about 0.01 (a beta-VAE weight).
"""

from __future__ import annotations

import math
from typing import Literal

import pyro.distributions as dist
import torch
from torch import nn

from pssl.registry import Registry

LIKELIHOODS: Registry[Likelihood] = Registry("likelihood")

REFERENCE_LOG_VARIANCE = -4.6
"""log sigma_x^2 of the reference setup; exp(4.6) ~ 99.5 is its likelihood scale."""


class Likelihood(nn.Module):
    """Base class for p(x | z).

    Attributes:
        scale: tempering factor multiplying the log-likelihood (1 is the true ELBO).
        support: human-readable description of the data accepted.
        discrete: True when the likelihood is a probability mass function over
            the data values (so its log-likelihood is directly comparable in bits).
    """

    support: str = "real numbers"
    discrete: bool = False

    def __init__(self, *, scale: float = 1.0) -> None:
        super().__init__()
        if not scale > 0 or not math.isfinite(scale):
            raise ValueError(f"likelihood.scale must be a positive finite number, got {scale!r}")
        self.scale = float(scale)

    def distribution(self, decoded: torch.Tensor) -> dist.TorchDistribution:
        """p(x | z) for raw decoder output ``decoded`` of shape ``(..., C, H, W)``."""
        raise NotImplementedError

    def mean(self, decoded: torch.Tensor) -> torch.Tensor:
        """E[x | z] in image space, same shape as ``decoded``."""
        raise NotImplementedError

    def check_data(self, images: torch.Tensor, *, name: str = "data") -> None:
        """Raise ``ValueError`` if ``images`` lie outside the support.

        Args:
            images: float tensor of any shape.
            name: how the data is called in the message.
        """
        if not torch.isfinite(images).all():
            raise ValueError(f"{name} contains NaN or infinite values; {type(self).__name__} needs finite data")


class _UnitIntervalLikelihood(Likelihood):
    support = "[0, 1]"

    def check_data(self, images: torch.Tensor, *, name: str = "data") -> None:
        super().check_data(images, name=name)
        lo, hi = float(images.min()), float(images.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"{name} has values in [{lo:.4g}, {hi:.4g}], outside the support {self.support} of the "
                f"{type(self).__name__} likelihood; rescale the data to [0, 1] or choose "
                f"likelihood=gaussian"
            )


@LIKELIHOODS.register(
    "bernoulli", help="Bernoulli on logits (binary cross-entropy; grey values in [0,1] as soft targets)"
)
class BernoulliLikelihood(_UnitIntervalLikelihood):
    """p(x | z) = prod_p Bernoulli(x_p; sigmoid(f(z)_p)).

    For grey values in (0, 1) this is the cross-entropy used by the reference
    code; it is not a normalised density there (the continuous Bernoulli is).
    """

    def distribution(self, decoded: torch.Tensor) -> dist.TorchDistribution:
        # validate_args=False: grey values are accepted as soft targets (see class docstring).
        return dist.Bernoulli(logits=decoded, validate_args=False).to_event(3)

    def mean(self, decoded: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(decoded)


def _link(decoded: torch.Tensor, link: str) -> torch.Tensor:
    return torch.sigmoid(decoded) if link == "sigmoid" else decoded


LINKS = ("sigmoid", "identity")


@LIKELIHOODS.register(
    "gaussian",
    help="Gaussian with fixed std (default exp(-4.6/2) as the reference), mean sigmoid(f(z)) or f(z) (link=identity)",
)
class GaussianLikelihood(Likelihood):
    """p(x | z) = N(x; g(f(z)), std^2 I) with a fixed ``std`` and link ``g`` (sigmoid or identity)."""

    def __init__(
        self,
        *,
        std: float = math.exp(REFERENCE_LOG_VARIANCE / 2),
        link: Literal["sigmoid", "identity"] = "sigmoid",
        scale: float = 1.0,
    ) -> None:
        super().__init__(scale=scale)
        if not std > 0 or not math.isfinite(std):
            raise ValueError(f"likelihood.std must be a positive finite number, got {std!r}")
        if link not in LINKS:
            raise ValueError(f"likelihood.link must be one of {', '.join(LINKS)}, got {link!r}")
        self.std = float(std)
        self.link = link

    def distribution(self, decoded: torch.Tensor) -> dist.TorchDistribution:
        loc = _link(decoded, self.link)
        return dist.Normal(loc, torch.full_like(loc, self.std)).to_event(3)

    def mean(self, decoded: torch.Tensor) -> torch.Tensor:
        return _link(decoded, self.link)


def build_likelihood(name: str | Likelihood, options: dict | None = None) -> Likelihood:
    """Build a registered likelihood by name, or pass a ready :class:`Likelihood` through."""
    if isinstance(name, Likelihood):
        return name
    return LIKELIHOODS.build(name, options)


def default_likelihood(image_shape: tuple[int, int, int]) -> str:
    """Reference choice: Bernoulli for grey images, fixed-variance Gaussian for colour."""
    return "bernoulli" if image_shape[0] == 1 else "gaussian"
