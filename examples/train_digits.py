"""Train SimVAE on the embedded digits with the Python API, then probe its encoder.

    python examples/train_digits.py --epochs 60

Shows the three steps a notebook user takes: build a config, train, and use the
trained encoder on new images (here: a linear probe on the encoder means).
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from pssl.config import Component, Config
from pssl.evaluation import evaluate_content
from pssl.inference.train import train


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--limit", type=int, default=None, help="use only this many training items")
    parser.add_argument(
        "--hidden", default="2000,500,500", help="encoder MLP hidden sizes; the decoder uses them reversed"
    )
    parser.add_argument("--out", default=None, help="run directory (default: a new temporary folder)")
    args = parser.parse_args(argv)

    data_options = {} if args.limit is None else {"limit": args.limit}
    config = Config(
        model=Component("simvae", {"y_guide": "exact"}),
        data=Component("digits", data_options),
        encoder=Component("mlp", {"hidden": args.hidden}),
        decoder=Component("mlp", {"hidden": ",".join(reversed(args.hidden.split(",")))}),
        latent_dim=10,
        num_views=2,
        epochs=args.epochs,
        lr=1e-3,
        adam_eps=1e-8,
        out=args.out or tempfile.mkdtemp(prefix="pssl-example-"),
        progress=False,
    )
    result = train(config)
    print(f"final validation ELBO: {result.epochs[-1]['val_elbo']:.2f} nats per item")

    # The trained encoder on new images: (B, 1, 8, 8) floats in [0, 1] -> (B, 10) posterior means.
    splits = result.data
    with torch.no_grad():
        means = result.model.encode(splits.test.images[:4].float() / 255)
    print("encoder means of 4 test images:", tuple(means.shape))

    # Linear probe on the frozen encoder means; regularisation chosen on the validation split.
    probe = evaluate_content(result.model, splits, probes=("linear",))["linear"]
    print(f"linear probe test accuracy: {probe['accuracy']:.3f} (chosen on validation: {probe['selected']})")
    return probe["accuracy"]


if __name__ == "__main__":
    main()
