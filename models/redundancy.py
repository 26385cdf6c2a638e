r"""Redundancy-reduction methods as Pyro model/guide pairs: VICReg and Barlow Twins.

Both are :class:`~pssl.models.discriminative.PointMassSSL` methods with one
backbone for every view and an *expander* head (3-layer MLP with batch norm,
as published); each loss term is a separate ``pyro.factor`` of the expander
outputs ``e_ij = g(z_ij)``, inside the items plate, with the per-item value
``-t_i`` from :mod:`pssl.models.losses`, so the logged term is minus the
published term and the minibatch loss is ``B`` times the published loss.

* ``vicreg`` (Bardes et al. 2022): factors ``invariance`` (``25 * mse``; the role
  of log p(z | y), pulling an item's views together), ``variance`` (``25 *``
  hinge on each feature's standard deviation, gamma 1, eps 1e-4, averaged over
  the two branches as in the official implementation) and
  ``covariance`` (``1 *`` off-diagonal squared covariances / p, summed over the
  branches), the last two
  standing for the spread of y that stops collapse (PAPER.md section 3).
* ``barlow`` (Zbontar et al. 2021): factors ``on_diagonal``
  (``sum_f (1 - C_ff)^2``) and ``off_diagonal`` (``lambda sum_{f != g} C_fg^2``,
  lambda 5e-3) of the cross-correlation of the batch-standardised views.

The variance, covariance and cross-correlation terms are batch statistics: every
item carries the same value, and the gradient of each item's factor flows
through the whole batch, exactly as for the published batch loss.
"""

from __future__ import annotations

import pyro
import torch
from torch import nn

from pssl.collectives import gather_with_grad, world_size
from pssl.models.base import MODELS, ModelSpec, ViewBatch, check_num_views
from pssl.models.discriminative import (
    Representation,
    SingleEncoderSSL,
    backbone_and_head,
    check_min_items,
    check_positive,
)
from pssl.models.losses import barlow_twins_terms, vicreg_terms


def _check_batch(model_name: str, batch: ViewBatch) -> None:
    if batch.num_views < 2:
        raise ValueError(f"model {model_name!r} needs num_views >= 2, got a batch of {batch.num_views} views")
    check_min_items(model_name, batch, 2, "its terms are statistics over the batch", world_size())


class VICReg(SingleEncoderSSL):
    """VICReg: invariance, variance and covariance factors (see the module docstring).

    Args:
        backbone, head: f and the expander g.
        invariance_weight, variance_weight, covariance_weight: lambda, mu, nu (25, 25, 1).
        gamma: target standard deviation; eps: floor inside the square root.
        representation: ``backbone`` or ``projection``.
    """

    pyro_name = "vicreg"

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        *,
        invariance_weight: float = 25.0,
        variance_weight: float = 25.0,
        covariance_weight: float = 1.0,
        gamma: float = 1.0,
        eps: float = 1e-4,
        representation: str = "backbone",
    ) -> None:
        super().__init__(backbone, head, representation=representation)
        self.weights = {
            "invariance_weight": check_positive("invariance_weight", invariance_weight),
            "variance_weight": check_positive("variance_weight", variance_weight),
            "covariance_weight": check_positive("covariance_weight", covariance_weight),
        }
        self.gamma = check_positive("gamma", gamma)
        self.eps = check_positive("eps", eps)

    def check_batch(self, batch: ViewBatch) -> None:
        _check_batch("vicreg", batch)

    def add_objective(self, batch: ViewBatch, latent: torch.Tensor, views_plate: pyro.plate) -> None:
        embeddings = self.head(latent)
        terms = vicreg_terms(
            embeddings,
            gamma=self.gamma,
            eps=self.eps,
            batch_embeddings=gather_with_grad(embeddings),
            **self.weights,
        )
        for name, per_item in terms.items():
            self.log_factor(name, per_item)

    def describe(self) -> dict[str, object]:
        return {**self.weights, "gamma": self.gamma, "eps": self.eps, "representation": self.representation}


@MODELS.register(
    "vicreg", help="VICReg: point-mass encoder, invariance/variance/covariance log-factors (25/25/1)"
)
def build_vicreg(
    *,
    spec: ModelSpec,
    invariance_weight: float = 25.0,
    variance_weight: float = 25.0,
    covariance_weight: float = 1.0,
    gamma: float = 1.0,
    eps: float = 1e-4,
    proj_hidden: int = 512,
    proj_dim: int = 512,
    proj_layers: int = 3,
    proj_batch_norm: bool = True,
    representation: Representation = "backbone",
) -> VICReg:
    """VICReg with a 3-layer batch-norm expander (published: 8192 wide; smaller by default here)."""
    check_num_views("vicreg", spec.num_views, 2)
    backbone, head = backbone_and_head(
        spec,
        proj_hidden=proj_hidden,
        proj_dim=proj_dim,
        proj_layers=proj_layers,
        proj_batch_norm=proj_batch_norm,
    )
    return VICReg(
        backbone,
        head,
        invariance_weight=invariance_weight,
        variance_weight=variance_weight,
        covariance_weight=covariance_weight,
        gamma=gamma,
        eps=eps,
        representation=representation,
    )


class BarlowTwins(SingleEncoderSSL):
    """Barlow Twins: on- and off-diagonal cross-correlation factors (see the module docstring).

    Args:
        backbone, head: f and the projector g.
        off_diagonal_weight: lambda (5e-3).
        representation: ``backbone`` or ``projection``.
    """

    pyro_name = "barlow"

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        *,
        off_diagonal_weight: float = 5e-3,
        representation: str = "backbone",
    ) -> None:
        super().__init__(backbone, head, representation=representation)
        self.off_diagonal_weight = check_positive("off_diagonal_weight", off_diagonal_weight)

    def check_batch(self, batch: ViewBatch) -> None:
        _check_batch("barlow", batch)

    def add_objective(self, batch: ViewBatch, latent: torch.Tensor, views_plate: pyro.plate) -> None:
        embeddings = self.head(latent)
        terms = barlow_twins_terms(
            embeddings,
            off_diagonal_weight=self.off_diagonal_weight,
            batch_embeddings=gather_with_grad(embeddings),
        )
        for name, per_item in terms.items():
            self.log_factor(name, per_item)

    def describe(self) -> dict[str, object]:
        return {"off_diagonal_weight": self.off_diagonal_weight, "representation": self.representation}


@MODELS.register(
    "barlow", help="Barlow Twins: point-mass encoder, cross-correlation log-factors (lambda 5e-3)"
)
def build_barlow(
    *,
    spec: ModelSpec,
    off_diagonal_weight: float = 5e-3,
    proj_hidden: int = 512,
    proj_dim: int = 512,
    proj_layers: int = 3,
    proj_batch_norm: bool = True,
    representation: Representation = "backbone",
) -> BarlowTwins:
    """Barlow Twins with a 3-layer batch-norm projector (published: 8192 wide; smaller by default here)."""
    check_num_views("barlow", spec.num_views, 2)
    backbone, head = backbone_and_head(
        spec,
        proj_hidden=proj_hidden,
        proj_dim=proj_dim,
        proj_layers=proj_layers,
        proj_batch_norm=proj_batch_norm,
    )
    return BarlowTwins(backbone, head, off_diagonal_weight=off_diagonal_weight, representation=representation)
