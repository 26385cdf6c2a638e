"""Loading a trained run from its directory, treating its files as data, not as instructions.

:func:`load_run` rebuilds the method ``config.json`` names and loads one
checkpoint into it, for evaluation and diagnostics. It

* reads the newest checkpoint, or the one asked for; a newest checkpoint that
  cannot be read is an error naming it, never a silent fall-back to an older one;
* checks that the checkpoint was written by the configuration in ``config.json``
  (the whole resolved configuration, not only the model name);
* reports malformed files in one line naming the file and the field;
* never downloads data or writes caches outside the run directory unless the
  caller asks (``allow_download``; the CLI's ``--download``): a ``config.json``
  received from someone else may name any ``data.root`` and ``download=true``.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pssl.augment import build_augmenter
from pssl.config import Config, ConfigError
from pssl.datasets import DATASETS, DataSplits, evaluation_splits, load_dataset
from pssl.inference.checkpoint import (
    CheckpointError,
    list_checkpoints,
    load_checkpoint,
    load_module_state,
    newest_checkpoint,
)
from pssl.rundir import RunDirectoryError, config_differences, read_run_config

logger = logging.getLogger(__name__)

_WRITING_DATA_OPTIONS = {"download": False, "cache": False}
"""Data-set options that make loading write or fetch files; off when loading a run unless asked."""


@dataclass
class LoadedRun:
    """A trained method rebuilt from a run directory.

    Attributes:
        model: the method with the checkpoint's weights (eval mode).
        config: the run's configuration (``device`` set to where it was loaded).
        data: the data splits.
        run_dir: the run directory.
        history, epochs: the logged rows stored in the checkpoint.
        skipped_steps: steps skipped as non-finite up to the checkpoint.
        checkpoint: the checkpoint file loaded.
        global_step: its step.
        finished: whether it is the end of training (every configured epoch done).
        newest: whether it is the newest checkpoint of the run.
    """

    model: Any
    config: Config
    data: DataSplits
    run_dir: Path
    history: list[dict[str, float]]
    epochs: list[dict[str, float]]
    skipped_steps: int
    checkpoint: Path
    global_step: int
    finished: bool
    newest: bool
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return True


def run_data_options(
    config: Config, *, allow_download: bool = False, root: str | None = None
) -> dict[str, Any]:
    """The data options to load a run's data with: recorded ones, minus downloads and caches unless asked."""
    options = dict(config.data.options)
    try:
        accepted = DATASETS.entry(config.data.name).parameters()
    except (KeyError, ValueError):
        return options
    if not allow_download:
        for key, value in _WRITING_DATA_OPTIONS.items():
            if key in accepted:
                if key == "download" and str(options.get(key, "false")).lower() in ("true", "1", "yes", "on"):
                    logger.warning(
                        "ignoring download=true recorded in the run's config.json "
                        "(pass --download to allow it)"
                    )
                options[key] = value
    if root is not None:
        if "root" not in accepted:
            raise ConfigError(f"data set {config.data.name!r} has no root option; --data-root does not apply")
        options["root"] = root
    return options


def load_run(
    run_dir: str | Path,
    *,
    device: str = "cpu",
    data: DataSplits | None = None,
    checkpoint: str | Path | None = None,
    allow_download: bool = False,
    data_root: str | None = None,
    model: Any = None,
    guide: Any = None,
) -> LoadedRun:
    """Rebuild a trained method from its run directory.

    Parameters the model or guide create with ``pyro.param`` (saved in the checkpoint's
    ``pyro_params``) are restored into Pyro's param store: the model and guide run once
    on two test images, which creates each with its constraint, and the saved
    unconstrained value is copied in. A run trained with a model object or a guide
    passed from Python needs the same objects rebuilt (``model=``, ``guide=``), or it
    is refused with the reason.

    Args:
        run_dir: the run directory.
        device: where to load the model (``cpu``, ``cuda``, ``cuda:N``, ``auto``).
        data: data splits to use instead of loading the recorded data set.
        checkpoint: a checkpoint file (or its name in ``run_dir``) instead of the newest.
        allow_download: let the data set download or write caches if ``config.json`` asks.
        data_root: read the data from this folder instead of the recorded ``data.root``.
        model: the method rebuilt in Python, for a run trained with a model object
            (``train(config, model=...)``); its weights are loaded from the checkpoint.
        guide: the guide passed to ``train(config, guide=...)``, if any (for its
            ``pyro.param`` values).

    Raises:
        FileNotFoundError: if ``config.json`` or the chosen checkpoint is missing.
        RunDirectoryError: for a malformed ``config.json`` (names the file and field).
        CheckpointError: for an unreadable or damaged checkpoint, one from another
            configuration, or none at all (names the file; says how to choose another).
        ConfigError: for an unusable device.
    """
    from pssl.inference.distributed import resolve_device
    from pssl.inference.train import build_from_config

    run_dir = Path(run_dir)
    raw, resolved = read_run_config(run_dir)
    config_file = run_dir / "config.json"
    if resolved.get("custom_model") and model is None:
        raise CheckpointError(
            f"{run_dir} was trained with a model object passed from Python; rebuild that model and pass it "
            "as load_run(run_dir, model=...) (its weights and pyro.param values are then restored)"
        )
    try:
        config = Config.from_dict(raw)
    except ConfigError as err:
        raise RunDirectoryError(f"{config_file}: {err}") from None
    torch_device = resolve_device(device)
    config = dataclasses.replace(config, device=device)

    found = list_checkpoints(run_dir)
    newest = newest_checkpoint(run_dir)
    if checkpoint is None:
        if newest is None:
            raise CheckpointError(f"no checkpoint in {run_dir}: the run has not saved one yet")
        chosen = newest
    else:
        chosen = Path(checkpoint)
        if not chosen.exists() and (run_dir / chosen).exists():
            chosen = run_dir / chosen
        if not chosen.is_file():
            names = ", ".join(p.name for p in found) or "none"
            raise FileNotFoundError(f"checkpoint {checkpoint} not found (checkpoints in {run_dir}: {names})")
    try:
        state = load_checkpoint(chosen, map_location=torch_device)
    except CheckpointError as err:
        if checkpoint is None:
            others = [p.name for p in found if p != chosen]
            hint = f"; choose another with --checkpoint ({', '.join(others[-3:])})" if others else ""
            raise CheckpointError(f"the newest checkpoint cannot be used: {err}{hint}") from None
        raise
    differ = config_differences(state["config"], config.to_dict())
    if differ:
        raise CheckpointError(
            f"checkpoint {chosen} was written by another configuration than {config_file} "
            f"(differs in: {', '.join(differ)}); the run directory mixes two runs"
        )
    if state["model_name"] != config.model.name:
        raise CheckpointError(
            f"checkpoint {chosen} holds model {state['model_name']!r}, "
            f"{config_file} says {config.model.name!r}"
        )
    if data is None:
        options = run_data_options(config, allow_download=allow_download, root=data_root)
        data = load_dataset(config.data.name, options, seed=config.seed)
    if model is None:
        model = build_from_config(config, data.train.image_shape)
    augment = config.augment
    if augment is not None and augment.name is not None:  # evaluate on images like the training views
        augmenter = build_augmenter(augment.name, data.train.image_shape, augment.options, data=data)
        data = evaluation_splits(data, augmenter)
    load_module_state(
        model, state["model"], source=f"checkpoint {chosen}", what=f"model {config.model.name!r}"
    )
    model.to(torch_device).eval()
    restore_pyro_params(model, guide, state.get("pyro_params", {}), data, config.num_views, source=chosen)
    finished = state["epoch"] >= config.epochs and state["step_in_epoch"] == 0
    return LoadedRun(
        model=model,
        config=config,
        data=data,
        run_dir=run_dir,
        history=list(state["history"]),
        epochs=list(state["epochs"]),
        skipped_steps=int(state["skipped_steps"]),
        checkpoint=chosen,
        global_step=int(state["global_step"]),
        finished=bool(finished),
        newest=newest is not None and chosen.resolve() == newest.resolve(),
    )


def restore_pyro_params(
    model: Any, guide: Any, saved: dict[str, Any], data: DataSplits, num_views: int, *, source: Path
) -> None:
    """Put a checkpoint's ``pyro.param`` values back into Pyro's param store.

    Raises:
        CheckpointError: if the model and guide do not create every saved parameter
            (e.g. it was created by a guide passed to ``train`` that is not passed here).
    """
    if not saved:
        return
    import pyro
    import torch
    from pyro import poutine

    from pssl.models.base import ViewBatch

    anchor = next(iter(model.parameters()), None)
    images = data.test.images[:2] if len(data.test) else data.train.images[:2]
    floats = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    if anchor is not None:
        floats = floats.to(device=anchor.device, dtype=anchor.dtype)
    views = floats[:, None].expand(-1, max(num_views, 1), -1, -1, -1).contiguous()
    batch = ViewBatch(views=views, index=torch.arange(views.shape[0], device=views.device), num_items=2)
    store = pyro.get_param_store()
    with torch.no_grad(), poutine.block():
        guide_trace = poutine.trace(guide if guide is not None else model.guide).get_trace(batch)
        poutine.trace(poutine.replay(model.model, trace=guide_trace)).get_trace(batch)
    missing = sorted(name for name in saved if name not in store)
    if missing:
        raise CheckpointError(
            f"checkpoint {source} holds pyro.param values {missing} that the model and guide given do not "
            "create; pass the guide the run was trained with as load_run(run_dir, guide=...)"
        )
    unconstrained = dict(store.named_parameters())  # the unconstrained tensors, as saved
    with torch.no_grad():
        for name, value in saved.items():
            held = unconstrained[name]
            if held.shape != value.shape:
                raise CheckpointError(
                    f"checkpoint {source}: pyro.param {name!r} has shape {tuple(value.shape)}, "
                    f"the model's has {tuple(held.shape)}"
                )
            held.copy_(value.to(held))


__all__ = ["LoadedRun", "load_run", "restore_pyro_params", "run_data_options"]
