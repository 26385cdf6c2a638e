"""Try bad inputs and injected faults as a new user would, and count how many are handled cleanly.

Bad inputs: every numeric option of every registered component and every numeric
field given NaN and infinity, out-of-range values, unknown names, unpaired data for
paired methods, empty ``out=``, ``epochs=0``, config files that are not config
files, bad ``compare`` plans, loading commands on folders that are not runs.
A bad input is handled cleanly when the command exits 2 with one line
``pssl COMMAND: error: ...`` (no traceback) that names what the user typed
(the option key, or the path), and nothing was written.

Faults: a run directory's lock replaced by a symbolic link, a hard link or a FIFO
(evaluate, resume, diagnose), a FIFO or random bytes named like a checkpoint, a
damaged newest checkpoint at resume, a stray lock in a user's folder, a run and a
compare folder used as each other, an interrupt outside the training loop, a
SIGTERM at shutdown. A fault is survived when the command stops with a one-line
message (exit 2 or 130, or 0 where continuing is right), nothing outside the run
directory changed and no run file was lost.

    nice -n 10 python benchmarks/bad_inputs.py            # prints one row per case and the counts

Cases with FIFOs or signals run in a subprocess with a timeout (a hang counts as not handled).
"""

from __future__ import annotations

import contextlib
import inspect
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import typing
from pathlib import Path

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


def in_process(argv: list[str], cwd: Path) -> tuple[int, str]:
    from pssl.cli import main

    err = io.StringIO()
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
    except BaseException as caught:  # a crash out of main is itself a finding
        code, err = 99, io.StringIO(f"Traceback: {type(caught).__name__}: {caught}")
    finally:
        os.chdir(previous)
    return code, err.getvalue()


def in_subprocess(argv: list[str], cwd: Path, timeout: float = 120) -> tuple[int, str]:
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pssl", *argv], cwd=cwd, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return 124, "timed out (hung)"
    return done.returncode, done.stderr


def clean_refusal(command: str, code: int, err: str, names: str | None) -> tuple[bool, str]:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    error_lines = [line for line in lines if line.startswith(f"pssl {command}: error:")]
    if code != 2:
        return False, f"exit {code}"
    if "Traceback" in err:
        return False, "traceback"
    if len(error_lines) != 1:
        return False, f"{len(error_lines)} error lines"
    if names is not None and names not in error_lines[0]:
        return False, f"does not name {names!r}"
    return True, ""


# --- bad inputs --------------------------------------------------------------------------------


def numeric_option_cases() -> list[tuple[list[str], str]]:
    from pssl.augment import AUGMENTATIONS
    from pssl.config import _HINTS, PLAIN_KEYS
    from pssl.datasets import DATASETS
    from pssl.inference.objectives import OBJECTIVES
    from pssl.models import LIKELIHOODS, MODELS, PRIORS, VIEW_PRIORS
    from pssl.networks import DECODERS, ENCODERS

    def numeric(annotation) -> bool:
        return annotation is float or any(
            numeric(a) for a in typing.get_args(annotation) if a is not Ellipsis
        )

    cases = []
    for registry in (
        MODELS,
        DATASETS,
        PRIORS,
        VIEW_PRIORS,
        LIKELIHOODS,
        ENCODERS,
        DECODERS,
        AUGMENTATIONS,
        OBJECTIVES,
    ):
        for entry in registry.entries():
            hints = entry.type_hints()
            for option, parameter in entry.parameters().items():
                if parameter.default is inspect.Parameter.empty or not numeric(hints.get(option)):
                    continue
                for bad in ("nan", "inf"):
                    value = bad
                    if isinstance(parameter.default, tuple):
                        value = ",".join([bad, *map(str, parameter.default[1:])])
                    key = f"{registry.key}.{option}"
                    choose = (
                        []
                        if registry.key == "model" and entry.name == "simvae"
                        else [f"{registry.key}={entry.name}"]
                    )
                    if registry.key == "data":
                        choose = [f"data={entry.name}"]
                    cases.append(([*choose, f"{key}={value}"], key))
    for key in PLAIN_KEYS:
        if numeric(_HINTS[key]):
            for bad in ("nan", "inf", "-inf"):
                cases.append(([f"{key}={bad}"], key))
    return cases


def other_cases(tmp: Path, run: Path) -> list[tuple[str, list[str], str | None]]:
    """(command, argv after the command, what the message must name)."""
    deep = tmp / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    loop = tmp / "loop.json"
    loop.symlink_to(loop)
    array = tmp / "array.json"
    array.write_text("[1, 2]")
    unknown = tmp / "unknown.json"
    unknown.write_text('{"colour": "red"}')
    binary = tmp / "binary.json"
    binary.write_bytes(os.urandom(512))
    afile = tmp / "afile"
    afile.write_text("x")
    train = [
        (["epochs=0"], "epochs"),
        (["epochs=-1"], "epochs"),
        (["batch_size=0"], "batch_size"),
        (["latent_dim=0"], "latent_dim"),
        (["num_views=0"], "num_views"),
        (["seed=-1"], "seed"),
        ([f"seed={2**64}"], "seed"),
        (["keep_checkpoints=0"], "keep_checkpoints"),
        (["log_every=0"], "log_every"),
        (["lr=0"], "lr"),
        (["lr=abc"], "lr"),
        (["weight_decay=-1"], "weight_decay"),
        (["nonfinite=ignore"], "nonfinite"),
        (["precision=fp8"], "precision"),
        (["logger=wandb"], "logger"),
        (["out="], "out="),
        (["out=none"], "out="),
        (["out=None"], "out="),
        ([f"out={afile}"], str(afile)),
        ([f"out={afile}/run"], str(afile)),
        (["model=nosuch"], "nosuch"),
        (["data=nosuch"], "nosuch"),
        (["prior=nosuch"], "nosuch"),
        (["likelihood=nosuch"], "nosuch"),
        (["encoder=nosuch"], "nosuch"),
        (["augment=nosuch"], "nosuch"),
        (["objective=nosuch"], "nosuch"),
        (["model=clip"], "model=clip"),
        (["model=simvae-multimodal"], "model=simvae-multimodal"),
        (["model=clip", "data=paired-digits", "augment=digits"], "augment=digits"),
        (["model=simvae-multimodal", "data=paired-digits", "augment=mnist"], "augment=mnist"),
        (["model=simclr", "model.proj_dim=0"], "model.proj_dim=0"),
        (["model=simclr", "model.temperature=0"], "model.temperature"),
        (["model=vicreg", "model.proj_layers=0"], "model.proj_layers"),
        (["model=moco", "model.momentum=2"], "model.momentum"),
        (["augment.crop_scale_min=2"], "augment.crop_scale_min=2"),
        (["augment.crop_scale_min=0"], "augment.crop_scale_min"),
        (["augment.crop_ratio=2,1"], "augment.crop_ratio"),
        (["augment.vertical_flip=1.5"], "augment.vertical_flip"),
        (["likelihood=bernoulli", "likelihood.scale=0"], "likelihood.scale"),
        (["prior=gaussian", "prior.scale=-1"], "prior.scale"),
        (["view_prior=gaussian", "view_prior.scale=0"], "view_prior.scale"),
        (["prior=studentt", "prior.df=0"], "prior.df"),
        (["data.limit=0"], "data.limit"),
        (["data.val_fraction=1.5"], "data.val_fraction"),
        (["encoder.hidden=0"], "encoder.hidden"),
        (["model.nosuch=1"], "nosuch"),
        (["objective=iwae", "objective.num_particles=0"], "objective.num_particles"),
        (["config=/nonexistent.json"], "/nonexistent.json"),
        ([f"config={tmp}"], str(tmp)),
        (["config=/dev/zero"], "/dev/zero"),
        ([f"config={deep}"], str(deep)),
        ([f"config={loop}"], str(loop)),
        ([f"config={array}"], str(array)),
        ([f"config={unknown}"], "colour"),
        ([f"config={binary}"], str(binary)),
        (["recipe=nosuch"], "nosuch"),
        (["recipe="], "recipe="),
        (["recipe=paper-mnist", f"config={array}"], "recipe="),
        (["colour=red"], "colour"),
        (["epochs"], "epochs"),
    ]
    cases: list[tuple[str, list[str], str | None]] = [
        (
            "train",
            [*TINY, *args, f"out={tmp / 'never'}"]
            if not any(a.startswith("out=") for a in args)
            else [*TINY, *args],
            names,
        )
        for args, names in train
    ]
    for args, names in numeric_option_cases():
        cases.append(("train", [*TINY, *args, f"out={tmp / 'never'}"], names))
    compare = [
        (["probes="], "probes="),
        (["probes=nosuch"], "nosuch"),
        (["models="], "models="),
        (["models=vae,vae"], "models"),
        (["seeds=x"], "seeds"),
        (["seeds=0,0"], "seeds"),
        (["models=nosuch"], "nosuch"),
        ([f"out={run}"], str(run)),
    ]
    for args, names in compare:
        base = ["models=vae", "seeds=0", "probes=linear", f"out={tmp / 'cmp-never'}"]
        keys = {a.split("=", 1)[0] for a in args}
        base = [b for b in base if b.split("=", 1)[0] not in keys]
        cases.append(("compare", [*base, *args, *TINY], names))
    cases += [
        ("evaluate", [str(tmp / "nosuch")], str(tmp / "nosuch")),
        ("evaluate", [str(afile)], str(afile)),
        ("evaluate", [str(tmp)], str(tmp)),
        ("evaluate", [str(run), "--checkpoint", str(tmp / "nosuch.pt")], "nosuch.pt"),
        ("evaluate", [str(run), "--checkpoint", str(binary)], str(binary)),
        ("evaluate", [str(run), "--probes", "nosuch"], "nosuch"),
        ("resume", [str(tmp / "nosuch")], str(tmp / "nosuch")),
        ("resume", [str(run), "model=vae"], "model"),
        ("diagnose", [str(tmp / "nosuch")], str(tmp / "nosuch")),
    ]
    return cases


# --- faults ------------------------------------------------------------------------------------


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}


def copy_run(source: Path, target: Path) -> Path:
    target.mkdir(parents=True)
    for entry in source.iterdir():
        if entry.is_file() and not entry.name.startswith("."):
            shutil.copy(entry, target / entry.name)
    return target


def fault_cases(tmp: Path, run: Path) -> list[tuple[str, bool, str]]:
    """(name, survived, detail) for each injected fault."""
    results = []
    loaders = {
        "evaluate": lambda r: ["evaluate", str(r), "--probes", "linear", "--device", "cpu"],
        "resume": lambda r: ["resume", str(r), "epochs=2"],
        "diagnose": lambda r: ["diagnose", str(r), "--device", "cpu"],
    }
    for kind in ("symlink", "hardlink", "fifo", "folder"):
        for command, argv in loaders.items():
            copy = copy_run(run, tmp / f"lock-{kind}-{command}")
            target = tmp / f"target-{kind}-{command}.txt"
            target.write_text("user data\n")
            lock = copy / ".pssl.lock"
            if kind == "symlink":
                lock.symlink_to(target)
            elif kind == "hardlink":
                os.link(target, lock)
            elif kind == "fifo":
                os.mkfifo(lock)
            else:
                lock.mkdir()
            before = files(copy)
            code, err = in_subprocess(argv(copy), tmp, timeout=180)
            ok, why = clean_refusal(command, code, err, str(lock))
            intact = target.read_text() == "user data\n" and files(copy) == before
            results.append(
                (f"lock is a {kind}: {command}", ok and intact, why or ("" if intact else "files changed"))
            )
    # a FIFO and random bytes named like the newest checkpoint
    for kind in ("fifo", "random", "empty", "truncated"):
        copy = copy_run(run, tmp / f"ckpt-{kind}")
        bad = copy / "checkpoint-999999999.pt"
        if kind == "fifo":
            os.mkfifo(bad)
        elif kind == "random":
            bad.write_bytes(os.urandom(4096))
        elif kind == "empty":
            bad.write_bytes(b"")
        else:
            newest = sorted(copy.glob("checkpoint-*.pt"))[-2]
            bad.write_bytes(newest.read_bytes()[:1000])
        before = files(copy)
        code, err = in_subprocess(loaders["evaluate"](copy), tmp, timeout=180)
        ok, why = clean_refusal("evaluate", code, err, str(bad))
        ok = ok and "weights_only" not in err
        results.append((f"checkpoint is {kind}: evaluate", ok and files(copy) == before, why))
    # resume falls back from a damaged newest checkpoint and says so
    copy = copy_run(run, tmp / "resume-damaged")
    checkpoints = sorted(copy.glob("checkpoint-*.pt"))
    checkpoints[-1].write_bytes(b"damaged")
    code, err = in_subprocess(["resume", str(copy), "epochs=2"], tmp, timeout=300)
    said = f"resuming from {checkpoints[-2].name}, not the newest checkpoint {checkpoints[-1].name}" in err
    results.append(
        (
            "damaged newest checkpoint: resume says which and why",
            code == 0 and said,
            err[-300:] if not said else "",
        )
    )
    # a stray lock in a user's folder
    mine = tmp / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep\n")
    (mine / ".pssl.lock").write_text("")
    code, err = in_subprocess(["train", *TINY, f"out={mine}"], tmp)
    ok, why = clean_refusal("train", code, err, str(mine))
    results.append(
        (
            "stray lock in a user's folder: train",
            ok and sorted(p.name for p in mine.iterdir()) == [".pssl.lock", "notes.txt"],
            why,
        )
    )
    # runs and compare folders used as each other
    copy = copy_run(run, tmp / "as-compare")
    before = files(copy)
    code, err = in_subprocess(
        ["compare", "models=vae", "seeds=0", "probes=linear", f"out={copy}", *TINY], tmp
    )
    ok, why = clean_refusal("compare", code, err, str(copy))
    results.append(("compare into a training run", ok and files(copy) == before, why))
    folder = tmp / "cmp"
    copy_run(run, folder / "vae-seed0")
    (folder / "results.csv").write_text("model,seed\n")
    code, err = in_subprocess(["train", *TINY, f"out={folder}"], tmp)
    ok, why = clean_refusal("train", code, err, str(folder))
    results.append(("train into a compare folder", ok and not (folder / "config.json").exists(), why))
    # SIGTERM at shutdown
    script = (
        "import atexit, os, signal, sys, time\nsys.argv = ['pssl', 'list', 'recipes']\n"
        "from pssl.cli import main\n"
        "atexit.register(lambda: (os.kill(os.getpid(), signal.SIGTERM), time.sleep(5)))\nsys.exit(main())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    results.append(("SIGTERM during shutdown exits 130", done.returncode == 130, f"exit {done.returncode}"))
    # SIGINT while the data loads (outside the training loop)
    script = (
        "import os, signal, sys\nimport pssl.inference.compose as compose\nfrom pssl.cli import main\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "original = compose.load_dataset\n"
        "def interrupted(*a, **k):\n    os.kill(os.getpid(), signal.SIGINT)\n    return original(*a, **k)\n"
        "compose.load_dataset = interrupted\nsys.exit(main(sys.argv[1:]))\n"
    )
    out = tmp / "sigint-run"
    done = subprocess.run(
        [sys.executable, "-c", script, "train", *TINY, f"out={out}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    line = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
    meaningful = line.startswith("pssl train: interrupted: ") and not line.endswith("interrupted:")
    results.append(
        ("SIGINT outside the loop: one meaningful line, 130", done.returncode == 130 and meaningful, line)
    )
    return results


def main() -> int:
    from pssl.cli import main as cli_main

    tmp = Path(tempfile.mkdtemp(prefix="pssl-bad-inputs-"))
    try:
        run = tmp / "finished"
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            assert cli_main(["train", *TINY, "checkpoint_every=1", "keep_checkpoints=10", f"out={run}"]) == 0
        handled = 0
        cases = other_cases(tmp, run)
        for command, argv, names in cases:
            code, err = in_process([command, *argv], tmp)
            ok, why = clean_refusal(command, code, err, names)
            handled += ok
            if not ok:
                shown = " ".join(a for a in argv if a not in TINY)
                print(f"NOT CLEAN  pssl {command} {shown}: {why}: {err.strip()[-300:]}")
        leaked = sorted(p.name for p in tmp.iterdir() if p.name in ("never", "cmp-never", "runs"))
        print(f"bad inputs: {handled} of {len(cases)} refused cleanly (one line naming the option or path)")
        print(f"folders written by refused runs: {leaked or 'none'}")
        faults = fault_cases(tmp, run)
        survived = 0
        for name, ok, detail in faults:
            survived += ok
            note = f": {detail}" if detail and not ok else ""
            print(f"{'survived' if ok else 'NOT SURVIVED':<13s} {name}{note}")
        print(
            f"faults: {survived} of {len(faults)} survived (clean stop, nothing outside changed, none lost)"
        )
        return 0 if handled == len(cases) and survived == len(faults) and not leaked else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
