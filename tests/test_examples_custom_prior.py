"""Smoke test: examples/custom_prior.py runs end to end with tiny settings."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "custom_prior.py"


def test_custom_prior_example_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    namespace = runpy.run_path(str(EXAMPLE), run_name="custom_prior_example")
    accuracy = namespace["main"](
        [
            "--epochs",
            "1",
            "--limit",
            "128",
            "--hidden",
            "16",
            "--latent-dim",
            "3",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    out = capsys.readouterr().out
    assert "y-guide chosen: amortised" in out
    assert "encoder means of 4 test images: (4, 3)" in out
    assert accuracy > 0.15  # chance is 0.1; measured 0.22 at this budget (1 epoch, 128 items, 3-d latent)
    assert (tmp_path / "run" / "config.json").is_file()
