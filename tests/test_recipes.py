"""Recipes (the paper's setups as shipped config files), config files and the CLI around them.

Each recipe is loaded, resolved for its data set's image shape and built; the
result is compared with a table of the reference values written out here from
PAPER.md section 5 (networks by layer widths and parameter counts, likelihood and
its scale, y-guide, optimiser, batch, views, epochs, augmentation parameters).
Nothing here trains for more than a few steps.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pssl.augment import ColorJitter, RandomResizedCrop, RandomVerticalFlip, Threshold, build_augmenter
from pssl.config import Component, ConfigError
from pssl.datasets import DataSplits, TensorData
from pssl.inference.train import build_from_config, resolve_config
from pssl.recipes import (
    config_from_tokens,
    describe_recipes,
    load_config_file,
    load_recipe,
    recipe_names,
)

REPO = Path(__file__).resolve().parent.parent

MLP_ENCODER = [(784, 2000), (2000, 500), (500, 500), (500, 20)]
MLP_DECODER = [(10, 500), (500, 500), (500, 2000), (2000, 784)]
SIGMA_X2 = math.exp(-4.6)  # the reference's log sigma_x^2 = -4.6
MNIST_AUGMENT = {"crop": ((0.4, 1.0), (0.75, 1.3)), "vertical_flip": 0.5}
COLOUR_AUGMENT = {
    "crop": ((0.6, 1.0), (0.75, 1.3)),
    "vertical_flip": 0.5,
    "jitter": (0.2, 1.8, 0.2, 1.8, 0.2, 1.8, -0.2, 0.2, 1.0),  # strengths 0.8/0.8/0.8/0.2, every view
}
COMMON = {"num_views": 2, "batch_size": 64, "epochs": 400, "lr": 8e-5, "adam_eps": 1e-4, "y_guide": "plugin"}

REFERENCE = {
    "paper-mnist": {
        "data": "mnist",
        "image_shape": (1, 28, 28),
        "latent_dim": 10,
        "encoder_widths": MLP_ENCODER,
        "encoder_params": 2_831_020,
        "decoder_widths": MLP_DECODER,
        "decoder_params": 2_826_784,
        "likelihood": ("bernoulli", 1 / SIGMA_X2),
        "augment": {**MNIST_AUGMENT, "threshold": 0.5},
    },
    "paper-fashionmnist": {
        "data": "fashionmnist",
        "image_shape": (1, 28, 28),
        "latent_dim": 10,
        "encoder_widths": MLP_ENCODER,
        "encoder_params": 2_831_020,
        "decoder_widths": MLP_DECODER,
        "decoder_params": 2_826_784,
        "likelihood": ("bernoulli", 1 / SIGMA_X2),
        "augment": {**MNIST_AUGMENT, "threshold": None},
    },
    "paper-cifar10": {
        "data": "cifar10",
        "image_shape": (3, 32, 32),
        "latent_dim": 64,
        "encoder_params": 969_920,
        "decoder_params": 8_984_387,
        "likelihood": ("gaussian", 1.0),
        "augment": COLOUR_AUGMENT,
    },
    "paper-celeba": {
        "data": "celeba",
        "image_shape": (3, 64, 64),
        "latent_dim": 64,
        "encoder_params": 1_757_632,
        "decoder_params": 9_383_747,
        "likelihood": ("gaussian", 1.0),
        "augment": COLOUR_AUGMENT,
    },
}


def fake_splits(name: str, shape: tuple[int, int, int]) -> DataSplits:
    """Four random uint8 images of ``shape`` under the data set's name (its defaults apply)."""
    images = torch.randint(0, 256, (4, *shape), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    part = TensorData(images, torch.arange(4) % 2)
    return DataSplits(part, part, part, name=name)


def linear_widths(module: torch.nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, torch.nn.Linear)]


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_the_four_paper_recipes_are_shipped() -> None:
    assert recipe_names() == sorted(REFERENCE)
    listing = describe_recipes()
    for name in REFERENCE:
        assert name in listing


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_recipe_resolves_and_builds_the_reference_setup(name: str) -> None:
    ref = REFERENCE[name]
    config = resolve_config(load_recipe(name), fake_splits(ref["data"], ref["image_shape"]))
    assert config.data.name == ref["data"]
    for key, value in COMMON.items():
        if key == "y_guide":
            continue
        assert getattr(config, key) == value, key
    assert config.latent_dim == ref["latent_dim"]
    torch.manual_seed(0)
    model = build_from_config(config, ref["image_shape"])
    assert model.y_guide == COMMON["y_guide"]
    encoder, decoder = model.encoder.backbone, model.decoder
    if "encoder_widths" in ref:
        assert linear_widths(encoder) == ref["encoder_widths"]
        assert linear_widths(decoder) == ref["decoder_widths"]
    assert count(encoder) == ref["encoder_params"]
    assert count(decoder) == ref["decoder_params"]
    # p(z | y) = N(y, 0.15 I), p(y) = N(0, I)
    assert float(model.view_prior.gaussian_scale()) ** 2 == pytest.approx(0.15)
    likelihood_name, scale = ref["likelihood"]
    assert config.likelihood.name == likelihood_name
    assert model.likelihood.scale == pytest.approx(scale, rel=1e-12)
    if likelihood_name == "gaussian":
        assert model.likelihood.std**2 == pytest.approx(SIGMA_X2, rel=1e-9)
        assert model.likelihood.link == "sigmoid"
    # augmentation parameters, read off the built pipeline
    augmenter = build_augmenter(config.augment.name, ref["image_shape"], config.augment.options)
    steps = {type(t): t for t in augmenter.transform.transforms}
    crop = steps[RandomResizedCrop]
    assert (crop.scale, tuple(crop.ratio)) == ref["augment"]["crop"]
    assert steps[RandomVerticalFlip].p == ref["augment"]["vertical_flip"]
    if "threshold" in ref["augment"]:
        threshold = ref["augment"]["threshold"]
        assert (steps[Threshold].threshold if Threshold in steps else None) == threshold
    if "jitter" in ref["augment"]:
        jitter = steps[ColorJitter]
        ranges = [v for k in ("brightness", "contrast", "saturation", "hue") for v in getattr(jitter, k)]
        got = (*ranges, jitter.p)
        assert got == pytest.approx(ref["augment"]["jitter"])
    assert ColorJitter not in steps or "jitter" in ref["augment"]


def test_a_recipe_with_overrides_keeps_the_rest() -> None:
    config = config_from_tokens(["epochs=2", "recipe=paper-fashionmnist", "data.limit=128", "seed=3"])
    assert (config.epochs, config.seed, config.data.options["limit"]) == (2, 3, "128")
    assert config.likelihood == Component("bernoulli", {"scale": pytest.approx(1 / SIGMA_X2)})
    assert config.lr == 8e-5 and config.model.options == {"y_guide": "plugin"}


def test_config_file_round_trip_ignores_out_and_resume(tmp_path: Path) -> None:
    config = config_from_tokens(["recipe=paper-mnist", "out=runs/old", "resume=true", "seed=5"])
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**config.to_dict(), "resolved": {"anything": 1}}))
    loaded = load_config_file(path)
    assert loaded.out is None and loaded.resume is False  # a file never picks the run directory
    assert loaded.seed == 5 and loaded.likelihood == config.likelihood and loaded.augment == config.augment
    again = config_from_tokens([f"config={path}", "epochs=1"])
    assert again.epochs == 1 and again.decoder == config.decoder


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: "recipe=nosuch", "unknown recipe 'nosuch'; accepted: paper-celeba, paper-cifar10"),
        (lambda p: f"config={p / 'missing.json'}", "missing.json not found"),
        (
            lambda p: (p / "bad.json").write_text("{not json") and f"config={p / 'bad.json'}",
            "bad.json is not",
        ),
        (
            lambda p: (p / "list.json").write_text("[1]") and f"config={p / 'list.json'}",
            "list.json must hold",
        ),
        (
            lambda p: (p / "key.json").write_text('{"colour": 1}') and f"config={p / 'key.json'}",
            "key.json: unknown override key 'colour'",
        ),
    ],
)
def test_bad_recipe_or_config_file_is_named(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_tokens([make(tmp_path)])


def test_both_recipe_and_config_refused() -> None:
    with pytest.raises(ConfigError, match="at most one of recipe=NAME or config=PATH"):
        config_from_tokens(["recipe=paper-mnist", "config=x.json"])


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pssl", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "recipe=nosuch"], "unknown recipe 'nosuch'; accepted: paper-celeba"),
        (["train", "config=broken.json"], "broken.json is not valid JSON"),
    ],
)
def test_cli_bad_recipe_or_file_exits_2_with_one_line_and_writes_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "broken.json").write_text('{"epochs": 2,,}')
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run_cli(args, tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_cli_list_recipes(tmp_path: Path) -> None:
    result = run_cli(["list", "recipes"], tmp_path)
    assert result.returncode == 0
    lines = result.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == sorted(REFERENCE)
    assert all(len(line.split()) > 3 for line in lines)  # each has a description


def test_recipes_ship_as_package_data() -> None:
    text = (REPO / "pyproject.toml").read_text()
    assert '"pssl.recipes" = ["*.json"]' in text and '"pssl.recipes"' in text.split("packages =")[1]
