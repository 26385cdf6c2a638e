r"""Held-out model comparison: importance-sampled log p(x_i) of test items as an ArviZ ``ELPDData``.

For an amortised latent-variable model the quantity that can be compared across
models is the log marginal likelihood of held-out items,

.. math::

    \text{elpd} = \sum_{i=1}^N \log p(x_i), \qquad
    \widehat{\log p}(x_i) = \log \frac{1}{K} \sum_{k} \frac{p(x_i, z^{(k)})}{q(z^{(k)} \mid x_i)},
    \quad z^{(k)} \sim q(z \mid x_i),

with ``q`` the proposal of the importance pass (by default the hierarchical one of
:mod:`pssl.diagnostics.proposal`, independent of the training guide)

(the IWAE estimate; ``x_i`` is all of item ``i``'s observed views) over ``N`` test
items the model was not trained on. It is an *expected log predictive density on
new data* estimated directly from new data, so no leave-one-out approximation is
involved: its standard error is ArviZ's ``sqrt(N Var_i[log p(x_i)])``, and
``az.compare`` computes the standard error of a difference from the paired
per-item differences, as it does for PSIS-LOO.

:func:`held_out_elpd` packs it as an ``ELPDData`` whose entries ArviZ's
``compare`` reads (it only knows the labels ``elpd_loo``/``elpd_waic``, so the
entry is named ``elpd_loo``; ``estimator`` says what it is, ``p_loo`` is NaN
because a held-out estimate has no in-sample optimism to correct, and
``pareto_k`` holds the importance-sampling k-hat of each item, so ``warning`` is
set when some item's estimate is unreliable). :func:`compare_held_out` checks that
the models were scored on the same observed values with the same kind of
likelihood (pmf or density) before calling ``az.compare``.

Caveats: the estimate is a stochastic lower bound (``E[IWAE_K] <= log p(x)``);
models whose items have large k-hat are under-estimated by an unknown amount. A
Bernoulli likelihood on grey images is a cross-entropy, comparable only with
other Bernoulli numbers on the same data.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from pssl.diagnostics.importance import (
    ImportanceSamples,
    arviz,
    khat_threshold,
    pareto_khat,
    per_item_evidence,
)

ESTIMATOR = (
    "held-out log p(x_i) by importance sampling (IWAE, K draws from the diagnostic proposal), summed over "
    "test items"
)


@functools.cache
def _elpd_class() -> type:
    from arviz.stats.stats_utils import ELPDData

    class HeldOutELPD(ELPDData):
        """ArviZ ``ELPDData`` of a held-out importance-sampled elpd; prints what it is."""

        def __str__(self) -> str:
            k = np.asarray(self["pareto_k"])
            bad = int(np.sum(k > self["good_k"]))
            return (
                f"Held-out elpd (importance-sampled log p(x) of {self['n_data_points']} test items, "
                f"K = {self['n_samples']} guide draws each; not leave-one-out)\n\n"
                f"          Estimate       SE\nelpd_held_out {self['elpd_loo']:9.2f} {self['se']:8.2f}\n"
                f"(ArviZ reads this entry as elpd_loo; p_loo is not applicable: no in-sample correction)\n\n"
                f"items with k-hat > {self['good_k']:.2f}: {bad} of {len(k)}"
                + ("\nSome items' estimates are unreliable (large k-hat)." if bad else "")
            )

        def __repr__(self) -> str:
            return self.__str__()

    HeldOutELPD.__qualname__ = HeldOutELPD.__name__ = "HeldOutELPD"
    return HeldOutELPD


def held_out_elpd(source: Any) -> Any:
    """An ArviZ ``ELPDData`` of the held-out elpd from pssl's ``InferenceData`` or an importance pass.

    Args:
        source: an ``InferenceData`` from :func:`~pssl.diagnostics.to_inference_data` (also
            one read back from its netCDF file with ``az.from_netcdf``), or
            :class:`~pssl.diagnostics.importance.ImportanceSamples`.

    Returns:
        ``ELPDData`` with ``elpd_loo`` (the held-out elpd, nats, summed over items), ``se``,
        ``p_loo`` (NaN), ``n_samples`` (K), ``n_data_points`` (N), ``warning``, ``loo_i``
        (per-item log p(x_i), an ``xarray.DataArray`` over ``item``), ``pareto_k`` (per-item
        importance-sampling k-hat), ``scale`` (``"log"``), ``good_k``, plus ``estimator``,
        ``observed_fingerprint``, ``likelihood_is_discrete`` and ``views`` (how the views were
        drawn: augmenter, J, ``views_seed``; empty when unknown).

    Raises:
        ValueError: if ``source`` carries no importance-sampling results, or its guide had
            point-mass sites (no importance weights).
    """
    import xarray as xr

    if isinstance(source, ImportanceSamples):
        from pssl.diagnostics.inference_data import observed_fingerprint

        if source.point_mass_sites:
            raise ValueError(
                f"the guide has point-mass sites {source.point_mass_sites}: no importance-sampled log p(x)"
            )
        log_px = per_item_evidence(source.log_weights)[0].numpy()
        khat = pareto_khat(source.log_weights)
        num_samples = source.num_samples
        items = np.arange(source.num_items)
        fingerprint = observed_fingerprint(source.observed) if source.observed is not None else ""
        discrete = bool(source.discrete_observation)
        views = ""
    else:
        groups = source.groups() if hasattr(source, "groups") else []
        if "importance_sampling" not in groups:
            raise ValueError(
                "held_out_elpd needs pssl's InferenceData (an importance_sampling group with log_px and "
                "khat); "
                f"got groups {list(groups)}"
            )
        group = source["importance_sampling"]
        log_px = np.asarray(group["log_px"].values, dtype=np.float64)
        khat = np.asarray(group["khat"].values, dtype=np.float64)
        num_samples = int(group.sizes["draw"])
        items = group["item"].values
        fingerprint = str(group.attrs.get("observed_fingerprint", ""))
        discrete = bool(group.attrs.get("likelihood_is_discrete", 0))
        views = str(group.attrs.get("views", ""))
    num_items = log_px.shape[0]
    if num_items < 2:
        raise ValueError(f"a held-out elpd needs at least 2 items, got {num_items}")
    if not np.all(np.isfinite(log_px)):
        raise ValueError(
            "some held-out log p(x_i) are not finite; the model gives an observed item probability 0"
        )
    good_k = khat_threshold(num_samples)
    pointwise = xr.DataArray(log_px, dims=("item",), coords={"item": items}, name="loo_i")
    pareto = xr.DataArray(khat, dims=("item",), coords={"item": items}, name="pareto_k")
    cls = _elpd_class()
    return cls(
        data=[
            float(log_px.sum()),
            float(math.sqrt(num_items * np.var(log_px))),
            math.nan,
            num_samples,
            num_items,
            bool(np.any(khat > good_k)),
            pointwise,
            pareto,
            "log",
            good_k,
            ESTIMATOR,
            fingerprint,
            discrete,
            views,
        ],
        index=[
            "elpd_loo",
            "se",
            "p_loo",
            "n_samples",
            "n_data_points",
            "warning",
            "loo_i",
            "pareto_k",
            "scale",
            "good_k",
            "estimator",
            "observed_fingerprint",
            "likelihood_is_discrete",
            "views",
        ],
    )


def compare_held_out(models: dict[str, Any], **compare_options: Any) -> Any:
    """``az.compare`` of held-out elpds, after checking that they are comparable.

    Args:
        models: name -> pssl ``InferenceData``, :class:`ImportanceSamples` or :func:`held_out_elpd` result.
        compare_options: passed to ``az.compare`` (e.g. ``method="stacking"``).

    Returns:
        ArviZ's comparison ``DataFrame`` (ranked by held-out elpd; ``se`` and ``dse`` as in
        ``az.compare``), with ``attrs["estimator"]`` saying what ``elpd_loo`` holds.

    Raises:
        ValueError: if fewer than two models are given, or they were scored on different
            views (augmenter, J or ``views_seed``) or observed values, or a pmf is compared
            with a density.
    """
    if len(models) < 2:
        raise ValueError(f"compare_held_out needs at least two models, got {len(models)}")
    elpds = {name: value if _is_elpd(value) else held_out_elpd(value) for name, value in models.items()}
    views = {name: str(e.get("views", "") or "") for name, e in elpds.items()}
    if len({v for v in views.values() if v}) > 1:
        raise ValueError(
            "the models were scored on different views, so their log p(x) are not comparable; score every "
            "model with the same augmenter, num_views and views_seed (pssl diagnose --views-seed): "
            f"views per model {views}"
        )
    fingerprints = {name: e.get("observed_fingerprint", "") for name, e in elpds.items()}
    if len({f for f in fingerprints.values() if f}) > 1:
        raise ValueError(
            "the models were scored on different observed values (held-out items, views or image layout), "
            f"so their log p(x) are not comparable: fingerprints {fingerprints}"
        )
    sizes = {name: int(e["n_data_points"]) for name, e in elpds.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"the models were scored on different numbers of items: {sizes}")
    kinds = {name: bool(e.get("likelihood_is_discrete", False)) for name, e in elpds.items()}
    if len(set(kinds.values())) > 1:
        raise ValueError(
            "a probability mass function and a density are not on one scale (a density's log p(x) depends on "
            f"the units of x): likelihood_is_discrete per model {kinds}"
        )
    table = arviz().compare(elpds, **compare_options)
    method = str(compare_options.get("method", "stacking")).lower()
    if method == "stacking":
        # ArviZ's stacking exponentiates each item's log density; for images (thousands of nats per
        # item) that underflows to 0 and the weights stay at their start. Subtracting each item's
        # largest log density across models changes no stacking weight and keeps exp() finite.
        shifted = _shift_items(elpds)
        weights = arviz().compare(shifted, **compare_options)["weight"]
        table["weight"] = weights.reindex(table.index)
    table.attrs["estimator"] = ESTIMATOR
    return table


def _shift_items(elpds: dict[str, Any]) -> dict[str, Any]:
    """Copies of the ELPDs with each item's largest log density (across models) subtracted."""
    top = np.max(np.stack([np.asarray(e["loo_i"].values) for e in elpds.values()]), axis=0)
    out = {}
    for name, e in elpds.items():
        copy = e.copy()
        copy["loo_i"] = e["loo_i"] - top
        copy["elpd_loo"] = float(np.sum(copy["loo_i"].values))
        out[name] = copy
    return out


def _is_elpd(value: Any) -> bool:
    from arviz.stats.stats_utils import ELPDData

    return isinstance(value, ELPDData)


def comparison_markdown(table: Any) -> str:
    """A comparison table with honest headers (nats, held-out) as Markdown."""
    lines = [
        "| model | rank | held-out elpd (nats, sum over items) | se | elpd diff | dse | weight "
        "| k-hat warning |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in table.iterrows():
        lines.append(
            f"| {name} | {int(row['rank'])} | {row['elpd_loo']:.1f} | {row['se']:.1f} | "
            f"{row['elpd_diff']:.1f} | {row['dse']:.1f} | {row['weight']:.2f} | {bool(row['warning'])} |"
        )
    return "\n".join(lines)


__all__ = ["ESTIMATOR", "comparison_markdown", "compare_held_out", "held_out_elpd"]
