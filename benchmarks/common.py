"""Shared helpers of the benchmark scripts: interleaved timing, the environment, reports.

Every benchmark compares two or more ways of doing the same work *in one
process*, run in turns ``A B A B ...`` (the order rotated every round), so a
change of machine load hits every case alike. Each figure is a median over
rounds; a ratio is the median of the per-round ratios ``t_A / t_B`` (paired:
``A`` and ``B`` of one round ran seconds apart), with its interquartile range
as a noise indicator.

Reports print a plain table and, with ``--json PATH``, write every figure,
every input and the environment (torch/pyro versions, threads, CPU count,
load average before and after) to ``PATH``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark takes (``--json``, ``--threads``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's own choice, usually the number of cores)",
    )
    return parser


def set_threads(threads: int | None) -> int:
    """Apply ``--threads`` (if given) and return the number of threads torch will use."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be a positive integer, got {threads}")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (``None`` where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def environment() -> dict[str, Any]:
    """What the figures depend on: versions, threads, cores, load."""
    import pyro

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "load_average": load_average(),
    }


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far, GiB (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024
    return peak * scale / 2**30


def synchronize(device: torch.device | str | None = None) -> None:
    """Wait for queued CUDA work, so a timer measures it (a no-op on the CPU)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], device: torch.device | str | None = None) -> float:
    """Seconds one call of ``fn`` takes (CUDA work included)."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def interleaved(
    cases: Mapping[str, Callable[[], Any]],
    *,
    repeats: int,
    warmup: int = 2,
    device: torch.device | str | None = None,
) -> dict[str, list[float]]:
    """Time each case ``repeats`` times in turns, after ``warmup`` untimed calls each.

    Round ``r`` runs the cases in an order rotated by ``r`` (``A B``, ``B A``, ...),
    so neither is always first after a pause.

    Returns:
        ``{name: [seconds of round 0, round 1, ...]}``.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats}")
    names = list(cases)
    for _ in range(warmup):
        for name in names:
            cases[name]()
    synchronize(device)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(time_call(cases[name], device))
    return samples


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """``(q1, median, q3)`` of ``values``."""
    values = sorted(values)
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def summary(samples: Sequence[float]) -> dict[str, float]:
    """Median and quartiles of timings, in milliseconds."""
    q1, median, q3 = quartiles(samples)
    return {"median_ms": median * 1e3, "q1_ms": q1 * 1e3, "q3_ms": q3 * 1e3, "rounds": len(samples)}


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> dict[str, float]:
    """Median and quartiles of the per-round ratios ``numerator[r] / denominator[r]``."""
    ratios = [a / b for a, b in zip(numerator, denominator)]
    q1, median, q3 = quartiles(ratios)
    return {"ratio": median, "q1": q1, "q3": q3}


def spread(ratio: dict[str, float], digits: int = 3) -> str:
    """``"median [q1,q3]"`` of a :func:`paired_ratio`."""
    return f"{ratio['ratio']:.{digits}f} [{ratio['q1']:.{digits}f},{ratio['q3']:.{digits}f}]"


def check_goal(value: float, goal: float, *, smaller_is_better: bool) -> str:
    """``"met"`` or ``"MISSED"`` for a figure against its goal."""
    ok = value <= goal if smaller_is_better else value >= goal
    return "met" if ok else "MISSED"


def header(title: str, inputs: Mapping[str, Any]) -> None:
    """Print the benchmark's title, its inputs and the environment."""
    env = environment()
    print(f"== {title}")
    print(
        f"   torch {env['torch']}, pyro {env['pyro']}, {env['cpu_count']} cores, "
        f"{env['torch_threads']} torch threads, load average {env['load_average']} (1/5/15 min)"
    )
    for key, value in inputs.items():
        print(f"   {key}: {value}")


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Rows as a fixed-width text table (floats to 4 significant figures)."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return "" if value is None else str(value)

    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def write_json(path: Path | None, name: str, inputs: Mapping[str, Any], figures: Any) -> None:
    """Write ``{"benchmark", "inputs", "environment", "figures"}`` to ``path`` (if given)."""
    if path is None:
        return
    payload = {
        "benchmark": name,
        "inputs": dict(inputs),
        "environment": environment(),
        "figures": figures,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"   figures written to {path}")


NOISE_NOTE = (
    "Timings are medians over interleaved rounds on a shared machine; other jobs may run on the same "
    "cores, so absolute times vary between runs more than the ratios do."
)
SINGLE_RUN_NOTE = (
    "One run on a shared machine; other jobs may run on the same cores, so the seconds vary between runs."
)
