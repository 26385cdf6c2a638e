"""The run-directory owner: atomic writes, locks, ownership checks, one-line OS errors.

Faults are injected where they happen: a full disk is simulated by making the
file handle of :func:`pssl.rundir.atomic_write` raise ``ENOSPC`` (a small tmpfs
needs privileges CI does not have); a second process holds the lock in a real
subprocess.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import pssl.rundir as rundir
from pssl.rundir import (
    LOCK_NAME,
    RunDirectoryError,
    RunDirectoryInUse,
    atomic_write,
    claim,
    config_differences,
    describe_os_error,
    read_run_config,
    write_text,
)


def fail_writes_after(monkeypatch, count: int, code: int = errno.ENOSPC) -> None:
    """Make every write after the first ``count`` through the atomic writer fail with ``code``."""
    original = rundir._RecordingFile.write
    calls = {"n": 0}

    def write(self, data):
        calls["n"] += 1
        if calls["n"] > count:
            error = OSError(code, os.strerror(code))
            self.error = self.error or error
            raise error
        return original(self, data)

    monkeypatch.setattr(rundir._RecordingFile, "write", write)


def test_atomic_write_replaces_whole_files(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    write_text(path, "first")
    write_text(path, "second")
    assert path.read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_full_disk_keeps_the_previous_file_and_no_temporary(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "epochs.csv"
    write_text(path, "epoch\n1\n")
    fail_writes_after(monkeypatch, 0)
    with pytest.raises(OSError) as info:
        write_text(path, "epoch\n1\n2\n")
    assert info.value.errno == errno.ENOSPC
    assert describe_os_error(info.value) == f"{path}: no space left on device"
    assert path.read_text() == "epoch\n1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epochs.csv"]


def test_torch_save_on_a_full_disk_reports_the_cause_not_the_zip_writer(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "checkpoint-000000001.pt"
    atomic_write(path, lambda handle: torch.save({"w": torch.zeros(3)}, handle))
    fail_writes_after(monkeypatch, 2)  # fail inside torch's zip writer
    with pytest.raises(OSError) as info:
        atomic_write(path, lambda handle: torch.save({"w": torch.randn(100_000)}, handle))
    assert info.value.errno == errno.ENOSPC and str(path) in describe_os_error(info.value)
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.zeros(3))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


@pytest.mark.parametrize(
    ("code", "cause"),
    [
        (errno.ENOSPC, "no space left on device"),
        (errno.EROFS, "read-only file system"),
        (errno.ENOTDIR, "not a directory"),
        (errno.EACCES, "permission denied"),
        (errno.ENOMEM, "out of memory"),
    ],
)
def test_os_errors_are_one_line_with_path_and_cause(code: int, cause: str) -> None:
    line = describe_os_error(OSError(code, os.strerror(code), "/some/run/metrics.json"))
    assert line.startswith("/some/run/metrics.json: ") and cause in line and "\n" not in line


def test_claim_creates_locks_and_removes_an_unused_folder(tmp_path: Path) -> None:
    run = tmp_path / "a" / "run"
    with claim(run):
        assert (run / LOCK_NAME).read_text().strip() == str(os.getpid())
        with claim(run):  # re-entrant within a process
            pass
        assert rundir.holds_lock(run)
    assert not rundir.holds_lock(run)
    assert not (tmp_path / "a").exists(), "a refused start left folders behind"


def test_claim_keeps_a_folder_with_files_and_cleans_stale_temporaries(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with claim(run):
        write_text(run / "config.json", json.dumps({"model": "vae", "data": "digits", "resolved": {}}))
    stale = [run / ".epochs.csv.tmp", run / ".checkpoint-000000003.pt.ab12cd.tmp"]
    for path in stale:
        path.write_text("half written")
    with claim(run):
        assert not any(p.exists() for p in stale)
    assert (run / "config.json").is_file()


@pytest.mark.parametrize(
    "contents",
    [
        {"config.json": '{"mine": 1}', "metrics.json": "keep"},  # the case
        {"notes.txt": "mine"},
        {"config.json": "not json"},
    ],
    ids=["foreign config.json", "foreign file", "broken config.json"],
)
def test_claim_refuses_a_foreign_folder_and_touches_nothing(tmp_path: Path, contents: dict[str, str]) -> None:
    folder = tmp_path / "x"
    folder.mkdir()
    for name, text in contents.items():
        (folder / name).write_text(text)
    with pytest.raises(RunDirectoryError, match=f"{folder} is not empty and is not a pssl run"):
        claim(folder)
    assert {p.name: p.read_text() for p in folder.iterdir()} == contents


def test_claim_refuses_a_file(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("data")
    with pytest.raises(RunDirectoryError, match="is a file, not a folder"):
        claim(path)
    with pytest.raises(OSError) as info:
        claim(path / "run")
    assert info.value.errno == errno.ENOTDIR and path.read_text() == "data"


HOLDER = textwrap.dedent(
    """
    import sys, time
    from pssl.rundir import claim
    with claim(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(60)
    """
)


def test_a_second_process_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirectoryInUse, match=f"run directory {run} is in use by PID {holder.pid}"):
            claim(run)
    finally:
        holder.kill()
        holder.wait()
    with claim(run):  # the kernel released the dead holder's lock
        pass


def test_read_run_config_names_the_file_and_field(tmp_path: Path) -> None:
    cases = {
        '"a string"': "must hold a JSON object of configuration fields, got a JSON string",
        "[1, 2]": "got a JSON array",
        '{"model": "vae", "resolved": 3}': "field 'resolved' must be a JSON object, got a JSON number",
        "{broken": "is not valid JSON",
    }
    for text, message in cases.items():
        (tmp_path / "config.json").write_text(text)
        with pytest.raises(RunDirectoryError, match=message) as info:
            read_run_config(tmp_path)
        assert str(tmp_path / "config.json") in str(info.value)


def test_config_differences_ignore_resumable_fields_and_unresolved_components() -> None:
    recorded = {"model": {"name": "vae"}, "epochs": 3, "out": "a", "prior": {"name": "gaussian"}, "lr": 0.001}
    assert config_differences(recorded, {**recorded, "epochs": 5, "out": "b", "prior": None}) == []
    assert config_differences(recorded, {**recorded, "lr": 0.01}) == ["lr"]


def test_lock_is_released_when_the_holder_is_killed(tmp_path: Path) -> None:
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()  # kill -9: no clean-up code runs
    holder.wait()
    deadline = time.monotonic() + 10
    while True:
        try:
            with claim(run):
                break
        except RunDirectoryInUse:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
