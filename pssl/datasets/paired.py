"""Two-modality paired data for CLIP-style methods: top and bottom halves of one image.

``paired-<base>`` loads ``<base>`` unchanged and marks the splits ``paired``:
each stored image holds both modalities, the top half (rows ``0 .. H//2 - 1``)
and the bottom half (rows ``H//2 .. H - 1``), which :func:`split_modalities`
separates after augmentation. Keeping whole images in storage lets the
augmentation pipeline and plots treat paired data like any other.
"""

from __future__ import annotations

import dataclasses

import torch

from pssl.datasets import digits, mnist  # noqa: F401  (registers the base data sets)
from pssl.datasets.core import DATASETS, DataSplits, derived_factory
from pssl.datasets.descriptor import dataset_defaults, register_dataset


def split_modalities(views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split images into their two modalities along the height axis.

    Args:
        views: Any tensor of shape ``(..., C, H, W)``, e.g. a view tensor
            ``(batch, views, C, H, W)`` or stored images ``(N, C, H, W)``.

    Returns:
        ``(top, bottom)``: ``(..., C, H // 2, W)`` and ``(..., C, H - H // 2, W)``
        (equal shapes when ``H`` is even, as for every registered paired set).

    Raises:
        TypeError: if ``views`` is not a tensor.
        ValueError: for fewer than 3 dimensions or a height below 2.
    """
    if not isinstance(views, torch.Tensor):
        raise TypeError(f"views must be a torch.Tensor, got {type(views).__name__}")
    if views.ndim < 3:
        raise ValueError(f"views must have shape (..., C, H, W), got {tuple(views.shape)}")
    height = views.shape[-2]
    if height < 2:
        raise ValueError(f"views must be at least 2 pixels high to split, got height {height}")
    return views[..., : height // 2, :], views[..., height // 2 :, :]


def _register_paired(base_name: str) -> None:
    name = f"paired-{base_name}"

    def build(seed: int, base_options: dict, own: dict) -> DataSplits:
        del own
        splits = DATASETS.entry(base_name).factory(seed, **base_options)
        return dataclasses.replace(splits, name=name, paired=True)

    doc = f"""{base_name} as paired two-modality data (top half, bottom half); options as ``{base_name}``.

    See :func:`split_modalities`.
    """
    factory = derived_factory(DATASETS.entry(base_name).factory, [], build, name=name, doc=doc)
    # The base's networks and likelihood; no flips, which would swap the two halves (modalities).
    defaults = dataclasses.replace(dataset_defaults(base_name), augment="paired")
    register_dataset(
        name, help=f"{base_name} as two paired modalities: top and bottom image halves", defaults=defaults
    )(factory)


for _base in ("digits", "mnist", "fashionmnist"):
    _register_paired(_base)
