"""``pssl demo``: a small comparison on embedded data, in about five minutes on two CPU cores.

It trains SimVAE, the plain VAE, SimCLR and VicREG on scikit-learn's digits and
on ``styled-digits`` (the same digits drawn light on a dark coloured canvas at a
random position and scale, with those style factors recorded), next to the
baselines of :mod:`pssl.baselines` (raw pixels, PCA, a random encoder and the
same encoder trained with labels), evaluates content (linear, MLP and kNN
probes, GMM clustering) and how well each representation predicts the style
factors, and writes one table per data set with content and style for every
method. ``seeds=0,1,2`` gives means with 95% intervals.

It then prints the claims it can read at its own budget (C1, C2 on ``digits``,
C3 on ``styled-digits``; :func:`demo_claims`) with the verdict rule of ``pssl
claims`` and a one-line caveat: the demo has no grid, few epochs and by default
one seed (no interval, so every verdict is inconclusive), and the caveat names
every run whose validation curve was still moving in its last quarter of epochs
(its readings, style included, may be artefacts of the budget). ``pssl claims
budget=cpu`` is the experiment behind the README's results.

Settings: an MLP narrower than the reference (512-256, for 8x8 inputs), the
reference latent size 10 and J = 2, and a learning rate suited to the tiny data
set; any training override (e.g. ``epochs=5``) applies to all runs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pssl.compare import run_compare

logger = logging.getLogger(__name__)

DEMO_MODELS = ("simvae", "vae", "simclr", "vicreg", "pixels", "pca", "random", "supervised")
DEMO_DATA = ("digits", "styled-digits")
DEMO_SETTINGS = [
    "encoder=mlp",
    "encoder.hidden=512,256",
    "decoder=mlp",
    "decoder.hidden=256,512",
    "latent_dim=10",
    "num_views=2",
    "batch_size=64",
    "epochs=20",
    "lr=1e-3",
    "adam_eps=1e-8",
    "seed=0",
]


def run_demo(overrides: list[str] | None = None, *, out: str | Path = "runs/demo") -> dict[str, Any]:
    """Run the demo comparisons; ``overrides`` (``key=value``) apply to every run.

    Returns:
        Per data set, what :func:`pssl.compare.run_compare` returned.
    """
    overrides = list(overrides or [])
    out_dir = Path(out)
    models = ",".join(DEMO_MODELS)
    passed: list[str] = []
    for token in overrides:
        key = token.partition("=")[0]
        if key == "out":
            out_dir = Path(token.partition("=")[2])
        elif key == "models":
            models = token.partition("=")[2]
        else:
            passed.append(token)
    results: dict[str, Any] = {}
    for data in DEMO_DATA:
        logger.info("== %s: %s ==", data, models)
        tokens = [f"models={models}", f"data={data}", f"out={out_dir / data}", *DEMO_SETTINGS, *passed]
        results[data] = run_compare(tokens)
    return results


def demo_claims(results: dict[str, Any]) -> tuple[str, str]:
    """The claims table of a demo's results and its one-line caveat.

    Returns:
        ``(markdown table, caveat)``.
    """
    from pssl.claims.compare_rows import claims_from_rows, still_moving
    from pssl.claims.report import markdown_table

    content, styled = DEMO_DATA
    rows = claims_from_rows(results[content]["rows"], content, results[styled]["rows"], styled)
    seeds = sorted({int(r["seed"]) for r in results[content]["rows"]})
    moving = {}
    for data in DEMO_DATA:
        moving.update({f"{data}/{k}": v for k, v in still_moving(results[data]["rows"]).items()})
    epochs = next((t.split("=", 1)[1] for t in DEMO_SETTINGS if t.startswith("epochs=")), "?")
    caveat = (
        f"caveat: demo budget ({epochs} epochs unless overridden, seeds {','.join(map(str, seeds))}, no grid"
        + ("; one seed has no interval, so every verdict is inconclusive" if len(seeds) < 2 else "")
        + "; validation curves still moving in the last quarter: "
        + (", ".join(f"{k} ({v[2]:.0%})" for k, v in sorted(moving.items())) or "none")
        + "); the experiment is `pssl claims budget=cpu`"
    )
    return markdown_table(rows), caveat
