r"""Training throughput on a GPU: SimVAE and SimCLR with the ResNet networks on 3x32x32 images.

One prepared script (a few minutes on one GPU) for a machine with CUDA. For each
model (``simvae``, ``simclr``; ResNet 32/64/128 channels, latent 64, ``cifar``
augmentation, ``J = 2``) and each precision (``fp32``, ``bf16`` autocast), with
the networks' parameters in ``channels_last`` memory format (``--memory-format
both`` also runs the default contiguous format), it times, interleaved:

* **pssl**: ``Trainer.make_batch`` + ``Trainer.step`` (a real
  :class:`~pssl.inference.train.Trainer` with ``device=cuda``, synthetic uint8
  images already on the GPU, augmentation on the GPU);
* **floor**: the bare PyTorch step of :mod:`benchmarks.step` (same networks, the
  loss written directly, Adam of the trainer's settings) on a ready batch,

each over blocks of ``--block`` steps closed by ``torch.cuda.synchronize``, and
reports images (views) per second of both, their ratio, and peak GPU memory.
``--compile`` also compiles the networks (``nn.Module.compile``: the encoder and
decoder, or backbone and head; Pyro stays eager); it adds minutes of compilation.

Without CUDA it exits with a message; ``--device cpu --steps 2`` runs the same
path on the CPU as a quick check of the script.

Usage (on the GPU machine)::

    python benchmarks/gpu.py --json gpu.json                   # ~3-6 minutes
    python benchmarks/gpu.py --items 512 --memory-format both
    python benchmarks/gpu.py --device cpu --steps 2 --items 4  # check the script anywhere
"""

from __future__ import annotations

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
from benchmarks.step import build_trainer, floor_step, maths_check, pssl_step

MODELS = ("simvae", "simclr")
PRECISIONS = ("fp32", "bf16")


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


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a quick check")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated: simvae,simclr")
    p.add_argument("--precisions", default=",".join(PRECISIONS), help="comma-separated: fp32,bf16")
    p.add_argument(
        "--memory-format",
        choices=("channels_last", "contiguous", "both"),
        default="channels_last",
        help="the networks' parameter layout",
    )
    p.add_argument("--items", type=int, default=256, help="items per step (x2 views)")
    p.add_argument("--steps", type=int, default=60, help="timed steps per side and configuration")
    p.add_argument("--block", type=int, default=10, help="steps per timed round (one synchronise each)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds of each side first")
    p.add_argument("--compile", action="store_true", help="also compile the networks (slow to start)")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            "benchmarks/gpu.py: CUDA is not available here (torch.cuda.is_available() is False; "
            f"torch {torch.__version__}). Run it on a machine with a GPU, or check the script on the CPU "
            "with: python benchmarks/gpu.py --device cpu --steps 2 --items 4",
            file=sys.stderr,
        )
        raise SystemExit(2)
    if device.type not in ("cuda", "cpu"):
        raise SystemExit(f"--device must be cuda, cuda:N or cpu, got {args.device!r}")
    for flag, value in (("--items", args.items), ("--steps", args.steps), ("--block", args.block)):
        if value < 1:
            raise SystemExit(f"{flag} must be a positive integer, got {value}")
    threads = set_threads(args.threads)
    models = _split(args.models, MODELS, "--models")
    precisions = _split(args.precisions, PRECISIONS, "--precisions")
    formats = ["channels_last", "contiguous"] if args.memory_format == "both" else [args.memory_format]
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
        capability = ".".join(map(str, torch.cuda.get_device_capability(device)))
        device_text = f"{device} ({name}, compute capability {capability}), cudnn.benchmark on"
    else:
        device_text = f"cpu ({threads} threads): a check of the script, not a GPU figure"
    inputs = {
        "device": device_text,
        "models": models,
        "networks": "ResNet 32/64/128 channels, 2 blocks per stage, latent 64; images 3x32x32, preset cifar",
        "batch": f"{args.items} items x 2 views = {2 * args.items} images per step",
        "precisions": precisions,
        "memory formats": formats,
        "compiled networks": args.compile,
        "timing": f"{args.steps} steps per side in rounds of {min(args.block, args.steps)}, interleaved",
        "tf32 matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32 cudnn": torch.backends.cudnn.allow_tf32,
    }
    header("GPU throughput: pssl step vs bare PyTorch step, ResNet on 32x32x3", inputs)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for model_name in models:
            for memory_format in formats:
                for precision in precisions:
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
                        out=Path(tmp),
                    )
                    results.append(r)
                    row = {
                        "case": f"{model_name} {precision} {memory_format}"
                        + (" compiled" if args.compile else ""),
                        "pssl img/s": r["pssl_images_per_second"],
                        "floor img/s": r["floor_images_per_second"],
                        "pssl ms/step": r["pssl_ms_per_step"],
                        "floor ms/step": r["floor_ms_per_step"],
                        "ratio [q1,q3]": spread(r["ratio"]),
                        "peak GiB": r["peak_memory_gib"],
                        "wall s": r["wall_seconds"],
                    }
                    print(table([row], list(row)), flush=True)
    write_json(args.json, "gpu", inputs, results)
    return {"inputs": inputs, "results": results}


def _split(value: str, allowed: tuple[str, ...], flag: str) -> list[str]:
    chosen = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in chosen if v not in allowed]
    if bad or not chosen:
        raise SystemExit(f"{flag}: unknown {bad or value!r}; accepted: {', '.join(allowed)}")
    return chosen


if __name__ == "__main__":
    main()
