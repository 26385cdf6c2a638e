r"""One training step of pssl against the compute floor of the same networks.

For SimVAE, the VAE and SimCLR, with the reference MLPs (1x28x28 inputs,
encoder 784-2000-500-500, decoder 10-500-500-2000-784, latent 10) and the
ResNet-style networks (3x32x32 inputs, 32/64/128 channels, latent 64), this
times in one process, interleaved:

* **pssl step**: what :meth:`pssl.inference.train.Trainer._fit` does per step:
  ``Trainer.make_batch`` (index gather, uint8 -> float, ``J = 2`` augmented views
  by the data set's reference preset) + ``Trainer.step`` (Pyro ELBO, checks,
  backward, Adam) + the float conversion of the logged terms. A real
  :class:`~pssl.inference.train.Trainer` on a synthetic data set built with
  ``TensorData.from_tensors``.
* **floor step**: a bare PyTorch step on a *ready* batch (the views made once):
  ``zero_grad``, the same loss written directly (:func:`simvae_loss`,
  :func:`vae_loss`, :func:`simclr_loss`: the maths of the Pyro model/guide pair,
  no Pyro), ``backward``, and an Adam of the trainer's own settings, on a copy of
  the trainer's networks.

and reports ``pssl / floor`` (goal <= 1.25 for the MLP on CPU). With
``--objective iwae --num-particles K`` (or ``renyi``) the pssl step uses that
Pyro ELBO with ``K`` vectorised particles and the ratio is against ``K`` floor
steps (goal <= 1.25 x K bare steps). It also times
the objective alone, ``ELBO(batch)`` forward + backward against the
hand-written loss forward + backward on the *same* modules and batch (goal <=
1.10), and ``make_batch`` alone. Before timing, the hand-written loss is
checked to equal the Pyro loss on the same seed (the floor computes the same
maths).

``--profile`` prints where the time of the SimVAE MLP pssl step goes
(``torch.profiler`` operators and ``cProfile`` Python functions).

Usage::

    python benchmarks/step.py                        # everything, CPU defaults
    python benchmarks/step.py --networks mlp --repeats 20 --json step.json
    python benchmarks/step.py --profile --networks mlp --models simvae
    python benchmarks/step.py --networks mlp --models simvae,vae --objective iwae --num-particles 8
"""

from __future__ import annotations

import copy
import math
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (
    NOISE_NOTE,
    check_goal,
    header,
    interleaved,
    paired_ratio,
    parser,
    set_threads,
    spread,
    summary,
    table,
    write_json,
)
from pssl.config import Component, Config
from pssl.datasets import DataSplits, TensorData
from pssl.inference.precision import enable_network_precision, network_compute
from pssl.inference.train import Trainer
from pssl.models.base import ViewBatch
from pssl.models.likelihoods import BernoulliLikelihood, GaussianLikelihood
from pssl.models.simvae import SimVAE

MODELS = ("simvae", "vae", "simclr")
NETWORKS = ("mlp", "resnet")
STEP_GOAL = 1.25
OBJECTIVE_GOAL = 1.10
LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)

# network -> (image shape, latent dim, data-set name whose defaults apply, augmentation preset)
SETUPS: dict[str, tuple[tuple[int, int, int], int, str, str]] = {
    "mlp": ((1, 28, 28), 10, "fashionmnist", "mnist"),
    "resnet": ((3, 32, 32), 64, "cifar10", "cifar"),
}


# --------------------------------------------------------------------------- the floor's maths


def normal_log_density(value: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Elementwise ``log N(value; loc, scale^2)``."""
    return -0.5 * ((value - loc) / scale).pow(2) - scale.log() - LOG_SQRT_2PI


def log_likelihood(model: torch.nn.Module, decoded: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
    """``scale * log p(x | z)`` per view ``(B, J)`` for the Bernoulli and fixed-std Gaussian likelihoods."""
    likelihood = model.likelihood
    if isinstance(likelihood, BernoulliLikelihood):
        per_pixel = -F.binary_cross_entropy_with_logits(decoded, views, reduction="none")
    elif isinstance(likelihood, GaussianLikelihood) and likelihood.link == "sigmoid":
        std = torch.tensor(likelihood.std, dtype=decoded.dtype, device=decoded.device)
        per_pixel = normal_log_density(views, torch.sigmoid(decoded), std)
    else:
        raise ValueError(f"no hand-written form of {type(likelihood).__name__}")
    return likelihood.scale * per_pixel.sum(dim=(-3, -2, -1))


def simvae_loss(model: SimVAE, views: torch.Tensor) -> torch.Tensor:
    r"""Minus the minibatch ELBO of SimVAE (Gaussian p(y), Gaussian p(z|y), exact q(y|z)), written directly.

    .. math::

        -\sum_i \Big[\beta\big(\log p(y_i) + \sum_j \log p(z_{ij} | y_i) - \sum_j \log q(z_{ij} | x_{ij})
        - \log q(y_i | z_i)\big) + s \sum_j \log p(x_{ij} | z_{ij})\Big]

    with ``z = mu + sigma eps`` and ``y`` drawn from the conjugate posterior, in the
    order the guide draws them (so one seed gives the Pyro objective's noise).
    """
    if model.y_guide != "exact":
        raise ValueError("the hand-written SimVAE loss covers y_guide=exact")
    loc, scale = model.encoder(views)  # (B, J, d)
    z = loc + scale * torch.empty_like(loc).normal_()
    prior_loc, prior_precision = model.content_prior.gaussian()
    view_scale = model.view_prior.gaussian_scale()
    num_views = views.shape[1]
    data_precision = num_views / view_scale.pow(2)
    precision = prior_precision + data_precision
    y_mean = (prior_precision * prior_loc + data_precision * z.mean(dim=1, keepdim=True)) / precision
    y_std = precision.rsqrt().expand_as(y_mean)
    y = y_mean + y_std * torch.empty_like(y_mean).normal_()
    latent_terms = (
        normal_log_density(y, prior_loc, prior_precision.rsqrt()).sum(-1).squeeze(-1)
        + normal_log_density(z, y, view_scale).sum((-2, -1))
        - normal_log_density(z, loc, scale).sum((-2, -1))
        - normal_log_density(y, y_mean, y_std).sum(-1).squeeze(-1)
    )
    reconstruction = log_likelihood(model, model.decoder(z), views).sum(-1)
    return -(model.beta * latent_terms + reconstruction).sum()


def vae_loss(model: torch.nn.Module, views: torch.Tensor) -> torch.Tensor:
    """Minus the minibatch ELBO of the VAE with p(z) = N(0, I), written directly."""
    loc, scale = model.encoder(views)
    z = loc + scale * torch.empty_like(loc).normal_()
    prior = model.prior
    latent_terms = normal_log_density(z, prior.loc, prior.scale) - normal_log_density(z, loc, scale)
    reconstruction = log_likelihood(model, model.decoder(z), views)
    return -(model.beta * latent_terms.sum(-1) + reconstruction).sum()


def simclr_loss(model: torch.nn.Module, views: torch.Tensor) -> torch.Tensor:
    """SimCLR's NT-Xent for ``J = 2`` as pssl's loss scales it: the sum over items (``B`` times the mean).

    Every view is an anchor; its candidates are the other ``2B - 1`` views; the
    positive is the other view of its item. Per item the two anchors' cross-entropies
    are averaged.
    """
    items, num_views = views.shape[:2]
    if num_views != 2:
        raise ValueError("the hand-written SimCLR loss covers J = 2")
    embeddings = model.head(model.backbone(views))  # (B, 2, p)
    unit = F.normalize(embeddings.reshape(items * 2, -1), dim=-1)
    logits = unit @ unit.T / model.temperature
    eye = torch.eye(items * 2, dtype=torch.bool, device=views.device)
    logits = logits.masked_fill(eye, float("-inf"))
    partner = torch.arange(items * 2, device=views.device) ^ 1  # row 2i + j <-> 2i + (1 - j)
    return F.cross_entropy(logits, partner, reduction="sum") / 2


HAND_LOSSES: dict[str, Callable[[Any, torch.Tensor], torch.Tensor]] = {
    "simvae": simvae_loss,
    "vae": vae_loss,
    "simclr": simclr_loss,
}


# --------------------------------------------------------------------------- set-up


def build_trainer(
    model: str,
    network: str,
    items: int,
    *,
    out: Path,
    precision: str = "fp32",
    device: str = "cpu",
    seed: int = 0,
    objective: Component | None = None,
) -> Trainer:
    """A real :class:`Trainer` for ``model`` with ``network`` on synthetic uint8 images (``16 * items``)."""
    shape, latent_dim, data_name, augment = SETUPS[network]
    generator = torch.Generator().manual_seed(seed)
    count = 16 * items
    images = torch.randint(0, 256, (count, *shape), generator=generator, dtype=torch.uint8)
    labels = torch.randint(0, 10, (count,), generator=generator)
    data = TensorData.from_tensors(images, labels)
    splits = DataSplits(data, data, data, name=data_name)
    config = Config(
        model=Component(model),
        data=Component(data_name),
        encoder=Component(network),
        decoder=Component(network),
        augment=Component(augment),
        latent_dim=latent_dim,
        num_views=2,
        batch_size=items,
        device=device,
        out=str(out / f"{model}-{network}"),
        progress=False,
        precision=precision,
        seed=seed,
        objective=objective or Component("trace"),
    )
    return Trainer(config, data=splits)


def pssl_step(trainer: Trainer) -> Callable[[], None]:
    """One step as ``Trainer._fit`` takes it (progress bar off): batch, step, logged floats."""
    order = torch.randperm(trainer.num_items, generator=torch.Generator().manual_seed(1))

    def run() -> None:
        start = (trainer.global_step % trainer.steps_per_epoch) * trainer.batch_items
        batch = trainer.make_batch(order[start : start + trainer.batch_items])
        output = trainer.step(batch)
        trainer.global_step += 1
        if output is None:
            raise RuntimeError("a benchmark step was skipped as non-finite")
        {k: float(v) for k, v in output.terms.items()}

    return run


def floor_step(
    trainer: Trainer,
    model_name: str,
    views: torch.Tensor,
    prepare: Callable[[torch.nn.Module], None] | None = None,
) -> Callable[[], None]:
    """A bare PyTorch step (hand-written loss, backward, Adam of the trainer's settings) on a copy.

    ``prepare`` (e.g. a memory-format change) is applied to the copy before its optimiser is made.
    """
    network = copy.deepcopy(trainer.model)
    if prepare is not None:
        prepare(network)
    parameters = [p for p in network.parameters() if p.requires_grad]
    optimizer = type(trainer.optimizer)(parameters, **trainer.optimizer.defaults)
    loss_fn = HAND_LOSSES[model_name]
    precision, device_type = trainer.config.precision, views.device.type
    if precision != "fp32":
        enable_network_precision(network)

    def run() -> None:
        network.train()
        optimizer.zero_grad(set_to_none=True)
        with network_compute(precision, device_type):
            loss = loss_fn(network, views)
        loss.backward()
        optimizer.step()

    return run


def objective_pair(
    trainer: Trainer, model_name: str, batch: ViewBatch
) -> tuple[Callable[[], None], Callable[[], None]]:
    """``(Pyro ELBO fwd+bwd, hand-written fwd+bwd)`` on the trainer's own modules and one batch."""
    model = trainer.model
    loss_fn = HAND_LOSSES[model_name]

    def pyro_objective() -> None:
        model.zero_grad(set_to_none=True)
        output = trainer.objective(batch)
        if not output.backward_done:
            output.loss.backward()

    def hand_objective() -> None:
        model.zero_grad(set_to_none=True)
        loss_fn(model, batch.views).backward()

    return pyro_objective, hand_objective


def maths_check(trainer: Trainer, model_name: str, batch: ViewBatch) -> float:
    """Relative difference of the Pyro loss and the hand-written loss on one seed (raises above 1e-4)."""
    model = trainer.model
    model.train()
    with torch.no_grad():
        torch.manual_seed(123)
        ours = trainer.objective(batch).loss.double()
        torch.manual_seed(123)
        hand = HAND_LOSSES[model_name](model, batch.views).double()
    difference = float((ours - hand).abs() / hand.abs().clamp_min(1e-12))
    if not difference < 1e-4:
        raise AssertionError(
            f"{model_name}: the hand-written loss {float(hand):.6g} differs from the Pyro loss "
            f"{float(ours):.6g} (relative {difference:.2g}); the floor would not compute the same maths"
        )
    return difference


# --------------------------------------------------------------------------- measurement


def measure(
    model_name: str,
    network: str,
    items: int,
    *,
    repeats: int,
    warmup: int,
    precision: str,
    out: Path,
    objective: str = "trace",
    num_particles: int = 1,
) -> dict[str, Any]:
    """Every figure of one (model, network) case (against ``num_particles`` floor steps)."""
    chosen = Component(objective, {"num_particles": num_particles, "vectorize_particles": num_particles > 1})
    trainer = build_trainer(model_name, network, items, out=out, precision=precision, objective=chosen)
    batch = trainer.make_batch(torch.arange(items))
    single = objective == "trace" and num_particles == 1
    difference = maths_check(trainer, model_name, batch) if single else math.nan
    ours, floor = pssl_step(trainer), floor_step(trainer, model_name, batch.views)
    index = torch.arange(items)
    steps = interleaved(
        {"pssl": ours, "floor": floor, "make_batch": lambda: trainer.make_batch(index)},
        repeats=repeats,
        warmup=warmup,
    )
    pyro_objective, hand_objective = objective_pair(trainer, model_name, batch)
    trainer.model.train()
    timed = interleaved({"pyro": pyro_objective, "hand": hand_objective}, repeats=repeats, warmup=warmup)
    step_ratio = paired_ratio(steps["pssl"], [num_particles * t for t in steps["floor"]])
    objective_ratio = paired_ratio(timed["pyro"], [num_particles * t for t in timed["hand"]])
    return {
        "model": model_name,
        "objective": objective,
        "num_particles": num_particles,
        "network": network,
        "items": items,
        "images": items * 2,
        "maths_relative_difference": difference,
        "pssl_step": summary(steps["pssl"]),
        "floor_step": summary(steps["floor"]),
        "make_batch": summary(steps["make_batch"]),
        "step_ratio": step_ratio,
        "objective_pyro": summary(timed["pyro"]),
        "objective_hand": summary(timed["hand"]),
        "objective_ratio": objective_ratio,
        "step_goal": check_goal(step_ratio["ratio"], STEP_GOAL, smaller_is_better=True)
        if network == "mlp"
        else "n/a",
        "objective_goal": check_goal(objective_ratio["ratio"], OBJECTIVE_GOAL, smaller_is_better=True),
    }


def profile_step(items: int, *, steps: int, out: Path, top: int = 15) -> None:
    """Print the top operators (``torch.profiler``) and functions (``cProfile``) of the SimVAE MLP step."""
    import cProfile
    import io
    import pstats

    from torch.profiler import ProfilerActivity, profile

    trainer = build_trainer("simvae", "mlp", items, out=out)
    run = pssl_step(trainer)
    for _ in range(3):
        run()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            run()
    print(
        f"-- torch.profiler, {steps} SimVAE MLP steps of {items} items x 2 views: top operators by self time"
    )
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top))
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(steps):
        run()
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(top)
    print(f"-- cProfile, {steps} steps: top functions by own time")
    print(text.getvalue())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parser().parse_args(argv)
    threads = set_threads(args.threads)
    models = _choices(args.models, MODELS, "--models")
    networks = _choices(args.networks, NETWORKS, "--networks")
    items = {"mlp": args.mlp_items, "resnet": args.resnet_items}
    inputs = {
        "models": models,
        "networks": networks,
        "batch": {n: f"{items[n]} items x 2 views = {2 * items[n]} images" for n in networks},
        "mlp": "1x28x28, encoder 784-2000-500-500-20, decoder 10-500-500-2000-784, latent 10, preset mnist",
        "resnet": "3x32x32, 32/64/128 channels, 2 blocks per stage, latent 64, preset cifar",
        "precision": args.precision,
        "objective": f"{args.objective}, {args.num_particles} particle(s)"
        + (", vectorised; ratios against that many floor steps" if args.num_particles > 1 else ""),
        "repeats": args.repeats,
        "warmup": args.warmup,
        "threads": threads,
        "device": "cpu",
    }
    header("one training step: pssl (Trainer.make_batch + Trainer.step) vs bare PyTorch floor", inputs)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        if args.profile:
            profile_step(args.mlp_items, steps=args.profile_steps, out=out)
        results = []
        for network in networks:
            for model_name in models:
                result = measure(
                    model_name,
                    network,
                    items[network],
                    repeats=args.repeats,
                    warmup=args.warmup,
                    precision=args.precision,
                    out=out,
                    objective=args.objective,
                    num_particles=args.num_particles,
                )
                results.append(result)
                _print_row(result)
    print(NOISE_NOTE)
    write_json(args.json, "step", inputs, results)
    return {"inputs": inputs, "results": results}


def _print_row(r: dict[str, Any]) -> None:
    step, objective = r["step_ratio"], r["objective_ratio"]
    row = {
        "case": f"{r['model']}/{r['network']}"
        + (f" {r['objective']} K={r['num_particles']}" if r["num_particles"] > 1 else ""),
        "images": r["images"],
        "pssl ms": r["pssl_step"]["median_ms"],
        "floor ms": r["floor_step"]["median_ms"],
        "step ratio [q1,q3]": spread(step),
        f"goal<={STEP_GOAL}": r["step_goal"],
        "make_batch ms": r["make_batch"]["median_ms"],
        "ELBO ms": r["objective_pyro"]["median_ms"],
        "hand ms": r["objective_hand"]["median_ms"],
        "objective ratio [q1,q3]": spread(objective),
        f"goal<={OBJECTIVE_GOAL}": r["objective_goal"],
    }
    print(table([row], list(row)))
    if not math.isnan(r["maths_relative_difference"]):
        print(f"   (hand-written loss equals the Pyro loss to {r['maths_relative_difference']:.1e} relative)")


def _choices(value: str, allowed: tuple[str, ...], flag: str) -> list[str]:
    chosen = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in chosen if v not in allowed]
    if bad or not chosen:
        raise SystemExit(f"{flag}: unknown {bad or value!r}; accepted: {', '.join(allowed)}")
    return chosen


def _parser():
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated: simvae,vae,simclr")
    p.add_argument("--networks", default=",".join(NETWORKS), help="comma-separated: mlp,resnet")
    p.add_argument("--mlp-items", type=int, default=64, help="items per batch with the MLP (x2 views)")
    p.add_argument(
        "--resnet-items", type=int, default=8, help="items per batch with the ResNet (x2 views; small on CPU)"
    )
    p.add_argument("--repeats", type=int, default=15, help="interleaved timed rounds per case")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls of each case first")
    p.add_argument(
        "--precision", choices=("fp32", "bf16"), default="fp32", help="the networks' compute, both sides"
    )
    p.add_argument(
        "--objective", default="trace", choices=("trace", "iwae", "renyi"), help="the pssl step's objective"
    )
    p.add_argument(
        "--num-particles",
        type=int,
        default=1,
        help="particles (vectorised); ratios against this many floor steps",
    )
    p.add_argument("--profile", action="store_true", help="first profile the SimVAE MLP pssl step")
    p.add_argument("--profile-steps", type=int, default=10, help="steps the profile covers")
    return p


if __name__ == "__main__":
    main()
