"""Argument checks shared by every part of pssl (one wording for one kind of mistake).

Each returns the value in its plain Python type or raises ``ValueError`` naming
the argument and the bad value, e.g. ``latent_dim must be a positive integer,
got 0``. They are plain ``if`` tests, not ``assert`` (which ``python -O`` strips).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def _is_integer(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def positive_int(value: Any, name: str) -> int:
    """``value`` as an ``int`` if it is an integer ``>= 1``."""
    return int_at_least(value, name, 1)


def int_at_least(value: Any, name: str, minimum: int) -> int:
    """``value`` as an ``int`` if it is an integer ``>= minimum``."""
    if not _is_integer(value) or value < minimum:
        wanted = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {wanted}, got {value!r}")
    return int(value)


def positive_number(value: Any, name: str) -> float:
    """``value`` as a ``float`` if it is a finite number ``> 0``."""
    if not _is_real(value) or not math.isfinite(value) or not value > 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def non_negative_number(value: Any, name: str) -> float:
    """``value`` as a ``float`` if it is a finite number ``>= 0``."""
    if not _is_real(value) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative finite number, got {value!r}")
    return float(value)


__all__ = ["int_at_least", "non_negative_number", "positive_int", "positive_number"]
