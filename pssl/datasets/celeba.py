"""CelebA aligned faces in torchvision's folder layout, with hair colour as content.

Layout under ``root``: ``celeba/img_align_celeba/*.jpg`` (178x218 RGB),
``celeba/list_attr_celeba.txt`` (a count line, a line of 40 attribute names,
then one line per image: file name and 40 values in ``{-1, 1}``) and
``celeba/list_eval_partition.txt`` (file name and ``0`` train, ``1``
validation, ``2`` test). Images are centre-cropped to ``crop`` x ``crop``
pixels (148, the common choice, which keeps the face) and resized with
antialiasing to ``image_size`` x ``image_size``.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pssl.datasets.core import (
    DataNotFoundError,
    DataSplits,
    TensorData,
    env_data_root,
    make_splits,
    try_download,
)
from pssl.datasets.descriptor import DatasetDefaults, register_dataset

HAIR_COLOURS = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")
"""Attributes that define content classes 0..3; class 4 is "other or ambiguous"."""
HAIR_CLASS_NAMES = ("black", "blond", "brown", "gray", "other")
IMAGE_FOLDER = "img_align_celeba"
ATTRIBUTE_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
CACHE_FOLDER = "pssl-cache"


def read_attributes(path: Path) -> tuple[list[str], list[str], torch.Tensor]:
    """Parse ``list_attr_celeba.txt``.

    Returns:
        ``(attribute_names, file_names, values)`` with ``values`` an ``int64``
        tensor ``(N, A)`` of 0/1 (the file's -1 becomes 0).

    Raises:
        ValueError: naming the file and line, for a malformed line.
    """
    lines = path.read_text().splitlines()
    if len(lines) < 2:
        raise ValueError(f"{path}: expected a count line and an attribute-name line, got {len(lines)} lines")
    names = lines[1].split()
    files, rows = [], []
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != len(names) + 1 or any(v not in ("1", "-1") for v in fields[1:]):
            raise ValueError(
                f"{path}, line {number}: expected a file name and {len(names)} values of 1 or -1, "
                f"got {line!r}"
            )
        files.append(fields[0])
        rows.append([v == "1" for v in fields[1:]])
    values = torch.tensor(rows, dtype=torch.int64).reshape(len(rows), len(names))
    return names, files, values


def read_partition(path: Path) -> dict[str, int]:
    """Parse ``list_eval_partition.txt`` into file name -> 0 (train), 1 (val) or 2 (test).

    Raises:
        ValueError: naming the file and line, for a malformed line.
    """
    partition = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise ValueError(f"{path}, line {number}: expected 'FILE 0|1|2', got {line!r}")
        partition[fields[0]] = int(fields[1])
    return partition


def hair_colour_labels(attributes: torch.Tensor, names: list[str]) -> torch.Tensor:
    """Content class from the hair attributes.

    Rule: class ``k`` in 0..3 (black, blond, brown, gray) when attribute
    ``HAIR_COLOURS[k]`` is the *only* hair-colour attribute set; class 4
    ("other") when none or several are set (bald, red, dyed, ambiguous labels).

    Args:
        attributes: 0/1 tensor ``(N, A)``.
        names: The ``A`` attribute names.

    Returns:
        ``int64`` tensor ``(N,)`` in ``0..4``.
    """
    missing = [h for h in HAIR_COLOURS if h not in names]
    if missing:
        raise ValueError(f"attribute names lack {missing}; found {names}")
    hair = attributes[:, [names.index(h) for h in HAIR_COLOURS]]
    single = hair.sum(dim=1) == 1
    return torch.where(single, hair.argmax(dim=1), torch.full_like(single, 4, dtype=torch.int64))


def crop_and_resize(image: torch.Tensor, *, crop: int, image_size: int) -> torch.Tensor:
    """Centre-crop ``(C, H, W)`` ``uint8`` to ``min(crop, H, W)`` square, then resize to ``image_size``.

    Returns:
        ``uint8`` tensor ``(C, image_size, image_size)`` (bilinear, antialiased).
    """
    _, h, w = image.shape
    side = min(crop, h, w)
    top, left = (h - side) // 2, (w - side) // 2
    patch = image[:, top : top + side, left : left + side]
    if side == image_size:
        return patch.contiguous()
    resized = F.interpolate(
        patch.unsqueeze(0).float(), size=(image_size, image_size), mode="bilinear", antialias=True
    )
    return resized.squeeze(0).round_().clamp_(0, 255).to(torch.uint8)


def load_images(folder: Path, files: list[str], *, crop: int, image_size: int) -> torch.Tensor:
    """Decode, crop and resize ``files`` from ``folder``: ``uint8`` ``(len(files), 3, S, S)``.

    Raises:
        ValueError: naming the file, for an image that cannot be decoded.
    """
    from PIL import Image, UnidentifiedImageError

    def one(name: str) -> torch.Tensor:
        path = folder / name
        try:
            with Image.open(path) as file:
                array = np.asarray(file.convert("RGB"))
        except (OSError, UnidentifiedImageError) as err:
            raise ValueError(f"cannot decode CelebA image {path}: {err}") from None
        image = torch.from_numpy(array.copy()).permute(2, 0, 1)
        return crop_and_resize(image, crop=crop, image_size=image_size)

    if not files:
        return torch.zeros(0, 3, image_size, image_size, dtype=torch.uint8)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return torch.stack(list(pool.map(one, files)))


def cached_images(
    folder: Path, files: list[str], *, partition: list[str], tag: str, crop: int, image_size: int, cache: bool
) -> torch.Tensor:
    """Images for ``files`` (a prefix of ``partition``), through an optional on-disk cache.

    Decoding 200,000 JPEGs takes minutes, so the processed ``uint8`` tensor of
    a whole partition is saved under ``folder/pssl-cache/`` the first time it
    is decoded in full, and later calls (with any ``limit``) slice it. The
    cache records its file list and is ignored when that list differs; an
    unwritable folder only costs a warning.
    """
    path = folder / CACHE_FOLDER / f"{tag}-crop{crop}-{image_size}px.pt"
    if cache and path.is_file():
        try:
            stored = torch.load(path, weights_only=True)
        except (OSError, RuntimeError, EOFError) as err:
            warnings.warn(f"ignoring unreadable CelebA cache {path}: {err}", stacklevel=2)
        else:
            if stored.get("files", [])[: len(files)] == files:
                return stored["images"][: len(files)]
    images = load_images(folder / IMAGE_FOLDER, files, crop=crop, image_size=image_size)
    if cache and files == partition and files:
        try:
            path.parent.mkdir(exist_ok=True)
            temporary = path.with_suffix(".tmp")
            torch.save({"files": files, "images": images}, temporary)
            os.replace(temporary, path)
        except OSError as err:
            warnings.warn(f"cannot write CelebA cache {path}: {err}", stacklevel=2)
    return images


def candidate_folders(root: str | Path | None) -> list[Path]:
    """``root/celeba``, ``root`` itself, then ``$PSSL_DATA/celeba``."""
    folders = []
    if root is not None:
        root = Path(root).expanduser()
        folders += [root / "celeba", root]
    env = env_data_root()
    if env is not None:
        folders.append(env / "celeba")
    return folders


def _complete(folder: Path) -> bool:
    return (
        (folder / IMAGE_FOLDER).is_dir()
        and (folder / ATTRIBUTE_FILE).is_file()
        and (folder / PARTITION_FILE).is_file()
    )


@register_dataset(
    "celeba",
    help="CelebA faces, 3xSxS RGB (S=image_size), content = hair colour (5 classes), 40 attributes",
    # networks follow image_size (an option): the small ResNet for 32-64 px, else conv
    defaults=DatasetDefaults(augment="cifar", likelihood="gaussian"),
)
def celeba(
    seed: int,
    *,
    root: str | None = None,
    val_fraction: float | None = None,
    limit: int | None = None,
    download: bool = False,
    image_size: int = 64,
    crop: int = 148,
    cache: bool = True,
) -> DataSplits:
    """CelebA: content label = hair colour, style factors = all 40 binary attributes.

    Labels follow :func:`hair_colour_labels`: black, blond, brown or gray hair
    when exactly one of those attributes is set, else "other" (class 4).
    Factors are the 40 attributes (named as in the file, e.g. ``"Smiling"``),
    discrete 0/1.

    Args:
        seed: Selects the validation split when ``val_fraction`` is set (framework-supplied).
        root: Folder holding ``celeba/`` (or that folder itself); otherwise
            ``$PSSL_DATA/celeba`` is searched.
        val_fraction: ``None`` uses CelebA's official validation partition; a
            number carves that fraction of the official training partition
            instead (the official validation partition is then unused).
        limit: Use only the first ``limit`` items of each partition (only those are decoded).
        download: Fetch with torchvision into ``root`` when not found (needs
            internet; Google Drive often refuses).
        image_size: Side of the square output images.
        crop: Side of the centre crop taken before resizing.
        cache: Save decoded partitions under ``celeba/pssl-cache/`` for reuse.
    """
    if image_size < 1 or crop < 1:
        raise ValueError(f"image_size and crop must be positive, got image_size={image_size}, crop={crop}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of items or None, got {limit!r}")
    folders = candidate_folders(root)
    folder = next((f for f in folders if _complete(f)), None)
    hints = [
        f"put torchvision's celeba folder ({IMAGE_FOLDER}/, {ATTRIBUTE_FILE}, {PARTITION_FILE}) under a "
        "folder and pass data.root=FOLDER or set PSSL_DATA=FOLDER",
        "with internet access: data.root=FOLDER data.download=true (uses torchvision's downloader)",
    ]
    if folder is None and download:
        try_download("celeba", "CelebA", root, hints, split="all", target_type="attr")
        folder = next((f for f in folders if _complete(f)), None)
    if folder is None:
        raise DataNotFoundError("celeba", folders, hints)

    names, files, attributes = read_attributes(folder / ATTRIBUTE_FILE)
    partition = read_partition(folder / PARTITION_FILE)
    unassigned = [f for f in files if f not in partition]
    if unassigned:
        raise ValueError(
            f"{folder / PARTITION_FILE} has no partition for {len(unassigned)} files, e.g. {unassigned[0]}"
        )
    labels = hair_colour_labels(attributes, names)
    rows = {name: i for i, name in enumerate(files)}

    def split(part: int, tag: str) -> TensorData:
        members = [f for f in files if partition[f] == part]
        chosen = members if limit is None else members[:limit]
        images = cached_images(
            folder, chosen, partition=members, tag=tag, crop=crop, image_size=image_size, cache=cache
        )
        index = torch.tensor([rows[f] for f in chosen], dtype=torch.int64)
        factors = {name: attributes[index, i] for i, name in enumerate(names)}
        kinds = dict.fromkeys(names, "discrete")
        return TensorData(images, labels[index], factors, kinds, num_classes=len(HAIR_CLASS_NAMES))

    train, test = split(0, "train"), split(2, "test")
    if val_fraction is not None:
        return make_splits("celeba", train, test, seed=seed, val_fraction=val_fraction, limit=limit)
    if len(train) == 0 or len(test) == 0:
        raise ValueError(f"data set 'celeba' is empty: {len(train)} training and {len(test)} test items")
    return DataSplits(train=train, val=split(1, "val"), test=test, name="celeba")
