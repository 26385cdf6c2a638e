r"""Mixed precision: bf16 compute in the networks, fp32 everywhere else.

``precision=bf16`` trains with

* **fp32 master weights and optimiser state**: the parameters stay float32 and
  Adam updates them (and its moments) in float32, so small updates are not lost
  to bf16's 8-bit significand (relative spacing :math:`2^{-8}`);
* **bf16 compute in the networks**: each *network* of a method (a top-level
  sub-module holding a linear or convolution layer: encoder, decoder, backbone,
  projection head, ...) runs its forward under ``torch.autocast(dtype=bfloat16)``.
  Autocast casts each weight to bf16 once per forward (its cast cache lives for
  the forward), runs the matrix products in bf16 and keeps reductions such as
  batch norm in fp32; the backward computes the weight gradients in bf16 and
  accumulates them into the fp32 ``.grad``;
* **fp32 outside the networks**: a network's floating outputs are cast back to
  float32 where they leave it, so the priors, the likelihood
  :math:`\log p(x \mid z)`, the ELBO's terms and the loss are evaluated and
  reduced in float32, as are the logged nats per item.

The networks are found once (:func:`network_modules`) and given a pair of
forward hooks (:func:`enable_network_precision`); the hooks do nothing unless a
:func:`network_compute` block is active, so the same model evaluates in fp32
outside the training step (validation, probes, diagnostics) and a deep copy of
the model (a benchmark's floor step) obeys the same switch.

bf16 pays only where the hardware multiplies bf16 natively (x86
``avx512_bf16``/``amx_bf16``, Arm ``bf16``, CUDA compute capability >= 8); elsewhere
it is emulated and slower than fp32, so :func:`check_precision` refuses it with one
line naming the reason.
"""

from __future__ import annotations

import contextvars
import platform
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_map

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}
"""``precision`` option -> the networks' compute dtype (``None``: the parameters' own)."""

COMPUTE_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Bilinear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)
"""Layers whose presence makes a sub-module a network (they hold the matrix products)."""

X86_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
ARM_BF16_FLAGS = ("bf16",)

# (device type, dtype) of the active network_compute block, if any.
_ACTIVE: contextvars.ContextVar[tuple[str, torch.dtype] | None] = contextvars.ContextVar(
    "pssl_network_compute", default=None
)
# The autocast contexts the pre-hooks entered, innermost last (one stack per thread).
_ENTERED = threading.local()


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str] | None:
    """The CPU feature flags the kernel reports (x86 ``flags``, Arm ``Features``); ``None`` if unknown."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return None


def native_bf16(device: torch.device | str) -> tuple[bool, str]:
    """Whether ``device`` multiplies bf16 natively, and a one-line reason.

    CPU: the kernel's feature flags name ``avx512_bf16`` or ``amx_bf16`` (x86) or
    ``bf16`` (Arm). CUDA: ``torch.cuda.is_bf16_supported`` without emulation.
    Other devices: no.
    """
    device = torch.device(device)
    if device.type == "cuda":
        try:
            ok = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # older torch: no including_emulation
            ok = torch.cuda.is_bf16_supported()
        name = torch.cuda.get_device_name(device) if ok else "this CUDA device"
        return ok, f"{name} {'has' if ok else 'lacks'} native bf16 (compute capability >= 8.0)"
    if device.type == "cpu":
        flags = cpu_flags()
        if flags is None:
            return False, f"cannot read this CPU's feature flags ({platform.system()}, /proc/cpuinfo)"
        found = sorted(flags.intersection(X86_BF16_FLAGS + ARM_BF16_FLAGS))
        if found:
            return True, f"this CPU has {', '.join(found)}"
        return False, (
            f"this CPU has none of {', '.join(X86_BF16_FLAGS + ARM_BF16_FLAGS)} in its feature flags, "
            "so bf16 would be emulated and slower than fp32"
        )
    return False, f"pssl's bf16 path covers cpu and cuda, not {device.type}"


def check_precision(precision: str, device: torch.device | str) -> None:
    """Raise ``ValueError`` (one line) when ``precision`` cannot pay on ``device``.

    Raises:
        ValueError: an unknown precision, or ``bf16`` on a device without native bf16.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if PRECISIONS[precision] is torch.bfloat16:
        ok, reason = native_bf16(device)
        if not ok:
            raise ValueError(f"precision=bf16 refused: {reason}; use precision=fp32")


def network_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The networks of ``model``: its top-level sub-modules that hold a linear or convolution layer.

    A model that is itself a compute layer (no children) is its own network.
    """
    if isinstance(model, COMPUTE_LAYERS):
        return [("", model)]
    return [
        (name, child)
        for name, child in model.named_children()
        if any(isinstance(m, COMPUTE_LAYERS) for m in child.modules())
    ]


def _to_fp32(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != torch.float32:
        if value.dtype in (torch.bfloat16, torch.float16):
            return value.float()
    return value


def _enter(module: nn.Module, args: Any) -> None:
    active = _ACTIVE.get()
    if active is None:
        return
    device_type, dtype = active
    context = torch.autocast(device_type=device_type, dtype=dtype)
    context.__enter__()
    stack = getattr(_ENTERED, "stack", None)
    if stack is None:
        stack = _ENTERED.stack = []
    stack.append((module, context))


def _leave(module: nn.Module, args: Any, output: Any) -> Any:
    stack = getattr(_ENTERED, "stack", None)
    if not stack or stack[-1][0] is not module:
        return None  # this forward ran outside a network_compute block
    _, context = stack.pop()
    context.__exit__(None, None, None)
    return tree_map(_to_fp32, output)


def enable_network_precision(model: nn.Module) -> list[str]:
    """Give each network of ``model`` the hooks that :func:`network_compute` switches on.

    Idempotent (a network already hooked is skipped). The hooks are inert outside a
    :func:`network_compute` block. Returns the names of the networks
    (``""`` when ``model`` is itself a layer).
    """
    names = []
    for name, module in network_modules(model):
        names.append(name)
        if getattr(module, "_pssl_network_precision", False):
            continue
        module.register_forward_pre_hook(_enter)
        module.register_forward_hook(_leave, always_call=True)
        module._pssl_network_precision = True
    return names


@contextmanager
def network_compute(precision: str, device_type: str) -> Iterator[None]:
    """Within this block the hooked networks compute in ``precision`` (a no-op for ``fp32``).

    Args:
        precision: ``fp32`` or ``bf16``.
        device_type: ``cpu`` or ``cuda`` (autocast's device type).
    """
    dtype = PRECISIONS[precision]
    if dtype is None:
        yield
        return
    token = _ACTIVE.set((device_type, dtype))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


__all__ = [
    "COMPUTE_LAYERS",
    "PRECISIONS",
    "check_precision",
    "cpu_flags",
    "enable_network_precision",
    "native_bf16",
    "network_compute",
    "network_modules",
]
