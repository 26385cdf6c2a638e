"""Data sets for ``pssl``: in-memory splits, file readers and synthetic generators.

Importing this package registers every data set in :data:`DATASETS`; use
:func:`load_dataset` (or :mod:`pssl.datasets`, which re-exports this API).
"""

from __future__ import annotations

# Importing the modules registers their data sets.
from pssl.datasets import celeba, cifar, digits, mnist, paired, shapes, styled  # noqa: F401
from pssl.datasets.core import (
    DATASETS,
    PALETTE,
    DataNotFoundError,
    DataSplits,
    TensorData,
    dataset_names,
    load_dataset,
    seeded_generator,
    validate_images,
)
from pssl.datasets.descriptor import (
    DatasetDefaults,
    dataset_defaults,
    evaluation_splits,
    evaluation_transform,
    register_dataset,
)
from pssl.datasets.idx import read_idx, write_idx
from pssl.datasets.paired import split_modalities

__all__ = [
    "DATASETS",
    "PALETTE",
    "DataNotFoundError",
    "DataSplits",
    "DatasetDefaults",
    "TensorData",
    "dataset_defaults",
    "dataset_names",
    "evaluation_splits",
    "evaluation_transform",
    "load_dataset",
    "read_idx",
    "register_dataset",
    "seeded_generator",
    "split_modalities",
    "validate_images",
    "write_idx",
]
