"""scikit-learn's embedded 8x8 handwritten digits (no files or network needed)."""

from __future__ import annotations

import torch

from pssl.datasets.core import (
    DataSplits,
    TensorData,
    carve,
    check_split_options,
    make_splits,
    seeded_generator,
)
from pssl.datasets.descriptor import DatasetDefaults, register_dataset


def digits_tensors() -> TensorData:
    """All 1,797 digits as ``uint8`` images ``(1797, 1, 8, 8)``.

    The stored intensities ``v`` in ``0..16`` become ``round(255 v / 16)``.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    values = torch.as_tensor(bunch.images, dtype=torch.float64)
    images = (values * (255.0 / 16.0)).round().clamp(0, 255).to(torch.uint8).unsqueeze(1)
    return TensorData(images, torch.as_tensor(bunch.target, dtype=torch.int64), num_classes=10)


@register_dataset(
    "digits",
    help="scikit-learn 8x8 digits, 1x8x8 grey, 10 classes (embedded, 1797 items)",
    # grey 8x8 images: the MNIST networks and likelihood, a milder crop for 8 pixels
    defaults=DatasetDefaults(augment="digits", likelihood="bernoulli", encoder="mlp", decoder="mlp"),
)
def digits(
    seed: int,
    *,
    root: str | None = None,
    val_fraction: float = 0.1,
    limit: int | None = None,
    test_fraction: float = 0.2,
    data_seed: int = 0,
) -> DataSplits:
    """The scikit-learn digits, with a carved test split.

    The data has no official test split: a ``test_fraction`` of the items,
    chosen by ``data_seed`` (not by ``seed``, so every run is tested on the
    same items), is held out; validation is then carved from the rest by ``seed``.

    Args:
        seed: Selects the validation split (framework-supplied).
        root: Unused (the data ships with scikit-learn); accepted for uniformity.
        val_fraction: Fraction of the training items held out for validation.
        limit: Use only the first ``limit`` training and test items.
        test_fraction: Fraction of all items held out for testing.
        data_seed: Selects the test split.
    """
    del root
    check_split_options(val_fraction=val_fraction, limit=limit, test_fraction=test_fraction)
    full = digits_tensors()
    train, test = carve(len(full), test_fraction, seeded_generator(data_seed, "digits", "test"))
    return make_splits(
        "digits", full.subset(train), full.subset(test), seed=seed, val_fraction=val_fraction, limit=limit
    )
