r"""Discriminative self-supervised losses as pure functions that return named terms.

Every ``*_terms`` function returns a dict of **per-item** tensors of shape
``(B,)`` whose batch means are the published loss terms, so

.. math::

    L_{\text{published}} = \sum_{\text{terms } t} \frac{1}{B} \sum_i t_i .

Terms built from batch statistics (VICReg's variance and covariance, Barlow
Twins' cross-correlation) have the same value for every item. The methods in
:mod:`pssl.models.contrastive` and :mod:`pssl.models.redundancy` put ``-t_i`` into
the model as observed sites or ``pyro.factor`` sites inside the items plate, so
the objective's minibatch loss is ``B * L_published`` (see those modules).

Shapes: ``embeddings`` are ``(B, J, p)``: ``B`` items, ``J`` views each, ``p``
features. Views ``j`` and ``k`` of item ``i`` are a positive pair.

Published settings: NT-Xent (SimCLR, Chen et al. 2020), CLIP's symmetric
InfoNCE (Radford et al. 2021), MoCo v2 (Chen et al. 2020), VICReg with weights
25/25/1, gamma 1, eps 1e-4 (Bardes et al. 2022), Barlow Twins with lambda 5e-3
(Zbontar et al. 2021). Alignment and uniformity follow Wang & Isola (2020).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "alignment",
    "barlow_twins_terms",
    "clip_logits",
    "clip_terms",
    "cross_correlation",
    "info_nce_logits",
    "info_nce_positive_index",
    "moco_logits",
    "moco_terms",
    "nt_xent_terms",
    "published_loss",
    "standardise",
    "uniformity",
    "view_pairs",
    "vicreg_terms",
]


def _check_embeddings(embeddings: torch.Tensor, who: str, *, min_items: int, min_views: int) -> None:
    if not isinstance(embeddings, torch.Tensor) or embeddings.dim() != 3:
        shape = tuple(embeddings.shape) if isinstance(embeddings, torch.Tensor) else type(embeddings).__name__
        raise ValueError(f"{who} expects embeddings of shape (items, views, features), got {shape}")
    items, views, _ = embeddings.shape
    if items < min_items:
        raise ValueError(f"{who} needs at least {min_items} items per batch, got {items}")
    if views < min_views:
        raise ValueError(f"{who} needs at least {min_views} views per item, got {views}")


def _check_positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def published_loss(terms: dict[str, torch.Tensor]) -> torch.Tensor:
    """The published scalar loss: the sum over terms of their batch means."""
    return sum((value.mean() for value in terms.values()), torch.zeros(()))


def view_pairs(num_views: int) -> list[tuple[int, int]]:
    """The unordered view pairs ``(j, k)``, ``j < k``, in lexicographic order."""
    return [(j, k) for j in range(num_views) for k in range(j + 1, num_views)]


# --------------------------------------------------------------------------- contrastive


def info_nce_logits(
    embeddings: torch.Tensor,
    temperature: float,
    *,
    candidates: torch.Tensor | None = None,
    offset: int = 0,
) -> torch.Tensor:
    r"""Cosine-similarity logits of every view against every other view in the batch.

    With ``u = normalise(c)`` of the candidates flattened item-major to ``(N J, p)``
    (view ``(k, j)`` at row ``k J + j``), the logits of anchor ``(i, j)`` are
    ``normalise(e_ij) . u_b / tau`` for every row ``b``, with the anchor's own entry
    set to ``-inf`` (it is never a candidate).

    Args:
        embeddings: ``(B, J, p)`` anchors.
        temperature: tau > 0.
        candidates: ``(N, J, p)`` the whole batch the anchors are told apart from
            (e.g. gathered over processes); defaults to ``embeddings``.
        offset: the item index of ``embeddings[0]`` inside ``candidates``.

    Returns:
        ``(B, J, N J)`` logits.
    """
    _check_embeddings(embeddings, "info_nce_logits", min_items=1, min_views=1)
    temperature = _check_positive("temperature", temperature)
    candidates = embeddings if candidates is None else candidates
    items, views, features = embeddings.shape
    total = candidates.shape[0]
    if candidates.shape[1:] != embeddings.shape[1:] or not 0 <= offset <= total - items:
        raise ValueError(
            f"candidates {tuple(candidates.shape)} must hold the anchors {tuple(embeddings.shape)} at item "
            f"offset {offset}"
        )
    anchors = F.normalize(embeddings, dim=-1).reshape(items * views, features)
    unit = F.normalize(candidates, dim=-1).reshape(total * views, features)
    logits = anchors @ unit.transpose(0, 1) / temperature
    rows = torch.arange(items * views, device=embeddings.device)
    self_mask = torch.zeros_like(logits, dtype=torch.bool)
    self_mask[rows, rows + offset * views] = True
    return logits.masked_fill(self_mask, float("-inf")).reshape(items, views, total * views)


def info_nce_positive_index(
    num_items: int, num_views: int, device: torch.device | str | None = None, *, offset: int = 0
) -> torch.Tensor:
    """Flat candidate rows (see :func:`info_nce_logits`) of each anchor's positives.

    Returns:
        ``(B, J, J - 1)`` int64: entry ``[i, j]`` lists ``(offset + i) J + k`` for ``k != j`` in order.
    """
    items = (torch.arange(num_items, device=device).view(-1, 1, 1) + offset) * num_views
    others = torch.tensor(
        [[k for k in range(num_views) if k != j] for j in range(num_views)], dtype=torch.long, device=device
    ).view(1, num_views, num_views - 1)
    return items + others


def nt_xent_terms(embeddings: torch.Tensor, temperature: float = 0.5) -> dict[str, torch.Tensor]:
    r"""NT-Xent (SimCLR), with the multi-positive form for ``J > 2`` views.

    For anchor ``(i, j)`` with positives ``P = {(i, k): k != j}``,

    .. math::

        \ell_{ij} = -\frac{1}{|P|} \sum_{(i,k) \in P}
            \log \frac{\exp(\mathrm{sim}(u_{ij}, u_{ik}) / \tau)}
                      {\sum_{b \ne (i,j)} \exp(\mathrm{sim}(u_{ij}, u_b) / \tau)},

    the denominator running over all ``B J - 1`` other views (for ``J = 2``: one
    positive and ``2B - 2`` negatives, SimCLR's loss exactly). The per-item term
    is the mean of ``ell_ij`` over the item's views, so its batch mean is the
    mean over all ``2B`` anchors, the published NT-Xent.

    Args:
        embeddings: ``(B, J, p)`` projection-head outputs (normalised here), ``B >= 2``, ``J >= 2``.
        temperature: tau (SimCLR: 0.5 on CIFAR-10, 0.1 on ImageNet with large batches).

    Returns:
        ``{"infonce": (B,)}``.
    """
    _check_embeddings(embeddings, "NT-Xent", min_items=2, min_views=2)
    items, views, _ = embeddings.shape
    log_prob = info_nce_logits(embeddings, temperature).log_softmax(dim=-1)
    positives = info_nce_positive_index(items, views, embeddings.device)
    anchor_log_lik = log_prob.gather(-1, positives).mean(dim=-1)  # (B, J)
    return {"infonce": -anchor_log_lik.mean(dim=-1)}


def clip_logits(first: torch.Tensor, second: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    r"""CLIP's logits ``s * <normalise(a_i), normalise(b_k)>``: ``(B, p), (N, p) -> (B, N)``.

    ``logit_scale`` is ``s = 1 / tau`` itself (not its log).
    """
    if first.dim() != 2 or second.dim() != 2 or first.shape[1] != second.shape[1]:
        raise ValueError(
            f"clip_logits expects two (items, features) tensors with one feature size, got "
            f"{tuple(first.shape)} and {tuple(second.shape)}"
        )
    return logit_scale * F.normalize(first, dim=-1) @ F.normalize(second, dim=-1).transpose(0, 1)


def clip_terms(
    first: torch.Tensor,
    second: torch.Tensor,
    logit_scale: torch.Tensor | float,
    *,
    all_first: torch.Tensor | None = None,
    all_second: torch.Tensor | None = None,
    offset: int = 0,
) -> dict[str, torch.Tensor]:
    r"""CLIP's symmetric InfoNCE.

    With logits ``L = s A B^T`` (rows: modality-A items, columns: modality-B items),

    .. math::

        \ell_i = \tfrac12 \big( -\log \mathrm{softmax}(L_{i,:})_i
                              - \log \mathrm{softmax}(L_{:,i})_i \big),

    whose batch mean is ``(CE(L, I) + CE(L^T, I)) / 2``.

    Args:
        first, second: ``(B, p)`` embeddings of the two modalities.
        logit_scale: ``s = 1 / tau``.
        all_first, all_second: ``(N, p)`` the whole batch (e.g. gathered over processes),
            holding ``first`` and ``second`` at rows ``offset ..``; default: ``first``, ``second``.
        offset: where this batch's items sit in ``all_first`` / ``all_second``.

    Returns:
        ``{"infonce": (B,)}``.
    """
    all_first = first if all_first is None else all_first
    all_second = second if all_second is None else all_second
    if all_first.shape[0] < 2:
        raise ValueError(
            f"CLIP's loss needs at least 2 pairs per batch (negatives), got {all_first.shape[0]}"
        )
    positives = torch.arange(first.shape[0], device=first.device) + offset
    rows = torch.arange(first.shape[0], device=first.device)
    first_to_second = clip_logits(first, all_second, logit_scale).log_softmax(dim=-1)[rows, positives]
    second_to_first = clip_logits(second, all_first, logit_scale).log_softmax(dim=-1)[rows, positives]
    return {"infonce": -0.5 * (first_to_second + second_to_first)}


def moco_logits(
    query: torch.Tensor, key: torch.Tensor, queue: torch.Tensor, temperature: float
) -> torch.Tensor:
    r"""MoCo logits ``[<q, k>, <q, n_1>, ..., <q, n_K>] / tau`` on normalised vectors.

    Args:
        query: ``(B, p)``.
        key: ``(B, p)`` the positive key of each query (no gradient flows into it in MoCo).
        queue: ``(K, p)`` negative keys.
        temperature: tau (MoCo v2: 0.2).

    Returns:
        ``(B, 1 + K)``; the positive is column 0.
    """
    temperature = _check_positive("temperature", temperature)
    if query.dim() != 2 or key.shape != query.shape or queue.dim() != 2 or queue.shape[1] != query.shape[1]:
        raise ValueError(
            f"moco_logits expects query (B, p), key (B, p) and queue (K, p); got {tuple(query.shape)}, "
            f"{tuple(key.shape)} and {tuple(queue.shape)}"
        )
    query = F.normalize(query, dim=-1)
    positive = (query * F.normalize(key, dim=-1)).sum(dim=-1, keepdim=True)
    negatives = query @ F.normalize(queue, dim=-1).transpose(0, 1)
    return torch.cat([positive, negatives], dim=-1) / temperature


def moco_terms(
    query: torch.Tensor, key: torch.Tensor, queue: torch.Tensor, temperature: float = 0.2
) -> dict[str, torch.Tensor]:
    r"""MoCo's InfoNCE: ``ell_i = -log softmax([<q_i, k_i>, <q_i, n_1..K>] / tau)_0``.

    Returns:
        ``{"infonce": (B,)}``.
    """
    logits = moco_logits(query, key, queue, temperature)
    return {"infonce": -logits.log_softmax(dim=-1)[:, 0]}


# --------------------------------------------------------------------------- redundancy reduction


def vicreg_terms(
    embeddings: torch.Tensor,
    *,
    invariance_weight: float = 25.0,
    variance_weight: float = 25.0,
    covariance_weight: float = 1.0,
    gamma: float = 1.0,
    eps: float = 1e-4,
    batch_embeddings: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    r"""VICReg's weighted terms (Bardes et al. 2022, eq. 6 for ``J = 2``).

    For the expander outputs ``Z_j`` (``B x p``) of view ``j``:

    * invariance ``lambda * s``: ``s_i`` is the mean over view pairs ``j < k`` of
      ``(1/p) ||z_ij - z_ik||^2`` (the published code's ``mse_loss``, a mean over
      items and features);
    * variance ``mu * (1/J) sum_j v(Z_j)``,
      ``v(Z) = (1/p) sum_f max(0, gamma - sqrt(Var(Z_{:,f}) + eps))`` with the
      unbiased variance over the batch;
    * covariance ``nu * sum_j c(Z_j)``, ``c(Z) = (1/p) sum_{f != g} C(Z)_{fg}^2``,
      ``C(Z) = (1/(B-1)) sum_i (z_i - zbar)(z_i - zbar)^T``.

    For ``J = 2`` this is the official implementation's loss (facebookresearch/vicreg,
    also lightly's ``VICRegLoss``): the variance hinge is *averaged* over the two
    branches, ``0.5 * (v(Z) + v(Z'))``, while the covariance is summed. The paper's
    eq. 6 writes the variance as a sum, twice this; the published weights 25/25/1
    were tuned with the averaged form, so that is the one used here. For more views
    the invariance term averages over the ``J (J - 1) / 2`` pairs, the variance
    averages over views and the covariance sums over views.

    Args:
        embeddings: ``(B, J, p)``, ``J >= 2``.
        invariance_weight, variance_weight, covariance_weight: lambda, mu, nu (25, 25, 1).
        gamma: target standard deviation (1).
        eps: numerical floor inside the square root (1e-4).
        batch_embeddings: ``(N, J, p)``, ``N >= 2``, the batch whose statistics give the
            variance and covariance terms (e.g. gathered over processes); defaults to ``embeddings``.

    Returns:
        ``{"invariance", "variance", "covariance"}``, each ``(B,)`` (the last two constant).
    """
    _check_embeddings(embeddings, "VICReg", min_items=1, min_views=2)
    batch_embeddings = embeddings if batch_embeddings is None else batch_embeddings
    _check_embeddings(batch_embeddings, "VICReg", min_items=2, min_views=2)
    items, views, features = embeddings.shape
    total = batch_embeddings.shape[0]
    pairs = view_pairs(views)
    invariance = sum((embeddings[:, j] - embeddings[:, k]).pow(2).mean(dim=-1) for j, k in pairs) / len(pairs)
    centred = batch_embeddings - batch_embeddings.mean(dim=0, keepdim=True)
    std = torch.sqrt(centred.pow(2).sum(dim=0) / (total - 1) + eps)  # (J, p)
    variance = F.relu(gamma - std).mean(dim=-1).mean()  # averaged over branches (official code)
    covariance = torch.einsum("bjf,bjg->jfg", centred, centred) / (total - 1)  # (J, p, p)
    off_diagonal = ~torch.eye(features, dtype=torch.bool, device=embeddings.device)
    covariance_term = covariance.pow(2).masked_select(off_diagonal.expand_as(covariance)).sum() / features
    return {
        "invariance": invariance_weight * invariance,
        "variance": (variance_weight * variance).expand(items),
        "covariance": (covariance_weight * covariance_term).expand(items),
    }


def standardise(embeddings: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``(z - mean) / sqrt(var + eps)`` over the batch (dim 0), biased variance: batch norm without affine."""
    centred = embeddings - embeddings.mean(dim=0, keepdim=True)
    return centred / torch.sqrt(centred.pow(2).mean(dim=0, keepdim=True) + eps)


def cross_correlation(first: torch.Tensor, second: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Barlow Twins' ``C = standardise(A)^T standardise(B) / B``: ``(B, p), (B, p) -> (p, p)``."""
    return standardise(first, eps).transpose(0, 1) @ standardise(second, eps) / first.shape[0]


def barlow_twins_terms(
    embeddings: torch.Tensor,
    *,
    off_diagonal_weight: float = 5e-3,
    eps: float = 1e-5,
    batch_embeddings: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    r"""Barlow Twins' terms (Zbontar et al. 2021).

    With ``C`` the cross-correlation of the batch-standardised projector outputs
    of two views (:func:`cross_correlation`),

    .. math::

        L = \sum_f (1 - C_{ff})^2 + \lambda \sum_{f \ne g} C_{fg}^2, \qquad \lambda = 5 \cdot 10^{-3}.

    For more than two views both terms average over the view pairs ``j < k``.

    Args:
        embeddings: ``(B, J, p)`` projector outputs of this batch's items, ``J >= 2``.
        off_diagonal_weight: lambda.
        eps: added to the variance in the standardisation (batch norm's 1e-5).
        batch_embeddings: ``(N, J, p)``, ``N >= 2``, the batch the cross-correlation is taken
            over (e.g. gathered over processes); defaults to ``embeddings``.

    Returns:
        ``{"on_diagonal", "off_diagonal"}`` (the latter already times lambda), each ``(B,)`` and constant.
    """
    _check_embeddings(embeddings, "Barlow Twins", min_items=1, min_views=2)
    batch_embeddings = embeddings if batch_embeddings is None else batch_embeddings
    _check_embeddings(batch_embeddings, "Barlow Twins", min_items=2, min_views=2)
    items, views, features = embeddings.shape
    pairs = view_pairs(views)
    on, off = embeddings.new_zeros(()), embeddings.new_zeros(())
    off_mask = ~torch.eye(features, dtype=torch.bool, device=embeddings.device)
    for j, k in pairs:
        corr = cross_correlation(batch_embeddings[:, j], batch_embeddings[:, k], eps)
        on = on + (1 - corr.diagonal()).pow(2).sum()
        off = off + corr.pow(2).masked_select(off_mask).sum()
    return {
        "on_diagonal": (on / len(pairs)).expand(items),
        "off_diagonal": (off_diagonal_weight * off / len(pairs)).expand(items),
    }


# --------------------------------------------------------------------------- diagnostics


def alignment(embeddings: torch.Tensor) -> torch.Tensor:
    r"""Wang & Isola's alignment: mean over positive pairs of ``||u_ij - u_ik||^2`` (``u`` normalised).

    Args:
        embeddings: ``(B, J, p)``, ``J >= 2``.
    """
    _check_embeddings(embeddings, "alignment", min_items=1, min_views=2)
    unit = F.normalize(embeddings, dim=-1)
    pairs = view_pairs(embeddings.shape[1])
    return sum((unit[:, j] - unit[:, k]).pow(2).sum(-1).mean() for j, k in pairs) / len(pairs)


def uniformity(embeddings: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    r"""Wang & Isola's uniformity: ``log mean_{a != b} exp(-t ||u_a - u_b||^2)`` over every view in the batch.

    Args:
        embeddings: ``(B, J, p)`` (or ``(B, p)``), at least two vectors in all.
    """
    unit = F.normalize(embeddings.reshape(-1, embeddings.shape[-1]), dim=-1)
    if unit.shape[0] < 2:
        raise ValueError(f"uniformity needs at least 2 vectors, got {unit.shape[0]}")
    return torch.pdist(unit).pow(2).mul(-t).exp().mean().log()
