"""The interface every method implements, and the registry that builds methods by name.

A method is a Pyro model/guide pair over a batch of augmented views plus an
encoder that maps images to the representation used for evaluation. The
training loop, evaluation and diagnostics only use this interface:

* ``model(batch)`` and ``guide(batch)``: Pyro programs with the site and plate
  names of :mod:`pssl.models.sites`; any Pyro ELBO drives them.
* ``encode(images)``: ``(B, C, H, W) -> (B, representation_dim)``, the frozen
  representation (the encoder mean for generative models, the backbone output
  before the projection head for discriminative ones).
* ``check_data(images)``: raise before training if the data cannot be modelled.
* ``after_step()``: a hook the loop calls after each optimiser step (MoCo's
  momentum update lives there, not in the loop).

Generative methods also offer ``reconstruct`` and ``sample_images``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pssl.config import Component
from pssl.registry import Registry

MODELS: Registry[SSLModel] = Registry("model")


@dataclass
class ViewBatch:
    """One minibatch as the model and guide see it.

    Attributes:
        views: ``(B, J, C, H, W)`` augmented views, floats.
        index: ``(B,)`` int64 positions of the items in the training set
            (the ``subsample`` of the items plate).
        num_items: N, the training-set size (the items plate's ``size``).
        extras: optional per-batch tensors a method may need (e.g. a second
            modality), keyed by name.
    """

    views: torch.Tensor
    index: torch.Tensor
    num_items: int
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.views.dim() != 5:
            raise ValueError(
                "views must have shape (batch, views, channels, height, width), "
                f"got {tuple(self.views.shape)}"
            )
        if self.index.shape != self.views.shape[:1]:
            raise ValueError(
                f"index shape {tuple(self.index.shape)} does not match batch {self.views.shape[0]}"
            )
        if self.num_items < self.views.shape[0]:
            raise ValueError(f"num_items={self.num_items} is smaller than the batch {self.views.shape[0]}")

    @property
    def batch_size(self) -> int:
        return self.views.shape[0]

    @property
    def num_views(self) -> int:
        return self.views.shape[1]

    def to(self, device: torch.device | str) -> ViewBatch:
        return ViewBatch(
            self.views.to(device),
            self.index.to(device),
            self.num_items,
            {k: v.to(device) for k, v in self.extras.items()},
        )


@dataclass
class ModelSpec:
    """What the framework tells a method factory: data shape and chosen parts.

    Attributes:
        image_shape: ``(C, H, W)`` of one view.
        latent_dim: size of z (and y).
        num_views: J.
        encoder, decoder, prior, view_prior, likelihood: the chosen components.
    """

    image_shape: tuple[int, int, int]
    latent_dim: int
    num_views: int
    encoder: Component
    decoder: Component
    prior: Component
    view_prior: Component
    likelihood: Component


class SSLModel(nn.Module):
    """Base class of every method.

    Attributes:
        generative: whether the method models x (has a decoder and likelihood).
        min_views: the fewest views per item the method can use.
        representation_dim: size of :meth:`encode`'s output.
    """

    generative: bool = False
    min_views: int = 1
    representation_dim: int

    def model(self, batch: ViewBatch) -> None:
        raise NotImplementedError

    def guide(self, batch: ViewBatch) -> None:
        raise NotImplementedError

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, representation_dim)`` frozen representation."""
        raise NotImplementedError

    def check_data(self, images: torch.Tensor, *, name: str = "data") -> None:
        """Raise ``ValueError`` if the method cannot model ``images``."""

    def after_step(self) -> None:
        """Called by the training loop after every optimiser step."""

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """Image-space mean of p(x | z = encoder mean); generative methods only."""
        raise NotImplementedError(f"{type(self).__name__} does not model images")

    def sample_images(self, num_samples: int) -> torch.Tensor:
        """Decoded prior samples ``(num_samples, C, H, W)``; generative methods only."""
        raise NotImplementedError(f"{type(self).__name__} does not model images")

    def describe(self) -> dict[str, Any]:
        """Resolved choices worth recording in the run config (e.g. the y-guide)."""
        return {}


def check_num_views(model_name: str, num_views: int, minimum: int) -> None:
    """Raise a clear error when a method is given too few views."""
    if num_views < minimum:
        raise ValueError(
            f"model {model_name!r} needs num_views >= {minimum} (views of one item are what it groups), "
            f"got num_views={num_views}"
        )


def build_model(name: str, spec: ModelSpec, options: dict | None = None) -> SSLModel:
    """Build a registered method from its name, the framework spec and user options."""
    return MODELS.build(name, options, spec=spec)
