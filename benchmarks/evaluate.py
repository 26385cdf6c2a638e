r"""The full content evaluation (:func:`pssl.evaluation.evaluate`) on FashionMNIST-sized features.

Inputs: synthetic 10-d features of 10 classes, laid out as a FashionMNIST
evaluation sees them: 54,000 training and 6,000 validation items (the 60,000
training images) and 10,000 test items. Class ``c`` has a random mean
``m_c ~ N(0, I)`` (seeded) and its features are ``m_c + eps``, ``eps ~ N(0, I)``
(overlapping classes, so the probes neither trivially succeed nor fail). The
"model" is an identity ``encode`` (the features are the images, ``(N, 1, 1, 10)``),
so the figures are the probes' own cost: ``linear`` (scikit-learn logistic
regression over its penalty grid), ``mlp`` (a torch head trained with Adam at
batch 64 to its validation plateau), ``knn`` (scikit-learn, cosine and Euclidean,
k in 1..50) and ``cluster`` (a 10-component full-covariance Gaussian mixture),
with :data:`pssl.evaluation.DEFAULT_OPTIONS`.

Reports each probe's seconds (its own ``seconds`` figure), feature extraction,
and the total of :func:`~pssl.evaluation.evaluate` (goal < 60 s on 2 cores).

Usage::

    python benchmarks/evaluate.py --json evaluate.json
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import SINGLE_RUN_NOTE, check_goal, header, parser, set_threads, table, write_json
from pssl.evaluation import CONTENT_PROBES, evaluate

GOAL_SECONDS = 60.0
SIZES = {"train": 54_000, "val": 6_000, "test": 10_000}


@dataclass
class FeatureSplit:
    """One split as :func:`pssl.evaluation.evaluate` reads it: images (here the features) and labels."""

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    factors: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class FeatureSplits:
    train: FeatureSplit
    val: FeatureSplit
    test: FeatureSplit


class IdentityEncoder(nn.Module):
    """``encode(images (N, 1, 1, d)) -> (N, d)``: the features are the representation."""

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1)


def synthetic_features(dim: int, classes: int, spread: float, seed: int) -> FeatureSplits:
    """Gaussian class clusters ``m_c + spread * eps`` split as :data:`SIZES`."""
    generator = torch.Generator().manual_seed(seed)
    means = torch.randn(classes, dim, generator=generator)

    def split(count: int) -> FeatureSplit:
        labels = torch.randint(0, classes, (count,), generator=generator)
        features = means[labels] + spread * torch.randn(count, dim, generator=generator)
        return FeatureSplit(features.view(count, 1, 1, dim), labels, classes)

    return FeatureSplits(**{name: split(count) for name, count in SIZES.items()})


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, default=10, help="feature dimension")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--spread", type=float, default=1.0, help="noise std around each class mean")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    threads = set_threads(args.threads)
    inputs = {
        "features": f"{args.dim}-d synthetic, {args.classes} classes, means N(0, I), noise std {args.spread}",
        "splits": ", ".join(f"{k} {v}" for k, v in SIZES.items()),
        "probes": ", ".join(CONTENT_PROBES) + " (DEFAULT_OPTIONS)",
        "mlp": "steps run and stop reason in the mlp row",
        "threads": threads,
    }
    header("content evaluation on FashionMNIST-sized features (pssl.evaluation.evaluate)", inputs)
    splits = synthetic_features(args.dim, args.classes, args.spread, args.seed)
    start = time.perf_counter()
    result = evaluate(IdentityEncoder(), splits, seed=args.seed)
    total = time.perf_counter() - start
    content = result["content"]
    rows = [{"part": "features", "seconds": result["protocol"]["seconds"]["features"], "test accuracy": None}]
    for probe in CONTENT_PROBES:
        row = {
            "part": probe,
            "seconds": float(content[probe].get("seconds", float("nan"))),
            "test accuracy": float(content[probe]["accuracy"]),
        }
        if "steps_run" in content[probe]:
            row["part"] = f"{probe} ({content[probe]['steps_run']} steps, {content[probe]['stopped']})"
        rows.append(row)
    rows.append({"part": "total", "seconds": total, "test accuracy": None})
    print(table(rows, ["part", "seconds", "test accuracy"]))
    goal = check_goal(total, GOAL_SECONDS, smaller_is_better=True)
    print(f"   total {total:.1f} s (goal < {GOAL_SECONDS:g} s on 2 cores: {goal})")
    print(SINGLE_RUN_NOTE)
    figures = {"rows": rows, "total_seconds": total, "goal": goal}
    write_json(args.json, "evaluate", inputs, figures)
    return {"inputs": inputs, "figures": figures}


if __name__ == "__main__":
    main()
