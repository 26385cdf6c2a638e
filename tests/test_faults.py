"""The fault table: what happens to a user's run when something goes wrong, and whether resume is exact.

Every row drives the command line (``pssl.cli.main`` in this process, or a real
``python -m pssl`` process for ``kill -9``) on a tiny run (64 digits, 3 steps per
epoch, 3 epochs) and checks the exit code, that no file the user had is lost or
half-written, and, where the run can continue, that ``pssl resume`` ends with
exactly the files of an uninterrupted run: the final checkpoint's weights,
``epochs.csv``, ``history.csv`` and ``metrics.json`` (timing columns aside).

Faults are injected where they occur: a signal sent from inside a step, a save
or validation; a full disk simulated by making the atomic writer's file handle
raise ``ENOSPC`` (a small tmpfs needs privileges CI does not have); a second
process holding the run directory's lock.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import pssl.rundir as rundir
from pssl.cli import main
from pssl.inference.checkpoint import list_checkpoints, load_checkpoint
from pssl.inference.train import Trainer
from pssl.rundir import LOCK_NAME

TINY = [
    "data=digits",
    "data.limit=64",
    "encoder=mlp",
    "encoder.hidden=16",
    "decoder=mlp",
    "decoder.hidden=16",
    "latent_dim=2",
    "batch_size=16",
    "epochs=3",
    "lr=1e-3",
    "log_every=1",
    "checkpoint_every=2",
    "keep_checkpoints=100",
    "device=cpu",
    "progress=false",
]
STEPS = 9  # 57 training items, batch 16: 3 steps per epoch, 3 epochs


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run every resumed run must equal."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert main(["train", *TINY, f"out={out}"]) == 0
    return out


# --- comparing runs ---------------------------------------------------------------------------

TIMING = ("seconds", "images_per_second", "per_second")


def without_timing(value):
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if not any(t in k for t in TIMING)}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def table(path: Path) -> list[dict[str, str]]:
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    return [without_timing(row) for row in rows]


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(list_checkpoints(run)[-1])["model"]


def assert_same_run(run: Path, reference: Path) -> None:
    """Weights, per-epoch and per-step logs and metrics equal those of the uninterrupted run."""
    assert load_checkpoint(list_checkpoints(run)[-1])["global_step"] == STEPS
    ours, theirs = final_weights(run), final_weights(reference)
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
    for name in ("epochs.csv", "history.csv"):
        assert table(run / name) == table(reference / name), name
    metrics, expected = (json.loads((r / "metrics.json").read_text()) for r in (run, reference))
    # the model and logs are bit-exact (above); the probes refit on its features, where threaded
    # BLAS reductions may differ in the last bits, so scores are compared to 1e-9
    ours, theirs = leaves(without_timing(metrics)), leaves(without_timing(expected))
    assert ours.keys() == theirs.keys()
    for key, value in ours.items():
        if isinstance(value, float) and isinstance(theirs[key], float):
            assert value == pytest.approx(theirs[key], rel=1e-9, abs=1e-12, nan_ok=True), key
        else:
            assert value == theirs[key], key


def leaves(value, prefix: str = "") -> dict[str, object]:
    """A nested JSON value as ``{"a.b.0": leaf}``."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in leaves(item, f"{prefix}{key}.").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in leaves(item, f"{prefix}{i}.").items()}
    return {prefix.rstrip("."): value}


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != LOCK_NAME}


def no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if rundir.is_temporary(p.name)]


def cli(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


# --- signals -----------------------------------------------------------------------------------


def signal_during(monkeypatch, target: str, *, at_call: int, signum: int = signal.SIGINT) -> None:
    """Send ``signum`` to this process from inside the ``at_call``-th call of ``target``."""
    owner, name = {
        "step": (Trainer, "step"),
        "validation": (Trainer, "validation_terms"),
        "save": (Trainer, "save"),
    }[target]
    original = getattr(owner, name)
    calls = {"n": 0}

    def wrapped(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == at_call:
            os.kill(os.getpid(), signum)  # arrives while the call is under way
        return original(self, *args, **kwargs)

    monkeypatch.setattr(owner, name, wrapped)


@pytest.mark.parametrize(
    ("target", "at_call", "signum"),
    [
        ("step", 5, signal.SIGINT),  # mid-epoch 2
        ("save", 2, signal.SIGINT),  # the mid-epoch checkpoint at step 4
        ("validation", 1, signal.SIGTERM),  # end of epoch 1
        ("save", 5, signal.SIGINT),  # the final save (steps 2, 4, 6, 8, 9): evaluation must not run
    ],
    ids=[
        "SIGINT during a step",
        "SIGINT during a save",
        "SIGTERM during validation",
        "SIGINT at the last save",
    ],
)
def test_signal_stops_with_130_and_resume_is_exact(
    tmp_path: Path, capsys, monkeypatch, reference: Path, target, at_call, signum
) -> None:
    run = tmp_path / "run"
    signal_during(monkeypatch, target, at_call=at_call, signum=signum)
    code, err = cli(["train", *TINY, f"out={run}"], capsys)
    monkeypatch.undo()
    assert code == 130, err
    assert err.strip().splitlines()[-1].startswith("pssl train: interrupted: stopped by signal"), err
    assert "resume" in err and "Traceback" not in err
    assert not (run / "metrics.json").exists(), "metrics written for an interrupted run"
    assert no_temporaries(run)
    load_checkpoint(list_checkpoints(run)[-1])  # a consistent checkpoint
    torch.manual_seed(1234)  # the resumed run takes its randomness from the checkpoint
    assert main(["resume", str(run)]) == 0
    assert_same_run(run, reference)


def test_sigint_during_evaluation_writes_no_metrics_and_resume_evaluates(
    tmp_path: Path, capsys, monkeypatch, reference: Path
) -> None:
    import pssl.evaluation

    # Ctrl-C must raise KeyboardInterrupt here whatever the test process inherited
    # (SIGINT is ignored when pytest runs in the background) or an earlier test left.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    original = pssl.evaluation.evaluate

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the probes run
        return original(*args, **kwargs)

    monkeypatch.setattr(pssl.evaluation, "evaluate", interrupted)
    run = tmp_path / "run"
    code, err = cli(["train", *TINY, f"out={run}"], capsys)
    monkeypatch.undo()
    assert code == 130 and "interrupted" in err, err
    assert not (run / "metrics.json").exists() and no_temporaries(run)
    assert main(["resume", str(run)]) == 0  # training is complete: resume only evaluates
    assert_same_run(run, reference)
    signal.signal(signal.SIGINT, previous)


KILLED_IN_SAVE = textwrap.dedent(
    """
    import os, signal, sys
    import pssl.rundir as rundir
    from pssl.cli import main

    original = rundir.atomic_write
    saves = {"n": 0}

    def dying(path, write):
        if path.name.startswith("checkpoint-"):
            saves["n"] += 1
            if saves["n"] == 2:  # half-way through the second checkpoint: kill -9
                def half(handle):
                    handle.write(b"PK" + b"\\0" * 1000)
                    handle.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
                return original(path, half)
        return original(path, write)

    rundir.atomic_write = dying
    sys.exit(main(sys.argv[1:]))
    """
)


def test_kill_9_during_a_save_keeps_the_previous_checkpoint_and_resumes_exactly(
    tmp_path: Path, reference: Path
) -> None:
    run = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-c", KILLED_IN_SAVE, "train", *TINY, f"out={run}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert [p.name for p in list_checkpoints(run)] == ["checkpoint-000000002.pt"]
    assert load_checkpoint(list_checkpoints(run)[0])["global_step"] == 2
    assert not no_temporaries(run), "the killed save left no temporary file (the fault did not happen)"
    assert main(["resume", str(run)]) == 0
    assert no_temporaries(run), "stale temporary files were not cleaned"
    assert_same_run(run, reference)


def test_sigint_between_compare_pairs_stops_the_comparison(tmp_path: Path, capsys, monkeypatch) -> None:
    import pssl.compare

    out = tmp_path / "cmp"
    tokens = ["compare", "models=vae,simvae", "seeds=0", "probes=linear", f"out={out}"]
    tokens += [t for t in TINY if not t.startswith(("progress", "epochs", "checkpoint_every"))]
    tokens += ["epochs=1"]
    # SIGINT is ignored when pytest runs in the background: Ctrl-C must raise here all the same
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    original = pssl.compare.run_pair
    done_pairs = []

    def then_interrupt(plan, model, seed):
        result = original(plan, model, seed)
        done_pairs.append(model)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C after the first pair, between pairs
        return result

    monkeypatch.setattr(pssl.compare, "run_pair", then_interrupt)
    code, err = cli(tokens, capsys)
    monkeypatch.undo()
    signal.signal(signal.SIGINT, previous)
    assert code == 130, err
    assert "rerun the same `pssl compare` command" in err, err
    assert done_pairs == ["vae"] and not (out / "simvae-seed0").exists()
    assert not (out / "results.csv").exists()
    assert main(tokens) == 0
    assert "vae seed 0: reused" in capsys.readouterr().err
    assert (out / "simvae-seed0" / "metrics.json").is_file() and (out / "results.csv").is_file()


# --- folders that are not ours, or in use --------------------------------------------------------


def test_foreign_non_empty_out_is_refused_and_untouched(tmp_path: Path, capsys) -> None:
    out = tmp_path / "x"
    out.mkdir()
    (out / "config.json").write_text('{"mine":1}\n')
    (out / "metrics.json").write_text("keep\n")
    before = files(out)
    code, err = cli(["train", *TINY, "epochs=1", f"out={out}"], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert f"{out} is not empty and is not a pssl run" in err
    assert files(out) == before and not (out / LOCK_NAME).exists()


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_out_that_is_a_file_is_one_line(tmp_path: Path, capsys, where: str) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    out = blocker if where == "a file" else blocker / "run"
    code, err = cli(["train", *TINY, "epochs=1", f"out={out}"], capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert str(blocker) in err and ("is a file" in err or "not a directory" in err)
    assert blocker.read_text() == "mine"


HOLDER = textwrap.dedent(
    """
    import sys, time
    from pssl.rundir import claim
    with claim(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(120)
    """
)


@pytest.mark.parametrize("command", ["train", "evaluate", "diagnose"])
def test_second_process_on_one_run_directory(tmp_path: Path, capsys, reference: Path, command: str) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(reference, run)
    before = files(run)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        argv = {
            "train": ["train", *TINY, "resume=true", "epochs=4", f"out={run}"],
            "evaluate": ["evaluate", str(run), "--probes", "linear"],
            "diagnose": ["diagnose", str(run), "--num-samples", "4", "--max-items", "8"],
        }[command]
        code, err = cli(argv, capsys)
    finally:
        holder.kill()
        holder.wait()
    assert code == 2, err
    assert err.strip() == f"pssl {command}: error: run directory {run} is in use by PID {holder.pid}; " + (
        "wait for it to finish or stop it first"
    )
    assert files(run) == before


# --- a full disk and other OS errors -------------------------------------------------------------


def failing_writes(monkeypatch, name_prefix: str, code: int, *, after_bytes: int = 0) -> None:
    """Writes of files named ``name_prefix*`` fail with ``code`` (ENOSPC: a full disk)."""
    original = rundir.atomic_write

    def failing(path, write):
        path = Path(path)
        if not path.name.startswith(name_prefix):
            return original(path, write)

        def partial(handle):
            handle.write(b"x" * after_bytes)
            raise OSError(code, os.strerror(code))

        return original(path, partial)

    monkeypatch.setattr(rundir, "atomic_write", failing)


@pytest.mark.parametrize(
    ("victim", "code", "cause"),
    [
        ("epochs.csv", errno.ENOSPC, "no space left on device"),
        ("checkpoint-000000004", errno.ENOSPC, "no space left on device"),
        ("history.csv", errno.EROFS, "read-only file system"),
        ("config.json", errno.EACCES, "permission denied"),
        ("metrics.json", errno.ENOSPC, "no space left on device"),
    ],
)
def test_os_error_while_writing_is_one_line_and_resume_is_exact(
    tmp_path: Path, capsys, monkeypatch, reference: Path, victim: str, code: int, cause: str
) -> None:
    run = tmp_path / "run"
    failing_writes(monkeypatch, victim, code, after_bytes=100)
    code_, err = cli(["train", *TINY, f"out={run}"], capsys)
    monkeypatch.undo()
    assert code_ == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"pssl train: error: {run / victim}") and lines[0].endswith(cause), lines[0]
    if victim == "config.json":  # nothing was trained: nothing to resume, nothing left behind
        assert not run.exists() or not list_checkpoints(run)
        return
    assert no_temporaries(run)
    for path in list_checkpoints(run):
        load_checkpoint(path)  # every checkpoint on disk is whole
    assert main(["resume", str(run)]) == 0
    assert_same_run(run, reference)


# --- no silent wrong answers ------------------------------------------------------------------


def test_all_steps_skipped_as_non_finite_is_an_error_without_accuracy(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    original = Trainer.evaluate

    def nan_loss(self, batch):
        output = original(self, batch)
        output.loss = output.loss * float("nan")
        return output

    monkeypatch.setattr(Trainer, "evaluate", nan_loss)
    run = tmp_path / "run"
    code, err = cli(["train", *TINY, "epochs=1", "nonfinite=skip", f"out={run}"], capsys)
    assert code == 2, err
    assert "3 of 3 steps" in err and "non-finite" in err and err.count("\n") == 1, err
    assert not (run / "metrics.json").exists()


def test_non_finite_validation_is_an_error_without_accuracy(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(Trainer, "validation_terms", lambda self, **kw: {"elbo": float("-inf"), "loss": 1.0})
    run = tmp_path / "run"
    code, err = cli(["train", *TINY, "epochs=1", f"out={run}"], capsys)
    assert code == 2, err
    assert "validation" in err and "elbo" in err and err.count("\n") == 1, err
    assert not (run / "metrics.json").exists()


def test_nan_message_suggests_a_resume_that_works(tmp_path: Path, capsys, monkeypatch) -> None:
    original = Trainer.evaluate
    calls = {"n": 0}

    def nan_at_step_5(self, batch):
        output = original(self, batch)
        calls["n"] += 1
        if calls["n"] == 5:
            output.loss = output.loss * float("nan")
        return output

    monkeypatch.setattr(Trainer, "evaluate", nan_at_step_5)
    run = tmp_path / "run"
    code, err = cli(["train", *TINY, f"out={run}"], capsys)
    monkeypatch.undo()
    assert code == 2 and "non-finite" in err, err
    suggestion = err.split("`")[1]  # the command the message suggests
    assert suggestion.startswith("pssl resume") and "nonfinite=skip" in suggestion, err
    assert main(suggestion.split()[1:]) == 0


def test_resume_with_fewer_epochs_than_trained_is_refused(tmp_path: Path, capsys, reference: Path) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(reference, run)
    before = files(run)
    code, err = cli(["resume", str(run), "epochs=1"], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "already trained 3 epochs" in err
    assert files(run) == before


def test_moco_queue_problem_is_refused_before_anything_is_written(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    tokens = ["model=moco", "model.queue_size=4096", "model.proj_hidden=8", "model.proj_dim=4"]
    code, err = cli(["train", *TINY, "epochs=1", *tokens, f"out={run}"], capsys)
    assert code == 2 and "queue_size" in err and err.count("\n") == 1, err
    assert not run.exists()
