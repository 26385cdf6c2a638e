"""The claims read from the rows of ``pssl compare`` runs (what ``pssl demo`` prints).

The demo trains every method once per seed at its own settings (no grid), so
these rows use the same measures and the same verdict rule as ``pssl claims``
(:mod:`pssl.claims.verdicts`) but not its selection; C4 and C5 need measures
the comparison does not take at every seed and are left to ``pssl claims``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pssl.claims.comparisons import CLAIM_TEXT, MEASURES
from pssl.claims.measures import PLATEAU_BAND, last_quarter_change, plateau_epoch, validation_curve
from pssl.claims.verdicts import mean_interval, paired_difference, verdict

COLUMNS = {"content": "content.linear.accuracy", "style": "style.mean_linear"}


def _by_seed(rows: list[dict[str, Any]], model: str, column: str) -> dict[int, float]:
    values = {}
    for row in rows:
        value = row.get(column)
        if row.get("model") == model and isinstance(value, (int, float)) and math.isfinite(value):
            values[int(row["seed"])] = float(value)
    return values


def claims_from_rows(
    content_rows: list[dict[str, Any]], content_data: str, styled_rows: list[dict[str, Any]], styled_data: str
) -> list[dict[str, Any]]:
    """C1-C3 rows (same layout as :func:`pssl.claims.run.claim_row`) from compare rows of two data sets."""
    models = {r["model"] for r in content_rows} | {r["model"] for r in styled_rows}
    discriminative = [m for m in ("simclr", "moco", "vicreg", "barlow") if m in models]
    plans = [("C1", content_data, content_rows, "content", "simvae", "vae")]
    plans += [("C2", content_data, content_rows, "content", "simvae", m) for m in discriminative]
    plans += [("C3", styled_data, styled_rows, "style", "simvae", m) for m in discriminative]
    out = []
    for claim, data, rows, measure, method, comparator in plans:
        if method not in models or comparator not in models:
            continue
        sides = {name: _by_seed(rows, name, COLUMNS[measure]) for name in (method, comparator)}
        difference = paired_difference(sides[method], sides[comparator])
        row: dict[str, Any] = {
            "claim": claim,
            "statement": CLAIM_TEXT[claim],
            "data": data,
            "measure": measure,
            "measure_text": MEASURES[measure],
            "method": method,
            "comparator": comparator,
            "sign": 1,
            "difference_mean": difference.mean,
            "difference_low": difference.low,
            "difference_high": difference.high,
            "n": difference.n,
            "verdict": verdict(difference),
        }
        for side, name in (("method", method), ("comparator", comparator)):
            mean, half, n = mean_interval(list(sides[name].values()))
            row[f"{side}_mean"], row[f"{side}_half_width"], row[f"{side}_n"] = mean, half, n
        out.append(row)
    return out


def still_moving(rows: list[dict[str, Any]]) -> dict[str, tuple[int | None, int, float]]:
    """Runs whose validation objective still moved in its last quarter of epochs by more than the band.

    Returns:
        ``{run name: (plateau epoch, epochs, last-quarter change as a share of the curve's range)}``.
    """
    moving = {}
    for row in rows:
        run_dir = row.get("run_dir")
        if not run_dir:
            continue
        curve = validation_curve(Path(run_dir))
        if len(curve) < 2:
            continue
        change = last_quarter_change(curve)
        if math.isfinite(change) and change > PLATEAU_BAND:
            moving[Path(run_dir).name] = (plateau_epoch(curve), len(curve), change)
    return moving


__all__ = ["claims_from_rows", "still_moving"]
