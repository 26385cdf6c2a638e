"""Data-set descriptors: each data set declares its defaults, and evaluation images match the views."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pssl.augment import AUGMENTATIONS, build_augmenter
from pssl.config import Component, Config, apply_overrides, parse_overrides
from pssl.datasets import (
    DATASETS,
    DatasetDefaults,
    DataSplits,
    TensorData,
    dataset_defaults,
    descriptor,
    evaluation_splits,
    load_dataset,
    write_idx,
)
from pssl.datasets.descriptor import register_dataset
from pssl.inference.compose import resolve_config
from pssl.inference.train import load_run, train
from pssl.models import LIKELIHOODS
from pssl.networks import DECODERS, ENCODERS
from pssl.recipes import config_from_tokens

EXPECTED_PRESETS = {
    "digits": "digits",
    "mnist": "mnist-binary",
    "fashionmnist": "mnist",
    "cifar10": "cifar",
    "celeba": "cifar",
    "shapes": "styled",
    "styled-mnist": "restyle",
    "paired-mnist": "paired",
    "paired-fashionmnist": "paired",
}


def test_every_registered_data_set_declares_defaults_that_exist() -> None:
    for name in DATASETS.names():
        defaults = dataset_defaults(name)
        assert isinstance(defaults, DatasetDefaults), name
        assert defaults.augment in AUGMENTATIONS, name
        assert defaults.likelihood is None or defaults.likelihood in LIKELIHOODS, name
        assert defaults.encoder is None or defaults.encoder in ENCODERS, name
        assert defaults.decoder is None or defaults.decoder in DECODERS, name


@pytest.mark.parametrize(("dataset", "preset"), sorted(EXPECTED_PRESETS.items()))
def test_default_presets(dataset: str, preset: str) -> None:
    assert dataset_defaults(dataset).augment == preset


def test_unknown_data_set_has_no_defaults() -> None:
    """Data passed from Python under a name no data set has: the run must name its augmentation."""
    assert dataset_defaults("imagenet") is None
    images = torch.randint(0, 256, (4, 1, 6, 6), dtype=torch.uint8)
    part = TensorData(images, torch.arange(4) % 2)
    splits = DataSplits(part, part, part, name="imagenet")
    with pytest.raises(ValueError, match="'imagenet' is not a registered data set.*augment=NAME"):
        resolve_config(Config(data=Component("imagenet")), splits)
    resolved = resolve_config(Config(data=Component("imagenet"), augment=Component("none")), splits)
    assert (resolved.likelihood, resolved.encoder, resolved.decoder) == (
        Component("bernoulli"),
        Component("mlp"),
        Component("mlp"),
    )


def test_resolution_follows_the_data_sets_declaration_and_keeps_given_options() -> None:
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    part = TensorData(images, torch.arange(4) % 2)
    splits = DataSplits(part, part, part, name="cifar10")
    tokens = ["data=cifar10", "likelihood.scale=2", "encoder=resnet18-half", "decoder.channels=8,8,8"]
    resolved = resolve_config(apply_overrides(Config(), parse_overrides(tokens)), splits)
    assert resolved.likelihood == Component("gaussian", {"scale": "2"})
    assert resolved.encoder == Component("resnet18-half")
    assert resolved.decoder == Component("resnet", {"channels": "8,8,8"})
    assert resolved.augment == Component("cifar")
    assert (resolved.prior, resolved.view_prior) == (Component("gaussian"), Component("gaussian"))
    assert resolved.unresolved() == []


def test_bad_descriptors_are_refused() -> None:
    with pytest.raises(ValueError, match="evaluation must be one of views, raw"):
        DatasetDefaults(augment="mnist", evaluation="binary")
    with pytest.raises(TypeError, match="must be DatasetDefaults"):
        register_dataset("x", help="x", defaults={"augment": "mnist"})


@pytest.fixture
def tiny_dataset():
    """A data set registered in one place (what adding a data set takes); removed afterwards."""
    name = "tiny-test-set"
    images = torch.linspace(0, 255, 6 * 16).round().to(torch.uint8).reshape(6, 1, 4, 4)

    @register_dataset(
        name,
        help="six 4x4 ramps",
        defaults=DatasetDefaults(augment="none", likelihood="continuous-bernoulli", encoder="conv"),
    )
    def tiny(seed: int, *, val_fraction: float = 0.0) -> DataSplits:
        part = TensorData(images, torch.arange(6) % 2)
        return DataSplits(part, part, part, name=name)

    yield name
    DATASETS._entries.pop(name)
    descriptor._DEFAULTS.pop(name)


def test_a_data_set_registered_in_one_file_brings_its_defaults(tiny_dataset: str) -> None:
    defaults = dataset_defaults(tiny_dataset)
    assert defaults.components() == {
        "augment": "none",
        "likelihood": "continuous-bernoulli",
        "encoder": "conv",
    }
    assert load_dataset(tiny_dataset).name == tiny_dataset
    splits = load_dataset(tiny_dataset)
    resolved = resolve_config(Config(data=Component(tiny_dataset)), splits)
    assert (resolved.augment, resolved.likelihood, resolved.encoder) == (
        Component("none"),
        Component("continuous-bernoulli"),
        Component("conv"),
    )
    assert resolved.decoder == Component("mlp")  # left to the image shape (grey 4x4)


def test_option_without_its_component_is_kept_for_the_default() -> None:
    """``likelihood.scale=99.5`` alone: the data set's likelihood, with that scale."""
    config = apply_overrides(Config(), parse_overrides(["data=fashionmnist", "likelihood.scale=99.5"]))
    assert config.likelihood == Component(None, {"scale": "99.5"})
    assert Config.from_dict(config.to_dict()) == config
    filled = config.with_defaults(dataset_defaults("fashionmnist").components())
    assert filled.likelihood == Component("bernoulli", {"scale": "99.5"})
    assert filled.augment == Component("mnist")
    named_later = apply_overrides(config, {"likelihood": "laplace"})
    assert named_later.likelihood == Component("laplace", {"scale": "99.5"})
    chosen = apply_overrides(Config(likelihood=Component("gaussian")), {"likelihood.scale": "2"})
    assert chosen.with_defaults({"likelihood": "bernoulli"}).likelihood == Component(
        "gaussian", {"scale": "2"}
    )


# --------------------------------------------------------------------------- evaluation images


def write_mnist_like(folder: Path, grey: np.ndarray) -> None:
    """Four IDX files holding ``grey`` (N, H, W) uint8 as training and test images."""
    folder.mkdir(parents=True, exist_ok=True)
    labels = (np.arange(len(grey)) % 10).astype(np.uint8)
    for prefix in ("train", "t10k"):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", torch.from_numpy(grey))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", torch.from_numpy(labels))


def grey_fraction(splits: DataSplits) -> float:
    images = torch.cat([splits.train.images, splits.val.images, splits.test.images])
    return float(((images != 0) & (images != 255)).float().mean())


@pytest.mark.parametrize("name", ["mnist", "fashionmnist"])
@pytest.mark.parametrize("preset", ["mnist-binary", "mnist"])
def test_evaluation_images_are_binarised_exactly_when_views_are(
    tmp_path: Path, name: str, preset: str
) -> None:
    grey = np.random.default_rng(0).integers(0, 256, (20, 6, 6), dtype=np.uint8)
    write_mnist_like(tmp_path / name, grey)
    splits = load_dataset(name, {"root": str(tmp_path / name), "val_fraction": 0.25}, seed=0)
    augmenter = build_augmenter(preset, splits.image_shape)
    views = augmenter(splits.train.float_images(), 2, torch.Generator().manual_seed(0))
    views_binary = bool(((views == 0) | (views == 1)).all())
    evaluated = evaluation_splits(splits, augmenter)
    assert views_binary == (preset == "mnist-binary")
    if views_binary:
        assert grey_fraction(evaluated) == 0.0 < grey_fraction(splits)
        for split in ("train", "val", "test"):
            raw, out = getattr(splits, split), getattr(evaluated, split)
            expected = (raw.images.float() / 255 > 0.5).to(torch.uint8) * 255
            assert torch.equal(out.images, expected)
            assert out.labels is raw.labels and out.num_classes == raw.num_classes
    else:
        assert evaluated is splits


def test_threshold_option_off_keeps_evaluation_grey(tmp_path: Path) -> None:
    augmenter = build_augmenter("mnist-binary", (1, 6, 6), {"threshold": "none"})
    assert augmenter.evaluation_transform() is None


def test_data_set_may_declare_raw_evaluation(tiny_dataset: str) -> None:
    splits = load_dataset(tiny_dataset)
    binarising = build_augmenter("mnist-binary", splits.image_shape)
    assert grey_fraction(evaluation_splits(splits, binarising)) == 0.0
    descriptor._DEFAULTS[tiny_dataset] = DatasetDefaults(augment="none", evaluation="raw")
    assert evaluation_splits(splits, binarising) is splits


def test_real_mnist_evaluation_images_are_binarised_like_its_views(mnist_root: Path) -> None:
    """MNIST's default preset binarises the views; its evaluation images follow (17% of pixels grey)."""
    splits = load_dataset("mnist", {"root": str(mnist_root), "limit": 300}, seed=0)
    augmenter = build_augmenter(dataset_defaults("mnist").augment, splits.image_shape)
    assert grey_fraction(splits) > 0.1
    evaluated = evaluation_splits(splits, augmenter)
    assert grey_fraction(evaluated) == 0.0
    assert evaluated.test.images.float().div(255).mean() == pytest.approx(
        (splits.test.images.float() / 255 > 0.5).float().mean()
    )


@pytest.mark.parametrize("augment", [None, "mnist-binary", "mnist"])
def test_a_trained_mnist_run_is_evaluated_on_images_like_its_views(
    mnist_root: Path, tmp_path: Path, augment: str | None
) -> None:
    """``train`` and ``load_run`` hand evaluation binarised MNIST exactly when the views were binarised."""
    tokens = [
        "model=vae",
        "data=mnist",
        f"data.root={mnist_root}",
        "data.limit=64",
        "data.val_fraction=0.25",
        "encoder.hidden=16",
        "decoder.hidden=16",
        "epochs=1",
        "batch_size=16",
        f"out={tmp_path / 'run'}",
        "progress=false",
    ]
    if augment is not None:
        tokens.append(f"augment={augment}")
    result = train(config_from_tokens(tokens))
    views_binary = result.config.augment.name == "mnist-binary"
    assert views_binary == (augment in (None, "mnist-binary"))  # the default binarises, as the reference
    assert (grey_fraction(result.data) == 0.0) == views_binary
    assert result.data.train.images.shape == (48, 1, 28, 28)
    loaded = load_run(tmp_path / "run")
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(loaded.data, split).images, getattr(result.data, split).images)


def test_likelihood_scale_alone_trains_with_the_data_sets_likelihood(tmp_path: Path) -> None:
    """The one-line reproduction a user tries first: ``likelihood.scale=...`` without ``likelihood=``."""
    tokens = [
        "data=digits",
        "data.limit=64",
        "likelihood.scale=2.5",
        "encoder.hidden=16",
        "decoder.hidden=16",
    ]
    tokens += ["epochs=1", "batch_size=16", f"out={tmp_path / 'run'}", "progress=false"]
    result = train(config_from_tokens(tokens))
    assert result.config.likelihood == Component("bernoulli", {"scale": "2.5"})
    assert result.model.likelihood.scale == 2.5
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())
    assert recorded["likelihood"]["name"] == "bernoulli"
