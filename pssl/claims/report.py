"""The claims report: the table (markdown, CSV, JSON) and its figures (PNG).

Files written into the claims folder:

* ``claims.md``: the table, the verdict rule, the grid and how it was selected
  (fairness), the selected points, the plateau of every selected run, how the
  difference of each claim that does not hold moves with budget, wall time and
  load, and the figures;
* ``claims.csv``: one row per comparison (per-seed values in JSON columns);
* ``claims.json``: the rows, budget curves, plateau table and run metadata;
* ``claims.png``: per claim, the paired difference of each comparison with its
  95% interval, coloured by verdict;
* ``content_style.png``: content accuracy vs style score of every method on the
  styled set (seed means with 95% intervals);
* ``validation_curves.png``: every selected run's per-epoch validation
  objective, rescaled to [0, 1] per run, with the plateau epoch marked;
* ``budget.png``: the paired difference against epochs for rows that do not hold.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pssl.claims.budgets import KNOBS
from pssl.claims.measures import PLATEAU_BAND
from pssl.claims.verdicts import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, NOT_RUN, RULE
from pssl.rundir import save_figure, write_csv, write_json, write_text

VERDICT_COLOURS = {HOLDS: "tab:green", DOES_NOT_HOLD: "tab:red", INCONCLUSIVE: "tab:grey", NOT_RUN: "white"}

CSV_COLUMNS = (
    "claim",
    "data",
    "measure",
    "method",
    "method_mean",
    "method_half_width",
    "comparator",
    "comparator_mean",
    "comparator_half_width",
    "difference_mean",
    "difference_low",
    "difference_high",
    "n",
    "verdict",
    "method_values",
    "comparator_values",
)


def _number(value: Any, digits: int = 3) -> str:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}f}"


def _cell(row: dict[str, Any], side: str) -> str:
    mean, half = row.get(f"{side}_mean"), row.get(f"{side}_half_width")
    if mean is None or not math.isfinite(mean):
        return "-"
    if half is None or not math.isfinite(half):
        return _number(mean)
    return f"{_number(mean)} ± {_number(half)}"


def difference_cell(row: dict[str, Any]) -> str:
    """``+0.012 [+0.004, +0.020] (n=3)``; no interval for fewer than two seeds."""
    mean = row.get("difference_mean")
    if mean is None or not math.isfinite(mean):
        return "-"
    low, high = row.get("difference_low"), row.get("difference_high")
    if low is None or not math.isfinite(low):
        return f"{mean:+.3f} (n={row['n']})"
    return f"{mean:+.3f} [{low:+.3f}, {high:+.3f}] (n={row['n']})"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """claim | data | measure | method | comparator | paired difference [95% CI] | verdict."""
    lines = [
        "| claim | data | measure | method (mean ± 95%) | comparator (mean ± 95%) "
        "| paired difference [95% interval] | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        measure = row["measure"] + (" (lower is better)" if row["sign"] < 0 else "")
        lines.append(
            f"| {row['claim']} | {row['data']} | {measure} | {row['method']}: {_cell(row, 'method')} "
            f"| {row['comparator']}: {_cell(row, 'comparator')} | {difference_cell(row)} | {row['verdict']} |"
        )
    return "\n".join(lines)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def claims_figure(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Per claim, one horizontal bar per comparison: the mean paired difference and its 95% interval."""
    shown = [r for r in rows if r["verdict"] != NOT_RUN and r.get("n", 0) > 0]
    if not shown:
        return None
    plt = _pyplot()
    claims = sorted({r["claim"] for r in shown})
    heights = [sum(r["claim"] == c for r in shown) for c in claims]
    fig, axes = plt.subplots(
        len(claims),
        1,
        figsize=(7.0, 0.9 + 0.32 * sum(heights) + 0.5 * len(claims)),
        squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )
    for ax, claim in zip(axes[:, 0], claims):
        part = [r for r in shown if r["claim"] == claim]
        labels = [f"{r['data']}: {r['method']} vs {r['comparator']}" for r in part]
        means = [r["difference_mean"] for r in part]
        errors = [
            0.0
            if not math.isfinite(r.get("difference_high", math.nan))
            else r["difference_high"] - r["difference_mean"]
            for r in part
        ]
        colours = [VERDICT_COLOURS[r["verdict"]] for r in part]
        ys = list(range(len(part)))
        ax.barh(ys, means, xerr=errors, color=colours, capsize=3)
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_yticks(ys)
        ax.set_yticklabels(labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(
            f"{claim}: paired difference (positive supports the claim), {part[0]['measure']}", fontsize=8
        )
        ax.tick_params(axis="x", labelsize=7)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for v, c in VERDICT_COLOURS.items() if v != NOT_RUN]
    fig.legend(handles, [v for v in VERDICT_COLOURS if v != NOT_RUN], loc="lower right", fontsize=7)
    fig.tight_layout()
    try:
        save_figure(fig, path, dpi=110)
    finally:
        plt.close(fig)
    return path


def content_style_figure(
    points: dict[str, dict[str, tuple[float, float]]], data: str, path: Path
) -> Path | None:
    """Content accuracy (x) vs style score (y) per method on the styled set, 95% intervals as error bars."""
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 3.6))
    for label, values in points.items():
        (cx, chalf), (sy, shalf) = values["content"], values["style"]
        if not (math.isfinite(cx) and math.isfinite(sy)):
            continue
        ax.errorbar(
            cx,
            sy,
            xerr=0.0 if not math.isfinite(chalf) else chalf,
            yerr=0.0 if not math.isfinite(shalf) else shalf,
            fmt="o",
            capsize=3,
            label=label,
        )
    ax.set_xlabel("content: linear-probe test accuracy", fontsize=8)
    ax.set_ylabel("style: mean linear-probe score over factors", fontsize=8)
    ax.set_title(f"content vs style on {data}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    try:
        save_figure(fig, path, dpi=110)
    finally:
        plt.close(fig)
    return path


def validation_figure(plateau: list[dict[str, Any]], path: Path) -> Path | None:
    """Per data set, each method's validation objective per epoch (first seed, scaled), plateau marked."""
    if not plateau:
        return None
    plt = _pyplot()
    datas = sorted({r["data"] for r in plateau})
    fig, axes = plt.subplots(1, len(datas), figsize=(3.6 * len(datas), 3.0), squeeze=False)
    for ax, data in zip(axes[0], datas):
        for row in [r for r in plateau if r["data"] == data]:
            seed, curve = next(iter(row["curves"].items()))
            finite = [v for v in curve if math.isfinite(v)]
            if not finite:
                continue
            low, high = min(finite), max(finite)
            scaled = [(v - low) / (high - low) if high > low else 1.0 for v in curve]
            line = ax.plot(range(1, len(curve) + 1), scaled, label=row["method"])[0]
            epoch = row["plateau_epochs"].get(seed)
            if epoch:
                ax.plot([epoch], [scaled[epoch - 1]], "o", color=line.get_color())
        ax.set_title(f"{data}: validation objective (seed 0, scaled)", fontsize=8)
        ax.set_xlabel("epoch", fontsize=8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    try:
        save_figure(fig, path, dpi=110)
    finally:
        plt.close(fig)
    return path


def budget_figure(curves: dict[str, list[dict[str, Any]]], path: Path) -> Path | None:
    """The paired difference against training epochs for every row that does not hold."""
    curves = {k: v for k, v in curves.items() if len(v) > 1}
    if not curves:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for key, curve in curves.items():
        xs = [c["epochs"] for c in curve]
        means = [c.get("difference_mean", math.nan) for c in curve]
        errors = [
            0.0
            if not math.isfinite(c.get("difference_high", math.nan))
            else c["difference_high"] - c["difference_mean"]
            for c in curve
        ]
        ax.errorbar(xs, means, yerr=errors, marker="o", capsize=2, label=key)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel("epochs trained", fontsize=8)
    ax.set_ylabel("paired difference (positive supports)", fontsize=8)
    ax.legend(fontsize=5)
    ax.set_title("rows that do not hold: paired difference vs epochs trained", fontsize=8)
    fig.tight_layout()
    try:
        save_figure(fig, path, dpi=110)
    finally:
        plt.close(fig)
    return path


def _content_style_points(
    plan: Any, rows: list[dict[str, Any]], selected: dict[Any, Any]
) -> dict[str, dict[str, tuple[float, float]]]:
    """Per method (and head output) on the styled set: (mean, half-width) of content and style."""
    from pssl.claims.measures import MeasureReader
    from pssl.claims.run import side_values
    from pssl.claims.verdicts import mean_interval

    data = plan.budget.styled_data.name
    reader = MeasureReader(root=plan.out, cache=plan.out / "measures")

    points: dict[str, dict[str, tuple[float, float]]] = {}
    for method in plan.budget.methods_of(data):
        for representation in ("backbone", "projection"):
            if representation == "projection" and not any(
                r["method"] == method and r["comparator"] == f"{method} (projection)" for r in rows
            ):
                continue
            label = method if representation == "backbone" else f"{method} (head output)"
            entry = {}
            for measure in ("content", "style"):
                values = side_values(plan, reader, selected, data, method, representation, measure)
                mean, half, _ = mean_interval(list(values.values()))
                entry[measure] = (mean, half)
            points[label] = entry
    return points


def write_plan(plan: Any, state: Any) -> Path:
    """``plan.json``: every run a dry run would train, with its resolved configuration."""
    path = plan.out / "plan.json"
    write_json(path, {"budget": plan.budget.name, "runs": state.planned})
    return path


def grid_text(meta: dict[str, Any]) -> list[str]:
    budget = meta["budget"]
    lines = [
        f"- learning rates: {', '.join(f'{x:g}' for x in budget['learning_rates'])}; "
        f"design: {budget['grid']} (default point first)",
    ]
    for method, points in meta["grids"].items():
        lines.append(f"- {method} ({KNOBS[method]}): {', '.join(points)}")
    return lines


def write_report(
    plan: Any,
    rows: list[dict[str, Any]],
    curves: dict[str, list[dict[str, Any]]],
    plateau: list[dict[str, Any]],
    meta: dict[str, Any],
    selected: dict[Any, Any],
) -> dict[str, Any]:
    """Write ``claims.md``, ``claims.csv``, ``claims.json`` and the figures; return paths and the table."""
    out = plan.out
    table = markdown_table(rows)
    write_csv(
        out / "claims.csv",
        [
            {k: (json.dumps(row.get(k)) if k.endswith("_values") else row.get(k, "")) for k in CSV_COLUMNS}
            for row in rows
        ],
    )
    write_json(
        out / "claims.json", {"rule": RULE, "rows": rows, "budget_curves": curves, "plateau": plateau, **meta}
    )
    figures = [
        claims_figure(rows, out / "claims.png"),
        content_style_figure(
            _content_style_points(plan, rows, selected),
            plan.budget.styled_data.name,
            out / "content_style.png",
        ),
        validation_figure(plateau, out / "validation_curves.png"),
        budget_figure(curves, out / "budget.png"),
    ]
    budget = meta["budget"]
    left_out = [m for m in KNOBS if m not in budget["methods"]]
    lines = [
        f"# Claims at the {budget['name']} budget",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"Wall time of this invocation: {meta['seconds'] / 60:.1f} min; "
        f"training epochs of all runs in the folder: "
        f"{meta['training_seconds_all_runs'] / 60:.1f} min; load average (1/5/15 min) at start "
        f"{'/'.join(f'{x:.1f}' for x in meta['load_average_start'])}, at end "
        f"{'/'.join(f'{x:.1f}' for x in meta['load_average_end'])} on {meta['cpu_count']} CPUs; "
        f"runs this time: {', '.join(f'{v} {k}' for k, v in sorted(meta['actions'].items())) or 'none'}.",
        "",
        table,
        "",
        f"Verdict rule: {RULE}. Seeds: {', '.join(map(str, budget['seeds']))}.",
        "",
        "## Grid and selection (the same for every method)",
        "",
        f"Every method gets the same grid: the learning rate and its main knob. Each point is trained at "
        f"seed {budget['selection_seed']} and the point with the highest validation content accuracy (linear "
        "probe, validation split carved from the training items) is selected; only that point is run at the "
        "other seeds and read on the test split, once. Nothing is tuned outside the grid.",
        "",
        *grid_text(meta),
        "",
        f"Settings of every run: {' '.join(budget['settings']) or '(the recipes)'}; "
        f"epochs {budget['epochs']}; "
        "data: "
        + "; ".join(
            f"{d['name']} {' '.join(d['tokens'])}" + (f" epochs={d['epochs']}" if d.get("epochs") else "")
            for d in [*budget["content_data"], budget["styled_data"]]
        )
        + ".",
        "",
        "| data / method | selected | validation accuracy per point |",
        "|---|---|---|",
    ]
    for key, label in meta["selected"].items():
        scores = meta["validation"].get(key, {})
        lines.append(
            f"| {key} | {label} | " + ", ".join(f"{p} {_number(v)}" for p, v in scores.items()) + " |"
        )
    lines += [
        "",
        "Methods left out: "
        + "; ".join(f"{m}: {why}" for m, why in meta["skipped_methods"].items())
        + "."
        + (f" Not trained at this budget (time): {', '.join(left_out)}." if left_out else ""),
        "",
        "## Trained to the plateau",
        "",
        "Plateau epoch: the first epoch after which the validation objective (per-epoch log, `epochs.csv`) "
        f"stays within {PLATEAU_BAND:.0%} of its range of its final value; last-quarter change: how much the "
        "last quarter of the epochs still moved it, as a share of its range (largest over seeds).",
        "",
        "| data | method | point | plateau epoch per seed | last-quarter change |",
        "|---|---|---|---|---|",
    ]
    for row in plateau:
        epochs = ", ".join(f"{e if e is not None else '-'}" for e in row["plateau_epochs"].values())
        lines.append(
            f"| {row['data']} | {row['method']} | {row['point']} | {epochs} (of {row['epochs']}) "
            f"| {_number(100 * row['last_quarter_change'], 1)}% |"
        )
    if curves:
        lines += ["", "## Budget: how the difference moves with training", ""]
        lines += [
            "Rows that do not hold, read again at earlier checkpoints of the same runs (same seeds, "
            "earlier weights; the last entry is the table's row).",
            "",
            "| comparison | epochs trained: paired difference [95% interval] |",
            "|---|---|",
        ]
        for key, curve in curves.items():
            cells = "; ".join(f"{c['epochs']:g}: {difference_cell(c)}" for c in curve)
            lines.append(f"| {key} | {cells} |")
    if meta["failures"]:
        lines += ["", "Failed runs (their rows are inconclusive or missing):", ""]
        lines += [f"- {name}: {error}" for name, error in meta["failures"].items()]
    lines += ["", "## Figures", ""]
    lines += [f"![{f.stem}]({f.name})" for f in figures if f is not None]
    report = out / "claims.md"
    write_text(report, "\n".join(lines) + "\n")
    return {
        "rows": rows,
        "table": table,
        "report": report,
        "csv": out / "claims.csv",
        "json": out / "claims.json",
        "figures": [f for f in figures if f is not None],
        "curves": curves,
        "plateau": plateau,
        "meta": meta,
    }


__all__ = [
    "budget_figure",
    "claims_figure",
    "content_style_figure",
    "difference_cell",
    "markdown_table",
    "validation_figure",
    "write_plan",
    "write_report",
]
