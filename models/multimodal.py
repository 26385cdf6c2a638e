r"""Two-modality data for the paired methods, and SimVAE over modalities.

Paired-data convention (shared by ``clip`` and ``simvae-multimodal``): one
stored image holds both modalities stacked along the height, modality A the
top half (rows ``0 .. H//2 - 1``) and modality B the bottom half (see
:func:`pssl.datasets.split_modalities` and the ``paired-<base>`` data sets). The
data, the augmentations and the training loop therefore need nothing new. To
train on your own pairs, concatenate them along the height (``torch.cat([a, b],
dim=-2)``, equal widths and channels) and pass the result as the data set's
images.

Within a batch of ``J`` views the methods take modality A from **view 0** and
modality B from **view J - 1**: with ``num_views=1`` both come from the same
image, with ``num_views=2`` each modality is augmented independently. Views in
between are not used.

``simvae-multimodal`` is SimVAE with each modality as one "view" of the item
(PAPER.md section 1: "J modalities of one thing"), one encoder and one decoder
per modality and a shared content latent:

.. math::

    y_i \sim p(y), \qquad z_{im} \mid y_i \sim N(y_i, \sigma_{zy}^2 I), \qquad
    x_{im} \mid z_{im} \sim p_{\theta_m}(x \mid z_{im}), \quad m \in \{A, B\},

with ``q(z_im | x_im) = N(mu_m(x_im), diag sigma_m^2(x_im))``. It is the
generative counterpart of CLIP on the same paired data. Both modalities share
one observation site ``x`` (the views plate indexes the modality), so the two
halves must have the same shape: the image height must be even.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from pssl.datasets import split_modalities
from pssl.models.base import MODELS, ModelSpec, ViewBatch
from pssl.models.encoders import GaussianEncoder
from pssl.models.likelihoods import Likelihood, build_likelihood
from pssl.models.priors import LatentPrior, ViewPrior, build_prior, build_view_prior
from pssl.models.simvae import SimVAE
from pssl.networks import build_decoder

ENCODE_MODALITIES = ("top", "bottom", "both")
EncodeModality = Literal["top", "bottom", "both"]


def check_encode_modality(encode_modality: str) -> str:
    """Return ``encode_modality`` if it is ``top``, ``bottom`` or ``both``, else raise ``ValueError``."""
    if encode_modality not in ENCODE_MODALITIES:
        raise ValueError(
            f"unknown encode_modality {encode_modality!r}; accepted: {', '.join(ENCODE_MODALITIES)}"
        )
    return encode_modality


def modality_shapes(image_shape: tuple[int, int, int]) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Shapes ``(C, H // 2, W)`` and ``(C, H - H // 2, W)`` of the two halves of a paired image.

    Raises:
        ValueError: if the image is less than 2 pixels high.
    """
    channels, height, width = image_shape
    if height < 2:
        raise ValueError(
            f"paired methods split each image into top and bottom halves; height {height} is too small "
            f"(image shape {tuple(image_shape)})"
        )
    return (channels, height // 2, width), (channels, height - height // 2, width)


def modality_pair(views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Modality A (top half of view 0) and modality B (bottom half of view ``J - 1``).

    Args:
        views: ``(B, J, C, H, W)``.

    Returns:
        ``(B, C, H // 2, W)`` and ``(B, C, H - H // 2, W)``.
    """
    first, _ = split_modalities(views[:, 0])
    _, second = split_modalities(views[:, -1])
    return first, second


class ModalityEncoders(nn.Module):
    """q(z_m | x_m) with one :class:`GaussianEncoder` per modality.

    Shapes: ``(..., 2, C, h, W) -> (loc, scale)``, each ``(..., 2, d)``; index 0 is
    modality A, index 1 modality B.
    """

    def __init__(self, first: GaussianEncoder, second: GaussianEncoder) -> None:
        super().__init__()
        if first.latent_dim != second.latent_dim:
            raise ValueError(
                f"modality encoders differ in latent size: {first.latent_dim} and {second.latent_dim}"
            )
        self.first = first
        self.second = second
        self.latent_dim = first.latent_dim

    def forward(self, modalities: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc_a, scale_a = self.first(modalities[..., 0, :, :, :])
        loc_b, scale_b = self.second(modalities[..., 1, :, :, :])
        return torch.stack([loc_a, loc_b], dim=-2), torch.stack([scale_a, scale_b], dim=-2)


class ModalityDecoders(nn.Module):
    """One decoder per modality: ``(..., 2, d) -> (..., 2, C, h, W)`` raw likelihood parameters."""

    def __init__(self, first: nn.Module, second: nn.Module) -> None:
        super().__init__()
        self.first = first
        self.second = second

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.first(latent[..., 0, :]), self.second(latent[..., 1, :])], dim=-4)


class MultimodalSimVAE(SimVAE):
    """SimVAE whose views are the two modalities of a paired image (see the module docstring).

    Args:
        encoder: :class:`ModalityEncoders`.
        decoder: :class:`ModalityDecoders`.
        content_prior, view_prior, likelihood, y_guide, beta: as for :class:`SimVAE`.
        encode_modality: what :meth:`encode` returns: the encoder mean of the
            ``top`` (A) or ``bottom`` (B) modality, or ``both`` concatenated (``2 d``).
    """

    min_views = 1
    needs_paired_data = True
    pyro_name = "simvae-multimodal"

    def __init__(
        self,
        encoder: ModalityEncoders,
        decoder: ModalityDecoders,
        content_prior: LatentPrior,
        view_prior: ViewPrior,
        likelihood: Likelihood,
        *,
        y_guide: str = "auto",
        beta: float = 1.0,
        encode_modality: str = "top",
    ) -> None:
        super().__init__(encoder, decoder, content_prior, view_prior, likelihood, y_guide=y_guide, beta=beta)
        self.encode_modality = check_encode_modality(encode_modality)
        self.representation_dim = 2 * self.latent_dim if encode_modality == "both" else self.latent_dim

    @staticmethod
    def modality_batch(batch: ViewBatch) -> ViewBatch:
        """The batch with views ``(B, 2, C, H // 2, W)``: modality A, modality B.

        Without views (sampling), a batch of the same items with two views to sample.
        """
        if batch.views is None:
            return ViewBatch(None, batch.index, batch.num_items, batch.extras, 2)
        first, second = modality_pair(batch.views)
        if first.shape != second.shape:
            raise ValueError(
                f"simvae-multimodal needs halves of equal shape (an even image height); got "
                f"{tuple(first.shape[1:])} and {tuple(second.shape[1:])}"
            )
        return ViewBatch(torch.stack([first, second], dim=1), batch.index, batch.num_items, batch.extras)

    def model_program(self, batch: ViewBatch) -> None:
        """SimVAE's model over the two modalities; sampled x is ``(B, 2, C, H // 2, W)`` (A, B)."""
        super().model_program(self.modality_batch(batch))

    def guide_program(self, batch: ViewBatch) -> None:
        super().guide_program(self.modality_batch(batch))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        first, second = split_modalities(images)
        if self.encode_modality == "top":
            return self.encoder.first(first)[0]
        if self.encode_modality == "bottom":
            return self.encoder.second(second)[0]
        return torch.cat([self.encoder.first(first)[0], self.encoder.second(second)[0]], dim=-1)

    def view_means(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, 2, d)``: the encoder means of the two modalities (the image's halves)."""
        first, second = split_modalities(images)
        return torch.stack([self.encoder.first(first)[0], self.encoder.second(second)[0]], dim=-2)

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        return self._join(self.likelihood.mean(self.decoder(self.view_means(images))))

    def sample_images(self, num_samples: int) -> torch.Tensor:
        if not self.content_prior.proper:
            raise ValueError(
                f"cannot sample images: the content prior {type(self.content_prior).__name__} is improper"
            )
        content = self.content_prior.distribution((num_samples, 1)).sample()
        latent = self.view_prior.distribution(content.expand(num_samples, 2, self.latent_dim)).sample()
        return self._join(self.likelihood.mean(self.decoder(latent)))

    @staticmethod
    def _join(modalities: torch.Tensor) -> torch.Tensor:
        """``(..., 2, C, h, W) -> (..., C, 2h, W)``: the halves stacked back along the height."""
        return torch.cat([modalities[..., 0, :, :, :], modalities[..., 1, :, :, :]], dim=-2)

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "encode_modality": self.encode_modality}


@MODELS.register(
    "simvae-multimodal",
    help="SimVAE over paired data: one encoder/decoder per modality (top/bottom halves), shared content y",
)
def build_simvae_multimodal(
    *, spec: ModelSpec, y_guide: str = "auto", beta: float = 1.0, encode_modality: EncodeModality = "top"
) -> MultimodalSimVAE:
    first_shape, second_shape = modality_shapes(spec.image_shape)
    if first_shape != second_shape:
        raise ValueError(
            f"simvae-multimodal needs an even image height so both halves have one shape; got image shape "
            f"{tuple(spec.image_shape)}"
        )
    encoder = ModalityEncoders(
        GaussianEncoder(first_shape, spec.latent_dim, spec.encoder),
        GaussianEncoder(second_shape, spec.latent_dim, spec.encoder),
    )
    decoder = ModalityDecoders(
        build_decoder(spec.decoder.name, spec.latent_dim, first_shape, spec.decoder.options),
        build_decoder(spec.decoder.name, spec.latent_dim, second_shape, spec.decoder.options),
    )
    return MultimodalSimVAE(
        encoder,
        decoder,
        build_prior(spec.prior.name, spec.latent_dim, spec.prior.options),
        build_view_prior(spec.view_prior.name, spec.latent_dim, spec.view_prior.options),
        build_likelihood(spec.likelihood.name, spec.likelihood.options),
        y_guide=y_guide,
        beta=beta,
        encode_modality=encode_modality,
    )
