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

Reports: seconds of the step loop (``epochs.csv``'s ``seconds``), of validation +
checkpoint, and of the whole call; images (views) per second; peak resident
memory of the process (``ru_maxrss``, goal < 3 GiB).

Then the **compute floor** of the same epoch: a second trainer with the same
config takes the epoch's steps as :func:`benchmarks.step.pssl_step` does
(``make_batch`` + ``step``, the loop's own work), interleaved in chunks of
``--chunk`` steps with the bare PyTorch step of :func:`benchmarks.step.floor_step`
(same networks, the loss written by hand and checked equal to the Pyro loss,
Adam of the same settings, a ready batch). Reported: the epoch ratio
``sum(pssl) / sum(floor)`` over the whole epoch (goal <= 1.25) and the median of
the per-chunk ratios with its quartiles; a chunk pair runs back to back, so load
on the machine hits both.

``--limit F`` trains on the first ``F`` of the training items only (an epoch of
``F`` times the steps) and *extrapolates* the step loop to the full 843 steps
(loop seconds x 843 / steps, plus the measured fixed part); such figures are
labelled ``extrapolated``.

Usage::

    python benchmarks/epoch.py --threads 2 --json epoch.json
    python benchmarks/epoch.py --limit 0.1
"""

from __future__ import annotations

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
    write_json,
)
from pssl.config import Component, Config
from pssl.datasets import DataSplits, load_dataset
from pssl.inference.train import Trainer, train

MEMORY_GOAL_GIB = 3.0
FLOOR_GOAL = 1.25


def floor_comparison(config: Config, data: DataSplits, steps: int, chunk: int) -> dict[str, Any]:
    """pssl's steps against the bare PyTorch floor, ``steps`` of each, interleaved in chunks."""
    from benchmarks.common import interleaved, paired_ratio
    from benchmarks.step import floor_step, maths_check, pssl_step

    trainer = Trainer(config, data=data)
    batch = trainer.make_batch(torch.arange(trainer.batch_items))
    difference = maths_check(trainer, config.model.name, batch)
    ours, floor = pssl_step(trainer), floor_step(trainer, config.model.name, batch.views)
    chunk = max(1, min(chunk, steps))

    def repeat(step: Any) -> Any:
        def run() -> None:
            for _ in range(chunk):
                step()

        return run

    rounds = max(1, steps // chunk)
    samples = interleaved({"pssl": repeat(ours), "floor": repeat(floor)}, repeats=rounds, warmup=1)
    pssl_seconds, floor_seconds = sum(samples["pssl"]), sum(samples["floor"])
    return {
        "floor_steps": rounds * chunk,
        "chunk": chunk,
        "maths_relative_difference": difference,
        "pssl_loop_seconds": pssl_seconds,
        "floor_loop_seconds": floor_seconds,
        "epoch_ratio": pssl_seconds / floor_seconds,
        "chunk_ratio": paired_ratio(samples["pssl"], samples["floor"]),
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
        "--chunk", type=int, default=20, help="steps per interleaved chunk of the floor comparison"
    )
    p.add_argument("--no-floor", action="store_true", help="skip the compute-floor comparison")
    args = p.parse_args(argv)
    if not 0 < args.limit <= 1:
        raise SystemExit(f"--limit must be a fraction in (0, 1], got {args.limit}")
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
        "threads": threads,
        "device": "cpu",
    }
    header("one FashionMNIST epoch end to end (pssl.inference.train.train)", inputs)
    with tempfile.TemporaryDirectory() as tmp:
        config = Config(
            model=Component(args.model),
            data=Component("fashionmnist", options),
            latent_dim=10,
            num_views=2,
            batch_size=args.batch_size,
            epochs=1,
            device="cpu",
            seed=args.seed,
            out=str(Path(tmp) / "run"),
            progress=False,
        )
        start = time.perf_counter()
        result = train(config, data=data)
        total_seconds = time.perf_counter() - start
        floor = None
        if not args.no_floor:
            floor_config = Config(**{**vars(config), "out": str(Path(tmp) / "floor")})
            floor = floor_comparison(floor_config, data, steps, args.chunk)
    row = result.epochs[-1]
    loop_seconds = float(row["seconds"])
    fixed_seconds = total_seconds - loop_seconds  # set-up, validation terms, checkpoint
    images = steps * args.batch_size * 2
    figures: dict[str, Any] = {
        "training_items_run": items,
        "steps_run": steps,
        "load_seconds": load_seconds,
        "loop_seconds": loop_seconds,
        "other_seconds": fixed_seconds,
        "total_seconds": total_seconds,
        "images_per_second": images / loop_seconds,
        "seconds_per_step": loop_seconds / steps,
        "peak_rss_gib": peak_rss_gib(),
        "train_elbo": row.get("train_elbo"),
        "val_elbo": row.get("val_elbo"),
    }
    figures["memory_goal"] = check_goal(figures["peak_rss_gib"], MEMORY_GOAL_GIB, smaller_is_better=True)
    label = ""
    if items < full_items:
        figures["extrapolated_epoch_loop_seconds"] = loop_seconds * full_steps / steps
        figures["extrapolated_epoch_seconds"] = figures["extrapolated_epoch_loop_seconds"] + fixed_seconds
        label = " (extrapolated from a fraction)"
    epoch_loop = figures.get("extrapolated_epoch_loop_seconds", loop_seconds)
    epoch_total = figures.get("extrapolated_epoch_seconds", total_seconds)
    print(f"   data load: {load_seconds:.1f} s (not part of the epoch)")
    print(
        f"   step loop: {loop_seconds:.1f} s for {steps} steps = {1e3 * loop_seconds / steps:.1f} ms per step"
    )
    print(f"   images per second (views, step loop): {figures['images_per_second']:.0f}")
    print(f"   set-up + validation terms + checkpoint: {fixed_seconds:.1f} s")
    print(f"   epoch of {full_steps} steps{label}: loop {epoch_loop:.1f} s, whole call {epoch_total:.1f} s")
    print(
        f"   peak resident memory: {figures['peak_rss_gib']:.2f} GiB "
        f"(goal < {MEMORY_GOAL_GIB:g} GiB: {figures['memory_goal']})"
    )
    print(f"   train ELBO {row.get('train_elbo', float('nan')):.4g} nats per item")
    if floor is not None:
        figures["floor"] = floor
        figures["floor_goal"] = check_goal(floor["epoch_ratio"], FLOOR_GOAL, smaller_is_better=True)
        chunk_ratio = floor["chunk_ratio"]
        print(
            f"   compute floor ({floor['floor_steps']} steps each, in chunks of {floor['chunk']}; "
            f"loss check {floor['maths_relative_difference']:.1e}): pssl {floor['pssl_loop_seconds']:.1f} s, "
            f"floor {floor['floor_loop_seconds']:.1f} s"
        )
        print(
            f"   epoch / floor = {floor['epoch_ratio']:.3f} (goal <= {FLOOR_GOAL}: {figures['floor_goal']}); "
            f"per chunk median {chunk_ratio['ratio']:.3f} [{chunk_ratio['q1']:.3f}, {chunk_ratio['q3']:.3f}]"
        )
    print(SINGLE_RUN_NOTE)
    write_json(args.json, "epoch", inputs, figures)
    return {"inputs": inputs, "figures": figures}


if __name__ == "__main__":
    main()
