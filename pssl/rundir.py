"""Run directories: the one owner of the folders pssl writes.

A run directory holds plain files: ``config.json`` (the resolved configuration,
which identifies the run), ``history.csv``, ``epochs.csv``, ``checkpoint-*.pt``,
``metrics.json``, diagnostics and figures. This module owns

* **paths**: :class:`RunDirectory` names every file;
* **writing**: :func:`atomic_write` is the only way pssl writes a file: the bytes
  go to a temporary file in the same folder, are flushed and ``fsync``-ed, and
  the temporary file is moved over the target with ``os.replace``, so a reader
  (or a crash, a full disk, ``kill -9``) sees the old file or the new one, never
  a mix. The temporary file is removed when writing fails;
* **locking**: :func:`claim` takes an advisory lock (``fcntl.flock`` on
  ``.pssl.lock``) for the life of a train, resume, evaluate or diagnose process;
  a second process gets :class:`RunDirectoryInUse` ("run directory X is in use by
  PID n"). The lock is re-entrant within a process (training and the evaluation
  that follows it share it) and released by the kernel when the process dies;
* **ownership**: :func:`claim` refuses a non-empty folder that is not a pssl run
  (or compare folder) before touching anything, and removes stale temporary
  files it owns (left by a killed process) once it holds the lock;
* **identity**: :func:`read_run_config` reads and checks ``config.json``;
  :func:`config_differences` compares two resolved configurations, ignoring the
  fields a resumed run may change.

Errors for the user are :class:`RunDirectoryError` (a ``ValueError``) or the
``OSError`` the system raised, with the path set; :func:`describe_os_error`
turns the latter into one line naming the path and the cause.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger(__name__)

LOCK_NAME = ".pssl.lock"
"""The lock file; its content is the PID of the process that last held the lock."""
CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.json"
HISTORY_NAME = "history.csv"
EPOCHS_NAME = "epochs.csv"

_TEMPORARY = re.compile(r"^\..+\.tmp$")
_CHECKPOINT = re.compile(r"^checkpoint-\d{9}\.pt$")

RESUMABLE_CHANGES = (
    "out",
    "epochs",
    "resume",
    "progress",
    "log_every",
    "keep_checkpoints",
    "checkpoint_every",
    "checkpoint_seconds",
    "device",
    "nonfinite",
    "logger",
)
"""Configuration fields that may differ between a run's record and a process continuing or reading it
(``out``: a run directory may be moved or copied and used where it now is; ``nonfinite``: how
non-finite steps are handled is a policy, not part of what is trained)."""


class RunDirectoryError(ValueError):
    """A folder that cannot be used as asked (not a run, foreign files, malformed config); one line."""


class RunDirectoryInUse(RunDirectoryError):
    """Another live process holds the run directory's lock."""


# --- writing -------------------------------------------------------------------------------


class _RecordingFile(io.RawIOBase):
    """A binary file proxy that remembers the first ``OSError`` of a write.

    Libraries that write through a callback (``torch.save``'s zip writer) may
    replace an ``ENOSPC`` with their own message ("unexpected pos ..."); the
    recorded error lets :func:`atomic_write` report the system's cause instead.
    """

    def __init__(self, handle: IO[bytes]) -> None:
        super().__init__()
        self._handle = handle
        self.error: OSError | None = None

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        try:
            return self._handle.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def flush(self) -> None:
        try:
            self._handle.flush()
        except OSError as err:
            self.error = self.error or err
            raise


def _with_path(err: OSError, path: Path) -> OSError:
    """``err`` with ``path`` as its file name (a new error of the same errno class)."""
    if err.errno is None:
        return err
    return OSError(err.errno, os.strerror(err.errno), str(path))


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a folder; the rename is still atomic
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Write a file atomically: ``write(handle)`` fills a temporary file, which then replaces ``path``.

    The temporary file (``.<name>.<random>.tmp`` in the same folder) is flushed
    and ``fsync``-ed before ``os.replace``; the folder is ``fsync``-ed after. When
    anything fails, the temporary file is removed and ``path`` is as it was.

    Args:
        path: the file to write (its folder must exist).
        write: called once with a binary file handle.

    Returns:
        ``path``.

    Raises:
        OSError: the system's error (no space, read-only, permission, ...) with
            ``filename`` set to ``path``, also when ``write`` hid it behind its own error.
    """
    path = Path(path)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise _with_path(err, path) from err
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as raw:
            handle = _RecordingFile(raw)
            try:
                write(handle)  # type: ignore[arg-type]
                handle.flush()
            except OSError:
                raise
            except Exception as err:
                if handle.error is not None:
                    raise handle.error from err
                raise
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise _with_path(err, path) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Atomically write ``data`` to ``path``."""
    return atomic_write(path, lambda handle: handle.write(data))


def write_text(path: str | Path, text: str) -> Path:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    return write_bytes(path, text.encode("utf-8"))


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):  # tensors and numpy arrays
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def write_json(path: str | Path, data: Any) -> Path:
    """Atomically write ``data`` as indented JSON (tensors and numpy values as plain numbers)."""
    return write_text(path, json.dumps(data, indent=2, default=_plain) + "\n")


def write_csv(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """Atomically write ``rows`` as CSV; the columns are every key in order of first appearance."""
    import csv

    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    return write_text(path, buffer.getvalue())


def save_figure(figure: Any, path: str | Path, **options: Any) -> Path:
    """Atomically save a matplotlib figure (format from the file extension)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".") or "png"
    return atomic_write(path, lambda handle: figure.savefig(handle, format=fmt, **options))


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """For writers that need a file name: yields a temporary path that replaces ``path`` on success.

    Example:
        >>> with atomic_path(run / "diagnostics.nc") as tmp:
        ...     idata.to_netcdf(str(tmp))
    """
    path = Path(path)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise _with_path(err, path) from err
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise _with_path(err, path) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def is_temporary(name: str) -> bool:
    """Whether ``name`` is a temporary file of :func:`atomic_write` (or of earlier pssl releases)."""
    return bool(_TEMPORARY.match(name))


def clean_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporary files pssl left in ``folder`` (only safe while holding its lock)."""
    removed = []
    for entry in Path(folder).iterdir():
        if entry.is_file() and is_temporary(entry.name):
            try:
                entry.unlink()
            except OSError as err:
                logger.warning("cannot remove stale temporary file %s: %s", entry, describe_os_error(err))
                continue
            removed.append(entry)
    if removed:
        logger.info("removed %d stale temporary file(s) in %s", len(removed), folder)
    return removed


# --- errors --------------------------------------------------------------------------------

_CAUSES = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.ENOTDIR: "not a directory (a part of the path is a file)",
    errno.EISDIR: "is a directory, not a file",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "no such file or directory",
    errno.EEXIST: "already exists",
    errno.ENOMEM: "out of memory",
    errno.EFBIG: "file too large",
    errno.ENAMETOOLONG: "file name too long",
    errno.EMFILE: "too many open files",
    errno.EIO: "input/output error",
}


def describe_os_error(err: OSError) -> str:
    """One line naming the path and the cause, e.g. ``runs/a/epochs.csv: no space left on device``."""
    if err.filename is None:
        return str(err) or type(err).__name__
    cause = _CAUSES.get(err.errno) if err.errno is not None else None
    if cause is None:
        cause = (err.strerror or type(err).__name__).lower()
    where = str(err.filename)
    if err.filename2 is not None:
        where += f" -> {err.filename2}"
    return f"{where}: {cause}"


# --- configuration as identity -----------------------------------------------------------


def read_run_config(folder: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``config.json`` of a run: ``(configuration fields, resolved record)``, checked for shape.

    Only reads; the configuration's values are checked by
    :meth:`pssl.config.Config.from_dict` where it is used.

    Raises:
        FileNotFoundError: when the folder has no ``config.json``.
        RunDirectoryError: when ``config.json`` is not JSON, not an object, or its
            ``resolved`` record is not an object (the message names the file and the field).
    """
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        if Path(folder).exists() and not Path(folder).is_dir():
            raise RunDirectoryError(f"{folder} is a file, not a pssl run directory")
        raise FileNotFoundError(f"{path} not found: {folder} is not a pssl run directory")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise RunDirectoryError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise RunDirectoryError(f"{path} is not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(raw, dict):
        raise RunDirectoryError(
            f"{path} must hold a JSON object of configuration fields, got a JSON {_json_kind(raw)}"
        )
    raw = dict(raw)
    resolved = raw.pop("resolved", {})
    if not isinstance(resolved, dict):
        raise RunDirectoryError(
            f"{path}: field 'resolved' must be a JSON object, got a JSON {_json_kind(resolved)}"
        )
    return raw, resolved


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if value is None:
        return "null"
    return "object"


def config_differences(
    recorded: dict[str, Any], current: dict[str, Any], *, ignore: Iterable[str] = RESUMABLE_CHANGES
) -> list[str]:
    """Fields (sorted) in which two configuration dicts differ, leaving out ``ignore``.

    A field that is ``None`` in ``current`` (a component to be chosen from the data)
    matches any recorded value: the record holds the resolved choice.
    """
    skip = set(ignore) | {"resolved"}
    keys = (set(recorded) | set(current)) - skip
    differ = []
    for key in sorted(keys):
        mine = current.get(key)
        if mine is None and key in current:
            continue
        if _normal(recorded.get(key)) != _normal(mine):
            differ.append(key)
    return differ


def _normal(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normal(v) for v in value]
    return value


def is_pssl_config(raw: Any) -> bool:
    """Whether a parsed ``config.json`` looks like one pssl wrote (model, data and the resolved record)."""
    return isinstance(raw, dict) and {"model", "data", "resolved"} <= set(raw)


# --- ownership and locking -----------------------------------------------------------------


def is_run_directory(folder: str | Path) -> bool:
    """Whether ``folder`` holds a ``config.json`` written by pssl."""
    path = Path(folder) / CONFIG_NAME
    try:
        if not path.is_file():  # a FIFO named config.json would block the read
            return False
        return is_pssl_config(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return False


def _only_ours(folder: Path, extra: Callable[[Path], bool] | None) -> bool:
    for entry in folder.iterdir():
        if entry.name == LOCK_NAME or (entry.is_file() and is_temporary(entry.name)):
            continue
        if entry.is_file() and _CHECKPOINT.match(entry.name):  # a checkpoint copied in to resume from
            continue
        if extra is not None and extra(entry):
            continue
        return False
    return True


def holds_only_pssl_files(folder: str | Path) -> bool:
    """Whether ``folder`` holds nothing but pssl's lock, temporary files and checkpoints.

    Such a folder is one pssl started and left before it wrote ``config.json``
    (e.g. a process killed at start-up). A lock file alone does not make a
    folder pssl's when it also holds other files.
    """
    try:
        return Path(folder).is_dir() and _only_ours(Path(folder), None)
    except OSError:
        return False


def _holds_runs(folder: Path) -> bool:
    """Whether a sub-folder of ``folder`` is a pssl run (what a compare folder holds)."""
    try:
        return any(entry.is_dir() and is_run_directory(entry) for entry in folder.iterdir())
    except OSError:
        return False


def check_target(
    folder: str | Path, *, kind: str = "run", owns: Callable[[Path], bool] | None = None
) -> None:
    """Refuse a folder pssl must not write into; reads only.

    Accepted: a folder that does not exist yet, an empty one (or one holding
    only pssl's lock, temporary files and checkpoints), a pssl run
    (``kind="run"``), or one whose every entry ``owns(entry)`` accepts (e.g. the
    files and runs of a comparison). A lock file next to other files does not
    make a folder pssl's. A folder is a run or a compare folder, never both: a
    run is refused as a compare folder, and a folder holding runs as a run.

    Raises:
        RunDirectoryError: for a file in the way, a folder of the other kind, or a
            non-empty folder holding files that pssl did not write (the message
            names the folder).
    """
    folder = Path(folder)
    if not folder.exists():
        if folder.is_symlink():
            raise RunDirectoryError(f"{folder} is a broken symbolic link; choose another out=")
        return
    if not folder.is_dir():
        raise RunDirectoryError(
            f"out={folder} is a file, not a folder; choose another out= (nothing was written)"
        )
    if kind == "run" and is_run_directory(folder):
        return
    if kind != "run" and is_run_directory(folder):
        raise RunDirectoryError(
            f"out={folder} is a pssl training run (it has {CONFIG_NAME}), not a {kind} folder; choose "
            f"another out= for the {kind} (nothing was written)"
        )
    if kind == "run" and _holds_runs(folder):
        raise RunDirectoryError(
            f"out={folder} holds pssl runs (a compare folder), not one run; choose another out= "
            "(nothing was written)"
        )
    if _only_ours(folder, owns):
        return
    what = "a pssl run" if kind == "run" else f"a pssl {kind} folder"
    raise RunDirectoryError(
        f"{folder} is not empty and is not {what}; choose an empty or new folder for out= "
        "(nothing was written)"
    )


@dataclass
class _Held:
    folder: Path
    fd: int
    pid: int
    count: int = 1
    created: list[Path] = field(default_factory=list)
    created_lock: bool = False


_HELD: dict[str, _Held] = {}


class RunLock:
    """A held claim on a folder; :meth:`release` (or leaving the ``with`` block) gives it back."""

    def __init__(self, key: str) -> None:
        self._key: str | None = key

    @property
    def folder(self) -> Path:
        if self._key is None:
            raise RuntimeError("this lock was released")
        return _HELD[self._key].folder

    def release(self) -> None:
        """Give the claim back; the last release in the process unlocks the folder.

        When the folder holds nothing but the lock file and this process created
        it (a run that failed before writing anything), the folder is removed
        again, so a refused start leaves no trace.
        """
        key, self._key = self._key, None
        if key is None or key not in _HELD:
            return
        held = _HELD[key]
        held.count -= 1
        if held.count > 0:
            return
        del _HELD[key]
        try:
            left_empty = held.created_lock and [p.name for p in held.folder.iterdir()] == [LOCK_NAME]
        except OSError:
            left_empty = False
        if left_empty:
            (held.folder / LOCK_NAME).unlink(missing_ok=True)
        os.close(held.fd)
        if left_empty:
            for created in reversed(held.created):
                try:
                    created.rmdir()
                except OSError:
                    break

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:  # a forgotten claim must not stay held for the life of the process
        try:
            self.release()
        except Exception:
            pass


def holder_pid(folder: str | Path) -> int | None:
    """The PID recorded in ``folder``'s lock file (the last process that held it), if readable."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(Path(folder) / LOCK_NAME, flags)
    except OSError:
        return None
    try:
        import stat

        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return int(os.pread(fd, 32, 0).decode("ascii").strip())
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)


def claim(
    folder: str | Path,
    *,
    create: bool = True,
    kind: str = "run",
    owns: Callable[[Path], bool] | None = None,
) -> RunLock:
    """Lock ``folder`` for this process (re-entrant), creating it if asked; refuse foreign folders.

    Order: the ownership check (:func:`check_target`) reads only; then the folder
    is created, the lock taken without waiting, this PID recorded in the lock
    file, and stale temporary files removed.

    Args:
        folder: the run (or compare) folder.
        create: create the folder (and its parents) when missing; otherwise a
            missing folder raises ``FileNotFoundError``.
        kind: ``"run"`` or another name used in messages (``"compare"``).
        owns: extra entries accepted as pssl's own (see :func:`check_target`).

    Raises:
        RunDirectoryInUse: when another process holds the lock.
        RunDirectoryError: for a foreign folder or a file in the way.
        OSError: when the folder or lock file cannot be created (path named).
    """
    folder = Path(folder)
    key = os.path.realpath(folder)
    held = _HELD.get(key)
    if held is not None and held.pid == os.getpid():
        held.count += 1
        return RunLock(key)
    if held is not None:  # inherited through fork: the child does not hold the parent's lock
        del _HELD[key]
    check_target(folder, kind=kind, owns=owns)
    created: list[Path] = []
    if not folder.exists():
        if not create:
            raise FileNotFoundError(f"{folder} not found")
        missing = [folder, *[p for p in folder.parents if not p.exists()]]
        try:
            folder.mkdir(parents=True)
        except FileExistsError:  # made by a concurrent process: the lock below decides
            pass
        except OSError as err:
            raise _with_path(err, folder) from err
        created = [p for p in reversed(missing)]
    lock_path = folder / LOCK_NAME
    created_lock = not lock_path.exists() and not lock_path.is_symlink()
    try:
        fd = open_lock_file(lock_path)
    except BaseException:
        _remove_created(created)
        raise
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            pid = holder_pid(folder)
            who = f"PID {pid}" if pid is not None else "another process"
            raise RunDirectoryInUse(
                f"run directory {folder} is in use by {who}; wait for it to finish or stop it first"
            ) from None
        raise _with_path(err, lock_path) from err
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:  # a full disk must not stop a read-only use such as evaluation
        pass
    _HELD[key] = _Held(folder=folder, fd=fd, pid=os.getpid(), created=created, created_lock=created_lock)
    try:
        clean_temporaries(folder)
    except OSError as err:
        logger.warning("cannot list %s: %s", folder, describe_os_error(err))
    return RunLock(key)


def open_lock_file(lock_path: str | Path) -> int:
    """Open (or create) a lock file for reading and writing, refusing anything but a plain file.

    ``O_NOFOLLOW`` refuses a symbolic link (whose target may lie outside the run
    directory: pssl writes its PID into the lock), ``O_NONBLOCK`` keeps a FIFO from
    hanging the open, and the opened file must be a regular file with one link
    (a hard link would let the PID overwrite a file elsewhere).

    Returns:
        The open file descriptor.

    Raises:
        RunDirectoryError: for a link, a FIFO, a folder, a device or a hard-linked file.
        OSError: the system's error otherwise (path named).
    """
    import stat

    lock_path = Path(lock_path)
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    refusal = (
        f"{lock_path} is not a plain file; pssl keeps its lock there and will not write through it "
        "(remove it, or use a copy of the run without it)"
    )
    if lock_path.is_symlink():
        raise RunDirectoryError(refusal.replace("not a plain file", "a symbolic link"))
    try:
        fd = os.open(lock_path, flags, 0o644)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.EMLINK, errno.ENXIO, errno.EISDIR):
            raise RunDirectoryError(refusal) from None
        raise _with_path(err, lock_path) from err
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        what = "a hard link to another file" if stat.S_ISREG(info.st_mode) else "not a plain file"
        raise RunDirectoryError(refusal.replace("not a plain file", what))
    os.set_blocking(fd, True)
    return fd


def _remove_created(created: list[Path]) -> None:
    for path in reversed(created):
        try:
            path.rmdir()
        except OSError:
            break


def holds_lock(folder: str | Path) -> bool:
    """Whether this process holds ``folder``'s lock."""
    held = _HELD.get(os.path.realpath(folder))
    return held is not None and held.pid == os.getpid()


@dataclass(frozen=True)
class RunDirectory:
    """The paths of one run directory."""

    path: Path

    def __init__(self, path: str | Path) -> None:
        object.__setattr__(self, "path", Path(path))

    @property
    def config(self) -> Path:
        return self.path / CONFIG_NAME

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_NAME

    @property
    def history(self) -> Path:
        return self.path / HISTORY_NAME

    @property
    def epochs(self) -> Path:
        return self.path / EPOCHS_NAME

    @property
    def lock(self) -> Path:
        return self.path / LOCK_NAME

    def claim(self, *, create: bool = True) -> RunLock:
        """:func:`claim` this run directory."""
        return claim(self.path, create=create)

    def read_config(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """:func:`read_run_config` of this run directory."""
        return read_run_config(self.path)

    def __str__(self) -> str:
        return str(self.path)


__all__ = [
    "CONFIG_NAME",
    "EPOCHS_NAME",
    "HISTORY_NAME",
    "LOCK_NAME",
    "METRICS_NAME",
    "RESUMABLE_CHANGES",
    "RunDirectory",
    "RunDirectoryError",
    "RunDirectoryInUse",
    "RunLock",
    "atomic_path",
    "atomic_write",
    "check_target",
    "claim",
    "clean_temporaries",
    "config_differences",
    "describe_os_error",
    "holder_pid",
    "holds_lock",
    "holds_only_pssl_files",
    "is_pssl_config",
    "is_run_directory",
    "is_temporary",
    "open_lock_file",
    "read_run_config",
    "save_figure",
    "write_bytes",
    "write_csv",
    "write_json",
    "write_text",
]
