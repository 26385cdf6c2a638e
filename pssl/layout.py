"""Tensor layout conventions shared by every part of ``pssl``.

A batch of augmented views is a tensor of shape ``(batch, views, channels,
height, width)``: ``batch`` items, each seen through ``views`` augmentations.
Images are floats in ``[0, 1]`` on the training device; data sets store them as
``uint8`` in ``(items, channels, height, width)``.
"""

from __future__ import annotations

ITEM_DIM = 0
"""Axis of the item (group) index in a view tensor."""
VIEW_DIM = 1
"""Axis of the view index in a view tensor."""
IMAGE_EVENT_DIMS = 3
"""Number of trailing image dimensions ``(channels, height, width)``."""
