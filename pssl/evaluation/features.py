"""Representations of images as every probe reads them.

Evaluation reads a model only through ``model.encode(images) -> (B, d)``, the
deterministic representation of un-augmented images (the encoder mean for
SimVAE and the VAE, the backbone output for discriminative SSL), in eval mode
and without gradients. Features are extracted once per split and every probe
works on those cached features.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from pssl.evaluation.protocol import positive_int

__all__ = ["encode_batches", "extract_features", "float_images"]


def model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def float_images(images: Tensor, name: str) -> Tensor:
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    if images.is_floating_point():
        return images.float()
    raise TypeError(f"{name} must be uint8 (0..255) or float in [0, 1], got dtype {images.dtype}")


def encode_batches(
    model: nn.Module,
    batches: Callable[[torch.device], Any],
    device: torch.device | str | None,
) -> Tensor:
    """Run ``model.encode`` on every batch that ``batches(device)`` yields; ``(N, d)`` on the CPU."""
    encode = getattr(model, "encode", None)
    if not callable(encode):
        raise TypeError(f"model must have an encode(images) method, got {type(model).__name__}")
    device = torch.device(device) if device is not None else model_device(model)
    was_training = model.training
    model.eval()
    outputs = []
    try:
        with torch.no_grad():
            for images in batches(device):
                out = encode(images)
                if not isinstance(out, Tensor) or out.ndim != 2 or out.shape[0] != images.shape[0]:
                    shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                    raise ValueError(
                        f"model.encode must return (B, d) for B={images.shape[0]} images, got {shape}"
                    )
                outputs.append(out.detach().to("cpu", torch.float32))
    finally:
        model.train(was_training)
    features = torch.cat(outputs) if outputs else torch.empty(0, 0)
    bad = int((~torch.isfinite(features)).any(1).sum())
    if bad:
        raise ValueError(f"model.encode returned non-finite features for {bad} of {features.shape[0]} items")
    return features


def extract_features(
    model: nn.Module, data: Any, *, batch_size: int = 1024, device: torch.device | str | None = None
) -> Tensor:
    """Representations of every image of ``data``.

    The model is put in eval mode (and restored to its previous mode afterwards)
    and called under ``torch.no_grad()`` in chunks of ``batch_size`` on ``device``
    (default: where the model's parameters live).

    Args:
        model: Module with ``encode(images (B, C, H, W) float in [0, 1]) -> (B, d)``.
        data: An object with ``.images`` (``uint8`` ``(N, C, H, W)``, divided by 255,
            or float already in ``[0, 1]``), or such an images tensor itself.
        batch_size: Images per call of ``encode``.
        device: Where to run the model.

    Returns:
        ``(N, d)`` ``float32`` features on the CPU.

    Raises:
        TypeError: if the images are neither ``uint8`` nor float, or the model has no ``encode``.
        ValueError: if ``encode`` returns a wrong shape or non-finite values.
    """
    images = data if isinstance(data, Tensor) else getattr(data, "images", None)
    if not isinstance(images, Tensor) or images.ndim != 4:
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise TypeError(f"data must be an (N, C, H, W) images tensor or have .images, got {got}")
    batch_size = positive_int(batch_size, "batch_size")
    float_images(images[:0], "data.images")  # dtype check before any work
    if images.shape[0] == 0:
        raise ValueError("data holds no images")

    def batches(dev: torch.device):
        for start in range(0, images.shape[0], batch_size):
            yield float_images(images[start : start + batch_size].to(dev), "data.images")

    return encode_batches(model, batches, device)
