"""The lock cannot write outside its folder, a lock alone makes no folder pssl's, and runs and
compare folders never mix.

Each case is what a user may receive or leave behind: a run folder whose
``.pssl.lock`` is a symbolic link, a hard link or a FIFO (evaluate, resume and
diagnose must neither follow it nor hang on it, and the target is unchanged); a
user's folder with a stray lock next to their files; a finished training run
given to ``compare`` as ``out=`` and a finished compare folder given to ``train``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pssl.cli import main
from pssl.rundir import LOCK_NAME, RunDirectoryError, claim, holder_pid

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
    assert main(["train", *TINY, f"out={out}"]) == 0
    return out


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != LOCK_NAME}


def copy_run(source: Path, target: Path) -> Path:
    target.mkdir()
    for entry in source.iterdir():
        if entry.is_file() and entry.name != LOCK_NAME:
            (target / entry.name).write_bytes(entry.read_bytes())
    return target


COMMANDS = {
    "evaluate": lambda run: ["evaluate", str(run), "--probes", "linear", "--device", "cpu"],
    "resume": lambda run: ["resume", str(run), "epochs=2"],
    "diagnose": lambda run: ["diagnose", str(run), "--device", "cpu"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("kind", ["symlink", "hardlink", "fifo"])
def test_a_lock_that_is_not_a_plain_file_is_refused_and_nothing_outside_changes(
    tmp_path: Path, finished: Path, capsys, command: str, kind: str
) -> None:
    run = copy_run(finished, tmp_path / "received")
    target = tmp_path / "precious.txt"
    target.write_text("user data\n")
    lock = run / LOCK_NAME
    if kind == "symlink":
        lock.symlink_to(target)
    elif kind == "hardlink":
        os.link(target, lock)
    else:
        os.mkfifo(lock)
    before = contents(run)
    code = main(COMMANDS[command](run))
    err = capsys.readouterr().err
    assert code == 2, err
    assert target.read_text() == "user data\n"
    assert str(lock) in err and "pssl keeps its lock there" in err, err
    assert err.strip().count("\n") == 0, err
    assert contents(run) == before


def test_open_lock_refuses_links_and_pid_reader_does_not_follow(tmp_path: Path) -> None:
    target = tmp_path / "outside"
    target.write_text("42\n")
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / LOCK_NAME).symlink_to(target)
    with pytest.raises(RunDirectoryError, match="symbolic link"):
        claim(folder, create=False)
    assert holder_pid(folder) is None  # a link's target is not read as a PID
    assert target.read_text() == "42\n"


def test_a_stray_lock_does_not_make_a_users_folder_pssls(tmp_path: Path, capsys) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep\n")
    (out / LOCK_NAME).write_text("")
    code = main(["train", *TINY, f"out={out}"])
    err = capsys.readouterr().err
    assert code == 2 and f"{out} is not empty and is not a pssl run" in err, err
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME, "notes.txt"]


def test_a_lock_alone_is_still_a_folder_pssl_may_use(tmp_path: Path) -> None:
    out = tmp_path / "started"
    out.mkdir()
    (out / LOCK_NAME).write_text("123\n")  # left by a process killed before config.json
    with claim(out):
        assert holder_pid(out) == os.getpid()


def test_compare_into_a_training_run_is_refused(tmp_path: Path, finished: Path, capsys) -> None:
    run = copy_run(finished, tmp_path / "run")
    before = contents(run)
    code = main(["compare", "models=vae", "seeds=0", "probes=linear", f"out={run}", *TINY])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"out={run} is a pssl training run" in err and "not a compare folder" in err, err
    assert contents(run) == before and sorted(p.name for p in run.iterdir() if p.is_dir()) == []


def test_train_into_a_compare_folder_is_refused(tmp_path: Path, finished: Path, capsys) -> None:
    folder = tmp_path / "cmp"
    folder.mkdir()
    copy_run(finished, folder / "vae-seed0")
    (folder / "results.csv").write_text("model,seed\n")
    (folder / LOCK_NAME).write_text("")
    before = contents(folder)
    code = main(["train", *TINY, f"out={folder}"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"out={folder} holds pssl runs (a compare folder)" in err, err
    assert contents(folder) == before and not (folder / "config.json").exists()
