"""Encoders, decoders and projection heads: plain ``torch.nn.Module`` networks.

Networks know nothing of priors, likelihoods or training. An encoder maps images
to a flat vector of ``output_dim`` numbers (a model decides what they mean, e.g.
a mean and a log-scale); a decoder maps latents to *raw* image-shaped outputs,
and the likelihood chooses the link (Bernoulli logits, or a sigmoid for a
Gaussian mean).

Shapes:
    encoder: ``(..., C, H, W)`` -> ``(..., output_dim)``
    decoder: ``(..., latent_dim)`` -> ``(..., C, H, W)``

Leading batch dimensions, e.g. ``(batch, views)``, are flattened into one for
the layers and restored afterwards, so batch-norm statistics pool over every
image in the call.

Registered architectures (``ENCODERS`` and ``DECODERS`` share the names):

* ``mlp``: the reference networks for MNIST-like data (encoder 784-2000-500-500,
  decoder d-500-500-2000-784).
* ``conv``: a small stride-2 convolutional network for any image size.
* ``resnet``: a small 3-stage ResNet-18-like trunk (32/64/128 channels) with
  global average pooling and a mirrored decoder: the default for 32-64 px colour
  images, cheap enough for a CPU.
* ``resnet18-half``: the SimVAE paper's CIFAR-10/CelebA pair: a half-width
  ResNet-18 encoder with an unpadded stem and a flattened final map, and a much
  larger transposed-ResNet decoder (:class:`ResNet18HalfEncoder`,
  :class:`ResNet18HalfDecoder`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pssl.checks import positive_int
from pssl.registry import Registry

__all__ = [
    "DECODERS",
    "ENCODERS",
    "ProjectionHead",
    "build_decoder",
    "build_encoder",
    "default_networks",
]

ENCODERS: Registry[nn.Module] = Registry("encoder")
"""Encoder factories ``(image_shape, output_dim, *, options...)``."""
DECODERS: Registry[nn.Module] = Registry("decoder")
"""Decoder factories ``(latent_dim, image_shape, *, options...)``."""


# --------------------------------------------------------------------------- #
# Argument checks
# --------------------------------------------------------------------------- #


def _check_image_shape(image_shape: Sequence[int]) -> tuple[int, int, int]:
    """Return ``image_shape`` as a tuple of three positive ints, or raise."""
    if isinstance(image_shape, torch.Size):
        image_shape = tuple(image_shape)
    if (
        not isinstance(image_shape, (tuple, list))
        or len(image_shape) != 3
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in image_shape)
    ):
        raise ValueError(
            f"image_shape must be three positive integers (channels, height, width); got {image_shape!r}"
        )
    return (image_shape[0], image_shape[1], image_shape[2])


def _check_positive_int(name: str, value: int) -> int:
    return positive_int(value, name)


def _check_sizes(name: str, values: Sequence[int], *, allow_empty: bool) -> tuple[int, ...]:
    values = tuple(values)
    if not allow_empty and not values:
        raise ValueError(f"{name} must list at least one size; got {values!r}")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        raise ValueError(f"{name} must be positive integers; got {values!r}")
    return values


def _halved_sizes(size: int, steps: int) -> list[int]:
    """Spatial sizes after each stride-2 step: ``[size, ceil(size/2), ...]`` (``steps + 1`` values).

    A 3x3 convolution with stride 2 and padding 1 maps a side of ``n`` pixels to
    ``ceil(n / 2)``; decoders walk this list backwards to restore the exact size.
    """
    sizes = [size]
    for _ in range(steps):
        sizes.append(math.ceil(sizes[-1] / 2))
    return sizes


# --------------------------------------------------------------------------- #
# Base classes: shape checks and leading-dimension handling
# --------------------------------------------------------------------------- #


class ImageEncoder(nn.Module):
    """Base for encoders: checks the image shape and flattens leading dimensions.

    Subclasses implement :meth:`encode` on a 4-d batch ``(N, C, H, W)``.

    Attributes:
        image_shape: ``(C, H, W)`` the encoder accepts.
        output_dim: length of the output vector.
    """

    def __init__(self, image_shape: tuple[int, int, int], output_dim: int) -> None:
        super().__init__()
        self.image_shape = _check_image_shape(image_shape)
        self.output_dim = _check_positive_int("output_dim", output_dim)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Map ``(N, C, H, W)`` images to ``(N, output_dim)``."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Encode images.

        Args:
            images: float tensor of shape ``(..., C, H, W)`` with at least one
                leading (batch) dimension.

        Returns:
            Tensor of shape ``(..., output_dim)``.

        Raises:
            ValueError: if the trailing dimensions are not ``image_shape``.
        """
        if images.dim() < 4 or tuple(images.shape[-3:]) != self.image_shape:
            raise ValueError(
                f"{type(self).__name__} expects images of shape (..., C, H, W) with "
                f"(C, H, W) = {self.image_shape}; got {tuple(images.shape)}"
            )
        lead = images.shape[:-3]
        # Keep a 4-d input untouched so a channels_last layout survives into the convolutions.
        flat = images if images.dim() == 4 else images.reshape(-1, *self.image_shape)
        return self.encode(flat).reshape(*lead, self.output_dim)


class ImageDecoder(nn.Module):
    """Base for decoders: checks the latent size and flattens leading dimensions.

    Subclasses implement :meth:`decode` on a 2-d batch ``(N, latent_dim)``.

    Attributes:
        latent_dim: length of the latent vector.
        image_shape: ``(C, H, W)`` of the output.
    """

    def __init__(self, latent_dim: int, image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.latent_dim = _check_positive_int("latent_dim", latent_dim)
        self.image_shape = _check_image_shape(image_shape)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Map ``(N, latent_dim)`` latents to raw outputs ``(N, C, H, W)``."""
        raise NotImplementedError

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """Decode latents to raw (unbounded) image-shaped outputs.

        Args:
            latents: tensor of shape ``(..., latent_dim)`` with at least one
                leading dimension, e.g. ``(batch, views, latent_dim)``.

        Returns:
            Tensor of shape ``(..., C, H, W)``; no output link is applied.

        Raises:
            ValueError: if the last dimension is not ``latent_dim``.
        """
        if latents.dim() < 2 or latents.shape[-1] != self.latent_dim:
            raise ValueError(
                f"{type(self).__name__} expects latents of shape (..., {self.latent_dim}); "
                f"got {tuple(latents.shape)}"
            )
        lead = latents.shape[:-1]
        out = self.decode(latents.reshape(-1, self.latent_dim))
        return out.reshape(*lead, *self.image_shape)


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers through ``sizes`` with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        if i > 0:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(fan_in, fan_out))
    return nn.Sequential(*layers)


def _norm2d(channels: int, batch_norm: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if batch_norm else nn.Identity()


def _crop(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Drop bottom/right rows and columns beyond ``(height, width)`` (at most one per upsampling)."""
    if x.shape[-2] == height and x.shape[-1] == width:
        return x
    return x[..., :height, :width]


# --------------------------------------------------------------------------- #
# MLP
# --------------------------------------------------------------------------- #


class MLPEncoder(ImageEncoder):
    """Fully connected encoder: flatten, ``hidden`` ReLU layers, linear to ``output_dim``.

    The reference MNIST encoder is ``784-2000-500-500-output_dim``.
    """

    def __init__(
        self, image_shape: tuple[int, int, int], output_dim: int, hidden: Sequence[int] = (2000, 500, 500)
    ) -> None:
        super().__init__(image_shape, output_dim)
        self.hidden = _check_sizes("hidden", hidden, allow_empty=True)
        self.net = _mlp((math.prod(self.image_shape), *self.hidden, output_dim))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images.flatten(1))


class MLPDecoder(ImageDecoder):
    """Fully connected decoder: ``latent_dim``, ``hidden`` ReLU layers, linear to ``C*H*W``.

    The reference MNIST decoder is ``latent_dim-500-500-2000-784``: the encoder's
    widths reversed, 500 next to the latent and 2000 next to the pixels (2,826,784
    parameters for ``latent_dim=10``).
    """

    def __init__(
        self, latent_dim: int, image_shape: tuple[int, int, int], hidden: Sequence[int] = (500, 500, 2000)
    ) -> None:
        super().__init__(latent_dim, image_shape)
        self.hidden = _check_sizes("hidden", hidden, allow_empty=True)
        self.net = _mlp((latent_dim, *self.hidden, math.prod(self.image_shape)))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.net(latents).reshape(-1, *self.image_shape)


@ENCODERS.register("mlp", help="fully connected, pixels-hidden...-output_dim with ReLU (MNIST reference)")
def mlp_encoder(
    image_shape: tuple[int, int, int], output_dim: int, *, hidden: tuple[int, ...] = (2000, 500, 500)
) -> MLPEncoder:
    """Build an :class:`MLPEncoder`; ``hidden`` lists the hidden layer widths."""
    return MLPEncoder(image_shape, output_dim, hidden)


@DECODERS.register("mlp", help="fully connected, latent-500-500-2000-C*H*W with ReLU (MNIST reference)")
def mlp_decoder(
    latent_dim: int, image_shape: tuple[int, int, int], *, hidden: tuple[int, ...] = (500, 500, 2000)
) -> MLPDecoder:
    """Build an :class:`MLPDecoder`; ``hidden`` lists the hidden layer widths, first to last."""
    return MLPDecoder(latent_dim, image_shape, hidden)


# --------------------------------------------------------------------------- #
# Small convolutional network
# --------------------------------------------------------------------------- #


class ConvEncoder(ImageEncoder):
    """Stride-2 3x3 convolutions (one per entry of ``channels``), then a ReLU MLP.

    Each convolution maps a side of ``n`` pixels to ``ceil(n / 2)``, so any image
    size works (8x8 digits become 2x2 with the default two stages, 28x28 become
    7x7). The feature map is flattened into a ``hidden``-wide layer and then a
    linear layer to ``output_dim``.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        output_dim: int,
        channels: Sequence[int] = (32, 64),
        hidden: int = 256,
    ) -> None:
        super().__init__(image_shape, output_dim)
        self.channels = _check_sizes("channels", channels, allow_empty=False)
        hidden = _check_positive_int("hidden", hidden)
        in_channels, height, width = self.image_shape
        layers: list[nn.Module] = []
        for out_channels in self.channels:
            layers += [nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1), nn.ReLU()]
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        steps = len(self.channels)
        flat = self.channels[-1] * _halved_sizes(height, steps)[-1] * _halved_sizes(width, steps)[-1]
        self.head = nn.Sequential(nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, output_dim))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images).flatten(1))


class ConvDecoder(ImageDecoder):
    """Mirror of :class:`ConvEncoder`: ReLU MLP, then stride-2 transposed convolutions.

    Each 4x4 transposed convolution (stride 2, padding 1) doubles the side; the
    result is cropped at the bottom/right to the size the matching encoder stage
    had (at most one pixel per stage, only for odd sizes), so the output is
    exactly ``(C, H, W)``. The last layer has no activation.
    """

    def __init__(
        self,
        latent_dim: int,
        image_shape: tuple[int, int, int],
        channels: Sequence[int] = (32, 64),
        hidden: int = 256,
    ) -> None:
        super().__init__(latent_dim, image_shape)
        self.channels = _check_sizes("channels", channels, allow_empty=False)
        hidden = _check_positive_int("hidden", hidden)
        image_channels, height, width = self.image_shape
        steps = len(self.channels)
        self._heights = _halved_sizes(height, steps)
        self._widths = _halved_sizes(width, steps)
        self._start = (self.channels[-1], self._heights[-1], self._widths[-1])
        self.head = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, math.prod(self._start)), nn.ReLU()
        )
        # Stage i upsamples from channels[i] to channels[i - 1] (image channels for i = 0).
        targets = (image_channels, *self.channels[:-1])
        self.ups = nn.ModuleList(
            nn.ConvTranspose2d(self.channels[i], targets[i], 4, stride=2, padding=1) for i in range(steps)
        )

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        x = self.head(latents).reshape(-1, *self._start)
        for i in reversed(range(len(self.ups))):
            x = _crop(self.ups[i](x), self._heights[i], self._widths[i])
            if i > 0:
                x = F.relu(x)
        return x


@ENCODERS.register("conv", help="small stride-2 conv net + MLP, any image size")
def conv_encoder(
    image_shape: tuple[int, int, int],
    output_dim: int,
    *,
    channels: tuple[int, ...] = (32, 64),
    hidden: int = 256,
) -> ConvEncoder:
    """Build a :class:`ConvEncoder`: one stride-2 conv per ``channels`` entry, ``hidden``-wide MLP."""
    return ConvEncoder(image_shape, output_dim, channels, hidden)


@DECODERS.register("conv", help="MLP + stride-2 transposed convs mirroring the conv encoder, any size")
def conv_decoder(
    latent_dim: int,
    image_shape: tuple[int, int, int],
    *,
    channels: tuple[int, ...] = (32, 64),
    hidden: int = 256,
) -> ConvDecoder:
    """Build a :class:`ConvDecoder`; ``channels`` as for the encoder (listed input side first)."""
    return ConvDecoder(latent_dim, image_shape, channels, hidden)


# --------------------------------------------------------------------------- #
# ResNet
# --------------------------------------------------------------------------- #


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convolutions plus a shortcut, ReLU after the sum.

    With ``stride=2`` or a change of width the shortcut is a strided 1x1
    convolution (with batch norm when enabled).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, batch_norm: bool = True) -> None:
        super().__init__()
        bias = not batch_norm  # a bias before batch norm is cancelled by its mean subtraction
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias)
        self.norm1 = _norm2d(out_channels, batch_norm)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=bias)
        self.norm2 = _norm2d(out_channels, batch_norm)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=bias),
                _norm2d(out_channels, batch_norm),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in, H, W)`` -> ``(N, out, ceil(H/stride), ceil(W/stride))``."""
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class UpBlock(nn.Module):
    """Transposed counterpart of a stride-2 :class:`BasicBlock`: doubles the side, then crops.

    Main path: 4x4 transposed convolution (stride 2), norm, ReLU, 3x3
    convolution, norm. Shortcut: 1x1 convolution and nearest-neighbour 2x
    upsampling. Both are cropped to ``(height, width)`` before the sum.
    """

    def __init__(
        self, in_channels: int, out_channels: int, height: int, width: int, batch_norm: bool = True
    ) -> None:
        super().__init__()
        bias = not batch_norm
        self.height, self.width = height, width
        self.up = nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1, bias=bias)
        self.norm1 = _norm2d(out_channels, batch_norm)
        self.conv = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=bias)
        self.norm2 = _norm2d(out_channels, batch_norm)
        self.shortcut = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, bias=bias), _norm2d(out_channels, batch_norm)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in, h, w)`` -> ``(N, out, height, width)`` with ``height <= 2h``, ``width <= 2w``."""
        out = _crop(self.up(x), self.height, self.width)
        out = self.norm2(self.conv(F.relu(self.norm1(out))))
        skip = _crop(
            F.interpolate(self.shortcut(x), scale_factor=2.0, mode="nearest"), self.height, self.width
        )
        return F.relu(out + skip)


class ResNetEncoder(ImageEncoder):
    """ResNet-18-like trunk for small images, global average pool, linear to ``output_dim``.

    Stem: 3x3 convolution to ``channels[0]`` at full resolution. Stage ``k``
    holds ``blocks_per_stage`` :class:`BasicBlock` s of width ``channels[k]``; every
    stage after the first halves the side with its first block. With the
    reference ``channels=(32, 64, 128)`` a 32x32 image ends as a 128x8x8 map.

    For multi-GPU training, convert batch norms with
    ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``. Works with
    ``channels_last`` inputs (no ``view`` on possibly non-contiguous tensors).
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        output_dim: int,
        channels: Sequence[int] = (32, 64, 128),
        blocks_per_stage: int = 2,
        batch_norm: bool = True,
    ) -> None:
        super().__init__(image_shape, output_dim)
        self.channels = _check_sizes("channels", channels, allow_empty=False)
        blocks_per_stage = _check_positive_int("blocks_per_stage", blocks_per_stage)
        first = self.channels[0]
        self.stem = nn.Sequential(
            nn.Conv2d(self.image_shape[0], first, 3, padding=1, bias=not batch_norm),
            _norm2d(first, batch_norm),
            nn.ReLU(),
        )
        blocks: list[nn.Module] = []
        in_channels = first
        for stage, width in enumerate(self.channels):
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                blocks.append(BasicBlock(in_channels, width, stride, batch_norm))
                in_channels = width
        self.trunk = nn.Sequential(*blocks)
        self.fc = nn.Linear(self.channels[-1], output_dim)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        features = self.trunk(self.stem(images))
        return self.fc(features.mean(dim=(-2, -1)))


class ResNetDecoder(ImageDecoder):
    """Mirror of :class:`ResNetEncoder`: linear to a ``channels[-1]`` map, residual upsampling.

    The latent is mapped linearly to ``(channels[-1], H', W')``, the encoder's
    final map size (``H/4`` for the reference three stages; odd sizes round
    up). Stages run in reverse; each ends in an :class:`UpBlock` that doubles
    the side and crops to the matching encoder size, so any ``(H, W)`` is
    reproduced exactly. A final 3x3 convolution gives the raw ``C``-channel
    output (no activation).
    """

    def __init__(
        self,
        latent_dim: int,
        image_shape: tuple[int, int, int],
        channels: Sequence[int] = (32, 64, 128),
        blocks_per_stage: int = 2,
        batch_norm: bool = True,
    ) -> None:
        super().__init__(latent_dim, image_shape)
        self.channels = _check_sizes("channels", channels, allow_empty=False)
        blocks_per_stage = _check_positive_int("blocks_per_stage", blocks_per_stage)
        image_channels, height, width = self.image_shape
        steps = len(self.channels) - 1
        heights, widths = _halved_sizes(height, steps), _halved_sizes(width, steps)
        self._start = (self.channels[-1], heights[-1], widths[-1])
        self.fc = nn.Linear(latent_dim, math.prod(self._start))
        blocks: list[nn.Module] = []
        for stage in reversed(range(len(self.channels))):
            width_here = self.channels[stage]
            plain = blocks_per_stage - 1 if stage > 0 else blocks_per_stage
            blocks += [BasicBlock(width_here, width_here, 1, batch_norm) for _ in range(plain)]
            if stage > 0:
                blocks.append(
                    UpBlock(
                        width_here,
                        self.channels[stage - 1],
                        heights[stage - 1],
                        widths[stage - 1],
                        batch_norm,
                    )
                )
        self.trunk = nn.Sequential(*blocks)
        self.out = nn.Conv2d(self.channels[0], image_channels, 3, padding=1)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc(latents)).reshape(-1, *self._start)
        return self.out(self.trunk(x))


@ENCODERS.register("resnet", help="3-stage ResNet-18-like trunk (32/64/128), avg pool, linear (CIFAR/CelebA)")
def resnet_encoder(
    image_shape: tuple[int, int, int],
    output_dim: int,
    *,
    channels: tuple[int, ...] = (32, 64, 128),
    blocks_per_stage: int = 2,
    batch_norm: bool = True,
) -> ResNetEncoder:
    """Build a :class:`ResNetEncoder`: one stage per ``channels`` entry."""
    return ResNetEncoder(image_shape, output_dim, channels, blocks_per_stage, batch_norm)


@DECODERS.register("resnet", help="linear + residual transposed-conv stages mirroring the resnet encoder")
def resnet_decoder(
    latent_dim: int,
    image_shape: tuple[int, int, int],
    *,
    channels: tuple[int, ...] = (32, 64, 128),
    blocks_per_stage: int = 2,
    batch_norm: bool = True,
) -> ResNetDecoder:
    """Build a :class:`ResNetDecoder`; ``channels`` as for the encoder (full resolution first)."""
    return ResNetDecoder(latent_dim, image_shape, channels, blocks_per_stage, batch_norm)


# --------------------------------------------------------------------------- #
# Reference half-width ResNet-18 pair (CIFAR-10 / CelebA setup of the SimVAE paper)
# --------------------------------------------------------------------------- #


def _kaiming_init(module: nn.Module) -> None:
    """Kaiming-normal weights (fan-out, ReLU gain) for every 2-d convolution; unit/zero batch norm."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _pooled_side(side: int, kernel: int) -> int:
    """Side after an unpadded stride-1 ``kernel`` convolution and a 3x3 stride-2 max-pool (padding 1)."""
    after_stem = side - kernel + 1
    if after_stem < 1:
        raise ValueError(f"images of side {side} are too small for the {kernel}x{kernel} stem")
    return math.ceil(after_stem / 2)


class ResNet18HalfEncoder(ImageEncoder):
    """The reference encoder for CIFAR-10 and CelebA: a half-width ResNet-18 trunk, flattened.

    Layout (``C x H x W`` input, ``k = 3`` when both sides are at most 32, else ``k = 4``):

    * stem: ``k x k`` convolution, stride 1, *no padding*, to ``stem_channels`` (64),
      batch norm, ReLU, 3x3 max-pool with stride 2 (padding 1);
    * stages of ``blocks_per_stage`` (2) :class:`BasicBlock` s of widths ``channels``
      (32, 64, 128), the first block of stages after the first with stride 2;
    * the final feature map (``128 x 4 x 4`` for 32 px, ``128 x 8 x 8`` for 64 px) is
      flattened, not average-pooled, into one linear layer to ``output_dim``.

    Every convolution starts from Kaiming-normal weights (fan-out, ReLU gain).

    The authors build this from a ResNet-18 with stage widths 32/64/128/256 and then
    drop the last stage and the classifier, so the trunk that runs ends at 128
    channels; the stem is 3x3 (with bias) for 32 px inputs and 4x4 (no bias) for
    larger ones. Parameters for ``output_dim = 128`` (latent 64, mean and
    log-scale): 969,920 at 3x32x32 and 1,757,632 at 3x64x64, the same as the
    authors' network (checked when this was written; the tests pin the counts).
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        output_dim: int,
        channels: Sequence[int] = (32, 64, 128),
        stem_channels: int = 64,
        blocks_per_stage: int = 2,
    ) -> None:
        super().__init__(image_shape, output_dim)
        self.channels = _check_sizes("channels", channels, allow_empty=False)
        stem_channels = _check_positive_int("stem_channels", stem_channels)
        blocks_per_stage = _check_positive_int("blocks_per_stage", blocks_per_stage)
        image_channels, height, width = self.image_shape
        kernel = 3 if max(height, width) <= 32 else 4
        self.stem = nn.Sequential(
            nn.Conv2d(image_channels, stem_channels, kernel, stride=1, padding=0, bias=kernel == 3),
            nn.BatchNorm2d(stem_channels),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        blocks: list[nn.Module] = []
        in_channels = stem_channels
        for stage, stage_width in enumerate(self.channels):
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                blocks.append(BasicBlock(in_channels, stage_width, stride, batch_norm=True))
                in_channels = stage_width
        self.trunk = nn.Sequential(*blocks)
        steps = len(self.channels) - 1
        final_h = _halved_sizes(_pooled_side(height, kernel), steps)[-1]
        final_w = _halved_sizes(_pooled_side(width, kernel), steps)[-1]
        self.feature_shape = (self.channels[-1], final_h, final_w)
        self.fc = nn.Linear(math.prod(self.feature_shape), output_dim)
        _kaiming_init(self)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(self.trunk(self.stem(images)).flatten(1))


class _TransposedBlock(nn.Module):
    """A block of the reference transposed ResNet: two 3x3 transposed convolutions with batch norm.

    With ``stride=2`` the first one doubles the side (output padding 1) and a
    1x1 stride-2 transposed convolution with batch norm carries the input to the
    sum; with ``stride=1`` there is no shortcut (as in the reference decoder, only
    the upsampling blocks are residual). ReLU after the second norm (after the sum).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        extra = 1 if stride == 2 else 0
        self.conv1 = nn.ConvTranspose2d(
            in_channels, out_channels, 3, stride=stride, padding=1, output_padding=extra, bias=False
        )
        self.norm1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.ConvTranspose2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module | None = None
        if stride == 2:
            self.shortcut = nn.Sequential(
                nn.ConvTranspose2d(in_channels, out_channels, 1, stride=2, output_padding=1, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in, h, w)`` -> ``(N, out, stride*h, stride*w)``."""
        out = self.norm2(self.conv2(F.relu(self.norm1(self.conv1(x)))))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return F.relu(out)


class ResNet18HalfDecoder(ImageDecoder):
    """The reference decoder for CIFAR-10 and CelebA: a transposed ResNet-18, much larger than the encoder.

    Layout, from the latent (``channels`` are listed full resolution first, default
    ``(64, 128, 256, 512)``):

    * a linear layer to a ``512 x s x s`` map, ``s = ceil(side / 16)`` (2 for 32 px,
      4 for 64 px), no activation;
    * three upsampling stages, 512 -> 256 -> 128 -> 64: in each, ``blocks_per_stage - 1``
      plain blocks at the input width, then a stride-2 residual block to the output width;
    * ``blocks_per_stage`` plain blocks at 64 channels;
    * a 7x7 transposed convolution, stride 2 (padding 3, output padding 1), to the
      image channels: raw outputs, the likelihood applies the sigmoid.

    Sides that are not multiples of 16 are cropped at the bottom/right. Parameters
    for ``latent_dim = 64``: 8,984,387 at 3x32x32 and 9,383,747 at 3x64x64 (the
    authors' module has 6 more: a batch norm it never calls).
    """

    def __init__(
        self,
        latent_dim: int,
        image_shape: tuple[int, int, int],
        channels: Sequence[int] = (64, 128, 256, 512),
        blocks_per_stage: int = 2,
    ) -> None:
        super().__init__(latent_dim, image_shape)
        self.channels = _check_sizes("channels", channels, allow_empty=False)
        if len(self.channels) < 2:
            raise ValueError(f"channels must list at least two widths; got {self.channels!r}")
        blocks_per_stage = _check_positive_int("blocks_per_stage", blocks_per_stage)
        image_channels, height, width = self.image_shape
        factor = 2 ** len(self.channels)
        self._start = (self.channels[-1], math.ceil(height / factor), math.ceil(width / factor))
        self.fc = nn.Linear(latent_dim, math.prod(self._start))
        blocks: list[nn.Module] = []
        for stage in reversed(range(1, len(self.channels))):
            wide, narrow = self.channels[stage], self.channels[stage - 1]
            blocks += [_TransposedBlock(wide, wide, 1) for _ in range(blocks_per_stage - 1)]
            blocks.append(_TransposedBlock(wide, narrow, 2))
        blocks += [_TransposedBlock(self.channels[0], self.channels[0], 1) for _ in range(blocks_per_stage)]
        self.trunk = nn.Sequential(*blocks)
        self.out = nn.ConvTranspose2d(
            self.channels[0], image_channels, 7, stride=2, padding=3, output_padding=1
        )

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        x = self.fc(latents).reshape(-1, *self._start)
        return _crop(self.out(self.trunk(x)), self.image_shape[1], self.image_shape[2])


@ENCODERS.register(
    "resnet18-half",
    help="reference CIFAR/CelebA encoder: half-width ResNet-18, unpadded stem, flattened map, linear",
)
def resnet18_half_encoder(
    image_shape: tuple[int, int, int],
    output_dim: int,
    *,
    channels: tuple[int, ...] = (32, 64, 128),
    stem_channels: int = 64,
    blocks_per_stage: int = 2,
) -> ResNet18HalfEncoder:
    """Build a :class:`ResNet18HalfEncoder` (the SimVAE paper's CIFAR-10/CelebA encoder)."""
    return ResNet18HalfEncoder(image_shape, output_dim, channels, stem_channels, blocks_per_stage)


@DECODERS.register(
    "resnet18-half", help="reference CIFAR/CelebA decoder: transposed ResNet-18 512-256-128-64, 7x7 output"
)
def resnet18_half_decoder(
    latent_dim: int,
    image_shape: tuple[int, int, int],
    *,
    channels: tuple[int, ...] = (64, 128, 256, 512),
    blocks_per_stage: int = 2,
) -> ResNet18HalfDecoder:
    """Build a :class:`ResNet18HalfDecoder` (the SimVAE paper's CIFAR-10/CelebA decoder)."""
    return ResNet18HalfDecoder(latent_dim, image_shape, channels, blocks_per_stage)


# --------------------------------------------------------------------------- #
# Projection head
# --------------------------------------------------------------------------- #


class ProjectionHead(nn.Module):
    """SimCLR-style MLP head applied to representations before a discriminative loss.

    ``num_layers`` linear layers: ``num_layers - 1`` hidden layers of width
    ``hidden_dim``, each followed by batch norm (optional) and ReLU, then a
    linear layer to ``output_dim``. ``num_layers=1`` is a single linear map.

    Args:
        input_dim: size of the representation.
        hidden_dim: width of the hidden layers.
        output_dim: size of the projection.
        num_layers: number of linear layers, at least 1.
        batch_norm: use ``BatchNorm1d`` after each hidden linear layer.

    Shapes:
        ``(..., input_dim)`` -> ``(..., output_dim)``; leading dimensions are
        flattened for batch norm and restored.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int = 512,
        output_dim: int = 128,
        num_layers: int = 2,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        self.input_dim = _check_positive_int("input_dim", input_dim)
        self.hidden_dim = _check_positive_int("hidden_dim", hidden_dim)
        self.output_dim = _check_positive_int("output_dim", output_dim)
        self.num_layers = _check_positive_int("num_layers", num_layers)
        layers: list[nn.Module] = []
        fan_in = input_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(fan_in, hidden_dim, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.ReLU())
            fan_in = hidden_dim
        layers.append(nn.Linear(fan_in, output_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Project ``(..., input_dim)`` features to ``(..., output_dim)``."""
        if features.dim() < 2 or features.shape[-1] != self.input_dim:
            raise ValueError(
                f"ProjectionHead expects features of shape (..., {self.input_dim}); "
                f"got {tuple(features.shape)}"
            )
        lead = features.shape[:-1]
        return self.net(features.reshape(-1, self.input_dim)).reshape(*lead, self.output_dim)


# --------------------------------------------------------------------------- #
# Public builders
# --------------------------------------------------------------------------- #


def build_encoder(
    name: str, image_shape: tuple[int, int, int], output_dim: int, options: dict | None = None
) -> nn.Module:
    """Build the encoder registered as ``name``.

    Args:
        name: one of ``ENCODERS.names()``.
        image_shape: ``(C, H, W)`` of the input images.
        output_dim: length of the output vector.
        options: user options for the factory; strings are coerced to the
            annotated types (e.g. ``{"hidden": "2000,500,500"}``).

    Returns:
        A module mapping ``(..., C, H, W)`` to ``(..., output_dim)``, with
        attributes ``image_shape`` and ``output_dim``.

    Raises:
        ValueError: for an unknown name or option (naming the accepted ones),
            or a bad shape or size.
        TypeError: for an option value that cannot be read as its type.
    """
    image_shape = _check_image_shape(image_shape)
    return ENCODERS.build(name, options, image_shape=image_shape, output_dim=output_dim)


def build_decoder(
    name: str, latent_dim: int, image_shape: tuple[int, int, int], options: dict | None = None
) -> nn.Module:
    """Build the decoder registered as ``name``.

    Args:
        name: one of ``DECODERS.names()``.
        latent_dim: length of the latent vector.
        image_shape: ``(C, H, W)`` of the output.
        options: user options for the factory; strings are coerced to the
            annotated types.

    Returns:
        A module mapping ``(..., latent_dim)`` to raw outputs ``(..., C, H, W)``
        (no sigmoid: the likelihood applies its own link), with attributes
        ``latent_dim`` and ``image_shape``.

    Raises:
        ValueError: for an unknown name or option (naming the accepted ones),
            or a bad shape or size.
        TypeError: for an option value that cannot be read as its type.
    """
    image_shape = _check_image_shape(image_shape)
    return DECODERS.build(name, options, latent_dim=latent_dim, image_shape=image_shape)


def default_networks(image_shape: tuple[int, int, int]) -> tuple[str, str]:
    """Reference ``(encoder, decoder)`` names for an image shape.

    * single-channel images up to 28x28 (MNIST, FashionMNIST, 8x8 digits):
      ``("mlp", "mlp")``, the paper's MNIST networks;
    * three-channel images with sides from 32 to 64 (CIFAR-10, CelebA at 64x64):
      ``("resnet", "resnet")``, the paper's CIFAR/CelebA networks;
    * anything else: ``("conv", "conv")``.

    Raises:
        ValueError: if ``image_shape`` is not three positive integers.
    """
    channels, height, width = _check_image_shape(image_shape)
    if channels == 1 and height <= 28 and width <= 28:
        return ("mlp", "mlp")
    if channels == 3 and 32 <= min(height, width) and max(height, width) <= 64:
        return ("resnet", "resnet")
    return ("conv", "conv")
