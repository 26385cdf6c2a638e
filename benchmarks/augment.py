r"""Batched multi-view augmentation against the per-image torchvision/PIL pipeline.

Both make ``J`` augmented float views of every image of a batch of ``B`` uint8
images and return them as one ``(B, J, C, H, W)`` float tensor in ``[0, 1]``:

* **pssl**: ``uint8 -> float / 255`` for the whole batch, then the preset's
  :class:`~pssl.augment.ViewAugmenter` (random parameters drawn for all ``B J``
  views at once, one ``grid_sample``), as ``Trainer.make_batch`` does;
* **torchvision**: the same transforms from ``torchvision.transforms`` applied to
  each PIL image ``J`` times (``RandomResizedCrop``, ``RandomVerticalFlip`` and, for
  RGB, ``RandomApply([ColorJitter], p)``; then ``ToTensor``), stacked as a
  ``DataLoader``'s collate would. The PIL images are made once beforehand and not
  timed (a torchvision data set converts each item to PIL in ``__getitem__``; that
  cost is left out in its favour).

Presets: ``mnist`` on 1x28x28 (crop area 0.4-1, ratio 0.75-1.3, vertical flip) and
``cifar`` on 3x32x32 (jitter (0.8, 0.8, 0.8, 0.2) with p = 0.8, crop area 0.6-1,
vertical flip). Reports images (views) per second of each and their ratio (goal
>= 5x). The per-image pipeline runs in this one process; ``DataLoader`` workers
would spread it over cores, as more torch threads spread the batched one.

Usage::

    python benchmarks/augment.py --threads 1 --json augment.json
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

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
from pssl.augment import build_augmenter

GOAL = 5.0
SHAPES = {"mnist": (1, 28, 28), "cifar": (3, 32, 32)}


def torchvision_pipeline(preset: str, size: tuple[int, int]) -> Any:
    """The per-image ``torchvision.transforms`` pipeline equivalent to ``preset`` (its default options)."""
    from torchvision import transforms

    if preset == "mnist":
        steps = [
            transforms.RandomResizedCrop(size, scale=(0.4, 1.0), ratio=(0.75, 1.3)),
            transforms.RandomVerticalFlip(0.5),
        ]
    elif preset == "cifar":
        steps = [
            transforms.RandomApply([transforms.ColorJitter(0.8, 0.8, 0.8, 0.2)], p=0.8),
            transforms.RandomResizedCrop(size, scale=(0.6, 1.0)),
            transforms.RandomVerticalFlip(0.5),
        ]
    else:
        raise ValueError(f"unknown preset {preset!r}; accepted: {', '.join(SHAPES)}")
    return transforms.Compose([*steps, transforms.ToTensor()])


def pil_images(images: torch.Tensor) -> list[Any]:
    """uint8 ``(N, C, H, W)`` as PIL images (mode ``L`` or ``RGB``)."""
    from PIL import Image

    arrays = images.permute(0, 2, 3, 1).numpy()
    if images.shape[1] == 1:
        return [Image.fromarray(a[..., 0], mode="L") for a in arrays]
    return [Image.fromarray(a, mode="RGB") for a in arrays]


def measure(
    preset: str, batch: int, num_views: int, *, repeats: int, warmup: int, seed: int
) -> dict[str, Any]:
    """Views per second of both pipelines on one batch of random uint8 images."""
    shape = SHAPES[preset]
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, *shape), generator=generator, dtype=torch.uint8)
    augmenter = build_augmenter(preset, shape)
    pipeline = torchvision_pipeline(preset, shape[1:])
    pictures = pil_images(images)
    augment_generator = torch.Generator().manual_seed(seed + 1)

    def ours() -> torch.Tensor:
        return augmenter(images.float().div_(255.0), num_views, augment_generator)

    def theirs() -> torch.Tensor:
        views = [torch.stack([pipeline(p) for _ in range(num_views)]) for p in pictures]
        return torch.stack(views)

    if ours().shape != theirs().shape:
        raise AssertionError(f"shapes differ: {tuple(ours().shape)} vs {tuple(theirs().shape)}")
    samples = interleaved({"pssl": ours, "torchvision": theirs}, repeats=repeats, warmup=warmup)
    views = batch * num_views
    ratio = paired_ratio(samples["torchvision"], samples["pssl"])  # time ratio = speed-up
    ours_time = summary(samples["pssl"])
    theirs_time = summary(samples["torchvision"])
    return {
        "preset": preset,
        "image_shape": list(shape),
        "batch": batch,
        "num_views": num_views,
        "pssl": ours_time,
        "torchvision": theirs_time,
        "pssl_views_per_second": views / (ours_time["median_ms"] / 1e3),
        "torchvision_views_per_second": views / (theirs_time["median_ms"] / 1e3),
        "speedup": ratio,
        "goal": check_goal(ratio["ratio"], GOAL, smaller_is_better=False),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--presets", default="mnist,cifar", help="comma-separated: mnist,cifar")
    p.add_argument("--batch", type=int, default=256, help="images per batch (each gives --views views)")
    p.add_argument("--views", type=int, default=2, help="views per image (J)")
    p.add_argument("--repeats", type=int, default=15, help="interleaved timed rounds")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls of each first")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    threads = set_threads(args.threads)
    presets = [s.strip() for s in args.presets.split(",") if s.strip()]
    unknown = [s for s in presets if s not in SHAPES]
    if unknown or not presets:
        raise SystemExit(f"--presets: unknown {unknown or args.presets!r}; accepted: {', '.join(SHAPES)}")
    inputs = {
        "presets": {s: "x".join(map(str, SHAPES[s])) for s in presets},
        "batch": f"{args.batch} uint8 images x {args.views} views = {args.batch * args.views} float views",
        "pssl": "batch uint8->float/255 + ViewAugmenter (default preset options), CPU",
        "torchvision": "per PIL image, J calls of transforms.Compose([same transforms, ToTensor()]), stacked",
        "repeats": args.repeats,
        "threads": threads,
    }
    header("batched multi-view augmentation vs per-image torchvision/PIL", inputs)
    results = []
    for preset in presets:
        r = measure(preset, args.batch, args.views, repeats=args.repeats, warmup=args.warmup, seed=args.seed)
        results.append(r)
        row = {
            "preset": f"{preset} {'x'.join(map(str, r['image_shape']))}",
            "pssl views/s": r["pssl_views_per_second"],
            "torchvision views/s": r["torchvision_views_per_second"],
            "pssl ms": r["pssl"]["median_ms"],
            "torchvision ms": r["torchvision"]["median_ms"],
            "speed-up [q1,q3]": spread(r["speedup"], digits=2),
            f"goal>={GOAL:g}x": r["goal"],
        }
        print(table([row], list(row)))
    print(NOISE_NOTE)
    write_json(args.json, "augment", inputs, results)
    return {"inputs": inputs, "results": results}


if __name__ == "__main__":
    main()
