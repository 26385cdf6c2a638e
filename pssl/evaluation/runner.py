"""Whole-model evaluation: content probes, style factors and augmentation parameters.

Features are extracted once per split (:mod:`pssl.evaluation.features`); every
probe (:data:`pssl.evaluation.protocol.PROBES`) then runs on them under the
shared protocol. Options are given per probe name, e.g.
``{"mlp": {"patience": 500}, "knn": {"ks": (1, 5)}}``, plus the
``augmentation`` section; every option is checked (by building each probe)
before any feature is extracted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pssl.evaluation.cluster import model_cluster_evaluation
from pssl.evaluation.features import encode_batches, extract_features, float_images
from pssl.evaluation.protocol import (
    FACTOR_KINDS,
    PROBES,
    _jsonable,
    as_targets,
    build_probe,
    encode_classes,
    positive_int,
    run_probe,
)
from pssl.evaluation.style import FeatureSet, read_factors

__all__ = [
    "CONTENT_PROBES",
    "DEFAULT_OPTIONS",
    "check_evaluation",
    "check_probes",
    "content_probe_names",
    "default_options",
    "evaluate",
    "evaluate_augmentation_style",
    "evaluate_content",
    "evaluate_style",
    "evaluation_protocol",
]

CONTENT_PROBES = ("linear", "mlp", "knn", "cluster")
"""The content probes :func:`evaluate` runs by default, in this order."""

AUGMENTATION_DEFAULTS = {"num_views": 1, "max_items": 10000}


def default_options() -> dict[str, dict[str, Any]]:
    """Every registered probe's constructor defaults (without ``seed``), plus ``augmentation``."""
    options: dict[str, dict[str, Any]] = {}
    for entry in PROBES.entries():
        options[entry.name] = {
            k: p.default for k, p in entry.parameters().items() if k != "seed" and p.default is not p.empty
        }
    options["augmentation"] = dict(AUGMENTATION_DEFAULTS)
    return options


DEFAULT_OPTIONS = default_options()
"""Settings of the built-in probes; :func:`evaluate` accepts per-section overrides (``options``)."""


def _resolve_options(options: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """The overrides in ``options``, checked: unknown sections or keys raise."""
    known = default_options()
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise TypeError(f"options must be a mapping of section -> settings, got {type(options).__name__}")
    resolved: dict[str, dict[str, Any]] = {}
    for section, values in options.items():
        if section not in known:
            raise ValueError(f"unknown evaluation options section {section!r}; accepted: {sorted(known)}")
        if not isinstance(values, Mapping):
            raise TypeError(f"options[{section!r}] must be a mapping, got {type(values).__name__}")
        for key in values:
            if key not in known[section] and not (section != "augmentation" and key == "seed"):
                raise ValueError(f"unknown option {section}.{key}; accepted: {sorted(known[section])}")
        resolved[section] = dict(values)
    return resolved


def content_probe_names() -> list[str]:
    """Registered probes that can read a class label (they classify or cluster).

    These are the names ``pssl evaluate --probes`` and ``pssl compare probes=``
    accept: a probe registered in :data:`PROBES` (from any module, a notebook or a
    test file) is accepted there with no other change.
    """
    return [
        name
        for name in PROBES.names()
        if set(PROBES.entry(name).factory.tasks) & {"classification", "clustering"}
    ]


def check_probes(probes: Any) -> tuple[str, ...]:
    """``probes`` as a tuple of registered content probes; errors name the accepted ones.

    Raises:
        ValueError: for no probe, an unknown name, a probe that cannot read a class
            label (it only regresses), or a name listed twice.
    """
    probes = (probes,) if isinstance(probes, str) else tuple(probes)
    names = content_probe_names()
    accepted = ", ".join(names)
    if not probes:
        raise ValueError(f"no probes chosen; accepted: {accepted}")
    unknown = [p for p in probes if p not in PROBES]
    if unknown:
        raise ValueError(f"unknown probe {unknown[0]!r}; accepted: {accepted}")
    content = [p for p in probes if p not in names]
    if content:
        raise ValueError(
            f"probes {content} cannot read a class label; content probes must classify or cluster "
            f"(accepted: {accepted})"
        )
    if len(set(probes)) != len(probes):
        raise ValueError(f"content probes are listed twice: {list(probes)}")
    return probes


def _probe(name: str, opts: Mapping[str, Mapping[str, Any]], seed: int, task: str | None = None) -> Any:
    settings = dict(opts.get(name, {}))
    if "seed" in PROBES.entry(name).parameters():
        settings.setdefault("seed", seed)
    return build_probe(name, settings, task=task)


def check_evaluation(
    probes: Sequence[str] = CONTENT_PROBES,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[tuple[str, ...], dict[str, dict[str, Any]]]:
    """Check probe names and every option by building each probe; returns them resolved.

    Raises:
        ValueError, TypeError: naming the bad probe, section, key or value.
    """
    probes = check_probes(probes) if probes else ()
    opts = _resolve_options(options)
    for name in PROBES.names():
        _probe(name, opts, 0)
    augmentation = {**AUGMENTATION_DEFAULTS, **opts.get("augmentation", {})}
    positive_int(augmentation["num_views"], "augmentation.num_views")
    if augmentation["max_items"] is not None:
        positive_int(augmentation["max_items"], "augmentation.max_items")
    return probes, opts


# --------------------------------------------------------------------------- protocol record


def evaluation_protocol(
    *,
    seed: int = 0,
    probes: Sequence[str] = CONTENT_PROBES,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    augmentation: bool = False,
) -> dict[str, Any]:
    """Every setting that produced the evaluation numbers, for ``metrics.json["protocol"]``.

    Args:
        seed: The evaluation seed.
        probes: Content probes that ran.
        options: The overrides given to :func:`evaluate`.
        augmentation: Whether augmentation-style probes ran.

    Returns:
        A JSON-ready dict: the settings and rules of every probe that ran plus
        the fixed rules (features, selection split, refit policy).
    """
    probes, opts = check_evaluation(probes, options)
    protocol: dict[str, Any] = {
        "seed": seed,
        "features": "model.encode of un-augmented images, eval mode, no grad",
        "selection": "validation split carved from the training items; test predicted once per probe",
        "refit": "train only (no refit on train + validation)",
        "standardisation": "StandardScaler fitted on train, inside every probe but kNN",
        "content_probes": list(probes),
    }
    for name in dict.fromkeys((*probes, "linear", "ridge", "knn")):
        protocol[name] = _probe(name, opts, seed).settings()
    protocol["style"] = {
        "discrete": "accuracy: linear (logistic regression) and knn classifier",
        "continuous": "R^2: ridge and knn regressor (neighbour mean)",
        "options": "the linear, ridge and knn sections",
        "means": "mean_linear/mean_knn average every factor's score (accuracy or R^2, 1 = perfect); "
        "mean_by_metric averages accuracies and R^2 separately",
    }
    if augmentation:
        protocol["augmentation"] = {
            **AUGMENTATION_DEFAULTS,
            **opts.get("augmentation", {}),
            "targets": "every non-constant scalar entry of the augmenter's parameters of each view",
            "kinds": "bool and integer entries discrete, float entries continuous",
            "split": "each split's items augmented with its own seeded generator; "
            "a single data set is split 60/20/20 by items",
        }
    return _jsonable(protocol)


# --------------------------------------------------------------------------- splits and features


class _SplitFeatures:
    """Features and labels of train / val / test, extracted once."""

    def __init__(self, xs: list[Tensor], ys: list[Tensor], num_classes: int | None) -> None:
        self.train_x, self.val_x, self.test_x = xs
        self.train_y, self.val_y, self.test_y = ys
        self.num_classes = num_classes
        self.arrays = FeatureSet.of(*xs)


def _splits_of(splits: Any) -> tuple[Any, Any, Any]:
    parts = tuple(getattr(splits, name, None) for name in ("train", "val", "test"))
    for name, part in zip(("train", "val", "test"), parts):
        if part is None or not hasattr(part, "images"):
            raise TypeError(f"splits must have .train, .val and .test with .images; .{name} is {part!r}")
        if len(part.images) == 0:
            hint = " (selection needs a validation split: use val_fraction > 0)" if name == "val" else ""
            raise ValueError(f"the {name} split is empty{hint}")
    return parts


def _extract_splits(
    model: nn.Module, splits: Any, *, batch_size: int, device: torch.device | str | None
) -> _SplitFeatures:
    parts = _splits_of(splits)
    xs = [extract_features(model, part, batch_size=batch_size, device=device) for part in parts]
    ys = [
        as_targets(part.labels, x.shape[0], f"{name}.labels", discrete=True)
        for part, x, name in zip(parts, xs, ("train", "val", "test"))
    ]
    num_classes = getattr(parts[0], "num_classes", None)
    return _SplitFeatures(xs, ys, num_classes if isinstance(num_classes, int) else None)


def _content(
    feats: _SplitFeatures, probes: tuple[str, ...], seed: int, opts: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    _, codes = encode_classes(feats.train_y, feats.val_y, feats.test_y)
    labels = [y.numpy() for y in (feats.train_y, feats.val_y, feats.test_y)]
    arrays = feats.arrays
    results: dict[str, Any] = {}
    for name in probes:
        probe = _probe(name, opts, seed)
        if probe.task == "clustering":
            if getattr(probe, "num_clusters", 0) is None:
                count = feats.num_classes or len(torch.unique(torch.cat([feats.train_y, feats.val_y])))
                probe.num_clusters = min(count, len(labels[0]))
            targets = labels
        else:
            probe.set_task("classification")
            targets = [c.numpy() for c in codes]
        if hasattr(probe, "use_index"):
            probe.use_index(arrays.index)
        result = run_probe(probe, arrays.train, targets[0], arrays.val, targets[1], arrays.test, targets[2])
        results[name] = result.to_dict()
    return results


def evaluate_content(
    model: nn.Module,
    splits: Any,
    *,
    seed: int = 0,
    probes: Sequence[str] = CONTENT_PROBES,
    device: torch.device | str | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    batch_size: int = 1024,
) -> dict[str, Any]:
    """Content probes on the model's features of un-augmented images.

    Args:
        model: Module with ``encode(images) -> (B, d)``.
        splits: Object with ``.train``, ``.val`` and ``.test``, each with ``.images``
            and ``.labels`` (and optionally ``.num_classes``).
        seed: Seeds the probes that take a seed (MLP, mixture).
        probes: Registered probe names that classify or cluster.
        device: Where to run the model (default: its parameters' device).
        options: Per-probe overrides, e.g. ``{"mlp": {"patience": 500}}``.
        batch_size: Images per ``encode`` call.

    Returns:
        ``{probe: {"accuracy", "val_accuracy", "selected", "settings", "seconds", ...}}``;
        ``"cluster"`` adds ``"nmi"`` and ``"ari"``. Accuracies are fractions.
    """
    probes, opts = check_evaluation(probes, options)
    feats = _extract_splits(model, splits, batch_size=batch_size, device=device)
    return _with_model_clusters(_content(feats, probes, seed, opts), model, splits, batch_size, device)


def _with_model_clusters(
    content: dict[str, Any], model: nn.Module, splits: Any, batch_size: int, device: Any
) -> dict[str, Any]:
    """Add ``model_cluster`` (test split) when the model clusters by itself (``num_clusters``)."""
    if getattr(model, "num_clusters", None):
        content["model_cluster"] = model_cluster_evaluation(
            model, splits.test, batch_size=batch_size, device=device
        )
    return content


# --------------------------------------------------------------------------- style factors


def _factor_kind(part: Any, name: str, values: Tensor) -> str:
    kind = getattr(part, "factor_kinds", {}).get(name)
    if kind is None:
        kind = "continuous" if values.is_floating_point() else "discrete"
    if kind not in FACTOR_KINDS:
        raise ValueError(f"factor kind of {name!r} must be one of {FACTOR_KINDS}, got {kind!r}")
    return kind


def _factor_targets(splits: Any) -> tuple[dict[str, tuple[str, Tensor, Tensor, Tensor]], dict[str, str]]:
    train, val, test = _splits_of(splits)
    targets: dict[str, tuple[str, Tensor, Tensor, Tensor]] = {}
    missing: dict[str, str] = {}
    for name, values in (getattr(train, "factors", None) or {}).items():
        kind = _factor_kind(train, name, values)
        others = [getattr(part, "factors", {}).get(name) for part in (val, test)]
        if any(o is None for o in others):
            missing[name] = "missing from the validation or test split"
            continue
        discrete = kind == "discrete"
        targets[name] = (
            kind,
            *(
                as_targets(v, len(part.images), f"{split}.factors[{name!r}]", discrete=discrete)
                for v, part, split in zip((values, *others), (train, val, test), ("train", "val", "test"))
            ),
        )
    return targets, missing


def evaluate_style(
    model: nn.Module,
    splits: Any,
    *,
    seed: int = 0,
    device: torch.device | str | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    batch_size: int = 1024,
) -> dict[str, Any] | None:
    """Predictability of the data set's named style factors from the features.

    Args:
        model: Module with ``encode(images) -> (B, d)``.
        splits: ``.train/.val/.test`` with ``.images`` and ``.factors`` (name ->
            ``(N,)``), optionally ``.factor_kinds`` (otherwise float factors are
            continuous, integer ones discrete).
        seed: Evaluation seed.
        device: Where to run the model.
        options: Overrides of the ``linear``, ``ridge`` and ``knn`` sections.
        batch_size: Images per ``encode`` call.

    Returns:
        ``None`` when the training split has no factors; otherwise
        ``{"factors": {name: {"kind", "linear", "knn", "metric", "val", "selected"}},
        "mean_linear", "mean_knn", "mean_by_metric", "skipped"}``. ``mean_linear``
        and ``mean_knn`` average every factor's test score (accuracy for discrete,
        R^2 for continuous factors); ``mean_by_metric`` gives the two separately.
        Factors constant on the training split are listed in ``skipped``.
    """
    _, opts = check_evaluation((), options)
    targets, missing = _factor_targets(splits)
    if not targets and not missing:
        return None
    feats = _extract_splits(model, splits, batch_size=batch_size, device=device)
    result = read_factors(feats.arrays, targets, opts, seed)
    result["skipped"].update(missing)
    return result


# --------------------------------------------------------------------------- augmentation parameters


def _augmentation_parts(data: Any, max_items: int | None, seed: int) -> list[tuple[str, Tensor]]:
    """``[(split, images)]`` for train / val / test, each capped at ``max_items`` (seeded)."""
    generator = torch.Generator().manual_seed(seed)
    if all(hasattr(data, name) for name in ("train", "val", "test")):
        parts = [(name, getattr(data, name).images) for name in ("train", "val", "test")]
    else:
        images = data if isinstance(data, Tensor) else getattr(data, "images", None)
        if not isinstance(images, Tensor) or images.ndim != 4:
            raise TypeError(
                f"data must be splits (.train/.val/.test) or have .images, got {type(data).__name__}"
            )
        order = torch.randperm(images.shape[0], generator=generator)
        n_train, n_val = int(0.6 * len(order)), int(0.2 * len(order))
        parts = [
            ("train", images[order[:n_train]]),
            ("val", images[order[n_train : n_train + n_val]]),
            ("test", images[order[n_train + n_val :]]),
        ]
    capped = []
    for name, images in parts:
        if max_items is not None and images.shape[0] > max_items:
            images = images[torch.randperm(images.shape[0], generator=generator)[:max_items].sort().values]
        if images.shape[0] == 0:
            raise ValueError(f"the {name} split for augmentation style is empty")
        capped.append((name, images))
    return capped


def _augmented_features(
    model: nn.Module,
    images: Tensor,
    augmenter: Callable[..., Any],
    *,
    num_views: int,
    generator: torch.Generator,
    batch_size: int,
    device: torch.device | str | None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Features ``(N J, d)`` of ``J`` augmented views per image and their parameters ``(N J, ...)``."""
    params: dict[str, list[Tensor]] = {}
    per_call = max(1, batch_size // num_views)

    def batches(dev: torch.device):
        for start in range(0, images.shape[0], per_call):
            chunk = float_images(images[start : start + per_call].to(dev), "augmentation images")
            out = augmenter(chunk, num_views, generator, return_params=True)
            if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], Mapping)):
                raise TypeError("augmenter(..., return_params=True) must return (views, params dict)")
            views, batch_params = out
            if views.ndim != 5 or views.shape[:2] != (chunk.shape[0], num_views):
                raise ValueError(
                    f"augmenter must return views (B, J, C, H, W) with B={chunk.shape[0]}, J={num_views}; "
                    f"got {tuple(views.shape)}"
                )
            for key, value in batch_params.items():
                value = torch.as_tensor(value)
                if value.shape[:2] != (chunk.shape[0], num_views):
                    raise ValueError(
                        f"augmentation parameter {key!r} must be (B, J, ...), got {tuple(value.shape)}"
                    )
                params.setdefault(key, []).append(value.detach().cpu().flatten(0, 1))
            yield views.flatten(0, 1)

    features = encode_batches(model, batches, device)
    return features, {key: torch.cat(chunks) for key, chunks in params.items()}


def _scalar_columns(params: dict[str, Tensor]) -> dict[str, tuple[str, Tensor]]:
    """Every parameter entry as its own ``(kind, (M,) values)`` column, named ``key`` or ``key[i,j]``."""
    columns: dict[str, tuple[str, Tensor]] = {}
    for key, value in params.items():
        kind = "continuous" if value.is_floating_point() else "discrete"
        flat = value.reshape(value.shape[0], -1)
        trailing = tuple(value.shape[1:])
        for j in range(flat.shape[1]):
            name = key if not trailing else f"{key}[{','.join(map(str, np.unravel_index(j, trailing)))}]"
            columns[name] = (kind, flat[:, j])
    return columns


def evaluate_augmentation_style(
    model: nn.Module,
    data: Any,
    augmenter: Callable[..., Any],
    *,
    num_views: int = 1,
    seed: int = 0,
    device: torch.device | str | None = None,
    max_items: int | None = 10000,
    batch_size: int = 1024,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """How well the augmentation parameters of a view can be read from its representation.

    Each image is augmented ``num_views`` times by
    ``augmenter(images (B, C, H, W), num_views, generator, return_params=True)``,
    which returns views ``(B, J, C, H, W)`` and parameters ``{key: (B, J, ...)}``.
    Every view is encoded and every scalar entry of every parameter becomes one
    target (``key`` or ``key[i,j]``; bool and integer entries discrete, floats
    continuous), read as a style factor (:mod:`pssl.evaluation.style`): fitted
    on the training items' views, selected on validation, scored on test. An
    invariant representation scores at chance (majority-class accuracy, R^2
    near 0); a representation that keeps style scores high.

    Args:
        model: Module with ``encode(images) -> (B, d)``.
        data: Splits (``.train/.val/.test`` with ``.images``), or one data set
            (``.images`` or an images tensor) split 60/20/20 by items (seeded).
        augmenter: The view generator, e.g. a :class:`pssl.augment.ViewAugmenter`.
        num_views: Views per image ``J``.
        seed: Seeds the split, the item caps and the augmentation draws.
        device: Where to run the model and the augmenter.
        max_items: Cap on images per split (a seeded random subset); ``None`` uses all.
        batch_size: Views per ``encode`` call.
        options: Overrides of the ``linear``, ``ridge`` and ``knn`` sections.

    Returns:
        Same layout as :func:`evaluate_style` (one entry per parameter target;
        targets constant on the training views are ``skipped``), plus
        ``"num_views"`` and ``"items"`` (images used per split).
    """
    num_views = positive_int(num_views, "num_views")
    if max_items is not None:
        max_items = positive_int(max_items, "max_items")
    if not callable(augmenter):
        raise TypeError(f"augmenter must be callable, got {type(augmenter).__name__}")
    _, opts = check_evaluation((), options)
    parts = _augmentation_parts(data, max_items, seed)
    xs, columns = [], []
    for offset, (_, images) in enumerate(parts):
        generator = torch.Generator().manual_seed(seed * 3 + offset)  # one stream per split
        x, params = _augmented_features(
            model,
            images,
            augmenter,
            num_views=num_views,
            generator=generator,
            batch_size=batch_size,
            device=device,
        )
        xs.append(x)
        columns.append(_scalar_columns(params))
    targets: dict[str, tuple[str, Tensor, Tensor, Tensor]] = {}
    for name, (kind, _) in columns[0].items():
        discrete = kind == "discrete"
        values = [
            as_targets(cols[name][1], x.shape[0], name, discrete=discrete) for cols, x in zip(columns, xs)
        ]
        targets[name] = (kind, *values)
    result = read_factors(FeatureSet.of(*xs), targets, opts, seed)
    result["num_views"] = num_views
    result["items"] = {name: int(images.shape[0]) for name, images in parts}
    return result


# --------------------------------------------------------------------------- everything


def evaluate(
    model: nn.Module,
    splits: Any,
    *,
    seed: int = 0,
    device: torch.device | str | None = None,
    augmenter: Callable[..., Any] | None = None,
    probes: Sequence[str] = CONTENT_PROBES,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    batch_size: int = 1024,
) -> dict[str, Any]:
    """Every evaluation of a trained model, from one extraction of its features.

    Args:
        model: Module with ``encode(images) -> (B, d)``.
        splits: ``.train/.val/.test`` with ``.images``, ``.labels`` and optionally ``.factors``.
        seed: Evaluation seed.
        device: Where to run the model.
        augmenter: When given, also runs :func:`evaluate_augmentation_style`
            (``options["augmentation"]`` sets ``num_views`` and ``max_items``).
        probes: Content probes to run.
        options: Overrides, section by section (probe names and ``augmentation``).
        batch_size: Images per ``encode`` call.

    Returns:
        A dict with ``content``, ``style`` (when the data has factors),
        ``augmentation`` (when an augmenter is given) and ``protocol``; the protocol also records
        the split sizes, the feature dimension and the seconds each part took.
    """
    probes, opts = check_evaluation(probes, options)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    feats = _extract_splits(model, splits, batch_size=batch_size, device=device)
    timings["features"] = time.perf_counter() - start
    start = time.perf_counter()
    content = _with_model_clusters(_content(feats, probes, seed, opts), model, splits, batch_size, device)
    result: dict[str, Any] = {"content": content}
    timings["content"] = time.perf_counter() - start
    targets, missing = _factor_targets(splits)
    if targets or missing:
        start = time.perf_counter()
        result["style"] = read_factors(feats.arrays, targets, opts, seed)
        result["style"]["skipped"].update(missing)
        timings["style"] = time.perf_counter() - start
    if augmenter is not None:
        start = time.perf_counter()
        augmentation = {**AUGMENTATION_DEFAULTS, **opts.get("augmentation", {})}
        result["augmentation"] = evaluate_augmentation_style(
            model,
            splits,
            augmenter,
            num_views=augmentation["num_views"],
            seed=seed,
            device=device,
            max_items=augmentation["max_items"],
            batch_size=batch_size,
            options=options,
        )
        timings["augmentation"] = time.perf_counter() - start
    protocol = evaluation_protocol(
        seed=seed, probes=probes, options=options, augmentation=augmenter is not None
    )
    protocol["sizes"] = {"train": len(feats.train_x), "val": len(feats.val_x), "test": len(feats.test_x)}
    protocol["feature_dim"] = int(feats.train_x.shape[1])
    protocol["seconds"] = timings
    result["protocol"] = protocol
    return result
