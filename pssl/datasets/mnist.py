"""MNIST and FashionMNIST from their IDX files.

Both data sets ship as four IDX files (see :mod:`pssl.datasets.idx`):
``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each optionally
gzip-compressed with a ``.gz`` suffix. 60,000 training and 10,000 test images,
28x28 grey, 10 classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
from pssl.datasets.idx import idx_header, read_idx

IDX_STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
"""Role -> file name (without the optional ``.gz``) of the four IDX files."""

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` package installs the files."""


@dataclass(frozen=True)
class _Source:
    name: str  # registered name
    torchvision_class: str  # torchvision.datasets class, whose raw folder is <root>/<class>/raw
    env_subfolders: tuple[str, ...]  # looked for under $PSSL_DATA
    apt_package: str | None  # Debian package installing into DEBIAN_FASHION_MNIST


_SOURCES = {
    "mnist": _Source("mnist", "MNIST", ("MNIST/raw", "mnist"), None),
    "fashionmnist": _Source(
        "fashionmnist",
        "FashionMNIST",
        ("FashionMNIST/raw", "fashion-mnist", "fashionmnist"),
        "dataset-fashion-mnist",
    ),
}


def find_idx_files(folder: Path) -> dict[str, Path] | None:
    """The four IDX files in ``folder`` (each ``.gz`` or uncompressed), or ``None`` if any is missing."""
    found = {}
    for role, stem in IDX_STEMS.items():
        candidates = [folder / f"{stem}.gz", folder / stem]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            return None
        found[role] = path
    return found


def candidate_folders(source_name: str, root: str | Path | None) -> list[Path]:
    """Folders searched for ``source_name`` ("mnist" or "fashionmnist"), in order.

    Order: ``root``, ``root/<TorchvisionClass>/raw``, ``root/raw``; then the
    distribution package folder (FashionMNIST only); then ``$PSSL_DATA`` and
    its data-set subfolders.
    """
    source = _SOURCES[source_name]
    folders: list[Path] = []
    if root is not None:
        root = Path(root).expanduser()
        folders += [root, root / source.torchvision_class / "raw", root / "raw"]
    if source.apt_package:
        folders.append(DEBIAN_FASHION_MNIST)  # read at call time, so tests can point it elsewhere
    env = env_data_root()
    if env is not None:
        folders += [env] + [env / sub for sub in source.env_subfolders]
    return folders


def _how_to_get(source: _Source) -> list[str]:
    hints = []
    if source.apt_package:
        hints.append(f"apt-get install {source.apt_package}  (installs into {DEBIAN_FASHION_MNIST})")
    hints += [
        f"put the four IDX files ({', '.join(IDX_STEMS.values())}, optionally .gz) in a folder "
        "and pass data.root=FOLDER or set PSSL_DATA=FOLDER",
        "with internet access: data.root=FOLDER data.download=true (uses torchvision's downloader)",
    ]
    return hints


def load_idx_pair(images_path: Path, labels_path: Path, *, limit: int | None = None) -> TensorData:
    """Images ``(N, 1, H, W)`` and labels from a pair of IDX files.

    Args:
        images_path: IDX file of ``uint8`` images ``(N, H, W)``.
        labels_path: IDX file of integer labels ``(N,)``.
        limit: Read only the first ``limit`` items.

    Raises:
        ValueError: naming the file, for wrong dtype or dimensions, or
            image and label counts that disagree.
    """
    (image_dtype, image_shape), (label_dtype, label_shape) = idx_header(images_path), idx_header(labels_path)
    if image_dtype != np.dtype(">u1") or len(image_shape) != 3:
        raise ValueError(
            f"{images_path}: expected uint8 images of shape (N, H, W), got {image_dtype} {image_shape}"
        )
    if len(label_shape) != 1 or label_dtype.kind == "f":
        raise ValueError(f"{labels_path}: expected integer labels of shape (N,), got {label_shape}")
    if label_shape[0] != image_shape[0]:
        raise ValueError(
            f"{images_path} holds {image_shape[0]} images but {labels_path} holds {label_shape[0]} labels"
        )
    images, labels = read_idx(images_path, limit=limit), read_idx(labels_path, limit=limit)
    return TensorData(images.unsqueeze(1), labels.to(torch.int64), num_classes=10)


def load_idx_dataset(
    source_name: str, *, seed: int, root: str | None, val_fraction: float, limit: int | None, download: bool
) -> DataSplits:
    """Find, read and split MNIST or FashionMNIST (see :func:`candidate_folders`)."""
    source = _SOURCES[source_name]
    folders = candidate_folders(source_name, root)
    files = next((f for f in map(find_idx_files, folders) if f is not None), None)
    hints = _how_to_get(source)
    if files is None and download:
        try_download(source.name, source.torchvision_class, root, hints, train=True)
        folders = candidate_folders(source_name, root)
        files = next((f for f in map(find_idx_files, folders) if f is not None), None)
    if files is None:
        raise DataNotFoundError(source.name, folders, hints)
    train = load_idx_pair(files["train_images"], files["train_labels"], limit=limit)
    test = load_idx_pair(files["test_images"], files["test_labels"], limit=limit)
    return make_splits(source.name, train, test, seed=seed, val_fraction=val_fraction, limit=limit)


@register_dataset(
    "mnist",
    help="MNIST handwritten digits, 1x28x28 grey, 10 classes (IDX files)",
    # The reference binarises MNIST at 0.5, views and evaluation images alike
    # (``evaluation="views"`` carries the preset's threshold to evaluation).
    defaults=DatasetDefaults(
        augment="mnist-binary", likelihood="bernoulli", encoder="mlp", decoder="mlp", evaluation="views"
    ),
)
def mnist(
    seed: int,
    *,
    root: str | None = None,
    val_fraction: float = 0.1,
    limit: int | None = None,
    download: bool = False,
) -> DataSplits:
    """MNIST: 60,000 training and 10,000 test digits.

    Args:
        seed: Selects the validation split (framework-supplied).
        root: Folder with the IDX files, or with torchvision's ``MNIST/raw``
            below it; otherwise ``$PSSL_DATA`` is searched.
        val_fraction: Fraction of the training items held out for validation.
        limit: Use only the first ``limit`` training and test items.
        download: Fetch with torchvision into ``root`` when not found (needs internet).
    """
    return load_idx_dataset(
        "mnist", seed=seed, root=root, val_fraction=val_fraction, limit=limit, download=download
    )


@register_dataset(
    "fashionmnist",
    help="Fashion-MNIST clothing, 1x28x28 grey, 10 classes (IDX files, Debian path auto-found)",
    # grey levels kept (the reference thresholds MNIST only); Bernoulli on grey levels as the reference
    defaults=DatasetDefaults(augment="mnist", likelihood="bernoulli", encoder="mlp", decoder="mlp"),
)
def fashionmnist(
    seed: int,
    *,
    root: str | None = None,
    val_fraction: float = 0.1,
    limit: int | None = None,
    download: bool = False,
) -> DataSplits:
    """Fashion-MNIST: 60,000 training and 10,000 test clothing images.

    Args:
        seed: Selects the validation split (framework-supplied).
        root: Folder with the IDX files, or with torchvision's
            ``FashionMNIST/raw`` below it; otherwise Debian's
            ``/usr/share/datasets/fashion-mnist`` and then ``$PSSL_DATA`` are searched.
        val_fraction: Fraction of the training items held out for validation.
        limit: Use only the first ``limit`` training and test items.
        download: Fetch with torchvision into ``root`` when not found (needs internet).
    """
    return load_idx_dataset(
        "fashionmnist", seed=seed, root=root, val_fraction=val_fraction, limit=limit, download=download
    )
