"""Training loop: resume equality, checkpoints, refusals."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from pssl.config import Component, Config
from pssl.datasets import load_dataset
from pssl.inference.checkpoint import (
    CHECKPOINT_FORMAT,
    MIGRATIONS,
    CheckpointError,
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from pssl.inference.runs import load_run
from pssl.inference.train import Trainer, train

SMALL_MLP = {"hidden": "32,16"}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", {"limit": 256}, seed=0)


def small_config(out: Path, **changes) -> Config:
    base = dict(
        model=Component("simvae"),
        data=Component("digits", {"limit": 256}),
        encoder=Component("mlp", dict(SMALL_MLP)),
        decoder=Component("mlp", dict(SMALL_MLP)),
        latent_dim=4,
        batch_size=32,
        epochs=2,
        lr=1e-3,
        out=str(out),
        progress=False,
    )
    base.update(changes)
    return Config(**base)


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_params(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"parameter {key} differs")


@pytest.mark.parametrize("model_name", ["simvae", "vae"])
def test_two_epochs_equal_one_plus_resume_plus_one(tmp_path: Path, digits, model_name: str) -> None:
    straight = train(small_config(tmp_path / "a", model=Component(model_name)), data=digits)
    first = train(small_config(tmp_path / "b", model=Component(model_name), epochs=1), data=digits)
    torch.manual_seed(12345)  # the state must come from the checkpoint, not from the process
    resumed = train(
        small_config(tmp_path / "b", model=Component(model_name), epochs=2, resume=True), data=digits
    )
    assert first.epochs[0]["step"] == straight.epochs[0]["step"]
    assert_same_params(params(straight.model), params(resumed.model))
    assert [r["step"] for r in resumed.history] == [r["step"] for r in straight.history]


def test_resume_from_several_stopping_points_is_exact(tmp_path: Path, digits) -> None:
    """Stop after step 1, mid-epoch, at the epoch boundary (7 steps per epoch) and in epoch 2; resume."""
    trainer = Trainer(small_config(tmp_path / "a", checkpoint_every=1, keep_checkpoints=100), data=digits)
    straight = trainer.fit()
    assert trainer.steps_per_epoch == 7
    for stop in (1, 4, 7, 10):
        run = tmp_path / f"stopped-{stop}"
        run.mkdir()
        shutil.copy(checkpoint_path(tmp_path / "a", stop), run)
        torch.manual_seed(1000 + stop)  # the state must come from the checkpoint, not from the process
        resumed = train(small_config(run, resume=True), data=digits)
        assert_same_params(params(straight.model), params(resumed.model))
        assert resumed.history == straight.history  # the logged running sums resume too
        timing = ("seconds", "images_per_second")
        assert [{k: v for k, v in r.items() if k not in timing} for r in resumed.epochs] == [
            {k: v for k, v in r.items() if k not in timing} for r in straight.epochs
        ]


def test_run_directory_contents_and_load_run(tmp_path: Path, digits) -> None:
    result = train(small_config(tmp_path / "run", epochs=1), data=digits)
    for name in ("config.json", "history.csv", "epochs.csv"):
        assert (tmp_path / "run" / name).is_file(), name
    loaded = load_run(tmp_path / "run", data=digits)
    images = digits.test.images[:5].float() / 255
    torch.testing.assert_close(loaded.model.encode(images), result.model.encode(images))


def test_refuses_to_overwrite_existing_run(tmp_path: Path, digits) -> None:
    train(small_config(tmp_path / "run", epochs=1), data=digits)
    before = sorted(p.name for p in list_checkpoints(tmp_path / "run"))
    with pytest.raises(ValueError, match="already holds checkpoints"):
        train(small_config(tmp_path / "run", epochs=1), data=digits)
    assert sorted(p.name for p in list_checkpoints(tmp_path / "run")) == before


def test_resume_with_other_model_is_refused(tmp_path: Path, digits) -> None:
    train(small_config(tmp_path / "run", epochs=1), data=digits)
    with pytest.raises(CheckpointError, match="different configuration"):
        train(small_config(tmp_path / "run", model=Component("vae"), resume=True), data=digits)


def test_resume_without_checkpoint_is_refused(tmp_path: Path, digits) -> None:
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        train(small_config(tmp_path / "empty", resume=True), data=digits)


def test_interrupted_save_keeps_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    first = save_checkpoint({"step": 1}, tmp_path / "checkpoint-000000001.pt")

    def broken_save(obj, handle, *args, **kwargs):
        handle.write(b"partial")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint({"step": 2}, tmp_path / "checkpoint-000000002.pt")
    monkeypatch.undo()
    assert torch.load(first, weights_only=True)["step"] == 1  # the previous file, intact
    assert not (tmp_path / "checkpoint-000000002.pt").exists()
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary file left behind


def test_truncated_checkpoint_gives_clear_error(tmp_path: Path) -> None:
    path = save_checkpoint({"step": 1, "w": torch.ones(100)}, tmp_path / "checkpoint-000000001.pt")
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(path)


def test_other_format_version_gives_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint-000000001.pt"
    torch.save({"format_version": 0, "step": 1}, path)
    with pytest.raises(CheckpointError, match="format version 0, which this pssl cannot migrate"):
        load_checkpoint(path)
    torch.save({"format_version": CHECKPOINT_FORMAT + 1, "step": 1}, path)
    with pytest.raises(
        CheckpointError, match=f"format version {CHECKPOINT_FORMAT + 1}, written by a newer pssl"
    ):
        load_checkpoint(path)


def test_version_1_checkpoint_is_migrated_and_resumes(tmp_path: Path, digits) -> None:
    assert set(MIGRATIONS) == set(range(1, CHECKPOINT_FORMAT))  # every older released version has a path
    train(small_config(tmp_path / "run", epochs=1), data=digits)
    path = list_checkpoints(tmp_path / "run")[-1]
    state = torch.load(path, weights_only=True)
    del state["world_size"]  # the version-1 layout: no world size, an 'augment' generator state
    state["rng"]["generators"]["augment"] = torch.Generator().get_state()
    state["format_version"] = 1
    torch.save(state, path)
    migrated = load_checkpoint(path)
    assert migrated["format_version"] == CHECKPOINT_FORMAT and migrated["world_size"] == 1
    assert "augment" not in migrated["rng"]["generators"]
    result = train(small_config(tmp_path / "run", epochs=2, resume=True), data=digits)
    assert len(result.epochs) == 2


def test_keeps_last_k_checkpoints(tmp_path: Path, digits) -> None:
    train(small_config(tmp_path / "run", epochs=3, keep_checkpoints=2, checkpoint_seconds=0.0), data=digits)
    assert len(list_checkpoints(tmp_path / "run")) == 2


def test_epoch_checkpoints_are_time_based_but_the_last_epoch_always_saves(tmp_path: Path, digits) -> None:
    train(
        small_config(tmp_path / "run", epochs=3, keep_checkpoints=10, checkpoint_seconds=3600.0), data=digits
    )
    saved = list_checkpoints(tmp_path / "run")
    assert len(saved) == 1 and load_checkpoint(saved[0])["epoch"] == 3
    assert len((tmp_path / "run" / "epochs.csv").read_text().strip().splitlines()) == 1 + 3


def test_simvae_needs_two_views(tmp_path: Path, digits) -> None:
    with pytest.raises(ValueError, match="num_views >= 2"):
        train(small_config(tmp_path / "run", num_views=1), data=digits)


def test_nonfinite_loss_stops_with_named_site_and_keeps_checkpoint(tmp_path: Path, digits) -> None:
    train(small_config(tmp_path / "run", epochs=1), data=digits)
    trainer = Trainer(small_config(tmp_path / "run", epochs=2, resume=True), data=digits)
    with torch.no_grad():
        for p in trainer.model.decoder.parameters():
            p.fill_(float("nan"))
    saved = {p.name: p.read_bytes() for p in list_checkpoints(tmp_path / "run")}
    trainer._prepare_run_dir = lambda: None  # keep the poisoned parameters (skip reloading)
    with pytest.raises(FloatingPointError, match="model/x"):
        trainer.fit()
    assert {p.name: p.read_bytes() for p in list_checkpoints(tmp_path / "run")} == saved


def test_nonfinite_gradient_is_named_separately_from_the_loss(tmp_path: Path, digits) -> None:
    trainer = Trainer(small_config(tmp_path / "run", epochs=1), data=digits)
    name, weight = next(iter(trainer.model.decoder.named_parameters()))
    weight.register_hook(lambda grad: torch.full_like(grad, float("nan")))
    with pytest.raises(FloatingPointError) as info:
        trainer.fit()
    message = str(info.value)
    assert f"non-finite gradient at step 0 in parameters: decoder.{name}" in message
    assert "the loss itself was finite" in message and "model/x" not in message
    assert "stopped before any checkpoint" in message and not list_checkpoints(tmp_path / "run")


def test_nonfinite_gradient_skip(tmp_path: Path, digits) -> None:
    trainer = Trainer(small_config(tmp_path / "run", epochs=1, nonfinite="skip"), data=digits)
    before = params(trainer.model)
    next(iter(trainer.model.decoder.parameters())).register_hook(lambda g: torch.full_like(g, float("inf")))
    with pytest.raises(FloatingPointError, match="7 of 7 steps of epoch 1 were non-finite and skipped"):
        trainer.fit()  # every step skipped: an untrained model is an error, not a result
    assert trainer.skipped_steps == trainer.steps_per_epoch == 7
    assert_same_params(before, params(trainer.model))  # no step was taken
    assert not list_checkpoints(tmp_path / "run")


def test_nonfinite_skip_counts_steps_and_stops_above_the_share(tmp_path: Path, digits, monkeypatch) -> None:
    trainer = Trainer(small_config(tmp_path / "run", epochs=1, nonfinite="skip"), data=digits)
    original = Trainer.evaluate
    calls = {"n": 0}

    def nan_every_other(self, batch):
        output = original(self, batch)
        calls["n"] += 1
        if calls["n"] % 2 == 0 and self.model.training:  # steps 2, 4, 6 of 7: 3 of 7 skipped
            output.loss = output.loss * float("nan")
        return output

    monkeypatch.setattr(Trainer, "evaluate", nan_every_other)
    result = trainer.fit()  # 3 of 7 is below the stated share: the run goes on
    assert result.skipped_steps == 3

    def nan_mostly(self, batch):
        output = original(self, batch)
        if self.model.training and self.global_step % 7 != 0:  # 6 of 7 skipped
            output.loss = output.loss * float("nan")
        return output

    monkeypatch.setattr(Trainer, "evaluate", nan_mostly)
    with pytest.raises(FloatingPointError, match="6 of 7 steps of epoch 1 were non-finite and skipped"):
        Trainer(small_config(tmp_path / "mostly", epochs=1, nonfinite="skip"), data=digits).fit()
