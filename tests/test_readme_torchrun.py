"""The docs' CPU ``torchrun`` line (docs/run-directories.md) trains every method, with 2 processes and 1.

The line (``torchrun --nproc_per_node=2 -m pssl train model=simclr data=digits
device=cpu``) is read from docs/run-directories.md and run as written (``torchrun`` is
``python -m torch.distributed.run --standalone``, so the test uses this
interpreter), with ``model=`` set to each registered method, one epoch on 200
items, and paired digits for the methods that need two modalities. A run passes
when every process exits 0 and rank 0 wrote ``metrics.json`` with a checkpoint.

After the last epoch rank 0 evaluates alone; anything collective there (e.g. the
contrastive gather while the objective is labelled by tracing the model) used to
fail once the other rank had left. SimVAE and SimCLR with 2 processes, and SimVAE
with 1, are in the default run; the rest of the matrix is marked slow.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from doc_blocks import ROOT, section

from pssl.models.base import MODELS

PAGE = ROOT / "docs" / "run-directories.md"
PAIRED = {"clip", "simvae-multimodal"}
DEFAULT = {("simvae", 2), ("simclr", 2), ("simvae", 1)}
TINY = ["epochs=1", "data.limit=200", "progress=false", "batch_size=32"]


def readme_cpu_line() -> list[str]:
    """The docs' 2-process CPU torchrun command, as tokens (comment dropped)."""
    text = section(PAGE, "## Several processes (torchrun)")
    lines = [line for line in text.splitlines() if line.startswith("torchrun --nproc_per_node=2")]
    assert lines, "docs/run-directories.md: no 'torchrun --nproc_per_node=2' line under 'Several processes'"
    tokens = shlex.split(lines[0], comments=True)
    assert "device=cpu" in tokens and "data=digits" in tokens, tokens
    return tokens


def command(method: str, processes: int, out: Path) -> list[str]:
    tokens = readme_cpu_line()
    launcher, args = tokens[0], tokens[1:]
    assert launcher == "torchrun"
    args = [a if not a.startswith("--nproc_per_node=") else f"--nproc_per_node={processes}" for a in args]
    args = [f"model={method}" if a.startswith("model=") else a for a in args]
    if method in PAIRED:
        args = ["data=paired-digits" if a == "data=digits" else a for a in args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", *args, *TINY, f"out={out}"]


def cases() -> list:
    out = []
    for method in MODELS.names():
        for processes in (2, 1):
            marks = () if (method, processes) in DEFAULT else (pytest.mark.slow,)
            out.append(pytest.param(method, processes, marks=marks, id=f"{method}-{processes}proc"))
    return out


def test_readme_has_the_cpu_torchrun_line() -> None:
    assert re.search(r"torchrun --nproc_per_node=2 -m pssl train model=\S+ data=digits", PAGE.read_text())


@pytest.mark.parametrize("method,processes", cases())
def test_readme_torchrun_line_trains_every_method(method: str, processes: int, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    out = tmp_path / "run"
    done = subprocess.run(
        command(method, processes, out), env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{method} x {processes}:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["training"]["model"] == method and metrics["training"]["finished"] is True
    assert list(out.glob("checkpoint-*.pt")), sorted(p.name for p in out.iterdir())
