r"""Clustering the embedded digits: SimVAE's ``gmm`` prior against a Gaussian prior + post-hoc GMM.

Two SimVAEs are trained with the same budget and seeds, then scored on the test
split by Hungarian-matched accuracy and NMI against the ten digit classes:

* ``gaussian``: ``prior=gaussian`` (exact conjugate y-guide), ``objective=trace``;
  clusters from the ``cluster`` probe, a 10-component full-covariance Gaussian
  mixture fitted afterwards on the standardised training features (``post-hoc``).
* ``gmm``: ``prior=gmm prior.components=10`` (amortised y-guide),
  ``objective=traceenum``; clusters are the model's own, ``argmax_c p(c | x)``
  (``model_cluster``); the post-hoc mixture on its features is printed too.

Budget (defaults): the demo's networks (MLP 512-256 / 256-512), latent 10,
J = 2 views, 64 items per step, 30 epochs of the 1,293 training digits, Adam
lr 1e-3, seeds 1, 2, 3 (seed 0 was used to choose the gmm prior's initial
spread, on the validation split). Each figure is the mean over seeds with a
95% Student-t interval.

Usage::

    python benchmarks/gmm_clustering.py --json gmm_clustering.json
"""

from __future__ import annotations

import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import header, parser, set_threads, table, write_json
from pssl.config import Component, Config
from pssl.evaluation import evaluate_content
from pssl.inference.train import train

CASES = {
    "gaussian": {"prior": Component("gaussian"), "objective": Component("trace")},
    "gmm": {"prior": Component("gmm", {"components": 10}), "objective": Component("traceenum")},
}


def config(case: str, seed: int, epochs: int, out: Path) -> Config:
    return Config(
        model=Component("simvae"),
        data=Component("digits"),
        encoder=Component("mlp", {"hidden": "512,256"}),
        decoder=Component("mlp", {"hidden": "256,512"}),
        latent_dim=10,
        num_views=2,
        batch_size=64,
        epochs=epochs,
        lr=1e-3,
        adam_eps=1e-8,
        seed=seed,
        device="cpu",
        out=str(out / f"{case}-seed{seed}"),
        progress=False,
        **CASES[case],
    )


def run(case: str, seed: int, epochs: int, out: Path) -> dict[str, float]:
    start = time.perf_counter()
    result = train(config(case, seed, epochs, out))
    seconds = time.perf_counter() - start
    content = evaluate_content(result.model, result.data, seed=seed, probes=("cluster",))
    row = {
        "posthoc_accuracy": content["cluster"]["accuracy"],
        "posthoc_nmi": content["cluster"]["nmi"],
        "train_seconds": seconds,
    }
    if "model_cluster" in content:
        row["own_accuracy"] = content["model_cluster"]["accuracy"]
        row["own_nmi"] = content["model_cluster"]["nmi"]
        row["own_clusters_used"] = content["model_cluster"]["clusters_used"]
    return row


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% Student-t interval (nan for one value)."""
    from scipy.stats import t

    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, float(t.ppf(0.975, len(values) - 1)) * statistics.stdev(values) / math.sqrt(len(values))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args_parser = parser(__doc__.splitlines()[0])
    args_parser.add_argument("--epochs", type=int, default=30)
    args_parser.add_argument("--seeds", type=str, default="1,2,3")
    args_parser.add_argument(
        "--out", type=Path, default=None, help="run directories (default: a temporary one)"
    )
    args = args_parser.parse_args(argv)
    threads = set_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    inputs = {
        "data": "digits (embedded; 1,293 train / 144 validation / 360 test items)",
        "networks": "MLP encoder 512-256, decoder 256-512, latent 10",
        "views": 2,
        "batch_items": 64,
        "epochs": args.epochs,
        "lr": 1e-3,
        "seeds": seeds,
        "threads": threads,
    }
    header("gmm prior (own clusters) vs Gaussian prior + post-hoc GMM, digits", inputs)
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch)
        rows = {case: {seed: run(case, seed, args.epochs, out) for seed in seeds} for case in CASES}
    lines = []
    summary: dict[str, Any] = {}
    for label, case, key in (
        ("gaussian prior + post-hoc GMM", "gaussian", "posthoc"),
        ("gmm prior, own clusters argmax_c p(c|x)", "gmm", "own"),
        ("gmm prior + post-hoc GMM", "gmm", "posthoc"),
    ):
        accuracy = [rows[case][s][f"{key}_accuracy"] for s in seeds]
        nmi = [rows[case][s][f"{key}_nmi"] for s in seeds]
        (acc_mean, acc_half), (nmi_mean, nmi_half) = interval(accuracy), interval(nmi)
        summary[f"{case}/{key}"] = {"accuracy": accuracy, "nmi": nmi}
        lines.append(
            {
                "clusters": label,
                "accuracy (95% CI)": f"{acc_mean:.3f} ± {acc_half:.3f}",
                "NMI (95% CI)": f"{nmi_mean:.3f} ± {nmi_half:.3f}",
                "accuracy per seed": " ".join(f"{a:.3f}" for a in accuracy),
            }
        )
    print(table(lines, ["clusters", "accuracy (95% CI)", "NMI (95% CI)", "accuracy per seed"]))
    used = [rows["gmm"][s]["own_clusters_used"] for s in seeds]
    seconds = {case: statistics.fmean(rows[case][s]["train_seconds"] for s in seeds) for case in CASES}
    print(f"gmm clusters used (of 10) per seed: {used}")
    print(
        "mean training seconds per run (machine shared, indicative only): "
        + ", ".join(f"{case} {value:.0f}" for case, value in seconds.items())
    )
    report = {
        "rows": {case: {str(s): r for s, r in by_seed.items()} for case, by_seed in rows.items()},
        "summary": summary,
    }
    write_json(args.json, "gmm_clustering", inputs, report)
    return report


if __name__ == "__main__":
    main()
