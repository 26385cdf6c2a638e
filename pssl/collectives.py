r"""Collectives across training processes, for any module (models included).

When several processes train one model (``torchrun``, see
:mod:`pssl.inference.distributed`), each process ("rank") evaluates the
objective on its own slice of the minibatch, and the training loop **sums** the
gradients over ranks. A method whose loss couples items (negatives in InfoNCE,
batch statistics in VicREG, batch norm) reads the other ranks' tensors through
these helpers. They are plain ``torch.distributed`` calls with no knowledge of
training, so models import them without depending on the training loop. When no
process group is initialised (one process), every helper is the identity.

The contract a method keeps under several ranks, so that ``W`` processes equal
one process on the concatenated batch:

    sum over ranks r of loss_r  ==  loss of one process on the whole batch,

because the loop sums gradients. Per-item terms inside the ``items`` plate keep
it automatically (each rank's plate holds its own items, with the global data
set size), provided each item's value is computed against the global batch:
an item's InfoNCE term uses the negatives of every rank (gather the
candidates), a batch statistic (VicREG's variance or covariance) is taken over
the gathered batch and then given to each of the rank's items. A term added
*once per rank* rather than per item must be divided by :func:`world_size`.
:func:`gather_with_grad` routes the gradient of each rank's copy of a row back
to the rank that owns the row, so the summed gradients come out right.

Example:
    >>> z = projection(views)                     # (b, J, d) this rank's items
    >>> z_all = gather_with_grad(z)               # (W * b, J, d), ranks in order
    >>> mine = local_rows(z.shape[0])             # where this rank's rows sit in z_all
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch
import torch.distributed as dist

__all__ = [
    "all_reduce_with_grad",
    "gather",
    "gather_with_grad",
    "is_distributed",
    "local_rows",
    "one_process",
    "rank",
    "world_size",
]


_scope = threading.local()


def _initialised() -> bool:
    if getattr(_scope, "one_process", 0):
        return False
    return dist.is_available() and dist.is_initialized()


@contextlib.contextmanager
def one_process() -> Iterator[None]:
    """Within this block every helper acts as with one process (no rank is waited for).

    What one rank does alone after training (evaluation, labelling the objective
    by tracing the model, figures, diagnostics) runs the model's ``model``/``guide``
    on that rank's tensors only: the other ranks may have left, and a gather would
    wait for them forever or fail. Inside the block :func:`world_size` is 1,
    :func:`rank` is 0, and :func:`gather_with_grad`, :func:`gather` and
    :func:`all_reduce_with_grad` return their input. Blocks nest; the scope is per
    thread.
    """
    _scope.one_process = getattr(_scope, "one_process", 0) + 1
    try:
        yield
    finally:
        _scope.one_process -= 1


def is_distributed() -> bool:
    """Whether this process is one of several ranks of an initialised process group."""
    return _initialised() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of ranks (1 when no process group is initialised)."""
    return dist.get_world_size() if _initialised() else 1


def rank() -> int:
    """This process's rank (0 when no process group is initialised)."""
    return dist.get_rank() if _initialised() else 0


def local_rows(num_local: int) -> slice:
    """Rows of this rank's ``num_local`` items inside a tensor from :func:`gather_with_grad`.

    Ranks are concatenated in order, so rank ``r`` owns rows ``r * num_local`` to
    ``(r + 1) * num_local``.
    """
    start = rank() * num_local
    return slice(start, start + num_local)


def _all_gather(tensor: torch.Tensor) -> list[torch.Tensor]:
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor)
    return parts


class _GatherWithGrad(torch.autograd.Function):
    """Concatenate a tensor over ranks; the gradient of each rank's rows is summed over ranks.

    Forward: ``x_r (n, ...) -> X = cat(x_0, ..., x_{W-1}) (W n, ...)`` on every rank.
    Backward: rank ``r`` receives ``dX`` from every rank and keeps
    ``sum_s dX_s[rows of r]``, the gradient of the sum of all ranks' losses.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, dim: int) -> torch.Tensor:  # type: ignore[override]
        ctx.dim = dim
        ctx.size = tensor.shape[dim]
        return torch.cat(_all_gather(tensor.contiguous()), dim=dim)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = dist.get_rank() * ctx.size
        return grad.narrow(ctx.dim, start, ctx.size).contiguous(), None


class _AllReduceWithGrad(torch.autograd.Function):
    """``sum_r x_r`` on every rank; the backward pass sums the incoming gradients over ranks."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def gather_with_grad(tensor: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Concatenate ``tensor`` over ranks along ``dim``, differentiably.

    Every rank must pass a tensor of the same shape and dtype (the loop gives
    each rank an equal slice of the batch). Gradients flow back to the rank that
    owns each slice, summed over the ranks that used it, which matches the
    loop's sum of gradients (see the module docstring).

    Args:
        tensor: ``(n, ...)`` this rank's rows (any ``dim``).
        dim: the dimension to concatenate along.

    Returns:
        ``(W * n, ...)``, rank 0's rows first; ``tensor`` itself with one process.
    """
    if not is_distributed():
        return tensor
    return _GatherWithGrad.apply(tensor, dim)


@torch.no_grad()
def gather(tensor: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Like :func:`gather_with_grad` without a gradient (e.g. a memory bank or a queue)."""
    if not is_distributed():
        return tensor.detach()
    return torch.cat(_all_gather(tensor.detach().contiguous()), dim=dim)


def all_reduce_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """``sum over ranks`` of ``tensor``, differentiably (e.g. batch statistics).

    Returns:
        A tensor of ``tensor``'s shape holding the sum over ranks; ``tensor`` itself
        with one process.
    """
    if not is_distributed():
        return tensor
    return _AllReduceWithGrad.apply(tensor)
