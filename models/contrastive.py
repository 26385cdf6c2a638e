r"""Contrastive methods as Pyro model/guide pairs: SimCLR, CLIP and MoCo v2.

Each is a :class:`~pssl.models.discriminative.PointMassSSL`: a point-mass guide
on the backbone output z and, in the model, a categorical observation
``infonce``: *which candidate is my positive*, with logits from the projection
head ``g(z)``. Its log-likelihood is minus the method's InfoNCE loss, term by
term (proved on fixed tensors in ``tests/test_discriminative.py``). The site's
scale makes each item's value the mean over its anchors, so the logged
``infonce`` term is minus the published loss and the minibatch loss is ``B``
times it (see :mod:`pssl.models.discriminative`).

* ``simclr``: for each view ``(i, j)`` a categorical over the other ``B J - 1``
  views of the batch, logits ``cos(g(z_ij), g(z_b)) / tau``, observed at its
  positives ``(i, k), k != j`` (one for ``J = 2``: NT-Xent; ``J - 1`` in general,
  the multi-positive form, see :func:`~pssl.models.losses.nt_xent_terms`). The
  site has batch ``(B, J)`` and event ``J - 1`` and scale ``1 / (J (J - 1))``.
* ``clip``: modality A (top half of view 0) and B (bottom half of view ``J - 1``,
  see :mod:`pssl.models.multimodal`) with their own backbone and head; the
  views plate over z indexes the modality, and the categorical of "view" 0 picks
  item i's B among all B's (row i of ``s A B^T``), that of "view" 1 item i's A
  (column i). Scale ``1/2``: CLIP's symmetric loss. The logit scale
  ``s = exp(t)`` is learned, ``t`` initialised to ``log(1 / 0.07)`` and clamped to
  ``<= log(100)`` (in the forward pass and, as CLIP does, on the parameter in
  :meth:`CLIP.after_step`).
* ``moco``: the query is ``g_q(f_q(view 0))`` (the only z, views plate of size 1),
  the key ``g_k(f_k(view 1))`` from a momentum copy of backbone and head, under
  ``no_grad``; a categorical over ``[key, queue of K negatives]`` observed at 0.
  :meth:`MoCo.after_step` (called by the loop after each optimiser step, and by a
  plain-Pyro user after each ``svi.step``) moves
  the key networks, ``theta_k <- m theta_k + (1 - m) theta_q``, and enqueues the
  keys of the step just taken (stored while the model runs in training mode). The queue, its
  pointer and the key networks are a buffer, a buffer and modules, so they are
  in ``state_dict`` and checkpoints resume exactly. Views after the second are
  not used; batch-norm shuffling (a multi-GPU device) is not implemented.

SimCLR, CLIP and MoCo also log Wang & Isola's ``alignment`` and ``uniformity``
of the normalised projections as ``pyro.deterministic`` diagnostics (reported by
the objective, never part of the loss).
"""

from __future__ import annotations

import copy
import math

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from torch import nn

from pssl.collectives import gather, gather_with_grad, local_rows, world_size
from pssl.datasets import split_modalities
from pssl.models.base import MODELS, ModelSpec, ViewBatch, check_num_views
from pssl.models.discriminative import (
    PointMassSSL,
    Representation,
    SingleEncoderSSL,
    backbone_and_head,
    check_min_items,
    check_positive,
    projection_head,
)
from pssl.models.losses import (
    alignment,
    clip_logits,
    info_nce_logits,
    info_nce_positive_index,
    moco_logits,
    uniformity,
)
from pssl.models.multimodal import EncodeModality, check_encode_modality, modality_pair, modality_shapes
from pssl.networks import build_encoder

INFONCE = "infonce"
"""Site (and term) name of the contrastive categorical observation."""


def _diagnostics(embeddings: torch.Tensor) -> dict[str, torch.Tensor]:
    """Alignment and uniformity of ``(B, 2+, p)`` embeddings, without gradient."""
    with torch.no_grad():
        embeddings = embeddings.detach().float()
        return {"alignment": alignment(embeddings), "uniformity": uniformity(embeddings)}


def _check_views(model_name: str, batch: ViewBatch, minimum: int) -> None:
    if batch.num_views < minimum:
        raise ValueError(
            f"model {model_name!r} needs num_views >= {minimum}, got a batch of {batch.num_views} views"
        )


# --------------------------------------------------------------------------- SimCLR


class SimCLR(SingleEncoderSSL):
    """SimCLR: NT-Xent as a categorical observation (see the module docstring).

    Args:
        backbone: f, ``(..., C, H, W) -> (..., d)``.
        head: g, ``(..., d) -> (..., p)``.
        temperature: tau.
        representation: ``backbone`` or ``projection``.
    """

    pyro_name = "simclr"

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        *,
        temperature: float = 0.5,
        representation: str = "backbone",
    ) -> None:
        super().__init__(backbone, head, representation=representation)
        self.temperature = check_positive("temperature", temperature)

    def check_batch(self, batch: ViewBatch) -> None:
        _check_views("simclr", batch, 2)
        check_min_items("simclr", batch, 2, "the other items' views are the negatives", world_size())

    def add_objective(
        self, batch: ViewBatch, latent: torch.Tensor, views_plate: pyro.plate
    ) -> dict[str, torch.Tensor]:
        items, views = latent.shape[:2]
        embeddings = self.head(latent)
        everyone = gather_with_grad(embeddings)  # the other processes' items are negatives too
        offset = local_rows(items).start
        logits = info_nce_logits(embeddings, self.temperature, candidates=everyone, offset=offset)
        positives = info_nce_positive_index(items, views, latent.device, offset=offset)  # (B, J, J - 1)
        candidates = logits.unsqueeze(-2).expand(items, views, views - 1, logits.shape[-1])
        with (
            views_plate,
            poutine.scale(scale=1.0 / (views * (views - 1))),
        ):
            pyro.sample(INFONCE, dist.Categorical(logits=candidates).to_event(1), obs=positives)
        return _diagnostics(embeddings)

    def describe(self) -> dict[str, object]:
        return {"temperature": self.temperature, "representation": self.representation}


@MODELS.register(
    "simclr", help="SimCLR: point-mass encoder, NT-Xent as a categorical over which view is the positive"
)
def build_simclr(
    *,
    spec: ModelSpec,
    temperature: float = 0.5,
    proj_hidden: int = 512,
    proj_dim: int = 128,
    proj_layers: int = 2,
    proj_batch_norm: bool = True,
    representation: Representation = "backbone",
) -> SimCLR:
    """SimCLR with a ``latent_dim`` backbone output and an MLP head (SimCLR: tau = 0.5 on CIFAR-10)."""
    check_num_views("simclr", spec.num_views, 2)
    backbone, head = backbone_and_head(
        spec,
        proj_hidden=proj_hidden,
        proj_dim=proj_dim,
        proj_layers=proj_layers,
        proj_batch_norm=proj_batch_norm,
    )
    return SimCLR(backbone, head, temperature=temperature, representation=representation)


# --------------------------------------------------------------------------- CLIP


class CLIP(PointMassSSL):
    """CLIP on paired data: one backbone and head per modality, symmetric InfoNCE.

    Args:
        first_backbone, second_backbone: ``f_A``, ``f_B`` for the top and bottom halves.
        first_head, second_head: ``g_A``, ``g_B`` to a shared embedding size ``p``.
        temperature: initial tau; the logit scale ``1 / tau`` is learned if ``learn_temperature``.
        max_logit_scale: upper clamp of ``1 / tau`` (CLIP: 100).
        representation: ``backbone`` or ``projection``.
        encode_modality: ``top``, ``bottom`` or ``both`` (concatenated).
    """

    min_views = 1
    needs_paired_data = True
    guide_networks = ("first_backbone", "second_backbone")
    pyro_name = "clip"

    def __init__(
        self,
        first_backbone: nn.Module,
        second_backbone: nn.Module,
        first_head: nn.Module,
        second_head: nn.Module,
        *,
        temperature: float = 0.07,
        learn_temperature: bool = True,
        max_logit_scale: float = 100.0,
        representation: str = "backbone",
        encode_modality: str = "top",
    ) -> None:
        if first_head.output_dim != second_head.output_dim:
            raise ValueError(
                "CLIP heads must share an output size, got "
                f"{first_head.output_dim} and {second_head.output_dim}"
            )
        super().__init__(
            representation=representation,
            latent_dim=first_backbone.output_dim,
            projection_dim=first_head.output_dim,
        )
        self.first_backbone, self.second_backbone = first_backbone, second_backbone
        self.first_head, self.second_head = first_head, second_head
        self.encode_modality = check_encode_modality(encode_modality)
        if encode_modality == "both":
            self.representation_dim *= 2
        check_positive("temperature", temperature)
        self.max_log_scale = math.log(check_positive("max_logit_scale", max_logit_scale))
        initial = torch.tensor(math.log(1.0 / temperature))
        if learn_temperature:
            self.log_logit_scale = nn.Parameter(initial)
        else:
            self.register_buffer("log_logit_scale", initial)

    def logit_scale(self) -> torch.Tensor:
        """``s = exp(min(t, log max_logit_scale))``."""
        return self.log_logit_scale.clamp(max=self.max_log_scale).exp()

    def check_batch(self, batch: ViewBatch) -> None:
        check_min_items("clip", batch, 2, "the other items' modalities are the negatives", world_size())

    def num_latent_views(self, batch: ViewBatch) -> int:
        return 2

    def latent(self, batch: ViewBatch) -> torch.Tensor:
        first, second = modality_pair(batch.views)
        return torch.stack([self.first_backbone(first), self.second_backbone(second)], dim=1)

    def add_objective(
        self, batch: ViewBatch, latent: torch.Tensor, views_plate: pyro.plate
    ) -> dict[str, torch.Tensor]:
        first, second = self.first_head(latent[:, 0]), self.second_head(latent[:, 1])
        offset = local_rows(first.shape[0]).start
        scale = self.logit_scale()
        # "view" 0: my A against every B; "view" 1: my B against every A (all processes' items)
        candidates = torch.stack(
            [
                clip_logits(first, gather_with_grad(second), scale),
                clip_logits(second, gather_with_grad(first), scale),
            ],
            dim=1,
        )  # (B, 2, N)
        positives = (torch.arange(first.shape[0], device=latent.device) + offset).unsqueeze(-1).expand(-1, 2)
        with views_plate, poutine.scale(scale=0.5):
            pyro.sample(INFONCE, dist.Categorical(logits=candidates), obs=positives)
        diagnostics = _diagnostics(torch.stack([first, second], dim=1))
        diagnostics["logit_scale"] = self.logit_scale().detach()
        return diagnostics

    def after_step(self) -> None:
        with torch.no_grad():
            if isinstance(self.log_logit_scale, nn.Parameter):
                self.log_logit_scale.clamp_(max=self.max_log_scale)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        first, second = split_modalities(images)
        parts = []
        if self.encode_modality in ("top", "both"):
            parts.append(self._represent(self.first_backbone, self.first_head, first))
        if self.encode_modality in ("bottom", "both"):
            parts.append(self._represent(self.second_backbone, self.second_head, second))
        return torch.cat(parts, dim=-1)

    def _represent(self, backbone: nn.Module, head: nn.Module, images: torch.Tensor) -> torch.Tensor:
        representation = backbone(images)
        return head(representation) if self.representation == "projection" else representation

    def describe(self) -> dict[str, object]:
        return {"representation": self.representation, "encode_modality": self.encode_modality}


@MODELS.register(
    "clip", help="CLIP on paired data (top/bottom halves): two encoders, symmetric InfoNCE, learned 1/tau"
)
def build_clip(
    *,
    spec: ModelSpec,
    temperature: float = 0.07,
    learn_temperature: bool = True,
    max_logit_scale: float = 100.0,
    proj_hidden: int = 512,
    proj_dim: int = 128,
    proj_layers: int = 1,
    proj_batch_norm: bool = False,
    representation: Representation = "backbone",
    encode_modality: EncodeModality = "top",
) -> CLIP:
    """CLIP with the spec's encoder per modality and a linear head each by default (as CLIP)."""
    first_shape, second_shape = modality_shapes(spec.image_shape)

    def head() -> nn.Module:
        return projection_head(
            spec.latent_dim,
            hidden_dim=proj_hidden,
            output_dim=proj_dim,
            num_layers=proj_layers,
            batch_norm=proj_batch_norm,
        )

    return CLIP(
        build_encoder(spec.encoder.name, first_shape, spec.latent_dim, spec.encoder.options),
        build_encoder(spec.encoder.name, second_shape, spec.latent_dim, spec.encoder.options),
        head(),
        head(),
        temperature=temperature,
        learn_temperature=learn_temperature,
        max_logit_scale=max_logit_scale,
        representation=representation,
        encode_modality=encode_modality,
    )


# --------------------------------------------------------------------------- MoCo v2


class MoCo(SingleEncoderSSL):
    """MoCo v2: momentum key encoder and a queue of negatives (see the module docstring).

    Args:
        backbone, head: the query networks ``f_q``, ``g_q``; the key networks start as copies.
        queue_size: K negatives. Must be at least the batch size and smaller than the
            number of training items (else the queue holds older keys of the very items
            it is asked to tell apart); checked at the first training step. ``None``
            (the default): what the data set can fill (:func:`default_queue_size`),
            chosen at the first training batch, which knows the number of items and
            the keys per step; :meth:`describe` (hence ``config.json``) records it.
        momentum: m of the key networks' moving average (MoCo: 0.999).
        temperature: tau (MoCo v2: 0.2).
        representation: ``backbone`` or ``projection`` (of the query networks).

    Training with plain Pyro: call :meth:`after_step` after every ``svi.step``
    (momentum update of the key networks, then the step's keys into the queue).
    The key networks are not trainable (``requires_grad=False``), so they are not
    registered with Pyro's param store.
    """

    pyro_name = "moco"

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        *,
        queue_size: int | None = None,
        momentum: float = 0.999,
        temperature: float = 0.2,
        representation: str = "backbone",
    ) -> None:
        super().__init__(backbone, head, representation=representation)
        if queue_size is not None and (
            isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1
        ):
            raise ValueError(
                f"queue_size must be a positive integer or None (fit the data), got {queue_size!r}"
            )
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        self.temperature = check_positive("temperature", temperature)
        self.momentum = float(momentum)
        self.queue_size = queue_size
        self.queue_from_data = queue_size is None
        self.key_backbone = copy.deepcopy(backbone).requires_grad_(False)
        self.key_head = copy.deepcopy(head).requires_grad_(False)
        self.register_buffer("queue", torch.empty(0, head.output_dim))
        if queue_size is not None:
            self._allocate_queue(queue_size)
        self.register_buffer("queue_pointer", torch.zeros((), dtype=torch.long))
        self._pending_keys: torch.Tensor | None = None

    def _allocate_queue(self, size: int) -> None:
        """A queue of ``size`` random unit keys (as MoCo starts), on the buffer's device and dtype."""
        keys = F.normalize(torch.randn(size, self.queue.shape[1]), dim=-1)
        self.queue = keys.to(self.queue.device, self.queue.dtype)
        self.queue_size = size

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        # A queue sized from the data is restored at the size the checkpoint holds.
        saved = state_dict.get(prefix + "queue")
        if isinstance(saved, torch.Tensor) and saved.shape != self.queue.shape and self.queue_from_data:
            self._allocate_queue(saved.shape[0])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def check_batch(self, batch: ViewBatch) -> None:
        _check_views("moco", batch, 2)
        keys_per_step = batch.batch_size * world_size()
        if self.queue_size is None:
            self._allocate_queue(default_queue_size(batch.num_items, keys_per_step))
        if not self.training:
            return
        if self.queue_size < keys_per_step:
            raise ValueError(
                f"moco's queue_size={self.queue_size} is smaller than the {keys_per_step} keys of one step; "
                "set model.queue_size to at least batch_size"
            )
        if self.queue_size >= batch.num_items:
            raise ValueError(
                f"moco's queue_size={self.queue_size} is not smaller than the {batch.num_items} "
                "training items: "
                "the queue would hold older keys of the same items as negatives; set model.queue_size "
                f"below {batch.num_items} (e.g. {max(batch.batch_size, batch.num_items // 4)})"
            )

    def num_latent_views(self, batch: ViewBatch) -> int:
        return 1

    def latent(self, batch: ViewBatch) -> torch.Tensor:
        return self.backbone(batch.views[:, :1])

    def keys(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised keys ``g_k(f_k(images))`` without gradient: ``(B, C, H, W) -> (B, p)``."""
        with torch.no_grad():
            return F.normalize(self.key_head(self.key_backbone(images)), dim=-1).detach()

    def add_objective(
        self, batch: ViewBatch, latent: torch.Tensor, views_plate: pyro.plate
    ) -> dict[str, torch.Tensor]:
        query = self.head(latent[:, 0])
        key = self.keys(batch.views[:, 1])
        logits = moco_logits(query, key, self.queue, self.temperature)  # (B, 1 + K)
        positive = torch.zeros((latent.shape[0], 1), dtype=torch.long, device=latent.device)
        pyro.sample(INFONCE, dist.Categorical(logits=logits.unsqueeze(1)), obs=positive)
        if self.training:  # every process enqueues every process's keys, so the queues stay equal
            self._pending_keys = gather(key).to(self.queue.dtype)
        return _diagnostics(torch.stack([query, key], dim=1))

    @torch.no_grad()
    def momentum_update(self) -> None:
        """``theta_k <- m theta_k + (1 - m) theta_q`` for the backbone's and head's parameters."""
        for query_net, key_net in ((self.backbone, self.key_backbone), (self.head, self.key_head)):
            for query_param, key_param in zip(query_net.parameters(), key_net.parameters()):
                key_param.mul_(self.momentum).add_(query_param.detach(), alpha=1.0 - self.momentum)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write ``(B, p)`` keys into the ring buffer at the pointer, replacing the oldest."""
        count = keys.shape[0]
        if count > self.queue_size:
            raise ValueError(f"cannot enqueue {count} keys into a queue of {self.queue_size}")
        slots = (self.queue_pointer + torch.arange(count, device=self.queue.device)) % self.queue_size
        self.queue[slots] = keys.to(self.queue.device, self.queue.dtype)
        self.queue_pointer.copy_((self.queue_pointer + count) % self.queue_size)

    def after_step(self) -> None:
        self.momentum_update()
        if self._pending_keys is not None:
            self.enqueue(self._pending_keys)
            self._pending_keys = None

    def describe(self) -> dict[str, object]:
        return {
            "queue_size": self.queue_size,
            "queue_size_from_data": self.queue_from_data,
            "momentum": self.momentum,
            "temperature": self.temperature,
            "representation": self.representation,
        }


MOCO_MAX_QUEUE = 4096
"""The queue MoCo takes when the data set can fill it (MoCo v2 uses 65,536 on ImageNet's 1.28M images)."""


def default_queue_size(num_items: int, keys_per_step: int) -> int:
    """The queue a data set of ``num_items`` training items can fill, for steps of ``keys_per_step`` keys.

    At most :data:`MOCO_MAX_QUEUE` and at most half the training items (so the
    negatives are other items' keys, from the last few steps), rounded down to
    a whole number of steps, and at least one step of keys.

    Raises:
        ValueError: when the data set holds no more than one step of keys.
    """
    if num_items <= keys_per_step:
        raise ValueError(
            f"moco needs more training items ({num_items}) than keys per step ({keys_per_step}) to fill a "
            "queue of other items' keys; use a smaller batch_size"
        )
    fitting = min(MOCO_MAX_QUEUE, num_items // 2)
    return max(keys_per_step, fitting // keys_per_step * keys_per_step)


@MODELS.register(
    "moco",
    help="MoCo v2: query encoder, momentum key encoder and a queue of negatives (InfoNCE); "
    "queue_size defaults to what the data set can fill (at most 4096)",
)
def build_moco(
    *,
    spec: ModelSpec,
    queue_size: int | None = None,
    momentum: float = 0.999,
    temperature: float = 0.2,
    proj_hidden: int = 512,
    proj_dim: int = 128,
    proj_layers: int = 2,
    proj_batch_norm: bool = False,
    representation: Representation = "backbone",
) -> MoCo:
    """MoCo v2 with an MLP head (no batch norm, as MoCo v2); ``queue_size`` must stay below the data size.

    ``queue_size=None`` (the default) sizes the queue from the data at the first
    batch (:func:`default_queue_size`: at most 4096 and half the training items).
    """
    check_num_views("moco", spec.num_views, 2)
    backbone, head = backbone_and_head(
        spec,
        proj_hidden=proj_hidden,
        proj_dim=proj_dim,
        proj_layers=proj_layers,
        proj_batch_norm=proj_batch_norm,
    )
    return MoCo(
        backbone,
        head,
        queue_size=queue_size,
        momentum=momentum,
        temperature=temperature,
        representation=representation,
    )
