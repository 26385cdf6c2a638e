"""Data sets: the public entry point (the implementation lives in :mod:`pssl.datasets`).

Example:
    >>> from pssl.data import load_dataset
    >>> splits = load_dataset("digits", {"limit": 200}, seed=0)
    >>> x = splits.train.float_images()        # (N, 1, 8, 8) float32 in [0, 1]
"""

from __future__ import annotations

from pssl.datasets import (
    DATASETS,
    PALETTE,
    DataNotFoundError,
    DataSplits,
    TensorData,
    dataset_defaults,
    dataset_names,
    load_dataset,
    read_idx,
    seeded_generator,
    split_modalities,
    validate_images,
    write_idx,
)

__all__ = [
    "DATASETS",
    "PALETTE",
    "DataNotFoundError",
    "DataSplits",
    "TensorData",
    "dataset_defaults",
    "dataset_names",
    "load_dataset",
    "read_idx",
    "seeded_generator",
    "split_modalities",
    "validate_images",
    "write_idx",
]
