"""Run every diagnostic on a trained method and write the results into its run directory.

Files written by :func:`diagnose` with ``out_dir`` (and so by :func:`diagnose_run`):

* ``diagnostics.json``: every summary, plus ``readings`` (one line per diagnostic)
  and ``conventions`` (how the numbers were computed);
* ``diagnostics.md``: the readings and key figures for a person;
* ``diagnostics.nc``: the ArviZ ``InferenceData`` (generative methods; see
  :mod:`pssl.diagnostics.inference_data`);
* ``diagnostics_khat.png``, ``diagnostics_ppc.png``, ``diagnostics_latents.png``,
  ``diagnostics_prior_samples.png`` (generative methods) and
  ``diagnostics_structure.png`` (every method).

Evaluation views: diagnostics evaluate a method on the views it was trained
to model, i.e. ``J`` views of each held-out image drawn by the run's own
augmentation preset (augmentation is data-side, so diagnostics may use it) with
a fixed seed. For SimVAE the importance weight covers the whole group of ``J``
views and its content latent y; for a VAE it is the product over the views.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pssl.checks import int_at_least
from pssl.diagnostics.elpd import ESTIMATOR
from pssl.diagnostics.importance import (
    ACTIVE_UNIT_THRESHOLD,
    collapse_summary,
    evidence_summary,
    importance_sample,
    pareto_summary,
)
from pssl.diagnostics.inference_data import LOO_REFUSAL, build_inference_data, write_netcdf
from pssl.diagnostics.predictive import STATISTICS, predictive_summary, prior_samples
from pssl.diagnostics.structure import (
    as_model_input,
    compare_structure,
    representation_structure,
    structure_reading,
)
from pssl.models.base import SSLModel
from pssl.rundir import claim, read_run_config, write_text

DEFAULT_NUM_SAMPLES = 100
"""K guide draws per item: PSIS's reliability threshold is then min(1 - 1/log10(100), 0.7) = 0.5,
and its tail fit uses min(K/5, 3 sqrt(K)) = 20 draws."""

ESTIMATORS = ("is", "ais")
"""``is``: importance sampling only; ``ais``: annealed importance sampling next to it."""

DEFAULT_MAX_ITEMS = 256
"""Held-out items diagnosed (the first ones of the test split)."""

CONVENTIONS = {
    "log_px": (
        "IWAE estimate logsumexp_k log w_k - log K with K proposal draws per item, log w = "
        "log p(x, latents) - log q(latents | x) over the item's J views (nats per item), enumerated "
        "sites summed exactly; beta and the minibatch factor are training devices and are not applied; "
        "the likelihood's tempering: see 'tempering'"
    ),
    "bits_per_dim": (
        "-log p(x) / (D ln 2) with D the observed values per item counted from the x site (J C H W for J "
        "views of C x H x W images; C H W for the multimodal SimVAE, whose views are the two half-images); "
        "for a continuous density on 8-bit data scaled as k/255, log 255 per "
        "dimension is added (the probability of the 1/255-wide bin); a discrete likelihood needs none; a "
        "Bernoulli likelihood on grey values is a cross-entropy, not a normalised probability"
    ),
    "khat": (
        "PSIS Pareto k-hat of each item's importance ratios (ArviZ psislw, reff = 1); "
        "threshold min(1 - 1/log10(K), 0.7)"
    ),
    "ess": "importance-sampling effective sample size 1 / sum_k wbar_k^2 per item",
    "kl_per_dim": (
        "KL(q(z|x) || p) per latent dimension, nats per view averaged over items and views; "
        "p is the VAE prior, SimVAE's marginal prior of one view N(m, (s^2 + sigma^2) I) when p(y) "
        "and p(z|y) are Gaussian, or otherwise p(z | y) at the guide's y (Monte Carlo)"
    ),
    "active_units": "dimensions with Cov_x(E_q[z]) > 0.01 over items and views (Burda et al. 2016)",
    "views": (
        "J views of each held-out image drawn by the run's augmentation preset with views_seed (default 0 "
        "for every run, whatever its training seed), so runs are scored on the same views"
    ),
    "proposal": (
        "hierarchical (default): y from its posterior given all J views' encoder messages (encoder Gaussian "
        "over the marginal prior of z) and p(y), then each z_j from p(z_j | y) times its message; enumerated "
        "sites summed exactly; independent of the training y-guide. guide: the training guide"
    ),
    "tempering": (
        "a likelihood scale c != 1 on a Gaussian (Laplace) is the proper density with variance std^2 / c "
        "(scale b / c) and is scored as such; a tempered Bernoulli or other pmf has no log p(x) and is "
        "refused unless tempering=untempered, which scores the untempered model (labelled)"
    ),
    "ais": (
        "annealed importance sampling from the hierarchical proposal with HMC transitions (Wu et al. 2017), "
        "C chains per item, T steps, sigmoidal schedule; a reference for the IS estimate"
    ),
    "held_out_elpd": ESTIMATOR + "; pssl.diagnostics.held_out_elpd(idata) gives it as an ArviZ ELPDData",
    "posterior_group": (
        "diagnostics.nc's posterior holds importance-resampled guide draws (PSIS-smoothed weights); the raw "
        "guide draws are in variational_posterior"
    ),
    "predictive": "posterior predictive checks use the resampled posterior draws",
    "loo": LOO_REFUSAL,
}


KL_REFERENCES = {
    "prior": "the prior p(z)",
    "marginal": "the marginal prior of one view",
    "conditional": "p(z | y)",
}

# --- readings ----------------------------------------------------------------------------


def evidence_reading(evidence: dict[str, Any]) -> str:
    if not evidence["is_bound"]:
        return (
            f"the guide has point-mass sites {evidence['point_mass_sites']}: the weights are a plug-in "
            f"objective, not importance weights, so {evidence['log_px_iwae_nats']:.4g} nats per item is not "
            "an estimate of log p(x)"
        )
    unit = "bits/dim" + (
        ", discrete likelihood"
        if evidence["discrete_likelihood"]
        else ", dequantised"
        if evidence["dequantised"]
        else ""
    )
    notes = [evidence["note"]] if evidence.get("note") else []
    if evidence.get("improper_sites"):
        notes.append(
            f"improper prior at sites {evidence['improper_sites']}: p(x) is not normalised, the value is "
            "defined only up to a constant and is not comparable across models"
        )
    if evidence.get("tempering") == "untempered":
        notes.append("of the untempered model: the run was trained with a tempered likelihood")
    elif evidence.get("tempering") == "proper":
        notes.append("the tempered Gaussian/Laplace likelihood scored as the proper density it is")
    caveat = f" ({'; '.join(notes)})" if notes else ""
    return (
        f"log p(x) ~ {evidence['log_px_iwae_nats']:.5g} nats per item "
        f"({evidence['bits_per_dim']:.4g} {unit}) from {evidence['num_samples']} importance samples; "
        f"the ELBO is {evidence['iwae_minus_elbo_nats']:.3g} nats lower, so q(z|x) is at least that far "
        "(in KL) from the posterior on average" + caveat
    )


def khat_reading(pareto: dict[str, Any]) -> str:
    above_bad, above = pareto["share_above_0_7"], pareto["share_above_threshold"]
    threshold, k = pareto["khat_threshold"], pareto["num_samples"]
    ess = f"mean ESS {pareto['ess_mean']:.3g} of {k} draws"
    if above_bad > 0:
        return (
            f"k-hat above 0.7 for {above_bad:.0%} of items (above the K={k} threshold {threshold:.2f} for "
            f"{above:.0%}): the encoder's posterior is too narrow or misplaced for those items, and their "
            f"log p(x) estimates are unreliable; {ess}"
        )
    if above > 0:
        return (
            f"k-hat between {threshold:.2f} and 0.7 for {above:.0%} of items: more draws (larger K) are "
            f"needed for reliable estimates there; {ess}"
        )
    return f"k-hat below {threshold:.2f} for every item: importance sampling from q(z|x) is reliable; {ess}"


def collapse_reading(collapse: dict[str, Any]) -> str:
    if "active_units" not in collapse:
        return "no per-view latent z in the guide: active units not measured"
    active, dim = collapse["active_units"], collapse["latent_dim"]
    line = f"{active} of {dim} latent dimensions are active (Cov_x E_q[z] > {ACTIVE_UNIT_THRESHOLD})"
    kl = collapse.get("kl_per_dim")
    if kl is not None:
        live = [v for i, v in enumerate(kl) if i in collapse["active_dims"]]
        dead = [v for i, v in enumerate(kl) if i not in collapse["active_dims"]]
        parts = []
        if live:
            parts.append(f"{sum(live) / len(live):.3g} nats per active dimension")
        if dead:
            parts.append(f"{sum(dead) / len(dead):.3g} nats per inactive dimension")
        reference = KL_REFERENCES.get(collapse["kl_reference"], collapse["kl_reference"])
        line += f"; KL to {reference}: " + ", ".join(parts)
    if active < dim:
        line += f": {dim - active} dimensions have collapsed (their encoder mean ignores x)"
    else:
        line += ": no posterior collapse"
    return line


def predictive_reading(predictive: dict[str, dict[str, float]]) -> str:
    if not predictive:
        return "no replicated observations: posterior predictive check not run"
    worst = max(predictive, key=lambda k: abs(predictive[k]["pvalue_mean"] - 0.5))
    p = predictive[worst]["pvalue_mean"]
    if 0.1 <= p <= 0.9:
        values = ", ".join(f"{k} {v['pvalue_mean']:.2f}" for k, v in predictive.items())
        return f"posterior predictive statistics agree with the held-out views (mean p-values {values})"
    direction = "over" if p > 0.5 else "under"
    return (
        f"posterior predictive: the model {direction}-produces {worst} (mean p-value {p:.2f}; "
        f"{predictive[worst]['share_outside_95']:.0%} of views outside the central 95% of their replicates; "
        f"observed mean {predictive[worst]['observed_mean']:.3g}, "
        f"replicated {predictive[worst]['replicated_mean']:.3g})"
    )


# --- the driver --------------------------------------------------------------------------


def diagnose(
    model: SSLModel,
    images: torch.Tensor,
    *,
    augmenter: Any,
    num_views: int,
    num_samples: int = DEFAULT_NUM_SAMPLES,
    seed: int = 0,
    eight_bit: bool | None = None,
    out_dir: str | Path | None = None,
    name: str | None = None,
    max_images_per_pass: int = 4096,
    extra: dict[str, Any] | None = None,
    views_seed: int = 0,
    proposal: str = "hierarchical",
    tempering: str = "auto",
    estimator: str = "is",
    ais_options: dict[str, Any] | None = None,
    guide: Any = None,
    proposal_scale: float | None = None,
) -> dict[str, Any]:
    """Every diagnostic of a trained method on held-out images.

    Args:
        model: any method; importance sampling, collapse and predictive checks
            run for generative ones (``model.generative``), latent structure for all.
        images: ``(N, C, H, W)`` held-out images (``uint8`` or floats in [0, 1]).
        augmenter: the view augmenter (``augmenter(images, J, generator) -> (N, J, C, H, W)``).
        num_views: J views per item (the structure metrics use ``max(J, 2)``).
        num_samples: K guide draws per item.
        seed: seeds the draws.
        eight_bit: the images are 8-bit values (default: ``images.dtype == uint8``).
        out_dir: write the files of the module docstring there.
        name: the method's name in titles and outputs.
        max_images_per_pass: memory bound of the importance-sampling passes.
        extra: plain facts recorded at the top of the output (run directory, split, ...).
        views_seed: seeds the views (default 0 for every run: runs are scored on the same views).
        proposal: ``"hierarchical"`` or ``"guide"`` (see :func:`~pssl.diagnostics.importance_sample`).
        tempering: ``"auto"`` or ``"untempered"``; a tempering without a proper density is
            reported (``log_evidence.refused``) instead of estimated under ``"auto"``.
        estimator: ``"is"`` (importance sampling) or ``"ais"`` (also annealed importance
            sampling, reported next to it in the ``ais`` section).
        ais_options: ``num_chains``, ``num_steps``, ``leapfrog_steps``, ``step_size`` of
            :func:`~pssl.diagnostics.ais.ais_log_evidence`.
        guide: a guide for global latents (see :func:`~pssl.diagnostics.importance_sample`).
        proposal_scale: std factor of the hierarchical proposal's messages.

    Returns:
        The dict written to ``diagnostics.json``.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; accepted: {', '.join(ESTIMATORS)}")
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    if images.shape[0] < 2:
        raise ValueError(f"need at least 2 held-out images, got {images.shape[0]}")
    eight_bit = images.dtype == torch.uint8 if eight_bit is None else eight_bit
    floats = as_model_input(model, images)
    name = name or type(model).__name__
    out: dict[str, Any] = {
        "model": name,
        "generative": bool(model.generative),
        "num_items": int(floats.shape[0]),
        "num_views": int(num_views),
        "seed": int(seed),
        "views_seed": int(views_seed),
        **(extra or {}),
    }
    readings: dict[str, str] = {}
    files: dict[str, str] = {}
    out_path = Path(out_dir) if out_dir is not None else None
    if out_path is not None:
        out_path.mkdir(parents=True, exist_ok=True)

    if model.generative:
        from pssl.diagnostics.inference_data import views_description
        from pssl.diagnostics.proposal import TemperingError

        views = augmenter(floats, num_views, torch.Generator().manual_seed(views_seed))
        out["views"] = views_description(augmenter, num_views, views_seed)
        try:
            sections, section_readings, idata, khat = generative_diagnostics(
                model,
                views,
                num_samples=num_samples,
                seed=seed,
                eight_bit=eight_bit,
                max_images_per_pass=max_images_per_pass,
                name=name,
                proposal=proposal,
                tempering=tempering,
                estimator=estimator,
                ais_options=ais_options,
                guide=guide,
                views_label=out["views"],
                proposal_scale=proposal_scale,
            )
        except TemperingError as err:
            sections = {"log_evidence": {"refused": str(err)}}
            section_readings = {"log_evidence": f"no log p(x): {err}"}
            idata = None
        out.update(sections)
        readings.update(section_readings)
        if out_path is not None and idata is not None:
            files.update(
                _write_generative_files(
                    model, idata, khat, sections["importance"], sections["collapse"], out_path, name, seed
                )
            )

    structure_views = max(num_views, 2)
    structure = representation_structure(
        model, floats, augmenter, structure_views, torch.Generator().manual_seed(seed + 1)
    )
    out["structure"] = structure
    readings["structure"] = structure_reading(structure)
    out["readings"] = readings
    out["conventions"] = dict(CONVENTIONS)
    if out_path is not None:
        files["structure_plot"] = compare_structure(
            {name: structure}, out_path / "diagnostics_structure.png"
        ).name
        files["json"] = "diagnostics.json"
        files["markdown"] = "diagnostics.md"
        out["files"] = files
        _write_text(
            out_path / "diagnostics.json", json.dumps(_jsonable(out), indent=2, allow_nan=False) + "\n"
        )
        _write_text(out_path / "diagnostics.md", markdown(out))
    return out


def generative_diagnostics(
    model: SSLModel,
    views: torch.Tensor,
    *,
    num_samples: int,
    seed: int,
    eight_bit: bool,
    max_images_per_pass: int = 4096,
    name: str = "model",
    proposal: str = "hierarchical",
    tempering: str = "auto",
    estimator: str = "is",
    ais_options: dict[str, Any] | None = None,
    guide: Any = None,
    views_label: str = "",
    proposal_scale: float | None = None,
) -> tuple[dict[str, Any], dict[str, str], Any, np.ndarray]:
    """Importance sampling, k-hat, collapse and predictive checks on ``(N, J, C, H, W)`` views.

    Returns:
        ``(sections, readings, inference_data, khat)``: the JSON sections
        (``log_evidence``, ``importance``, ``collapse``, ``predictive``), their one-line
        readings, the ArviZ ``InferenceData`` and the per-item k-hat.
    """
    samples = importance_sample(
        model,
        views,
        num_samples=num_samples,
        seed=seed,
        max_images_per_pass=max_images_per_pass,
        proposal=proposal,
        tempering=tempering,
        guide=guide,
        proposal_scale=proposal_scale,
    )
    evidence = evidence_summary(samples, eight_bit=eight_bit, likelihood=getattr(model, "likelihood", None))
    if evidence["binary_likelihood"] and not bool(((views == 0) | (views == 1)).all()):
        evidence["note"] = "Bernoulli likelihood on grey views: a cross-entropy, not a log-probability"
    pareto, khat, ess = pareto_summary(samples)
    collapse = collapse_summary(samples)
    idata = None
    if evidence["is_bound"]:
        idata = build_inference_data(
            model,
            samples,
            seed=seed,
            max_images_per_pass=max_images_per_pass,
            attrs={"model": name, "seed": seed, "views": views_label},
        )
        predictive = predictive_summary(
            {k: torch.from_numpy(idata.observed_data[k].values) for k in STATISTICS},
            {k: torch.from_numpy(idata.posterior_predictive[k].values[0]) for k in STATISTICS},
        )
    else:
        predictive = predictive_summary(samples.observed_statistics, samples.replicated_statistics)
    sections = {
        "num_samples": int(num_samples),
        "log_evidence": evidence,
        "importance": pareto,
        "collapse": collapse,
        "predictive": predictive,
    }
    if idata is not None:
        from pssl.diagnostics.elpd import held_out_elpd

        elpd = held_out_elpd(idata)
        sections["held_out_elpd"] = {
            "elpd_nats": float(elpd["elpd_loo"]),
            "se_nats": float(elpd["se"]),
            "num_items": int(elpd["n_data_points"]),
            "num_samples": int(elpd["n_samples"]),
            "items_above_khat_threshold": int(np.sum(np.asarray(elpd["pareto_k"]) > elpd["good_k"])),
            "estimator": elpd["estimator"],
        }
    if estimator == "ais":
        from pssl.diagnostics.ais import ais_log_evidence, ais_summary
        from pssl.diagnostics.importance import per_item_evidence

        ais = ais_log_evidence(
            model,
            views,
            seed=seed,
            guide=guide,
            tempering=tempering,
            max_images_per_pass=max_images_per_pass,
            proposal_scale=proposal_scale,
            **(ais_options or {}),
        )
        sections["ais"] = ais_summary(ais, per_item_evidence(samples.log_weights)[0])
    readings = {
        "log_evidence": evidence_reading(evidence),
        "khat": khat_reading(pareto)
        if evidence["is_bound"]
        else "not meaningful: with point-mass guide sites the ratios are not importance weights",
        "collapse": collapse_reading(collapse),
        "predictive": predictive_reading(predictive),
    }
    if "held_out_elpd" in sections:
        held = sections["held_out_elpd"]
        readings["held_out_elpd"] = (
            f"held-out elpd {held['elpd_nats']:.6g} ± {held['se_nats']:.3g} nats over "
            f"{held['num_items']} items "
            f"(importance-sampled log p(x_i), K={held['num_samples']}); compare models with "
            "az.compare({name: pssl.diagnostics.held_out_elpd(read_netcdf(path))}); az.loo does not apply"
        )
    if "ais" in sections:
        ais = sections["ais"]
        readings["ais"] = (
            f"AIS log p(x) ~ {ais['log_px_ais_nats']:.5g} nats per item ({ais['num_chains']} chains, "
            f"{ais['num_steps']} steps, acceptance {ais['acceptance_mean']:.2f}); IS - AIS: mean "
            f"{ais['is_minus_ais_mean_nats']:.3g}, median |.| {ais['is_minus_ais_abs_median_nats']:.3g}, "
            f"max |.| {ais['is_minus_ais_abs_max_nats']:.3g} nats; {ais['share_within_1_nat']:.0%} of items "
            "within 1 nat"
        )
    return sections, readings, idata, khat


def _write_generative_files(
    model: SSLModel,
    idata: Any,
    khat: np.ndarray,
    pareto: dict[str, Any],
    collapse: dict[str, Any],
    out_path: Path,
    name: str,
    seed: int,
) -> dict[str, str]:
    from pssl.diagnostics.plots import plot_khat, plot_latents, plot_ppc, plot_prior_predictive
    from pssl.plots import image_grid

    files = {}
    if idata is not None:
        files["netcdf"] = write_netcdf(idata, out_path / "diagnostics.nc").name
    files["khat_plot"] = plot_khat(
        khat,
        pareto["khat_threshold"],
        out_path / "diagnostics_khat.png",
        title=f"{name}: Pareto k-hat per item",
    ).name
    if idata is not None and "posterior_predictive" in idata.groups():
        files["ppc_plot"] = plot_ppc(idata, out_path / "diagnostics_ppc.png", seed=seed).name
    if idata is not None and "prior_predictive" in idata.groups():
        files["prior_predictive"] = plot_prior_predictive(
            idata, out_path / "diagnostics_prior_predictive.png"
        ).name
    if "active_units" in collapse or collapse.get("kl_per_dim") is not None:
        files["latents_plot"] = plot_latents(
            collapse, out_path / "diagnostics_latents.png", threshold=ACTIVE_UNIT_THRESHOLD
        ).name
    prior = prior_samples(model, 20, seed=seed)
    if prior is not None:
        files["prior_samples"] = image_grid(
            [prior[:10], prior[10:]],
            out_path / "diagnostics_prior_samples.png",
            row_titles=["prior", "prior"],
        ).name
    return files


def markdown(result: dict[str, Any]) -> str:
    """The readings and key figures of a diagnostics dict, as Markdown."""
    lines = [f"# Diagnostics: {result['model']}", ""]
    lines.append(
        f"{result['num_items']} held-out items, {result['num_views']} views each, seed {result['seed']}"
        + (f", {result['num_samples']} importance samples per item." if "num_samples" in result else ".")
    )
    lines += ["", "## Readings", ""]
    lines += [f"- **{key}**: {line}" for key, line in result["readings"].items()]
    lines += ["", "## Key figures", "", "| quantity | value |", "| --- | --- |"]
    rows: list[tuple[str, Any]] = []
    if "importance" in result:
        ev, pa, co = result["log_evidence"], result["importance"], result["collapse"]
        rows += [
            ("log p(x), IWAE (nats per item)", ev["log_px_iwae_nats"]),
            ("ELBO (nats per item)", ev["elbo_nats"]),
            ("IWAE - ELBO (nats per item)", ev["iwae_minus_elbo_nats"]),
            ("bits per dimension", ev["bits_per_dim"]),
            (f"share of items with k-hat > {pa['khat_threshold']:.2f}", pa["share_above_threshold"]),
            ("share of items with k-hat > 0.7", pa["share_above_0_7"]),
            ("mean importance ESS", pa["ess_mean"]),
            ("active units", f"{co.get('active_units')} of {co.get('latent_dim')}"),
        ]
    st = result["structure"]
    rows += [
        ("within/across-item variance", st["within_to_across"]),
        ("prior's within/across ratio", st["prior_within_to_across"]),
        ("alignment", st["alignment"]),
        ("uniformity", st["uniformity"]),
        ("effective rank", f"{st['effective_rank']:.3g} of {st['representation_dim']}"),
    ]
    for label, value in rows:
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        lines.append(f"| {label} | {shown} |")
    lines += ["", "## Conventions", ""]
    lines += [f"- **{key}**: {text}" for key, text in result["conventions"].items()]
    if result.get("files"):
        lines += ["", "## Files", ""]
        lines += [f"- `{path}`" for path in result["files"].values()]
    return "\n".join(lines) + "\n"


def diagnose_run(
    run_dir: str | Path,
    *,
    num_samples: int = DEFAULT_NUM_SAMPLES,
    max_items: int = DEFAULT_MAX_ITEMS,
    device: str = "cpu",
    seed: int | None = None,
    checkpoint: str | Path | None = None,
    allow_download: bool = False,
    data_root: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Diagnose a run directory (``pssl diagnose RUN_DIR``) and write the files into it.

    The run directory's lock is held throughout; the newest checkpoint is used
    (an error names it if it cannot be read) unless ``checkpoint`` names another,
    and ``diagnostics.json`` records which one and whether it ends the training.

    Args:
        run_dir: a run directory written by :func:`pssl.inference.train.train`.
        num_samples: K guide draws per item (default 100; see :data:`DEFAULT_NUM_SAMPLES`).
        max_items: diagnose the first ``max_items`` items of the test split (the
            validation split if there is no test split).
        device: where the model runs.
        seed: seeds the draws (default: the run's seed).
        checkpoint, allow_download, data_root: see :func:`pssl.inference.runs.load_run`.
        options: ``views_seed`` (default 0: every run on the same views), ``proposal``,
            ``tempering``, ``estimator``, ``ais_options`` of :func:`diagnose`.

    Returns:
        The dict written to ``RUN_DIR/diagnostics.json``.
    """
    int_at_least(max_items, "max_items", 2)
    read_run_config(run_dir)  # a folder that is not a run: one line, nothing created
    with claim(run_dir, create=False):
        return _diagnose_claimed_run(
            Path(run_dir),
            num_samples=num_samples,
            max_items=max_items,
            device=device,
            seed=seed,
            checkpoint=checkpoint,
            allow_download=allow_download,
            data_root=data_root,
            **options,
        )


def _diagnose_claimed_run(
    run_dir: Path,
    *,
    num_samples: int,
    max_items: int,
    device: str,
    seed: int | None,
    checkpoint: str | Path | None,
    allow_download: bool,
    data_root: str | None,
    **options: Any,
) -> dict[str, Any]:
    from pssl.augment import build_augmenter
    from pssl.inference.runs import load_run

    result = load_run(
        run_dir, device=device, checkpoint=checkpoint, allow_download=allow_download, data_root=data_root
    )
    config = result.config
    split_name, split = ("test", result.data.test) if len(result.data.test) else ("val", result.data.val)
    if len(split) < 2:
        raise ValueError(f"run {run_dir} has fewer than 2 held-out items (test and validation splits)")
    images = split.images[:max_items]
    augmenter = build_augmenter(
        config.augment.name, split.image_shape, config.augment.options, data=result.data
    )
    return diagnose(
        result.model,
        images,
        augmenter=augmenter,
        num_views=config.num_views,
        num_samples=num_samples,
        seed=config.seed if seed is None else seed,
        out_dir=run_dir,
        name=config.model.name,
        extra={
            "run_dir": str(run_dir),
            "data": config.data.name,
            "split": split_name,
            "augment": config.augment.name,
            "checkpoint": result.checkpoint.name,
            "step": result.global_step,
            "finished": result.finished,
        },
        **options,
    )


# --- files -------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.tolist())
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_text(path: Path, text: str) -> None:
    write_text(path, text)


__all__ = [
    "CONVENTIONS",
    "DEFAULT_MAX_ITEMS",
    "DEFAULT_NUM_SAMPLES",
    "diagnose",
    "diagnose_run",
    "generative_diagnostics",
    "markdown",
]
