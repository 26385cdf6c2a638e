"""Run configuration as plain typed data, and the ``key=value`` override parser.

A configuration is a :class:`Config` dataclass. Components chosen by name (the
model, data set, prior, likelihood, networks, augmentation preset) are
:class:`Component` values: a registered name plus its options. Options stay as
given (often strings from the shell) until the component's registry coerces
them against its factory's annotated signature, so every component documents
and checks its own options.

Command-line overrides::

    model=simvae data=fashionmnist epochs=10 seed=0 out=runs/fm
    likelihood=bernoulli likelihood.scale=99.5 prior.scale=1.0

``section=name`` chooses a component (and clears its options when the name
changes); ``section.option=value`` sets one of its options; ``field=value`` sets
a plain field. Anything else raises :class:`ConfigError` naming the token and
the accepted keys.

An option may be set on a component the run leaves to the data
(``likelihood.scale=99.5`` without ``likelihood=``): the component keeps no name
(``Component(None, {"scale": "99.5"})``) until the data set's default fills it in
(:meth:`Config.with_defaults`), and the option applies to that default.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pssl.registry import coerce

CONFIG_FORMAT = 1


class ConfigError(ValueError):
    """A malformed or unknown configuration key or value."""


@dataclass
class Component:
    """A component chosen by registered ``name`` with user ``options``.

    ``name=None`` (only for components the data may choose) means "the data set's
    default, with these options".
    """

    name: str | None
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "options": dict(self.options)}

    @classmethod
    def from_value(cls, value: Any, *, where: str) -> Component:
        """Read a component from a name or a ``{"name": ..., "options": {...}}`` dict.

        A dict whose ``name`` is missing or null keeps its options for the default
        the data chooses.
        """
        if isinstance(value, Component):
            return Component(value.name, dict(value.options))
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, dict) and (value.get("name") is None or isinstance(value.get("name"), str)):
            unknown = sorted(set(value) - {"name", "options"})
            if unknown:
                raise ConfigError(f"{where} has unknown keys {unknown}; a component has 'name' and 'options'")
            options = value.get("options", {})
            if not isinstance(options, dict):
                raise ConfigError(f"{where}.options must be a mapping, got {options!r}")
            return cls(value.get("name"), dict(options))
        raise ConfigError(f"{where} must be a name or {{'name': ..., 'options': {{...}}}}, got {value!r}")


@dataclass
class Config:
    """Everything that defines a run. ``None`` components are filled with
    defaults that depend on the data (see :func:`pssl.experiment.resolve_config`),
    and the resolved values are what a run directory records.

    Attributes:
        model: the method (``simvae``, ``vae``, ...), options e.g. ``y_guide``, ``beta``.
        data: the data set, options e.g. ``root``, ``val_fraction``, ``limit``.
        prior: p(y) for SimVAE, p(z) for a VAE.
        view_prior: p(z | y) for SimVAE.
        likelihood: p(x | z).
        encoder, decoder: networks by name (default chosen from the image shape).
        augment: the view augmentation preset (default chosen from the data set).
        objective: the Pyro ELBO the loop minimises (``trace``, ``tracegraph``, ``renyi``,
            ``iwae``, ``tracemeanfield``, ``traceenum``), options e.g.
            ``objective.num_particles=8 objective.vectorize_particles=true objective.alpha=0``.
        latent_dim: size of z (and y).
        num_views: J, augmented views per item.
        batch_size: items per step (each contributes ``num_views`` images).
        epochs: passes over the training items.
        lr, adam_eps, weight_decay: Adam settings (reference: 8e-5, 1e-4, 0).
        seed: the single seed all randomness derives from.
        device: ``auto`` (CUDA if available), ``cpu``, ``cuda``, ``cuda:1``, ...
        out: run directory; ``None`` means ``runs/<model>-<data>-seed<seed>``.
        resume: continue from the run directory's last checkpoint.
        log_every: steps between history rows.
        keep_checkpoints: how many recent checkpoints to keep.
        checkpoint_every: steps between mid-epoch checkpoints (0: only at epoch ends).
        checkpoint_seconds: at an epoch end, write a checkpoint only if this many seconds
            passed since the last one (0: every epoch); the last epoch, mid-epoch
            ``checkpoint_every`` steps and interrupts always write one.
        nonfinite: ``stop`` (default) or ``skip`` a step whose loss or gradient is not finite.
        progress: show a progress bar.
        precision: ``fp32`` or ``bf16`` (bf16 compute in the networks, fp32 master weights, optimiser
            state, likelihood and loss; refused on a device without native bf16, see
            :mod:`pssl.inference.precision`).
        logger: ``csv`` (history.csv, epochs.csv) or ``tensorboard`` (the CSV files and
            TensorBoard events in ``RUN_DIR/tensorboard``; ``tensorboard --logdir runs/``).
    """

    model: Component = field(default_factory=lambda: Component("simvae"))
    data: Component = field(default_factory=lambda: Component("digits"))
    prior: Component | None = None
    view_prior: Component | None = None
    likelihood: Component | None = None
    encoder: Component | None = None
    decoder: Component | None = None
    augment: Component | None = None
    objective: Component = field(default_factory=lambda: Component("trace"))
    latent_dim: int = 10
    num_views: int = 2
    batch_size: int = 64
    epochs: int = 10
    lr: float = 8e-5
    adam_eps: float = 1e-4
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"
    out: str | None = None
    resume: bool = False
    log_every: int = 10
    keep_checkpoints: int = 2
    checkpoint_every: int = 0
    checkpoint_seconds: float = 60.0
    nonfinite: str = "stop"
    progress: bool = True
    precision: str = "fp32"
    logger: str = "csv"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check the plain fields' values; components are checked by their registries."""
        positive = ("latent_dim", "num_views", "batch_size", "epochs", "log_every", "keep_checkpoints")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("checkpoint_every", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{name} must be a non-negative integer, got {value!r}")
        if self.out is not None and (not isinstance(self.out, str) or not self.out.strip()):
            raise ConfigError(
                f"out= needs a folder, got {self.out!r}; leave out= off for the default "
                "runs/MODEL-DATA-seedSEED"
            )
        if self.seed >= 2**63:
            raise ConfigError(f"seed must be below 2**63, got {self.seed!r}")
        for name in ("lr", "adam_eps"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 < value < math.inf:
                raise ConfigError(f"{name} must be a positive finite number, got {value!r}")
        if not _is_number(self.checkpoint_seconds) or not 0 <= self.checkpoint_seconds < math.inf:
            raise ConfigError(
                f"checkpoint_seconds must be a non-negative finite number, got {self.checkpoint_seconds!r}"
            )
        if not _is_number(self.weight_decay) or not 0 <= self.weight_decay < math.inf:
            raise ConfigError(f"weight_decay must be a non-negative finite number, got {self.weight_decay!r}")
        for name in ("model", "data", "objective"):
            value = getattr(self, name)
            if not isinstance(value, Component) or not isinstance(value.name, str):
                raise ConfigError(
                    f"{name} must be a Component (a registered name and options), got {value!r}"
                )
        if self.nonfinite not in ("stop", "skip"):
            raise ConfigError(f"nonfinite must be 'stop' or 'skip', got {self.nonfinite!r}")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if self.logger not in ("csv", "tensorboard"):
            raise ConfigError(f"logger must be 'csv' or 'tensorboard', got {self.logger!r}")

    def with_defaults(self, defaults: dict[str, str]) -> Config:
        """A copy with the components the user left to the data filled from ``defaults``.

        Args:
            defaults: component key -> registered name (e.g. a data set's
                ``DatasetDefaults.components()`` plus shape-based choices). A
                component that is ``None`` becomes ``Component(name)``; one with
                options but no name (``likelihood.scale=99.5`` alone) gets the name
                and keeps its options. Components the user named are untouched.

        Raises:
            ConfigError: for a key that is not an optional component.
        """
        changes: dict[str, Component] = {}
        for key, name in defaults.items():
            if key not in OPTIONAL_COMPONENT_KEYS:
                raise ConfigError(f"no default can be given for {key!r}; accepted: {OPTIONAL_COMPONENT_KEYS}")
            current = getattr(self, key)
            if current is None:
                changes[key] = Component(name)
            elif current.name is None:
                changes[key] = Component(name, dict(current.options))
        return dataclasses.replace(self, **changes) if changes else self

    def unresolved(self) -> list[str]:
        """Components still chosen by the data (``None`` or without a name)."""
        return [
            k for k in OPTIONAL_COMPONENT_KEYS if getattr(self, k) is None or getattr(self, k).name is None
        ]

    # --- plain-data round trip -------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready nested dict."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if isinstance(value, Component) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        return apply_overrides(cls(), data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Config:
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path} is not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a JSON object")
        return cls.from_dict(data)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_FIELDS = {f.name: f for f in dataclasses.fields(Config)}
_HINTS = typing.get_type_hints(Config)
COMPONENT_KEYS = tuple(k for k, h in _HINTS.items() if Component in (h, *typing.get_args(h)))
PLAIN_KEYS = tuple(k for k in _FIELDS if k not in COMPONENT_KEYS)
OPTIONAL_COMPONENT_KEYS = tuple(k for k in COMPONENT_KEYS if type(None) in typing.get_args(_HINTS[k]))
"""Components that may be left as ``None`` (chosen from the data); ``model`` and ``data`` may not."""


def accepted_keys() -> str:
    """Human-readable list of accepted override keys."""
    return (
        ", ".join(PLAIN_KEYS) + "; components: " + ", ".join(f"{k}=NAME, {k}.OPTION" for k in COMPONENT_KEYS)
    )


def parse_overrides(tokens: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Parse ``key=value`` tokens into an override mapping (values stay strings).

    ``a.b=v`` becomes ``{"a.b": "v"}``; order is kept so that ``prior=laplace
    prior.scale=2`` applies the name first.

    Raises:
        ConfigError: for a token without ``=``, an empty key, or a key that is not
            a field or ``component.option``.
    """
    parsed: dict[str, Any] = {}
    for token in tokens:
        if not isinstance(token, str) or "=" not in token:
            raise ConfigError(
                f"malformed override {token!r}: expected key=value; accepted keys: {accepted_keys()}"
            )
        key, value = token.split("=", 1)
        key = key.strip()
        _check_key(key, token)
        parsed[key] = value
    return parsed


def _check_key(key: str, token: str) -> None:
    head, dot, option = key.partition(".")
    if not head:
        raise ConfigError(f"malformed override {token!r}: empty key")
    if dot:
        if head not in COMPONENT_KEYS or not option or not option.isidentifier():
            raise ConfigError(
                f"unknown override key {key!r} in {token!r}; options are set as COMPONENT.OPTION with "
                f"COMPONENT one of {', '.join(COMPONENT_KEYS)}"
            )
    elif head not in _FIELDS:
        raise ConfigError(f"unknown override key {key!r} in {token!r}; accepted keys: {accepted_keys()}")


def apply_overrides(config: Config, overrides: dict[str, Any]) -> Config:
    """A new :class:`Config` with ``overrides`` applied (from :func:`parse_overrides` or a dict).

    Raises:
        ConfigError: for unknown keys or values of the wrong type.
    """
    values: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        values[f.name] = Component(value.name, dict(value.options)) if isinstance(value, Component) else value
    for key, value in overrides.items():
        _check_key(key, f"{key}={value}")
        head, dot, option = key.partition(".")
        if dot:
            component = values[head]
            if component is None:
                if head not in OPTIONAL_COMPONENT_KEYS:
                    raise ConfigError(f"{key}: choose the {head} first ({head}=NAME {key}={value})")
                # an option for the component the data will choose (checked once it is chosen)
                component = values[head] = Component(None)
            component.options[option] = value
        elif head in COMPONENT_KEYS:
            if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "auto")):
                if head not in OPTIONAL_COMPONENT_KEYS:
                    raise ConfigError(
                        f"{head} cannot be none: choose a registered name "
                        f"({head}=NAME; `pssl list` shows them)"
                    )
                values[head] = None
                continue
            new = Component.from_value(value, where=head)
            if new.name is None and head not in OPTIONAL_COMPONENT_KEYS:
                raise ConfigError(f"{head} needs a registered name ({head}=NAME; `pssl list` shows them)")
            old = values[head]
            if isinstance(value, str) and old is not None and old.name in (new.name, None):
                # re-naming the same component keeps its options, and so does naming one whose
                # options were given before its name (likelihood.scale=2 likelihood=laplace)
                new.options = old.options
            values[head] = new
        else:
            if head == "out" and isinstance(value, str) and value.strip().lower() in ("", "none"):
                raise ConfigError(
                    f"out={value} names no folder; give out=FOLDER, or leave out= off for the default "
                    "runs/MODEL-DATA-seedSEED"
                )
            try:
                values[head] = coerce(value, _HINTS[head], where=head)
            except (TypeError, ValueError) as err:
                raise ConfigError(str(err)) from None
    try:
        return Config(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(str(err)) from None
