"""Named recipes: published setups as plain config files, and loading any config file.

A recipe is a JSON file in this folder (shipped with the package): the keys of
:class:`pssl.config.Config` (``"model": {"name": ..., "options": {...}}``,
``"lr": 8e-5``, ...) plus a one-line ``"description"``. The same loader reads a
previous run's ``config.json``, so a run can be repeated or varied::

    pssl train recipe=paper-fashionmnist
    pssl train recipe=paper-mnist data.root=../shared/data/mnist epochs=10
    pssl train config=runs/simvae-mnist-seed0/config.json seed=1 out=runs/again
    pssl list recipes

Overrides given after ``recipe=``/``config=`` apply on top of the file. A file
never chooses where a run is written: ``out`` and ``resume`` in it are ignored
(a previous run's directory is not reused by accident); set ``out=`` explicitly.

Shipped recipes (the authors' reference setup, PAPER.md section 5, as far as pssl
expresses it; see the README's "pssl default vs paper setup"):

* ``paper-mnist``, ``paper-fashionmnist``: MLP networks, latent 10, Bernoulli
  likelihood scaled by ``e^4.6``, plug-in y-guide, MNIST binarised at 0.5;
* ``paper-cifar10``, ``paper-celeba``: the half-width ResNet-18 pair
  (``resnet18-half``), latent 64, Gaussian likelihood with ``sigma^2 = e^-4.6``.

All of them: J = 2 views, 64 items per step, Adam lr 8e-5 and eps 1e-4, 400 epochs.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from pssl.config import Config, ConfigError, apply_overrides, parse_overrides

FILE_ONLY_KEYS = ("description", "resolved")
"""Keys a config file may hold besides the Config fields (a recipe's description, a run's resolved record)."""
NOT_FROM_FILES = ("out", "resume")
"""Fields a file never sets: where a run is written is chosen by the command, not inherited."""
BASE_KEYS = ("recipe", "config")
"""Command-line keys that choose the base configuration."""


def _folder() -> Any:
    return resources.files(__name__)


def recipe_names() -> list[str]:
    """Names of the shipped recipes, sorted."""
    return sorted(p.name[: -len(".json")] for p in _folder().iterdir() if p.name.endswith(".json"))


def recipe_path(name: str) -> Path:
    """The file of recipe ``name``.

    Raises:
        ConfigError: for an unknown name, listing the accepted ones.
    """
    names = recipe_names()
    if name not in names:
        raise ConfigError(f"unknown recipe {name!r}; accepted: {', '.join(names)}")
    return Path(str(_folder().joinpath(f"{name}.json")))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The raw JSON object of a config file.

    Raises:
        ConfigError: naming the file, if it is missing, unreadable, not JSON or not an object.
    """
    path = Path(path)
    text = _read_small_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"config file {path} is not valid JSON: {err}") from None
    except RecursionError:
        raise ConfigError(f"config file {path} nests too deeply to be a config file") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} must hold a JSON object of config keys, got {type(data).__name__}"
        )
    return data


MAX_CONFIG_BYTES = 1 << 20
"""A config file is a few hundred bytes; anything beyond this is not one (e.g. ``/dev/zero``)."""


def _read_small_text(path: Path) -> str:
    """The UTF-8 text of a regular file of at most :data:`MAX_CONFIG_BYTES`, or a one-line ConfigError.

    A FIFO or device (``/dev/zero``, ``/dev/stdin``) would block or never end, and a link
    that points to itself never resolves: each is refused naming the file.
    """
    import errno
    import os
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except OSError as err:
        cause = "a symbolic link that points to itself" if err.errno == errno.ELOOP else err.strerror
        raise ConfigError(f"config file {path} cannot be read: {cause}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"config file {path} is not a regular file (a folder, FIFO or device)")
        with os.fdopen(os.dup(fd), "rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"config file {path} cannot be read: {err.strerror or err}") from None
    finally:
        os.close(fd)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path} is larger than {MAX_CONFIG_BYTES} bytes; not a config file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"config file {path} is not UTF-8 text ({err.reason} at byte {err.start})"
        ) from None


def load_config_file(path: str | Path) -> Config:
    """A :class:`Config` from a recipe or a run's ``config.json`` (``out``/``resume`` left at defaults).

    Raises:
        ConfigError: naming the file, for a malformed file or an unknown or bad key.
    """
    data = {k: v for k, v in read_config_file(path).items() if k not in FILE_ONLY_KEYS + NOT_FROM_FILES}
    try:
        return Config.from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"config file {path}: {err}") from None


def recipe_description(name: str) -> str:
    """The one-line description recipe ``name`` carries."""
    return str(read_config_file(recipe_path(name)).get("description", "")).strip()


def load_recipe(name: str) -> Config:
    """The :class:`Config` of recipe ``name`` (unresolved: data-dependent parts are filled at training).

    Raises:
        ConfigError: for an unknown recipe (listing the accepted names) or a malformed file.
    """
    return load_config_file(recipe_path(name))


def describe_recipes() -> str:
    """One line per recipe, for ``pssl list recipes``."""
    names = recipe_names()
    width = max(map(len, names), default=0)
    return "\n".join(f"  {name:<{width}s}  {recipe_description(name)}" for name in names)


def config_from_tokens(tokens: list[str] | tuple[str, ...]) -> Config:
    """A :class:`Config` from command-line tokens that may start from a recipe or a file.

    ``recipe=NAME`` or ``config=PATH`` (at most one of them, once, anywhere among the
    tokens) chooses the base; every other ``key=value`` applies on top of it, in
    order. Without either the base is ``Config()``.

    Raises:
        ConfigError: for an unknown recipe, a malformed file, both or repeated
            base keys, or a bad override.
    """
    chosen = [t for t in tokens if isinstance(t, str) and t.split("=", 1)[0].strip() in BASE_KEYS]
    rest = [t for t in tokens if t not in chosen]
    if len(chosen) > 1:
        raise ConfigError(f"give at most one of recipe=NAME or config=PATH, got {' '.join(chosen)}")
    start = Config()
    if chosen:
        key, _, value = chosen[0].partition("=")
        key, value = key.strip(), value.strip()
        if not value:
            expected = ", ".join(recipe_names()) if key == "recipe" else "the path of a JSON config file"
            raise ConfigError(f"{chosen[0]!r} is empty; expected {expected}")
        start = load_recipe(value) if key == "recipe" else load_config_file(value)
    return apply_overrides(start, parse_overrides(rest))


__all__ = [
    "config_from_tokens",
    "describe_recipes",
    "load_config_file",
    "load_recipe",
    "read_config_file",
    "recipe_description",
    "recipe_names",
    "recipe_path",
]
