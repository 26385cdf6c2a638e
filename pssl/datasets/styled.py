"""Grey digit or clothing images restyled on an RGB canvas, with the style recorded.

Each base image (``(1, H, W)``, bright object on black) becomes the alpha mask
of a glyph of side ``L = scale * H`` pixels placed with its box centre at
``(pos_x, pos_y) * canvas`` on a ``canvas`` x ``canvas`` RGB image:

.. math::
    x_{rgb}(p) = bg + \\alpha(p) (fg - bg), \\qquad
    \\alpha(p) = \\mathrm{resample}(base / 255)\\big(H (p - c + L/2) / L\\big)

with ``fg`` and ``bg`` two different colours of :data:`pssl.datasets.core.PALETTE`.
By default (``contrast=True``) the glyph is lighter than its background: ``fg``
is one of the light colours (:data:`FOREGROUND_COLORS`: white, yellow, cyan,
green) and ``bg`` one of the dark ones (:data:`BACKGROUND_COLORS`: black, blue,
red, magenta), so the digit keeps one sign of contrast while both colours vary;
with every colour pair allowed, half the items are drawn in negative and the
class is not learnable from ~1,000 items (measured: a linear probe on the pixels
of ``styled-digits`` read 0.13 with any pair at 0.6-1x scale).

The content label is the base class; ``pos_x``, ``pos_y``, ``scale``
(continuous) and ``fg_color``, ``bg_color`` (discrete palette indices) are the
style factors, drawn first (:func:`sample_style_params`) and then rendered in
batches (:func:`render_styled`), so tests and style probes read the truth.

Training views vary exactly these factors (the premise of the paper's style
claim: augmentations change style and keep content). The data sets hand their
:class:`StyleSource` (every item's base glyph and recorded style) to their default
augmentation, ``restyle`` (:class:`pssl.augment.Restyle`), which draws a fresh
style for every view from the data set's own distribution and re-renders the
item's glyph with it; the drawn styles are returned as the views' parameters.
The stored images keep the style recorded with them, so evaluation reads what
it always read.

Measured (seed 0, one run each, shared 2-core machine): SimCLR on ``styled-digits``
with the demo's settings (MLP 512-256, 20 epochs) reads content at linear 0.58
(0.20-0.28 with the earlier crop-and-jitter views; random encoder 0.19, pixels
0.80), VicREG at 0.81. On ``styled-mnist`` (``limit=10000``, latent 10, batch 64,
Adam 1e-3) the encoder decides: a ResNet with global average pooling
(``encoder=resnet encoder.channels=16,32,64 encoder.blocks_per_stage=1``) reaches
linear 0.79 after 6 epochs and 0.83 after 10 (loss still falling), against 0.19
for the same encoder untrained; position is discarded (R^2 0.02) and colours near
chance, while the flattening ``conv`` encoder stays at 0.32-0.52 after 15-25 epochs.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import torch

from pssl.datasets import digits, mnist  # noqa: F401  (registers the base data sets)
from pssl.datasets.core import (
    DATASETS,
    PALETTE,
    DataSplits,
    TensorData,
    check_split_options,
    derived_factory,
    make_splits,
    seeded_generator,
)
from pssl.datasets.descriptor import DatasetDefaults, register_dataset

STYLE_FACTORS = {
    "pos_x": "continuous",
    "pos_y": "continuous",
    "scale": "continuous",
    "fg_color": "discrete",
    "bg_color": "discrete",
}
"""Factors recorded by the styled data sets and their kinds."""

DEFAULT_CANVAS = {"digits": 16, "mnist": 40, "fashionmnist": 40}
"""Canvas side per base: 2x the 8-pixel digits, about 1.5x the 28-pixel MNIST images."""

DEFAULT_SCALE = {"digits": (1.5, 1.8), "mnist": (0.6, 1.0), "fashionmnist": (0.6, 1.0)}
"""Glyph side range per base, as a fraction of the base image side.

The 8-pixel digits are drawn 12 to 14.4 pixels wide on the 16-pixel canvas, so the
position moves the glyph by up to 4 pixels: a linear probe on the pixels then reads
the class at 0.78 (0.13 with the earlier 0.6-1x scale, which moved a 5-8 pixel glyph
by up to 11 pixels), while position, scale and colours still vary.
"""

FOREGROUND_COLORS = ("white", "yellow", "cyan", "green")
"""Glyph colours under ``contrast=True`` (the lighter half of the palette)."""
BACKGROUND_COLORS = ("black", "blue", "red", "magenta")
"""Background colours under ``contrast=True`` (the darker half of the palette)."""


def _palette_indices(names: tuple[str, ...]) -> torch.Tensor:
    index = {name: i for i, (name, _) in enumerate(PALETTE)}
    return torch.tensor([index[name] for name in names], dtype=torch.int64)


def palette_tensor() -> torch.Tensor:
    """The palette's colours as a ``uint8`` tensor ``(K, 3)``."""
    return torch.tensor([rgb for _, rgb in PALETTE], dtype=torch.uint8)


def sample_style_params(
    num_items: int,
    *,
    base_size: int,
    canvas: int,
    min_scale: float,
    max_scale: float,
    generator: torch.Generator,
    num_colors: int = len(PALETTE),
    contrast: bool = False,
    device: torch.device | str | None = None,
) -> dict[str, torch.Tensor]:
    """Draw the style of ``num_items`` items.

    ``scale ~ U[min_scale, max_scale]``; with glyph side ``L = scale * base_size``
    the box centre is uniform over the positions that keep the glyph inside the
    canvas, ``c ~ U[L/2, canvas - L/2]``, recorded as ``pos = c / canvas`` in
    ``[0, 1]`` (x to the right, y downwards); ``fg_color`` is uniform over the
    palette and ``bg_color`` uniform over the other colours (under ``contrast``:
    ``fg_color`` uniform over :data:`FOREGROUND_COLORS`, ``bg_color`` over
    :data:`BACKGROUND_COLORS`). The draws happen on ``generator``'s device.

    Returns:
        Dict of ``(num_items,)`` tensors: ``pos_x``, ``pos_y``, ``scale``
        (``float32``), ``fg_color``, ``bg_color`` (``int64``), on ``device``
        (default: the generator's).

    Raises:
        ValueError: for a scale range outside ``(0, canvas / base_size]`` or fewer than 2 colours.
    """
    if not 0.0 < min_scale <= max_scale:
        raise ValueError(f"need 0 < min_scale <= max_scale, got min_scale={min_scale}, max_scale={max_scale}")
    if max_scale * base_size > canvas:
        raise ValueError(
            f"canvas={canvas} is smaller than the largest glyph "
            f"(max_scale {max_scale} x {base_size} pixels); "
            f"use canvas >= {math.ceil(max_scale * base_size)} or a smaller max_scale"
        )
    if num_colors < 2:
        raise ValueError(f"need at least 2 colours for distinct foreground and background, got {num_colors}")
    at = generator.device  # draws happen where the generator lives (a CUDA one for views on a GPU)
    scale = min_scale + (max_scale - min_scale) * torch.rand(num_items, generator=generator, device=at)
    glyph = scale * base_size
    centre = glyph / 2 + torch.rand(2, num_items, generator=generator, device=at) * (canvas - glyph)
    if contrast:
        light = _palette_indices(FOREGROUND_COLORS).to(at)
        dark = _palette_indices(BACKGROUND_COLORS).to(at)
        fg = light[torch.randint(len(light), (num_items,), generator=generator, device=at)]
        bg = dark[torch.randint(len(dark), (num_items,), generator=generator, device=at)]
    else:
        fg = torch.randint(num_colors, (num_items,), generator=generator, device=at)
        bg = (fg + torch.randint(1, num_colors, (num_items,), generator=generator, device=at)) % num_colors
    params = {
        "pos_x": (centre[0] / canvas).float(),
        "pos_y": (centre[1] / canvas).float(),
        "scale": scale.float(),
        "fg_color": fg,
        "bg_color": bg,
    }
    return params if device is None else {k: v.to(device) for k, v in params.items()}


def interpolation_weights(
    start: torch.Tensor, glyph: torch.Tensor, base_size: int, canvas: int
) -> torch.Tensor:
    """Antialiased bilinear resampling weights along one axis, for a glyph placed at ``start``.

    Canvas pixel ``j`` (centre ``j + 1/2``) reads base coordinate
    ``u_j = (j + 1/2 - start) f - 1/2`` in index units, ``f = base_size / glyph``.
    Its weight on base pixel ``i`` is the tent
    ``t(u_j - i) = max(0, 1 - |u_j - i| / w)`` of half-width ``w = max(1, f)``
    (plain bilinear when enlarging, widened when shrinking so that no base
    pixel is skipped), divided by the tent's sum over all integers so each
    canvas pixel averages its base pixels. Base pixels outside
    ``0..base_size-1`` count as zero (transparent).

    Args:
        start: Left (or top) edge of each glyph box in canvas pixels, ``(B,)``.
        glyph: Side of each glyph box in canvas pixels, ``(B,)``.

    Returns:
        ``(B, canvas, base_size)`` weights.
    """
    factor = base_size / glyph.float()
    width = factor.clamp(min=1.0)[:, None, None]
    # Pad the index range so that every tent touching a real base pixel lies fully
    # inside it (|u - i| < w and u > -w imply i > -2w); the normalising sum is then exact.
    reach = math.ceil(2 * float(width.max())) + 1
    centres = torch.arange(canvas, dtype=torch.float32, device=start.device) + 0.5
    source = (centres[None, :] - start[:, None].float()) * factor[:, None] - 0.5
    index = torch.arange(-reach, base_size + reach, dtype=torch.float32, device=start.device)
    tent = (source[:, :, None] - index).abs_().div_(width).neg_().add_(1.0).clamp_(min=0.0)
    tent /= tent.sum(dim=2, keepdim=True).clamp_(min=1e-12)  # rows far outside the glyph are all zero
    return tent[:, :, reach : reach + base_size].contiguous()


def render_levels(base: torch.Tensor, params: dict[str, torch.Tensor], *, canvas: int) -> torch.Tensor:
    """Styled images of grey base images as float colour levels, on the base images' device.

    Placement is an axis-aligned scale and shift, so bilinear resampling is
    separable: ``alpha = W_y (base / 255) W_x^T`` with the per-item weight
    matrices of :func:`interpolation_weights`, two batched matrix products; the
    pixel is ``round(bg + alpha (fg - bg))``. :func:`render_styled` stores these
    levels as ``uint8``; the ``restyle`` augmentation divides them by 255, so a
    view drawn with an item's recorded style equals its stored image exactly.

    Args:
        base: ``(n, 1, H, H)`` grey levels in ``0..255`` (``uint8`` or float); brightness is
            the glyph's alpha.
        params: As returned by :func:`sample_style_params`, each ``(n,)``.
        canvas: Side of the output.

    Returns:
        ``float32`` ``(n, 3, canvas, canvas)`` integer levels in ``0..255``.
    """
    if base.ndim != 4 or base.shape[1] != 1 or base.shape[2] != base.shape[3]:
        raise ValueError(f"styled data needs square grey base images (N, 1, H, H), got {tuple(base.shape)}")
    size = base.shape[-1]
    device = base.device
    colors = palette_tensor().float().to(device)
    glyph = params["scale"].to(device).double() * size
    left = params["pos_x"].to(device).double() * canvas - glyph / 2
    top = params["pos_y"].to(device).double() * canvas - glyph / 2
    rows = interpolation_weights(top, glyph, size, canvas)
    cols = interpolation_weights(left, glyph, size, canvas)
    alpha = rows @ (base[:, 0].float() / 255.0) @ cols.transpose(1, 2)
    fg = colors[params["fg_color"].to(device)][:, :, None, None]
    bg = colors[params["bg_color"].to(device)][:, :, None, None]
    alpha = alpha.clamp_(0.0, 1.0)  # normalised weights may overshoot 1 by rounding error
    return torch.addcmul(bg, alpha[:, None], fg - bg).round_()


def render_styled(
    base: torch.Tensor, params: dict[str, torch.Tensor], *, canvas: int, chunk: int = 4096
) -> torch.Tensor:
    """Render grey base images with the given style parameters (:func:`render_levels`, in chunks).

    Args:
        base: ``uint8`` ``(N, 1, H, W)`` with ``H == W``; brightness is the glyph's alpha.
        params: As returned by :func:`sample_style_params`.
        canvas: Side of the output.
        chunk: Items rendered per batch (bounds memory).

    Returns:
        ``uint8`` ``(N, 3, canvas, canvas)``.
    """
    if base.ndim != 4 or base.shape[1] != 1 or base.shape[2] != base.shape[3]:
        raise ValueError(f"styled data needs square grey base images (N, 1, H, H), got {tuple(base.shape)}")
    out = torch.empty(base.shape[0], 3, canvas, canvas, dtype=torch.uint8)
    for first in range(0, base.shape[0], chunk):
        part = slice(first, first + chunk)
        levels = render_levels(base[part], {k: v[part] for k, v in params.items()}, canvas=canvas)
        out[part] = levels.to(torch.uint8)
    return out


class StyleSource:
    """What re-renders the items of a styled data set: their base glyphs and recorded styles.

    The training augmentation of the styled data sets (the ``restyle`` preset of
    :mod:`pssl.augment`) draws a fresh style ``s' ~ p(s)`` for every view and
    renders the item's base glyph ``g`` with it, ``x' = render(g, s')``, so the views
    of one item share their content exactly and differ in exactly the recorded style
    factors. Views are made from images (``augmenter(images, J, generator)``), so the
    source finds each image's item from its pixels: a fingerprint
    ``k(x) = sum_p w_p round(255 x_p)`` with fixed random integer weights
    ``w_p < 2^53 / (255 D)`` (``D`` values per image, so the float64 sum is exact in any
    order, on any device) picks the candidate, and the stored ``uint8`` image confirms it.
    Every item of the training pool and of the test split is held, so views of
    training, validation and test images can all be drawn.

    Args:
        glyphs: ``uint8`` base images ``(M, 1, H, H)``.
        styles: Recorded style of each, the :data:`STYLE_FACTORS` as ``(M,)`` tensors.
        images: The stored renderings ``render_styled(glyphs, styles)``, ``uint8`` ``(M, 3, C, C)``.
        min_scale, max_scale, contrast: The style distribution (:func:`sample_style_params`).
    """

    factors = tuple(STYLE_FACTORS)

    def __init__(
        self,
        glyphs: torch.Tensor,
        styles: dict[str, torch.Tensor],
        images: torch.Tensor,
        *,
        min_scale: float,
        max_scale: float,
        contrast: bool,
    ) -> None:
        if sorted(styles) != sorted(STYLE_FACTORS):
            raise ValueError(f"styles must hold exactly {sorted(STYLE_FACTORS)}, got {sorted(styles)}")
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[0] != glyphs.shape[0]:
            raise ValueError(
                f"images must be uint8 (M, 3, C, C) with M={glyphs.shape[0]}, got {images.dtype} "
                f"{tuple(images.shape)}"
            )
        self.glyphs = glyphs
        self.styles = dict(styles)
        self.images = images
        self.canvas = int(images.shape[-1])
        self.base_size = int(glyphs.shape[-1])
        self.min_scale, self.max_scale, self.contrast = float(min_scale), float(max_scale), bool(contrast)
        values = images[0].numel()
        weight_bound = 2**53 // (255 * values)
        self._weights = torch.randint(weight_bound, (values,), generator=torch.Generator().manual_seed(0))
        keys = torch.cat([self._keys(images[i : i + 4096]) for i in range(0, len(images), 4096)])
        self._sorted_keys, self._order = torch.sort(keys, stable=True)

    def __len__(self) -> int:
        return int(self.glyphs.shape[0])

    def __repr__(self) -> str:
        return (
            f"StyleSource({len(self)} items, canvas={self.canvas}, scale=({self.min_scale}, "
            f"{self.max_scale}), contrast={self.contrast})"
        )

    def _keys(self, levels: torch.Tensor) -> torch.Tensor:
        """Fingerprints ``(n,)`` float64 of images given as integer levels ``0..255`` ``(n, 3, C, C)``."""
        weights = self._weights.to(device=levels.device, dtype=torch.float64)
        return levels.reshape(levels.shape[0], -1).to(torch.float64) @ weights

    def sample(
        self, num_views: int, generator: torch.Generator, device: torch.device | str | None = None
    ) -> dict[str, torch.Tensor]:
        """Draw ``num_views`` styles from the data set's own distribution (:func:`sample_style_params`)."""
        return sample_style_params(
            num_views,
            base_size=self.base_size,
            canvas=self.canvas,
            min_scale=self.min_scale,
            max_scale=self.max_scale,
            generator=generator,
            contrast=self.contrast,
            device=device,
        )

    def find(self, images: torch.Tensor) -> torch.Tensor:
        """The item index ``(n,)`` (CPU ``int64``) of each of ``images`` ``(n, 3, C, C)`` in ``[0, 1]``.

        Raises:
            ValueError: for images of another shape, or images that are not (exactly) a
                stored image of this data set, e.g. already augmented ones.
        """
        expected = (3, self.canvas, self.canvas)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"restyle: images must be (n, {', '.join(map(str, expected))}) like the styled data set's, "
                f"got {tuple(images.shape)}"
            )
        levels = images.detach().mul(255.0).round_().clamp_(0, 255).to(torch.uint8).cpu()
        keys = self._keys(levels)
        slot = torch.searchsorted(self._sorted_keys, keys).clamp_(max=len(self) - 1)
        index = self._order[slot]
        found = (self.images[index] == levels).flatten(1).all(1)
        for row in (~found).nonzero().flatten().tolist():  # equal fingerprints of different items: rare
            at = int(slot[row]) + 1
            while at < len(self) and self._sorted_keys[at] == keys[row]:
                if torch.equal(self.images[self._order[at]], levels[row]):
                    index[row], found[row] = self._order[at], True
                    break
                at += 1
        if not bool(found.all()):
            missing = int((~found).sum())
            raise ValueError(
                f"restyle: {missing} of {len(images)} images are not images of the styled data set it was "
                "built for (it re-renders stored items from their base glyphs; images already augmented, "
                "binarised or from another data set cannot be restyled)"
            )
        return index

    def render(
        self, index: torch.Tensor, styles: dict[str, torch.Tensor], device: torch.device | str
    ) -> torch.Tensor:
        """Items ``index`` ``(n,)`` rendered with ``styles`` (``(n,)`` each), on ``device``.

        Factors missing from ``styles`` keep the item's recorded value.

        Returns:
            ``float32`` ``(n, 3, C, C)`` in ``[0, 1]``: the levels of :func:`render_levels` / 255.
        """
        index = index.cpu()
        full = {k: styles[k] if k in styles else self.styles[k][index] for k in STYLE_FACTORS}
        glyphs = self.glyphs[index].to(device)
        return render_levels(glyphs, full, canvas=self.canvas).div_(255.0)


def _styled_builder(name: str, base_name: str) -> Callable[[int, dict, dict], DataSplits]:
    base_factory = DATASETS.entry(base_name).factory

    def build(seed: int, base_options: dict, own: dict) -> DataSplits:
        val_fraction = base_options["val_fraction"]
        check_split_options(val_fraction=val_fraction, limit=base_options.get("limit"))
        # Style the whole training pool before carving validation, so an item's style
        # depends on data_seed only, not on which split the run's seed puts it in.
        base = base_factory(seed, **{**base_options, "val_fraction": 0.0})
        size = base.image_shape[-1]
        parts = {"train": base.train, "test": base.test}
        drawn = {
            split: sample_style_params(
                len(data),
                base_size=size,
                canvas=own["canvas"],
                min_scale=own["min_scale"],
                max_scale=own["max_scale"],
                generator=seeded_generator(own["data_seed"], "styled", split),
                contrast=own["contrast"],
            )
            for split, data in parts.items()
        }
        # One rendering of every item (training pool, then test) serves the splits and the
        # source that re-renders views; the splits hold slices of it, not copies.
        glyphs = torch.cat([data.images for data in parts.values()])
        styles = {k: torch.cat([drawn[split][k] for split in parts]) for k in STYLE_FACTORS}
        images = render_styled(glyphs, styles, canvas=own["canvas"])
        source = StyleSource(
            glyphs,
            styles,
            images,
            min_scale=own["min_scale"],
            max_scale=own["max_scale"],
            contrast=own["contrast"],
        )
        splits, first = {}, 0
        for split, data in parts.items():
            rows = slice(first, first + len(data))
            first += len(data)
            factors = {**data.factors, **{k: v[rows] for k, v in styles.items()}}
            kinds = {**data.factor_kinds, **STYLE_FACTORS}
            splits[split] = TensorData(images[rows], data.labels, factors, kinds, data.num_classes)
        made = make_splits(
            name, splits["train"], splits["test"], seed=seed, val_fraction=val_fraction, limit=None
        )
        made.style_source = source
        return made

    return build


def _register_styled(base_name: str) -> None:
    name = f"styled-{base_name}"
    keyword = inspect.Parameter.KEYWORD_ONLY
    own = [
        inspect.Parameter("canvas", keyword, default=DEFAULT_CANVAS[base_name], annotation=int),
        inspect.Parameter("min_scale", keyword, default=DEFAULT_SCALE[base_name][0], annotation=float),
        inspect.Parameter("max_scale", keyword, default=DEFAULT_SCALE[base_name][1], annotation=float),
        inspect.Parameter("contrast", keyword, default=True, annotation=bool),
        inspect.Parameter("data_seed", keyword, default=0, annotation=int),
    ]
    doc = f"""{base_name} glyphs restyled on an RGB canvas (see :mod:`pssl.datasets.styled`).

    Options are those of ``{base_name}`` plus:
        canvas: Side of the square RGB output.
        min_scale, max_scale: Range of the glyph side as a fraction of the base image side.
        contrast: Light glyphs on dark backgrounds (colour pairs from
            FOREGROUND_COLORS x BACKGROUND_COLORS); ``False`` allows any two
            different colours, which inverts the contrast of half the items.
        data_seed: Selects the styles (independent of the run ``seed``, which
            selects the validation split).

    Training views (the default ``restyle`` augmentation) vary exactly the recorded
    style factors: each view re-renders the item's base glyph with ``pos_x``,
    ``pos_y``, ``scale``, ``fg_color`` and ``bg_color`` drawn afresh from this data
    set's own style distribution, so an item's views share its glyph and label and
    nothing else. ``augment.factors=...`` varies a subset. Stored images (what the
    probes and the style probes read) keep their recorded style.
    """
    factory = derived_factory(
        DATASETS.entry(base_name).factory, own, _styled_builder(name, base_name), name=name, doc=doc
    )
    register_dataset(
        name,
        help=(
            f"{base_name} at random position/scale/colours on RGB (factors pos, scale, fg/bg colour); "
            "views re-drawn in all five"
        ),
        # canvas is an option: networks and likelihood follow the image shape
        defaults=DatasetDefaults(augment="restyle"),
    )(factory)


for _base in ("digits", "mnist", "fashionmnist"):
    _register_styled(_base)
