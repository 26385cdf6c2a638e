"""Budgets of ``pssl claims``: data sets, networks, epochs, seeds and the shared grid.

A budget fixes everything a run depends on. Every method gets the same grid:
the learning rate and the method's main knob (:data:`KNOBS`). A grid point is
selected per (data set, method) on the linear probe's validation content
accuracy of seed :attr:`Budget.selection_seed`, and only the selected point is
run at the other seeds and read on test. Nothing outside the grid is tuned.

The grid is written as the default point plus one change at a time
(``one-at-a-time``: default, other learning rate, other knob value) or as the
full product of both axes (``product``); :func:`grid_points` gives the points.

Budgets:

* ``smoke``: styled-digits for every claim, tiny networks, two epochs, two seeds (for tests).
* ``cpu``: MNIST and FashionMNIST subsets (``data.limit``) with MLPs narrower
  than the reference, 40 epochs; styled-MNIST (6,000 items on a 28-pixel canvas)
  with a small ResNet whose global average pooling lets content survive the
  views' moves, 12 epochs, SimVAE and the discriminative methods only; three
  seeds; sized to under an hour and a half on two shared CPU cores.
* ``paper``: the recipes' networks and settings (``paper-mnist``,
  ``paper-fashionmnist``, ``paper-cifar10``), full data, 400 epochs, three seeds,
  every method including MoCo and Barlow Twins, and C6 on CIFAR-10 (a GPU run).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from pssl.config import ConfigError

KNOBS: dict[str, str] = {
    "simvae": "likelihood.scale",
    "vae": "likelihood.scale",
    "simclr": "model.temperature",
    "moco": "model.temperature",
    "vicreg": "model.invariance_weight",
    "barlow": "model.off_diagonal_weight",
}
"""The main knob of each method, the second axis of the shared grid."""

GENERATIVE = ("simvae", "vae")
DISCRIMINATIVE = ("simclr", "moco", "vicreg", "barlow")
_PAIRED = "needs paired modalities (paired-* data sets), not the single-image sets of the claims"
SKIPPED_METHODS = {"clip": _PAIRED, "simvae-multimodal": _PAIRED}
"""Registered methods the claims leave out, with the reason the report states."""


@dataclass(frozen=True)
class DataSetting:
    """One data set of a budget: its name, the tokens every run on it gets, and its epochs.

    ``tokens`` come after the budget's settings, so they may replace its networks
    (the styled set's pooled encoder); ``epochs`` (``None``: the budget's) lets a
    data set whose epochs cost more train for fewer of them; ``methods`` (``None``:
    the budget's) leaves out methods that no claim on this data set reads.
    """

    name: str
    tokens: tuple[str, ...] = ()
    epochs: int | None = None
    methods: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Budget:
    """Everything that defines the runs of one budget.

    Attributes:
        name: ``smoke``, ``cpu`` or ``paper``.
        content_data: data sets of C1 and C2 (content classification).
        styled_data: the data set with recorded style factors (C3, C5).
        structure_data: data sets of C4 (latent structure).
        complex_data: the data set of C6 (``None``: C6 not run at this budget).
        methods: methods trained (a subset of :data:`KNOBS`).
        settings: tokens every run gets (networks, epochs, batch size, ...).
        learning_rates: the grid's learning rates (the first is the default point's).
        knob_values: per method, the knob's values (the first is the default point's).
        grid: ``one-at-a-time`` or ``product`` (see :func:`grid_points`).
        seeds: test seeds (the selection seed must be among them).
        selection_seed: the seed every grid point is run at for selection.
        epochs: training epochs of every run.
        checkpoints_per_run: evenly spaced checkpoints kept per run (the last is the
            end of training); earlier ones show how a difference moves with budget.
        curve_fractions: the shares of the epochs at which rows that do not hold are
            read again (each must be a kept checkpoint's share).
        device: where runs train.
    """

    name: str
    content_data: tuple[DataSetting, ...]
    styled_data: DataSetting
    structure_data: tuple[str, ...]
    complex_data: DataSetting | None
    methods: tuple[str, ...]
    settings: tuple[str, ...]
    learning_rates: tuple[float, ...]
    knob_values: dict[str, tuple[str, ...]]
    grid: Literal["one-at-a-time", "product"]
    seeds: tuple[int, ...]
    epochs: int
    selection_seed: int = 0
    checkpoints_per_run: int = 4
    curve_fractions: tuple[float, ...] = (0.25, 0.5)
    device: str = "cpu"

    def methods_of(self, data: str) -> tuple[str, ...]:
        """Methods trained on the data set called ``data`` (in the budget's order)."""
        for setting in self.data_sets():
            if setting.name == data and setting.methods is not None:
                return tuple(m for m in self.methods if m in setting.methods)
        return self.methods

    def epochs_of(self, data: str) -> int:
        """Training epochs of every run on the data set called ``data``."""
        for setting in self.data_sets():
            if setting.name == data and setting.epochs is not None:
                return setting.epochs
        return self.epochs

    def data_sets(self) -> tuple[DataSetting, ...]:
        """Every data set the budget trains on, each once, in run order."""
        seen: dict[str, DataSetting] = {}
        extra = (self.complex_data,) if self.complex_data is not None else ()
        for setting in (*self.content_data, self.styled_data, *extra):
            seen.setdefault(setting.name, setting)
        return tuple(seen.values())


@dataclass(frozen=True)
class GridPoint:
    """One point of the grid: a learning rate and a knob value, as ``key=value`` tokens."""

    lr: float
    knob: str
    knob_value: str

    def tokens(self) -> tuple[str, ...]:
        return (f"lr={self.lr:g}", f"{self.knob}={self.knob_value}")

    @property
    def label(self) -> str:
        """A folder-safe name, e.g. ``lr0.001-temperature0.5``."""
        return f"lr{self.lr:g}-{self.knob.split('.')[-1]}{self.knob_value}"


def grid_points(budget: Budget, method: str) -> tuple[GridPoint, ...]:
    """The grid of ``method`` under ``budget``, the default point first.

    ``one-at-a-time``: (lr_1, k_1), (lr_i, k_1) for the other learning rates,
    (lr_1, k_j) for the other knob values. ``product``: every (lr_i, k_j).
    """
    if method not in KNOBS:
        raise ConfigError(f"no grid for method {method!r}; accepted: {', '.join(KNOBS)}")
    knob, values = KNOBS[method], budget.knob_values[method]
    if budget.grid == "product":
        return tuple(GridPoint(lr, knob, v) for lr in budget.learning_rates for v in values)
    first_lr, first_value = budget.learning_rates[0], values[0]
    points = [GridPoint(first_lr, knob, first_value)]
    points += [GridPoint(lr, knob, first_value) for lr in budget.learning_rates[1:]]
    points += [GridPoint(first_lr, knob, v) for v in values[1:]]
    return tuple(points)


def checkpoint_tokens(budget: Budget, steps_per_epoch: int, epochs: int | None = None) -> tuple[str, ...]:
    """Tokens that keep :attr:`Budget.checkpoints_per_run` evenly spaced checkpoints.

    A checkpoint every ``epochs * steps_per_epoch / K`` steps (a whole number of
    epochs where ``K`` divides ``epochs``), none on a timer, and the last ``K`` kept.
    An interrupt (Ctrl-C, SIGTERM) still writes one, so an interrupted run resumes.
    """
    count = max(1, budget.checkpoints_per_run)
    every = max(1, ((budget.epochs if epochs is None else epochs) * steps_per_epoch) // count)
    return (f"checkpoint_every={every}", "checkpoint_seconds=1e9", f"keep_checkpoints={count + 1}")


_DISCRIMINATIVE_KNOBS = {
    "simclr": ("0.5", "0.2"),
    "moco": ("0.2", "0.5"),
    "vicreg": ("25", "10"),
    "barlow": ("0.005", "0.02"),
}
_GENERATIVE_KNOBS = {"simvae": ("1", "99.5"), "vae": ("1", "99.5")}
"""Likelihood scale 1 (the plain ELBO) and e^4.6 = 99.5 (the authors' weighting)."""

SMOKE = Budget(
    name="smoke",
    # one data set for every claim keeps the smoke run under a minute
    content_data=(DataSetting("styled-digits", ("data.limit=400",)),),
    styled_data=DataSetting("styled-digits", ("data.limit=400",)),
    structure_data=("styled-digits",),
    complex_data=None,
    methods=("simvae", "vae", "simclr"),
    settings=(
        "encoder=mlp",
        "encoder.hidden=64",
        "decoder=mlp",
        "decoder.hidden=64",
        "latent_dim=8",
        "num_views=2",
        "batch_size=64",
    ),
    learning_rates=(1e-3,),
    knob_values={**_GENERATIVE_KNOBS, **_DISCRIMINATIVE_KNOBS},
    grid="one-at-a-time",
    seeds=(0, 1),
    epochs=2,
    checkpoints_per_run=2,
    curve_fractions=(0.5,),
)

_CPU_MLP = ("encoder=mlp", "encoder.hidden=256,128")
_CPU_POOLED = ("encoder=resnet", "encoder.channels=16,32,64", "encoder.blocks_per_stage=1")
"""The styled set's encoder at the cpu budget: a small ResNet with global average pooling.

Its views move the glyph across the canvas; a flattening MLP (the content sets'
encoder) cannot pool over position and stays near chance on content there
(measured: linear content 0.12-0.21 after 20 epochs at 2,500 items), so the
styled set gets a translation-equivariant trunk and the same MLP decoder."""

CPU = Budget(
    name="cpu",
    content_data=(
        DataSetting("mnist", ("data.limit=4000", *_CPU_MLP)),
        DataSetting("fashionmnist", ("data.limit=4000", *_CPU_MLP)),
    ),
    # a 28-pixel canvas (the default is 40) keeps the conv trunk affordable on two cores
    # C3 and C5 read SimVAE and the discriminative methods there, never the VAE
    styled_data=DataSetting(
        "styled-mnist",
        ("data.limit=6000", "data.canvas=28", *_CPU_POOLED),
        epochs=12,
        methods=("simvae", "simclr", "vicreg"),
    ),
    structure_data=("mnist", "fashionmnist"),
    complex_data=None,
    methods=("simvae", "vae", "simclr", "vicreg"),
    settings=(
        "decoder=mlp",
        "decoder.hidden=128,256",
        "latent_dim=10",
        "num_views=2",
        "batch_size=64",
        "adam_eps=1e-8",
    ),
    learning_rates=(1e-3, 3e-4),
    knob_values={**_GENERATIVE_KNOBS, **_DISCRIMINATIVE_KNOBS},
    grid="one-at-a-time",
    seeds=(0, 1, 2),
    epochs=40,
)

PAPER = Budget(
    name="paper",
    content_data=(
        DataSetting("mnist", ("recipe=paper-mnist",)),
        DataSetting("fashionmnist", ("recipe=paper-fashionmnist",)),
    ),
    # the MNIST recipe's MLPs on the styled set (the recipes have no styled set)
    styled_data=DataSetting("styled-mnist", ("recipe=paper-mnist", "augment=none", "likelihood=none")),
    structure_data=("mnist", "fashionmnist"),
    complex_data=DataSetting("cifar10", ("recipe=paper-cifar10",)),
    methods=("simvae", "vae", "simclr", "moco", "vicreg", "barlow"),
    settings=(),
    learning_rates=(8e-5, 3e-4),
    knob_values={**_GENERATIVE_KNOBS, **_DISCRIMINATIVE_KNOBS},
    grid="product",
    seeds=(0, 1, 2),
    epochs=400,
    device="auto",
)

BUDGETS = {b.name: b for b in (SMOKE, CPU, PAPER)}


def get_budget(name: str) -> Budget:
    """The budget called ``name``.

    Raises:
        ConfigError: naming the accepted budgets.
    """
    if name not in BUDGETS:
        raise ConfigError(f"unknown budget {name!r}; accepted: {', '.join(BUDGETS)}")
    return BUDGETS[name]


def with_seeds(budget: Budget, seeds: tuple[int, ...]) -> Budget:
    """``budget`` with other test seeds (the selection seed is the first of them)."""
    if not seeds:
        raise ConfigError("seeds= needs at least one seed (seeds=0,1,2)")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds lists a seed more than once: {','.join(map(str, seeds))}")
    return dataclasses.replace(budget, seeds=tuple(seeds), selection_seed=seeds[0])


__all__ = [
    "BUDGETS",
    "CPU",
    "DISCRIMINATIVE",
    "GENERATIVE",
    "KNOBS",
    "PAPER",
    "SKIPPED_METHODS",
    "SMOKE",
    "Budget",
    "DataSetting",
    "GridPoint",
    "checkpoint_tokens",
    "get_budget",
    "grid_points",
    "with_seeds",
]
