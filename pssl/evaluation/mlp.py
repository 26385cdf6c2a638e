r"""MLP probe: a one-hidden-layer ReLU classifier, a ``torch.nn.Module`` trained with ``torch.optim.Adam``.

``logits = W_2 relu(W_1 \tilde x + b_1) + b_2`` on standardised features
(``StandardScaler`` of the training split), trained on the mean cross-entropy
with Adam, minibatches of ``batch_size`` (reference: 64) reshuffled every pass.

It trains to its plateau: every ``eval_every`` optimiser steps the validation
accuracy and loss are measured; training stops once neither has improved for
``patience`` optimiser steps (or after ``max_steps``). Patience counts steps,
not epochs, so a small data set (a few steps per pass) gets as many updates
before stopping as a large one. The weights of the step with the best
validation accuracy (ties: the lower validation loss, then the earlier step)
are restored and predict the test split once.

The reference head is ``d-d-C`` (hidden width = feature dimension, Adam 3e-4).
Here the default width is ``max(d, 256)``: a narrow ReLU layer can sit below a
linear probe on low-dimensional features, and with selection on validation a
wider layer costs no accuracy. ``hidden=d`` and ``lr=3e-4`` reproduce the
reference head.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pssl.evaluation.protocol import (
    PROBES,
    Probe,
    ProbeResult,
    accuracy,
    classification,
    positive_int,
    positive_number,
)

__all__ = ["MLPHead", "MLPProbe", "mlp_probe"]


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread, then restore the previous count.

    The head's operations are tiny; splitting them across threads saves nothing,
    and on a busy machine a thread pool waiting for its workers turns a
    microsecond product into milliseconds.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class MLPHead(nn.Module):
    """``d -> hidden -> num_classes`` with one ReLU: ``(N, d) -> (N, num_classes)`` logits."""

    def __init__(self, dim: int, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


@PROBES.register(
    "mlp", help="one-hidden-layer ReLU head (torch, Adam, batch 64) trained to its validation plateau"
)
class MLPProbe(Probe):
    """One-hidden-layer ReLU classifier trained to its plateau, the step chosen on validation.

    Args:
        hidden: Hidden width; ``None`` uses ``max(d, 256)``.
        lr: Adam learning rate.
        batch_size: Training rows per optimiser step (reference: 64).
        patience: Optimiser steps without improvement of the validation accuracy
            or loss before stopping.
        max_steps: Hard limit on optimiser steps.
        eval_every: Steps between validation checks; ``None`` means once per pass
            over the training split, at most every 100 steps.
        weight_decay: Adam's L2 penalty.
        seed: Seeds the initialisation and the shuffles.
    """

    name = "mlp"
    tasks = ("classification",)
    rules = {
        "estimator": "torch nn.Sequential(Linear, ReLU, Linear) on StandardScaler features, "
        "torch.optim.Adam, "
        "mean cross-entropy",
        "stopping": "patience counted in optimiser steps on validation accuracy and loss",
        "selection": "weights of the best validation accuracy (ties: lower validation loss, earlier step)",
    }

    def __init__(
        self,
        *,
        hidden: int | None = None,
        lr: float = 1e-3,
        batch_size: int = 64,
        patience: int = 1000,
        max_steps: int = 20000,
        eval_every: int | None = None,
        weight_decay: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.hidden = None if hidden is None else positive_int(hidden, "mlp.hidden")
        self.lr = positive_number(lr, "mlp.lr")
        self.batch_size = positive_int(batch_size, "mlp.batch_size")
        self.patience = positive_int(patience, "mlp.patience")
        self.max_steps = positive_int(max_steps, "mlp.max_steps")
        self.eval_every = None if eval_every is None else positive_int(eval_every, "mlp.eval_every")
        if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) or weight_decay < 0:
            raise ValueError(f"mlp.weight_decay must be a non-negative number, got {weight_decay!r}")
        self.weight_decay = float(weight_decay)
        self.seed = seed
        self.task = "classification"

    def fit(self, train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray) -> Probe:
        from sklearn.preprocessing import StandardScaler

        self.scaler_ = StandardScaler().fit(train_x)
        xs = torch.from_numpy(self.scaler_.transform(train_x)).float()
        vs = torch.from_numpy(self.scaler_.transform(val_x)).float()
        ys = torch.from_numpy(train_y).long()
        val_codes = val_y
        num_classes = max(int(train_y.max()) + 1, 1)
        hidden = self.hidden or max(xs.shape[1], 256)
        n = xs.shape[0]
        batch = min(self.batch_size, n)
        eval_every = self.eval_every or max(1, min(math.ceil(n / batch), 100))
        generator = torch.Generator().manual_seed(self.seed)
        with one_thread():
            torch_state = torch.random.get_rng_state()
            torch.manual_seed(self.seed)  # nn.Linear draws its initial weights from the global stream
            head = MLPHead(xs.shape[1], hidden, num_classes)
            torch.random.set_rng_state(torch_state)
            optimiser = torch.optim.Adam(
                head.parameters(), lr=self.lr, weight_decay=self.weight_decay, fused=True
            )
            loss_fn = nn.CrossEntropyLoss()
            valid = torch.from_numpy(val_codes >= 0)
            val_targets = torch.from_numpy(np.where(val_codes >= 0, val_codes, 0)).long()

            def validate() -> tuple[float, float]:
                with torch.no_grad():
                    logits = head(vs)
                    pred = logits.argmax(1).numpy()
                    losses = nn.functional.cross_entropy(logits, val_targets, reduction="none")
                    loss = float(losses[valid].mean()) if bool(valid.any()) else 0.0
                return accuracy(pred, val_codes), loss

            best_acc, best_loss = validate()
            best_state, best_step = copy.deepcopy(head.state_dict()), 0
            lowest_loss, highest_acc, last_improvement = best_loss, best_acc, 0
            curve: list[tuple[int, float, float]] = [(0, best_acc, best_loss)]
            step = 0
            order = torch.randperm(n, generator=generator)
            position = 0
            while step < self.max_steps and step - last_improvement < self.patience:
                if position + batch > n:  # a new pass: reshuffle (the remainder is dropped)
                    order, position = torch.randperm(n, generator=generator), 0
                rows = order[position : position + batch]
                position += batch
                optimiser.zero_grad(set_to_none=True)
                loss_fn(head(xs[rows]), ys[rows]).backward()
                optimiser.step()
                step += 1
                if step % eval_every and step < self.max_steps:
                    continue
                val_acc, val_loss = validate()
                curve.append((step, val_acc, val_loss))
                if val_acc > highest_acc or val_loss < lowest_loss - 1e-4:
                    last_improvement = step
                highest_acc, lowest_loss = max(highest_acc, val_acc), min(lowest_loss, val_loss)
                if val_acc > best_acc or (val_acc == best_acc and val_loss < best_loss):
                    best_acc, best_loss, best_step = val_acc, val_loss, step
                    best_state = copy.deepcopy(head.state_dict())
            head.load_state_dict(best_state)
        self.head_ = head.eval()
        self.selected_ = {"step": best_step, "hidden": hidden}
        self.val_score_ = best_acc
        self.diagnostics_ = {
            "steps_run": step,
            "epochs_run": step * batch / n,
            "stopped": "plateau" if step - last_improvement >= self.patience else "max_steps",
            "val_curve": [{"step": s, "accuracy": a, "loss": lo} for s, a, lo in curve],
        }
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad(), one_thread():
            features = torch.from_numpy(self.scaler_.transform(x)).float()
            return self.head_(features).argmax(1).numpy()

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "hidden": self.hidden, "optimiser": "torch.optim.Adam"}


def mlp_probe(
    train_x: Tensor,
    train_y: Tensor,
    val_x: Tensor,
    val_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    seed: int = 0,
    **settings: Any,
) -> ProbeResult:
    """:class:`MLPProbe` (``settings`` are its options) on features and integer classes."""
    probe = MLPProbe(seed=seed, **settings)
    return classification(probe, (train_x, val_x, test_x), (train_y, val_y, test_y))
