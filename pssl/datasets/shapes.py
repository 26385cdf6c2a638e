"""Procedurally drawn coloured shapes (dSprites-like) with known generative factors.

Each item is one filled shape on a black ``size`` x ``size`` RGB canvas. The
content label is the shape (:data:`SHAPES`); the style factors are ``scale``,
``orientation``, ``pos_x``, ``pos_y`` (continuous) and ``color`` (discrete,
an index into :data:`SHAPE_COLORS`). A shape with scale ``s`` fits in a circle
of radius ``R = s * size / 3`` pixels centred at ``(pos_x, pos_y) * size``; in
the shape's own frame, ``q = Rot(-orientation) (p - c) / R``, pixel ``p`` is
filled when:

- square: ``max(|q_x|, |q_y|) <= 1/sqrt(2)`` (corners on the unit circle);
- circle: ``|q| <= 0.8`` (about the square's area);
- triangle: equilateral, corners on the unit circle, one pointing up at orientation 0;
- cross: a plus of two ``1.9 x 0.6`` bars.

Shapes are symmetric (the square under quarter turns, the triangle under
thirds, the circle under all), so orientation is only identifiable modulo
that symmetry. All shapes have their centroid at ``c``.
"""

from __future__ import annotations

import math

import torch

from pssl.datasets.core import (
    PALETTE,
    DataSplits,
    TensorData,
    carve,
    check_split_options,
    seeded_generator,
    split_indices,
)
from pssl.datasets.descriptor import DatasetDefaults, register_dataset

SHAPES = ("square", "circle", "triangle", "cross")
"""Content classes, in label order."""
SHAPE_COLORS = PALETTE[1:]
"""Colours a shape may take (every palette colour but the black background)."""
SHAPE_FACTORS = {
    "scale": "continuous",
    "orientation": "continuous",
    "pos_x": "continuous",
    "pos_y": "continuous",
    "color": "discrete",
}
"""Recorded style factors and their kinds."""
RADIUS_FRACTION = 1.0 / 3.0
"""Bounding radius of a scale-1 shape as a fraction of the canvas side."""


def sample_shape_params(
    num_items: int, *, size: int, min_scale: float, max_scale: float, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Draw shape, scale, orientation, position and colour for ``num_items`` items.

    ``scale ~ U[min_scale, max_scale]``, ``orientation ~ U[0, 2 pi)`` radians,
    the centre uniform over positions that keep the bounding circle inside the
    canvas (``c ~ U[R, size - R]``, recorded as ``pos = c / size``), shape and
    colour uniform.

    Returns:
        Dict of ``(num_items,)`` tensors: ``shape`` and ``color`` (``int64``),
        ``scale``, ``orientation``, ``pos_x``, ``pos_y`` (``float32``).

    Raises:
        ValueError: for a scale range outside ``(0, 1.5]`` (larger shapes leave the canvas).
    """
    if not 0.0 < min_scale <= max_scale <= 0.5 / RADIUS_FRACTION:
        raise ValueError(
            f"need 0 < min_scale <= max_scale <= {0.5 / RADIUS_FRACTION:g}, "
            f"got min_scale={min_scale}, max_scale={max_scale}"
        )
    shape = torch.randint(len(SHAPES), (num_items,), generator=generator)
    scale = min_scale + (max_scale - min_scale) * torch.rand(num_items, generator=generator)
    orientation = 2 * math.pi * torch.rand(num_items, generator=generator)
    radius = scale * size * RADIUS_FRACTION
    centre = radius + torch.rand(2, num_items, generator=generator) * (size - 2 * radius)
    color = torch.randint(len(SHAPE_COLORS), (num_items,), generator=generator)
    return {
        "shape": shape,
        "scale": scale,
        "orientation": orientation,
        "pos_x": centre[0] / size,
        "pos_y": centre[1] / size,
        "color": color,
    }


def _square(qx: torch.Tensor, qy: torch.Tensor) -> torch.Tensor:
    return torch.maximum(qx.abs(), qy.abs()) <= 1 / math.sqrt(2)


def _circle(qx: torch.Tensor, qy: torch.Tensor) -> torch.Tensor:
    return qx.square() + qy.square() <= 0.8**2


def _triangle(qx: torch.Tensor, qy: torch.Tensor) -> torch.Tensor:
    # Inside all three edges: outward normals point away from the corners at
    # -90, 30 and 150 degrees (y down), and the inradius is half the circumradius.
    inside = torch.ones_like(qx, dtype=torch.bool)
    for degrees in (90.0, 210.0, 330.0):
        angle = math.radians(degrees)
        inside &= qx * math.cos(angle) + qy * math.sin(angle) <= 0.5
    return inside


def _cross(qx: torch.Tensor, qy: torch.Tensor) -> torch.Tensor:
    ax, ay = qx.abs(), qy.abs()
    return ((ax <= 0.95) & (ay <= 0.3)) | ((ax <= 0.3) & (ay <= 0.95))


_MEMBERSHIP = (_square, _circle, _triangle, _cross)  # in SHAPES order


def shape_masks(params: dict[str, torch.Tensor], *, size: int) -> torch.Tensor:
    """Boolean coverage of each item's shape: ``(N, size, size)``, pixel centres sampled."""
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    radius = (params["scale"] * size * RADIUS_FRACTION)[:, None, None]
    dx = (coords[None, None, :] - (params["pos_x"] * size)[:, None, None]) / radius
    dy = (coords[None, :, None] - (params["pos_y"] * size)[:, None, None]) / radius
    cos = torch.cos(params["orientation"])[:, None, None]
    sin = torch.sin(params["orientation"])[:, None, None]
    qx, qy = cos * dx + sin * dy, -sin * dx + cos * dy
    masks = torch.zeros(qx.shape, dtype=torch.bool)
    for label, inside in enumerate(_MEMBERSHIP):
        items = (params["shape"] == label).nonzero().squeeze(1)
        if len(items):
            masks[items] = inside(qx[items], qy[items])
    return masks


def draw_shapes(params: dict[str, torch.Tensor], *, size: int, chunk: int = 2048) -> torch.Tensor:
    """Rasterise shapes: ``uint8`` ``(N, 3, size, size)``, colour on black, in chunks of ``chunk`` items."""
    colors = torch.tensor([rgb for _, rgb in SHAPE_COLORS], dtype=torch.uint8)
    num_items = len(params["shape"])
    out = torch.empty(num_items, 3, size, size, dtype=torch.uint8)
    for start in range(0, num_items, chunk):
        part = {k: v[start : start + chunk] for k, v in params.items()}
        mask = shape_masks(part, size=size)
        out[start : start + chunk] = mask[:, None].to(torch.uint8) * colors[part["color"]][:, :, None, None]
    return out


def shapes_data(params: dict[str, torch.Tensor], *, size: int) -> TensorData:
    """Draw ``params`` into a :class:`TensorData` (label = shape, factors = the rest)."""
    factors = {k: params[k] for k in SHAPE_FACTORS}
    return TensorData(
        draw_shapes(params, size=size), params["shape"], factors, dict(SHAPE_FACTORS), len(SHAPES)
    )


@register_dataset(
    "shapes",
    help="procedural coloured shapes (4 classes) with scale/orientation/position/colour",
    # size is an option: networks and likelihood follow the image shape
    defaults=DatasetDefaults(augment="styled"),
)
def shapes(
    seed: int,
    *,
    root: str | None = None,
    val_fraction: float = 0.1,
    limit: int | None = None,
    size: int = 32,
    num_items: int = 20000,
    test_fraction: float = 0.2,
    min_scale: float = 0.5,
    max_scale: float = 1.0,
    data_seed: int = 0,
) -> DataSplits:
    """dSprites-like shapes (see :mod:`pssl.datasets.shapes`).

    ``num_items`` items are drawn from ``data_seed``; a ``test_fraction`` of them
    (also chosen by ``data_seed``) is the test split, and validation is carved
    from the rest by ``seed``. Only the items kept after ``limit`` are rasterised.

    Args:
        seed: Selects the validation split (framework-supplied).
        root: Unused (generated in memory); accepted for uniformity.
        val_fraction: Fraction of the training items held out for validation.
        limit: Use only the first ``limit`` training and test items.
        size: Side of the square RGB images.
        num_items: Items in the whole data set, before the test split.
        test_fraction: Fraction of items held out for testing.
        min_scale, max_scale: Range of the shape scale (1 fills two thirds of the canvas).
        data_seed: Selects the items and the test split.
    """
    del root
    check_split_options(val_fraction=val_fraction, limit=limit, test_fraction=test_fraction)
    if size < 4:
        raise ValueError(f"size must be at least 4 pixels, got {size}")
    if num_items < 2:
        raise ValueError(f"num_items must be at least 2 (train and test), got {num_items}")
    params = sample_shape_params(
        num_items,
        size=size,
        min_scale=min_scale,
        max_scale=max_scale,
        generator=seeded_generator(data_seed, "shapes"),
    )
    pool, test_pool = carve(num_items, test_fraction, seeded_generator(data_seed, "shapes", "test"))
    train, val, test = split_indices(
        len(pool), len(test_pool), name="shapes", seed=seed, val_fraction=val_fraction, limit=limit
    )

    def split(items: torch.Tensor) -> TensorData:
        return shapes_data({k: v[items] for k, v in params.items()}, size=size)

    return DataSplits(
        train=split(pool[train]), val=split(pool[val]), test=split(test_pool[test]), name="shapes"
    )
