"""``pssl claims``: run the grid of a budget, select, test over seeds, and compute the claims table.

Every run goes through the comparison layer (:func:`pssl.compare.run_pair`), so
its identity is compare's: ``OUT/<data>/<method>/<grid point>/<method>-seed<s>``
plus the resolved configuration. A finished run is reused, an interrupted one
resumes from its checkpoint, and an interrupted or split grid (``data=mnist``
first, the rest later) continues where it stopped.

Order of work, per data set and method:

1. every grid point (:func:`pssl.claims.budgets.grid_points`) at the selection
   seed; the point with the highest validation content accuracy (linear probe on
   the validation split carved from the training items) is selected, the first
   in grid order on ties;
2. the selected point at every test seed (the selection seed's run is reused);
3. the claims table (:mod:`pssl.claims.comparisons`, :mod:`pssl.claims.verdicts`)
   from the test runs; for every row that does not hold, the same difference at
   earlier checkpoints of the same runs (:attr:`pssl.claims.budgets.Budget.curve_fractions`:
   1/4 and 1/2 of the epochs), so a reader sees whether budget or method decides;
4. the report (:mod:`pssl.claims.report`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pssl.claims.budgets import (
    SKIPPED_METHODS,
    Budget,
    DataSetting,
    GridPoint,
    checkpoint_tokens,
    get_budget,
    grid_points,
    with_seeds,
)
from pssl.claims.comparisons import CLAIM_TEXT, MEASURES, Comparison, comparisons
from pssl.claims.measures import (
    MeasureReader,
    checkpoint_fractions,
    last_quarter_change,
    metric_value,
    plateau_epoch,
    validation_curve,
)
from pssl.claims.verdicts import DOES_NOT_HOLD, NOT_RUN, mean_interval, paired_difference, verdict
from pssl.compare import ComparePlan, check_plan, one_line_error, resolve_out, run_pair
from pssl.config import Config, ConfigError

logger = logging.getLogger(__name__)

PROBES = ("linear",)
"""Content probes of every claims run: the linear probe selects and measures content."""


@dataclass
class ClaimsPlan:
    """What ``pssl claims`` was asked to do.

    Attributes:
        budget: the budget (with the seeds asked for).
        out: the claims folder (absolute).
        data: the data sets to train now (all of the budget's by default); the
            table reads whatever runs exist.
        dry_run: check and list every run without training.
    """

    budget: Budget
    out: Path
    data: tuple[str, ...]
    dry_run: bool = False


def parse_claims(tokens: list[str]) -> ClaimsPlan:
    """Read ``budget=NAME out=DIR [seeds=0,1,2] [data=a,b] [dry_run=true]``.

    Raises:
        ConfigError: for a missing or unknown budget, a missing out, bad seeds,
            a data set the budget does not use, or an unknown key.
    """
    budget: Budget | None = None
    out: Path | None = None
    seeds: tuple[int, ...] | None = None
    data: tuple[str, ...] | None = None
    dry_run = False
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep:
            raise ConfigError(
                f"malformed argument {token!r}: expected key=value (budget=, out=, seeds=, data=)"
            )
        if key == "budget":
            budget = get_budget(value)
        elif key == "out":
            if not value:
                raise ConfigError("out= needs a folder")
            out = Path(value)
        elif key == "seeds":
            try:
                seeds = tuple(int(s) for s in value.split(",") if s.strip())
            except ValueError:
                raise ConfigError(f"seeds must be comma-separated integers, got {value!r}") from None
        elif key == "data":
            data = tuple(d.strip() for d in value.split(",") if d.strip())
        elif key == "dry_run":
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ConfigError(f"dry_run must be true or false, got {value!r}")
            dry_run = value.lower() in ("true", "1", "yes")
        else:
            raise ConfigError(f"unknown claims argument {key!r}; accepted: budget, out, seeds, data, dry_run")
    if budget is None:
        raise ConfigError("claims needs budget=smoke|cpu|paper")
    if out is None:
        raise ConfigError("claims needs out=DIR (where runs and the claims table are written)")
    if seeds is not None:
        budget = with_seeds(budget, seeds)
    names = tuple(d.name for d in budget.data_sets())
    if data is None:
        data = names
    unknown = [d for d in data if d not in names]
    if unknown:
        raise ConfigError(
            f"data={','.join(unknown)} is not used by budget {budget.name!r}; accepted: {', '.join(names)}"
        )
    return ClaimsPlan(budget=budget, out=resolve_out(out), data=data, dry_run=dry_run)


# --------------------------------------------------------------------------- run identity


@dataclass
class _Steps:
    """Training steps per epoch of each data set (for evenly spaced checkpoints), computed once."""

    known: dict[str, int | None] = field(default_factory=dict)

    def of(self, config: Config, *, load: bool) -> int | None:
        key = f"{config.data.name}:{sorted(config.data.options.items())}:{config.batch_size}"
        if key not in self.known:
            if not load:
                return None
            from pssl.datasets import DataNotFoundError, load_dataset

            try:
                count = len(load_dataset(config.data.name, dict(config.data.options), seed=0).train)
            except DataNotFoundError:
                return None
            self.known[key] = count // min(config.batch_size, count)
        return self.known[key]


def point_folder(plan: ClaimsPlan, data: str, method: str, point: GridPoint) -> Path:
    """``OUT/<data>/<method>/<grid point>``: the comparison folder of one grid point."""
    return plan.out / data / method / point.label


def compare_plan(
    plan: ClaimsPlan, data: DataSetting, method: str, point: GridPoint, seed: int, steps: _Steps
) -> ComparePlan:
    """The one-pair comparison that trains ``method`` at ``point`` on ``data`` with ``seed``."""
    from pssl.recipes import config_from_tokens

    budget = plan.budget
    tokens = [
        "progress=false",
        *[t for t in data.tokens if t.startswith("recipe=")],
        *budget.settings,
        f"data={data.name}",
        *[t for t in data.tokens if not t.startswith("recipe=")],
        f"epochs={budget.epochs_of(data.name)}",
        f"device={budget.device}",
        f"model={method}",  # before the knob, so model.OPTION lands on this method
        *point.tokens(),
    ]
    config = config_from_tokens(tokens)
    per_epoch = steps.of(config, load=not plan.dry_run)
    if per_epoch is not None:
        spacing = checkpoint_tokens(budget, per_epoch, budget.epochs_of(data.name))
        config = config_from_tokens([*tokens, *spacing])
    compare = ComparePlan(
        models=(method,),
        seeds=(seed,),
        base=config,
        out=point_folder(plan, data.name, method, point),
        probes=PROBES,
        augmentation_style=False,
    )
    check_plan(compare)
    return compare


def run_dir_of(plan: ClaimsPlan, data: str, method: str, point: GridPoint, seed: int) -> Path:
    return point_folder(plan, data, method, point) / f"{method}-seed{seed}"


# --------------------------------------------------------------------------- the grid


@dataclass
class GridState:
    """What the grid produced: selected points, validation scores, actions and failures."""

    selected: dict[tuple[str, str], GridPoint] = field(default_factory=dict)
    validation: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    actions: dict[str, int] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    planned: list[dict[str, Any]] = field(default_factory=list)


def _pair(
    plan: ClaimsPlan, compare: ComparePlan, method: str, seed: int, state: GridState
) -> dict[str, Any] | None:
    name = f"{compare.out.relative_to(plan.out)}/{method}-seed{seed}"
    state.planned.append({"run": name, "config": compare.base.to_dict()})
    if plan.dry_run:
        return None
    logger.info("[claims] %s ...", name)
    started = time.perf_counter()
    try:
        metrics, action = run_pair(compare, method, seed)
    except KeyboardInterrupt:
        raise
    except Exception as err:  # one failed run must not lose the grid
        state.failures[name] = one_line_error(err)
        logger.error("[claims] %s failed: %s", name, state.failures[name])
        return None
    state.actions[action] = state.actions.get(action, 0) + 1
    logger.info("[claims] %s: %s (%.0f s)", name, action, time.perf_counter() - started)
    return metrics


def run_grid(plan: ClaimsPlan) -> GridState:
    """Selection runs, then the selected point at every test seed, for every chosen data set and method."""
    budget, state, steps = plan.budget, GridState(), _Steps()
    for data in budget.data_sets():
        if data.name not in plan.data:
            continue
        for method in budget.methods_of(data.name):
            points = grid_points(budget, method)
            scores: dict[str, float] = {}
            for point in points:
                compare = compare_plan(plan, data, method, point, budget.selection_seed, steps)
                metrics = _pair(plan, compare, method, budget.selection_seed, state)
                scores[point.label] = metric_value(metrics, "content", split="val") if metrics else math.nan
            state.validation[(data.name, method)] = scores
            finite = [(s, i) for i, p in enumerate(points) if math.isfinite(s := scores[p.label])]
            if plan.dry_run:
                chosen = points[0]  # the plan lists the test seeds at the default point
            elif not finite:
                continue
            else:
                best = max(s for s, _ in finite)
                chosen = points[min(i for s, i in finite if s == best)]
            state.selected[(data.name, method)] = chosen
            for seed in budget.seeds:
                if seed == budget.selection_seed:  # its run at the chosen point is the selection run
                    continue
                compare = compare_plan(plan, data, method, chosen, seed, steps)
                _pair(plan, compare, method, seed, state)
    return state


def selected_points(plan: ClaimsPlan, state: GridState) -> dict[tuple[str, str], GridPoint]:
    """The selected point of every (data, method), also for data sets trained by an earlier invocation.

    Selection is re-read from the selection runs' ``metrics.json`` (never stored
    separately), so a split grid selects exactly as an uninterrupted one.
    """
    from pssl.claims.measures import read_metrics

    budget = plan.budget
    selected = dict(state.selected)
    for data in budget.data_sets():
        for method in budget.methods_of(data.name):
            if (data.name, method) in selected:
                continue
            points = grid_points(budget, method)
            scores = {}
            for point in points:
                try:
                    metrics = read_metrics(run_dir_of(plan, data.name, method, point, budget.selection_seed))
                except (OSError, ValueError):
                    continue
                scores[point.label] = metric_value(metrics, "content", split="val")
            if len(scores) < len(points) or not any(math.isfinite(v) for v in scores.values()):
                continue  # selection not finished for this pair
            state.validation[(data.name, method)] = scores
            best = max(v for v in scores.values() if math.isfinite(v))
            selected[(data.name, method)] = next(p for p in points if scores[p.label] == best)
    return selected


# --------------------------------------------------------------------------- the table


def side_values(
    plan: ClaimsPlan,
    reader: MeasureReader,
    selected: dict[tuple[str, str], GridPoint],
    data: str,
    method: str,
    representation: str,
    measure: str,
    fraction: float | None = None,
) -> dict[int, float]:
    point = selected.get((data, method))
    if point is None:
        return {}
    values: dict[int, float] = {}
    for seed in plan.budget.seeds:
        run_dir = run_dir_of(plan, data, method, point, seed)
        if not (run_dir / "metrics.json").is_file():
            continue
        checkpoint = None
        if fraction is not None and fraction < 1:
            matches = [p for f, p in checkpoint_fractions(run_dir) if abs(f - fraction) < 1e-6]
            if not matches:
                continue
            checkpoint = matches[0]
        try:
            values[seed] = reader.value(
                run_dir, measure, representation=representation, checkpoint=checkpoint
            )
        except Exception as err:  # a measure that cannot be read leaves that seed out, said in the log
            logger.warning("[claims] %s of %s not read: %s", measure, run_dir, one_line_error(err))
    return values


def claim_row(
    plan: ClaimsPlan,
    reader: MeasureReader,
    selected: dict[tuple[str, str], GridPoint],
    comparison: Comparison,
    fraction: float | None = None,
) -> dict[str, Any]:
    """One row of the claims table: both sides per seed, the paired difference, its interval and verdict."""
    row: dict[str, Any] = {
        "claim": comparison.claim,
        "statement": CLAIM_TEXT[comparison.claim],
        "data": comparison.data,
        "measure": comparison.measure,
        "measure_text": MEASURES[comparison.measure],
        "method": comparison.method.label,
        "comparator": comparison.comparator.label,
        "sign": comparison.sign,
    }
    if not comparison.run:
        row.update(verdict=NOT_RUN, n=0)
        return row
    sides = {}
    for name, side in (("method", comparison.method), ("comparator", comparison.comparator)):
        sides[name] = side_values(
            plan,
            reader,
            selected,
            comparison.data,
            side.method,
            side.representation,
            comparison.measure,
            fraction,
        )
        mean, half, n = mean_interval(list(sides[name].values()))
        row[f"{name}_values"] = {str(k): v for k, v in sides[name].items()}
        row[f"{name}_mean"], row[f"{name}_half_width"], row[f"{name}_n"] = mean, half, n
    difference = paired_difference(sides["method"], sides["comparator"], sign=comparison.sign)
    row.update(
        difference_mean=difference.mean,
        difference_low=difference.low,
        difference_high=difference.high,
        differences=list(difference.differences),
        n=difference.n,
        verdict=verdict(difference),
    )
    return row


def budget_curve(
    plan: ClaimsPlan,
    reader: MeasureReader,
    selected: dict[tuple[str, str], GridPoint],
    comparison: Comparison,
) -> list[dict[str, Any]]:
    """The row's paired difference at every kept checkpoint fraction (the last is the table's row)."""
    fractions: set[float] = set()
    for side in (comparison.method, comparison.comparator):
        point = selected.get((comparison.data, side.method))
        if point is None:
            return []
        run_dir = run_dir_of(plan, comparison.data, side.method, point, plan.budget.selection_seed)
        kept = {round(f, 6) for f, _ in checkpoint_fractions(run_dir)}
        fractions.update(
            f for f in kept if f >= 1 or any(abs(f - c) < 0.02 for c in plan.budget.curve_fractions)
        )
    curve = []
    for fraction in sorted(fractions):
        row = claim_row(plan, reader, selected, comparison, None if fraction >= 1 else fraction)
        epochs = fraction * plan.budget.epochs_of(comparison.data)
        curve.append({"fraction": fraction, "epochs": epochs, **row})
    return curve


def plateau_table(plan: ClaimsPlan, selected: dict[tuple[str, str], GridPoint]) -> list[dict[str, Any]]:
    """Per (data, method) at its selected point: each seed's plateau epoch and last-quarter change."""
    rows = []
    for (data, method), point in sorted(selected.items()):
        curves = {}
        for seed in plan.budget.seeds:
            curve = validation_curve(run_dir_of(plan, data, method, point, seed))
            if curve:
                curves[seed] = curve
        if not curves:
            continue
        rows.append(
            {
                "data": data,
                "method": method,
                "point": point.label,
                "epochs": plan.budget.epochs_of(data),
                "plateau_epochs": {str(s): plateau_epoch(c) for s, c in curves.items()},
                "last_quarter_change": max(last_quarter_change(c) for c in curves.values()),
                "curves": {str(s): c for s, c in curves.items()},
            }
        )
    return rows


def training_seconds(plan: ClaimsPlan) -> float:
    """Seconds spent in training epochs by every run below the claims folder (from ``epochs.csv``)."""
    import csv

    total = 0.0
    for path in plan.out.glob("*/*/*/*/epochs.csv"):
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                try:
                    total += float(row["seconds"])
                except (KeyError, TypeError, ValueError):
                    pass
    return total


OUTPUT_NAMES = (
    "claims.md",
    "claims.csv",
    "claims.json",
    "claims.png",
    "content_style.png",
    "validation_curves.png",
    "budget.png",
    "plan.json",
)


def _owned_by_claims(entry: Path) -> bool:
    from pssl.datasets import DATASETS

    if entry.is_dir():
        return entry.name in DATASETS.names() or entry.name == "measures"
    return entry.name in OUTPUT_NAMES


def run_claims(tokens: list[str]) -> dict[str, Any]:
    """``pssl claims`` from command-line tokens; returns the rows and the written paths."""
    from pssl.rundir import claim

    plan = parse_claims(tokens)
    with claim(plan.out, kind="claims", owns=_owned_by_claims):
        return _run_claimed(plan)


def _run_claimed(plan: ClaimsPlan) -> dict[str, Any]:
    from pssl.claims.report import write_plan, write_report

    started, load_start = time.perf_counter(), os.getloadavg()
    state = run_grid(plan)
    if plan.dry_run:
        path = write_plan(plan, state)
        return {"dry_run": True, "planned": state.planned, "plan": path, "rows": []}
    selected = selected_points(plan, state)
    reader = MeasureReader(root=plan.out, cache=plan.out / "measures")
    rows, curves = [], {}
    for comparison in comparisons(plan.budget):
        row = claim_row(plan, reader, selected, comparison)
        rows.append(row)
        if row["verdict"] == DOES_NOT_HOLD:  # budget or method? the same runs at earlier checkpoints
            key = f"{row['claim']} {row['data']} {row['method']} vs {row['comparator']}"
            curves[key] = budget_curve(plan, reader, selected, comparison)
    meta = {
        "budget": dataclasses.asdict(plan.budget),
        "command": "pssl claims " + " ".join(_command_tokens(plan)),
        "seconds": time.perf_counter() - started,
        "training_seconds_all_runs": training_seconds(plan),
        "load_average_start": list(load_start),
        "load_average_end": list(os.getloadavg()),
        "cpu_count": os.cpu_count(),
        "actions": state.actions,
        "failures": state.failures,
        "skipped_methods": SKIPPED_METHODS,
        "selected": {f"{d}/{m}": p.label for (d, m), p in sorted(selected.items())},
        "validation": {f"{d}/{m}": v for (d, m), v in sorted(state.validation.items())},
        "grids": {m: [p.label for p in grid_points(plan.budget, m)] for m in plan.budget.methods},
        "data_run_now": list(plan.data),
    }
    return write_report(plan, rows, curves, plateau_table(plan, selected), meta, selected)


def _command_tokens(plan: ClaimsPlan) -> list[str]:
    tokens = [
        f"budget={plan.budget.name}",
        f"out={plan.out}",
        f"seeds={','.join(map(str, plan.budget.seeds))}",
    ]
    if tuple(plan.data) != tuple(d.name for d in plan.budget.data_sets()):
        tokens.append(f"data={','.join(plan.data)}")
    return tokens


__all__ = [
    "OUTPUT_NAMES",
    "ClaimsPlan",
    "GridState",
    "budget_curve",
    "claim_row",
    "compare_plan",
    "parse_claims",
    "plateau_table",
    "run_claims",
    "run_grid",
]
