"""Atomic, versioned checkpoints of plain state.

A checkpoint is one dict of plain values: module and optimiser ``state_dict``s,
counters, every RNG state, the resolved config and the history so far. It is
written to a temporary file in the same folder and moved into place with
``os.replace``, so a crash mid-save leaves the previous checkpoint intact. It is
read with ``torch.load(weights_only=True)``: no arbitrary object is unpickled,
and classes are rebuilt from the config's names.

Format versions: :data:`CHECKPOINT_FORMAT` is the layout written now. An older
checkpoint is brought up to date on load by the chain of :data:`MIGRATIONS`
(``{version: function(state) -> state of version + 1}``); one without a path
to the current layout, or from a newer pssl, is refused with a message saying
so. History of the layout:

* 1: model/optimiser state, counters, data-order state, RNG states (including an
  ``augment`` generator whose state the run continued from).
* 2: augmentations and model noise are reseeded at every step from
  ``(seed, step, rank)``, so the ``augment`` generator state is gone, and
  ``world_size`` (the number of processes that wrote it, informational) is recorded.
  The state does not depend on the number of processes.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_FORMAT = 3
"""Version of the checkpoint layout; bump when the dict's keys change meaning (and add a migration)."""

_NAME = re.compile(r"^checkpoint-(\d{9})\.pt$")


logger = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: corrupt, from another format version, or another model."""


def migrate_v1_to_v2(state: dict[str, Any]) -> dict[str, Any]:
    """Version 1 -> 2: drop the obsolete ``augment`` generator state; record ``world_size = 1``."""
    state = dict(state)
    rng = dict(state.get("rng", {}))
    generators = {k: v for k, v in rng.get("generators", {}).items() if k != "augment"}
    state["rng"] = {**rng, "generators": generators}
    state.setdefault("world_size", 1)
    return state


def migrate_v2_to_v3(state: dict[str, Any]) -> dict[str, Any]:
    """Version 2 -> 3: Pyro param-store parameters (``pyro_params``, none before)."""
    state = dict(state)
    state.setdefault("pyro_params", {})
    return state


MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: migrate_v1_to_v2, 2: migrate_v2_to_v3}
"""``{version: migrate}``: ``migrate(state)`` turns a checkpoint of ``version`` into ``version + 1``."""


def migrate(state: dict[str, Any], *, source: str = "checkpoint") -> dict[str, Any]:
    """Bring a loaded checkpoint dict up to :data:`CHECKPOINT_FORMAT` through :data:`MIGRATIONS`.

    Raises:
        CheckpointError: for a version newer than this pssl's, or an old one with no
            migration path; the message names the version.
    """
    version = state["format_version"]
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"{source} has a malformed format version {version!r}")
    if version > CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{source} has format version {version}, written by a newer pssl; this pssl reads versions "
            f"up to {CHECKPOINT_FORMAT}: upgrade pssl to resume it"
        )
    while version < CHECKPOINT_FORMAT:
        step = MIGRATIONS.get(version)
        if step is None:
            readable = ", ".join(str(v) for v in sorted({*MIGRATIONS, CHECKPOINT_FORMAT}))
            raise CheckpointError(
                f"{source} has format version {version}, which this pssl cannot migrate (it reads versions "
                f"{readable}); resume it with the pssl release that wrote it"
            )
        state = step(state)
        version += 1
        state["format_version"] = version
    return state


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / f"checkpoint-{step:09d}.pt"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoints in ``run_dir``, oldest first (by step)."""
    folder = Path(run_dir)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def save_checkpoint(state: dict[str, Any], path: str | Path, *, keep: int | None = None) -> Path:
    """Write ``state`` atomically to ``path``; then keep only the newest ``keep`` checkpoints.

    The folder must exist (the run directory's owner, :mod:`pssl.rundir`, creates and locks it).
    Writing goes through :func:`pssl.rundir.atomic_write`: on a full disk the
    previous checkpoints stay, and the error names the path and the cause.

    Returns:
        The path written.
    """
    from pssl.rundir import atomic_write

    path = Path(path)
    payload = dict(state)
    payload["format_version"] = CHECKPOINT_FORMAT
    atomic_write(path, lambda handle: torch.save(payload, handle))
    if keep is not None:
        for old in list_checkpoints(path.parent)[:-keep]:
            if old != path:
                old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (any version :func:`migrate` handles).

    Returns:
        The state dict in the current layout (:data:`CHECKPOINT_FORMAT`).

    Raises:
        CheckpointError: if the file is unreadable, corrupt, or of a format version
            this pssl cannot read.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise
    except OSError as err:
        raise CheckpointError(f"checkpoint {path} cannot be read: {err.strerror or err}") from None
    if not stat.S_ISREG(mode):  # a FIFO or device would block torch.load or never end
        raise CheckpointError(f"checkpoint {path} is not a regular file; pssl reads checkpoints it wrote")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise CheckpointError(
            f"checkpoint {path} cannot be read: not a checkpoint pssl wrote, or damaged "
            f"({_torch_reason(err)})"
        ) from None
    if not isinstance(state, dict) or "format_version" not in state:
        raise CheckpointError(f"{path} is not a pssl checkpoint (no format_version)")
    state = migrate(state, source=f"checkpoint {path}")
    check_state(state, source=f"checkpoint {path}")
    return state


def _torch_reason(err: BaseException) -> str:
    """A short reason from torch's error, without its advice (``weights_only=False`` is wrong advice
    for a file pssl did not write: it would unpickle arbitrary objects)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in lines:
        lowered = line.lower()
        if "weights_only" in lowered or "weights only" in lowered or "documentation" in lowered:
            continue
        if "file an issue" in lowered or "pytorch.org" in lowered:
            continue
        return f"{type(err).__name__}: {line[:160]}"
    return type(err).__name__


REQUIRED_FIELDS: dict[str, tuple[type, ...]] = {
    "config": (dict,),
    "model_name": (str,),
    "model": (dict,),
    "optimizer": (dict,),
    "epoch": (int,),
    "step_in_epoch": (int,),
    "global_step": (int,),
    "epoch_order_state": (torch.Tensor,),
    "rng": (dict,),
    "history": (list,),
    "epochs": (list,),
    "skipped_steps": (int,),
}
"""Fields of a current-format checkpoint and their types (checked on load, so a damaged file fails
there with one line naming the field rather than later inside training or evaluation)."""


def check_state(state: dict[str, Any], *, source: str = "checkpoint") -> None:
    """Check that a (migrated) checkpoint has every field of :data:`REQUIRED_FIELDS` with its type.

    Raises:
        CheckpointError: naming ``source`` and the first missing or mistyped field.
    """
    for name, types in REQUIRED_FIELDS.items():
        if name not in state:
            raise CheckpointError(f"{source} is damaged: field {name!r} is missing")
        value = state[name]
        if isinstance(value, bool) or not isinstance(value, types):
            raise CheckpointError(
                f"{source} is damaged: field {name!r} should be {types[0].__name__}, "
                f"got {type(value).__name__}"
            )
        if types == (int,) and value < 0:
            raise CheckpointError(f"{source} is damaged: field {name!r} is negative ({value})")
    for key, value in state["model"].items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{source} is damaged: field 'model' entry {key!r} is {type(value).__name__}, not a tensor"
            )
    for key, value in state.get("running_sums", {}).items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CheckpointError(f"{source} is damaged: field 'running_sums' entry {key!r} is not a number")


def load_module_state(module: torch.nn.Module, state: dict[str, Any], *, source: str, what: str) -> None:
    """``module.load_state_dict(state)`` with a one-line error naming the first mismatch.

    Raises:
        CheckpointError: for missing or unexpected entries or a shape mismatch, e.g.
            "checkpoint X does not fit model 'simvae': 'encoder.net.0.weight' has shape
            (16, 64) in the checkpoint but (32, 64) in the model (3 mismatches)".
    """
    own = module.state_dict()
    problems = []
    for key, value in own.items():
        if key not in state:
            problems.append(f"{key!r} is missing from the checkpoint")
        elif tuple(state[key].shape) != tuple(value.shape):
            problems.append(
                f"{key!r} has shape {tuple(state[key].shape)} in the checkpoint but {tuple(value.shape)} "
                "in the model"
            )
    problems += [f"{key!r} is in the checkpoint but not in the model" for key in state if key not in own]
    if problems:
        more = f" ({len(problems)} mismatches)" if len(problems) > 1 else ""
        raise CheckpointError(f"{source} does not fit {what}: {problems[0]}{more}")
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1].strip()
        raise CheckpointError(f"{source} does not fit {what}: {first}") from None


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint in ``run_dir`` that loads, skipping unreadable ones; ``None`` if none.

    Only for resuming training (a crash may leave the newest file damaged on some
    file systems, and training restarts from the last good state); evaluation uses
    :func:`newest_checkpoint` and never falls back silently.
    """
    skipped: list[tuple[Path, str]] = []
    for path in reversed(list_checkpoints(run_dir)):
        try:
            load_checkpoint(path)
        except CheckpointError as err:
            skipped.append((path, str(err)))
            continue
        if skipped:
            newest, reason = skipped[0]
            logger.warning(
                "resuming from %s, not the newest checkpoint %s%s: %s",
                path.name,
                newest.name,
                f" (nor {len(skipped) - 1} other newer one(s))" if len(skipped) > 1 else "",
                reason,
            )
        return path
    return None


def newest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint with the highest step in ``run_dir`` (readable or not); ``None`` if none."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def capture_rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """Every RNG state a run depends on: torch (CPU and CUDA), numpy, Python, and named generators."""
    import random

    import numpy as np

    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": _python_state_to_plain(random.getstate()),
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype("int64")),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "generators": {name: gen.get_state() for name, gen in generators.items()},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    """Inverse of :func:`capture_rng_state`.

    Generators missing from ``state`` keep their state. CUDA states are restored
    for the devices both the saving and the loading machine have.
    """
    import random

    import numpy as np

    torch.set_rng_state(state["torch"].cpu())
    random.setstate(_python_state_from_plain(state["python"]))
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["name"],
            np_state["keys"].numpy().astype("uint32"),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    for name, gen in generators.items():
        saved = state.get("generators", {}).get(name)
        if saved is not None:
            gen.set_state(saved.cpu())
    if "cuda" in state and torch.cuda.is_available():
        for index, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu(), index)


def _python_state_to_plain(state: tuple) -> dict[str, Any]:
    version, internal, gauss = state
    return {"version": version, "internal": list(internal), "gauss": gauss}


def _python_state_from_plain(state: dict[str, Any]) -> tuple:
    return (state["version"], tuple(state["internal"]), state["gauss"])
