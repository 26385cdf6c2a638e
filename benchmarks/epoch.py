r"""One FashionMNIST epoch of SimVAE, end to end through :func:`pssl.inference.train.train`.

Inputs: ``data=fashionmnist`` (the IDX files, e.g. under
``/usr/share/datasets/fashion-mnist``): the 60,000 training images split,
seeded, into 54,000 training and 6,000 validation items (``val_fraction=0.1``),
plus the 10,000 test images (not used here). One epoch takes
``54,000 // 64 = 843`` steps of 64 items x ``J = 2`` views (53,952 items; the
last 48 wait for the next epoch's order), with the reference MLPs (encoder
784-2000-500-500, decoder 10-500-500-2000-784, latent 10), the default Bernoulli
likelihood and ``mnist`` augmentation, Adam as the run config says; then the
validation terms (2,048 validation items) and a checkpoint.

Each precision of ``--precisions`` (default ``fp32,bf16`` where the CPU has native
bf16, see :mod:`pssl.inference.precision`) trains one such epoch, one after the
other. Reports per precision: milliseconds per step, images (views) per second, the
epoch's seconds, those of validation + checkpoint, the train and validation ELBO;
and the peak resident memory of the process (``ru_maxrss``, goal < 3 GiB).

Then, **side by side in one process**: for each precision a second trainer takes the
epoch's steps as :func:`benchmarks.step.pssl_step` does (``make_batch`` + ``step``,
the loop's own work), and the bare PyTorch step of :func:`benchmarks.step.floor_step`
(same networks and precision, the loss written by hand and checked equal to the Pyro
loss, Adam of the same settings, a ready batch) takes as many; the four cases run in
turns in chunks of ``--chunk`` steps, so load on the machine hits each alike.
Reported: per precision the ratio ``sum(pssl) / sum(floor)`` (goal <= 1.25) with the
per-chunk median and quartiles, and the bf16 speed-up ``sum(pssl fp32) / sum(pssl
bf16)`` (goal >= 1.8 on a CPU with native bf16).

The authors' code (github alicebizeul/simvae) is a script, not a package: with
``--authors-command 'CMD'`` (a command that trains it for ``--authors-steps`` steps
at the paper recipe) the script times it and prints each precision's step against
the authors' step; without one it says that the code is not installed here.

``--limit F`` trains on the first ``F`` of the training items only (an epoch of
``F`` times the steps) and *extrapolates* the step loop to the full 843 steps
(loop seconds x 843 / steps, plus the measured fixed part); such figures are
labelled ``extrapolated``.

Usage::

    python benchmarks/epoch.py --threads 2 --json epoch.json
    python benchmarks/epoch.py --limit 0.1 --threads 1          # fp32 and bf16 side by side
    python benchmarks/epoch.py --precisions fp32 --no-floor
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (
    SINGLE_RUN_NOTE,
    check_goal,
    header,
    parser,
    peak_rss_gib,
    set_threads,
    spread,
    table,
    write_json,
)
from pssl.config import Component, Config
from pssl.datasets import DataSplits, load_dataset
from pssl.inference.precision import native_bf16
from pssl.inference.train import Trainer, train

MEMORY_GOAL_GIB = 3.0
FLOOR_GOAL = 1.25
BF16_SPEEDUP_GOAL = 1.8
PRECISIONS = ("fp32", "bf16")
AUTHORS_REPOSITORY = "github alicebizeul/simvae"


def default_precisions() -> str:
    """``fp32,bf16`` where this CPU has native bf16, else ``fp32``."""
    return "fp32,bf16" if native_bf16("cpu")[0] else "fp32"


def side_by_side(configs: dict[str, Config], data: DataSplits, steps: int, chunk: int) -> dict[str, Any]:
    """The epoch's steps of each precision and their floors, ``steps`` of each, interleaved in chunks.

    Cases ``pssl <precision>`` (``make_batch`` + ``step`` of a trainer) and ``floor
    <precision>`` (the bare PyTorch step of the same networks and precision on a ready
    batch) run in turns, ``chunk`` steps at a time, so load on the machine hits each alike.
    """
    from benchmarks.common import interleaved, paired_ratio
    from benchmarks.step import floor_step, maths_check, pssl_step

    cases: dict[str, Any] = {}
    differences = {}
    for precision, config in configs.items():
        trainer = Trainer(config, data=data)
        batch = trainer.make_batch(torch.arange(trainer.batch_items))
        differences[precision] = maths_check(trainer, config.model.name, batch)
        cases[f"pssl {precision}"] = pssl_step(trainer)
        cases[f"floor {precision}"] = floor_step(trainer, config.model.name, batch.views)
    chunk = max(1, min(chunk, steps))

    def repeat(step: Any) -> Any:
        def run() -> None:
            for _ in range(chunk):
                step()

        return run

    rounds = max(1, steps // chunk)
    samples = interleaved({k: repeat(v) for k, v in cases.items()}, repeats=rounds, warmup=1)
    out: dict[str, Any] = {"steps_each": rounds * chunk, "chunk": chunk, "precisions": {}}
    for precision in configs:
        ours, floor = samples[f"pssl {precision}"], samples[f"floor {precision}"]
        out["precisions"][precision] = {
            "maths_relative_difference": differences[precision],
            "pssl_loop_seconds": sum(ours),
            "floor_loop_seconds": sum(floor),
            "images_per_second": rounds * chunk * configs[precision].batch_size * 2 / sum(ours),
            "epoch_ratio": sum(ours) / sum(floor),
            "chunk_ratio": paired_ratio(ours, floor),
        }
    if "fp32" in configs and "bf16" in configs:
        out["bf16_speedup"] = sum(samples["pssl fp32"]) / sum(samples["pssl bf16"])
        out["bf16_speedup_chunks"] = paired_ratio(samples["pssl fp32"], samples["pssl bf16"])
        out["bf16_floor_speedup"] = sum(samples["floor fp32"]) / sum(samples["floor bf16"])
    return out


def authors_step(command: str | None, steps: int) -> dict[str, Any]:
    """Seconds per step of the authors' code, timing ``command`` (it runs ``steps`` steps), if given."""
    if not command:
        return {
            "installed": False,
            "note": f"the authors' code ({AUTHORS_REPOSITORY}) is not installed here: no ratio to it "
            "(pass --authors-command 'CMD' that trains it for --authors-steps steps to measure one)",
        }
    start = time.perf_counter()
    done = subprocess.run(command, shell=True, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        return {
            "installed": False,
            "note": f"--authors-command failed (exit {done.returncode}): "
            f"{(done.stderr or done.stdout).strip().splitlines()[-1:]}; no ratio",
        }
    return {"installed": True, "seconds": seconds, "steps": steps, "seconds_per_step": seconds / steps}


def train_once(config: Config, data: DataSplits) -> dict[str, Any]:
    """One end-to-end :func:`train` call: loop seconds, the whole call, the epoch's ELBOs."""
    start = time.perf_counter()
    result = train(config, data=data)
    total_seconds = time.perf_counter() - start
    row = result.epochs[-1]
    return {
        "loop_seconds": float(row["seconds"]),
        "total_seconds": total_seconds,
        "train_elbo": row.get("train_elbo"),
        "val_elbo": row.get("val_elbo"),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--model", default="simvae", help="method to train (default simvae)")
    p.add_argument("--batch-size", type=int, default=64, help="items per step (x2 views)")
    p.add_argument(
        "--limit", type=float, default=1.0, help="fraction of the training items to run (then extrapolate)"
    )
    p.add_argument("--root", default=None, help="folder of the FashionMNIST IDX files (default: auto-detect)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--precisions",
        default=default_precisions(),
        help="comma-separated, side by side: fp32,bf16 (default: both where the CPU has native bf16)",
    )
    p.add_argument(
        "--chunk", type=int, default=20, help="steps per interleaved chunk of the side-by-side comparison"
    )
    p.add_argument("--no-floor", action="store_true", help="skip the interleaved side-by-side comparison")
    p.add_argument(
        "--authors-command",
        default=os.environ.get("SIMVAE_AUTHORS_COMMAND"),
        help=f"shell command training the authors' code ({AUTHORS_REPOSITORY}) for --authors-steps "
        "steps at the paper recipe; timed for the per-step ratio (default: $SIMVAE_AUTHORS_COMMAND)",
    )
    p.add_argument("--authors-steps", type=int, default=100, help="steps --authors-command runs")
    args = p.parse_args(argv)
    if not 0 < args.limit <= 1:
        raise SystemExit(f"--limit must be a fraction in (0, 1], got {args.limit}")
    precisions = [v.strip() for v in args.precisions.split(",") if v.strip()]
    bad = [v for v in precisions if v not in PRECISIONS]
    if bad or not precisions:
        raise SystemExit(
            f"--precisions: unknown {bad or args.precisions!r}; accepted: {', '.join(PRECISIONS)}"
        )
    if "bf16" in precisions:
        ok, reason = native_bf16("cpu")
        if not ok:
            raise SystemExit(f"--precisions bf16: {reason}; run with --precisions fp32")
    threads = set_threads(args.threads)

    start = time.perf_counter()
    options = {} if args.root is None else {"root": args.root}
    data = load_dataset("fashionmnist", options, seed=args.seed)
    load_seconds = time.perf_counter() - start
    full_items = len(data.train)
    full_steps = full_items // args.batch_size
    items = max(args.batch_size, int(full_items * args.limit))
    if items < full_items:
        data = DataSplits(
            data.train.subset(torch.arange(items)), data.val, data.test, name=data.name, paired=data.paired
        )
    steps = items // args.batch_size
    inputs = {
        "data": f"fashionmnist: {full_items} training + {len(data.val)} validation items (of 60,000), "
        f"{len(data.test)} test (unused); image 1x28x28",
        "epoch": f"{full_steps} steps of {args.batch_size} items x 2 views "
        f"({full_steps * args.batch_size} items)",
        "run": f"{steps} steps on the first {items} training items"
        + (" (a fraction: the full epoch is extrapolated)" if items < full_items else " (the full epoch)"),
        "model": f"{args.model}, reference MLPs 784-2000-500-500 / 10-500-500-2000-784, latent 10, "
        "defaults otherwise",
        "precisions": precisions,
        "bf16": native_bf16("cpu")[1],
        "threads": threads,
        "device": "cpu",
    }
    header("one FashionMNIST epoch end to end (pssl.inference.train.train), precisions side by side", inputs)
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        configs = {
            precision: Config(
                model=Component(args.model),
                data=Component("fashionmnist", options),
                latent_dim=10,
                num_views=2,
                batch_size=args.batch_size,
                epochs=1,
                device="cpu",
                seed=args.seed,
                out=str(Path(tmp) / f"run-{precision}"),
                progress=False,
                precision=precision,
            )
            for precision in precisions
        }
        for precision, config in configs.items():
            runs[precision] = train_once(config, data)
        comparison = None
        if not args.no_floor:
            floor_configs = {
                k: Config(**{**vars(c), "out": str(Path(tmp) / f"floor-{k}")}) for k, c in configs.items()
            }
            comparison = side_by_side(floor_configs, data, steps, args.chunk)
    authors = authors_step(args.authors_command, args.authors_steps)
    figures: dict[str, Any] = {
        "training_items_run": items,
        "steps_run": steps,
        "load_seconds": load_seconds,
        "runs": runs,
        "authors_code": authors,
        "peak_rss_gib": peak_rss_gib(),
    }
    figures["memory_goal"] = check_goal(figures["peak_rss_gib"], MEMORY_GOAL_GIB, smaller_is_better=True)
    print(f"   data load: {load_seconds:.1f} s (not part of the epoch)")
    rows = []
    for precision, run in runs.items():
        loop = run["loop_seconds"]
        fixed = run["total_seconds"] - loop  # set-up, validation terms, checkpoint
        run["images_per_second"] = steps * args.batch_size * 2 / loop
        run["seconds_per_step"] = loop / steps
        run["epoch_loop_seconds"] = loop * full_steps / steps
        run["epoch_seconds"] = run["epoch_loop_seconds"] + fixed
        run["extrapolated"] = items < full_items
        row = {
            "precision": precision,
            "steps": steps,
            "ms/step": 1e3 * loop / steps,
            "images/s": run["images_per_second"],
            f"epoch s ({full_steps} steps)" + (" extrap." if items < full_items else ""): run[
                "epoch_seconds"
            ],
            "other s": fixed,
            "train ELBO": run["train_elbo"],
            "val ELBO": run["val_elbo"],
        }
        if authors["installed"]:
            run["ratio_to_authors_step"] = run["seconds_per_step"] / authors["seconds_per_step"]
            row["/ authors' step"] = run["ratio_to_authors_step"]
        rows.append(row)
    print("   end to end, one train() call per precision, run one after the other:")
    print("   " + table(rows, list(rows[0])).replace("\n", "\n   "))
    if authors["installed"]:
        print(
            f"   authors' code: {1e3 * authors['seconds_per_step']:.1f} ms per step "
            f"({authors['steps']} steps timed by --authors-command)"
        )
    else:
        print(f"   {authors['note']}")
    print(
        f"   peak resident memory: {figures['peak_rss_gib']:.2f} GiB "
        f"(goal < {MEMORY_GOAL_GIB:g} GiB: {figures['memory_goal']})"
    )
    if comparison is not None:
        figures["side_by_side"] = comparison
        print(
            f"   interleaved in one process ({comparison['steps_each']} steps of each case, chunks of "
            f"{comparison['chunk']}): pssl against its floor, per precision"
        )
        rows = []
        for precision, c in comparison["precisions"].items():
            c["floor_goal"] = check_goal(c["epoch_ratio"], FLOOR_GOAL, smaller_is_better=True)
            rows.append(
                {
                    "precision": precision,
                    "pssl s": c["pssl_loop_seconds"],
                    "floor s": c["floor_loop_seconds"],
                    "images/s": c["images_per_second"],
                    "pssl/floor": c["epoch_ratio"],
                    "chunks [q1,q3]": spread(c["chunk_ratio"]),
                    f"goal<={FLOOR_GOAL}": c["floor_goal"],
                    "loss check": f"{c['maths_relative_difference']:.1e}",
                }
            )
        print("   " + table(rows, list(rows[0])).replace("\n", "\n   "))
        if "bf16_speedup" in comparison:
            comparison["bf16_goal"] = check_goal(
                comparison["bf16_speedup"], BF16_SPEEDUP_GOAL, smaller_is_better=False
            )
            print(
                f"   bf16 throughput / fp32 throughput = {comparison['bf16_speedup']:.3f} "
                f"(goal >= {BF16_SPEEDUP_GOAL}: {comparison['bf16_goal']}); per chunk "
                f"{spread(comparison['bf16_speedup_chunks'])}; floors {comparison['bf16_floor_speedup']:.3f}"
            )
    print(SINGLE_RUN_NOTE)
    write_json(args.json, "epoch", inputs, figures)
    return {"inputs": inputs, "figures": figures}


if __name__ == "__main__":
    main()
