"""The docs' "Diagnostics with ArviZ" block (docs/diagnostics.md) runs as written on two trained runs."""

from __future__ import annotations

import contextlib
import io

import matplotlib
import pyro

from pssl.config import Component, Config
from pssl.diagnostics import diagnose_run
from pssl.inference.train import train

matplotlib.use("Agg")

from doc_blocks import ROOT, blocks

PAGE = ROOT / "docs" / "diagnostics.md"


def arviz_block() -> str:
    found = blocks(PAGE, "## Diagnostics with ArviZ", "python")
    assert found, "docs/diagnostics.md has no python block under 'Diagnostics with ArviZ'"
    return found[0]


def tiny_run(model: str, out: str, seed: int) -> None:
    train(
        Config(
            model=Component(model),
            data=Component("digits", {"limit": 160}),
            encoder=Component("mlp", {"hidden": "32"}),
            decoder=Component("mlp", {"hidden": "32"}),
            latent_dim=3,
            batch_size=32,
            epochs=1,
            seed=seed,
            out=out,
            progress=False,
            device="cpu",
        )
    )


def test_readme_arviz_block_runs_and_compares_runs_on_the_same_views(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    pyro.clear_param_store()
    tiny_run("simvae", "runs/digits-simvae", seed=0)
    tiny_run("vae", "runs/digits-vae", seed=1)  # another training seed: the views are the same
    diagnose_run("runs/digits-vae", num_samples=20)
    printed = io.StringIO()
    namespace: dict = {"__name__": "__readme__"}
    with contextlib.redirect_stdout(printed):
        exec(compile(arviz_block(), str(PAGE), "exec"), namespace)
    table = namespace["table"]
    assert set(table.index) == {"simvae", "vae"} and "dse" in printed.getvalue()
    idata = namespace["idata"]
    assert idata.importance_sampling.attrs["views"].endswith("views_seed=0")
    matplotlib.pyplot.close("all")
    pyro.clear_param_store()
