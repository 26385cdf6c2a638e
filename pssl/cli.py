"""The ``pssl`` command line: ``pssl <command> key=value ...``.

Nothing imports this module; it sits on top of training, evaluation and
diagnostics. Every run option is a ``key=value`` override of
:class:`pssl.config.Config` (``section.option=value`` for component options).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import textwrap
import traceback
from pathlib import Path
from typing import Any

# Idle OpenMP threads sleep instead of spinning. Must be set before torch loads its
# OpenMP runtime; measured here on 2 busy cores: a SimVAE MLP step 67 ms -> 25 ms.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pssl.config import Config, ConfigError, accepted_keys, apply_overrides, parse_overrides

logger = logging.getLogger("pssl")

TRACEBACK_ENV = "PSSL_TRACEBACK"
"""Set to 1 to see the full traceback behind a one-line error (as ``--traceback`` does)."""


def _registries() -> list[tuple[str, object]]:
    from pssl.augment import AUGMENTATIONS
    from pssl.datasets import DATASETS
    from pssl.evaluation import PROBES
    from pssl.inference.objectives import OBJECTIVES
    from pssl.models import LIKELIHOODS, MODELS, PRIORS, VIEW_PRIORS
    from pssl.networks import DECODERS, ENCODERS

    return [
        ("models (model=NAME, model.OPTION=VALUE)", MODELS),
        ("data sets (data=NAME, data.OPTION=VALUE)", DATASETS),
        ("priors p(y) / VAE p(z) (prior=NAME)", PRIORS),
        ("view priors p(z|y) (view_prior=NAME)", VIEW_PRIORS),
        ("likelihoods p(x|z) (likelihood=NAME)", LIKELIHOODS),
        ("encoders (encoder=NAME)", ENCODERS),
        ("decoders (decoder=NAME)", DECODERS),
        ("augmentation presets (augment=NAME)", AUGMENTATIONS),
        ("objectives: Pyro ELBOs (objective=NAME, objective.OPTION=VALUE)", OBJECTIVES),
        ("probes (pssl evaluate --probes NAME,...; pssl compare probes=NAME,...)", PROBES),
    ]


def catalogue() -> str:
    """Every registered name with its options and one line of help."""
    blocks = []
    for title, registry in _registries():
        blocks.append(f"{title}:\n{registry.describe()}")
    return "\n\n".join(blocks)


def _fields_help() -> str:
    doc = Config.__doc__ or ""
    lines = doc.split("Attributes:", 1)[-1]
    return textwrap.dedent(lines).strip()


COMMANDS = {
    "train": "train a method and evaluate it (recipe=NAME or config=PATH, then key=value overrides)",
    "resume": "continue an interrupted run: pssl resume RUN_DIR [epochs=N]",
    "evaluate": "evaluate a finished run: pssl evaluate RUN_DIR (writes RUN_DIR/metrics.json)",
    "demo": "a small comparison on embedded data (digits, styled-digits): SimVAE, VAE, SimCLR, VicREG",
    "compare": "train and evaluate models over seeds: pssl compare models=simvae,vae seeds=0,1,2 out=DIR",
    "claims": "the paper's claims with computed verdicts: pssl claims budget=smoke|cpu|paper out=DIR",
    "diagnose": "posterior diagnostics of a run: pssl diagnose RUN_DIR (IWAE, PSIS k-hat, collapse, PPC)",
    "list": "list every registered name (pssl list recipes: the shipped recipes)",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pssl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Probabilistic self-supervised learning: SimVAE, VAE and discriminative SSL "
        "as Pyro inference.",
        epilog=catalogue()
        + "\n\nexamples:\n  pssl train model=simvae data=fashionmnist epochs=10 seed=0 out=runs/fm-simvae"
        + "\n  pssl train recipe=paper-fashionmnist epochs=10    (pssl list recipes shows them)",
    )
    parser.add_argument(
        "--traceback",
        action="store_true",
        help=f"show the full traceback behind an error (or set {TRACEBACK_ENV}=1)",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--traceback",
        action="store_true",
        default=argparse.SUPPRESS,
        help=f"show the full traceback behind an error (or set {TRACEBACK_ENV}=1)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    train = sub.add_parser(
        "train",
        parents=[common],
        help=COMMANDS["train"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a method, then evaluate it. Writes RUN_DIR/{config.json, history.csv, epochs.csv, "
        "checkpoint-*.pt, metrics.json, reconstructions.png, loss_curves.png}.\n\n"
        "recipe=NAME starts from a shipped recipe (pssl list recipes), config=PATH from a JSON config "
        "file such as a previous run's config.json (its out and resume are not reused); the other "
        "key=value overrides apply on top.",
        epilog="overrides (key=value):\n"
        + textwrap.indent(_fields_help(), "  ")
        + "\n\n"
        + catalogue()
        + "\n\nkeys: "
        + accepted_keys(),
    )
    train.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    resume = sub.add_parser("resume", parents=[common], help=COMMANDS["resume"])
    resume.add_argument("run_dir")
    resume.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    evaluate = sub.add_parser("evaluate", parents=[common], help=COMMANDS["evaluate"])
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--device", default="cpu")
    evaluate.add_argument(
        "--probes",
        default=None,
        help="comma-separated registered content probes (default linear,mlp,knn,cluster; see `pssl list`)",
    )
    _loading_options(evaluate)
    demo = sub.add_parser("demo", parents=[common], help=COMMANDS["demo"])
    demo.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    compare = sub.add_parser(
        "compare",
        parents=[common],
        help=COMMANDS["compare"],
        description="Train and evaluate every (model, seed); finished pairs are reused, interrupted ones "
        "resumed. Writes OUT/results.csv, OUT/results.md (mean and 95%% interval across seeds) "
        "and OUT/report.md.",
    )
    compare.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="models=a,b seeds=0,1 probes=linear,... out=DIR, plus train overrides",
    )
    claims = sub.add_parser(
        "claims",
        parents=[common],
        help=COMMANDS["claims"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run the experiment grid of the paper's claims C1-C6 at a budget (smoke: digits, under a "
        "minute; cpu: MNIST, FashionMNIST, styled-MNIST subsets, about an hour on 2 cores; paper: the "
        "recipes' networks, 400 epochs, CIFAR-10 for C6, a GPU run). Every method gets the same grid "
        "(learning rate x its main knob), selected on validation content accuracy at one seed, then run "
        "at every seed and read on test once. Writes OUT/claims.{md,csv,json} and figures; finished runs "
        "are reused and interrupted ones resumed, so a stopped or split grid continues.",
    )
    claims.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="budget=smoke|cpu|paper out=DIR [seeds=0,1,2] [data=NAME,...: train only these now] "
        "[dry_run=true: check and list the runs, train nothing]",
    )
    diagnose = sub.add_parser("diagnose", parents=[common], help=COMMANDS["diagnose"])
    diagnose.add_argument("run_dir")
    diagnose.add_argument("--num-samples", type=int, default=100, help="importance samples K per item")
    diagnose.add_argument("--max-items", type=int, default=256, help="test items to diagnose")
    diagnose.add_argument("--device", default="cpu")
    diagnose.add_argument(
        "--views-seed",
        type=int,
        default=0,
        help="seed of the augmented views scored (default 0 for every run: runs compare on the same views)",
    )
    diagnose.add_argument(
        "--estimator",
        choices=("is", "ais"),
        default="is",
        help="is: importance sampling; ais: also annealed importance sampling with HMC, reported next to it",
    )
    diagnose.add_argument(
        "--proposal",
        choices=("hierarchical", "guide"),
        default="hierarchical",
        help="importance proposal: hierarchical (model priors x encoder messages) or the training guide",
    )
    diagnose.add_argument(
        "--tempering",
        choices=("auto", "untempered"),
        default="auto",
        help="auto: a tempered Gaussian is scored as its proper density, a tempered Bernoulli is refused; "
        "untempered: score the model without its likelihood scale (labelled)",
    )
    diagnose.add_argument(
        "--proposal-scale",
        type=float,
        default=None,
        help="std factor widening the hierarchical proposal's per-view messages (default: the library's)",
    )
    diagnose.add_argument("--ais-chains", type=int, default=16, help="AIS chains per item")
    diagnose.add_argument("--ais-steps", type=int, default=200, help="AIS annealing steps")
    _loading_options(diagnose)
    listing = sub.add_parser("list", parents=[common], help=COMMANDS["list"])
    listing.add_argument(
        "what", nargs="?", choices=("all", "recipes"), default="all", help="recipes: the shipped recipes only"
    )
    return parser


def _loading_options(parser: argparse.ArgumentParser) -> None:
    """Options of commands that load a finished run (evaluate, diagnose)."""
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="a checkpoint file (or its name in RUN_DIR) instead of the newest; a checkpoint that is not "
        "the end of training writes metrics-step<N>.json, never metrics.json",
    )
    parser.add_argument(
        "--data-root", default=None, help="read the data from this folder instead of the recorded data.root"
    )
    parser.add_argument(
        "--download",
        action="store_true",
        help="let the data set download or write caches if the run's config.json asks (off by default: "
        "a run directory from elsewhere is data, not instructions)",
    )


def parse_probes(text: str | None) -> tuple[str, ...]:
    """``--probes linear,knn`` -> ``("linear", "knn")``; ``None``: the default content probes.

    Any probe registered in :data:`pssl.evaluation.PROBES` that classifies or
    clusters is accepted; empty or unknown names are refused, naming the accepted ones.
    """
    from pssl.evaluation import CONTENT_PROBES, check_probes

    if text is None:
        return CONTENT_PROBES
    probes = tuple(p.strip() for p in text.split(",") if p.strip())
    try:
        return check_probes(probes)
    except ValueError as err:
        raise ValueError(f"--probes {text!r}: {err}") from None


def _config_from(overrides: list[str], base: Config | None = None) -> Config:
    return apply_overrides(base or Config(), parse_overrides(overrides))


def cmd_train(overrides: list[str]) -> int:
    from pssl.experiment import run_experiment
    from pssl.recipes import config_from_tokens

    config = config_from_tokens(overrides)
    metrics = run_experiment(config)
    run_dir = Path(config.out) if config.out else None
    _print_summary(metrics, run_dir)
    return 0


def cmd_resume(run_dir: str, overrides: list[str]) -> int:
    from pssl.experiment import run_experiment
    from pssl.rundir import RunDirectoryError, read_run_config

    raw, _ = read_run_config(run_dir)
    try:
        recorded = Config.from_dict(raw)
    except ConfigError as err:
        raise RunDirectoryError(f"{Path(run_dir) / 'config.json'}: {err}") from None
    config = apply_overrides(recorded, {"out": str(run_dir), "resume": "true", **parse_overrides(overrides)})
    metrics = run_experiment(config)
    _print_summary(metrics, Path(run_dir))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pssl.experiment import evaluate_run
    from pssl.inference.distributed import resolve_device

    probes = parse_probes(args.probes)
    resolve_device(args.device)
    metrics = evaluate_run(
        args.run_dir,
        device=args.device,
        probes=probes,
        checkpoint=args.checkpoint,
        allow_download=args.download,
        data_root=args.data_root,
    )
    _print_summary(metrics, Path(args.run_dir))
    return 0


def cmd_demo(overrides: list[str]) -> int:
    from pssl.demo import demo_claims, run_demo

    results = run_demo(overrides)
    for data, result in results.items():
        print(f"{data}:\n{result['table']}\nreport: {result['report']}\n")
    table, caveat = demo_claims(results)
    print(f"claims at the demo's budget:\n{table}\n{caveat}")
    return 0


def cmd_compare(overrides: list[str]) -> int:
    from pssl.compare import run_compare

    result = run_compare(overrides)
    print(result["table"])
    for pair, error in result["failures"].items():
        print(f"failed: {pair}: {error}", file=sys.stderr)
    print(f"\nreport: {result['report']}")
    return 1 if result["failures"] else 0


def cmd_claims(overrides: list[str]) -> int:
    from pssl.claims import run_claims

    result = run_claims(overrides)
    if result.get("dry_run"):
        for entry in result["planned"]:
            print(entry["run"])
        print(f"\n{len(result['planned'])} runs planned (nothing trained); configurations: {result['plan']}")
        return 0
    print(result["table"])
    for name, error in result["meta"]["failures"].items():
        print(f"failed: {name}: {error}", file=sys.stderr)
    print(f"\nreport: {result['report']}")
    return 1 if result["meta"]["failures"] else 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    from pssl.diagnostics import diagnose_run
    from pssl.inference.distributed import resolve_device

    run_dir = args.run_dir
    resolve_device(args.device)
    result = diagnose_run(
        run_dir,
        num_samples=args.num_samples,
        max_items=args.max_items,
        device=args.device,
        checkpoint=args.checkpoint,
        allow_download=args.download,
        data_root=args.data_root,
        views_seed=args.views_seed,
        proposal=args.proposal,
        tempering=args.tempering,
        estimator=args.estimator,
        ais_options={"num_chains": args.ais_chains, "num_steps": args.ais_steps},
        proposal_scale=args.proposal_scale,
    )
    readings = result.get("readings", {})
    for name, line in readings.items() if isinstance(readings, dict) else enumerate(readings):
        print(f"- {name}: {line}")
    print(f"diagnostics written to {run_dir} (diagnostics.json, diagnostics.md, diagnostics.nc, *.png)")
    return 0


def _print_summary(metrics: dict, run_dir: Path | None) -> None:
    if not metrics:  # a non-zero rank under torchrun: rank 0 reports
        return
    content = metrics.get("content", {})
    parts = [
        f"{name} {res['accuracy']:.4f}"
        for name, res in content.items()
        if isinstance(res, dict) and "accuracy" in res
    ]
    training = metrics.get("training", {})
    if training:
        print(
            f"{training.get('model')} on {training.get('data')}: "
            f"{training.get('seconds_per_epoch', float('nan')):.2f} s/epoch, "
            f"{training.get('images_per_second', float('nan')):.0f} images/s"
        )
    if parts:
        print("test accuracy: " + ", ".join(parts))
    if run_dir is not None:
        print(f"run directory: {run_dir}")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (tests and notebooks replace it)."""

    def __init__(self) -> None:
        super().__init__()

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno >= logging.WARNING:
            return f"pssl: {record.levelname.lower()}: {text}"
        return text


def setup_logging(level: int = logging.INFO) -> None:
    """Progress and warnings of the ``pssl`` loggers go to stderr, one plain line each (once per process)."""
    if any(isinstance(h, _StderrHandler) for h in logger.handlers):
        return
    handler = _StderrHandler()
    handler.setFormatter(_Formatter())
    logger.addHandler(handler)
    logger.setLevel(level)


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"stopped by signal {signum}")


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM once the command is over (reporting, interpreter shutdown): exit 130 at once."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(130)


INTERRUPT_HINTS = {
    "train": "files written so far are complete; if a checkpoint was written, `pssl resume RUN_DIR` "
    "continues, else run the command again",
    "resume": "files written so far are complete; run the same `pssl resume` again to continue",
    "evaluate": "nothing half-written is kept; run the same `pssl evaluate` again",
    "diagnose": "nothing half-written is kept; run the same `pssl diagnose` again",
    "compare": "rerun the same `pssl compare` command to continue: finished pairs are reused",
    "demo": "rerun the same `pssl demo` command to continue",
}


def _interrupt_line(command: str, err: BaseException) -> str:
    """One line for an interrupt: the loop's own message (where it stopped and how to continue),
    or, outside the loop, what stopped the command and what to do."""
    message = str(err).strip()
    if message and ("pssl resume" in message or "pssl compare" in message):
        return message
    what = message or "Ctrl-C (SIGINT)"
    hint = INTERRUPT_HINTS.get(command, "run the command again")
    return f"{what} outside the training loop; {hint}"


def _error_line(err: BaseException) -> str:
    from pssl.rundir import describe_os_error

    if isinstance(err, MemoryError):
        detail = f" ({err})" if str(err) else ""
        return f"out of memory{detail}; try a smaller batch_size, model or data.limit"
    if isinstance(err, OSError):
        return describe_os_error(err)
    return str(err) or type(err).__name__


def _dispatch(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.command == "train":
        return cmd_train(args.overrides)
    if args.command == "resume":
        return cmd_resume(args.run_dir, args.overrides)
    if args.command == "evaluate":
        return cmd_evaluate(args)
    if args.command == "demo":
        return cmd_demo(args.overrides)
    if args.command == "compare":
        return cmd_compare(args.overrides)
    if args.command == "claims":
        return cmd_claims(args.overrides)
    if args.command == "diagnose":
        return cmd_diagnose(args)
    if args.command == "list":
        from pssl.recipes import describe_recipes

        if args.what == "recipes":
            print(describe_recipes())
        else:
            print(catalogue() + "\n\nrecipes (recipe=NAME):\n" + describe_recipes())
        return 0
    parser.error(f"unknown command {args.command!r}")
    return 2


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pssl`` console script.

    Exit codes: 0 done; 2 an error, reported in one line ``pssl COMMAND: error: ...``
    that names the file, field or value and the cause (``--traceback`` or
    ``PSSL_TRACEBACK=1`` shows the traceback as well); 130 stopped by SIGINT or
    SIGTERM after writing a consistent checkpoint (``pssl resume`` continues).
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    setup_logging()
    show_traceback = getattr(args, "traceback", False) or os.environ.get(TRACEBACK_ENV, "") not in ("", "0")
    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread
        pass
    try:
        try:
            return _dispatch(args, parser)
        finally:
            if previous is not None:  # from here a SIGTERM ends the process with 130, not -15
                signal.signal(signal.SIGTERM, _exit_on_sigterm)
    except KeyboardInterrupt as err:
        if show_traceback:
            traceback.print_exc()
        print(f"pssl {args.command}: interrupted: {_interrupt_line(args.command, err)}", file=sys.stderr)
        return 130
    except (ValueError, TypeError, RuntimeError, FloatingPointError, OSError, MemoryError) as err:
        if show_traceback:
            traceback.print_exc()
        print(f"pssl {args.command}: error: {_error_line(err)}", file=sys.stderr)
        return 2
    finally:
        # called from Python (argv given): give the caller its handler back; from the shell the
        # shutdown handler stays, so a SIGTERM while the interpreter exits still gives 130
        if previous is not None and argv is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
