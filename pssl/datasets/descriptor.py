"""What each data set declares about the runs made on it: its defaults.

A data set is registered with :func:`register_dataset`, which records its factory
in :data:`pssl.datasets.core.DATASETS` and, next to it, a :class:`DatasetDefaults`:
the augmentation preset, likelihood and networks a run uses when it leaves them
unset, and how evaluation images relate to the training views. Adding a data set
is therefore one file: a factory and one decorator, no table elsewhere.

The values are registered *names* (``"mnist-binary"``, ``"bernoulli"``, ``"mlp"``);
data sets know nothing of augmentations' internals, models or training. The
part of pssl that assembles a run (the training composition) reads them with
:func:`dataset_defaults` and fills only what the user left unset; the options a
user gave for an unset component (``likelihood.scale=99.5``) are kept.

Evaluation images: when the training views end in a parameter-free pixel-wise
step (the binarisation of the reference MNIST set-up), :func:`evaluation_splits`
applies the same step to the images the probes, diagnostics and figures read, so
a run is evaluated on the kind of data it was trained on; a data set may opt out
with ``evaluation="raw"``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import torch

from pssl.datasets.core import DATASETS, DataSplits, TensorData

if TYPE_CHECKING:
    from pssl.augment import Augmentation, ViewAugmenter

EVALUATION_MODES = ("views", "raw")
"""``views``: evaluation images get the views' deterministic trailing step; ``raw``: never."""


@dataclass(frozen=True)
class DatasetDefaults:
    """The defaults a data set declares for the parts of a run it determines.

    Attributes:
        augment: the view augmentation preset (a name in ``pssl.augment.AUGMENTATIONS``).
        likelihood: p(x | z) by name; ``None``: chosen from the image shape
            (Bernoulli for grey images, Gaussian for colour).
        encoder, decoder: networks by name; ``None``: chosen from the image shape
            (``pssl.networks.default_networks``), e.g. for data sets whose image size
            is an option.
        evaluation: ``"views"`` (evaluation images get the parameter-free pixel-wise
            step that ends the training views' augmentation, e.g. binarisation) or
            ``"raw"`` (evaluation reads the stored images as they are).
    """

    augment: str
    likelihood: str | None = None
    encoder: str | None = None
    decoder: str | None = None
    evaluation: str = "views"

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and (not isinstance(value, str) or not value):
                raise TypeError(f"DatasetDefaults.{f.name} must be a non-empty name or None, got {value!r}")
        if not self.augment:
            raise ValueError("DatasetDefaults.augment must name a preset")
        if self.evaluation not in EVALUATION_MODES:
            raise ValueError(
                f"DatasetDefaults.evaluation must be one of {', '.join(EVALUATION_MODES)}, "
                f"got {self.evaluation!r}"
            )

    def components(self) -> dict[str, str]:
        """The component names this data set fixes: ``{"augment": ..., "likelihood": ..., ...}``.

        Components left ``None`` (chosen from the image shape) are omitted.
        """
        names = {k: getattr(self, k) for k in ("augment", "likelihood", "encoder", "decoder")}
        return {k: v for k, v in names.items() if v is not None}


_DEFAULTS: dict[str, DatasetDefaults] = {}


def register_dataset(
    name: str, *, help: str, defaults: DatasetDefaults
) -> Callable[[Callable[..., DataSplits]], Callable[..., DataSplits]]:
    """Decorator: register a data-set factory under ``name`` together with its defaults.

    Example:
        >>> @register_dataset("mydata", help="...", defaults=DatasetDefaults(augment="mnist"))
        ... def mydata(seed: int, *, root: str | None = None) -> DataSplits: ...

    Raises:
        TypeError: if ``defaults`` is not a :class:`DatasetDefaults`.
        ValueError: if ``name`` is already registered.
    """
    if not isinstance(defaults, DatasetDefaults):
        raise TypeError(
            f"defaults for data set {name!r} must be DatasetDefaults, got {type(defaults).__name__}"
        )
    register = DATASETS.register(name, help=help)

    def decorate(factory: Callable[..., DataSplits]) -> Callable[..., DataSplits]:
        register(factory)
        _DEFAULTS[name] = defaults
        return factory

    return decorate


def dataset_defaults(name: str) -> DatasetDefaults | None:
    """The defaults data set ``name`` declared, or ``None`` for a name no registered data set has.

    Data passed from Python (``train(config, data=...)``) may carry any name; the
    run then needs its augmentation named explicitly.
    """
    return _DEFAULTS.get(name)


def evaluation_transform(name: str, augmenter: ViewAugmenter) -> Augmentation | None:
    """The transform evaluation images of data set ``name`` get under ``augmenter``, or ``None``.

    The parameter-free pixel-wise steps that end the views' pipeline
    (:meth:`pssl.augment.ViewAugmenter.evaluation_transform`), unless the data set
    declared ``evaluation="raw"``.
    """
    defaults = dataset_defaults(name)
    if defaults is not None and defaults.evaluation == "raw":
        return None
    return augmenter.evaluation_transform()


def evaluation_splits(splits: DataSplits, augmenter: ViewAugmenter, *, chunk: int = 8192) -> DataSplits:
    """The splits evaluation reads: images of the same kind as the training views.

    When the views end in binarisation at 0.5, every split's images are binarised
    the same way (``uint8`` images stay ``uint8``, as 0 or 255; float images stay
    float); labels and style factors are shared, not copied. Otherwise ``splits``
    itself is returned.

    Args:
        splits: the run's data.
        augmenter: the run's view augmentation.
        chunk: images converted at a time (bounds the float memory).
    """
    transform = evaluation_transform(splits.name, augmenter)
    if transform is None:
        return splits

    def convert(part: TensorData) -> TensorData:
        images = part.images
        out = torch.empty_like(images)
        for start in range(0, len(images), chunk):
            block = images[start : start + chunk]
            floats = block.float().div_(255.0) if block.dtype == torch.uint8 else block.float()
            done = transform.apply(floats, {})
            out[start : start + chunk] = (
                done.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
                if images.dtype == torch.uint8
                else done.to(images.dtype)
            )
        return TensorData(out, part.labels, part.factors, part.factor_kinds, part.num_classes)

    return DataSplits(
        train=convert(splits.train),
        val=convert(splits.val),
        test=convert(splits.test),
        name=splits.name,
        paired=splits.paired,
    )
