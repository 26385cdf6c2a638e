"""``pssl compare`` planning, baselines, path identity, failure reporting and interval tables."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

import pssl.compare as compare
from pssl.config import ConfigError

FAST = ["probes=linear", "data.limit=400", "progress=false"]


def test_duplicate_models_or_seeds_are_refused() -> None:
    with pytest.raises(ConfigError, match="models lists simvae more than once"):
        compare.parse_compare(["models=simvae,simvae", "seeds=0,1"])
    with pytest.raises(ConfigError, match="seeds lists 0 more than once"):
        compare.parse_compare(["models=simvae", "seeds=0,0,1"])


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("probes=bogus", "unknown probe .bogus."),
        ("probes=ridge", "cannot read a class label"),
        ("model.beta=abc", "model.beta"),
        ("data.bogus=1", "no option 'bogus'"),
        ("prior=bogus", "unknown prior"),
    ],
)
def test_bad_options_are_refused_before_any_training(tmp_path: Path, token: str, message: str) -> None:
    out = tmp_path / "cmp"
    with pytest.raises(ConfigError, match=message):
        compare.run_compare(["models=simvae,pixels", f"out={out}", token])
    assert not out.exists()  # nothing trained, nothing written


def test_unknown_model_names_the_baselines_too() -> None:
    with pytest.raises(ConfigError, match="unknown model 'simvea'.*pixels, pca, random, supervised"):
        compare.parse_compare(["models=simvea"])


def test_relative_and_absolute_paths_are_the_same_run(tmp_path: Path, monkeypatch, caplog) -> None:
    monkeypatch.chdir(tmp_path)
    first = compare.run_compare(["models=pixels", "out=cmp", *FAST])
    assert first["rows"][0]["run_dir"] == str(tmp_path / "cmp" / "pixels-seed0")
    plan = compare.parse_compare(["models=pixels", f"out={tmp_path / 'cmp'}", *FAST])
    assert compare.run_pair(plan, "pixels", 0)[1] == "reused"
    plan = compare.parse_compare(["models=pixels", "out=./sub/../cmp", *FAST])
    assert compare.run_pair(plan, "pixels", 0)[1] == "reused"
    # A moved copy of the comparison is recognised too: the configuration, not the recorded path, decides.
    (tmp_path / "cmp").rename(tmp_path / "moved")
    plan = compare.parse_compare(["models=pixels", "out=moved", *FAST])
    assert compare.run_pair(plan, "pixels", 0)[1] == "reused"


def test_a_failed_pair_is_named_and_the_rest_continue(tmp_path: Path, monkeypatch) -> None:
    original = compare.run_pair

    def flaky(plan, model, seed):  # type: ignore[no-untyped-def]
        if model == "pca":
            raise RuntimeError("out of memory\nsecond line not shown")
        return original(plan, model, seed)

    monkeypatch.setattr(compare, "run_pair", flaky)
    result = compare.run_compare(["models=pca,pixels", "seeds=0,1", f"out={tmp_path / 'cmp'}", *FAST])
    assert result["failures"] == {
        "pca seed 0": "RuntimeError: out of memory",
        "pca seed 1": "RuntimeError: out of memory",
    }
    assert [row["model"] for row in result["rows"]] == ["pixels", "pixels"]
    assert "pca seed 0: RuntimeError: out of memory" in (tmp_path / "cmp" / "results.md").read_text()


def test_tables_give_mean_interval_and_count() -> None:
    rows = [{"model": "a", "x": v} for v in (0.5, 0.6, 0.7)] + [{"model": "b", "x": 0.9}]
    stats = compare.summarise(rows, "x")
    mean, half, n = stats["a"]
    assert n == 3 and mean == pytest.approx(0.6)
    assert half == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-5)  # t_{0.975, 2} sd / sqrt(n)
    table = compare.markdown_tables(rows, ["x"], ("a", "b"))
    assert f"0.600 ± {half:.3f} (n=3)" in table and "0.900 (n=1)" in table


def test_pixels_baseline_reads_the_known_raw_pixel_accuracy_on_digits(tmp_path: Path) -> None:
    """A linear probe on raw 8x8 digit pixels: about 0.95 (here 0.93-0.99 on the embedded test split)."""
    result = compare.run_compare(["models=pixels,pca", f"out={tmp_path / 'cmp'}", "probes=linear"])
    rows = {row["model"]: row for row in result["rows"]}
    assert 0.93 <= rows["pixels"]["content.linear.accuracy"] <= 0.99
    assert rows["pca"]["content.linear.accuracy"] > 0.8  # 10 components keep most of the class signal
    assert (tmp_path / "cmp" / "pixels-seed0" / "config.json").is_file()


def test_random_encoder_is_below_a_trained_method_on_digits_at_the_demo_budget(tmp_path: Path) -> None:
    from pssl.demo import DEMO_SETTINGS

    tokens = ["models=random,simclr", f"out={tmp_path / 'cmp'}", "probes=linear", *DEMO_SETTINGS]
    rows = {row["model"]: row for row in compare.run_compare(tokens)["rows"]}
    assert rows["random"]["content.linear.accuracy"] < rows["simclr"]["content.linear.accuracy"] - 0.05
