r"""Discriminative SSL as inference: a point-mass guide on z and log-factors in the model.

Every discriminative method here (:mod:`pssl.models.contrastive`: SimCLR, CLIP,
MoCo v2; :mod:`pssl.models.redundancy`: VICReg, Barlow Twins) is a
:class:`PointMassSSL`, a Pyro model/guide pair trained by the same ELBO and
loop as SimVAE:

* **guide**: the deterministic encoder as a point mass,
  ``z_ij ~ Delta(f_phi(x_ij))`` inside the ``items`` and ``views`` plates (batch
  ``(B, V)``, event ``d``). Its log q is 0, so the objective's ``entropy`` term is 0.
* **model**: ``z_ij`` from an *improper flat* prior (``ImproperUniform``, log p = 0,
  so the ``prior`` term is 0 and model and guide share the site ``z``; the model
  only ever runs replayed against the guide, never sampled from), then the
  method's objective as observed sites (a categorical over which batch member
  is the positive) or ``pyro.factor`` sites, inside the ``items`` plate, on the
  projection head's output ``g(z)``. The head is part of the model, the
  "likelihood" of the paper's reading (PAPER.md section 3).

Scaling. Each objective site carries a per-item value ``-t_i`` (a log-factor;
``t_i`` from :mod:`pssl.models.losses`) and sits inside the items plate, which
scales it by ``N / B``. The ELBO objective reports ``L / N`` per term and
minimises ``-L * B / N``, so for a minibatch

.. math::

    \text{loss} = \sum_{i=1}^{B} \sum_t t_i = B \cdot L_{\text{published}},
    \qquad \text{term}_t = -\frac{1}{B} \sum_i t_i = -L_t,

i.e. the loss is the published (batch-mean) loss times the batch size, as the
SimVAE loss is a minibatch sum, and each logged term is minus its published
value. A constant factor on the loss leaves Adam's steps unchanged (up to its
``eps``), so the published learning rates carry over.

``encode`` returns the backbone output (before the head) by default; the
``representation="projection"`` option gives the head's output instead.

Several processes: terms that couple items (InfoNCE negatives, batch
statistics) are computed against the batch gathered over processes with
:func:`pssl.collectives.gather_with_grad`, so the summed losses and gradients
of ``W`` ranks equal one process on the concatenated batch (the contract of
:mod:`pssl.collectives`); batch norm inside a head still uses each process's
own items unless the loop makes it global.
"""

from __future__ import annotations

from typing import Literal

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pssl.checks import positive_number
from pssl.models import sites
from pssl.models.base import ModelSpec, SSLModel, ViewBatch
from pssl.networks import ProjectionHead, build_encoder

REPRESENTATIONS = ("backbone", "projection")
Representation = Literal["backbone", "projection"]


def check_representation(representation: str) -> str:
    """Return ``representation`` if it is ``backbone`` or ``projection``, else raise ``ValueError``."""
    if representation not in REPRESENTATIONS:
        raise ValueError(f"unknown representation {representation!r}; accepted: {', '.join(REPRESENTATIONS)}")
    return representation


def check_positive(name: str, value: float) -> float:
    """Return ``value`` as a float if it is a positive finite number, else raise ``ValueError``."""
    return positive_number(value, name)


def check_min_items(model_name: str, batch: ViewBatch, minimum: int, why: str, processes: int = 1) -> None:
    """Raise a clear ``ValueError`` when the batch over all processes has too few items."""
    if batch.batch_size * processes < minimum:
        raise ValueError(
            f"model {model_name!r} needs at least {minimum} items per batch ({why}), got a batch of "
            f"{batch.batch_size * processes}; increase batch_size"
        )


def projection_head(
    input_dim: int, *, hidden_dim: int, output_dim: int, num_layers: int, batch_norm: bool
) -> ProjectionHead:
    """A :class:`~pssl.networks.ProjectionHead` with the options every method exposes."""
    return ProjectionHead(input_dim, hidden_dim, output_dim, num_layers, batch_norm)


def backbone_and_head(
    spec: ModelSpec, *, proj_hidden: int, proj_dim: int, proj_layers: int, proj_batch_norm: bool
) -> tuple[nn.Module, ProjectionHead]:
    """The spec's encoder network with a ``latent_dim`` output, and a projection head on it."""
    backbone = build_encoder(spec.encoder.name, spec.image_shape, spec.latent_dim, spec.encoder.options)
    head = projection_head(
        spec.latent_dim,
        hidden_dim=proj_hidden,
        output_dim=proj_dim,
        num_layers=proj_layers,
        batch_norm=proj_batch_norm,
    )
    return backbone, head


class PointMassSSL(SSLModel):
    """Base of the discriminative methods: point-mass guide on z, objective sites in the model.

    Subclasses implement :meth:`latent` (the guide's ``(B, V, d)`` point mass),
    :meth:`num_latent_views` (``V``, known without running the encoder) and
    :meth:`add_objective` (the observed / factor sites, called inside the items
    plate with the replayed z), and may override :meth:`encode`.

    Args:
        representation: ``backbone`` (default) or ``projection``, what :meth:`encode` returns.
        latent_dim: d, the backbone's output size.
        projection_dim: the head's output size (``representation_dim`` for ``projection``).
    """

    generative = False
    min_views = 2

    def __init__(self, *, representation: str, latent_dim: int, projection_dim: int) -> None:
        super().__init__()
        self.representation = check_representation(representation)
        self.latent_dim = latent_dim
        self.representation_dim = projection_dim if representation == "projection" else latent_dim

    # --- what a method provides ----------------------------------------------------------

    def latent(self, batch: ViewBatch) -> torch.Tensor:
        """The guide's point mass ``z``: ``(B, V, d)``."""
        raise NotImplementedError

    def num_latent_views(self, batch: ViewBatch) -> int:
        """V, the size of the views plate over z (``batch.num_views`` unless a method says otherwise)."""
        return batch.num_views

    def add_objective(
        self, batch: ViewBatch, latent: torch.Tensor, views_plate: pyro.plate
    ) -> dict[str, torch.Tensor] | None:
        """Write the objective's observed / factor sites (called inside the items plate).

        Args:
            batch: the minibatch.
            latent: the replayed point mass ``z``, ``(B, V, d)``.
            views_plate: the views plate over z (size V), to re-enter for per-view sites
                (a Pyro trace holds each plate once, so it is passed rather than re-created).

        Returns:
            Optional scalar diagnostics, recorded as ``pyro.deterministic`` sites outside
            the plates (reported by the objective, never part of the loss).
        """
        raise NotImplementedError

    def check_batch(self, batch: ViewBatch) -> None:
        """Raise ``ValueError`` for a batch the method cannot use (e.g. too few items for negatives)."""

    # --- Pyro programs -------------------------------------------------------------------

    def guide_program(self, batch: ViewBatch) -> None:
        """The encoder's point mass ``z ~ Delta(f(x))``."""
        with pyro.plate(sites.ITEMS, size=batch.num_items, subsample=batch.index, dim=sites.ITEMS_DIM):
            latent = self.latent(batch)
            with pyro.plate(sites.VIEWS, latent.shape[1], dim=sites.VIEWS_DIM):
                pyro.sample(sites.VIEW_LATENT, dist.Delta(latent, event_dim=1))

    def model_program(self, batch: ViewBatch) -> None:
        """Flat z replayed from the guide, then the objective's observed / factor sites."""
        if batch.views is None:
            raise ValueError(
                f"{type(self).__name__} is discriminative: it does not model images, so it cannot sample "
                "views; pass views (its model scores them, it does not generate them)"
            )
        self.check_batch(batch)
        num_views = self.num_latent_views(batch)
        flat = dist.ImproperUniform(
            dist.constraints.real,
            batch_shape=torch.Size((batch.batch_size, num_views)),
            event_shape=torch.Size((self.latent_dim,)),
        )
        with pyro.plate(sites.ITEMS, size=batch.num_items, subsample=batch.index, dim=sites.ITEMS_DIM):
            views_plate = pyro.plate(sites.VIEWS, num_views, dim=sites.VIEWS_DIM)
            with views_plate:
                latent = pyro.sample(sites.VIEW_LATENT, flat)
            diagnostics = self.add_objective(batch, latent, views_plate) or {}
        for name, value in diagnostics.items():
            pyro.deterministic(name, value.detach())

    @staticmethod
    def log_factor(name: str, per_item_loss: torch.Tensor) -> None:
        """``pyro.factor(name, -t_i)`` with ``t_i`` of shape ``(B,)``, inside the items plate."""
        pyro.factor(name, -per_item_loss.unsqueeze(-1))


class SingleEncoderSSL(PointMassSSL):
    """A point-mass method with one backbone ``f`` for every view and one head ``g``.

    The backbone is the guide's network; the head belongs to the model (the
    "likelihood" of the objective's observation).

    ``z_ij = f(x_ij)``; the objective reads ``g(z_ij)``.

    Args:
        backbone: ``(..., C, H, W) -> (..., d)``.
        head: ``(..., d) -> (..., p)``.
        representation: what :meth:`encode` returns (``backbone`` or ``projection``).
    """

    guide_networks = ("backbone",)

    def __init__(self, backbone: nn.Module, head: nn.Module, *, representation: str = "backbone") -> None:
        super().__init__(
            representation=representation, latent_dim=backbone.output_dim, projection_dim=head.output_dim
        )
        self.backbone = backbone
        self.head = head

    def latent(self, batch: ViewBatch) -> torch.Tensor:
        return self.backbone(batch.views)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        representation = self.backbone(images)
        return self.head(representation) if self.representation == "projection" else representation


__all__ = [
    "REPRESENTATIONS",
    "PointMassSSL",
    "Representation",
    "SingleEncoderSSL",
    "check_min_items",
    "check_positive",
    "check_representation",
    "projection_head",
]
