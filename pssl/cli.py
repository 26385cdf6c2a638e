"""The ``pssl`` command line: ``pssl <command> key=value ...``.

Nothing imports this module; it sits on top of training, evaluation and
diagnostics. Every run option is a ``key=value`` override of
:class:`pssl.config.Config` (``section.option=value`` for component options).
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning. Must be set before torch loads its
# OpenMP runtime; measured here on 2 busy cores: a SimVAE MLP step 67 ms -> 25 ms.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pssl.config import Config, ConfigError, accepted_keys, apply_overrides, parse_overrides


def _registries() -> list[tuple[str, object]]:
    from pssl.augment import AUGMENTATIONS
    from pssl.data import DATASETS
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
    "train": "train a method and evaluate it (key=value overrides; resume=true continues a run)",
    "resume": "continue an interrupted run: pssl resume RUN_DIR [epochs=N]",
    "evaluate": "evaluate a finished run: pssl evaluate RUN_DIR (writes RUN_DIR/metrics.json)",
    "demo": "a small comparison on embedded data (digits, styled-digits): SimVAE, VAE, SimCLR, VicREG",
    "compare": "train and evaluate models over seeds: pssl compare models=simvae,vae seeds=0,1,2 out=DIR",
    "diagnose": "posterior diagnostics of a run: pssl diagnose RUN_DIR (IWAE, PSIS k-hat, collapse, PPC)",
    "list": "list every model, data set, prior, likelihood, network and augmentation name",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pssl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Probabilistic self-supervised learning: SimVAE, VAE and discriminative SSL "
        "as Pyro inference.",
        epilog=catalogue()
        + "\n\nexample:\n  pssl train model=simvae data=fashionmnist epochs=10 seed=0 out=runs/fm-simvae",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    train = sub.add_parser(
        "train",
        help=COMMANDS["train"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a method, then evaluate it. Writes RUN_DIR/{config.json, history.csv, epochs.csv, "
        "checkpoint-*.pt, metrics.json, reconstructions.png, loss_curves.png}.",
        epilog="overrides (key=value):\n"
        + textwrap.indent(_fields_help(), "  ")
        + "\n\n"
        + catalogue()
        + "\n\nkeys: "
        + accepted_keys(),
    )
    train.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    resume = sub.add_parser("resume", help=COMMANDS["resume"])
    resume.add_argument("run_dir")
    resume.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    evaluate = sub.add_parser("evaluate", help=COMMANDS["evaluate"])
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--device", default="cpu")
    evaluate.add_argument(
        "--probes", default="linear,mlp,knn,cluster", help="comma-separated: linear, mlp, knn, cluster"
    )
    demo = sub.add_parser("demo", help=COMMANDS["demo"])
    demo.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    compare = sub.add_parser(
        "compare",
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
    diagnose = sub.add_parser("diagnose", help=COMMANDS["diagnose"])
    diagnose.add_argument("run_dir")
    diagnose.add_argument("--num-samples", type=int, default=100, help="importance samples K per item")
    diagnose.add_argument("--max-items", type=int, default=256, help="test items to diagnose")
    diagnose.add_argument("--device", default="cpu")
    sub.add_parser("list", help=COMMANDS["list"])
    return parser


def _config_from(overrides: list[str], base: Config | None = None) -> Config:
    return apply_overrides(base or Config(), parse_overrides(overrides))


def cmd_train(overrides: list[str]) -> int:
    from pssl.experiment import run_experiment

    config = _config_from(overrides)
    metrics = run_experiment(config)
    run_dir = Path(config.out) if config.out else None
    _print_summary(metrics, run_dir)
    return 0


def cmd_resume(run_dir: str, overrides: list[str]) -> int:
    import json

    from pssl.experiment import run_experiment

    config_file = Path(run_dir) / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} not found: {run_dir} is not a pssl run directory")
    raw = json.loads(config_file.read_text())
    raw.pop("resolved", None)
    config = apply_overrides(
        Config.from_dict(raw), {"out": str(run_dir), "resume": "true", **parse_overrides(overrides)}
    )
    metrics = run_experiment(config)
    _print_summary(metrics, Path(run_dir))
    return 0


def cmd_evaluate(run_dir: str, device: str, probes: str) -> int:
    from pssl.experiment import evaluate_run

    metrics = evaluate_run(run_dir, device=device, probes=tuple(p for p in probes.split(",") if p))
    _print_summary(metrics, Path(run_dir))
    return 0


def cmd_demo(overrides: list[str]) -> int:
    from pssl.demo import run_demo

    run_demo(overrides)
    return 0


def cmd_compare(overrides: list[str]) -> int:
    from pssl.compare import run_compare

    run_compare(overrides)
    return 0


def cmd_diagnose(run_dir: str, num_samples: int, max_items: int, device: str) -> int:
    from pssl.diagnostics import diagnose_run

    result = diagnose_run(run_dir, num_samples=num_samples, max_items=max_items, device=device)
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


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pssl`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        if args.command == "train":
            return cmd_train(args.overrides)
        if args.command == "resume":
            return cmd_resume(args.run_dir, args.overrides)
        if args.command == "evaluate":
            return cmd_evaluate(args.run_dir, args.device, args.probes)
        if args.command == "demo":
            return cmd_demo(args.overrides)
        if args.command == "compare":
            return cmd_compare(args.overrides)
        if args.command == "diagnose":
            return cmd_diagnose(args.run_dir, args.num_samples, args.max_items, args.device)
        if args.command == "list":
            print(catalogue())
            return 0
    except KeyboardInterrupt as err:
        print(f"pssl: interrupted: {err}", file=sys.stderr)
        return 130
    except (ConfigError, ValueError, TypeError, FileNotFoundError, RuntimeError, FloatingPointError) as err:
        print(f"pssl {args.command}: error: {err}", file=sys.stderr)
        return 2
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
