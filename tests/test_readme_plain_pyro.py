"""The docs' "Plain Pyro" block (docs/inference.md) runs as written and trains with nothing but Pyro."""

from __future__ import annotations

import contextlib
import io
import re

import pyro
from doc_blocks import ROOT, blocks

PAGE = ROOT / "docs" / "inference.md"


def plain_pyro_block() -> str:
    found = blocks(PAGE, "## Plain Pyro", "python")
    assert found, "docs/inference.md has no python block under 'Plain Pyro'"
    return found[0]


def test_readme_plain_pyro_block_runs_and_lowers_the_loss(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    pyro.clear_param_store()
    printed = io.StringIO()
    namespace: dict = {"__name__": "__readme__"}
    with contextlib.redirect_stdout(printed):
        exec(compile(plain_pyro_block(), str(PAGE), "exec"), namespace)
    out = printed.getvalue()
    losses = [float(v) for v in re.findall(r"-ELBO (-?[\d.]+) nats per item", out)]
    assert len(losses) == 4 and losses[-1] < losses[0], out
    method = namespace["method"]
    trainable = [p for p in method.parameters() if p.requires_grad]
    assert f"parameters in Pyro's param store: {len(trainable)}" in out
    assert "prior predictive x: (3, 8, 2, 1, 8, 8) posterior predictive x: (3, 64, 2, 1, 8, 8)" in out
    pyro.clear_param_store()
