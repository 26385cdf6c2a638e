"""Batched image augmentations whose random parameters are drawn first, then applied.

Every augmentation works on a whole batch of float images ``(n, C, H, W)`` in
``[0, 1]`` on the training device, with no per-image Python loop and no PIL.
It is split, as in torchvision's v2 transforms, into

* ``sample_params(n, generator, device)``: draws one set of parameters per
  sample from the given ``torch.Generator`` and returns them as a dict of
  tensors, each of shape ``(n, ...)``;
* ``apply(images, params)``: a deterministic function of the images and those
  parameters.

The parameters are the ground truth of an image's "style" (where it was cropped,
whether it was flipped, how its colours were changed), so tests and style probes
can read them. Geometric transforms (crops, flips) are affine maps of the image
plane; :class:`Compose` multiplies the matrices of consecutive geometric
transforms and resamples once, so a crop followed by flips costs one
``grid_sample`` for the whole batch.

:class:`ViewAugmenter` turns one transform into a view generator: images
``(B, C, H, W)`` become ``J`` independent views ``(B, J, C, H, W)`` (the view layout
of :mod:`pssl.models.sites`). Named presets (the augmentations of the reference
setup, SimCLR's, ...) live in the :data:`AUGMENTATIONS` registry; which one a
data set uses by default is the data set's own declaration
(:mod:`pssl.datasets.descriptor`), not a table here.

Coordinates: an affine matrix ``theta`` (``(n, 3, 3)``, last row ``0 0 1``) maps
normalised *output* coordinates to normalised *input* coordinates, where
``(-1, -1)`` and ``(1, 1)`` are the outer corners of the top-left and bottom-right
pixels (``affine_grid``/``grid_sample`` with ``align_corners=False``).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from pssl.datasets.core import DataSplits
from pssl.datasets.styled import STYLE_FACTORS
from pssl.registry import Registry

if TYPE_CHECKING:
    from pssl.datasets.styled import StyleSource

__all__ = [
    "AUGMENTATIONS",
    "JITTER_OPS",
    "LUMA_WEIGHTS",
    "AffineAugmentation",
    "Augmentation",
    "ColorJitter",
    "Compose",
    "GaussianBlur",
    "Identity",
    "RandomGrayscale",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "RandomVerticalFlip",
    "Restyle",
    "Threshold",
    "ViewAugmenter",
    "build_augmenter",
    "shift_hue",
]

LUMA_WEIGHTS = (0.2989, 0.587, 0.114)
"""ITU-R 601-2 luma weights of (R, G, B), as PIL and torchvision use for grey."""

Device = torch.device | str | None
"""Where parameter tensors are put (``None``: the generator's device)."""

JITTER_OPS = ("brightness", "contrast", "saturation", "hue")
"""Colour-jitter operations; ``ColorJitter`` params ``"order"`` index into this tuple."""


# --------------------------------------------------------------------------- helpers


def _uniform(shape: tuple[int, ...], generator: torch.Generator, device: Device) -> Tensor:
    """U(0, 1) draws from ``generator`` (on its own device), moved to ``device``."""
    draws = torch.rand(shape, generator=generator, device=generator.device)
    return draws if device is None else draws.to(device)


def _check_generator(generator: object) -> None:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")


def _check_images(images: object, who: str) -> None:
    if not isinstance(images, Tensor):
        raise TypeError(f"{who}: images must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"{who}: images must have shape (n, C, H, W), got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"{who}: images must be floating point in [0, 1], got dtype {images.dtype}")


def _check_probability(p: float, name: str) -> float:
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
    return p


def _check_range(
    value: Sequence[float], name: str, *, low: float = 0.0, high: float = math.inf, open_low: bool = False
) -> tuple[float, float]:
    """Check ``value`` is ``(a, b)`` with ``low <= a <= b <= high`` (``low < a`` if ``open_low``)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise TypeError(f"{name} must be a pair (min, max), got {value!r}")
    a, b = float(value[0]), float(value[1])
    if not (math.isfinite(a) and math.isfinite(b)):
        raise ValueError(f"{name} must be finite numbers (min, max), got {value!r}")
    too_low = a <= low if open_low else a < low
    if too_low or b > high or a > b:
        first = "<" if open_low else "<="
        raise ValueError(f"{name} must be (min, max) with {low} {first} min <= max <= {high}, got {value!r}")
    return a, b


def _jitter_range(
    value: float | Sequence[float], name: str, *, center: float, bound: float | None = None
) -> tuple[float, float]:
    """torchvision's reading of a jitter strength: ``s -> (max(0, c - s), c + s)``, or a pair as given."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        strength = float(value)
        if not math.isfinite(strength) or strength < 0 or (bound is not None and strength > bound):
            upper = "" if bound is None else f" and at most {bound}"
            raise ValueError(f"{name} strength must be non-negative{upper}, got {value!r}")
        low = center - strength if bound is not None else max(0.0, center - strength)
        return low, center + strength
    if bound is None:
        return _check_range(value, name, low=0.0)
    return _check_range(value, name, low=-bound, high=bound)


class _Subparams(dict):
    """The params of one transform inside :class:`Compose`, remembering their prefix for errors."""

    def __init__(self, values: dict[str, Tensor], prefix: str) -> None:
        super().__init__(values)
        self.prefix = prefix


def _param(params: dict[str, Tensor], key: str, who: str) -> Tensor:
    try:
        return params[key]
    except KeyError:
        prefix = getattr(params, "prefix", "")
        got = sorted(f"{prefix}{k}" for k in params)
        raise ValueError(f"{who}: params lack {prefix + key!r}; got keys {got}") from None


def _luma(images: Tensor) -> Tensor:
    """Grey level ``(n, 1, H, W)`` of RGB ``(n, 3, H, W)`` images (ITU-R 601-2 weights)."""
    n, _, height, width = images.shape
    weights = torch.tensor([LUMA_WEIGHTS], dtype=images.dtype, device=images.device)  # (1, 3)
    # a (1, 3) @ (3, H W) product per image: far faster on CPUs than three scaled channel sums
    return torch.matmul(weights, images.reshape(n, 3, height * width)).view(n, 1, height, width)


def _resample(images: Tensor, theta: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resampling of ``images`` (n, C, H, W) at ``theta`` (n, 3, 3) onto ``size`` (h, w).

    Sample points outside the image take the nearest edge value (``padding_mode="border"``), as
    torchvision's resize does at crop borders that touch the image edge. No antialiasing.
    """
    grid = _affine_grid(theta, size, images.dtype)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _affine_grid(theta: Tensor, size: tuple[int, int], dtype: torch.dtype) -> Tensor:
    """``F.affine_grid(theta[:, :2], align_corners=False)`` as broadcast sums: ``(n, h, w, 2)``.

    Output pixel centres sit at ``(2u + 1) / w - 1``; the sampling point of ``(x, y)`` is
    ``theta[:, :2] @ (x, y, 1)``. Built from a row and a column instead of a batched matrix
    product with a 3-wide inner dimension, which is several times slower on CPUs.
    """
    height, width = size
    theta = theta.to(dtype)
    xs = (torch.arange(width, dtype=dtype, device=theta.device) * 2 + 1) / width - 1
    ys = (torch.arange(height, dtype=dtype, device=theta.device) * 2 + 1) / height - 1
    t = theta[:, :2].reshape(-1, 6, 1, 1).unbind(dim=1)  # each (n, 1, 1)
    grid_x = t[0] * xs.view(1, 1, width) + (t[1] * ys.view(1, height, 1) + t[2])
    grid_y = t[3] * xs.view(1, 1, width) + (t[4] * ys.view(1, height, 1) + t[5])
    return torch.stack((grid_x, grid_y), dim=-1)


# ------------------------------------------------------------------------ base classes


class Augmentation:
    """A batched random image transform: draw parameters, then apply them.

    Subclasses set ``name`` (the prefix of their parameters inside :class:`Compose`) and
    implement :meth:`sample_params` and :meth:`apply`; geometric ones also
    :meth:`output_size`.
    """

    name: str = "augmentation"
    pixelwise_deterministic: bool = False
    """True for a parameter-free pixel-wise map (e.g. :class:`Threshold`): such a step
    that ends a view pipeline changes the *kind* of data (grey -> binary), so the
    images a trained model is evaluated on get it too."""

    def sample_params(
        self,
        n: int,
        generator: torch.Generator,
        device: Device = None,
        *,
        image_size: tuple[int, int] | None = None,
    ) -> dict[str, Tensor]:
        """Draw parameters for ``n`` samples.

        Args:
            n: number of images the parameters are for.
            generator: the only source of randomness; draws happen on its device.
            device: where the returned tensors live (default: the generator's device).
            image_size: ``(H, W)`` of the input images, for transforms whose parameter
                distribution depends on the shape (crops); ``None`` means square.

        Returns:
            A dict of tensors, each of shape ``(n, ...)``.
        """
        raise NotImplementedError

    def apply(self, images: Tensor, params: dict[str, Tensor]) -> Tensor:
        """Transform ``images`` (n, C, H, W) float in [0, 1] with ``params`` from :meth:`sample_params`."""
        raise NotImplementedError

    def output_size(self, size: tuple[int, int] | None) -> tuple[int, int] | None:
        """``(H, W)`` of the output for inputs of ``size`` (unchanged unless overridden)."""
        return size

    def __call__(
        self, images: Tensor, generator: torch.Generator, *, return_params: bool = False
    ) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """Draw parameters for every image of ``images`` (n, C, H, W) and apply them."""
        _check_images(images, type(self).__name__)
        _check_generator(generator)
        params = self.sample_params(
            images.shape[0], generator, images.device, image_size=tuple(images.shape[-2:])
        )
        out = self.apply(images, params)
        return (out, params) if return_params else out

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class AffineAugmentation(Augmentation):
    """A geometric augmentation given by one affine map of the image plane per sample.

    :meth:`matrix` returns ``theta`` (n, 3, 3) mapping normalised output coordinates to
    normalised input coordinates. Applying ``A`` then ``B`` reads the input at
    ``theta_A @ theta_B``, which :class:`Compose` uses to resample once.
    """

    def matrix(self, params: dict[str, Tensor]) -> Tensor:
        """Per-sample affine matrices ``(n, 3, 3)`` (float32, on the params' device)."""
        raise NotImplementedError

    def apply(self, images: Tensor, params: dict[str, Tensor]) -> Tensor:
        size = self.output_size(tuple(images.shape[-2:]))
        return _resample(images, self.matrix(params).to(images.device), size)


class Identity(Augmentation):
    """No change; no parameters."""

    name = "identity"

    def sample_params(
        self,
        n: int,
        generator: torch.Generator,
        device: Device = None,
        *,
        image_size: tuple[int, int] | None = None,
    ) -> dict[str, Tensor]:
        _check_generator(generator)
        return {}

    def apply(self, images: Tensor, params: dict[str, Tensor]) -> Tensor:
        return images


# ------------------------------------------------------------------------- geometric


class RandomResizedCrop(AffineAugmentation):
    """Crop a random box and resize it to ``size``, bilinearly, in one ``grid_sample``.

    Box distribution (torchvision's rule, drawn continuously rather than rounded to
    pixels): the area fraction ``s ~ U(scale)`` and the log aspect ratio
    ``log r ~ U(log ratio)`` (``r`` = width / height in pixels) give
    ``width = sqrt(s r H / W)`` and ``height = sqrt(s W / (r H))`` as fractions of the
    input width and height. The first of 10 candidates (all drawn at once) that fits
    inside the image is used, placed uniformly: ``top ~ U(0, 1 - height)``,
    ``left ~ U(0, 1 - width)``. If none fits, the central crop with the aspect ratio
    clamped to ``ratio`` is used (torchvision's fallback).

    Params (``(n,)`` float, *fractions* of the input height/width, so they do not
    depend on resolution): ``top``, ``left``, ``height``, ``width``. In pixels the box is
    rows ``[top H, (top + height) H)`` and columns ``[left W, (left + width) W)``.

    Resampling: output pixel ``u`` (of ``w_out``) reads the input at edge coordinate
    ``left W + (u + 1/2) width W / w_out`` (pixel centres at ``i + 1/2``), the same
    half-pixel convention as ``torch.nn.functional.interpolate(align_corners=False)``.
    For integer-pixel boxes this equals torchvision's ``resized_crop`` (bilinear,
    ``antialias=False``) except, when upscaling, in the outermost output rows and
    columns: there torchvision clamps to the crop's edge pixel while we interpolate
    with the neighbouring pixel outside the crop (the continuous image).

    Args:
        size: output ``(height, width)``; ``None`` keeps the input size.
        scale: range of the area fraction, ``0 < min <= max <= 1``.
        ratio: range of the aspect ratio (width / height), ``0 < min <= max``.
        name: prefix of the parameters inside :class:`Compose`.
    """

    name = "crop"
    attempts = 10

    def __init__(
        self,
        size: tuple[int, int] | None = None,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
        *,
        name: str = "crop",
    ) -> None:
        if size is not None:
            if (
                not isinstance(size, Sequence)
                or len(size) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
            ):
                raise ValueError(f"size must be None or positive ints (height, width), got {size!r}")
            size = (int(size[0]), int(size[1]))
        self.size = size
        self.scale = _check_range(scale, "scale", low=0.0, high=1.0, open_low=True)
        self.ratio = _check_range(ratio, "ratio", low=0.0, open_low=True)
        self.name = name

    def output_size(self, size: tuple[int, int] | None) -> tuple[int, int] | None:
        return self.size if self.size is not None else size

    def sample_params(
        self,
        n: int,
        generator: torch.Generator,
        device: Device = None,
        *,
        image_size: tuple[int, int] | None = None,
    ) -> dict[str, Tensor]:
        _check_generator(generator)
        height_px, width_px = image_size if image_size is not None else (1, 1)
        aspect = width_px / height_px
        device = generator.device if device is None else device
        draws = _uniform((n, self.attempts, 2), generator, device)
        position = _uniform((n, 2), generator, device)

        area = self.scale[0] + (self.scale[1] - self.scale[0]) * draws[..., 0]
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        ratio = torch.exp(log_lo + (log_hi - log_lo) * draws[..., 1])
        width = torch.sqrt(area * ratio / aspect)
        height = torch.sqrt(area / ratio * aspect)
        # a tolerance so that scale=(1, 1), ratio=(1, 1) fits despite rounding in sqrt/exp
        fits = (width <= 1.0 + 1e-6) & (height <= 1.0 + 1e-6)
        first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # index of the first fitting attempt
        width = width.gather(1, first).squeeze(1).clamp(max=1.0)
        height = height.gather(1, first).squeeze(1).clamp(max=1.0)

        # torchvision's fallback: central crop, aspect ratio clamped into the allowed range
        if aspect < self.ratio[0]:
            fallback_w, fallback_h = 1.0, aspect / self.ratio[0]
        elif aspect > self.ratio[1]:
            fallback_w, fallback_h = self.ratio[1] / aspect, 1.0
        else:
            fallback_w, fallback_h = 1.0, 1.0
        found = fits.any(dim=1)
        width = torch.where(found, width, fallback_w)
        height = torch.where(found, height, fallback_h)
        top = torch.where(found, position[:, 0] * (1.0 - height), (1.0 - height) / 2)
        left = torch.where(found, position[:, 1] * (1.0 - width), (1.0 - width) / 2)
        return {"top": top, "left": left, "height": height, "width": width}

    def matrix(self, params: dict[str, Tensor]) -> Tensor:
        r"""Crop as an affine map: ``x_in = width x_out + (2 left + width - 1)``, likewise for y.

        .. math::
            \theta = \begin{pmatrix} w & 0 & 2l + w - 1 \\ 0 & h & 2t + h - 1 \\ 0 & 0 & 1 \end{pmatrix}
        """
        who = type(self).__name__
        top, left = _param(params, "top", who), _param(params, "left", who)
        height, width = _param(params, "height", who), _param(params, "width", who)
        theta = torch.zeros(top.shape[0], 3, 3, dtype=torch.float32, device=top.device)
        theta[:, 0, 0] = width
        theta[:, 0, 2] = 2 * left + width - 1
        theta[:, 1, 1] = height
        theta[:, 1, 2] = 2 * top + height - 1
        theta[:, 2, 2] = 1
        return theta


class _RandomFlip(AffineAugmentation):
    """Flip each image along ``_axis`` with probability ``p``; params ``flip`` (n,) bool."""

    _axis: int  # image axis flipped: -1 (width) or -2 (height)

    def __init__(self, p: float = 0.5, *, name: str | None = None) -> None:
        self.p = _check_probability(p, "p")
        if name is not None:
            self.name = name

    def sample_params(
        self,
        n: int,
        generator: torch.Generator,
        device: Device = None,
        *,
        image_size: tuple[int, int] | None = None,
    ) -> dict[str, Tensor]:
        _check_generator(generator)
        return {"flip": _uniform((n,), generator, device) < self.p}

    def matrix(self, params: dict[str, Tensor]) -> Tensor:
        """``diag(-1, 1, 1)`` (horizontal) or ``diag(1, -1, 1)`` (vertical) where flipped, else identity."""
        flip = _param(params, "flip", type(self).__name__)
        theta = torch.eye(3, dtype=torch.float32, device=flip.device).repeat(flip.shape[0], 1, 1)
        row = 0 if self._axis == -1 else 1
        theta[:, row, row] = 1.0 - 2.0 * flip.float()
        return theta

    def apply(self, images: Tensor, params: dict[str, Tensor]) -> Tensor:
        """Exact flip (no resampling) of the samples whose ``flip`` is true."""
        flip = _param(params, "flip", type(self).__name__).to(images.device).view(-1, 1, 1, 1)
        return torch.where(flip, images.flip(self._axis), images)


class RandomHorizontalFlip(_RandomFlip):
    """Mirror left-right with probability ``p``. Params: ``flip`` (n,) bool."""

    name = "hflip"
    _axis = -1


class RandomVerticalFlip(_RandomFlip):
    """Mirror top-bottom with probability ``p``. Params: ``flip`` (n,) bool."""

    name = "vflip"
    _axis = -2


# --------------------------------------------------------------------------- colour


class ColorJitter(Augmentation):
    r"""Random brightness, contrast, saturation and hue, in a random order per sample.

    With probability ``p`` (torchvision's ``RandomApply``) a sample gets all four
    operations, in the order of a uniformly random permutation, with factors

    * brightness ``b ~ U(max(0, 1 - brightness), 1 + brightness)``: :math:`x \leftarrow bx`;
    * contrast ``c`` likewise: :math:`x \leftarrow cx + (1 - c)\,\overline{g(x)}`, with
      :math:`\overline{g(x)}` the mean grey level of the image;
    * saturation ``s`` likewise: :math:`x \leftarrow sx + (1 - s)\,g(x)` per pixel;
    * hue ``h ~ U(-hue, hue)``: the HSV hue turns by ``h`` (1 = a full turn);

    each result clipped to ``[0, 1]``; ``g`` is the ITU-R 601-2 grey level. A strength
    given as a pair is the factor range itself. These are torchvision's
    ``adjust_brightness``/``adjust_contrast``/``adjust_saturation``/``adjust_hue``.
    A strength of 0 makes the factor exactly neutral (torchvision skips that op).

    Grey images (C = 1) get brightness and contrast only: saturation and hue do not
    exist for them and are skipped (their factors are still drawn and returned).

    Params: ``brightness``, ``contrast``, ``saturation``, ``hue`` (n,) float;
    ``order`` (n, 4) long, a permutation of op indices into :data:`JITTER_OPS`
    (``order[i, k]`` is the op applied k-th to sample i); ``applied`` (n,) bool.

    Implementation: four steps; at step k every sample applies its own op
    ``order[:, k]``. Brightness, contrast and saturation are one fused blend
    :math:`f x + (1 - f)\,o` with per-sample factor ``f`` and blend target ``o``
    (0, the mean grey, or the grey image; ``f = 1`` for samples doing another op).
    Hue runs only on the samples whose step-k op is hue.
    """

    name = "jitter"

    def __init__(
        self,
        brightness: float | tuple[float, float] = 0.0,
        contrast: float | tuple[float, float] = 0.0,
        saturation: float | tuple[float, float] = 0.0,
        hue: float | tuple[float, float] = 0.0,
        p: float = 1.0,
        *,
        name: str = "jitter",
    ) -> None:
        self.brightness = _jitter_range(brightness, "brightness", center=1.0)
        self.contrast = _jitter_range(contrast, "contrast", center=1.0)
        self.saturation = _jitter_range(saturation, "saturation", center=1.0)
        self.hue = _jitter_range(hue, "hue", center=0.0, bound=0.5)
        self.p = _check_probability(p, "p")
        self.name = name

    def sample_params(
        self,
        n: int,
        generator: torch.Generator,
        device: Device = None,
        *,
        image_size: tuple[int, int] | None = None,
    ) -> dict[str, Tensor]:
        _check_generator(generator)
        draws = _uniform((n, 9), generator, device)
        params = {}
        for column, op in enumerate(JITTER_OPS):
            low, high = getattr(self, op)
            params[op] = low + (high - low) * draws[:, column]
        params["order"] = torch.argsort(draws[:, 4:8], dim=1)  # uniform random permutation
        params["applied"] = draws[:, 8] < self.p
        return params

    def apply(self, images: Tensor, params: dict[str, Tensor]) -> Tensor:
        who = type(self).__name__
        channels = images.shape[1]
        if channels not in (1, 3):
            raise ValueError(f"{who}: images must have 1 or 3 channels, got {channels}")
        n, device = images.shape[0], images.device
        applied = _param(params, "applied", who).to(device)
        order = _param(params, "order", who).to(device)
        blend_factors = torch.stack(
            [_param(params, op, who).to(device, images.dtype) for op in JITTER_OPS[:3]]
            + [torch.ones(n, dtype=images.dtype, device=device)],  # column 3: hue, not a blend
            dim=1,
        )
        if channels == 1:
            blend_factors[:, 2] = 1.0  # no saturation for grey images
        blend_factors = torch.where(applied.unsqueeze(1), blend_factors, 1.0)
        hue = _param(params, "hue", who).to(device, images.dtype)
        do_hue = channels == 3 and self.hue != (0.0, 0.0)

        x = images
        for step in range(len(JITTER_OPS)):
            op = order[:, step].view(n, 1, 1, 1)
            factor = blend_factors.gather(1, order[:, step : step + 1]).view(n, 1, 1, 1)
            # blend target o: 0 (brightness), mean grey (contrast) or grey (saturation), built at
            # one channel so that x <- f x + (1 - f) o is a single pass over the images
            grey = _luma(x) if channels == 3 else x
            mean_grey = grey.mean(dim=(1, 2, 3), keepdim=True)
            offset = (1.0 - factor) * ((op == 1) * mean_grey + (op == 2) * grey)
            x = torch.addcmul(offset, factor, x).clamp_(0.0, 1.0)
            if do_hue:
                chosen = (applied & (order[:, step] == 3)).nonzero().squeeze(1)
                if chosen.numel() > 0:
                    x.index_copy_(0, chosen, shift_hue(x.index_select(0, chosen), hue[chosen]))
        return x


def shift_hue(images: Tensor, shift: Tensor) -> Tensor:
    r"""Turn the HSV hue of RGB images by ``shift`` (1 = a full turn), keeping S and V.

    In the hexcone model, with :math:`v = \max(r, g, b)`, chroma :math:`c = v - \min(r, g, b)`
    and hue in sextants :math:`h_6 \in [0, 6)` (``(g - b) / c`` if red is largest, ``(b - r) / c + 2``
    if green, ``(r - g) / c + 4`` if blue), the turned colour is, per channel ``k = 5, 3, 1``
    (R, G, B),

    .. math::
        x_k = v - c \, \mathrm{clamp}(\min(t_k, 4 - t_k), 0, 1), \quad
        t_k = (k + h_6 + 6\,\mathrm{shift}) \bmod 6,

    which is RGB -> HSV -> (h + shift mod 1) -> RGB without forming S (``v s = c``). Greys
    (``c = 0``) are unchanged.

    Args:
        images: ``(n, 3, H, W)`` RGB in ``[0, 1]``.
        shift: ``(n,)`` hue turn per image.

    Returns:
        ``(n, 3, H, W)``.
    """
    r, g, b = images.unbind(dim=1)
    value = images.amax(dim=1)
    chroma = value - images.amin(dim=1)
    # which channel is largest, by comparison: max-with-indices over channels is slow on CPUs
    red_max = r == value
    green_max = (g == value) & ~red_max
    numerator = torch.where(red_max, g - b, torch.where(green_max, b - r, r - g))
    start = torch.where(red_max, 0.0, torch.where(green_max, 2.0, 4.0))
    sextant = (numerator / torch.where(chroma > 0, chroma, 1.0) + start).unsqueeze(1)
    value, chroma = value.unsqueeze(1), chroma.unsqueeze(1)
    channel_offsets = torch.tensor([5.0, 3.0, 1.0], dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    t = torch.remainder(channel_offsets + (sextant + 6.0 * shift.view(-1, 1, 1, 1)), 6.0)
    ramp = torch.minimum(t, 4.0 - t).clamp_(0.0, 1.0)
    return value - chroma * ramp


class RandomGrayscale(Augmentation):
    """Replace an RGB image by its grey level (in all 3 channels) with probability ``p``.

    Grey (C = 1) images are returned unchanged. Params: ``applied`` (n,) bool.
    """

    name = "gray"

    def __init__(self, p: float = 0.1, *, name: str = "gray") -> None:
        self.p = _check_probability(p, "p")
        self.name = name

    def sample_params(
        self,
        n: int,
        generator: torch.Generator,
        device: Device = None,
        *,
        image_size: tuple[int, int] | None = None,
    ) -> dict[str, Tensor]:
        _check_generator(generator)
        return {"applied": _uniform((n,), generator, device) < self.p}

    def apply(self, images: Tensor, params: dict[str, Tensor]) -> Tensor:
        applied = _param(params, "applied", type(self).__name__).to(images.device)
        if images.shape[1] != 3:
            return images
        return torch.where(applied.view(-1, 1, 1, 1), _luma(images).expand_as(images), images)


class GaussianBlur(Augmentation):
    r"""Blur with a Gaussian of random width, with probability ``p``.

    ``sigma ~ U(sigma)``; the separable kernel of ``kernel_size`` taps at offsets
    ``t = -(k-1)/2 .. (k-1)/2`` is :math:`\propto \exp(-t^2 / (2\sigma^2))`; borders are
    reflected (``replicate`` where the image is too small to reflect). As torchvision's
    ``gaussian_blur``. Params: ``sigma`` (n,) float, ``applied`` (n,) bool.
    """

    name = "blur"

    def __init__(
        self,
        kernel_size: int = 3,
        sigma: tuple[float, float] = (0.1, 2.0),
        p: float = 1.0,
        *,
        name: str = "blur",
    ) -> None:
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1:
            raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size!r}")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size!r}")
        self.kernel_size = kernel_size
        self.sigma = _check_range(sigma, "sigma", low=0.0, open_low=True)
        self.p = _check_probability(p, "p")
        self.name = name

    def sample_params(
        self,
        n: int,
        generator: torch.Generator,
        device: Device = None,
        *,
        image_size: tuple[int, int] | None = None,
    ) -> dict[str, Tensor]:
        _check_generator(generator)
        draws = _uniform((n, 2), generator, device)
        sigma = self.sigma[0] + (self.sigma[1] - self.sigma[0]) * draws[:, 0]
        return {"sigma": sigma, "applied": draws[:, 1] < self.p}

    def apply(self, images: Tensor, params: dict[str, Tensor]) -> Tensor:
        who = type(self).__name__
        n, channels, height, width = images.shape
        sigma = _param(params, "sigma", who).to(images.device, images.dtype)
        applied = _param(params, "applied", who).to(images.device)
        half = self.kernel_size // 2
        offsets = torch.arange(-half, half + 1, dtype=images.dtype, device=images.device)
        kernel = torch.softmax(-0.5 * (offsets / sigma.unsqueeze(1)) ** 2, dim=1)  # (n, k), sums to 1
        delta = (offsets == 0).to(images.dtype).expand_as(kernel)
        kernel = torch.where(applied.unsqueeze(1), kernel, delta)
        weight = kernel.repeat_interleave(channels, dim=0)  # (n C, k): one filter per image channel
        mode = "reflect" if half < min(height, width) else "replicate"
        x = images.reshape(1, n * channels, height, width)
        x = F.pad(x, (half, half, half, half), mode=mode)
        x = F.conv2d(x, weight.view(n * channels, 1, 1, -1), groups=n * channels)
        x = F.conv2d(x, weight.view(n * channels, 1, -1, 1), groups=n * channels)
        return x.view(n, channels, height, width)


class Threshold(Augmentation):
    """Deterministic binarisation ``x > threshold`` (1.0 or 0.0); no parameters.

    Pixel-wise and parameter-free: when it ends a view pipeline, evaluation images
    get it too (:meth:`ViewAugmenter.evaluation_transform`).
    """

    name = "threshold"
    pixelwise_deterministic = True

    def __init__(self, threshold: float = 0.5, *, name: str = "threshold") -> None:
        self.threshold = float(threshold)
        if not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"threshold must lie in [0, 1), got {threshold!r}")
        self.name = name

    def sample_params(
        self,
        n: int,
        generator: torch.Generator,
        device: Device = None,
        *,
        image_size: tuple[int, int] | None = None,
    ) -> dict[str, Tensor]:
        _check_generator(generator)
        return {}

    def apply(self, images: Tensor, params: dict[str, Tensor]) -> Tensor:
        return (images > self.threshold).to(images.dtype)


# -------------------------------------------------------------------------- compose


class Compose(Augmentation):
    """Apply ``transforms`` in order; parameters as one flat dict ``"<name>.<key>"``.

    Runs of two or more consecutive :class:`AffineAugmentation` are fused: their
    matrices are multiplied (``theta_1 @ theta_2 @ ...``) and the images resampled
    once, so crop + flips is one bilinear ``grid_sample`` for the whole batch (and one
    interpolation, not several).

    Args:
        transforms: the augmentations; their ``name`` attributes must be distinct
            (pass ``name=`` to a constructor to rename one).
        name: prefix of this composition's parameters inside another :class:`Compose`.
    """

    name = "compose"

    def __init__(self, transforms: Sequence[Augmentation], *, name: str = "compose") -> None:
        transforms = list(transforms)
        for t in transforms:
            if not isinstance(t, Augmentation):
                raise TypeError(f"Compose takes Augmentation instances, got {t!r}")
        names = [t.name for t in transforms]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"Compose: transform names must be distinct; repeated {duplicates} in {names}")
        self.transforms = transforms
        self.name = name
        self.pixelwise_deterministic = bool(transforms) and all(t.pixelwise_deterministic for t in transforms)
        # consecutive affine transforms form one resampling stage
        self._stages: list[list[Augmentation]] = []
        for t in transforms:
            previous = self._stages[-1][0] if self._stages else None
            if isinstance(t, AffineAugmentation) and isinstance(previous, AffineAugmentation):
                self._stages[-1].append(t)
            else:
                self._stages.append([t])

    def output_size(self, size: tuple[int, int] | None) -> tuple[int, int] | None:
        for t in self.transforms:
            size = t.output_size(size)
        return size

    def sample_params(
        self,
        n: int,
        generator: torch.Generator,
        device: Device = None,
        *,
        image_size: tuple[int, int] | None = None,
    ) -> dict[str, Tensor]:
        _check_generator(generator)
        params: dict[str, Tensor] = {}
        size = image_size
        for t in self.transforms:
            for key, value in t.sample_params(n, generator, device, image_size=size).items():
                params[f"{t.name}.{key}"] = value
            size = t.output_size(size)
        return params

    @staticmethod
    def _own(params: dict[str, Tensor], t: Augmentation) -> dict[str, Tensor]:
        prefix = f"{t.name}."
        own = {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}
        return _Subparams(own, getattr(params, "prefix", "") + prefix)  # full prefix for error messages

    def apply(self, images: Tensor, params: dict[str, Tensor]) -> Tensor:
        x = images
        for stage in self._stages:
            if len(stage) == 1:
                x = stage[0].apply(x, self._own(params, stage[0]))
                continue
            theta = None
            size: tuple[int, int] | None = tuple(x.shape[-2:])
            for t in stage:
                step = t.matrix(self._own(params, t)).to(x.device)
                theta = step if theta is None else theta @ step
                size = t.output_size(size)
            x = _resample(x, theta, size)
        return x

    def __repr__(self) -> str:
        inner = ", ".join(repr(t) for t in self.transforms)
        return f"Compose([{inner}])"


# -------------------------------------------------------------------------- re-rendered

RESTYLE_FACTORS = tuple(STYLE_FACTORS)
"""The style factors of :mod:`pssl.datasets.styled`, which :class:`Restyle` re-draws by default."""


class Restyle(Augmentation):
    """Re-render each image's item with a freshly drawn style (procedurally styled data).

    For data generated as ``x = render(g, s)`` from a content glyph ``g`` and
    recorded style factors ``s`` (:mod:`pssl.datasets.styled`), a view is
    ``x' = render(g, s')`` with ``s' ~ p(s)``, the data set's own style distribution:
    the views of an item share ``g`` (hence the content label) exactly and differ in
    exactly the style factors. Factors not listed in ``factors`` keep the item's
    recorded value.

    Params (drawn before the images are seen): one ``(n,)`` tensor per varied factor,
    named as the data set's factors (``pos_x``, ``pos_y``, ``scale`` ``float32``;
    ``fg_color``, ``bg_color`` ``int64``): the ground-truth style of every view.

    Args:
        source: The data set's :class:`~pssl.datasets.styled.StyleSource` (its glyphs,
            recorded styles and style distribution); ``None`` builds an augmenter that
            refuses to draw (e.g. to read :meth:`ViewAugmenter.evaluation_transform`
            without the data).
        factors: The style factors to re-draw, a non-empty subset of ``source.factors``.
        name: Prefix of the parameters inside :class:`Compose`.

    Raises:
        ValueError: for an unknown or repeated factor, or none.
    """

    name = "restyle"

    def __init__(
        self, source: StyleSource | None, factors: Sequence[str] | None = None, *, name: str = "restyle"
    ) -> None:
        accepted = tuple(source.factors) if source is not None else RESTYLE_FACTORS
        chosen = tuple(accepted if factors is None else factors)
        unknown = [f for f in chosen if f not in accepted]
        if unknown or not chosen or len(set(chosen)) != len(chosen):
            raise ValueError(
                f"restyle factors (augment.factors) must be distinct names among {', '.join(accepted)}, "
                f"got {list(chosen)!r}"
            )
        self.source = source
        self.factors = chosen
        self.name = name

    def _source(self) -> StyleSource:
        if self.source is None:
            raise ValueError(
                "augment 'restyle' re-renders the items of a styled data set and was built without one; "
                "build it with build_augmenter('restyle', image_shape, options, data=splits) for "
                "styled-digits, styled-mnist or styled-fashionmnist splits"
            )
        return self.source

    def sample_params(
        self,
        n: int,
        generator: torch.Generator,
        device: Device = None,
        *,
        image_size: tuple[int, int] | None = None,
    ) -> dict[str, Tensor]:
        _check_generator(generator)
        drawn = self._source().sample(n, generator, device)
        return {k: drawn[k] for k in self.factors}

    def apply(self, images: Tensor, params: dict[str, Tensor]) -> Tensor:
        source = self._source()
        styles = {k: _param(params, k, "Restyle") for k in self.factors}
        index = source.find(images)
        return source.render(index, styles, images.device).to(images.dtype)

    def __repr__(self) -> str:
        return f"Restyle({self.source!r}, factors={list(self.factors)!r})"


# ----------------------------------------------------------------------------- views


class ViewAugmenter:
    """Draw ``J`` independently augmented views of every image.

    Args:
        transform: the augmentation applied to each view.

    Example:
        >>> aug = ViewAugmenter(Compose([RandomResizedCrop(scale=(0.4, 1.0)), RandomVerticalFlip()]))
        >>> views = aug(images, num_views=2, generator=torch.Generator().manual_seed(0))  # (B, 2, C, H, W)
    """

    def __init__(self, transform: Augmentation) -> None:
        if not isinstance(transform, Augmentation):
            raise TypeError(f"transform must be an Augmentation, got {type(transform).__name__}")
        self.transform = transform

    @classmethod
    def identity(cls) -> ViewAugmenter:
        """An augmenter whose views are copies of the image (evaluation, no augmentation)."""
        return cls(Identity())

    def evaluation_transform(self) -> Augmentation | None:
        """The parameter-free pixel-wise steps that end the view pipeline, or ``None``.

        Views binarised at 0.5 (the reference MNIST set-up) make a model of binary
        images; un-augmented evaluation images must be binarised the same way, or the
        probes and diagnostics would read the model on data of another kind. The
        random steps (crops, flips, jitter) are what evaluation leaves out; these
        deterministic trailing steps are what it keeps. Apply the result as
        ``transform.apply(images, {})``.
        """
        steps = self.transform.transforms if isinstance(self.transform, Compose) else [self.transform]
        tail: list[Augmentation] = []
        for step in reversed(steps):
            if not step.pixelwise_deterministic:
                break
            tail.insert(0, step)
        if not tail:
            return None
        return tail[0] if len(tail) == 1 else Compose(tail, name="evaluation")

    def vertical_flip_probability(self) -> float:
        """The largest probability with which a step of the pipeline flips a view top to bottom.

        Paired data holds its two modalities as the top and bottom halves of each
        image, so a pipeline that flips vertically would swap them.
        """
        steps = self.transform.transforms if isinstance(self.transform, Compose) else [self.transform]
        return max((float(s.p) for s in steps if isinstance(s, RandomVerticalFlip)), default=0.0)

    def output_shape(self, image_shape: Sequence[int]) -> tuple[int, int, int]:
        """``(C, H, W)`` of each view for input images of ``image_shape`` ``(C, H, W)``."""
        channels, height, width = (int(v) for v in image_shape)
        out = self.transform.output_size((height, width))
        return (channels, out[0], out[1])

    def __call__(
        self,
        images: Tensor,
        num_views: int,
        generator: torch.Generator,
        *,
        return_params: bool = False,
    ) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """Augment every image ``num_views`` times, each view with its own parameters.

        Args:
            images: ``(B, C, H, W)`` float in ``[0, 1]``, on the training device.
            num_views: ``J >= 1``.
            generator: the source of randomness (may live on the CPU for CUDA images).
            return_params: also return the parameters of every view.

        Returns:
            views ``(B, J, C, H', W')``; with ``return_params``, also a dict whose values
            are shaped ``(B, J, ...)`` and live on the images' device.
        """
        _check_images(images, "ViewAugmenter")
        _check_generator(generator)
        if isinstance(num_views, bool) or not isinstance(num_views, int) or num_views < 1:
            raise ValueError(f"num_views must be a positive int, got {num_views!r}")
        batch = images.shape[0]
        flat = images.repeat_interleave(num_views, dim=0)  # item-major: row i*J + j is view j of item i
        params = self.transform.sample_params(
            batch * num_views, generator, images.device, image_size=tuple(images.shape[-2:])
        )
        views = self.transform.apply(flat, params)
        views = views.reshape(batch, num_views, *views.shape[1:])
        if not return_params:
            return views
        return views, {k: v.reshape(batch, num_views, *v.shape[1:]) for k, v in params.items()}

    def __repr__(self) -> str:
        return f"ViewAugmenter({self.transform!r})"


# --------------------------------------------------------------------------- presets

AUGMENTATIONS: Registry[ViewAugmenter] = Registry("augmentation preset", key="augment")
"""View-augmentation presets: ``factory(image_shape, *, options) -> ViewAugmenter``."""


def _simclr_jitter(strength: float, p: float) -> ColorJitter:
    """SimCLR's colour distortion of strength ``s``: jitter (0.8s, 0.8s, 0.8s, 0.2s)."""
    if strength < 0:
        raise ValueError(f"jitter_strength must be non-negative, got {strength!r}")
    return ColorJitter(0.8 * strength, 0.8 * strength, 0.8 * strength, min(0.2 * strength, 0.5), p=p)


@AUGMENTATIONS.register("none", help="no augmentation: every view is the image itself")
def _none(image_shape: tuple[int, int, int]) -> ViewAugmenter:
    return ViewAugmenter.identity()


def _digit_pipeline(
    crop_scale_min: float, crop_ratio: tuple[float, float], vertical_flip: float, threshold: float | None
) -> ViewAugmenter:
    transforms: list[Augmentation] = [
        RandomResizedCrop(scale=(crop_scale_min, 1.0), ratio=crop_ratio),
        RandomVerticalFlip(vertical_flip),
    ]
    if threshold is not None:
        transforms.append(Threshold(threshold))
    return ViewAugmenter(Compose(transforms))


@AUGMENTATIONS.register(
    "mnist", help="reference MNIST/FashionMNIST: resized crop (0.4-1, ratio 0.75-1.3), vertical flip"
)
def mnist(
    image_shape: tuple[int, int, int],
    *,
    crop_scale_min: float = 0.4,
    crop_ratio: tuple[float, float] = (0.75, 1.3),
    vertical_flip: float = 0.5,
    threshold: float | None = None,
) -> ViewAugmenter:
    """Reference augmentation for MNIST-like digits (PAPER.md section 5).

    RandomResizedCrop back to the input size (area fraction ``crop_scale_min``-1,
    aspect ratio ``crop_ratio``), then a vertical flip with probability
    ``vertical_flip`` (vertical, as in the reference code), then, if ``threshold`` is
    set, binarisation ``x > threshold`` of the *views* (so they suit a Bernoulli
    likelihood; un-augmented evaluation images are the data set's business).
    """
    return _digit_pipeline(crop_scale_min, crop_ratio, vertical_flip, threshold)


@AUGMENTATIONS.register("mnist-binary", help="the mnist preset with views binarised at 0.5 (reference MNIST)")
def mnist_binary(
    image_shape: tuple[int, int, int],
    *,
    crop_scale_min: float = 0.4,
    crop_ratio: tuple[float, float] = (0.75, 1.3),
    vertical_flip: float = 0.5,
    threshold: float | None = 0.5,
) -> ViewAugmenter:
    """The ``mnist`` preset with ``threshold=0.5``: the reference thresholds MNIST (not FashionMNIST)."""
    return _digit_pipeline(crop_scale_min, crop_ratio, vertical_flip, threshold)


@AUGMENTATIONS.register("digits", help="8x8 digits: milder crop (0.6-1, ratio 0.75-1.3), vertical flip")
def digits(
    image_shape: tuple[int, int, int],
    *,
    crop_scale_min: float = 0.6,
    crop_ratio: tuple[float, float] = (0.75, 1.3),
    vertical_flip: float = 0.5,
    threshold: float | None = None,
) -> ViewAugmenter:
    """The ``mnist`` preset with a milder crop for 8x8 images.

    A crop of area fraction 0.6 already shifts the content by up to about 1.8 pixels
    of 8, so no separate translation is added.
    """
    return _digit_pipeline(crop_scale_min, crop_ratio, vertical_flip, threshold)


@AUGMENTATIONS.register(
    "paired", help="paired (top/bottom half) data: mild crop (0.6-1), no flip, so the halves keep their roles"
)
def paired(
    image_shape: tuple[int, int, int],
    *,
    crop_scale_min: float = 0.6,
    crop_ratio: tuple[float, float] = (0.75, 1.3),
) -> ViewAugmenter:
    """For ``paired-*`` data, whose two modalities are the top and bottom halves of an image.

    A vertical flip would swap the modalities, so there is none; the crop moves the
    content a little within each half.
    """
    return _digit_pipeline(crop_scale_min, crop_ratio, 0.0, None)


@AUGMENTATIONS.register(
    "cifar", help="reference CIFAR-10/CelebA: jitter (0.8,0.8,0.8,0.2) p=0.8, crop 0.6-1, vertical flip"
)
def cifar(
    image_shape: tuple[int, int, int],
    *,
    jitter: tuple[float, float, float, float] = (0.8, 0.8, 0.8, 0.2),
    jitter_p: float = 0.8,
    crop_scale_min: float = 0.6,
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
    vertical_flip: float = 0.5,
) -> ViewAugmenter:
    """Augmentation for CIFAR-10 and CelebA after the reference setup (PAPER.md section 5).

    ColorJitter(brightness, contrast, saturation, hue = ``jitter``) applied with
    probability ``jitter_p``, then RandomResizedCrop (area ``crop_scale_min``-1,
    aspect ratio ``crop_ratio``) and a vertical flip with probability
    ``vertical_flip`` (vertical, as the reference code has it). The defaults
    (``jitter_p=0.8`` as SimCLR, torchvision's ratio 3/4-4/3) are pssl's; the
    authors' code jitters every view (``jitter_p=1``) and crops with ratio
    0.75-1.3, which the ``paper-cifar10``/``paper-celeba`` recipes set.
    """
    return ViewAugmenter(
        Compose(
            [
                ColorJitter(*jitter, p=jitter_p),
                RandomResizedCrop(scale=(crop_scale_min, 1.0), ratio=crop_ratio),
                RandomVerticalFlip(vertical_flip),
            ]
        )
    )


@AUGMENTATIONS.register(
    "simclr", help="SimCLR: crop 0.08-1, horizontal flip, jitter (0.4,0.4,0.4,0.1) p=0.8, grey p=0.2"
)
def simclr(
    image_shape: tuple[int, int, int],
    *,
    crop_scale_min: float = 0.08,
    horizontal_flip: float = 0.5,
    jitter_strength: float = 0.5,
    jitter_p: float = 0.8,
    grayscale_p: float = 0.2,
    blur_p: float = 0.0,
) -> ViewAugmenter:
    """SimCLR's augmentation (Chen et al. 2020), CIFAR variant by default.

    RandomResizedCrop (area ``crop_scale_min``-1), horizontal flip, colour jitter of
    strength ``s = jitter_strength`` (brightness = contrast = saturation = 0.8 s,
    hue = 0.2 s) with probability ``jitter_p``, grey with probability
    ``grayscale_p``, and (ImageNet variant, ``blur_p=0.5``) a Gaussian blur with
    kernel about a tenth of the image side and sigma 0.1-2.
    """
    _, height, width = image_shape
    transforms: list[Augmentation] = [
        RandomResizedCrop(scale=(crop_scale_min, 1.0)),
        RandomHorizontalFlip(horizontal_flip),
        _simclr_jitter(jitter_strength, jitter_p),
        RandomGrayscale(grayscale_p),
    ]
    if blur_p > 0:
        kernel = max(3, (min(height, width) // 10) | 1)  # odd, about 10% of the side
        transforms.append(GaussianBlur(kernel, sigma=(0.1, 2.0), p=blur_p))
    return ViewAugmenter(Compose(transforms))


@AUGMENTATIONS.register("styled", help="styled data: crop 0.6-1 (position/scale) + colour jitter (colour)")
def styled(
    image_shape: tuple[int, int, int],
    *,
    crop_scale_min: float = 0.6,
    jitter_strength: float = 0.5,
    jitter_p: float = 0.8,
) -> ViewAugmenter:
    """For procedurally styled data sets whose style factors are colour, position and scale.

    RandomResizedCrop (area ``crop_scale_min``-1, ratio 3/4-4/3) changes position and
    scale; SimCLR-style colour jitter of strength ``jitter_strength`` (with
    probability ``jitter_p``) changes colours. No flips: orientation may be content.
    """
    return ViewAugmenter(
        Compose(
            [
                RandomResizedCrop(scale=(crop_scale_min, 1.0)),
                _simclr_jitter(jitter_strength, jitter_p),
            ]
        )
    )


@AUGMENTATIONS.register(
    "restyle",
    help="styled data: each view re-renders the item's glyph with new position, scale and colours",
)
def restyle(
    image_shape: tuple[int, int, int],
    data: DataSplits | None,
    *,
    factors: tuple[str, ...] = RESTYLE_FACTORS,
) -> ViewAugmenter:
    """The training views of the styled data sets: style re-drawn, content kept (:class:`Restyle`).

    Every view renders the item's base glyph with ``factors`` drawn afresh from
    the data set's own style distribution (default: all five recorded factors), so
    augmentations vary exactly the factors the style probes read.

    Raises:
        ValueError: when ``data`` is given and is not a styled data set.
    """
    source = None
    if data is not None:
        source = getattr(data, "style_source", None)
        if source is None:
            raise ValueError(
                f"augment=restyle re-renders items of a styled data set (styled-digits, styled-mnist, "
                f"styled-fashionmnist); data set {data.name!r} records no glyphs and styles to re-render"
            )
        if tuple(image_shape) != (3, source.canvas, source.canvas):
            raise ValueError(
                f"augment=restyle: image_shape {tuple(image_shape)} is not the styled data set's "
                f"(3, {source.canvas}, {source.canvas})"
            )
    return ViewAugmenter(Restyle(source, factors))


def build_augmenter(
    preset: str,
    image_shape: Sequence[int],
    options: dict[str, object] | None = None,
    *,
    data: DataSplits | None = None,
) -> ViewAugmenter:
    """Build the registered ``preset`` for images of ``image_shape`` ``(C, H, W)``.

    Args:
        preset: A name in :data:`AUGMENTATIONS`.
        image_shape: ``(C, H, W)`` of the images to augment.
        options: The preset's options (strings are read as the annotated types).
        data: The run's data. Presets whose factory takes a ``data`` argument (``restyle``,
            which re-renders a styled data set's items) are built from it; the others
            ignore it.

    Raises:
        ValueError: for an unknown preset or option (naming the accepted ones), or a
            malformed ``image_shape``.
        TypeError: for an option value that cannot be read as its annotated type.
    """
    shape = tuple(image_shape)
    if len(shape) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape):
        raise ValueError(f"image_shape must be three positive ints (C, H, W), got {image_shape!r}")
    framework: dict[str, object] = {"image_shape": shape}
    if "data" in inspect.signature(AUGMENTATIONS.entry(preset).factory).parameters:
        framework["data"] = data
    return AUGMENTATIONS.build(preset, options, **framework)
