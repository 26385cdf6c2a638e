"""Pyro model/guide pairs, priors and likelihoods (installed as ``pssl.models``).

Importing this package registers every built-in method, prior and likelihood.
"""

from __future__ import annotations

from pssl.models import contrastive, multimodal, redundancy, sites  # noqa: F401  (registers methods)
from pssl.models.base import MODELS, ModelSpec, SSLModel, ViewBatch, build_model, make_view_batch
from pssl.models.build import build_for_data, default_components
from pssl.models.likelihoods import LIKELIHOODS, Likelihood, bits_per_dim, build_likelihood
from pssl.models.priors import (
    PRIORS,
    VIEW_PRIORS,
    DistributionPrior,
    LatentPrior,
    ViewPrior,
    as_prior,
    build_prior,
    build_view_prior,
)
from pssl.models.simvae import SimVAE
from pssl.models.vae import VAE

__all__ = [
    "DistributionPrior",
    "as_prior",
    "bits_per_dim",
    "LIKELIHOODS",
    "MODELS",
    "PRIORS",
    "VIEW_PRIORS",
    "LatentPrior",
    "Likelihood",
    "ModelSpec",
    "SSLModel",
    "SimVAE",
    "VAE",
    "ViewBatch",
    "ViewPrior",
    "build_for_data",
    "build_likelihood",
    "build_model",
    "build_prior",
    "build_view_prior",
    "default_components",
    "make_view_batch",
    "sites",
]
