"""``pssl claims``: verdict rules on hand-made numbers, the table from run folders, smoke, reuse."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from pssl.claims import budgets, verdicts
from pssl.claims.comparisons import Comparison, Side, comparisons
from pssl.claims.measures import MeasureReader, last_quarter_change, plateau_epoch
from pssl.claims.report import markdown_table
from pssl.claims.run import claim_row, parse_claims, run_dir_of
from pssl.config import ConfigError

# --------------------------------------------------------------------------- verdicts (pure)


def test_paired_interval_equals_scipys_paired_t_interval() -> None:
    method = {0: 0.91, 1: 0.93, 2: 0.90, 3: 0.95}
    comparator = {0: 0.85, 1: 0.88, 2: 0.86, 3: 0.87}
    difference = verdicts.paired_difference(method, comparator)
    expected = stats.ttest_rel(list(method.values()), list(comparator.values())).confidence_interval(0.95)
    assert difference.n == 4
    assert difference.mean == pytest.approx(np.mean([0.06, 0.05, 0.04, 0.08]), abs=1e-12)
    assert difference.low == pytest.approx(expected.low, abs=1e-12)
    assert difference.high == pytest.approx(expected.high, abs=1e-12)


def test_a_claim_that_holds() -> None:
    # differences 0.10, 0.11, 0.09: mean 0.10, sd 0.01, half-width t(0.975, 2) * 0.01 / sqrt(3) = 0.0248
    difference = verdicts.paired_difference({0: 0.90, 1: 0.92, 2: 0.91}, {0: 0.80, 1: 0.81, 2: 0.82})
    assert difference.half_width == pytest.approx(4.302652729911275 * 0.01 / math.sqrt(3), rel=1e-9)
    assert verdicts.verdict(difference) == verdicts.HOLDS


def test_a_claim_that_does_not_hold() -> None:
    difference = verdicts.paired_difference({0: 0.80, 1: 0.81, 2: 0.82}, {0: 0.90, 1: 0.92, 2: 0.91})
    assert difference.high < 0
    assert verdicts.verdict(difference) == verdicts.DOES_NOT_HOLD


def test_an_inconclusive_claim() -> None:
    # mean difference positive, but the seeds disagree: the interval contains 0
    difference = verdicts.paired_difference({0: 0.90, 1: 0.80, 2: 0.88}, {0: 0.85, 1: 0.85, 2: 0.85})
    assert difference.mean > 0 and difference.low < 0 < difference.high
    assert verdicts.verdict(difference) == verdicts.INCONCLUSIVE


def test_pairs_are_by_seed_and_the_sign_orients_the_difference() -> None:
    # a lower measure supports the claim (sign -1); seed 3 has no partner and is left out
    difference = verdicts.paired_difference(
        {0: 0.2, 1: 0.3, 2: 0.25, 3: 9.0}, {0: 0.9, 1: 0.95, 2: 0.92}, sign=-1
    )
    assert difference.n == 3
    assert difference.differences == pytest.approx((0.7, 0.65, 0.67))
    assert verdicts.verdict(difference) == verdicts.HOLDS
    # paired, not pooled: a shared seed effect cancels (unpaired intervals would overlap)
    paired = verdicts.paired_difference({0: 0.5, 1: 0.7, 2: 0.9}, {0: 0.49, 1: 0.69, 2: 0.885})
    assert verdicts.verdict(paired) == verdicts.HOLDS


def test_one_seed_or_missing_values_are_inconclusive() -> None:
    assert verdicts.verdict(verdicts.paired_difference({0: 0.9}, {0: 0.1})) == verdicts.INCONCLUSIVE
    with_nan = verdicts.paired_difference({0: 0.9, 1: math.nan}, {0: 0.1, 1: 0.1})
    assert with_nan.n == 1 and verdicts.verdict(with_nan) == verdicts.INCONCLUSIVE
    assert verdicts.verdict(verdicts.paired_difference({}, {})) == verdicts.INCONCLUSIVE
    with pytest.raises(ValueError, match="sign"):
        verdicts.paired_difference({0: 1.0}, {0: 1.0}, sign=2)


# --------------------------------------------------------------------------- the table from run folders


def _fake_run(folder: Path, content: float, style: float) -> None:
    folder.mkdir(parents=True)
    metrics = {
        "content": {"linear": {"accuracy": content, "val_accuracy": content}},
        "style": {"mean_linear": style},
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))


def test_claim_rows_from_hand_made_runs(tmp_path: Path) -> None:
    plan = parse_claims(["budget=smoke", f"out={tmp_path}", "seeds=0,1,2"])
    data = plan.budget.styled_data.name
    content = {"simvae": (0.90, 0.92, 0.91), "vae": (0.80, 0.81, 0.82), "simclr": (0.95, 0.97, 0.96)}
    style = {"simvae": (0.60, 0.50, 0.58), "vae": (0.5, 0.5, 0.5), "simclr": (0.55, 0.55, 0.55)}
    selected = {}
    for method in content:
        point = budgets.grid_points(plan.budget, method)[0]
        selected[(data, method)] = point
        for seed in (0, 1, 2):
            _fake_run(run_dir_of(plan, data, method, point, seed), content[method][seed], style[method][seed])
    reader = MeasureReader(root=plan.out, cache=plan.out / "measures")
    rows = {
        c.claim: claim_row(plan, reader, selected, c)
        for c in (
            Comparison("C1", data, "content", Side("simvae"), Side("vae")),
            Comparison("C2", data, "content", Side("simvae"), Side("simclr")),
            Comparison("C3", data, "style", Side("simvae"), Side("simclr")),
        )
    }
    assert rows["C1"]["verdict"] == verdicts.HOLDS
    assert rows["C1"]["difference_mean"] == pytest.approx(0.10)
    assert rows["C2"]["verdict"] == verdicts.DOES_NOT_HOLD
    assert rows["C3"]["verdict"] == verdicts.INCONCLUSIVE
    assert rows["C3"]["method_values"] == {"0": 0.60, "1": 0.50, "2": 0.58}
    table = markdown_table(list(rows.values()))
    assert "| C2 | styled-digits | content | simvae: 0.910 ± 0.025 | simclr: 0.960 ± 0.025 " in table
    assert "-0.050 [-0.050, -0.050] (n=3) | does not hold |" in table
    # a seed whose run is missing leaves the pair out (n drops), it is never imputed
    (run_dir_of(plan, data, "vae", selected[(data, "vae")], 2) / "metrics.json").unlink()
    again = claim_row(plan, reader, selected, Comparison("C1", data, "content", Side("simvae"), Side("vae")))
    assert again["n"] == 2


def test_every_claim_is_mapped_and_c6_only_at_the_paper_budget() -> None:
    smoke = comparisons(budgets.SMOKE)
    assert {c.claim for c in smoke} == {"C1", "C2", "C3", "C4", "C5", "C6"}
    assert [c.run for c in smoke if c.claim == "C6"] == [False]
    paper = comparisons(budgets.PAPER)
    assert [(c.data, c.run) for c in paper if c.claim == "C6"] == [("cifar10", True)]
    c4 = [c for c in comparisons(budgets.CPU) if c.claim == "C4"]
    assert all(c.sign == -1 and c.comparator.method == "vae" for c in c4)
    c5 = [c for c in comparisons(budgets.CPU) if c.claim == "C5"]
    assert {c.comparator.representation for c in c5} == {"projection"}


def test_every_method_gets_the_same_grid() -> None:
    for budget in budgets.BUDGETS.values():
        sizes = {m: len(budgets.grid_points(budget, m)) for m in budget.methods}
        assert len(set(sizes.values())) == 1, sizes
        lrs = {m: sorted({p.lr for p in budgets.grid_points(budget, m)}) for m in budget.methods}
        assert len({tuple(v) for v in lrs.values()}) == 1


def test_plateau_epoch_on_hand_made_curves() -> None:
    assert (
        plateau_epoch([-100.0, -60.0, -53.0, -50.5, -50.2, -50.0]) == 4
    )  # within 2.5 (5% of 50) from epoch 4
    assert plateau_epoch([-100.0, -90.0, -80.0, -70.0]) == 4  # still moving: only the last epoch
    assert plateau_epoch([1.0, math.nan]) is None
    assert last_quarter_change([0.0, 5.0, 9.0, 10.0]) == pytest.approx(0.1)


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown budget 'huge'; accepted: smoke, cpu, paper"):
        parse_claims(["budget=huge", f"out={tmp_path}"])
    with pytest.raises(ConfigError, match="out=DIR"):
        parse_claims(["budget=smoke"])
    with pytest.raises(ConfigError, match="data=cifar10 is not used by budget 'cpu'"):
        parse_claims(["budget=cpu", f"out={tmp_path}", "data=cifar10"])
    with pytest.raises(ConfigError, match="seeds lists a seed more than once"):
        parse_claims(["budget=smoke", f"out={tmp_path}", "seeds=0,0"])


# --------------------------------------------------------------------------- end to end


def test_paper_budget_constructs_and_validates_without_training(tmp_path: Path, capsys) -> None:
    from pssl.cli import main

    out = tmp_path / "paper"
    assert main(["claims", "budget=paper", f"out={out}", "dry_run=true"]) == 0
    plan = json.loads((out / "plan.json").read_text())
    configs = {run["run"]: run["config"] for run in plan["runs"]}
    assert all(c["epochs"] == 400 for c in configs.values())
    cifar = [c for name, c in configs.items() if name.startswith("cifar10/")]
    assert cifar and all(c["encoder"]["name"] == "resnet18-half" for c in cifar)
    assert {name.split("/")[1] for name in configs} == {"simvae", "vae", "simclr", "moco", "vicreg", "barlow"}
    simclr = next(c for name, c in configs.items() if "/simclr/" in name and "temperature0.2" in name)
    assert simclr["model"] == {"name": "simclr", "options": {"temperature": "0.2"}}
    assert not any(p.name.endswith(".pt") for p in out.rglob("*"))  # nothing trained
    assert "runs planned (nothing trained)" in capsys.readouterr().out


def _checkpoint_times(folder: Path) -> dict[Path, float]:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*.pt")}


def test_smoke_end_to_end_from_the_cli_then_reused(tmp_path: Path, capsys) -> None:
    from pssl.cli import main

    out = tmp_path / "claims"
    assert main(["claims", "budget=smoke", f"out={out}"]) == 0
    printed = capsys.readouterr().out
    assert "| C1 | styled-digits | content |" in printed and "not run at this budget" in printed
    for name in (
        "claims.md",
        "claims.csv",
        "claims.json",
        "claims.png",
        "content_style.png",
        "validation_curves.png",
    ):
        assert (out / name).is_file(), name
    first = json.loads((out / "claims.json").read_text())
    assert {row["claim"] for row in first["rows"]} == {"C1", "C2", "C3", "C4", "C5", "C6"}
    assert first["actions"] == {"trained": 9}  # 3 methods x (2 grid points + 1 more seed)
    for row in first["rows"]:
        if row["verdict"] != verdicts.NOT_RUN:
            again = verdicts.verdict(
                verdicts.paired_difference(
                    {int(k): v for k, v in row["method_values"].items()},
                    {int(k): v for k, v in row["comparator_values"].items()},
                    sign=row["sign"],
                )
            )
            assert row["verdict"] == again  # computed from the numbers in the file, nothing else
    before = _checkpoint_times(out)
    assert main(["claims", "budget=smoke", f"out={out}"]) == 0
    second = json.loads((out / "claims.json").read_text())
    assert second["actions"] == {"reused": 9}
    assert _checkpoint_times(out) == before  # nothing trained again
    assert [r["verdict"] for r in second["rows"]] == [r["verdict"] for r in first["rows"]]


# --------------------------------------------------------------------------- the demo's claims


def test_demo_claims_from_compare_rows() -> None:
    from pssl.claims.compare_rows import claims_from_rows

    def rows(values: dict[str, tuple[float, ...]], column: str) -> list[dict]:
        return [
            {"model": m, "seed": s, column: v} for m, seeds in values.items() for s, v in enumerate(seeds)
        ]

    content = rows(
        {"simvae": (0.9, 0.91), "vae": (0.8, 0.82), "simclr": (0.95, 0.97)}, "content.linear.accuracy"
    )
    styled = rows({"simvae": (0.6, 0.5), "vae": (0.5, 0.5), "simclr": (0.55, 0.55)}, "style.mean_linear")
    found = {
        (r["claim"], r["comparator"]): r for r in claims_from_rows(content, "digits", styled, "styled-digits")
    }
    assert set(found) == {("C1", "vae"), ("C2", "simclr"), ("C3", "simclr")}
    assert found[("C1", "vae")]["difference_mean"] == pytest.approx(0.095)
    assert found[("C3", "simclr")]["verdict"] == verdicts.INCONCLUSIVE
    one_seed = [r for r in content if r["seed"] == 0]
    assert {r["verdict"] for r in claims_from_rows(one_seed, "digits", [], "styled-digits")} == {
        verdicts.INCONCLUSIVE
    }


@pytest.mark.slow
def test_demo_prints_its_claims_with_a_caveat(tmp_path: Path, capsys) -> None:
    from pssl.cli import main

    tokens = ["demo", f"out={tmp_path}", "models=simvae,vae,simclr", "epochs=2", "data.limit=300"]
    assert main(tokens) == 0
    printed = capsys.readouterr().out
    assert "claims at the demo's budget:" in printed
    assert "| C1 | digits | content |" in printed and "| C3 | styled-digits | style |" in printed
    assert (
        "caveat: demo budget (20 epochs unless overridden, seeds 0, no grid; one seed has no interval"
        in printed
    )


def test_readme_results_command_plans_the_cpu_budget(tmp_path: Path) -> None:
    """The README's Results command, checked and listed without training (dry run, another out=)."""
    from pssl.cli import main

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    results = readme[readme.index("<!-- results:start -->") : readme.index("<!-- results:end -->")]
    block = results.split("```bash\n", 1)[1].split("```", 1)[0].strip()
    tokens = block.split()
    assert tokens[1:4] == ["pssl", "claims", "budget=cpu"], block
    args = [t for t in tokens[2:] if not t.startswith("out=")] + [f"out={tmp_path / 'cpu'}", "dry_run=true"]
    assert main(args) == 0
    plan = json.loads((tmp_path / "cpu" / "plan.json").read_text())
    # (2 content sets x 4 methods + the styled set x 3 methods) x (3 grid points + 2 more seeds)
    assert len(plan["runs"]) == (2 * 4 + 3) * 5


def test_a_data_set_can_override_networks_epochs_and_methods(tmp_path: Path) -> None:
    """The cpu budget's styled set: pooled encoder, its own epochs, no VAE (no claim reads it there)."""
    plan = parse_claims(["budget=cpu", f"out={tmp_path}", "dry_run=true"])
    cpu = plan.budget
    assert cpu.methods_of("styled-mnist") == ("simvae", "simclr", "vicreg")
    assert cpu.methods_of("mnist") == cpu.methods
    assert cpu.epochs_of("styled-mnist") == 12 and cpu.epochs_of("mnist") == cpu.epochs == 40
    from pssl.cli import main

    assert main(["claims", "budget=cpu", f"out={tmp_path / 'cpu'}", "dry_run=true"]) == 0
    runs = json.loads((tmp_path / "cpu" / "plan.json").read_text())["runs"]
    styled = [r for r in runs if r["run"].startswith("styled-mnist/")]
    assert styled and not [r for r in styled if "/vae/" in r["run"]]
    assert {r["config"]["epochs"] for r in styled} == {12}
    assert {r["config"]["encoder"]["name"] for r in styled} == {"resnet"}
    assert all("hidden" not in r["config"]["encoder"]["options"] for r in styled)
    content = [r for r in runs if r["run"].startswith("mnist/")]
    assert {r["config"]["epochs"] for r in content} == {40}
    assert {r["config"]["encoder"]["name"] for r in content} == {"mlp"}
    # checkpoints evenly spaced over each data set's own epochs
    assert budgets.checkpoint_tokens(cpu, 10, 12)[0] == "checkpoint_every=30"
    assert budgets.checkpoint_tokens(cpu, 10)[0] == "checkpoint_every=100"
