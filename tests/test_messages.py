"""What the user reads when something is wrong: one line naming the file or option, and advice that helps.

* ``config=`` files that never end, never resolve or nest without end;
* a checkpoint of random bytes (no torch advice to unpickle it), a FIFO named
  like a checkpoint (refused, not waited on);
* resume from a damaged newest checkpoint says which one it used and why;
* ``compare probes=`` (empty) is refused before anything is trained;
* interrupts outside the training loop, in a comparison, and a SIGTERM while
  the process shuts down.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import pssl.experiment
from pssl.cli import main
from pssl.inference.checkpoint import list_checkpoints

TINY = [
    "data=digits",
    "data.limit=64",
    "encoder=mlp",
    "encoder.hidden=16",
    "decoder=mlp",
    "decoder.hidden=16",
    "latent_dim=2",
    "batch_size=16",
    "epochs=1",
    "device=cpu",
    "progress=false",
]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", *TINY, "checkpoint_every=1", "keep_checkpoints=10", f"out={out}"]) == 0
    return out


def one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def config_cases(tmp_path: Path) -> dict[str, Path]:
    loop = tmp_path / "self.json"
    loop.symlink_to(loop)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    binary = tmp_path / "binary.json"
    binary.write_bytes(bytes(range(256)) * 4)
    huge = tmp_path / "huge.json"
    huge.write_text('{"description": "' + "x" * (2 << 20) + '"}')
    return {
        "self": loop,
        "deep": deep,
        "fifo": fifo,
        "binary": binary,
        "huge": huge,
        "zero": Path("/dev/zero"),
        "folder": tmp_path,
    }


@pytest.mark.parametrize("case", ["self", "deep", "fifo", "binary", "huge", "zero", "folder"])
def test_config_files_that_are_not_config_files(tmp_path: Path, case: str) -> None:
    path = config_cases(tmp_path)[case]
    done = subprocess.run(
        [sys.executable, "-m", "pssl", "train", f"config={path}", "epochs=1", f"out={tmp_path / 'run'}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    line = one_line(done.stderr)
    assert f"config file {path}" in line, line
    assert "recursion" not in line and "memory" not in line.lower(), line
    assert not (tmp_path / "run").exists()


def test_random_bytes_checkpoint_is_one_pssl_line(tmp_path: Path, finished: Path, capsys) -> None:
    bad = tmp_path / "checkpoint-000000999.pt"
    bad.write_bytes(os.urandom(4096))
    code = main(
        ["evaluate", str(finished), "--checkpoint", str(bad), "--probes", "linear", "--device", "cpu"]
    )
    line = one_line(capsys.readouterr().err)
    assert code == 2
    assert f"checkpoint {bad} cannot be read: not a checkpoint pssl wrote, or damaged" in line, line
    assert "weights_only" not in line and "Weights only" not in line and "arbitrary code" not in line


def test_a_fifo_named_like_a_checkpoint_is_refused_not_waited_on(tmp_path: Path, finished: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for entry in finished.iterdir():
        if entry.is_file() and not entry.name.startswith("."):
            (run / entry.name).write_bytes(entry.read_bytes())
    fifo = run / "checkpoint-999999999.pt"
    os.mkfifo(fifo)
    done = subprocess.run(
        [sys.executable, "-m", "pssl", "evaluate", str(run), "--probes", "linear", "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    line = one_line(done.stderr)
    assert str(fifo) in line and "not a regular file" in line, line


def test_resume_says_which_checkpoint_it_fell_back_to_and_why(tmp_path: Path, finished: Path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for entry in finished.iterdir():
        if entry.is_file() and not entry.name.startswith("."):
            (run / entry.name).write_bytes(entry.read_bytes())
    checkpoints = list_checkpoints(run)
    assert len(checkpoints) >= 2
    newest, previous = checkpoints[-1], checkpoints[-2]
    newest.write_bytes(b"damaged")
    code = main(["resume", str(run), "epochs=2"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"resuming from {previous.name}, not the newest checkpoint {newest.name}" in err, err
    assert "cannot be read" in err.split(f"not the newest checkpoint {newest.name}", 1)[1].splitlines()[0]


def test_compare_with_no_probes_is_refused_before_training(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cmp"
    code = main(["compare", "models=vae", "seeds=0", "probes=", f"out={out}", *TINY])
    line = one_line(capsys.readouterr().err)
    assert code == 2 and "probes=: no probes chosen" in line and "linear" in line, line
    assert not out.exists()


def test_sigint_outside_the_loop_says_what_happened(tmp_path: Path, capsys, monkeypatch) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("pssl.inference.compose.load_dataset", interrupted)
    code = main(["train", *TINY, f"out={tmp_path / 'run'}"])
    line = one_line(capsys.readouterr().err)
    assert code == 130
    assert line.startswith("pssl train: interrupted: Ctrl-C (SIGINT) outside the training loop; "), line
    assert not line.endswith("interrupted:")


def test_an_interrupted_compare_suggests_rerunning_compare(tmp_path: Path, capsys, monkeypatch) -> None:
    def stopped(config, **kwargs):
        raise KeyboardInterrupt(
            f"stopped by signal 2 at step 3; checkpoint {config.out}/checkpoint-000000003.pt; "
            f"continue with `pssl resume {config.out}`"
        )

    monkeypatch.setattr(pssl.experiment, "run_experiment", stopped)
    code = main(["compare", "models=vae", "seeds=0", "probes=linear", f"out={tmp_path / 'cmp'}", *TINY])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 130
    assert "stopped by signal 2 at step 3" in line and "rerun the same `pssl compare` command" in line, line
    assert "pssl resume" not in line, line


SHUTDOWN = """
import atexit, os, signal, sys, time
sys.argv = ["pssl", "list", "recipes"]
from pssl.cli import main
atexit.register(lambda: (os.kill(os.getpid(), signal.SIGTERM), time.sleep(5)))
sys.exit(main())
"""


def test_sigterm_during_shutdown_exits_130() -> None:
    done = subprocess.run([sys.executable, "-c", SHUTDOWN], capture_output=True, text=True, timeout=120)
    assert done.returncode == 130, (done.returncode, done.stderr[-2000:])
    assert "paper-mnist" in done.stdout  # the command's own output was flushed


def test_main_called_from_python_gives_the_sigterm_handler_back(capsys) -> None:
    before = signal.getsignal(signal.SIGTERM)
    assert main(["list", "recipes"]) == 0
    assert signal.getsignal(signal.SIGTERM) is before
