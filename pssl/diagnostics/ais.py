r"""Annealed importance sampling with HMC transitions: a reference estimate of log p(x) per item.

Wu et al. (2017, "On the quantitative analysis of decoder-based generative models")
estimate a decoder model's log-likelihood by annealed importance sampling (AIS,
Neal 2001) with Hamiltonian Monte Carlo transitions. Here the chain of each item
starts from the hierarchical proposal ``q`` of :mod:`pssl.diagnostics.proposal`
(Wu et al. start from the prior; any normalised start is valid, and a good one needs
fewer steps) and moves through the intermediate densities

.. math::

    f_t(\theta) = q(\theta)^{1 - \beta_t}\, p(x, \theta)^{\beta_t}, \qquad
    0 = \beta_0 < \beta_1 < \dots < \beta_T = 1,

over the item's local latents ``theta = (y, z_1..z_J)`` (an enumerated ``c`` is
summed out exactly inside ``p``; global latents are held at draws of the guide passed
as ``guide=``). Each chain ``c`` accumulates

.. math::

    \log w^{(c)} = \sum_{t=1}^T (\beta_t - \beta_{t-1})
        \left[\log p(x, \theta_{t-1}) - \log q(\theta_{t-1})\right],

with ``theta_t`` one HMC transition (``leapfrog_steps`` leapfrog steps, a diagonal
mass matrix from the proposal's per-coordinate variance, Metropolis correction)
that leaves ``f_t`` invariant. ``E[w] = p(x)``, so
``logsumexp_c log w^(c) - log C`` is a stochastic lower bound that tends to
``log p(x)`` as ``T`` grows (and is exact for any ``T`` when ``q`` is the
posterior). One step size for all chains of a pass adapts towards a mean
acceptance rate of 0.65 (as in Wu et al.): a step size adapted on a chain's own
history would bias that chain's weight (measured: 0.5 nats on the linear-Gaussian
test model against 0.26 with the shared one, 400 steps). ``beta_t`` follows the
sigmoidal schedule of Grosse et al. (2015).

Gradients come from the model's own Pyro trace (:func:`pssl.diagnostics.proposal.model_log_density`
of a trace conditioned on ``theta``); the HMC kernel itself is written out here
because Pyro's ``HMC`` runs one chain over a whole model, while AIS needs thousands
of independent per-item chains advanced in lockstep with per-chain
acceptance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pssl.diagnostics.importance import forked_rng, proposal_for_items
from pssl.diagnostics.proposal import TEMPERINGS, guide_values, model_log_density, traced_model
from pssl.models.base import SSLModel, ViewBatch

TARGET_ACCEPTANCE = 0.65
"""HMC acceptance rate the per-chain step sizes adapt towards (Wu et al. 2017)."""


@dataclass
class AISResult:
    """Annealed importance sampling over ``N`` items with ``C`` chains each.

    Attributes:
        log_weights: ``(C, N)`` float64 AIS log weights (nats per item).
        acceptance: ``(N,)`` mean HMC acceptance rate of each item's chains.
        num_steps: T, annealing steps.
        leapfrog_steps: leapfrog steps per HMC transition.
        tempering: see :class:`~pssl.diagnostics.importance.ImportanceSamples`.
    """

    log_weights: torch.Tensor
    acceptance: torch.Tensor
    num_steps: int
    leapfrog_steps: int
    tempering: str = "none"

    @property
    def log_px(self) -> torch.Tensor:
        """``(N,)`` the AIS estimate ``logsumexp_c log w^(c) - log C``."""
        return torch.logsumexp(self.log_weights, 0) - math.log(self.log_weights.shape[0])


def sigmoid_schedule(num_steps: int, sharpness: float = 4.0) -> torch.Tensor:
    """``(T + 1,)`` inverse temperatures from 0 to 1, dense at both ends (Grosse et al. 2015)."""
    grid = torch.sigmoid(torch.linspace(-sharpness, sharpness, num_steps + 1, dtype=torch.float64))
    return (grid - grid[0]) / (grid[-1] - grid[0])


def ais_log_evidence(
    model: SSLModel,
    views: torch.Tensor,
    *,
    num_chains: int = 16,
    num_steps: int = 200,
    leapfrog_steps: int = 5,
    step_size: float = 0.5,
    seed: int = 0,
    guide: Any = None,
    tempering: str = "auto",
    max_images_per_pass: int = 4096,
    proposal_scale: float | None = None,
) -> AISResult:
    """AIS estimate of log p(x_i) for each item (see the module docstring).

    Args:
        model: a generative method whose latent structure the hierarchical proposal covers.
        views: ``(N, J, C, H, W)`` float views.
        num_chains: C chains per item.
        num_steps: T annealing steps.
        leapfrog_steps: leapfrog steps per HMC transition.
        step_size: initial leapfrog step in units of the proposal's per-coordinate std.
        seed: seeds every draw (the caller's RNG state is restored).
        guide: guide for global latents (see :func:`~pssl.diagnostics.importance.importance_sample`).
        tempering: see :func:`~pssl.diagnostics.importance.importance_sample`.
        max_images_per_pass: items x chains x views per pass.
        proposal_scale: the start distribution's message std factor (see
            :func:`~pssl.diagnostics.importance.importance_sample`).

    Returns:
        :class:`AISResult`.
    """
    for value, name, low in (
        (num_chains, "num_chains", 1),
        (num_steps, "num_steps", 1),
        (leapfrog_steps, "leapfrog_steps", 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if not step_size > 0:
        raise ValueError(f"step_size must be positive, got {step_size!r}")
    if tempering not in TEMPERINGS:
        raise ValueError(f"unknown tempering {tempering!r}; accepted: {', '.join(TEMPERINGS)}")
    if views.dim() != 5:
        raise ValueError(f"views must be (items, views, C, H, W), got shape {tuple(views.shape)}")
    if not model.generative:
        raise ValueError(f"{type(model).__name__} does not model images; AIS needs a generative method")
    num_items, num_views = views.shape[:2]
    items_per_pass = max(1, min(num_items, max_images_per_pass // (num_chains * num_views)))
    chains_per_pass = max(1, min(num_chains, max_images_per_pass // (items_per_pass * num_views)))
    if guide is not None:
        chains_per_pass = 1
    betas = sigmoid_schedule(num_steps)
    log_weights = torch.empty(num_chains, num_items, dtype=torch.float64)
    acceptance = torch.zeros(num_items, dtype=torch.float64)
    label = "none"
    was_training = model.training
    model.eval()
    try:
        with forked_rng(seed, views.device):
            for start in range(0, num_items, items_per_pass):
                chunk = views[start : start + items_per_pass]
                b = chunk.shape[0]
                with torch.no_grad():
                    items = proposal_for_items(
                        model, chunk, guide=guide, tempering=tempering, proposal_scale=proposal_scale
                    )
                for c0 in range(0, num_chains, chains_per_pass):
                    k = min(chains_per_pass, num_chains - c0)
                    batch = ViewBatch(
                        views=chunk.repeat(k, 1, 1, 1, 1),
                        index=torch.arange(b, device=views.device).repeat(k),
                        num_items=k * b,
                    )
                    with torch.no_grad():
                        fixed = guide_values(guide, batch)
                    log_w, accepted, label = _anneal(
                        model,
                        batch,
                        items.proposal.replicate(k),
                        fixed,
                        betas,
                        leapfrog_steps=leapfrog_steps,
                        step_size=step_size,
                        tempering=tempering,
                    )
                    log_weights[c0 : c0 + k, start : start + b] = log_w.reshape(k, b).cpu()
                    acceptance[start : start + b] += accepted.reshape(k, b).sum(0).cpu()
    finally:
        model.train(was_training)
    return AISResult(log_weights, acceptance / num_chains, num_steps, leapfrog_steps, label)


def _anneal(
    model: SSLModel,
    batch: ViewBatch,
    proposal: Any,
    fixed: dict[str, torch.Tensor],
    betas: torch.Tensor,
    *,
    leapfrog_steps: int,
    step_size: float,
    tempering: str,
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Run every chain of ``batch`` through the schedule; returns ``(log_w (B,), acceptance (B,), label)``."""
    num = batch.batch_size
    with torch.no_grad():
        theta = proposal.sample()
        scales = {name: s.detach() for name, s in proposal.scales(theta).items()}
    names = list(theta)
    label = "none"

    def densities(values: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal label
        trace = traced_model(model, batch, {**values, **fixed})
        log_p, _, label = model_log_density(trace, num, tempering=tempering)
        return log_p, proposal.log_prob(values).double()

    def evaluate(values: dict[str, torch.Tensor]):
        leaves = {n: v.detach().requires_grad_(True) for n, v in values.items()}
        with torch.enable_grad():
            log_p, log_q = densities(leaves)
            inputs = [leaves[n] for n in names]
            grad_p = torch.autograd.grad(log_p.sum(), inputs, retain_graph=True)
            grad_q = torch.autograd.grad(log_q.sum(), inputs)
        return (
            log_p.detach(),
            log_q.detach(),
            dict(zip(names, grad_p, strict=True)),
            dict(zip(names, grad_q, strict=True)),
        )

    def per_chain(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(num, -1).sum(1).double()

    device = batch.views.device
    eps = torch.full((num,), float(step_size), dtype=torch.float64, device=device)
    log_w = torch.zeros(num, dtype=torch.float64, device=device)
    accepted_total = torch.zeros_like(log_w)
    log_p, log_q, grad_p, grad_q = evaluate(theta)
    for t in range(1, len(betas)):
        beta = float(betas[t])
        log_w = log_w + (beta - float(betas[t - 1])) * (log_p - log_q)

        def grad_energy(gp: dict, gq: dict, beta: float = beta) -> dict[str, torch.Tensor]:
            return {n: -(beta * gp[n] + (1 - beta) * gq[n]) for n in names}

        momentum = {n: torch.randn_like(theta[n]) / scales[n] for n in names}
        start_h = (
            -(beta * log_p + (1 - beta) * log_q)
            + sum(per_chain((momentum[n] * scales[n]).pow(2)) for n in names) / 2
        )
        step = {n: _per_chain_view(eps, theta[n]) for n in names}
        grad = grad_energy(grad_p, grad_q)
        position = dict(theta)
        p = {n: momentum[n] - 0.5 * step[n] * grad[n] for n in names}
        for leap in range(leapfrog_steps):
            position = {n: position[n] + step[n] * scales[n].pow(2) * p[n] for n in names}
            new_log_p, new_log_q, new_grad_p, new_grad_q = evaluate(position)
            grad = grad_energy(new_grad_p, new_grad_q)
            factor = 1.0 if leap < leapfrog_steps - 1 else 0.5
            p = {n: p[n] - factor * step[n] * grad[n] for n in names}
        end_h = (
            -(beta * new_log_p + (1 - beta) * new_log_q)
            + sum(per_chain((p[n] * scales[n]).pow(2)) for n in names) / 2
        )
        log_accept = (start_h - end_h).clamp(max=0.0)
        log_accept = torch.where(
            torch.isfinite(log_accept), log_accept, torch.full_like(log_accept, -math.inf)
        )
        accept = torch.rand_like(log_accept).log() < log_accept

        def pick(new: torch.Tensor, old: torch.Tensor, accept: torch.Tensor = accept) -> torch.Tensor:
            return torch.where(_per_chain_view(accept, old), new, old)

        theta = {n: pick(position[n].detach(), theta[n]) for n in names}
        grad_p = {n: pick(new_grad_p[n], grad_p[n]) for n in names}
        grad_q = {n: pick(new_grad_q[n], grad_q[n]) for n in names}
        log_p = torch.where(accept, new_log_p, log_p)
        log_q = torch.where(accept, new_log_q, log_q)
        # One step size for every chain of the pass, adapted on their mean acceptance (as Wu et al.):
        # a chain's own history would bias its weight; the pass average barely depends on it.
        eps = eps * (1.02 if float(log_accept.exp().mean()) > TARGET_ACCEPTANCE else 0.98)
        accepted_total = accepted_total + accept.double()
    return log_w, accepted_total / (len(betas) - 1), label


def _per_chain_view(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(B,)`` per-chain values shaped to broadcast against a ``(B, ...)`` latent."""
    shaped = values.reshape(-1, *([1] * (like.dim() - 1)))
    return shaped if values.dtype == torch.bool else shaped.to(like.dtype)


def ais_summary(result: AISResult, is_log_px: torch.Tensor | np.ndarray | None = None) -> dict[str, Any]:
    """AIS log p(x) (nats per item) and, given the IS estimate per item, how far the two are apart."""
    log_px = result.log_px
    out: dict[str, Any] = {
        "estimator": "annealed importance sampling, HMC transitions (Wu et al. 2017)",
        "num_chains": int(result.log_weights.shape[0]),
        "num_steps": result.num_steps,
        "leapfrog_steps": result.leapfrog_steps,
        "log_px_ais_nats": float(log_px.mean()),
        "log_px_ais_se": float(log_px.std() / math.sqrt(len(log_px))) if len(log_px) > 1 else math.nan,
        "acceptance_mean": float(result.acceptance.mean()),
        "tempering": result.tempering,
    }
    if is_log_px is not None:
        diff = torch.as_tensor(np.asarray(is_log_px), dtype=torch.float64) - log_px
        out.update(
            {
                "is_minus_ais_mean_nats": float(diff.mean()),
                "is_minus_ais_abs_median_nats": float(diff.abs().median()),
                "is_minus_ais_abs_max_nats": float(diff.abs().max()),
                "share_within_1_nat": float((diff.abs() < 1.0).double().mean()),
            }
        )
    return out


__all__ = ["AISResult", "TARGET_ACCEPTANCE", "ais_log_evidence", "ais_summary", "sigmoid_schedule"]
