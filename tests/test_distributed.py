"""Several processes: W ranks equal one process on the concatenated batch, and state is world-size free.

One ``torchrun`` launch (``python -m torch.distributed.run --standalone
--nproc_per_node=2 tests/test_distributed.py ...``, gloo on CPU) runs every
distributed scenario; this file is also its worker (see ``worker`` at the end).
The tests then compare what the ranks wrote with one process in this one:

* the collectives of :mod:`pssl.collectives` and the global batch norm against
  plain autograd on the concatenated tensors;
* ``STEPS`` training steps of each registered method (SimVAE, and SimCLR and
  VicREG when registered), of SimVAE with a non-default objective (the
  importance-weighted bound, 3 vectorised particles: a bound per item, so the
  ranks' losses add up to the one-process loss; and ``traceenum`` with the ``gmm``
  content prior, whose component site is summed out exactly per item) and of
  :class:`ToyContrastive` (InfoNCE over the
  gathered batch, a batch-level penalty added once per rank, batch norm) in
  float64: gradients and parameters after every step, against an independent
  loop on the concatenated batch that uses the same views and the same
  reparameterisation noise (recorded per rank and concatenated).
  Tolerance (float64; only the order of summation differs): ``rtol=1e-9`` and
  ``atol=1e-10 * max(1, max |expected|)`` per tensor, since gradients reach ~100.
  The slow variant runs 10 steps and prints the largest difference;
* resuming: a one-process checkpoint continued by two processes, a
  two-process checkpoint continued by one, and a two-process run stopped by a
  signal on one rank and resumed by two processes, equal to the uninterrupted run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyro
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pssl.collectives import gather_with_grad, local_rows, world_size
from pssl.config import Component, Config
from pssl.datasets import DataSplits, TensorData
from pssl.inference.distributed import (
    DistributedContext,
    derive_seed,
    launch_environment,
    resolve_device,
    step_seed,
)
from pssl.models import sites
from pssl.models.base import MODELS, SSLModel, ViewBatch

STEPS = 3
LONG_STEPS = 10
BATCH = 16
WORLD = 2
SEED = 3
METHODS = ("simvae", "simclr", "vicreg")
TOY = "toy-contrastive"
OBJECTIVE_CASES = {
    "simvae-iwae": ("simvae", Component("iwae", {"num_particles": 3, "vectorize_particles": True})),
    "simvae-gmm": ("simvae", Component("traceenum")),
}
"""Cases ``name: (method, objective)`` that train a method with a non-default Pyro ELBO."""
CASE_CHANGES = {"simvae-gmm": {"prior": Component("gmm", {"components": 3})}}
"""Config changes of a case beyond its method and objective (the gmm prior's enumerated site)."""
TOLERANCE = {"rtol": 1e-9, "atol": 1e-11}  # the collectives: small tensors of order 1


def assert_close_scaled(actual: torch.Tensor, expected: torch.Tensor, msg: str) -> None:
    """float64 agreement up to summation order: rtol 1e-9, atol 1e-10 * max(1, max |expected|)."""
    scale = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-10 * scale, msg=msg)


def tiny_data(items: int) -> DataSplits:
    """``items`` random 8x8 grey training images, 8 validation images (seeded; no file, no scikit-learn)."""
    g = torch.Generator().manual_seed(7)

    def split(n: int) -> TensorData:
        images = torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
        return TensorData(images, torch.randint(0, 10, (n,), generator=g), num_classes=10)

    return DataSplits(train=split(items), val=split(8), test=split(8), name="digits")


def tiny_config(model: str, out: Path, **changes) -> Config:
    """Tiny networks for :func:`tiny_data` (digits augmentation), global batch ``BATCH``."""
    objective = Component("trace")
    changes = {**CASE_CHANGES.get(model, {}), **changes}
    if model in OBJECTIVE_CASES:
        model, objective = OBJECTIVE_CASES[model]
    base = dict(
        model=Component(model),
        objective=objective,
        data=Component("digits"),
        encoder=Component("mlp", {"hidden": "32,16"}),
        decoder=Component("mlp", {"hidden": "32,16"}),
        latent_dim=4,
        num_views=2,
        batch_size=BATCH,
        epochs=1,
        lr=1e-3,
        seed=SEED,
        device="cpu",
        out=str(out),
        progress=False,
        log_every=1,
    )
    base.update(changes)
    return Config(**base)


class ToyContrastive(SSLModel):
    """InfoNCE of view 0 against every item's view 1 in the *global* batch, plus a batch penalty.

    Item ``i``'s term is ``t_i = -log softmax_k(<e_i0, e_k1> / tau)[i]`` over the
    gathered batch; the penalty ``P = ||mean_k e_k0||^2`` of the global batch is
    added once per rank as ``P / W``. Batch norm in the network. The loss of one
    process on the whole batch is ``sum_i t_i + P``, and ``sum_r loss_r`` equals it.
    """

    min_views = 2

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 8)
        )
        self.representation_dim = 8
        self.poison = False  # make this rank's InfoNCE terms NaN (non-finite tests)

    def embed(self, views: torch.Tensor) -> torch.Tensor:
        b, j = views.shape[:2]
        return F.normalize(self.net(views.reshape(b * j, -1)), dim=-1).reshape(b, j, -1)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def guide(self, batch: ViewBatch) -> None:
        pass

    def model(self, batch: ViewBatch) -> None:
        e = self.embed(batch.views)
        b = e.shape[0]
        candidates = gather_with_grad(e[:, 1])
        logits = e[:, 0] @ candidates.T / 0.5
        positives = torch.arange(local_rows(b).start, local_rows(b).stop)
        t = F.cross_entropy(logits, positives, reduction="none")
        if self.poison:
            t = t * float("nan")
        penalty = gather_with_grad(e[:, 0]).mean(0).pow(2).sum() / world_size()
        with pyro.plate(sites.ITEMS, size=batch.num_items, subsample=batch.index, dim=sites.ITEMS_DIM):
            pyro.factor("infonce", -t.unsqueeze(-1))
            pyro.factor("penalty", -(penalty / b).expand(b, 1))


def build_double(name: str, config: Config, data: DataSplits) -> SSLModel:
    from pssl.inference.train import build_from_config, resolve_config

    if name == TOY:
        return ToyContrastive().double()
    return build_from_config(resolve_config(config, data), data.train.image_shape).double()


def registered(names) -> list:
    return [
        pytest.param(n, marks=pytest.mark.skip(reason=f"model {n!r} is not registered"))
        if n not in MODELS
        else n
        for n in names
    ]


# --- the launch -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def launched(tmp_path_factory) -> Path:
    """Run the worker under torchrun once; return the folder the ranks wrote to."""
    from pssl.inference.train import train

    out = tmp_path_factory.mktemp("distributed")
    # A one-process checkpoint (epoch 1 of 2) for the two processes to continue.
    train(tiny_config("simvae", out / "w1"), data=tiny_data(4 * BATCH))
    launch(out, STEPS, [TOY, *(m for m in METHODS if m in MODELS), *OBJECTIVE_CASES], resume=True)
    return out


def launch(out: Path, steps: int, methods: list[str], *, resume: bool) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={WORLD}",
        __file__,
        str(out),
        str(steps),
        "resume" if resume else "no-resume",
        *methods,
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"torchrun failed:\n{done.stdout[-4000:]}\n{done.stderr[-6000:]}"


def load(out: Path, name: str, rank: int) -> dict:
    return torch.load(out / f"{name}-rank{rank}.pt", weights_only=True)


# --- collectives --------------------------------------------------------------------------------


def collective_inputs() -> dict[str, torch.Tensor]:
    """The global tensors of the collective checks (every rank builds the same ones)."""
    g = torch.Generator().manual_seed(0)
    return {
        "x": torch.randn(WORLD * 3, 4, generator=g, dtype=torch.float64),
        "weights": torch.randn(WORLD, WORLD * 3, 4, generator=g, dtype=torch.float64),
        "bn_x": torch.randn(WORLD * 5, 3, 2, generator=g, dtype=torch.float64) * 2 + 1,
        "bn_coef": torch.randn(WORLD * 5, 3, 2, generator=g, dtype=torch.float64),
        "bn_weight": torch.randn(3, generator=g, dtype=torch.float64),
    }


def test_gather_and_all_reduce_with_grad_match_one_process(launched: Path) -> None:
    inputs = collective_inputs()
    x = inputs["x"].clone().requires_grad_(True)
    # Rank r's loss: sum(W_r * X^2) + 2 * sum(its own rows) + sum(v_r * (sum over all rows)^2)
    loss = 0.0
    for r in range(WORLD):
        loss = loss + (inputs["weights"][r] * x.pow(2)).sum() + 2 * x[3 * r : 3 * r + 3].sum()
        loss = loss + (inputs["weights"][r, 0] * x.sum(0).pow(2)).sum()
    loss.backward()
    for r in range(WORLD):
        got = load(launched, "collectives", r)
        torch.testing.assert_close(got["gathered"], inputs["x"], rtol=0, atol=0)
        torch.testing.assert_close(got["gathered_no_grad"], inputs["x"], rtol=0, atol=0)
        torch.testing.assert_close(got["x_grad"], x.grad[3 * r : 3 * r + 3], **TOLERANCE)


def test_distributed_batchnorm_matches_batchnorm_on_concatenated_batch(launched: Path) -> None:
    inputs = collective_inputs()
    bn = torch.nn.BatchNorm1d(3).double()
    with torch.no_grad():
        bn.weight.copy_(inputs["bn_weight"])
    x = inputs["bn_x"].clone().requires_grad_(True)
    y = bn(x)
    (y * inputs["bn_coef"]).sum().backward()
    for r in range(WORLD):
        got = load(launched, "collectives", r)
        rows = slice(5 * r, 5 * r + 5)
        torch.testing.assert_close(got["bn_y"], y[rows].detach(), **TOLERANCE)
        torch.testing.assert_close(got["bn_x_grad"], x.grad[rows], **TOLERANCE)
        torch.testing.assert_close(got["bn_weight_grad"], bn.weight.grad, **TOLERANCE)
        torch.testing.assert_close(got["bn_bias_grad"], bn.bias.grad, **TOLERANCE)
        torch.testing.assert_close(got["bn_running_mean"], bn.running_mean, **TOLERANCE)
        torch.testing.assert_close(got["bn_running_var"], bn.running_var, **TOLERANCE)


# --- W processes == one process on the concatenated batch ---------------------------------------


@contextlib.contextmanager
def recorded_normal_noise(record: list[torch.Tensor] | None = None, replay: list[torch.Tensor] | None = None):
    """Record the standard-normal draws of reparameterised Normals, or replay given ones in order."""
    import torch.distributions.normal as normal_module

    original = normal_module._standard_normal
    queue = list(replay) if replay is not None else None

    def draw(shape, dtype, device):
        if queue is not None:
            eps = queue.pop(0)
            assert tuple(eps.shape) == tuple(shape), (tuple(eps.shape), tuple(shape))
            return eps.to(dtype=dtype, device=device)
        eps = original(shape, dtype=dtype, device=device)
        record.append(eps.clone())
        return eps

    normal_module._standard_normal = draw
    try:
        yield
    finally:
        normal_module._standard_normal = original
    if queue:
        raise AssertionError(f"{len(queue)} replayed draws were not used")


def one_process_reference(name: str, initial: dict[str, torch.Tensor], steps: int):
    """An independent loop: Adam on the concatenated global batch, with each rank's views and noise.

    The views of rank r's slice come from its augmentation stream; the
    reparameterisation noise each rank drew is recorded on its slice and replayed,
    concatenated in rank order, into one evaluation of the whole batch. Batch
    norm sees the whole batch, as one process would.
    """
    from pssl.augment import build_augmenter
    from pssl.inference.objectives import Objective, build_objective
    from pssl.inference.train import resolve_config

    data = tiny_data(steps * BATCH)
    config = resolve_config(tiny_config(name, Path("unused")), data)
    shape = data.train.image_shape
    model = build_double(name, config, data)
    model.load_state_dict(initial)
    elbo = build_objective(config.objective.name, config.objective.options)
    objective = Objective(model, elbo)
    # vectorised particles put the particle dimension first: the ranks' draws join at the items dim
    items_dim = 1 if elbo.vectorize_particles and elbo.num_particles > 1 else 0
    optimizer = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad],
        lr=config.lr,
        eps=config.adam_eps,
        weight_decay=config.weight_decay,
    )
    augmenter = build_augmenter(config.augment.name, shape, config.augment.options)
    num_items = len(data.train)
    order = torch.randperm(num_items, generator=torch.Generator().manual_seed(config.seed + 2))
    images = data.train.images.double() / 255.0
    grads, batches = [], []
    for step in range(steps):
        batch = order[step * BATCH : (step + 1) * BATCH]
        slices = batch.chunk(WORLD)
        views = [
            augmenter(
                images[s],
                config.num_views,
                torch.Generator().manual_seed(step_seed(config.seed, "augment", step, r)),
            )
            for r, s in enumerate(slices)
        ]
        model.train()
        state = {k: v.clone() for k, v in model.state_dict().items()}
        noise = []
        for r, s in enumerate(slices):
            torch.manual_seed(step_seed(config.seed, "model", step, r))
            draws: list[torch.Tensor] = []
            with torch.no_grad(), recorded_normal_noise(record=draws):
                objective(ViewBatch(views[r], s, num_items))
            noise.append(draws)
        model.load_state_dict(state)  # the recording passes must not move batch-norm statistics
        joint = [torch.cat(parts, dim=items_dim) for parts in zip(*noise)]
        optimizer.zero_grad(set_to_none=True)
        with recorded_normal_noise(replay=joint):
            output = objective(ViewBatch(torch.cat(views), batch, num_items))
        if not output.backward_done:
            output.loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        batches.append(batch)
        optimizer.step()
        model.after_step()
    return model, grads, batches


def compare_with_one_process(out: Path, name: str, steps: int) -> float:
    """Assert W ranks == one process for ``steps`` steps; return the largest parameter difference."""
    ranks = [load(out, f"method-{name}", r) for r in range(WORLD)]
    model, grads, batches = one_process_reference(name, ranks[0]["initial"], steps)
    for r, got in enumerate(ranks):
        assert len(got["grads"]) == steps
        for step in range(steps):
            assert got["grads"][step].keys() == grads[step].keys()
            for key, value in grads[step].items():
                assert_close_scaled(got["grads"][step][key], value, f"rank {r} step {step} grad {key}")
        for key, value in model.state_dict().items():
            assert_close_scaled(got["final"][key], value, f"rank {r} {key}")
    # every rank holds the same replica, bit for bit
    for key in ranks[0]["final"]:
        assert torch.equal(ranks[0]["final"][key], ranks[1]["final"][key]), key
    # the union over ranks of each step's items is exactly the one-process batch
    for step in range(steps):
        union = torch.cat([ranks[r]["index"][step] for r in range(WORLD)])
        assert torch.equal(union, batches[step])
    reference = model.state_dict()
    return max(float((ranks[0]["final"][k] - v).abs().max()) for k, v in reference.items())


@pytest.mark.parametrize("name", [TOY, *registered(METHODS), *OBJECTIVE_CASES])
def test_two_processes_equal_one_process_on_concatenated_batch(launched: Path, name: str) -> None:
    compare_with_one_process(launched, name, STEPS)


@pytest.mark.slow
def test_two_processes_equal_one_process_after_ten_steps(tmp_path: Path) -> None:
    methods = [TOY, *(m for m in METHODS if m in MODELS), *OBJECTIVE_CASES]
    launch(tmp_path, LONG_STEPS, methods, resume=False)
    for name in methods:
        difference = compare_with_one_process(tmp_path, name, LONG_STEPS)
        print(
            f"{name}: max |2-process - 1-process| parameter difference after {LONG_STEPS} steps: "
            f"{difference:.3g}"
        )


# --- resuming across world sizes -------------------------------------------------------------------


def test_one_process_checkpoint_continues_under_two(launched: Path) -> None:
    got = load(launched, "resume-w1", 0)
    assert got["global_step"] == 2 * 4 and got["epoch"] == 2
    assert got["world_sizes"] == [1, 2]  # the checkpoint written by one process, then by two


def test_two_process_checkpoint_continues_under_one(launched: Path) -> None:
    from pssl.inference.checkpoint import latest_checkpoint, load_checkpoint
    from pssl.inference.train import train

    run = launched / "w2"
    assert load_checkpoint(latest_checkpoint(run))["world_size"] == WORLD
    result = train(tiny_config("simvae", run, epochs=2, resume=True), data=tiny_data(4 * BATCH))
    assert result.epochs[-1]["step"] == 8 and len(result.epochs) == 2
    assert [row["step"] for row in result.history] == list(range(1, 9))


def test_signal_on_one_rank_stops_both_and_resume_is_exact(launched: Path) -> None:
    got = load(launched, "stop", 0)
    assert got["interrupted"] == [True, True]
    assert got["stopped_at"] == 4  # signal after step 3 on rank 1; both ranks stop after step 4
    for key, value in got["straight"].items():
        torch.testing.assert_close(got["resumed"][key], value, rtol=0, atol=0, msg=key)


def test_nonfinite_loss_on_one_rank_stops_every_rank_and_names_it(launched: Path) -> None:
    first = load(launched, "nonfinite", 0)
    for r in range(WORLD):
        got = load(launched, "nonfinite", r)
        assert got["error"] == "NonFiniteError", got
        assert "rank 1: loss is nan at step 1; non-finite sites/terms: model/infonce" in got["message"]
        assert "rank 0:" not in got["message"]
        assert got["skipped"] == 1  # nonfinite=skip: every rank skips the same step
        assert torch.equal(got["skip_final"], first["skip_final"])  # and the replicas stay equal


# --- small pieces, one process -------------------------------------------------------------------


def test_shard_and_batch_divisibility() -> None:
    index = torch.arange(12)
    parts = [DistributedContext(rank=r, world_size=3).shard(index) for r in range(3)]
    assert torch.equal(torch.cat(parts), index)
    with pytest.raises(ValueError, match="batch_size=10 is not divisible by the number of processes 4"):
        DistributedContext(rank=0, world_size=4).check_batch(10)


def test_launch_environment(monkeypatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert launch_environment() is None
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert launch_environment() == (1, 1, 2)
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="inconsistent launcher environment RANK=2, WORLD_SIZE=2"):
        launch_environment()
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(ValueError, match="RANK='one' must be a non-negative integer"):
        launch_environment()


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda", local_rank=1)


def test_step_seeds_differ_by_stream_step_and_rank() -> None:
    seeds = {step_seed(0, s, t, r) for s in ("augment", "model") for t in range(3) for r in range(3)}
    assert len(seeds) == 18
    assert derive_seed(5, "a", 1) == derive_seed(5, "a", 1) != derive_seed(6, "a", 1)


# --- the worker ----------------------------------------------------------------------------------


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _worker_collectives(out: Path, ctx: DistributedContext) -> None:
    from pssl.collectives import all_reduce_with_grad, gather, gather_with_grad, local_rows
    from pssl.inference.distributed import convert_batchnorm

    inputs = collective_inputs()
    r = ctx.rank
    x = inputs["x"][3 * r : 3 * r + 3].clone().requires_grad_(True)
    gathered = gather_with_grad(x)
    loss = (inputs["weights"][r] * gathered.pow(2)).sum() + 2 * gathered[local_rows(3)].sum()
    loss = loss + (inputs["weights"][r, 0] * all_reduce_with_grad(x.sum(0)).pow(2)).sum()
    loss.backward()

    bn = convert_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm1d(3)).double(), ctx.device)
    with torch.no_grad():
        bn[0].weight.copy_(inputs["bn_weight"])
    rows = slice(5 * r, 5 * r + 5)
    bn_x = inputs["bn_x"][rows].clone().requires_grad_(True)
    bn_y = bn(bn_x)
    (bn_y * inputs["bn_coef"][rows]).sum().backward()
    ctx.sum_gradients(bn.parameters())
    torch.save(
        {
            "gathered": gathered.detach(),
            "gathered_no_grad": gather(x),
            "x_grad": x.grad,
            "bn_y": bn_y.detach(),
            "bn_x_grad": bn_x.grad,
            "bn_weight_grad": bn[0].weight.grad,
            "bn_bias_grad": bn[0].bias.grad,
            "bn_running_mean": bn[0].running_mean,
            "bn_running_var": bn[0].running_var,
        },
        out / f"collectives-rank{r}.pt",
    )


def _worker_method(out: Path, ctx: DistributedContext, name: str, steps: int) -> None:
    from pssl.inference.train import Trainer, seed_everything

    config = tiny_config(name, out / f"run-{name}")
    data = tiny_data(steps * BATCH)
    seed_everything(config.seed)
    model = build_double(name, config, data)
    initial = _state(model)
    record: dict[str, list] = {"grads": [], "index": []}

    def on_step_end(trainer, batch, output) -> None:
        assert output is not None
        record["grads"].append(
            {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
        )
        record["index"].append(batch.index.clone())

    trainer = Trainer(config, data=data, model=model, on_step_end=on_step_end)
    trainer.fit()
    torch.save(
        {"initial": initial, "final": _state(trainer.model), **record},
        out / f"method-{name}-rank{ctx.rank}.pt",
    )


def _worker_resume(out: Path, ctx: DistributedContext) -> None:
    from pssl.inference.checkpoint import latest_checkpoint, load_checkpoint
    from pssl.inference.train import Trainer, TrainingInterrupted, train

    data = tiny_data(4 * BATCH)
    # a one-process checkpoint (written by the test before the launch), continued by two processes
    before = load_checkpoint(latest_checkpoint(out / "w1"))["world_size"]
    ctx.barrier()  # read before rank 0 writes the new checkpoints
    result = train(tiny_config("simvae", out / "w1", epochs=2, resume=True), data=data)
    after = load_checkpoint(latest_checkpoint(out / "w1"))["world_size"]
    if ctx.is_main:
        torch.save(
            {
                "global_step": result.epochs[-1]["step"],
                "epoch": len(result.epochs),
                "world_sizes": [before, after],
            },
            out / "resume-w1-rank0.pt",
        )
    # a two-process checkpoint for the test to continue in one process
    train(tiny_config("simvae", out / "w2", epochs=1), data=data)
    # stop by a signal on rank 1 only, resume under two processes, compare with an uninterrupted run
    straight = train(tiny_config("simvae", out / "straight", epochs=2), data=data)

    def signal_rank_1(trainer, batch, output) -> None:
        if trainer.dist.rank == 1 and trainer.global_step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    interrupted = False
    stopped_at = None
    trainer = Trainer(tiny_config("simvae", out / "stopped", epochs=2), data=data, on_step_end=signal_rank_1)
    try:
        trainer.fit()
    except TrainingInterrupted:
        interrupted = True
        stopped_at = trainer.global_step
    flags = ctx.gather_objects(interrupted)
    torch.manual_seed(1234 + ctx.rank)  # the resumed run must not depend on the process's RNG
    resumed = train(tiny_config("simvae", out / "stopped", epochs=2, resume=True), data=data)
    if ctx.is_main:
        torch.save(
            {
                "interrupted": flags,
                "stopped_at": stopped_at,
                "straight": _state(straight.model),
                "resumed": _state(resumed.model),
            },
            out / "stop-rank0.pt",
        )


def _worker_nonfinite(out: Path, ctx: DistributedContext) -> None:
    """Rank 1's loss goes NaN at step 1: with nonfinite=stop every rank stops; with skip every rank skips."""
    from pssl.inference.objectives import NonFiniteError
    from pssl.inference.train import Trainer

    def poison_rank_1(trainer, batch, output) -> None:
        trainer.model.poison = trainer.dist.rank == 1 and trainer.global_step == 1

    result: dict[str, object] = {}
    data = tiny_data(4 * BATCH)
    trainer = Trainer(
        tiny_config(TOY, out / "nonfinite-stop"), data=data, model=ToyContrastive(), on_step_end=poison_rank_1
    )
    try:
        trainer.fit()
        result.update(error=None, message="")
    except NonFiniteError as err:
        result.update(error=type(err).__name__, message=str(err))
    config = tiny_config(TOY, out / "nonfinite-skip", nonfinite="skip")
    trainer = Trainer(config, data=data, model=ToyContrastive(), on_step_end=poison_rank_1)
    finished = trainer.fit()
    result.update(skipped=finished.skipped_steps, skip_final=next(iter(finished.model.parameters())).detach())
    torch.save(result, out / f"nonfinite-rank{ctx.rank}.pt")


def worker(out: Path, steps: int, resume: bool, methods: list[str]) -> None:
    """Run under torchrun: every scenario, each rank writing what the tests compare."""
    from pssl.inference.distributed import setup_distributed

    ctx = setup_distributed("cpu")
    assert ctx.world_size == WORLD and ctx.backend == "gloo", ctx
    _worker_collectives(out, ctx)
    for name in methods:
        _worker_method(out, ctx, name, steps)
    if resume:
        _worker_resume(out, ctx)
        _worker_nonfinite(out, ctx)


if __name__ == "__main__":
    worker(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "resume", sys.argv[4:])
