"""CIFAR-10 from torchvision's python batch files.

Layout under ``root``: ``cifar-10-batches-py/data_batch_1`` .. ``data_batch_5``
and ``test_batch``. Each is a pickled dict with ``data``, a ``uint8`` array of
shape ``(10000, 3072)`` (1024 red, then 1024 green, then 1024 blue values, row
major), and ``labels``, a list of 10,000 ints in ``0..9``. The files are
unpickled with a restricted unpickler that only rebuilds NumPy arrays, so a
tampered file cannot run code.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pssl.datasets.core import (
    DataNotFoundError,
    DataSplits,
    TensorData,
    env_data_root,
    make_splits,
    try_download,
)
from pssl.datasets.descriptor import DatasetDefaults, register_dataset

CIFAR10_FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global except what NumPy arrays need."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_cifar_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(N, 3, 32, 32)`` ``uint8`` and labels ``(N,)`` ``int64`` from one batch file.

    Raises:
        ValueError: naming the file, when it is not a readable batch (bad
            pickle, missing keys, wrong sizes, labels outside ``0..9``).
    """
    try:
        batch = _ArrayUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"{path} is not a readable CIFAR batch file: {err}") from None
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(batch).__name__}")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise ValueError(f"{path}: expected keys 'data' and 'labels', found {sorted(map(str, batch))}")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch["labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: 'data' must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],):
        raise ValueError(f"{path}: {data.shape[0]} images but labels of shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{path}: labels must be in 0..9, got {labels.min()}..{labels.max()}")
    images = torch.from_numpy(data.copy()).reshape(-1, 3, 32, 32)
    return images, torch.from_numpy(labels.astype(np.int64))


def candidate_folders(root: str | Path | None) -> list[Path]:
    """``root/cifar-10-batches-py``, ``root`` itself, then ``$PSSL_DATA/cifar-10-batches-py``."""
    folders = []
    if root is not None:
        root = Path(root).expanduser()
        folders += [root / CIFAR10_FOLDER, root]
    env = env_data_root()
    if env is not None:
        folders.append(env / CIFAR10_FOLDER)
    return folders


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in (*TRAIN_BATCHES, TEST_BATCH))


@register_dataset(
    "cifar10",
    help="CIFAR-10 natural images, 3x32x32 RGB, 10 classes (python batches)",
    # pssl's small ResNet by default (CPU-friendly); recipe paper-cifar10 selects resnet18-half
    defaults=DatasetDefaults(augment="cifar", likelihood="gaussian", encoder="resnet", decoder="resnet"),
)
def cifar10(
    seed: int,
    *,
    root: str | None = None,
    val_fraction: float = 0.1,
    limit: int | None = None,
    download: bool = False,
) -> DataSplits:
    """CIFAR-10: 50,000 training and 10,000 test images.

    Args:
        seed: Selects the validation split (framework-supplied).
        root: Folder holding ``cifar-10-batches-py`` (or that folder itself);
            otherwise ``$PSSL_DATA`` is searched.
        val_fraction: Fraction of the training items held out for validation.
        limit: Use only the first ``limit`` training and test items (only the
            batch files needed are read).
        download: Fetch with torchvision into ``root`` when not found (needs internet).
    """
    folders = candidate_folders(root)
    folder = next((f for f in folders if _complete(f)), None)
    hints = [
        f"put torchvision's {CIFAR10_FOLDER} folder (data_batch_1..5, test_batch) under a folder "
        "and pass data.root=FOLDER or set PSSL_DATA=FOLDER",
        "with internet access: data.root=FOLDER data.download=true (uses torchvision's downloader)",
    ]
    if folder is None and download:
        try_download("cifar10", "CIFAR10", root, hints)
        folder = next((f for f in folders if _complete(f)), None)
    if folder is None:
        raise DataNotFoundError("cifar10", folders, hints)
    parts = []
    for name in TRAIN_BATCHES:
        parts.append(read_cifar_batch(folder / name))
        if limit is not None and sum(len(labels) for _, labels in parts) >= limit:
            break  # each batch holds 10,000 items: read only what the limit needs
    train = TensorData(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]), num_classes=10)
    test = TensorData(*read_cifar_batch(folder / TEST_BATCH), num_classes=10)
    return make_splits("cifar10", train, test, seed=seed, val_fraction=val_fraction, limit=limit)
