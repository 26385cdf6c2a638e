"""Held-out log p(x) of trained SimVAE and VAE: k-hat of the hierarchical proposal, IS vs AIS, elpd.

For every (data set, seed, model) it trains a short run (``--epochs``, ``--limit``
items), then on the first ``--items`` test items, J views drawn with
``views_seed=0`` (the same for every run):

* importance sampling with ``--num-samples`` K draws from the hierarchical proposal
  and, for reference, from the training guide: share of items with k-hat < 0.7;
* with ``--ais`` (first seed only), AIS with HMC per item, and the per-item
  difference IS - AIS;
* per seed, ``compare_held_out`` of simvae against vae (elpd difference and its dse).

Run from the repository root: ``python benchmarks/diagnostics.py --data digits --seeds 0 1 2``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from pssl.augment import build_augmenter
from pssl.config import Component, Config
from pssl.diagnostics import compare_held_out, held_out_elpd, importance_sample, pareto_summary
from pssl.diagnostics.ais import ais_log_evidence, ais_summary
from pssl.diagnostics.importance import per_item_evidence
from pssl.diagnostics.structure import as_model_input
from pssl.inference.runs import load_run
from pssl.inference.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--limit", type=int, default=None, help="training items (data.limit)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--items", type=int, default=100, help="held-out items scored")
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--ais", action="store_true", help="AIS on the first seed")
    parser.add_argument(
        "--guide-all-seeds",
        action="store_true",
        help="also score the training guide on every seed (default: first)",
    )
    parser.add_argument("--ais-chains", type=int, default=8)
    parser.add_argument("--ais-steps", type=int, default=100)
    parser.add_argument("--ais-items", type=int, default=20, help="the first items also scored by AIS")
    parser.add_argument("--ais-leapfrog", type=int, default=3)
    parser.add_argument("--proposal-scale", type=float, default=None, help="default: the library's")
    parser.add_argument("--runs", default="runs/bench-diagnostics")
    parser.add_argument("--json", default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = {"limit": args.limit} if args.limit else {}
    results = {"args": vars(args), "load": os.getloadavg(), "rows": [], "comparisons": []}
    for seed in args.seeds:
        elpds = {}
        for model_name in ("simvae", "vae"):
            run_dir = Path(args.runs) / f"{args.data}-{model_name}-seed{seed}"
            started = time.time()
            if not (run_dir / "config.json").exists():
                config = Config(
                    model=Component(model_name),
                    data=Component(args.data, options),
                    epochs=args.epochs,
                    seed=seed,
                    out=str(run_dir),
                    progress=False,
                    device="cpu",
                )
                train(config)
            trained_seconds = time.time() - started
            run = load_run(run_dir)
            images = run.data.test.images[: args.items]
            augmenter = build_augmenter(
                run.config.augment.name, run.data.test.image_shape, run.config.augment.options
            )
            views = augmenter(
                as_model_input(run.model, images), run.config.num_views, torch.Generator().manual_seed(0)
            )
            row = {"data": args.data, "seed": seed, "model": model_name, "train_seconds": trained_seconds}
            proposals = (
                ("hierarchical", "guide")
                if args.guide_all_seeds or seed == args.seeds[0]
                else ("hierarchical",)
            )
            for proposal in proposals:
                started = time.time()
                try:
                    samples = importance_sample(
                        run.model,
                        views,
                        num_samples=args.num_samples,
                        seed=seed,
                        proposal=proposal,
                        keep_latents=False,
                        **({"proposal_scale": args.proposal_scale} if proposal == "hierarchical" else {}),
                    )
                except ValueError as err:
                    row[proposal] = {"error": str(err)}
                    continue
                pareto, khat, _ = pareto_summary(samples)
                log_px = per_item_evidence(samples.log_weights)[0]
                row[proposal] = {
                    "share_khat_below_0_7": float(np.mean(khat < 0.7)),
                    "khat_median": pareto["khat_median"],
                    "ess_median": pareto["ess_median"],
                    "log_px_mean": float(log_px.mean()),
                    "seconds": time.time() - started,
                }
                if proposal == "hierarchical":
                    elpds[model_name] = held_out_elpd(samples)
                    is_log_px = log_px
            if args.ais and seed == args.seeds[0]:
                started = time.time()
                ais = ais_log_evidence(
                    run.model,
                    views[: args.ais_items],
                    num_chains=args.ais_chains,
                    num_steps=args.ais_steps,
                    leapfrog_steps=args.ais_leapfrog,
                    seed=seed,
                    proposal_scale=args.proposal_scale,
                )
                summary = ais_summary(ais, is_log_px[: args.ais_items])
                row["ais"] = {**summary, "items": args.ais_items, "seconds": time.time() - started}
            print(json.dumps(row), flush=True)
            results["rows"].append(row)
        table = compare_held_out(elpds)
        diff = {
            name: {
                "elpd": float(r["elpd_loo"]),
                "se": float(r["se"]),
                "elpd_diff": float(r["elpd_diff"]),
                "dse": float(r["dse"]),
            }
            for name, r in table.iterrows()
        }
        print(json.dumps({"seed": seed, "compare": diff}), flush=True)
        results["comparisons"].append({"seed": seed, "compare": diff})
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                results,
                indent=2,
                default=lambda v: None if isinstance(v, float) and not math.isfinite(v) else str(v),
            )
        )


if __name__ == "__main__":
    main()
