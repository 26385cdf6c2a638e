"""Every example script runs end to end with tiny settings."""

from __future__ import annotations

import runpy
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, argv: list[str]):
    namespace = runpy.run_path(str(EXAMPLES / name), run_name=f"example_{name}")
    return namespace["main"](argv)


def test_examples_are_all_smoke_tested() -> None:
    tested = {"train_digits.py", "style_vs_content.py", "custom_prior.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_train_digits_example(tmp_path: Path, capsys) -> None:
    accuracy = run_example(
        "train_digits.py", ["--epochs", "1", "--limit", "128", "--hidden", "16", "--out", str(tmp_path)]
    )
    out = capsys.readouterr().out
    assert "encoder means of 4 test images: (4, 10)" in out
    assert accuracy > 0.25  # chance is 0.1; measured 0.45 at this budget (1 epoch, 128 items)


def test_style_vs_content_example(tmp_path: Path, capsys) -> None:
    scores = run_example(
        "style_vs_content.py", ["--epochs", "1", "--limit", "128", "--hidden", "16", "--out", str(tmp_path)]
    )
    assert set(scores) == {"simvae", "simclr"}
    for row in scores.values():
        assert {"content", "pos_x", "pos_y", "scale", "fg_color", "bg_color"} <= set(row)
    assert "predictability" in capsys.readouterr().out
