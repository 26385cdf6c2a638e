"""Bad input gets a clear message and writes nothing; interrupts save and resume exactly.

The table drives ``pssl train`` (``pssl.cli.main``, in this process) with one
bad input per row and checks that it exits with code 2, prints one line
``pssl train: error: ...`` that names the problem (no traceback), and leaves
the run directory as it was (absent for a new run; byte-identical for an
existing one). The data-not-found message alone goes on, after its first line,
to list the paths tried and how to get the data.

Interrupts: SIGINT and SIGTERM during training (in this process) save a
checkpoint and stop; resuming gives the parameters of an uninterrupted run.
Slow variants run real processes: one table row through ``python -m pssl``,
and SIGTERM sent to a running ``python -m pssl train``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pssl.cli import main
from pssl.config import Config, apply_overrides, parse_overrides
from pssl.datasets import DataSplits, TensorData, write_idx
from pssl.inference.checkpoint import CHECKPOINT_FORMAT, list_checkpoints, load_checkpoint
from pssl.inference.train import Trainer, train
from pssl.models.base import MODELS
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
    "epochs=1",
    "lr=1e-3",
    "device=cpu",
    "progress=false",
]


def write_mnist_like(folder: Path, count: int) -> Path:
    """The four MNIST IDX files with ``count`` random 28x28 images each."""
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    for split in ("train", "t10k"):
        write_idx(
            folder / f"{split}-images-idx3-ubyte", torch.randint(0, 256, (count, 28, 28), generator=g).byte()
        )
        write_idx(folder / f"{split}-labels-idx1-ubyte", torch.randint(0, 10, (count,), generator=g).byte())
    return folder


def truncated_data(tmp: Path) -> list[str]:
    folder = write_mnist_like(tmp / "truncated", 20)
    path = folder / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    return ["data=mnist", f"data.root={folder}"]


def corrupt_gzip_data(tmp: Path) -> list[str]:
    folder = write_mnist_like(tmp / "corrupt", 20)
    (folder / "train-images-idx3-ubyte").unlink()
    (folder / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b" + b"not gzip" * 8)
    return ["data=mnist", f"data.root={folder}"]


def empty_data(tmp: Path) -> list[str]:
    return ["data=mnist", f"data.root={write_mnist_like(tmp / 'empty', 0)}"]


def missing_folder(tmp: Path) -> list[str]:
    return ["data=mnist", f"data.root={tmp / 'no-such-folder'}"]


# name, arguments (after TINY; a callable builds files and returns them), what the message must say
NEW_RUN_CASES = [
    ("unknown model", ["model=nosuch"], "unknown model 'nosuch'; accepted: simvae"),
    ("unknown data set", ["data=nosuch"], "unknown data set 'nosuch'; accepted:"),
    ("unknown likelihood", ["likelihood=nosuch"], "unknown likelihood 'nosuch'; accepted:"),
    ("unknown prior", ["prior=nosuch"], "unknown prior 'nosuch'; accepted:"),
    ("unknown encoder", ["encoder=nosuch"], "unknown encoder 'nosuch'; accepted:"),
    ("unknown augmentation", ["augment=nosuch"], "unknown augmentation preset 'nosuch'; accepted:"),
    (
        "unknown model option",
        ["model.nosuch=1"],
        "model 'simvae' has no option 'nosuch'; accepted: y_guide, beta",
    ),
    ("unknown key", ["nosuch=1"], "unknown override key 'nosuch' in 'nosuch=1'; accepted keys:"),
    ("malformed override", ["epochs"], "malformed override 'epochs': expected key=value"),
    (
        "option the data's default lacks",
        ["likelihood.nosuch=1"],
        "likelihood 'bernoulli' has no option 'nosuch'; accepted: scale",
    ),
    ("wrong type (field)", ["epochs=ten"], "epochs: expected an integer, got 'ten'"),
    (
        "wrong type (option)",
        ["likelihood=bernoulli", "likelihood.scale=abc"],
        "likelihood.scale: expected a number",
    ),
    ("bad value", ["lr=-1"], "lr must be a positive finite number, got -1.0"),
    ("zero learning rate", ["lr=0"], "lr must be a positive finite number, got 0"),
    ("bad choice", ["nonfinite=maybe"], "nonfinite must be 'stop' or 'skip', got 'maybe'"),
    ("unknown device", ["device=tpu"], "unknown device 'tpu'; accepted: auto, cpu, cuda, cuda:N"),
    ("missing model", ["model=none"], "model cannot be none"),
    ("J < 2 views", ["num_views=1"], "model 'simvae' needs num_views >= 2"),
    ("data folder missing", missing_folder, "data set 'mnist' not found. Paths tried:"),
    ("data truncated", truncated_data, "IDX size mismatch"),
    ("data corrupt", corrupt_gzip_data, "corrupt gzip IDX file"),
    ("empty data set", empty_data, "data set 'mnist' is empty: 0 training and 0 test items"),
    (
        "resume without a checkpoint",
        ["resume=true"],
        "holds no checkpoint; start the run without resume=true",
    ),
]
if "simclr" in MODELS:
    NEW_RUN_CASES.append(
        (
            "batch smaller than the negatives",
            ["model=simclr", "batch_size=1"],
            "needs at least 2 items per batch",
        )
    )
MULTILINE = {"data folder missing"}  # the message goes on to list the paths tried and how to get the data


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def check_one_line_error(code: int, err: str, expected: str, *, multiline: bool = False) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines and lines[0].startswith("pssl train: error: "), err
    assert expected in lines[0], f"expected {expected!r} in {lines[0]!r}"
    if not multiline:
        assert len(lines) == 1, err


@pytest.mark.parametrize(("name", "args", "expected"), NEW_RUN_CASES, ids=[c[0] for c in NEW_RUN_CASES])
def test_bad_input_new_run(tmp_path: Path, capsys, monkeypatch, name, args, expected) -> None:
    monkeypatch.delenv("PSSL_DATA", raising=False)
    out = tmp_path / "run"
    extra = args(tmp_path) if callable(args) else args
    code, err = run_cli(["train", *TINY, *extra, f"out={out}"], capsys)
    check_one_line_error(code, err, expected, multiline=name in MULTILINE)
    assert not list_checkpoints(out), "a checkpoint was written"
    assert not out.exists() or name == "batch smaller than the negatives", "the run directory was created"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished one-epoch SimVAE run made with TINY."""
    out = tmp_path_factory.mktemp("finished") / "run"
    train(apply_overrides(Config(), parse_overrides([*TINY, f"out={out}"])))
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file's bytes, except the lock file (pssl's record of the last process that used the folder)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != LOCK_NAME}


def newer_format(run: Path) -> None:
    for path in list_checkpoints(run):
        state = torch.load(path, weights_only=True)
        state["format_version"] = CHECKPOINT_FORMAT + 1
        torch.save(state, path)


def corrupt_checkpoints(run: Path) -> None:
    for path in list_checkpoints(run):
        path.write_bytes(path.read_bytes()[:100])


EXISTING_RUN_CASES = [
    ("checkpoint from a different model", ["model=vae", "resume=true"], None, "differs in: model"),
    ("checkpoint from a different config", ["latent_dim=3", "resume=true"], None, "differs in: latent_dim"),
    ("existing run without resume", [], None, "already holds checkpoints; pass resume=true"),
    ("corrupt checkpoint", ["resume=true"], corrupt_checkpoints, "no readable checkpoint"),
    ("checkpoint from a newer pssl", ["resume=true"], newer_format, "written by a newer pssl"),
]


@pytest.mark.parametrize(
    ("name", "args", "damage", "expected"), EXISTING_RUN_CASES, ids=[c[0] for c in EXISTING_RUN_CASES]
)
def test_bad_input_existing_run(
    tmp_path: Path, capsys, finished_run: Path, name, args, damage, expected
) -> None:
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    if damage is not None:
        damage(out)
    before = snapshot(out)
    code, err = run_cli(["train", *TINY, *args, f"out={out}"], capsys)
    check_one_line_error(code, err, expected)
    assert snapshot(out) == before, "the run directory changed"


def test_resume_command_on_a_folder_that_is_not_a_run(tmp_path: Path, capsys) -> None:
    code = main(["resume", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert "config.json not found" in err and "is not a pssl run directory" in err


def test_data_outside_the_likelihood_support(tmp_path: Path) -> None:
    """Python API: float images off the 8-bit grid for the discretized-logistic likelihood."""
    g = torch.Generator().manual_seed(0)
    images = torch.rand(32, 1, 8, 8, generator=g)
    split = TensorData(images, torch.zeros(32, dtype=torch.int64), num_classes=1)
    data = DataSplits(train=split, val=split, test=split, name="digits")
    config = apply_overrides(
        Config(), parse_overrides([*TINY, "likelihood=discretized-logistic", f"out={tmp_path}"])
    )
    with pytest.raises(ValueError, match="is not 8-bit data.*discretized-logistic likelihood needs"):
        Trainer(config, data=data)
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_cli_subprocess_exit_code_and_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pssl", "train", *TINY, "model=nosuch", f"out={tmp_path / 'run'}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr
    assert done.stderr.startswith("pssl train: error: unknown model 'nosuch'")
    assert not (tmp_path / "run").exists()


# --- interrupts ----------------------------------------------------------------------------------


@pytest.mark.slow  # a real process: about 5-10 s of interpreter and library start-up
def test_sigterm_saves_a_checkpoint_and_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    epochs, steps_per_epoch = 4, 3  # 57 training items, batch 16
    args = [*TINY, f"epochs={epochs}", "checkpoint_every=1", "keep_checkpoints=100", f"out={run}"]
    process = subprocess.Popen(
        [sys.executable, "-m", "pssl", "train", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while not list_checkpoints(run) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)  # the loop stops after its current step
    _, err = process.communicate(timeout=240)
    assert process.returncode == 130, err
    assert "interrupted: stopped by signal 15" in err and "continue with `pssl resume" in err
    assert "Traceback" not in err
    stopped = load_checkpoint(list_checkpoints(run)[-1])["global_step"]
    assert 1 <= stopped < epochs * steps_per_epoch

    config = apply_overrides(Config(), parse_overrides(args))
    torch.manual_seed(2024)  # the resumed run must take its randomness from the checkpoint
    resumed = train(dataclasses.replace(config, resume=True, checkpoint_every=0))
    straight = train(dataclasses.replace(config, out=str(tmp_path / "straight"), checkpoint_every=0))
    assert resumed.epochs[-1]["step"] == straight.epochs[-1]["step"] == epochs * steps_per_epoch
    a, b = resumed.model.state_dict(), straight.model.state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_in_process_saves_and_resumes_exactly(tmp_path: Path, signum: int) -> None:
    config = apply_overrides(Config(), parse_overrides([*TINY, "epochs=3", f"out={tmp_path / 'run'}"]))

    def interrupt(trainer, batch, output) -> None:
        if trainer.global_step == 4:  # mid-epoch (3 steps per epoch)
            os.kill(os.getpid(), signum)

    trainer = Trainer(config, on_step_end=interrupt)
    with pytest.raises(KeyboardInterrupt, match=f"stopped by signal {int(signum)} at step 4"):
        trainer.fit()
    assert load_checkpoint(list_checkpoints(tmp_path / "run")[-1])["global_step"] == 4
    torch.manual_seed(99)
    resumed = train(dataclasses.replace(config, resume=True))
    straight = train(dataclasses.replace(config, out=str(tmp_path / "straight")))
    for key, value in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key


# --- loading a run: evaluate, diagnose, resume -------------------------------------------------
#
# A run directory received from elsewhere is data: every malformed file gives one line naming
# the file and the field, exit code 2, and nothing in the folder changes.


@pytest.fixture(scope="module")
def checkpointed_run(tmp_path_factory) -> Path:
    """A finished one-epoch run with a checkpoint after each of its 3 steps."""
    out = tmp_path_factory.mktemp("checkpointed") / "run"
    train(
        apply_overrides(
            Config(), parse_overrides([*TINY, "checkpoint_every=1", "keep_checkpoints=10", f"out={out}"])
        )
    )
    return out


def edit_config(change):
    def damage(run: Path) -> None:
        path = run / "config.json"
        raw = json.loads(path.read_text())
        path.write_text(json.dumps(change(raw)))

    return damage


def write_config(text: str):
    def damage(run: Path) -> None:
        (run / "config.json").write_text(text)

    return damage


def edit_newest_checkpoint(change):
    def damage(run: Path) -> None:
        path = list_checkpoints(run)[-1]
        state = torch.load(path, weights_only=True)
        change(state)
        torch.save(state, path)

    return damage


def truncate_newest_checkpoint(run: Path) -> None:
    path = list_checkpoints(run)[-1]
    path.write_bytes(path.read_bytes()[:200])


def drop(key):
    return lambda state: state.pop(key)


def resize_first_weight(state) -> None:
    key = next(k for k, v in state["model"].items() if v.dim() == 2)
    state["model"][key] = torch.zeros(3, 3)


def set_field(key, value):
    return lambda state: state.__setitem__(key, value)


def other_latent_dim(raw):
    return {**raw, "latent_dim": 3}


# name, command and options ({run} is the run directory), damage, what the one line must say
LOADING_CASES = [
    ("config.json a JSON string", ["evaluate", "{run}"], write_config('"x"'), "got a JSON string"),
    ("config.json a JSON list", ["evaluate", "{run}"], write_config("[1]"), "got a JSON array"),
    ("config.json not JSON", ["evaluate", "{run}"], write_config("{"), "config.json is not valid JSON"),
    (
        "config.json resolved not an object",
        ["evaluate", "{run}"],
        edit_config(lambda raw: {**raw, "resolved": "x"}),
        "field 'resolved' must be a JSON object",
    ),
    (
        "config.json bad field value",
        ["evaluate", "{run}"],
        edit_config(lambda raw: {**raw, "epochs": "ten"}),
        "config.json: epochs: expected an integer",
    ),
    (
        "config.json unknown field",
        ["evaluate", "{run}"],
        edit_config(lambda raw: {**raw, "nosuch": 1}),
        "config.json: unknown override key 'nosuch'",
    ),
    (
        "config.json and checkpoint of different runs",
        ["evaluate", "{run}"],
        edit_config(other_latent_dim),
        "differs in: latent_dim",
    ),
    (
        "checkpoint missing a key",
        ["evaluate", "{run}"],
        edit_newest_checkpoint(drop("optimizer")),
        "field 'optimizer' is missing",
    ),
    (
        "checkpoint field of the wrong type",
        ["evaluate", "{run}"],
        edit_newest_checkpoint(set_field("global_step", "3")),
        "field 'global_step' should be int, got str",
    ),
    (
        "checkpoint with wrong tensor shapes",
        ["evaluate", "{run}"],
        edit_newest_checkpoint(resize_first_weight),
        "has shape (3, 3) in the checkpoint but",
    ),
    (
        "newest checkpoint unreadable (no silent fall-back)",
        ["evaluate", "{run}"],
        truncate_newest_checkpoint,
        "the newest checkpoint cannot be used: checkpoint",
    ),
    (
        "diagnose: newest checkpoint unreadable",
        ["diagnose", "{run}"],
        truncate_newest_checkpoint,
        "choose another with --checkpoint",
    ),
    (
        "--checkpoint not there",
        ["evaluate", "{run}", "--checkpoint", "nosuch.pt"],
        None,
        "checkpoint nosuch.pt not found",
    ),
    ("--device cuda without CUDA", ["evaluate", "{run}", "--device", "cuda"], None, "CUDA is not available"),
    (
        "diagnose --device cuda without CUDA",
        ["diagnose", "{run}", "--device", "cuda"],
        None,
        "CUDA is not available",
    ),
    ("--probes empty", ["evaluate", "{run}", "--probes", ""], None, "no probes chosen; accepted: linear"),
    ("--probes unknown", ["evaluate", "{run}", "--probes", "linear,nosuch"], None, "unknown probe 'nosuch'"),
    (
        "diagnose --max-items 1",
        ["diagnose", "{run}", "--max-items", "1"],
        None,
        "max_items must be an integer >= 2",
    ),
    (
        "resume with a malformed config.json",
        ["resume", "{run}"],
        edit_config(lambda raw: {**raw, "lr": -1}),
        "config.json: lr must be a positive finite number",
    ),
    ("resume with config.json a list", ["resume", "{run}"], write_config("[]"), "got a JSON array"),
]
if torch.cuda.is_available():  # the CUDA rows are about a machine without CUDA
    LOADING_CASES = [c for c in LOADING_CASES if "cuda" not in c[0]]


@pytest.mark.parametrize(
    ("name", "argv", "damage", "expected"), LOADING_CASES, ids=[c[0] for c in LOADING_CASES]
)
def test_bad_input_loading_a_run(
    tmp_path: Path, capsys, checkpointed_run: Path, name, argv, damage, expected
) -> None:
    run = tmp_path / "run"
    shutil.copytree(checkpointed_run, run)
    if damage is not None:
        damage(run)
    before = snapshot(run)
    code = main([a.format(run=run) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"pssl {argv[0]}: error: ") and expected in lines[0], lines[0]
    assert snapshot(run) == before, "the run directory changed"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["evaluate", "{folder}"], "config.json not found"),
        (["diagnose", "{folder}"], "config.json not found"),
        (["resume", "{folder}"], "config.json not found"),
        (["evaluate", "{file}"], "is a file, not a pssl run directory"),
    ],
)
def test_loading_commands_refuse_folders_that_are_not_runs(tmp_path: Path, capsys, argv, expected) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    file = tmp_path / "file"
    file.write_text("mine")
    code = main([a.format(folder=folder, file=file) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and expected in err, err
    assert [p.name for p in folder.iterdir()] == ["notes.txt"] and file.read_text() == "mine"


def test_traceback_option_shows_what_the_one_line_hides(capsys, tmp_path: Path) -> None:
    assert main(["train", "--traceback", *TINY, "model=nosuch", f"out={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert err.strip().splitlines()[-1].startswith("pssl train: error: unknown model 'nosuch'")


def test_traceback_environment_variable(capsys, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PSSL_TRACEBACK", "1")
    assert main(["train", *TINY, "model=nosuch", f"out={tmp_path / 'run'}"]) == 2
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_out_of_memory_at_start_up_is_one_line(capsys, tmp_path: Path, monkeypatch) -> None:
    import pssl.experiment

    def no_memory(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(pssl.experiment, "train", no_memory)
    assert main(["train", *TINY, f"out={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "pssl train: error: out of memory; try a smaller batch_size, model or data.limit"
    assert not (tmp_path / "run").exists()


def test_a_received_run_cannot_make_loading_download_or_write_caches() -> None:
    from pssl.inference.runs import run_data_options

    recorded = Config.from_dict(
        {"data": {"name": "mnist", "options": {"root": "/elsewhere", "download": "true"}}}
    )
    assert run_data_options(recorded)["download"] is False
    assert run_data_options(recorded, allow_download=True)["download"] == "true"
    assert run_data_options(recorded, root="/mine")["root"] == "/mine"
