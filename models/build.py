"""Build a method for a data set in one call, with the defaults that depend on its images.

The defaults (the paper's reference choices, see PAPER.md section 5) follow the
image shape: MLP encoder and decoder for grey images up to 28x28, ResNets for
colour images of 32 to 64 pixels, convolutional networks otherwise; a
Bernoulli likelihood for grey images, a fixed-variance Gaussian for colour;
Gaussian p(y) and p(z | y). The training configuration
(:func:`pssl.inference.compose.resolve_config`) uses the same defaults.

Example::

    from pssl.datasets import load_dataset
    from pssl.models import build_for_data

    data = load_dataset("digits", seed=0)
    method = build_for_data("simvae", data, latent_dim=8)
    method.model(views)        # views: (B, J, 1, 8, 8) floats in [0, 1]
"""

from __future__ import annotations

from typing import Any

import torch

from pssl.config import Component
from pssl.datasets import DataSplits, TensorData
from pssl.models.base import ModelSpec, SSLModel, build_model
from pssl.models.likelihoods import default_likelihood
from pssl.networks import default_networks

COMPONENTS = ("prior", "view_prior", "likelihood", "encoder", "decoder")
"""The parts of a method that :func:`build_for_data` lets a caller choose by name."""


def default_components(image_shape: tuple[int, int, int]) -> dict[str, Component]:
    """The reference parts for images of ``image_shape`` ``(C, H, W)``, by component key."""
    encoder, decoder = default_networks(image_shape)
    return {
        "prior": Component("gaussian"),
        "view_prior": Component("gaussian"),
        "likelihood": Component(default_likelihood(image_shape)),
        "encoder": Component(encoder),
        "decoder": Component(decoder),
    }


def _image_shape(data: Any) -> tuple[tuple[int, int, int], torch.Tensor | None]:
    """``(C, H, W)`` of ``data`` and, where it holds images, the training images."""
    if isinstance(data, DataSplits):
        return data.train.image_shape, data.train.images
    if isinstance(data, TensorData):
        return data.image_shape, data.images
    if isinstance(data, torch.Tensor):
        if data.dim() != 4:
            raise ValueError(f"images must have shape (N, C, H, W), got {tuple(data.shape)}")
        return tuple(int(v) for v in data.shape[1:]), data
    if isinstance(data, (tuple, list)) and len(data) == 3 and all(isinstance(v, int) for v in data):
        return tuple(data), None
    raise TypeError(
        "data must be a DataSplits, a TensorData, an (N, C, H, W) image tensor or a (C, H, W) shape, "
        f"got {type(data).__name__}"
    )


def _component(value: Component | str | dict | None, default: Component, where: str) -> Component:
    if value is None:
        return default
    return Component.from_value(value, where=where)


def build_for_data(
    name: str,
    data: DataSplits | TensorData | torch.Tensor | tuple[int, int, int],
    *,
    latent_dim: int = 10,
    num_views: int = 2,
    prior: Component | str | None = None,
    view_prior: Component | str | None = None,
    likelihood: Component | str | None = None,
    encoder: Component | str | None = None,
    decoder: Component | str | None = None,
    **options: Any,
) -> SSLModel:
    """The registered method ``name`` for images like ``data``'s, with data-dependent defaults.

    Args:
        name: a registered method (``simvae``, ``vae``, ``simclr``, ``clip``, ``moco``,
            ``vicreg``, ``barlow``, ``simvae-multimodal``; ``pssl list`` shows all).
        data: the data (its image shape chooses the defaults; its training images are
            checked against the likelihood's support), or just a ``(C, H, W)`` shape.
        latent_dim: size of z (and y).
        num_views: J, the views per item the method is built for (and samples by default).
        prior, view_prior, likelihood, encoder, decoder: a registered name, a
            :class:`~pssl.config.Component` (name and options) or ``None`` for the default.
        **options: the method's own options (e.g. ``y_guide="plugin"``, ``temperature=0.2``).

    Returns:
        The method (an :class:`~pssl.models.base.SSLModel`), in training mode, on the CPU.

    Raises:
        ValueError: for an unknown name or option, or data outside the likelihood's support.
        TypeError: for ``data`` of an unsupported type.
    """
    image_shape, images = _image_shape(data)
    defaults = default_components(image_shape)
    chosen = {
        key: _component(value, defaults[key], key)
        for key, value in (
            ("prior", prior),
            ("view_prior", view_prior),
            ("likelihood", likelihood),
            ("encoder", encoder),
            ("decoder", decoder),
        )
    }
    spec = ModelSpec(image_shape=image_shape, latent_dim=latent_dim, num_views=num_views, **chosen)
    method = build_model(name, spec, options)
    if images is not None:
        sample = images[:4096]
        method.check_data(sample.float().div(255.0) if sample.dtype == torch.uint8 else sample, name="data")
    return method


__all__ = ["COMPONENTS", "build_for_data", "default_components"]
