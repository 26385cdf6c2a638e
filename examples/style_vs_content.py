"""Style versus content: does SimVAE keep what augmentations change, and do discriminative methods drop it?

    python examples/style_vs_content.py --epochs 30

Trains SimVAE and SimCLR on ``styled-digits`` (digits drawn on a coloured canvas
at a recorded position and scale), then asks each frozen representation two
questions with the same probes:

* content: which digit is it? (linear probe, test accuracy)
* style: what are the position, scale and colours? (linear and kNN
  predictability per factor: accuracy for discrete factors, R^2 for continuous)

The paper's prediction is that SimVAE, which must reconstruct every view,
scores higher on style, while a method that pulls views of an item together
discards the style factors that its augmentations change.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from pssl.config import Component, Config
from pssl.evaluation import evaluate
from pssl.inference.train import train


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--limit", type=int, default=None, help="use only this many training items")
    parser.add_argument(
        "--hidden", default="2000,500,500", help="encoder MLP hidden sizes; the decoder uses them reversed"
    )
    parser.add_argument("--models", default="simvae,simclr")
    parser.add_argument("--out", default=None, help="folder for the runs (default: a new temporary folder)")
    args = parser.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="pssl-style-"))

    data_options = {} if args.limit is None else {"limit": args.limit}
    scores: dict[str, dict] = {}
    for model in args.models.split(","):
        config = Config(
            model=Component(model),
            data=Component("styled-digits", dict(data_options)),
            encoder=Component("mlp", {"hidden": args.hidden}),
            decoder=Component("mlp", {"hidden": ",".join(reversed(args.hidden.split(",")))}),
            epochs=args.epochs,
            lr=1e-3,
            adam_eps=1e-8,
            out=str(out / model),
            progress=False,
        )
        result = train(config)
        metrics = evaluate(result.model, result.data, seed=config.seed, probes=("linear",))
        style = metrics["style"]
        scores[model] = {
            "content": metrics["content"]["linear"]["accuracy"],
            **{name: factor["linear"] for name, factor in style["factors"].items()},
        }

    factors = [k for k in next(iter(scores.values())) if k != "content"]
    print("linear predictability from the frozen representation (test split)")
    print(f"{'model':<10s} {'content':>8s} " + " ".join(f"{f:>9s}" for f in factors))
    for model, row in scores.items():
        cells = " ".join(f"{row[f]:9.3f}" if row[f] is not None else f"{'-':>9s}" for f in factors)
        print(f"{model:<10s} {row['content']:8.3f} {cells}")
    print("(content and discrete factors: accuracy; continuous factors: R^2)")
    return scores


if __name__ == "__main__":
    main()
