"""``precision=bf16``: bf16 compute in the networks, fp32 master weights, optimiser state and loss.

* The parameters, their gradients and Adam's moments stay float32 through bf16 steps,
  while a linear layer inside a network really computes in bf16.
* What leaves a network is float32: the likelihood sees float32 decoder outputs and
  the loss and every site's log-density are float32 sums.
* A short bf16 run on a tiny fixed problem ends close to the fp32 run (tolerance below).
* A CPU without native bf16 is refused with one line naming ``precision=bf16``
  before anything is written; the capability check reads the kernel's flags.
* Under bf16 a run stopped after one epoch and resumed equals the uninterrupted run,
  and its checkpoints hold float32 tensors.

The training tests pretend the CPU has native bf16 (``cpu_flags`` patched), so they
run anywhere; bf16 is then emulated where the CPU lacks it, with the same numbers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pssl.config import Component, Config
from pssl.datasets import load_dataset
from pssl.inference import precision as precision_module
from pssl.inference.checkpoint import latest_checkpoint, load_checkpoint
from pssl.inference.precision import (
    check_precision,
    cpu_flags,
    enable_network_precision,
    native_bf16,
    network_compute,
    network_modules,
)
from pssl.inference.train import Trainer, train
from pssl.models import sites

# Measured here after 2 epochs (14 steps) of the tiny problem: the validation ELBO of bf16
# and fp32 differ by about 0.1%; the parameters by about 1% of their spread.
RUN_RELATIVE_TOLERANCE = 2e-2


@pytest.fixture
def native(monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_flags", lambda cpuinfo="/proc/cpuinfo": {"avx512_bf16"})


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", {"limit": 256}, seed=0)


def small_config(out: Path, **changes) -> Config:
    base = dict(
        model=Component("simvae"),
        data=Component("digits", {"limit": 256}),
        encoder=Component("mlp", {"hidden": "32,16"}),
        decoder=Component("mlp", {"hidden": "16,32"}),
        latent_dim=4,
        batch_size=32,
        epochs=2,
        lr=1e-3,
        device="cpu",
        out=str(out),
        progress=False,
        precision="bf16",
    )
    base.update(changes)
    return Config(**base)


@pytest.mark.parametrize("model_name", ["simvae", "simclr"])
def test_bf16_keeps_fp32_masters_and_optimiser_state(tmp_path: Path, digits, native, model_name) -> None:
    trainer = Trainer(small_config(tmp_path / "run", model=Component(model_name)), data=digits)
    inner = [m for _, net in network_modules(trainer.model) for m in net.modules()]
    linear = next(m for m in inner if isinstance(m, torch.nn.Linear))
    seen: list[torch.dtype] = []
    linear.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    for step in range(3):
        assert trainer.step(trainer.make_batch(torch.arange(step * 32, step * 32 + 32))) is not None
        trainer.global_step += 1
    assert seen and set(seen) == {torch.bfloat16}, "the network did not compute in bf16"
    for name, parameter in trainer.parameters:
        assert parameter.dtype == torch.float32, name
        assert parameter.grad is not None and parameter.grad.dtype == torch.float32, name
        state = trainer.optimizer.state[parameter]
        assert state["exp_avg"].dtype == torch.float32 and state["exp_avg_sq"].dtype == torch.float32, name


def test_bf16_likelihood_and_loss_are_fp32(tmp_path: Path, digits, native) -> None:
    trainer = Trainer(small_config(tmp_path / "run"), data=digits)
    received: list[torch.dtype] = []
    likelihood = trainer.model.likelihood
    original = likelihood.distribution

    def recording(decoded, *args, **kwargs):
        received.append(decoded.dtype)
        return original(decoded, *args, **kwargs)

    likelihood.distribution = recording
    inside: list[torch.dtype] = []
    trainer.model.decoder.net[0].register_forward_hook(lambda module, args, out: inside.append(out.dtype))
    output = trainer.step(trainer.make_batch(torch.arange(32)))
    assert output is not None
    assert inside == [torch.bfloat16]
    assert received and set(received) == {torch.float32}, "the likelihood was given bf16 decoder outputs"
    assert output.loss.dtype == torch.float32
    observed = f"model/{sites.OBSERVATION}"
    assert observed in output.site_log_prob
    assert {v.dtype for v in output.site_log_prob.values()} == {torch.float32}


def test_bf16_run_ends_close_to_fp32(tmp_path: Path, digits, native) -> None:
    runs = {p: train(small_config(tmp_path / p, precision=p), data=digits) for p in ("fp32", "bf16")}
    elbo32, elbo16 = (runs[p].epochs[-1]["val_elbo"] for p in ("fp32", "bf16"))
    assert elbo16 != elbo32, "bf16 had no effect"
    assert abs(elbo16 - elbo32) <= RUN_RELATIVE_TOLERANCE * abs(elbo32), (elbo16, elbo32)
    for name, p32 in runs["fp32"].model.state_dict().items():
        p16 = runs["bf16"].model.state_dict()[name]
        assert p16.dtype == p32.dtype == torch.float32, name
        if p32.is_floating_point() and p32.numel() > 1:
            spread = float(p32.std()) + 1e-12
            difference = float((p16 - p32).abs().mean())
            assert difference <= RUN_RELATIVE_TOLERANCE * 5 * spread, (name, difference, spread)


def test_bf16_refused_without_native_support(tmp_path: Path, digits, monkeypatch) -> None:
    monkeypatch.setattr(precision_module, "cpu_flags", lambda cpuinfo="/proc/cpuinfo": {"fpu", "avx2"})
    run = tmp_path / "run"
    with pytest.raises(ValueError, match=r"precision=bf16 refused: this CPU has none of avx512_bf16") as err:
        Trainer(small_config(run), data=digits)
    assert "\n" not in str(err.value) and "precision=fp32" in str(err.value)
    assert not run.exists(), "a refused run wrote files"
    Trainer(small_config(run, precision="fp32"), data=digits)  # fp32 is always accepted
    monkeypatch.setattr(precision_module, "cpu_flags", lambda cpuinfo="/proc/cpuinfo": None)
    with pytest.raises(ValueError, match="cannot read this CPU's feature flags"):
        check_precision("bf16", "cpu")


def test_capability_check_reads_the_kernel_flags(tmp_path: Path) -> None:
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16\n\nprocessor\t: 1\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n")
    old = tmp_path / "old"
    old.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n")
    assert "avx512_bf16" in cpu_flags(x86)
    assert "bf16" in cpu_flags(arm)
    assert cpu_flags(tmp_path / "missing") is None
    for path, expected in ((x86, True), (arm, True), (old, False)):
        flags = cpu_flags(path)
        found = flags & set(precision_module.X86_BF16_FLAGS + precision_module.ARM_BF16_FLAGS)
        assert bool(found) is expected, path
    assert native_bf16("meta")[0] is False
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, got 'fp16'"):
        check_precision("fp16", "cpu")


def test_hooks_are_inert_outside_network_compute() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    model = torch.nn.Module()
    model.net = net
    model.scale = torch.nn.Parameter(torch.ones(2))
    assert enable_network_precision(model) == ["net"]
    assert enable_network_precision(model) == ["net"]  # idempotent: one pair of hooks
    assert len(net._forward_hooks) == 1
    x = torch.randn(3, 4)
    inner: list[torch.dtype] = []
    net[0].register_forward_hook(lambda module, args, out: inner.append(out.dtype))
    assert net(x).dtype == torch.float32 and inner == [torch.float32]
    with network_compute("bf16", "cpu"):
        out = net(x)
    assert inner[-1] == torch.bfloat16 and out.dtype == torch.float32
    with network_compute("fp32", "cpu"):
        assert net(x).dtype == torch.float32 and inner[-1] == torch.float32
    with network_compute("bf16", "cpu"), pytest.raises(RuntimeError):
        net(torch.randn(3, 5))  # a failing forward leaves autocast as it found it
    assert not torch.is_autocast_enabled("cpu")


def test_bf16_resume_equals_uninterrupted_and_checkpoints_are_fp32(tmp_path: Path, digits, native) -> None:
    straight = train(small_config(tmp_path / "a"), data=digits)
    train(small_config(tmp_path / "b", epochs=1), data=digits)
    state = load_checkpoint(latest_checkpoint(tmp_path / "b"))
    assert {v.dtype for v in state["model"].values() if v.is_floating_point()} == {torch.float32}
    moments = [s[k] for s in state["optimizer"]["state"].values() for k in ("exp_avg", "exp_avg_sq")]
    assert moments and {m.dtype for m in moments} == {torch.float32}
    resumed = train(small_config(tmp_path / "b", resume=True), data=digits)
    for name, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, rtol=0, atol=0, msg=name)
    assert resumed.history == straight.history


def test_cli_refuses_bf16_in_one_line_and_writes_nothing(tmp_path: Path, monkeypatch, capsys) -> None:
    from pssl.cli import main

    monkeypatch.setattr(precision_module, "cpu_flags", lambda cpuinfo="/proc/cpuinfo": {"sse2"})
    run = tmp_path / "run"
    argv = ["train", "data=digits", "data.limit=64", "epochs=1", "device=cpu", "precision=bf16", f"out={run}"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "precision=bf16 refused" in err and len(err.splitlines()) == 1, err
    assert not run.exists() or not any(run.iterdir())
