r"""Data-parallel training over several processes (``torchrun``), world-size-independent state.

Start ``W`` processes with ``torchrun`` (one per GPU, or several on CPU)::

    torchrun --nproc_per_node=4 -m pssl train model=simvae data=fashionmnist batch_size=256

and every process runs the same training loop (:mod:`pssl.inference.train`).
This module holds what the loop needs to do so, and nothing else imports the
loop: :func:`setup_distributed` reads the launcher's environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``), initialises
the process group (``gloo`` on CPU, ``nccl`` on CUDA) and picks the device of
the local rank; :class:`DistributedContext` does the few collectives of a step.

Semantics (what "``W`` processes equal one process" means):

* ``batch_size`` is the **global** batch: the items of one optimiser step over
  all ranks. Every rank draws the same seeded permutation of the training items
  for the epoch; step ``t`` takes the same ``batch_size`` positions as one
  process would, and rank ``r`` keeps the ``r``-th of ``W`` equal contiguous
  slices (:meth:`DistributedContext.shard`), so the union over ranks of a
  step's items is exactly the one-process batch, and the number of steps per
  epoch does not depend on ``W``. ``batch_size`` must be divisible by ``W``.
* The objective is a minibatch **sum** over items: the items plate has the
  global size ``N`` and this rank's indices as ``subsample``, so rank ``r``'s
  loss is the sum of its items' negative ELBO and
  ``sum_r loss_r = loss of the concatenated batch``. Gradients are therefore
  **summed** over ranks (an ``all_reduce`` of the gradients after ``backward``,
  done by hand rather than by ``DistributedDataParallel``, whose averaging would
  divide by ``W``). Every replica then takes the same Adam step.
* Batch norm: with ``W > 1`` the loop converts batch-norm layers so that their
  statistics are those of the global batch (``torch.nn.SyncBatchNorm`` on CUDA,
  :class:`DistributedBatchNorm` on CPU, where ``SyncBatchNorm`` is unsupported).
* Randomness: rank ``r`` draws step ``t``'s augmentations and model noise from
  streams seeded by :func:`derive_seed` ``(seed, stream, t, r)``. A checkpoint
  therefore needs no per-rank RNG state; it is world-size independent (model and
  optimiser state are replicated; the data order is global), and a run saved by
  ``W`` processes resumes under any number. Resuming under the same ``W`` is
  exact; under another ``W`` it continues with other augmentation draws.
* Only rank 0 writes (run directory, checkpoints, tables) and shows progress;
  every rank reads the checkpoint rank 0 chooses when resuming.

The collectives a *model* may call (gathers across ranks) live in
:mod:`pssl.collectives`, which depends on nothing in ``pssl``; they are
re-exported here for convenience, but models should import them from there so
that dependencies point from training to models and never back.
"""

from __future__ import annotations

import atexit
import datetime
import os
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from pssl.collectives import (
    all_reduce_with_grad,
    gather,
    gather_with_grad,
    is_distributed,
    local_rows,
    rank,
    world_size,
)
from pssl.config import ConfigError

T = TypeVar("T")

LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE")
"""Environment variables whose presence means a launcher (``torchrun``) started this process."""


# --- seeds ---------------------------------------------------------------------------------


def derive_seed(seed: int, *words: int | str) -> int:
    """A 63-bit seed that depends on ``seed`` and every word (e.g. ``"augment", step, rank``).

    Distinct words give independent streams (``numpy.random.SeedSequence``
    mixing), so rank 1's augmentations at step 7 share nothing with rank 0's.
    """
    key = [int(seed) % 2**64]
    for word in words:
        key.append(zlib.crc32(word.encode()) if isinstance(word, str) else int(word) % 2**64)
    state = np.random.SeedSequence(key).generate_state(1, dtype=np.uint64)[0]
    return int(state) & (2**63 - 1)


def step_seed(seed: int, stream: str, step: int, rank: int) -> int:
    """Seed of ``stream`` (``"augment"`` or ``"model"``) at global ``step`` on ``rank``."""
    return derive_seed(seed, stream, step, rank)


# --- devices ------------------------------------------------------------------------------


def resolve_device(name: str, *, local_rank: int = 0) -> torch.device:
    """The training device: ``auto`` picks CUDA when available; ``cuda`` means this local rank's GPU.

    Args:
        name: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (an explicit index is used as given).
        local_rank: this process's index on its node (``LOCAL_RANK``).

    Raises:
        ConfigError: for an unknown name, CUDA requested without CUDA, or more
            local ranks than visible GPUs.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; accepted: auto, cpu, cuda, cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device={name!r} requested but CUDA is not available on this machine; use device=cpu"
            )
        count = torch.cuda.device_count()
        if device.index is None:
            if local_rank >= count:
                raise ConfigError(
                    f"LOCAL_RANK={local_rank} but only {count} CUDA device(s) are visible; start at most "
                    f"{count} process(es) per node (--nproc_per_node) or use device=cpu"
                )
            device = torch.device("cuda", local_rank)
        elif device.index >= count:
            raise ConfigError(f"device={name!r} but only {count} CUDA device(s) are visible")
    return device


# --- the context of one process ----------------------------------------------------------


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits among the ranks, and the collectives the training loop uses.

    With ``world_size == 1`` every method is the identity (no collective runs).

    Attributes:
        rank: global rank, ``0 .. world_size - 1``.
        local_rank: rank on this node (selects the GPU).
        world_size: number of processes ``W``.
        device: this process's training device.
        backend: ``gloo``, ``nccl`` or ``None`` (one process, no group).
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and shows progress."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """Whether there are other ranks to talk to."""
        return self.world_size > 1

    # --- data ---------------------------------------------------------------------------

    def check_batch(self, batch_items: int) -> None:
        """Refuse a global batch that does not split into ``W`` equal, non-empty slices."""
        if batch_items % self.world_size != 0:
            raise ConfigError(
                f"batch_size={batch_items} is not divisible by the number of processes "
                f"{self.world_size}; batch_size is the global batch, split equally over the processes "
                f"(use a multiple of {self.world_size})"
            )

    def shard(self, global_index: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous ``1 / W`` of a step's global item indices ``(B,) -> (B / W,)``."""
        size = global_index.shape[0] // self.world_size
        return global_index[self.rank * size : (self.rank + 1) * size]

    # --- collectives ------------------------------------------------------------------------

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """``sum over ranks`` of a tensor (a copy; no gradient)."""
        if not self.enabled:
            return values
        values = values.detach().clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def sum_gradients(self, parameters: Iterable[nn.Parameter]) -> None:
        """Replace every gradient by its sum over ranks (one ``all_reduce`` per device and dtype).

        A parameter without a gradient on this rank contributes zeros; one without a
        gradient on *every* rank keeps ``grad = None``, as in one process (so
        Adam skips it rather than decaying its moments with zeros).
        """
        if not self.enabled:
            return
        groups: dict[tuple[torch.device, torch.dtype], list[nn.Parameter]] = {}
        for p in parameters:
            if p.requires_grad:
                groups.setdefault((p.device, p.dtype), []).append(p)
        for (device, dtype), params in groups.items():
            pieces = [p.grad.reshape(-1) if p.grad is not None else p.new_zeros(p.numel()) for p in params]
            flags = torch.tensor([p.grad is not None for p in params], device=device, dtype=dtype)
            flat = torch.cat([*pieces, flags])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            has_grad = flat[-len(params) :].tolist()
            offset = 0
            for p, present in zip(params, has_grad):
                n = p.numel()
                if present > 0:
                    p.grad = flat[offset : offset + n].view_as(p).clone()
                else:
                    p.grad = None
                offset += n

    def broadcast_module(self, module: nn.Module) -> None:
        """Copy rank 0's parameters and buffers to every rank (identical replicas)."""
        if not self.enabled:
            return
        with torch.no_grad():
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, src=0)

    def broadcast_tensors(self, tensors: list[torch.Tensor]) -> None:
        """Copy rank 0's values of ``tensors`` (e.g. Pyro param-store parameters) to every rank."""
        if not self.enabled:
            return
        with torch.no_grad():
            for tensor in tensors:
                dist.broadcast(tensor.data, src=0)

    def gather_objects(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (picklable), in rank order."""
        if not self.enabled:
            return [value]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out

    def run_on_main(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 only; every rank returns its result or raises its exception.

        Used for decisions that read the file system (which checkpoint to resume),
        so all ranks agree and an error on rank 0 stops every rank instead of
        leaving the others waiting in a collective.
        """
        if not self.enabled:
            return fn()
        box: list[Any] = [None]
        if self.is_main:
            try:
                box[0] = ("ok", fn())
            except Exception as err:  # re-raised on every rank below
                box[0] = ("error", err)
        dist.broadcast_object_list(box, src=0)
        status, value = box[0]
        if status == "error":
            raise value
        return value

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


# --- set-up -------------------------------------------------------------------------------


def _env_int(name: str) -> int:
    raw = os.environ.get(name)
    try:
        return int(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"environment variable {name}={raw!r} must be a non-negative integer") from None


def launch_environment() -> tuple[int, int, int] | None:
    """``(rank, local_rank, world_size)`` from a launcher's environment, or ``None`` if not launched.

    Raises:
        ConfigError: for malformed or inconsistent values.
    """
    if not all(name in os.environ for name in LAUNCH_VARIABLES):
        return None
    rank_, world = _env_int("RANK"), _env_int("WORLD_SIZE")
    local_rank = _env_int("LOCAL_RANK") if "LOCAL_RANK" in os.environ else rank_
    if world < 1 or not 0 <= rank_ < world or local_rank < 0:
        raise ConfigError(
            f"inconsistent launcher environment RANK={rank_}, WORLD_SIZE={world}, LOCAL_RANK={local_rank}; "
            "start distributed runs with torchrun"
        )
    return rank_, local_rank, world


def setup_distributed(device: str = "auto", *, timeout_s: float = 1800.0) -> DistributedContext:
    """Join the process group a launcher set up (or use one already initialised), and pick the device.

    * Already initialised (e.g. by the caller): its rank and size are used as they are.
    * Launched by ``torchrun`` (``RANK`` and ``WORLD_SIZE`` set): the group is
      initialised from ``MASTER_ADDR``/``MASTER_PORT`` with ``nccl`` for CUDA
      devices and ``gloo`` for CPU, and destroyed when the process exits.
    * Otherwise: one process, no group.

    Args:
        device: the config's device (``auto``, ``cpu``, ``cuda``, ``cuda:N``);
            ``auto`` and ``cuda`` select GPU ``LOCAL_RANK``.
        timeout_s: how long a collective waits for the other ranks.

    Raises:
        ConfigError: for a bad device or launcher environment.
    """
    if dist.is_available() and dist.is_initialized():
        rank_, world = dist.get_rank(), dist.get_world_size()
        local_rank = _env_int("LOCAL_RANK") if "LOCAL_RANK" in os.environ else rank_
        return DistributedContext(
            rank_, local_rank, world, resolve_device(device, local_rank=local_rank), str(dist.get_backend())
        )
    launched = launch_environment()
    if launched is None:
        return DistributedContext(device=resolve_device(device))
    rank_, local_rank, world = launched
    chosen = resolve_device(device, local_rank=local_rank)
    if not dist.is_available():
        raise ConfigError("this PyTorch build has no torch.distributed; run one process (without torchrun)")
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise ConfigError(
            f"RANK and WORLD_SIZE are set but {', '.join(missing)} is not; "
            "start distributed runs with torchrun"
        )
    backend = "nccl" if chosen.type == "cuda" else "gloo"
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    dist.init_process_group(
        backend=backend,
        init_method="env://",
        rank=rank_,
        world_size=world,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    atexit.register(_destroy_group)
    return DistributedContext(rank_, local_rank, world, chosen, backend)


def _destroy_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# --- batch norm over the global batch -----------------------------------------------------


class DistributedBatchNorm(nn.modules.batchnorm._BatchNorm):
    r"""Batch norm whose training statistics are those of the global batch (any device, any backend).

    ``torch.nn.SyncBatchNorm`` serves CUDA; this layer does the same with plain
    collectives, so CPU (``gloo``) runs also equal one process on the
    concatenated batch. For input ``(n, C, *)`` on each rank, with ``M`` the
    number of values per channel over all ranks:

    .. math::

        \mu = \frac{1}{M} \sum_{\text{ranks}} \sum x, \qquad
        \sigma^2 = \frac{1}{M} \sum_{\text{ranks}} \sum (x - \mu)^2, \qquad
        y = \gamma \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta,

    differentiable through :func:`pssl.collectives.all_reduce_with_grad`; the
    running variance is updated with the unbiased ``sigma^2 M / (M - 1)``, as in
    ``torch.nn.BatchNorm``. In eval mode, or with one process, it is a plain
    batch norm. Parameters and buffers have the names of ``BatchNorm``, so
    checkpoints do not depend on the conversion.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected input of at least 2 dimensions (N, C, ...), got {input.dim()}")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed()):
            return super().forward(input)
        self._check_input_dim(input)
        channels = input.shape[1]
        dims = [0, *range(2, input.dim())]
        shape = [1, channels] + [1] * (input.dim() - 2)
        count_local = torch.full((1,), input.numel() // channels, dtype=input.dtype, device=input.device)
        totals = all_reduce_with_grad(torch.cat([input.sum(dims), count_local]))
        count = totals[-1].detach()
        mean = totals[:channels] / count
        centred = input - mean.view(shape)
        var = all_reduce_with_grad(centred.pow(2).sum(dims)) / count
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                mean, var = mean.detach(), var.detach()
                unbiased = var * (count / (count - 1).clamp_min(1))
                self.running_mean.mul_(1 - factor).add_(mean.to(self.running_mean.dtype), alpha=factor)
                self.running_var.mul_(1 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)
        return out


def convert_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Replace every batch-norm layer of ``module`` by one over the global batch.

    ``torch.nn.SyncBatchNorm`` on CUDA, :class:`DistributedBatchNorm` elsewhere.
    Parameters are shared with the old layers and buffers copied, so an
    optimiser built afterwards, and ``state_dict`` keys, are unaffected.

    Returns:
        ``module`` (converted in place), or the new layer if ``module`` itself is one.
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert_cpu(module)


def _convert_cpu(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, (DistributedBatchNorm, nn.SyncBatchNorm)
    ):
        new = DistributedBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if module.affine:
            new.weight = module.weight
            new.bias = module.bias
        new.running_mean = module.running_mean
        new.running_var = module.running_var
        new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        module.add_module(name, _convert_cpu(child))
    return module


def count_batchnorm(module: nn.Module) -> int:
    """Number of batch-norm layers in ``module``."""
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


__all__ = [
    "DistributedBatchNorm",
    "DistributedContext",
    "all_reduce_with_grad",
    "convert_batchnorm",
    "count_batchnorm",
    "derive_seed",
    "gather",
    "gather_with_grad",
    "is_distributed",
    "launch_environment",
    "local_rows",
    "rank",
    "resolve_device",
    "setup_distributed",
    "step_seed",
    "world_size",
]
