"""Containers, validation, splitting and the registry shared by every data set.

A data set is held in memory as one :class:`TensorData` per split: ``uint8``
images of shape ``(N, C, H, W)``, ``int64`` content labels of shape ``(N,)`` and
optional named style factors, each of shape ``(N,)``. Models receive floats in
``[0, 1]`` (:func:`as_float_images`, the one conversion pssl uses) through :meth:`TensorData.float_images`.

Randomness: every registered factory takes the framework-supplied ``seed``,
which selects the validation split carved from the training items. Anything
that defines *the data set itself* (a carved test split, procedurally generated
images) is drawn from a separate ``data_seed`` option, so runs that differ only
in ``seed`` are evaluated on the same test items.
"""

from __future__ import annotations

import inspect
import math
import os
import typing
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pssl.registry import Registry

FACTOR_KINDS = ("discrete", "continuous")
"""Accepted values of :attr:`TensorData.factor_kinds`."""

DATASETS: Registry[DataSplits] = Registry("data set", key="data")
"""Registry of data set factories; each returns a :class:`DataSplits`."""

PALETTE: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("black", (0, 0, 0)),
    ("white", (255, 255, 255)),
    ("red", (230, 25, 25)),
    ("green", (30, 200, 40)),
    ("blue", (30, 60, 230)),
    ("yellow", (250, 220, 20)),
    ("cyan", (20, 210, 230)),
    ("magenta", (220, 40, 220)),
)
"""Named RGB colours used by the synthetic data sets; a colour factor is an index into a palette."""


class DataNotFoundError(FileNotFoundError):
    """The files of a data set are not where any search looked.

    The message names the data set, every path tried, and how to obtain the data.

    Attributes:
        dataset: Name of the data set.
        tried: Every path that was searched, in order.
    """

    def __init__(self, dataset: str, tried: list[Path], how_to_get: list[str]) -> None:
        self.dataset = dataset
        self.tried = list(tried)
        lines = [f"data set {dataset!r} not found. Paths tried:"]
        lines += [f"  - {p}" for p in self.tried] or ["  (none: no root given and PSSL_DATA is not set)"]
        lines.append("To get it:")
        lines += [f"  - {h}" for h in how_to_get]
        super().__init__("\n".join(lines))

    def __reduce__(self) -> tuple[Any, ...]:
        # OSError's default pickling would pass the message as the first argument.
        return (_rebuild_not_found, (self.dataset, self.tried, str(self)))


def _rebuild_not_found(dataset: str, tried: list[Path], message: str) -> DataNotFoundError:
    err = DataNotFoundError.__new__(DataNotFoundError)
    FileNotFoundError.__init__(err, message)
    err.dataset, err.tried = dataset, tried
    return err


def validate_images(images: Any, *, name: str) -> None:
    """Check that ``images`` is a usable image tensor.

    Accepted: a ``torch.Tensor`` of shape ``(N, H, W)`` (grey) or ``(N, C, H, W)``
    with ``C`` in 1..4, either ``uint8`` (0..255, read as k/255) or floating point with
    finite values (usually in ``[0, 1]``; other ranges are allowed and checked against
    the chosen likelihood's support before training).

    Args:
        images: The candidate tensor.
        name: How to call it in error messages (e.g. ``"images"``).

    Raises:
        TypeError: if it is not a tensor, or has a dtype other than ``uint8`` or floating.
        ValueError: for the wrong number of dimensions or channels, NaN or
            infinite values; the message
            names the problem.
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if images.dtype != torch.uint8 and not images.dtype.is_floating_point:
        raise TypeError(f"{name} must have dtype uint8 (0..255) or a float dtype (0..1), got {images.dtype}")
    if images.ndim not in (3, 4):
        raise ValueError(
            f"{name} must have shape (N, H, W) or (N, C, H, W), got {images.ndim} dims {tuple(images.shape)}"
        )
    if images.ndim == 4 and not 1 <= images.shape[1] <= 4:
        raise ValueError(f"{name} must have 1 to 4 channels in dim 1, got shape {tuple(images.shape)}")
    if images.dtype.is_floating_point and images.numel():
        if torch.isnan(images).any():
            raise ValueError(f"{name} contains NaN values")
        if torch.isinf(images).any():
            raise ValueError(f"{name} contains infinite values")
        # The range is the likelihood's business (a Gaussian with identity link models
        # standardised data; a Bernoulli needs [0, 1]): each likelihood checks its support.


def as_float_images(
    images: torch.Tensor,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    name: str = "images",
) -> torch.Tensor:
    """Images as floats in ``[0, 1]``: ``uint8`` values ``k`` become ``k / 255``; floats are kept.

    The one conversion every part of pssl uses (training views, evaluation
    features, diagnostics, figures). The ``uint8`` tensor travels to ``device``
    before conversion (four times less to copy).

    Args:
        images: ``(..., C, H, W)`` ``uint8`` in ``0..255`` or floats in ``[0, 1]``.
        dtype: the floating dtype of the result.
        device: where to put the result (default: where ``images`` are).
        name: what to call ``images`` in the error message.

    Raises:
        TypeError: for any other dtype (integers other than ``uint8``, booleans).
    """
    if device is not None:
        images = images.to(device, non_blocking=True)
    if images.dtype == torch.uint8:
        return images.to(dtype).div_(255.0)
    if images.is_floating_point():
        return images.to(dtype)
    raise TypeError(f"{name} must be uint8 (0..255) or floating point in [0, 1], got dtype {images.dtype}")


@dataclass
class TensorData:
    """One split of a data set, held in memory.

    Attributes:
        images: ``uint8`` images, shape ``(N, C, H, W)``.
        labels: ``int64`` content classes, shape ``(N,)``, in ``0..num_classes-1``.
        factors: Style factors by name, each of shape ``(N,)``, ``float32``
            (continuous) or ``int64`` (discrete).
        factor_kinds: ``"discrete"`` or ``"continuous"`` for every factor; when a
            factor is missing here its kind is inferred from its dtype.
        num_classes: Number of content classes; ``None`` infers ``labels.max() + 1``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    factors: dict[str, torch.Tensor] = field(default_factory=dict)
    factor_kinds: dict[str, str] = field(default_factory=dict)
    num_classes: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.images, torch.Tensor) or self.images.dtype not in (torch.uint8, torch.float32):
            raise TypeError(
                "TensorData.images must be a uint8 or float32 tensor "
                "(use TensorData.from_tensors to convert), "
                f"got {getattr(self.images, 'dtype', type(self.images).__name__)}"
            )
        if self.images.ndim != 4:
            raise ValueError(f"TensorData.images must be (N, C, H, W), got shape {tuple(self.images.shape)}")
        n = self.images.shape[0]
        if not isinstance(self.labels, torch.Tensor) or self.labels.dtype != torch.int64:
            raise TypeError(
                f"TensorData.labels must be an int64 tensor, got {getattr(self.labels, 'dtype', self.labels)}"
            )
        if tuple(self.labels.shape) != (n,):
            raise ValueError(f"TensorData.labels must have shape ({n},), got {tuple(self.labels.shape)}")
        if n and int(self.labels.min()) < 0:
            raise ValueError(f"TensorData.labels must be >= 0, got minimum {int(self.labels.min())}")
        self.factors = dict(self.factors)
        kinds = dict(self.factor_kinds)
        unknown = set(kinds) - set(self.factors)
        if unknown:
            raise ValueError(f"factor_kinds names factors that do not exist: {sorted(unknown)}")
        for key, value in self.factors.items():
            if not isinstance(value, torch.Tensor) or value.dtype not in (torch.float32, torch.int64):
                raise TypeError(
                    f"factor {key!r} must be a float32 or int64 tensor, got {getattr(value, 'dtype', value)}"
                )
            if tuple(value.shape) != (n,):
                raise ValueError(f"factor {key!r} must have shape ({n},), got {tuple(value.shape)}")
            kind = kinds.setdefault(key, "continuous" if value.dtype == torch.float32 else "discrete")
            if kind not in FACTOR_KINDS:
                raise ValueError(f"factor kind for {key!r} must be one of {FACTOR_KINDS}, got {kind!r}")
        self.factor_kinds = {k: kinds[k] for k in self.factors}
        inferred = int(self.labels.max()) + 1 if n else 0
        if self.num_classes is None:
            self.num_classes = inferred
        elif isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int):
            raise TypeError(f"num_classes must be an int or None, got {self.num_classes!r}")
        elif self.num_classes < inferred:
            raise ValueError(f"num_classes={self.num_classes} but labels go up to {inferred - 1}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def float_images(
        self, index: torch.Tensor | slice | None = None, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """Images as ``float32`` in ``[0, 1]``.

        Args:
            index: Items to take (integer or boolean tensor, or a slice); ``None`` takes all.
            device: Where to put the result; the ``uint8`` images travel before
                conversion, four times less to copy.

        Returns:
            Tensor of shape ``(n, C, H, W)``, ``x = images / 255``.
        """
        images = self.images if index is None else self.images[_cpu_index(index)]
        return as_float_images(images, device=device)

    def subset(self, index: torch.Tensor) -> TensorData:
        """The items selected by ``index`` (integer or boolean tensor), keeping ``num_classes``."""
        if not isinstance(index, torch.Tensor):
            index = torch.as_tensor(index)
        if index.dtype != torch.bool and index.dtype.is_floating_point:
            raise TypeError(f"subset index must be an integer or boolean tensor, got {index.dtype}")
        index = _cpu_index(index)
        return TensorData(
            images=self.images[index],
            labels=self.labels[index],
            factors={k: v[index] for k, v in self.factors.items()},
            factor_kinds=dict(self.factor_kinds),
            num_classes=self.num_classes,
        )

    @classmethod
    def from_tensors(
        cls,
        images: Any,
        labels: Any = None,
        factors: Mapping[str, Any] | None = None,
        factor_kinds: Mapping[str, str] | None = None,
        num_classes: int | None = None,
    ) -> TensorData:
        """Build from user tensors (or NumPy arrays), converting and validating.

        Args:
            images: ``uint8`` in ``0..255`` or float in ``[0, 1]``; shape ``(N, H, W)``
                or ``(N, C, H, W)``. Floats are kept as ``float32`` (not quantised).
            labels: Integer classes of shape ``(N,)``; ``None`` gives every item class 0.
            factors: Style factors, each of shape ``(N,)``: floats become
                ``float32`` (continuous), integers and booleans ``int64`` (discrete).
            factor_kinds: Overrides the kind inferred from the dtype.
            num_classes: Defaults to ``labels.max() + 1``.

        Raises:
            ValueError: for an empty set, bad shapes or values (see :func:`validate_images`).
            TypeError: for unsupported dtypes.
        """
        images = torch.as_tensor(images)
        validate_images(images, name="images")
        if images.shape[0] == 0:
            raise ValueError("images is empty (0 items); a data set needs at least one item")
        if images.ndim == 3:
            images = images.unsqueeze(1)
        if images.dtype.is_floating_point:
            images = images.to(torch.float32)  # kept as given: no quantisation of user data
        n = images.shape[0]
        if labels is None:
            labels = torch.zeros(n, dtype=torch.int64)
        labels = torch.as_tensor(labels)
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise TypeError(f"labels must be integers, got {labels.dtype}")
        labels = labels.to(torch.int64)
        if tuple(labels.shape) != (n,):
            raise ValueError(f"labels must have shape ({n},) to match images, got {tuple(labels.shape)}")
        converted: dict[str, torch.Tensor] = {}
        for key, value in (factors or {}).items():
            value = torch.as_tensor(value)
            if value.dtype.is_floating_point:
                if not torch.isfinite(value).all():
                    raise ValueError(f"factor {key!r} contains NaN or infinite values")
                value = value.to(torch.float32)
            else:
                value = value.to(torch.int64)
            if tuple(value.shape) != (n,):
                raise ValueError(f"factor {key!r} must have shape ({n},), got {tuple(value.shape)}")
            converted[key] = value
        return cls(images.contiguous(), labels, converted, dict(factor_kinds or {}), num_classes)

    @classmethod
    def from_torch_dataset(cls, dataset: torch.utils.data.Dataset) -> TensorData:
        """Read every ``(image, label)`` pair of a map-style dataset into memory.

        Images may be PIL images, tensors (``(C, H, W)`` or ``(H, W)``, ``uint8``
        or float in ``[0, 1]``) or NumPy arrays (``(H, W)`` or ``(H, W, C)``).
        ``num_classes`` comes from ``dataset.classes`` when present.

        Raises:
            ValueError: for an empty dataset or images of differing shapes.
            TypeError: for an item that is not an ``(image, label)`` pair.
        """
        try:
            size = len(dataset)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(
                f"dataset must be map-style with a length, got {type(dataset).__name__}"
            ) from None
        if size == 0:
            raise ValueError(f"{type(dataset).__name__} is empty (0 items)")
        images, labels = [], []
        for i in range(size):
            item = dataset[i]
            if not isinstance(item, (tuple, list)) or len(item) < 2:
                raise TypeError(f"item {i} of the dataset must be an (image, label) pair, got {type(item)}")
            images.append(_image_to_uint8_chw(item[0], where=f"item {i}"))
            labels.append(int(item[1]))
        shapes = {tuple(im.shape) for im in images}
        if len(shapes) > 1:
            raise ValueError(f"dataset images must all have one shape, found {sorted(shapes)}")
        classes = getattr(dataset, "classes", None)
        num_classes = len(classes) if classes is not None else None
        return cls.from_tensors(torch.stack(images), torch.tensor(labels), num_classes=num_classes)


def _cpu_index(index: torch.Tensor | slice) -> torch.Tensor | slice:
    return index.cpu() if isinstance(index, torch.Tensor) else index


def _image_to_uint8_chw(image: Any, *, where: str) -> torch.Tensor:
    if hasattr(image, "getbands"):  # a PIL image, without importing PIL here
        if image.mode not in ("L", "RGB", "RGBA"):  # palette, 1-bit, 16-bit, CMYK, ...
            image = image.convert("L" if image.mode in ("1", "I", "I;16", "F") else "RGB")
        array = np.array(image)
        tensor = torch.from_numpy(array)
        return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1).contiguous()
    if isinstance(image, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(image))
        if tensor.ndim == 3 and tensor.shape[-1] in (1, 3, 4) and tensor.shape[0] not in (1, 3, 4):
            tensor = tensor.permute(2, 0, 1)
    elif isinstance(image, torch.Tensor):
        tensor = image
    else:
        raise TypeError(f"{where}: image must be a PIL image, tensor or array, got {type(image).__name__}")
    if tensor.ndim == 2:
        tensor = tensor.unsqueeze(0)
    validate_images(tensor.unsqueeze(0), name=f"{where} image")
    if tensor.dtype.is_floating_point:
        tensor = tensor.mul(255.0).round_().to(torch.uint8)
    return tensor.contiguous()


@dataclass
class DataSplits:
    """Training, validation and test splits of one data set.

    Attributes:
        train: Items to fit on.
        val: Items for model selection, carved from the training items (may be
            empty only when ``val_fraction=0``).
        test: Held-out items.
        name: Registered name of the data set.
        paired: True for multi-modal paired data, whose images hold two
            modalities that :func:`pssl.datasets.split_modalities` separates.
        style_source: For procedurally styled data, what renders its items again
            with another style (:class:`pssl.datasets.styled.StyleSource`); the view
            augmentation that re-draws style (``restyle``) is built from it.
            ``None`` for other data.
    """

    train: TensorData
    val: TensorData
    test: TensorData
    name: str
    paired: bool = False
    style_source: Any = None

    def __post_init__(self) -> None:
        shapes = {
            s: d.image_shape for s, d in (("train", self.train), ("val", self.val), ("test", self.test))
        }
        if len(set(shapes.values())) > 1:
            raise ValueError(f"splits of {self.name!r} have different image shapes: {shapes}")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` shared by all splits."""
        return self.train.image_shape

    @property
    def num_classes(self) -> int:
        """Number of content classes."""
        return int(self.train.num_classes or 0)

    def describe(self) -> str:
        """One line: name, sizes and image shape."""
        c, h, w = self.image_shape
        factors = ", ".join(self.train.factors) or "none"
        return (
            f"{self.name}: train {len(self.train)}, val {len(self.val)}, test {len(self.test)} items; "
            f"images {c}x{h}x{w}; {self.num_classes} classes; factors: {factors}"
        )


def load_dataset(name: str, options: dict[str, Any] | None = None, *, seed: int = 0) -> DataSplits:
    """Build the registered data set ``name`` with user ``options``.

    Args:
        name: A name from :func:`dataset_names`.
        options: Factory options (strings are coerced to the annotated types).
        seed: Selects the validation split (and nothing about the test items).

    Raises:
        ValueError: for an unknown name or option (the message lists accepted ones).
        DataNotFoundError: when the files of a file-backed data set are missing.
    """
    return DATASETS.build(name, options, seed=seed)


def dataset_names() -> list[str]:
    """Names of every registered data set, in registration order."""
    return DATASETS.names()


# --------------------------------------------------------------------------- randomness and splits


def seeded_generator(seed: int, *salt: str) -> torch.Generator:
    """A CPU generator whose stream depends on ``seed`` and on the ``salt`` strings.

    Distinct salts give independent streams from one seed, so the test carve,
    the validation carve and the rendering never share random numbers.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    words = [int(seed) % 2**64] + [zlib.crc32(s.encode()) for s in salt]
    state = np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & (2**63 - 1))


def check_split_options(
    *, val_fraction: float, limit: int | None, test_fraction: float | None = None
) -> None:
    """Check the options shared by every factory.

    Raises:
        ValueError: for ``val_fraction`` or ``test_fraction`` outside ``[0, 1)``
            (``test_fraction`` outside ``(0, 1)``), or ``limit < 1``.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    if test_fraction is not None and not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of items or None, got {limit!r}")


def carve(num_items: int, fraction: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``range(num_items)`` at random into kept and carved indices.

    ``ceil(fraction * num_items)`` indices are carved (none when ``fraction`` is 0);
    both returned index tensors are sorted, so items keep their original order.
    """
    num_carved = math.ceil(fraction * num_items) if fraction > 0 else 0
    perm = torch.randperm(num_items, generator=generator)
    return perm[num_carved:].sort().values, perm[:num_carved].sort().values


def split_indices(
    num_train: int,
    num_test: int,
    *,
    name: str,
    seed: int,
    val_fraction: float,
    limit: int | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices of train, validation and test items given a train pool and a test set.

    The first ``limit`` training items (and the first ``limit`` test items) are
    kept; validation is a seeded ``val_fraction`` of those.

    Returns:
        ``(train, val, test)``: train and val index the training pool, test the test set.

    Raises:
        ValueError: when the training items or the test items are empty, or the
            validation carve would leave no training items.
    """
    check_split_options(val_fraction=val_fraction, limit=limit)
    if limit is not None:
        num_train, num_test = min(num_train, limit), min(num_test, limit)
    if num_train == 0 or num_test == 0:
        raise ValueError(f"data set {name!r} is empty: {num_train} training and {num_test} test items")
    # The stream does not depend on the name, so derived data sets (styled-mnist,
    # paired-mnist) hold out the same items as their base for the same seed.
    train, val = carve(num_train, val_fraction, seeded_generator(seed, "val"))
    if len(train) == 0:
        raise ValueError(
            f"val_fraction={val_fraction} leaves no training items out of {num_train} in {name!r}; "
            "lower val_fraction or raise limit"
        )
    return train, val, torch.arange(num_test)


def make_splits(
    name: str,
    train_pool: TensorData,
    test: TensorData,
    *,
    seed: int,
    val_fraction: float,
    limit: int | None,
    paired: bool = False,
) -> DataSplits:
    """Apply ``limit`` and carve the validation split (see :func:`split_indices`)."""
    train, val, test_index = split_indices(
        len(train_pool), len(test), name=name, seed=seed, val_fraction=val_fraction, limit=limit
    )
    return DataSplits(
        train=train_pool.subset(train),
        val=train_pool.subset(val),
        test=test if len(test_index) == len(test) else test.subset(test_index),
        name=name,
        paired=paired,
    )


def env_data_root() -> Path | None:
    """The folder named by the ``PSSL_DATA`` environment variable, if set."""
    value = os.environ.get("PSSL_DATA")
    return Path(value).expanduser() if value else None


def derived_factory(
    base: Callable[..., DataSplits],
    own: Sequence[inspect.Parameter],
    build: Callable[[int, dict[str, Any], dict[str, Any]], DataSplits],
    *,
    name: str,
    doc: str,
) -> Callable[..., DataSplits]:
    """A factory whose options are ``base``'s options plus ``own`` ones.

    Used for data sets derived from another (``styled-mnist`` from ``mnist``):
    the registry reads the returned function's signature, so every base option
    stays settable and documented without being repeated by hand.

    Args:
        base: The base data set's factory.
        own: Extra keyword-only parameters with defaults and annotations; a
            name shared with ``base`` is passed to both.
        build: Called as ``build(seed, base_options, own_options)``.
        name: The registered name (for the function's name and errors).
        doc: The docstring.
    """
    own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
    own_names = {p.name for p in own}
    base_params = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        for p in inspect.signature(base).parameters.values()
        if p.default is not inspect.Parameter.empty and p.name not in own_names
    ]
    base_names = [p.name for p in inspect.signature(base).parameters.values() if p.default is not p.empty]
    hints = typing.get_type_hints(base)
    hints.update({p.name: p.annotation for p in own})
    hints["return"] = DataSplits
    seed_param = inspect.Parameter("seed", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=int)
    params = [seed_param, *base_params, *own]
    defaults = {p.name: p.default for p in params[1:]}

    def factory(seed: int, **options: Any) -> DataSplits:
        unknown = sorted(set(options) - set(defaults))
        if unknown:
            raise TypeError(f"{name} got unknown options {unknown}; accepted: {', '.join(defaults)}")
        values = {**defaults, **options}
        return build(seed, {k: values[k] for k in base_names}, {k: values[k] for k in own_names})

    factory.__signature__ = inspect.Signature(params, return_annotation=DataSplits)  # type: ignore[attr-defined]
    factory.__annotations__ = hints
    factory.__name__ = factory.__qualname__ = name.replace("-", "_")
    factory.__doc__ = doc
    return factory


def torchvision_download(class_name: str, target: Path, **kwargs: Any) -> None:
    """Instantiate ``torchvision.datasets.<class_name>(target, download=True, **kwargs)``.

    The one place that touches the network; tests replace it.
    """
    import torchvision.datasets

    getattr(torchvision.datasets, class_name)(str(target), download=True, **kwargs)


def try_download(dataset: str, class_name: str, root: str | None, hints: list[str], **kwargs: Any) -> None:
    """Fetch ``dataset`` with torchvision into ``root`` (or ``$PSSL_DATA``).

    A failed download (no network, refused, bad checksum) is recorded in
    ``hints`` for the :class:`DataNotFoundError` that follows, not raised.

    Raises:
        ValueError: when neither ``root`` nor ``PSSL_DATA`` says where to put the files.
    """
    target = Path(root).expanduser() if root is not None else env_data_root()
    if target is None:
        raise ValueError(f"download=true for {dataset!r} needs data.root=FOLDER or PSSL_DATA to say where")
    try:
        torchvision_download(class_name, target, **kwargs)
    except (OSError, RuntimeError) as err:
        hints.append(f"the download just tried failed: {err}")
