"""Amortised Gaussian posteriors q(z | x) built on any registered encoder network."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pssl.config import Component
from pssl.networks import build_encoder


class GaussianEncoder(nn.Module):
    """q(z | x) = N(mu_phi(x), diag sigma_phi(x)^2).

    The backbone outputs ``2 * latent_dim`` numbers; the second half maps to a
    standard deviation through ``softplus`` plus ``min_scale`` (keeps log q finite).

    Shapes: ``(..., C, H, W) -> (loc, scale)``, each ``(..., latent_dim)``.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        latent_dim: int,
        network: Component,
        *,
        min_scale: float = 1e-4,
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.min_scale = min_scale
        self.backbone = build_encoder(network.name, image_shape, 2 * latent_dim, network.options)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lead = images.shape[:-3]
        raw = self.backbone(images.reshape(-1, *images.shape[-3:])).reshape(*lead, 2 * self.latent_dim)
        loc, raw_scale = raw.split(self.latent_dim, dim=-1)
        return loc, F.softplus(raw_scale) + self.min_scale
