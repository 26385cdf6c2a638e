"""Name-to-factory registries for components chosen by name.

Every swappable part (data set, network, prior, likelihood, model, objective)
is registered under a short name with a one-line description. Options arrive
from the command line as strings and are coerced to the annotated types of the
factory's keyword arguments, so a registered factory's signature *is* its
documented parameter list.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


@dataclass(frozen=True)
class Entry:
    """One registered component."""

    name: str
    factory: Callable[..., Any]
    help: str

    def parameters(self) -> dict[str, inspect.Parameter]:
        """Keyword parameters a user may set, in declaration order."""
        sig = inspect.signature(self.factory)
        return {
            k: p
            for k, p in sig.parameters.items()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and not k.startswith("_")
        }

    def type_hints(self) -> dict[str, Any]:
        """Annotations of the factory's parameters (of ``__init__`` for classes)."""
        target = self.factory.__init__ if inspect.isclass(self.factory) else self.factory
        try:
            return typing.get_type_hints(target)
        except Exception:  # unresolvable forward references: fall back to no coercion
            return {}

    def signature_line(self) -> str:
        """``name(option=default, ...)`` for help listings."""
        parts = []
        for k, p in self.parameters().items():
            if p.default is inspect.Parameter.empty:
                continue  # supplied by the framework (shapes, sizes), not by users
            parts.append(f"{k}={p.default!r}")
        return f"{self.name}({', '.join(parts)})"


def coerce(value: Any, annotation: Any, *, where: str) -> Any:
    """Convert ``value`` (often a string from the command line) to ``annotation``.

    Raises:
        TypeError: if the value cannot be read as the annotated type; the
            message names ``where`` (e.g. ``"prior.df"``) and the expected type.
    """
    if annotation is inspect.Parameter.empty or annotation is Any:
        return value
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() == "none"):
            if type(None) in args:
                return None
        errors: list[TypeError | ValueError] = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where=where)
            except (TypeError, ValueError) as err:
                errors.append(err)
        refused = [err for err in errors if isinstance(err, ValueError)]  # read, but out of range
        if refused:
            raise refused[0]
        raise TypeError(f"{where}: cannot read {value!r} as {_type_name(annotation)}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ValueError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
    if origin in (tuple, list):
        items = value.split(",") if isinstance(value, str) else list(value)
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0], where=where) for v in items)
        if origin is tuple and args:
            if len(items) != len(args):
                raise TypeError(f"{where}: expected {len(args)} comma-separated values, got {value!r}")
            return tuple(coerce(v, a, where=where) for v, a in zip(items, args))
        inner = args[0] if args else Any
        return origin(coerce(v, inner, where=where) for v in items)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise TypeError(f"{where}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise TypeError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(str(value))
        except ValueError:
            raise TypeError(f"{where}: expected an integer, got {value!r}") from None
    if annotation is float:
        if isinstance(value, bool):
            raise TypeError(f"{where}: expected a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"{where}: expected a number, got {value!r}") from None
        if not math.isfinite(number):  # every numeric option: NaN passes every range check silently
            raise ValueError(f"{where}: expected a finite number, got {value!r}")
        return number
    if annotation is str:
        if isinstance(value, str):
            return value
        raise TypeError(f"{where}: expected a string, got {value!r}")
    if isinstance(annotation, type) and isinstance(value, annotation):
        return value
    if isinstance(annotation, type) and isinstance(value, str):
        raise TypeError(f"{where}: expected {_type_name(annotation)}, got the string {value!r}")
    return value


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


class Registry(Generic[T]):
    """A named collection of factories for one kind of component.

    Example:
        >>> priors = Registry("prior")
        >>> @priors.register("gaussian", help="isotropic Gaussian N(0, scale^2 I)")
        ... def gaussian(latent_dim: int, *, scale: float = 1.0): ...
        >>> priors.build("gaussian", {"scale": "2.0"}, latent_dim=10)
    """

    def __init__(self, kind: str, *, key: str | None = None) -> None:
        self.kind = kind
        self.key = key or kind
        """The configuration key users type (``augment`` in ``augment.crop_scale_min=2``)."""
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, *, help: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering ``factory`` under ``name``."""

        def decorate(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = Entry(name, factory, help)
            return factory

        return decorate

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._entries)

    def entries(self) -> list[Entry]:
        """Registered entries, in registration order."""
        return list(self._entries.values())

    def entry(self, name: str) -> Entry:
        """The entry called ``name``.

        Raises:
            ValueError: naming the unknown name and every accepted one.
        """
        if not isinstance(name, str) or name not in self._entries:
            accepted = ", ".join(self._entries) or "(none registered)"
            raise ValueError(f"unknown {self.kind} {name!r}; accepted: {accepted}")
        return self._entries[name]

    def resolve_options(self, name: str, options: dict[str, Any] | None) -> dict[str, Any]:
        """Check and coerce user options for ``name`` against its factory signature.

        Raises:
            ValueError: for an option the factory does not take (names the accepted ones).
            TypeError: for a value that cannot be read as the annotated type.
        """
        entry = self.entry(name)
        params = entry.parameters()
        hints = entry.type_hints()
        resolved: dict[str, Any] = {}
        for key, value in (options or {}).items():
            if key not in params or params[key].default is inspect.Parameter.empty:
                settable = [k for k, p in params.items() if p.default is not inspect.Parameter.empty]
                raise ValueError(
                    f"{self.kind} {name!r} has no option {key!r}; accepted: {', '.join(settable) or '(none)'}"
                )
            resolved[key] = coerce(value, hints.get(key, Any), where=f"{self.key}.{key}")
        return resolved

    def build(self, name: str, options: dict[str, Any] | None = None, /, **framework: Any) -> T:
        """Construct ``name`` with user ``options`` plus framework-supplied arguments.

        A ``ValueError``/``TypeError`` the factory raises about a value names the
        options the user typed (``model.proj_dim=0: ...``): factories check their own
        parameters, whose names (``output_dim``) need not be the options' names.
        """
        entry = self.entry(name)
        resolved = self.resolve_options(name, options)
        try:
            return entry.factory(**framework, **resolved)
        except (ValueError, TypeError) as err:
            if type(err) not in (ValueError, TypeError) or not options:
                raise
            typed = ", ".join(f"{self.key}.{k}={v}" for k, v in options.items())
            if all(f"{self.key}.{k}" in str(err) for k in options):
                raise
            raise type(err)(f"{self.key}={name} with {typed}: {err}") from err

    def describe(self) -> str:
        """One line per entry: signature and help, for ``--help`` listings."""
        return "\n".join(f"  {e.signature_line():<40s} {e.help}" for e in self._entries.values())
