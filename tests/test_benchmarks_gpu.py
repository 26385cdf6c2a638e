"""The prepared GPU script and the epoch benchmark's checks that need no GPU; CUDA-only parts skip cleanly.

* ``benchmarks/gpu.py --plan`` parses its options and prints the plan anywhere; bad
  options exit with a message naming the flag.
* Without CUDA, the default (``--device cuda``) run exits with a message and status 2,
  and the graphs section says it was skipped; with ``--device cpu --quick`` the
  ResNet section runs on the CPU (slow: marked).
* On a CUDA machine (skipped here) the graphs section captures the MLP step.
* ``benchmarks/epoch.py`` says that the authors' code is not installed rather than failing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import epoch as epoch_benchmark  # noqa: E402
from benchmarks import gpu  # noqa: E402

CUDA = torch.cuda.is_available()


def test_plan_lists_every_section_and_its_runs(capsys) -> None:
    result = gpu.main(["--plan", "--concurrency", "1,4", "--precisions", "fp32"])
    plan = result["plan"]
    assert plan["sections"] == ["paper", "graphs", "resnet"]
    assert plan["paper"] == [
        "fp32: 1 run(s) at once x 2 epoch(s) of paper-fashionmnist",
        "fp32: 4 run(s) at once x 2 epoch(s) of paper-fashionmnist",
    ]
    assert len(plan["resnet"]) == 2 and all("fp32" in line for line in plan["resnet"])
    assert '"budget_seconds": 540.0' in capsys.readouterr().out


def test_quick_plan_uses_toy_sizes() -> None:
    args = gpu.parse_args(["--quick", "--plan"])
    assert (args.items, args.steps, args.paper_epochs, args.paper_limit) == (4, 2, 1, 256)
    assert args.concurrency_list == [1, 2] and args.compile_mlp is False


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--sections", "paper,nope"], "--sections: unknown ['nope']"),
        (["--concurrency", "1,x"], "--concurrency must be comma-separated integers"),
        (["--concurrency", "0"], "--concurrency must list positive integers"),
        (["--precisions", "fp16"], "--precisions: unknown ['fp16']"),
        (["--budget-seconds", "0"], "--budget-seconds must be positive"),
    ],
)
def test_bad_options_name_the_flag(argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit, match=message.replace("[", r"\[").replace("]", r"\]")):
        gpu.parse_args(argv)


@pytest.mark.skipif(CUDA, reason="checks the message on a machine without CUDA")
def test_without_cuda_the_default_run_exits_with_a_message(capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        gpu.main(["--sections", "resnet"])
    assert stop.value.code == 2
    assert "CUDA is not available here" in capsys.readouterr().err


def test_graphs_section_skips_without_cuda(tmp_path: Path, capsys) -> None:
    args = gpu.parse_args(["--quick"])
    assert gpu.graphs_section(args, torch.device("cpu"), tmp_path, deadline=float("inf")) == []
    assert "skipped, CUDA graphs need a CUDA device" in capsys.readouterr().out


@pytest.mark.slow
def test_quick_resnet_section_runs_on_cpu(capsys) -> None:
    result = gpu.main(
        ["--device", "cpu", "--quick", "--sections", "resnet", "--models", "simclr", "--precisions", "fp32"]
    )
    (row,) = result["figures"]["resnet"]
    assert row["model"] == "simclr" and row["pssl_images_per_second"] > 0
    assert "whole script" in capsys.readouterr().out


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_graphs_section_captures_the_mlp_step_on_cuda(tmp_path: Path) -> None:
    args = gpu.parse_args(["--quick", "--precisions", "fp32"])
    (row,) = gpu.graphs_section(args, torch.device("cuda"), tmp_path, deadline=float("inf"))
    assert not row["notes"], row["notes"]
    assert row["floor graphed img/s"] > 0


def test_epoch_benchmark_says_the_authors_code_is_not_installed() -> None:
    missing = epoch_benchmark.authors_step(None, 100)
    assert missing["installed"] is False and "not installed here" in missing["note"]
    failing = epoch_benchmark.authors_step(f"{sys.executable} -c 'raise SystemExit(3)'", 10)
    assert failing["installed"] is False and "exit 3" in failing["note"]
    timed = epoch_benchmark.authors_step(f"{sys.executable} -c 'pass'", 10)
    assert timed["installed"] is True and timed["seconds_per_step"] > 0
