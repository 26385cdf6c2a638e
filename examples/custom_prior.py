"""Write your own prior: SimVAE with a learned, correlated, heavy-tailed p(y), trained from Python.

    python examples/custom_prior.py --epochs 60

Any Pyro distribution over a ``latent_dim`` vector can be the content prior
p(y), or a VAE's p(z). Here p(y) is a multivariate Student-t whose location and
Cholesky factor are learned with the model:

    y ~ MultivariateStudentT(df, m, L L^T)        (correlated, heavy-tailed)
    z_j | y ~ N(y, 0.15 I),  x_j | z_j ~ Bernoulli(decoder(z_j))

The prior is an ``nn.Module`` returning the distribution, wrapped in
``DistributionPrior``, so its parameters are trained and checkpointed with the
model. It has no conjugate form, so SimVAE's ``y_guide="auto"`` picks the
amortised guide q(y | z_1..J). The model is built from parts and handed to the
same training loop the command line uses: ``train(config, model=model)``.
"""

from __future__ import annotations

import argparse
import tempfile

import pyro.distributions as dist
import torch
from torch import nn

from pssl.config import Component, Config
from pssl.datasets import load_dataset
from pssl.evaluation import evaluate_content
from pssl.inference.train import train
from pssl.models.encoders import GaussianEncoder
from pssl.models.likelihoods import BernoulliLikelihood
from pssl.models.priors import DistributionPrior, GaussianViewPrior
from pssl.models.simvae import SimVAE
from pssl.networks import build_decoder


class LearnedStudentT(nn.Module):
    """Returns ``MultivariateStudentT(df, loc, scale_tril)`` with learned ``loc`` and ``scale_tril``.

    ``scale_tril`` is lower triangular with a positive diagonal (``exp`` of a
    free parameter), the Cholesky factor of the scale matrix ``L L^T``.
    """

    def __init__(self, latent_dim: int, df: float = 4.0) -> None:
        super().__init__()
        self.register_buffer("df", torch.tensor(df))
        self.loc = nn.Parameter(torch.zeros(latent_dim))
        self.raw_tril = nn.Parameter(torch.zeros(latent_dim, latent_dim))

    def scale_tril(self) -> torch.Tensor:
        return torch.tril(self.raw_tril, diagonal=-1) + torch.diag(self.raw_tril.diagonal().exp())

    def forward(self) -> dist.MultivariateStudentT:
        return dist.MultivariateStudentT(self.df, self.loc, self.scale_tril())


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--limit", type=int, default=None, help="use only this many items")
    parser.add_argument("--hidden", default="500,500", help="MLP hidden sizes (encoder and decoder)")
    parser.add_argument("--latent-dim", type=int, default=10)
    parser.add_argument("--out", default=None, help="run directory (default: a new temporary folder)")
    args = parser.parse_args(argv)

    data_options = {} if args.limit is None else {"limit": args.limit}
    network = Component("mlp", {"hidden": args.hidden})
    config = Config(
        model=Component("simvae"),
        data=Component("digits", data_options),
        encoder=network,
        decoder=network,
        latent_dim=args.latent_dim,
        num_views=2,
        epochs=args.epochs,
        lr=1e-3,
        adam_eps=1e-8,
        out=args.out or tempfile.mkdtemp(prefix="pssl-custom-prior-"),
        progress=False,
    )
    torch.manual_seed(config.seed)  # the parts below are initialised before train() seeds the run
    splits = load_dataset("digits", data_options, seed=config.seed)
    image_shape = splits.train.image_shape

    # The parts: encoder q(z|x), decoder, p(y) (ours), p(z|y), p(x|z).
    encoder = GaussianEncoder(image_shape, args.latent_dim, network)
    decoder = build_decoder(network.name, args.latent_dim, image_shape, network.options)
    content_prior = DistributionPrior(LearnedStudentT(args.latent_dim))
    model = SimVAE(encoder, decoder, content_prior, GaussianViewPrior(args.latent_dim), BernoulliLikelihood())
    print(f"p(y): {content_prior}; y-guide chosen: {model.y_guide}")

    result = train(config, data=splits, model=model)
    print(f"final validation ELBO: {result.epochs[-1]['val_elbo']:.2f} nats per item")

    # The learned prior: its correlation matrix (first 4 coordinates).
    with torch.no_grad():
        tril = content_prior.source.scale_tril()
        scale_matrix = tril @ tril.T
        std = scale_matrix.diagonal().sqrt()
        correlation = scale_matrix / (std[:, None] * std[None, :])
    print("learned p(y) correlations (first 4 coordinates):")
    print(correlation[:4, :4].numpy().round(3))

    # The trained encoder on new images: (B, 1, 8, 8) floats in [0, 1] -> (B, latent_dim) posterior means.
    with torch.no_grad():
        means = result.model.encode(splits.test.images[:4].float() / 255)
    print("encoder means of 4 test images:", tuple(means.shape))

    # Linear probe on the frozen encoder means; regularisation chosen on the validation split.
    probe = evaluate_content(result.model, splits, probes=("linear",))["linear"]
    print(f"linear probe test accuracy: {probe['accuracy']:.3f}")
    return probe["accuracy"]


if __name__ == "__main__":
    main()
