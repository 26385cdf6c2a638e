r"""The GPU path in one prepared script: the paper budget's piece, CUDA graphs, the ResNet step.

One command for the day a GPU is lent (sized for under 10 minutes on one H200;
``--budget-seconds`` caps it, and a section that would not fit is skipped with a
line saying so). Sections, in order (``--sections``):

* **paper**: the paper budget's unit of work, the ``paper-fashionmnist`` recipe
  (SimVAE, MLP 784-2000-500-500 / 10-500-500-2000-784, 64 items x 2 views, the
  network pair of claims C1-C2 at the paper budget) trained for ``--paper-epochs``
  epochs by ``--concurrency`` runs at once (separate processes, seeds 1..N, one
  GPU), per precision. A 128-image MLP step leaves an H200 mostly idle (the step
  is bound by Python and kernel launches), so concurrent runs are how the grid
  fills it. Reports per run and in all: seconds per epoch, images (views) per
  second, and the paper budget this predicts: ``--paper-runs`` runs x 400 epochs
  at the best concurrency. FashionMNIST is read from ``--data-root`` (or found as
  ``pssl`` finds it); without it the runs train on synthetic uint8 images of the
  same shape and split sizes, labelled so (the throughput is the same, the ELBO
  is not).
* **graphs**: whether CUDA graphs (and ``torch.compile``) pay for the paper MLP:
  the bare PyTorch step of :mod:`benchmarks.step` eager, captured in one CUDA
  graph (Adam ``capturable``), and with compiled networks, against the pssl step;
  interleaved, images per second. (The pssl step itself cannot be captured: its
  loop reads the loss on the host every step to stop on a non-finite value.)
* **resnet**: SimVAE and SimCLR with the ResNet networks on 3x32x32 images (32/64/128
  channels, latent 64, ``cifar`` augmentation, ``J = 2``), per precision (``fp32``,
  ``bf16``: bf16 compute in the networks), parameters in ``channels_last``
  (``--memory-format both`` adds the contiguous layout), ``--compile`` also
  compiles the networks: the pssl step (``Trainer.make_batch`` + ``Trainer.step``,
  a real trainer with ``device=cuda``, synthetic images already on the GPU) against
  the bare PyTorch step of :mod:`benchmarks.step` on a ready batch, over blocks of
  ``--block`` steps closed by ``torch.cuda.synchronize``; images per second, ratio,
  peak GPU memory.

``--plan`` prints the sections, runs and time caps and exits (anywhere). Without
CUDA the script exits with a message; ``--device cpu --quick`` runs every section
it can at toy sizes on the CPU as a check of the script (graphs need CUDA and say so).

Usage (on the GPU machine; carry the FashionMNIST files, e.g. in ``.data/fashion-mnist``, and
install pssl there first: ``pip install --no-deps --no-build-isolation -e .``, with pyro-ppl
and opt_einsum wheels carried along when the machine's image lacks them)::

    python benchmarks/gpu.py --data-root .data/fashion-mnist --json gpu.json   # < 10 minutes
    python benchmarks/gpu.py --sections resnet --items 512 --memory-format both
    python benchmarks/gpu.py --plan
    python benchmarks/gpu.py --device cpu --quick       # check the script anywhere
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (
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
from benchmarks.step import HAND_LOSSES, build_trainer, floor_step, maths_check, pssl_step
from pssl.config import Component
from pssl.datasets import DataSplits, TensorData, load_dataset
from pssl.inference.precision import enable_network_precision, network_compute

MODELS = ("simvae", "simclr")
PRECISIONS = ("fp32", "bf16")
SECTIONS = ("paper", "graphs", "resnet")
PAPER_RECIPE = "paper-fashionmnist"
PAPER_EPOCHS = 400
FASHIONMNIST_SPLITS = (54_000, 6_000, 10_000)
WORKER_TAG = "PSSL_GPU_WORKER_RESULT "


def network_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The networks of a SimVAE (encoder, decoder) or SimCLR (backbone, head)."""
    names = ("encoder", "decoder") if hasattr(model, "decoder") else ("backbone", "head")
    return [getattr(model, name) for name in names]


def preparation(memory_format: str, compile_networks: bool):
    """A function putting a model's networks in ``memory_format`` (and compiling them, if asked)."""

    def prepare(model: torch.nn.Module) -> None:
        if memory_format == "channels_last":
            model.to(memory_format=torch.channels_last)
        if compile_networks:
            for module in network_modules(model):
                module.compile()

    return prepare


def measure(
    model_name: str,
    precision: str,
    memory_format: str,
    *,
    items: int,
    steps: int,
    block: int,
    warmup: int,
    device: torch.device,
    compile_networks: bool,
    out: Path,
) -> dict[str, Any]:
    """Images per second of the pssl step and the floor step for one configuration."""
    trainer = build_trainer(model_name, "resnet", items, out=out, precision=precision, device=str(device))
    prepare = preparation(memory_format, compile_networks)
    prepare(trainer.model)
    batch = trainer.make_batch(torch.arange(items))
    difference = maths_check(trainer, model_name, batch) if precision == "fp32" else None
    ours_step = pssl_step(trainer)
    floor = floor_step(trainer, model_name, batch.views, prepare)
    rounds = max(1, steps // block)
    per_round = min(block, steps)

    def run(step):
        def many() -> None:
            for _ in range(per_round):
                step()

        return many

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    samples = interleaved(
        {"pssl": run(ours_step), "floor": run(floor)}, repeats=rounds, warmup=warmup, device=device
    )
    seconds = time.perf_counter() - start
    images = per_round * items * 2
    ours, theirs = summary(samples["pssl"]), summary(samples["floor"])
    return {
        "model": model_name,
        "precision": precision,
        "memory_format": memory_format,
        "compiled": compile_networks,
        "items": items,
        "images_per_step": items * 2,
        "steps_per_round": per_round,
        "rounds": rounds,
        "maths_relative_difference": difference,
        "pssl_images_per_second": images / (ours["median_ms"] / 1e3),
        "floor_images_per_second": images / (theirs["median_ms"] / 1e3),
        "pssl_ms_per_step": ours["median_ms"] / per_round,
        "floor_ms_per_step": theirs["median_ms"] / per_round,
        "ratio": paired_ratio(samples["pssl"], samples["floor"]),
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "wall_seconds": seconds,
    }


# --------------------------------------------------------------------------- paper: concurrent runs


def paper_data(root: str | None, limit: int | None, seed: int) -> tuple[DataSplits, str]:
    """FashionMNIST (from ``root`` or where pssl finds it), else synthetic images of its shape and sizes."""
    try:
        data = load_dataset("fashionmnist", {} if root is None else {"root": root}, seed=seed)
        source = "fashionmnist"
    except (OSError, ValueError) as err:  # DataNotFoundError and unreadable files
        generator = torch.Generator().manual_seed(seed)
        parts = []
        for count in FASHIONMNIST_SPLITS:
            images = torch.randint(0, 256, (count, 1, 28, 28), generator=generator, dtype=torch.uint8)
            parts.append(TensorData.from_tensors(images, torch.randint(0, 10, (count,), generator=generator)))
        data = DataSplits(*parts, name="fashionmnist")
        source = f"synthetic uint8 images, FashionMNIST's shape and split sizes (not found: {str(err)[:80]})"
    if limit is not None and limit < len(data.train):
        data = DataSplits(
            data.train.subset(torch.arange(limit)), data.val, data.test, name=data.name, paired=data.paired
        )
    return data, source


def paper_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One run of the paper recipe (a worker process of a concurrent round): per-epoch seconds and ELBO."""
    from pssl.inference.train import train
    from pssl.recipes import load_recipe

    torch.set_num_threads(int(spec["threads"]))
    data, source = paper_data(spec["data_root"], spec["limit"], spec["seed"])
    config = dataclasses.replace(
        load_recipe(PAPER_RECIPE),
        data=Component("fashionmnist", {} if spec["data_root"] is None else {"root": spec["data_root"]}),
        epochs=int(spec["epochs"]),
        device=spec["device"],
        seed=int(spec["seed"]),
        precision=spec["precision"],
        out=spec["out"],
        progress=False,
        checkpoint_seconds=1e9,
    )
    start = time.perf_counter()
    result = train(config, data=data)
    return {
        "seed": spec["seed"],
        "source": source,
        "steps_per_epoch": len(data.train) // config.batch_size,
        "images_per_step": config.batch_size * config.num_views,
        "epoch_seconds": [float(r["seconds"]) for r in result.epochs],
        "images_per_second": [float(r["images_per_second"]) for r in result.epochs],
        "val_elbo": float(result.epochs[-1].get("val_elbo", float("nan"))),
        "seconds": time.perf_counter() - start,
    }


def paper_round(
    concurrency: int, precision: str, args: Any, device: torch.device, out: Path, deadline: float
) -> dict[str, Any]:
    """``concurrency`` runs of the paper recipe at once, one process each; their throughput together."""
    threads = max(1, (os.cpu_count() or 1) // concurrency)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    processes = []
    start = time.perf_counter()
    for seed in range(1, concurrency + 1):
        spec = {
            "seed": seed,
            "precision": precision,
            "epochs": args.paper_epochs,
            "device": str(device),
            "data_root": args.data_root,
            "limit": args.paper_limit,
            "threads": threads,
            "out": str(out / f"paper-{precision}-c{concurrency}-seed{seed}"),
        }
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
        processes.append(
            subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        )
    runs, errors = [], []
    for process in processes:
        try:
            stdout, stderr = process.communicate(timeout=max(1.0, deadline - time.perf_counter()))
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
            errors.append("ran past --budget-seconds")
            continue
        lines = [line for line in stdout.splitlines() if line.startswith(WORKER_TAG)]
        if process.returncode != 0 or not lines:
            errors.append((stderr.strip().splitlines() or ["(no output)"])[-1])
            continue
        runs.append(json.loads(lines[-1][len(WORKER_TAG) :]))
    wall = time.perf_counter() - start
    row: dict[str, Any] = {"concurrency": concurrency, "precision": precision, "wall_seconds": wall}
    row["errors"] = errors
    if runs:
        # The last epoch of each run: the first one also pays for CUDA's and the allocator's warm-up.
        epoch_seconds = sorted(r["epoch_seconds"][-1] for r in runs)
        row.update(
            {
                "runs": runs,
                "source": runs[0]["source"],
                "steps_per_epoch": runs[0]["steps_per_epoch"],
                "epoch_seconds_median": epoch_seconds[len(epoch_seconds) // 2],
                "images_per_second_per_run": sorted(r["images_per_second"][-1] for r in runs)[len(runs) // 2],
                "images_per_second_total": sum(r["images_per_second"][-1] for r in runs),
                "val_elbo": [r["val_elbo"] for r in runs],
            }
        )
        full_steps = FASHIONMNIST_SPLITS[0] // 64
        full_epoch = row["epoch_seconds_median"] * full_steps / row["steps_per_epoch"]
        row["full_epoch_seconds"] = full_epoch
        row["paper_budget_hours"] = args.paper_runs * PAPER_EPOCHS * full_epoch / len(runs) / 3600
    return row


def paper_section(args: Any, device: torch.device, out: Path, deadline: float) -> list[dict[str, Any]]:
    rows = []
    for precision in args.precision_list:
        for concurrency in args.concurrency_list:
            if time.perf_counter() > deadline:
                print(f"   paper {precision} x{concurrency}: skipped, --budget-seconds spent", flush=True)
                continue
            row = paper_round(concurrency, precision, args, device, out, deadline)
            rows.append(row)
            shown = {
                "precision": precision,
                "runs at once": concurrency,
                "s/epoch per run": row.get("epoch_seconds_median"),
                "img/s per run": row.get("images_per_second_per_run"),
                "img/s all": row.get("images_per_second_total"),
                f"paper budget h ({args.paper_runs} runs x {PAPER_EPOCHS} ep)": row.get("paper_budget_hours"),
                "wall s": row["wall_seconds"],
                "errors": "; ".join(row["errors"]) or "-",
            }
            print("   " + table([shown], list(shown)).replace("\n", "\n   "), flush=True)
    done = [r for r in rows if "paper_budget_hours" in r]
    if done:
        best = min(done, key=lambda r: r["paper_budget_hours"])
        print(
            f"   data: {best['source']}; epochs timed: the last of {args.paper_epochs} per run "
            f"({best['steps_per_epoch']} steps; a full epoch is {FASHIONMNIST_SPLITS[0] // 64})"
        )
        print(
            f"   best: {best['precision']} with {best['concurrency']} runs at once: the paper budget "
            f"({args.paper_runs} runs x {PAPER_EPOCHS} epochs of the paper recipe) in "
            f"{best['paper_budget_hours']:.2f} h on this GPU",
            flush=True,
        )
    return rows


# --------------------------------------------------------------------------- graphs: CUDA graphs, compile


def graphed_floor(trainer: Any, model_name: str, views: torch.Tensor) -> Any:
    """The bare step of :func:`benchmarks.step.floor_step` captured in one CUDA graph (Adam capturable)."""
    network = copy.deepcopy(trainer.model)
    precision = trainer.config.precision
    if precision != "fp32":
        enable_network_precision(network)
    parameters = [p for p in network.parameters() if p.requires_grad]
    optimizer = type(trainer.optimizer)(parameters, **{**trainer.optimizer.defaults, "capturable": True})
    loss_fn = HAND_LOSSES[model_name]
    static_views = views.clone()
    network.train()

    def one() -> None:
        with network_compute(precision, "cuda"):
            loss = loss_fn(network, static_views)
        loss.backward()
        optimizer.step()

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # warm-up on a side stream, as capture requires
            optimizer.zero_grad(set_to_none=True)
            one()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        one()
    return graph.replay


def graphs_section(args: Any, device: torch.device, out: Path, deadline: float) -> list[dict[str, Any]]:
    if device.type != "cuda":
        print("   graphs: skipped, CUDA graphs need a CUDA device")
        return []
    rows = []
    items = 64
    for precision in args.precision_list:
        if time.perf_counter() > deadline:
            print(f"   graphs {precision}: skipped, --budget-seconds spent")
            continue
        trainer = build_trainer(
            "simvae", "mlp", items, out=out / f"graphs-{precision}", precision=precision, device=str(device)
        )
        batch = trainer.make_batch(torch.arange(items))
        cases: dict[str, Any] = {
            "pssl": pssl_step(trainer),
            "floor eager": floor_step(trainer, "simvae", batch.views),
        }
        notes = []
        try:
            cases["floor graphed"] = graphed_floor(trainer, "simvae", batch.views)
        except Exception as err:  # a capture failure is a result to print, not a crash
            notes.append(f"graph capture failed: {type(err).__name__}: {str(err)[:100]}")
        if args.compile_mlp:
            try:
                cases["floor compiled"] = floor_step(
                    trainer, "simvae", batch.views, preparation("contiguous", True)
                )
                cases["floor compiled"]()  # compile now, outside the timing
            except Exception as err:
                cases.pop("floor compiled", None)
                notes.append(f"compile failed: {type(err).__name__}: {str(err)[:100]}")
        per_round = args.block
        rounds = max(1, args.steps // per_round)

        def many(step: Any, per_round: int = per_round) -> Any:
            def run() -> None:
                for _ in range(per_round):
                    step()

            return run

        samples = interleaved({k: many(v) for k, v in cases.items()}, repeats=rounds, warmup=1, device=device)
        images = per_round * items * 2
        row = {"precision": precision, "notes": notes}
        for name, values in samples.items():
            row[f"{name} img/s"] = images / (summary(values)["median_ms"] / 1e3)
        if "floor graphed" in samples:
            row["graphed / eager floor speed-up"] = paired_ratio(
                samples["floor eager"], samples["floor graphed"]
            )["ratio"]
        row["pssl / eager floor"] = paired_ratio(samples["pssl"], samples["floor eager"])["ratio"]
        rows.append(row)
        print("   " + table([row], list(row)).replace("\n", "\n   "), flush=True)
    return rows


# --------------------------------------------------------------------------- the plan and main


def make_plan(args: Any) -> dict[str, Any]:
    """What the run will do, with the time cap; printed by ``--plan`` and before the run."""
    plan: dict[str, Any] = {"sections": args.section_list, "budget_seconds": args.budget_seconds}
    if "paper" in args.section_list:
        plan["paper"] = [
            f"{precision}: {c} run(s) at once x {args.paper_epochs} epoch(s) of {PAPER_RECIPE}"
            + (f" on {args.paper_limit} items" if args.paper_limit else "")
            for precision in args.precision_list
            for c in args.concurrency_list
        ]
    if "graphs" in args.section_list:
        plan["graphs"] = [
            f"{precision}: SimVAE MLP 64 items x 2 views, pssl vs floor eager vs floor in a CUDA graph"
            + (" vs floor compiled" if args.compile_mlp else "")
            for precision in args.precision_list
        ]
    if "resnet" in args.section_list:
        plan["resnet"] = [
            f"{m} {precision} {f}: {args.steps} steps per side, {args.items} items x 2 views"
            for m in args.model_list
            for f in args.format_list
            for precision in args.precision_list
        ]
    return plan


def _parser() -> Any:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a quick check")
    p.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated: paper,graphs,resnet")
    p.add_argument("--plan", action="store_true", help="print the plan and exit")
    p.add_argument("--quick", action="store_true", help="toy sizes everywhere (a check of the script)")
    p.add_argument("--budget-seconds", type=float, default=540.0, help="stop starting work after this long")
    p.add_argument("--models", default=",".join(MODELS), help="resnet section: comma-separated simvae,simclr")
    p.add_argument("--precisions", default=",".join(PRECISIONS), help="comma-separated: fp32,bf16")
    p.add_argument(
        "--memory-format",
        choices=("channels_last", "contiguous", "both"),
        default="channels_last",
        help="resnet section: the networks' parameter layout",
    )
    p.add_argument("--items", type=int, default=256, help="resnet section: items per step (x2 views)")
    p.add_argument("--steps", type=int, default=60, help="resnet and graphs: timed steps per case")
    p.add_argument("--block", type=int, default=10, help="steps per timed round (one synchronise each)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds of each side first")
    p.add_argument("--compile", action="store_true", help="resnet section: also compile the networks")
    p.add_argument(
        "--no-compile-mlp",
        dest="compile_mlp",
        action="store_false",
        help="graphs section: skip torch.compile",
    )
    p.add_argument("--concurrency", default="1,8", help="paper section: runs at once, comma-separated")
    p.add_argument(
        "--paper-epochs", type=int, default=2, help="paper section: epochs per run (last one timed)"
    )
    p.add_argument("--paper-limit", type=int, default=None, help="paper section: training items per run")
    p.add_argument(
        "--paper-runs",
        type=int,
        default=24,
        help="paper section: runs in the paper budget grid, for the forecast",
    )
    p.add_argument("--data-root", default=None, help="folder of the FashionMNIST IDX files")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return p


def parse_args(argv: list[str] | None = None) -> Any:
    """Parse and check the options; resolves the lists (``section_list``, ...) and ``--quick``."""
    args = _parser().parse_args(argv)
    if args.worker is not None:
        return args
    if args.quick:
        args.items, args.steps, args.block, args.warmup = 4, 2, 1, 0
        args.paper_epochs, args.paper_limit, args.compile_mlp = 1, args.paper_limit or 256, False
        if args.concurrency == "1,8":
            args.concurrency = "1,2"
    for flag, value in (("--items", args.items), ("--steps", args.steps), ("--block", args.block)):
        if value < 1:
            raise SystemExit(f"{flag} must be a positive integer, got {value}")
    if (
        args.paper_epochs < 1
        or args.paper_runs < 1
        or (args.paper_limit is not None and args.paper_limit < 64)
    ):
        raise SystemExit("--paper-epochs and --paper-runs must be positive, --paper-limit at least 64 items")
    if args.budget_seconds <= 0:
        raise SystemExit(f"--budget-seconds must be positive, got {args.budget_seconds}")
    args.section_list = _split(args.sections, SECTIONS, "--sections")
    args.model_list = _split(args.models, MODELS, "--models")
    args.precision_list = _split(args.precisions, PRECISIONS, "--precisions")
    args.format_list = (
        ["channels_last", "contiguous"] if args.memory_format == "both" else [args.memory_format]
    )
    try:
        args.concurrency_list = [int(v) for v in args.concurrency.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(
            f"--concurrency must be comma-separated integers, got {args.concurrency!r}"
        ) from None
    if not args.concurrency_list or min(args.concurrency_list) < 1:
        raise SystemExit(f"--concurrency must list positive integers, got {args.concurrency!r}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.worker is not None:
        print(WORKER_TAG + json.dumps(paper_worker(json.loads(args.worker))), flush=True)
        return {}
    plan = make_plan(args)
    if args.plan:
        print(json.dumps(plan, indent=2))
        return {"plan": plan}
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            "benchmarks/gpu.py: CUDA is not available here (torch.cuda.is_available() is False; "
            f"torch {torch.__version__}). Run it on a machine with a GPU, or check the script on the CPU "
            "with: python benchmarks/gpu.py --device cpu --quick",
            file=sys.stderr,
        )
        raise SystemExit(2)
    if device.type not in ("cuda", "cpu"):
        raise SystemExit(f"--device must be cuda, cuda:N or cpu, got {args.device!r}")
    if "bf16" in args.precision_list:
        from pssl.inference.precision import native_bf16

        ok, reason = native_bf16(device)
        if not ok:
            print(f"   bf16 left out: {reason}")
            args.precision_list = [p for p in args.precision_list if p != "bf16"] or ["fp32"]
    start = time.perf_counter()
    deadline = start + args.budget_seconds
    threads = set_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
        capability = ".".join(map(str, torch.cuda.get_device_capability(device)))
        device_text = f"{device} ({name}, compute capability {capability}), cudnn.benchmark on"
    else:
        device_text = f"cpu ({threads} threads): a check of the script, not a GPU figure"
    inputs = {
        "device": device_text,
        "plan": plan,
        "tf32 matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32 cudnn": torch.backends.cudnn.allow_tf32,
    }
    header("the GPU path: paper budget piece, CUDA graphs, ResNet step", inputs)
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        if "paper" in args.section_list:
            print("-- paper: the paper recipe, concurrent runs on one device", flush=True)
            figures["paper"] = paper_section(args, device, out, deadline)
        if "graphs" in args.section_list:
            print("-- graphs: CUDA graphs and torch.compile for the paper MLP step", flush=True)
            figures["graphs"] = graphs_section(args, device, out, deadline)
        if "resnet" in args.section_list:
            print("-- resnet: pssl step vs bare PyTorch step, ResNet on 32x32x3", flush=True)
            figures["resnet"] = resnet_section(args, device, out, deadline)
    figures["wall_seconds"] = time.perf_counter() - start
    print(f"   whole script: {figures['wall_seconds']:.0f} s (budget {args.budget_seconds:.0f} s)")
    write_json(args.json, "gpu", inputs, figures)
    return {"inputs": inputs, "figures": figures}


def resnet_section(args: Any, device: torch.device, out: Path, deadline: float) -> list[dict[str, Any]]:
    results = []
    for model_name in args.model_list:
        for memory_format in args.format_list:
            for precision in args.precision_list:
                case = f"{model_name} {precision} {memory_format}" + (" compiled" if args.compile else "")
                if time.perf_counter() > deadline:
                    print(f"   {case}: skipped, --budget-seconds spent")
                    continue
                r = measure(
                    model_name,
                    precision,
                    memory_format,
                    items=args.items,
                    steps=args.steps,
                    block=args.block,
                    warmup=args.warmup,
                    device=device,
                    compile_networks=args.compile,
                    out=out,
                )
                results.append(r)
                row = {
                    "case": case,
                    "pssl img/s": r["pssl_images_per_second"],
                    "floor img/s": r["floor_images_per_second"],
                    "pssl ms/step": r["pssl_ms_per_step"],
                    "floor ms/step": r["floor_ms_per_step"],
                    "ratio [q1,q3]": spread(r["ratio"]),
                    "peak GiB": r["peak_memory_gib"],
                    "wall s": r["wall_seconds"],
                }
                print(table([row], list(row)), flush=True)
    return results


def _split(value: str, allowed: tuple[str, ...], flag: str) -> list[str]:
    chosen = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in chosen if v not in allowed]
    if bad or not chosen:
        raise SystemExit(f"{flag}: unknown {bad or value!r}; accepted: {', '.join(allowed)}")
    return chosen


if __name__ == "__main__":
    main()
