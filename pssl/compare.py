"""``pssl compare``: train and evaluate several methods over several seeds, then report.

For every (model, seed) pair the run goes to ``OUT/<model>-seed<seed>``; a pair
whose ``metrics.json`` exists for the same configuration is reused, and an
interrupted pair resumes from its last checkpoint. A run directory is identified
by its resolved absolute path and its configuration (not the ``out`` recorded in
it), so a relative and an absolute ``out=`` for one folder, or a moved copy of a
comparison, are the same runs.

Models are registered methods or baselines (:mod:`pssl.baselines`: ``pixels``,
``pca``, ``random``, ``supervised``). Everything is checked before any training:
model, data set and component names and options, probe names and options,
duplicate models or seeds (refused). A pair that fails is reported by name with
its one-line error (and listed in ``results.md``); the other pairs continue.

The outputs are

* ``results.csv``: one row per run, every scalar metric flattened to a column;
* ``results.md``: a table per metric of the mean, a 95% interval and the number
  of seeds ``n`` (Student-t: ``mean +- t_{0.975, n-1} * sd / sqrt(n)``; no interval
  for one seed);
* ``report.md``: the tables and figures — bar charts of content and style scores,
  a 2-D embedding (PCA) of each method's test representations coloured by class and
  by each style factor, the reconstructions and prior samples of generative
  methods, and loss curves.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any

import torch

from pssl.config import OPTIONAL_COMPONENT_KEYS, Config, ConfigError, apply_overrides
from pssl.evaluation import CONTENT_PROBES, check_probes
from pssl.inference.checkpoint import list_checkpoints
from pssl.rundir import (
    claim,
    config_differences,
    holds_only_pssl_files,
    is_run_directory,
    read_run_config,
    save_figure,
    write_text,
)
from pssl.rundir import write_csv as _write_csv

logger = logging.getLogger(__name__)

OUTPUT_NAMES = (
    "results.csv",
    "results.md",
    "report.md",
    "content.png",
    "style.png",
    "embedding.png",
    "structure.json",
    "latent_structure.png",
)
"""The files ``pssl compare`` writes into its folder (besides one run directory per pair)."""


@dataclasses.dataclass
class ComparePlan:
    """What ``pssl compare`` was asked to do."""

    models: tuple[str, ...]
    seeds: tuple[int, ...]
    base: Config
    out: Path
    probes: tuple[str, ...] = CONTENT_PROBES
    augmentation_style: bool = True
    """Also read each view's augmentation parameters from its representation (costs a second evaluation)."""


def parse_compare(tokens: list[str]) -> ComparePlan:
    """Read ``models=a,b seeds=0,1 out=DIR`` plus any training overrides.

    Raises:
        ConfigError: for missing ``models``, malformed seeds, or bad overrides.
    """
    models: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (0,)
    probes = CONTENT_PROBES
    rest: list[str] = []
    out = Path("runs/compare")
    for token in tokens:
        key, _, value = token.partition("=")
        if key == "models":
            models = tuple(m.strip() for m in value.split(",") if m.strip())
        elif key == "seeds":
            try:
                seeds = tuple(int(s) for s in value.split(",") if s.strip())
            except ValueError:
                raise ConfigError(f"seeds must be comma-separated integers, got {value!r}") from None
        elif key == "probes":
            try:
                probes = check_probes(tuple(p.strip() for p in value.split(",") if p.strip()))
            except ValueError as err:
                raise ConfigError(
                    f"probes={value}: {err} (or leave probes= off for {','.join(CONTENT_PROBES)})"
                ) from None
        elif key == "out":
            if not value:
                raise ConfigError("out= needs a folder")
            out = Path(value)
        else:
            rest.append(token)
    if not models:
        raise ConfigError("compare needs models=NAME,NAME,... (see `pssl list` for the names)")
    if not seeds:
        raise ConfigError("compare needs at least one seed (seeds=0,1,2)")
    _refuse_duplicates("models", models)
    _refuse_duplicates("seeds", seeds)
    from pssl.recipes import config_from_tokens

    # recipe=NAME / config=PATH choose the base; progress bars off unless asked for
    base = config_from_tokens(["progress=false", *rest])
    plan = ComparePlan(models=models, seeds=seeds, base=base, out=resolve_out(out), probes=probes)
    check_plan(plan)
    return plan


def resolve_out(out: str | Path) -> Path:
    """The comparison folder as a resolved absolute path (``~`` expanded, links followed)."""
    return Path(out).expanduser().resolve()


def _refuse_duplicates(name: str, values: tuple[Any, ...]) -> None:
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise ConfigError(
            f"{name} lists {', '.join(repeated)} more than once; each (model, seed) pair is one run, "
            f"so a repeat would count one run twice (give each {name[:-1]} once)"
        )


def check_plan(plan: ComparePlan) -> None:
    """Check every option of every pair before any training.

    Model names (registered methods or baselines), model options, the data set and
    its options, every named component and its options, and the probes and their
    options: all are resolved here, so a typo fails in seconds, not after a pair
    has trained.

    Raises:
        ConfigError: naming the bad value and the accepted ones.
    """
    from pssl.augment import AUGMENTATIONS
    from pssl.baselines import BASELINES, is_baseline
    from pssl.datasets import DATASETS
    from pssl.evaluation import check_evaluation
    from pssl.models import LIKELIHOODS, MODELS, PRIORS, VIEW_PRIORS
    from pssl.networks import DECODERS, ENCODERS

    try:
        for name in plan.models:
            if is_baseline(name):
                if plan.base.model.options:
                    raise ConfigError(f"baseline {name!r} takes no model options")
                continue
            if name not in MODELS:
                accepted = ", ".join([*MODELS.names(), *BASELINES])
                raise ConfigError(f"unknown model {name!r}; accepted: {accepted}")
            MODELS.resolve_options(name, run_config(plan, name, plan.seeds[0]).model.options)
        DATASETS.resolve_options(plan.base.data.name, plan.base.data.options)
        registries = {
            "prior": PRIORS,
            "view_prior": VIEW_PRIORS,
            "likelihood": LIKELIHOODS,
            "encoder": ENCODERS,
            "decoder": DECODERS,
            "augment": AUGMENTATIONS,
        }
        for field, registry in registries.items():
            component = getattr(plan.base, field)
            # a component left to the data (options only, e.g. likelihood.scale=2) is checked
            # once the data set names it, when the run resolves its configuration
            if component is not None and component.name is not None:
                registry.resolve_options(component.name, component.options)
        check_evaluation(plan.probes)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        raise ConfigError(str(err)) from None


def run_config(plan: ComparePlan, model: str, seed: int) -> Config:
    config = apply_overrides(plan.base, {"model": model, "seed": str(seed)})
    return dataclasses.replace(config, out=str(plan.out / f"{model}-seed{seed}"))


def _same_config(run_dir: Path, config: Config) -> bool:
    """Whether ``run_dir`` records the run ``config`` describes (its identity: the resolved configuration)."""
    try:
        saved, _ = read_run_config(run_dir)
    except (OSError, ValueError):
        return False
    wanted = config.to_dict()
    for key in OPTIONAL_COMPONENT_KEYS:
        # a component left to the data with options only (likelihood.scale=2) is recorded under the
        # name the data chose; the data, and so its choice, is part of the identity already
        mine, theirs = wanted.get(key), saved.get(key)
        if isinstance(mine, dict) and mine.get("name") is None and isinstance(theirs, dict):
            wanted[key] = {**mine, "name": theirs.get("name")}
    return not config_differences(saved, wanted, ignore=("resume", "progress", "device", "out"))


def _owned_by_compare(entry: Path) -> bool:
    """Entries of a compare folder that pssl wrote: its outputs and the pairs' run directories."""
    if entry.is_dir():
        return is_run_directory(entry) or holds_only_pssl_files(entry)
    return entry.name in OUTPUT_NAMES


def run_pair(plan: ComparePlan, model: str, seed: int) -> tuple[dict[str, Any], str]:
    """Train and evaluate one pair, reusing or resuming earlier work. Returns (metrics, what was done)."""
    from pssl.baselines import is_baseline, run_baseline
    from pssl.experiment import finish_run, run_experiment
    from pssl.inference.runs import load_run

    config = run_config(plan, model, seed)
    run_dir = Path(config.out)
    metrics_file = run_dir / "metrics.json"
    if metrics_file.is_file() and _same_config(run_dir, config):
        metrics = json.loads(metrics_file.read_text())
        if metrics.get("training", {}).get("epochs") == config.epochs:
            return metrics, "reused"
    if is_baseline(model):
        return run_baseline(config, probes=plan.probes, augmentation_style=plan.augmentation_style), "built"
    if list_checkpoints(run_dir):
        if not _same_config(run_dir, config):
            raise ConfigError(
                f"{run_dir} holds a run with another configuration; choose another out= for this comparison"
            )
        try:
            with claim(run_dir, create=False):
                result = load_run(run_dir, device=config.device if config.device != "auto" else "cpu")
                if result.finished and result.config.epochs == config.epochs:
                    return finish_run(
                        result, probes=plan.probes, augmentation_style=plan.augmentation_style
                    ), "evaluated"
        except (ValueError, RuntimeError, OSError) as err:  # e.g. a damaged newest checkpoint: resume decides
            logger.info("%s: not evaluated as it is (%s); resuming it", run_dir, err)
        return run_experiment(
            dataclasses.replace(config, resume=True),
            probes=plan.probes,
            augmentation_style=plan.augmentation_style,
        ), "resumed"
    return run_experiment(config, probes=plan.probes, augmentation_style=plan.augmentation_style), "trained"


def flatten(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Scalar leaves of a nested metrics dict as ``a.b.c`` columns (hyperparameters left out)."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        if key in ("protocol", "selected", "settings", "final_terms_nats_per_item") and prefix.count(".") < 3:
            if key != "final_terms_nats_per_item":
                continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        elif isinstance(value, bool):
            continue
        elif isinstance(value, (int, float)) and value is not None:
            flat[name] = float(value)
    return flat


OBJECTIVE_PREFIX = "training.final_terms_nats_per_item."


def label_objective_columns(flat: dict[str, float], metrics: dict[str, Any]) -> dict[str, Any]:
    """Name each run's summed training objective by what it is, so no column mixes quantities.

    A bound on log p(x) stays ``..._elbo``; any other objective becomes
    ``..._objective[NAME]`` (``infonce``, ``tempered_elbo``, ...), one column per
    objective, and a run without a label (an older ``metrics.json``) gets
    ``..._objective[unlabelled]``. The row also records ``objective`` and ``is_bound``.
    """
    label = metrics.get("training", {}).get("objective")
    name = label["name"] if isinstance(label, dict) else "unlabelled"
    is_bound = bool(label["is_bound"]) if isinstance(label, dict) else False
    out: dict[str, Any] = {}
    for key, value in flat.items():
        if key.startswith(OBJECTIVE_PREFIX) and not is_bound:
            for suffix in ("_elbo", "_objective"):
                if key.endswith(suffix):
                    key = f"{key[: -len(suffix)]}_objective[{name}]"
                    break
        out[key] = value
    out["objective"] = name
    out["is_bound"] = is_bound
    return out


def t_quantile_975(dof: int) -> float:
    """The 0.975 quantile of Student's t with ``dof`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.975, dof))


def summarise(rows: list[dict[str, Any]], metric: str) -> dict[str, tuple[float, float, int]]:
    """Per model: (mean, half-width of the 95% interval, number of seeds) of one metric."""
    by_model: dict[str, list[float]] = {}
    for row in rows:
        value = row.get(metric)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            by_model.setdefault(row["model"], []).append(float(value))
    out = {}
    for model, values in by_model.items():
        n = len(values)
        mean = sum(values) / n
        if n > 1:
            sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
            half = t_quantile_975(n - 1) * sd / math.sqrt(n)
        else:
            half = math.nan
        out[model] = (mean, half, n)
    return out


def headline_metrics(rows: list[dict[str, Any]]) -> list[str]:
    """Content accuracies, cluster scores, style averages and per-factor scores present in the rows."""
    keys: list[str] = []
    for row in rows:
        for key in row:
            if key in keys or key in ("model", "seed", "run_dir", "objective", "is_bound"):
                continue
            if key.startswith("content.") and key.endswith((".accuracy", ".nmi", ".ari")):
                keys.append(key)
            elif ".val." in key or key.endswith(".count"):
                continue  # validation scores and counts stay in results.csv
            elif key.startswith("style.") and (key.endswith((".linear", ".knn")) or ".mean_" in key):
                keys.append(key)
            elif key.startswith("training.") and key.endswith(("seconds_per_epoch", "val_elbo")):
                keys.append(key)
            elif key.startswith(OBJECTIVE_PREFIX + "val_objective["):
                keys.append(key)
    return keys


def metric_label(metric: str) -> str:
    """A table's row label: the metric, and for training objectives what they are and their unit."""
    if metric.startswith(OBJECTIVE_PREFIX) and metric.endswith("_elbo"):
        return f"{metric} (ELBO: bound on log p(x), nats per item)"
    if metric.startswith(OBJECTIVE_PREFIX) and "_objective[" in metric:
        return f"{metric} (not a bound on log p(x), nats per item)"
    return metric


def format_cell(mean: float, half: float, n: int) -> str:
    """``mean ± half-width (n=N)``; one seed has no interval: ``mean (n=1)``."""
    if math.isnan(half):
        return f"{mean:.3f} (n={n})"
    return f"{mean:.3f} ± {half:.3f} (n={n})"


def markdown_tables(rows: list[dict[str, Any]], metrics: list[str], models: tuple[str, ...]) -> str:
    lines = ["| metric | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    for metric in metrics:
        stats = summarise(rows, metric)
        cells = []
        for model in models:
            if model not in stats:
                cells.append("-")
                continue
            cells.append(format_cell(*stats[model]))
        lines.append(f"| {metric_label(metric)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    _write_csv(path, rows)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def bar_chart(
    rows: list[dict[str, Any]], metrics: list[str], models: tuple[str, ...], path: Path, title: str
) -> Path | None:
    """Grouped bars: one group per metric, one bar per model, 95% interval as error bars."""
    if not metrics:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(min(14.0, max(4.0, 0.3 * len(metrics) * len(models))), 3.4))
    width = 0.8 / len(models)
    for m, model in enumerate(models):
        means, errors = [], []
        for metric in metrics:
            mean, half, _ = summarise(rows, metric).get(model, (math.nan, math.nan, 0))
            means.append(mean)
            errors.append(0.0 if math.isnan(half) else half)
        xs = [i + m * width for i in range(len(metrics))]
        ax.bar(xs, means, width, yerr=errors, label=model, capsize=2)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(metrics))])
    ax.set_xticklabels([k.split(".", 1)[1] for k in metrics], rotation=30, ha="right", fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    try:
        save_figure(fig, path, dpi=100)
    finally:
        plt.close(fig)
    return path


def embedding_figure(plan: ComparePlan, path: Path, *, max_points: int = 2000) -> Path | None:
    """PCA of each model's (first seed's) test representations, coloured by class and by each style factor."""
    from pssl.baselines import is_baseline
    from pssl.evaluation import extract_features
    from pssl.inference.runs import load_run

    plt = _pyplot()
    seed = plan.seeds[0]
    panels = []
    for model in plan.models:
        if is_baseline(model):
            continue  # no trained model to load; its numbers are in the tables
        run_dir = plan.out / f"{model}-seed{seed}"
        try:
            result = load_run(run_dir)
        except (ValueError, RuntimeError, OSError) as err:
            logger.warning("embedding of %s skipped: %s", model, err)
            continue
        test = result.data.test
        count = min(len(test), max_points)
        subset = test.subset(torch.arange(count))
        features = extract_features(result.model, subset)
        centred = features - features.mean(0)
        _, _, v = torch.linalg.svd(centred, full_matrices=False)
        coords = centred @ v[:2].T
        colourings = [("class", subset.labels)] + list(subset.factors.items())
        panels.append((model, coords, colourings))
    if not panels:
        return None
    num_cols = max(len(c) for _, _, c in panels)
    fig, axes = plt.subplots(
        len(panels), num_cols, figsize=(2.4 * num_cols, 2.3 * len(panels)), squeeze=False
    )
    for r, (model, coords, colourings) in enumerate(panels):
        for c in range(num_cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(colourings):
                ax.axis("off")
                continue
            name, values = colourings[c]
            ax.scatter(
                coords[:, 0],
                coords[:, 1],
                c=values.float().numpy(),
                s=2,
                cmap="tab10" if name == "class" else "viridis",
            )
            ax.set_title(f"{model}: {name}", fontsize=7)
    fig.tight_layout()
    try:
        save_figure(fig, path, dpi=100)
    finally:
        plt.close(fig)
    return path


def run_compare(tokens: list[str]) -> dict[str, Any]:
    """Run a comparison from command-line tokens; returns the rows and output paths."""
    plan = parse_compare(tokens)
    with claim(plan.out, kind="compare", owns=_owned_by_compare):
        return _run_claimed(plan)


def _run_claimed(plan: ComparePlan) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    failures: dict[str, str] = {}
    for model in plan.models:
        for seed in plan.seeds:
            logger.info("[compare] %s seed %s ...", model, seed)
            try:
                metrics, action = run_pair(plan, model, seed)
            except KeyboardInterrupt as err:
                # the pair's own advice (`pssl resume PAIR`) would finish one pair; rerunning the
                # comparison resumes that pair from its checkpoint and reuses the finished ones
                reason = str(err).split("; continue with", 1)[0] or "interrupted by Ctrl-C (SIGINT)"
                raise KeyboardInterrupt(
                    f"{reason} (compare: {model} seed {seed}); rerun the same `pssl compare` command to "
                    "continue: finished pairs are reused and an interrupted pair resumes from its checkpoint"
                ) from None
            except Exception as err:  # one failed pair must not lose the others
                failures[f"{model} seed {seed}"] = one_line_error(err)
                logger.error("[compare] %s seed %s failed: %s", model, seed, failures[f"{model} seed {seed}"])
                continue
            logger.info("[compare] %s seed %s: %s", model, seed, action)
            row: dict[str, Any] = {
                "model": model,
                "seed": seed,
                "run_dir": str(plan.out / f"{model}-seed{seed}"),
            }
            row.update(label_objective_columns(flatten(metrics), metrics))
            rows.append(row)
    return write_report(plan, rows, failures)


def one_line_error(err: BaseException) -> str:
    """``Type: first line of the message`` (the message of a chained error, when it has none)."""
    message = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
    return f"{type(err).__name__}: {message}"


def failure_lines(failures: dict[str, str]) -> list[str]:
    """Markdown lines listing each failed pair and its one-line error."""
    if not failures:
        return []
    return ["", "Failed pairs (not in the table):", ""] + [
        f"- {pair}: {error}" for pair, error in failures.items()
    ]


def write_report(
    plan: ComparePlan, rows: list[dict[str, Any]], failures: dict[str, str] | None = None
) -> dict[str, Any]:
    failures = dict(failures or {})
    if rows:
        write_csv(plan.out / "results.csv", rows)
    metrics = headline_metrics(rows)
    table = markdown_tables(rows, metrics, plan.models)
    write_text(
        plan.out / "results.md",
        f"# {plan.base.data.name}: {', '.join(plan.models)} over seeds {', '.join(map(str, plan.seeds))}\n\n"
        "Each cell: mean ± half-width of the 95% Student-t interval across seeds, and the number of "
        "seeds n. Accuracies are fractions of the test split; style scores are accuracy (discrete "
        "factors) or R² (continuous factors).\n\n" + table + "\n" + "\n".join(failure_lines(failures)) + "\n",
    )
    figures = []
    content = [m for m in metrics if m.startswith("content.") and m.endswith(".accuracy")]
    style = [m for m in metrics if m.startswith("style.") and ".mean_" not in m]
    for name, keys, title in (
        ("content.png", content, "content (test accuracy)"),
        ("style.png", style, "style factors"),
    ):
        figure = bar_chart(rows, keys, plan.models, plan.out / name, title)
        if figure is not None:
            figures.append(figure)
    embedding = embedding_figure(plan, plan.out / "embedding.png")
    if embedding is not None:
        figures.append(embedding)
    structure = _structure_figure(plan)
    if structure is not None:
        figures.append(structure)
    lines = [f"# Comparison report: {plan.base.data.name}", "", table, *failure_lines(failures), ""]
    for figure in figures:
        lines += [f"![{figure.stem}]({figure.name})", ""]
    lines += ["## Runs", ""]
    for model in plan.models:
        run_dir = f"{model}-seed{plan.seeds[0]}"
        lines.append(f"### {model}")
        lines.append(f"![loss curves]({run_dir}/loss_curves.png)")
        if (plan.out / run_dir / "reconstructions.png").is_file():
            lines.append(f"![reconstructions and prior samples]({run_dir}/reconstructions.png)")
        lines.append("")
    report = plan.out / "report.md"
    write_text(report, "\n".join(lines) + "\n")
    return {
        "rows": rows,
        "failures": failures,
        "table": table,
        "report": report,
        "results_csv": plan.out / "results.csv",
        "results_md": plan.out / "results.md",
    }


def structure_of_run(
    run_dir: Path, *, max_items: int = 1024, checkpoint: str | Path | None = None
) -> dict[str, Any]:
    """Latent structure (within/between-item variance, alignment, uniformity, effective rank)
    of a run's representation over J augmented views of its test images.

    ``checkpoint`` reads an earlier checkpoint of the run instead of the newest.
    """
    from pssl.augment import build_augmenter
    from pssl.diagnostics import representation_structure
    from pssl.inference.runs import load_run

    result = load_run(run_dir, checkpoint=checkpoint)
    augment = result.config.augment
    augmenter = build_augmenter(
        augment.name, result.data.train.image_shape, augment.options, data=result.data
    )
    test = result.data.test if len(result.data.test) else result.data.val
    images = test.images[: min(len(test), max_items)]
    generator = torch.Generator().manual_seed(result.config.seed + 777)
    return representation_structure(
        result.model, images, augmenter, max(2, result.config.num_views), generator
    )


def _structure_figure(plan: ComparePlan) -> Path | None:
    """Latent-structure diagnostics of every method side by side (first seed), also in structure.json."""
    from pssl.baselines import is_baseline
    from pssl.diagnostics import compare_structure

    results = {}
    for model in plan.models:
        if is_baseline(model):
            continue
        try:
            results[model] = structure_of_run(plan.out / f"{model}-seed{plan.seeds[0]}")
        except (ValueError, RuntimeError, OSError) as err:  # a failed diagnostic must not lose the comparison
            logger.warning("[compare] latent structure of %s skipped: %s", model, err)
    if not results:
        return None
    write_text(plan.out / "structure.json", json.dumps(results, indent=2, default=_plain) + "\n")
    return compare_structure(results, plan.out / "latent_structure.png")


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)
