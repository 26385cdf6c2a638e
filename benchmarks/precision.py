r"""Does ``precision=bf16`` change results? fp32 and bf16 runs of the same seeds, side by side.

For each seed of ``--seeds`` (default 1,2,3) and each precision (``fp32``, ``bf16``),
SimVAE trains on FashionMNIST with the paper recipe's networks (reference MLPs
784-2000-500-500 / 10-500-500-2000-784, latent 10, ``J = 2``, batch 64, the
data set's defaults otherwise) for a short budget: ``--epochs`` epochs over the
first ``--limit`` of the 54,000 training items. Then it reports, per run:

* the validation ELBO after the last epoch (nats per item, 2,048 validation items,
  fixed seeds; the training loop's own ``val_elbo``),
* the linear-probe test accuracy (:func:`pssl.evaluation.evaluate_content`,
  ``probes=("linear",)``: logistic regression on the encoder means, its penalty
  chosen on the 6,000 validation items, scored on the 10,000 test items).

Verdict per figure: bf16 **keeps results** when the difference of the bf16 and fp32
means over seeds is within fp32's seed-to-seed spread (max - min over the seeds).
Seeds are paired (same initialisation, data order and augmentations), so the
per-seed differences are printed too.

Usage::

    python benchmarks/precision.py --threads 1                 # 3 seeds x 2 precisions, ~10-20 min
    python benchmarks/precision.py --limit 0.05 --epochs 1 --seeds 1,2   # a quick look
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import SINGLE_RUN_NOTE, header, parser, set_threads, table, write_json
from pssl.config import Component, Config
from pssl.datasets import DataSplits, load_dataset
from pssl.evaluation import evaluate_content
from pssl.inference.precision import native_bf16
from pssl.inference.train import train

PRECISIONS = ("fp32", "bf16")
FIGURES = ("val_elbo", "linear_accuracy")


def one_run(data: DataSplits, *, seed: int, precision: str, epochs: int, out: Path) -> dict[str, Any]:
    """Train one (seed, precision) run and score it: validation ELBO, linear-probe test accuracy."""
    config = Config(
        model=Component("simvae"),
        data=Component("fashionmnist"),
        latent_dim=10,
        num_views=2,
        batch_size=64,
        epochs=epochs,
        device="cpu",
        seed=seed,
        precision=precision,
        out=str(out / f"{precision}-seed{seed}"),
        progress=False,
    )
    start = time.perf_counter()
    result = train(config, data=data)
    seconds = time.perf_counter() - start
    content = evaluate_content(result.model, result.data, seed=seed, probes=("linear",))
    return {
        "seed": seed,
        "precision": precision,
        "train_seconds": seconds,
        "loop_seconds": sum(float(r["seconds"]) for r in result.epochs),
        "val_elbo": float(result.epochs[-1]["val_elbo"]),
        "linear_accuracy": float(content["linear"]["accuracy"]),
    }


def verdicts(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per figure: the means, fp32's seed spread, the bf16 - fp32 difference and the verdict."""
    out = {}
    for figure in FIGURES:
        values = {p: [r[figure] for r in runs if r["precision"] == p] for p in PRECISIONS}
        spread = max(values["fp32"]) - min(values["fp32"])
        difference = statistics.fmean(values["bf16"]) - statistics.fmean(values["fp32"])
        out[figure] = {
            "fp32_mean": statistics.fmean(values["fp32"]),
            "bf16_mean": statistics.fmean(values["bf16"]),
            "fp32_spread": spread,
            "difference": difference,
            "paired_differences": [b - a for a, b in zip(values["fp32"], values["bf16"])],
            "verdict": "kept" if abs(difference) <= spread else "CHANGED",
        }
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", default="1,2,3", help="comma-separated seeds (at least 2, for a spread)")
    p.add_argument("--epochs", type=int, default=2, help="epochs of each run")
    p.add_argument("--limit", type=float, default=0.1, help="fraction of the 54,000 training items")
    p.add_argument("--root", default=None, help="folder of the FashionMNIST IDX files (default: auto-detect)")
    args = p.parse_args(argv)
    try:
        seeds = [int(v) for v in args.seeds.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    if len(seeds) < 2:
        raise SystemExit(f"--seeds needs at least 2 seeds for a seed-to-seed spread, got {args.seeds!r}")
    if not 0 < args.limit <= 1:
        raise SystemExit(f"--limit must be a fraction in (0, 1], got {args.limit}")
    if args.epochs < 1:
        raise SystemExit(f"--epochs must be a positive integer, got {args.epochs}")
    ok, reason = native_bf16("cpu")
    if not ok:
        raise SystemExit(f"precision=bf16 is refused here ({reason}); nothing to compare")
    threads = set_threads(args.threads)
    options = {} if args.root is None else {"root": args.root}
    data = load_dataset("fashionmnist", options, seed=0)
    items = max(64, int(len(data.train) * args.limit))
    data = DataSplits(
        data.train.subset(torch.arange(items)), data.val, data.test, name=data.name, paired=data.paired
    )
    inputs = {
        "model": "simvae, reference MLPs 784-2000-500-500 / 10-500-500-2000-784, latent 10, J=2, batch 64",
        "data": f"fashionmnist: first {items} training items, {len(data.val)} validation, "
        f"{len(data.test)} test",
        "budget": f"{args.epochs} epochs x {items // 64} steps per run",
        "seeds": seeds,
        "bf16": reason,
        "threads": threads,
        "device": "cpu",
    }
    header("fp32 against bf16: validation ELBO and linear-probe accuracy over seeds", inputs)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for precision in PRECISIONS:  # paired: each seed's two runs one after the other
                runs.append(one_run(data, seed=seed, precision=precision, epochs=args.epochs, out=Path(tmp)))
                r = runs[-1]
                print(
                    f"   seed {seed} {precision}: val ELBO {r['val_elbo']:.2f} nats/item, linear "
                    f"accuracy {r['linear_accuracy']:.4f}, step loop {r['loop_seconds']:.1f} s",
                    flush=True,
                )
    results = verdicts(runs)
    rows = [
        {
            "figure": figure,
            "fp32 mean": v["fp32_mean"],
            "bf16 mean": v["bf16_mean"],
            "bf16 - fp32": v["difference"],
            "fp32 seed spread": v["fp32_spread"],
            "per seed": ", ".join(f"{d:+.3g}" for d in v["paired_differences"]),
            "verdict": v["verdict"],
        }
        for figure, v in results.items()
    ]
    print("   " + table(rows, list(rows[0])).replace("\n", "\n   "))
    loops = {p: sum(r["loop_seconds"] for r in runs if r["precision"] == p) for p in PRECISIONS}
    print(f"   step loops: fp32 {loops['fp32']:.1f} s, bf16 {loops['bf16']:.1f} s (run one after the other)")
    print(SINGLE_RUN_NOTE)
    figures = {"runs": runs, "verdicts": results, "loop_seconds": loops}
    write_json(args.json, "precision", inputs, figures)
    return {"inputs": inputs, "figures": figures}


if __name__ == "__main__":
    main()
