"""Posterior diagnostics of trained methods, with ArviZ.

Diagnostics read a trained method only through its public interface
(``model``, ``guide``, ``encode``, ``sample_images``) and Pyro traces:

* :mod:`~pssl.diagnostics.proposal`: the hierarchical importance proposal (y from all
  views' encodings and p(y), then each z_j from p(z_j | y) times its encoding),
  independent of the training guide; enumerated sites summed exactly; tempered likelihoods;
* :mod:`~pssl.diagnostics.importance`: importance sampling from that proposal (or the
  guide), the IWAE estimate of log p(x) (nats per item, bits per dimension), the
  ELBO-to-IWAE gap, Pareto k-hat and ESS of the weights, KL per latent dimension and
  active units;
* :mod:`~pssl.diagnostics.ais`: annealed importance sampling with HMC transitions, a
  reference estimate of log p(x) (Wu et al. 2017);
* :mod:`~pssl.diagnostics.predictive`: posterior and prior predictive checks;
* :mod:`~pssl.diagnostics.structure`: within/across-item variance, alignment,
  uniformity and effective rank of any method's representation over augmented views;
* :mod:`~pssl.diagnostics.inference_data`: :func:`to_inference_data`, the draws as an
  ArviZ ``InferenceData`` whose groups mean what ArviZ assumes (importance-resampled
  ``posterior``, ``prior``, ``prior_predictive``, ``posterior_predictive``, ``observed_data``);
* :mod:`~pssl.diagnostics.elpd`: the held-out elpd (importance-sampled log p(x_i) of test
  items) as an ArviZ ``ELPDData`` for ``az.compare``;
* :mod:`~pssl.diagnostics.report`: :func:`diagnose` and :func:`diagnose_run`, which
  write ``diagnostics.json``/``.md``/``.nc`` and PNG figures into a run directory.

Example:
    >>> from pssl.diagnostics import diagnose_run
    >>> result = diagnose_run("runs/simvae-fashionmnist-seed0", num_samples=100)
    >>> print("\\n".join(result["readings"].values()))
"""

from __future__ import annotations

from pssl.diagnostics.ais import AISResult, ais_log_evidence, ais_summary
from pssl.diagnostics.elpd import compare_held_out, comparison_markdown, held_out_elpd
from pssl.diagnostics.importance import (
    ImportanceSamples,
    bits_per_dim,
    collapse_summary,
    evidence_summary,
    importance_ess,
    importance_sample,
    iwae_log_evidence,
    khat_threshold,
    pareto_khat,
    pareto_summary,
)
from pssl.diagnostics.inference_data import (
    LOO_REFUSAL,
    LooNotApplicableError,
    build_inference_data,
    read_netcdf,
    to_inference_data,
    write_netcdf,
)
from pssl.diagnostics.predictive import image_statistics, predictive_summary, prior_samples
from pssl.diagnostics.proposal import PROPOSALS, TEMPERINGS, TemperingError
from pssl.diagnostics.report import DEFAULT_MAX_ITEMS, DEFAULT_NUM_SAMPLES, diagnose, diagnose_run
from pssl.diagnostics.structure import (
    compare_structure,
    effective_rank,
    representation_structure,
    structure_metrics,
)

__all__ = [
    "AISResult",
    "PROPOSALS",
    "TEMPERINGS",
    "TemperingError",
    "ais_log_evidence",
    "ais_summary",
    "LOO_REFUSAL",
    "LooNotApplicableError",
    "build_inference_data",
    "compare_held_out",
    "comparison_markdown",
    "held_out_elpd",
    "iwae_log_evidence",
    "DEFAULT_MAX_ITEMS",
    "DEFAULT_NUM_SAMPLES",
    "ImportanceSamples",
    "bits_per_dim",
    "collapse_summary",
    "compare_structure",
    "diagnose",
    "diagnose_run",
    "effective_rank",
    "evidence_summary",
    "image_statistics",
    "importance_ess",
    "importance_sample",
    "khat_threshold",
    "pareto_khat",
    "pareto_summary",
    "predictive_summary",
    "prior_samples",
    "read_netcdf",
    "representation_structure",
    "structure_metrics",
    "to_inference_data",
    "write_netcdf",
]
