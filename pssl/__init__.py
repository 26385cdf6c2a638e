"""pssl: probabilistic self-supervised learning with Pyro."""

from __future__ import annotations

__version__ = "0.1.0"
