"""The styled data sets' training views: style re-drawn from the data set's distribution, content kept.

Digits-sized (``styled-digits``, a few hundred items), so the file runs in seconds.
"""

from __future__ import annotations

import pytest
import torch

from pssl.augment import AUGMENTATIONS, Restyle, ViewAugmenter, build_augmenter
from pssl.config import Component, Config
from pssl.datasets import dataset_defaults, load_dataset
from pssl.datasets.styled import STYLE_FACTORS, StyleSource, palette_tensor, render_styled
from pssl.inference.compose import compose

STYLED = ("styled-digits", "styled-mnist", "styled-fashionmnist")
OPTIONS = {"limit": 300, "val_fraction": 0.2}


@pytest.fixture(scope="module")
def styled():
    return load_dataset("styled-digits", OPTIONS, seed=0)


@pytest.fixture(scope="module")
def base():
    """The grey digits the styled set is drawn from (same items, same order)."""
    return load_dataset("digits", OPTIONS, seed=0)


def default_augmenter(splits, options=None) -> ViewAugmenter:
    preset = dataset_defaults(splits.name).augment
    return build_augmenter(preset, splits.image_shape, options, data=splits)


@pytest.mark.parametrize("name", STYLED)
def test_restyle_is_the_default_augmentation_of_every_styled_data_set(name: str) -> None:
    assert dataset_defaults(name).augment == "restyle"


def test_a_training_run_on_styled_data_draws_its_views_with_restyle(styled) -> None:
    config = Config(model=Component("simclr"), data=Component("styled-digits", dict(OPTIONS)), batch_size=32)
    parts = compose(config, data=styled)
    assert config.augment is None and parts.config.augment.name == "restyle"
    assert isinstance(parts.augmenter.transform, Restyle)
    assert parts.augmenter.transform.source is styled.style_source


def test_views_of_an_item_differ_in_every_style_factor_and_share_its_glyph(styled, base) -> None:
    """Each view is the item's own base glyph rendered with the returned parameters, which differ per view."""
    augmenter = default_augmenter(styled)
    images = styled.train.float_images()
    views, params = augmenter(images, 2, torch.Generator().manual_seed(3), return_params=True)
    assert views.shape == (len(images), 2, *styled.image_shape)
    assert sorted(params) == sorted(STYLE_FACTORS)
    for key in ("pos_x", "pos_y", "scale"):
        assert (params[key][:, 0] != params[key][:, 1]).all(), key
    for key in ("fg_color", "bg_color"):  # 4 colours each: a pair differs 3/4 of the time
        assert 0.6 < float((params[key][:, 0] != params[key][:, 1]).float().mean()) < 0.9, key
    assert (params["fg_color"] != params["bg_color"]).all()
    # Content: the styled items are the base items (same labels), and every view is exactly
    # the base glyph of its own item rendered with that view's parameters.
    assert torch.equal(styled.train.labels, base.train.labels)
    canvas = styled.image_shape[-1]
    for view in range(2):
        drawn = {k: v[:, view] for k, v in params.items()}
        expected = render_styled(base.train.images, drawn, canvas=canvas)
        assert torch.equal(views[:, view].mul(255).round().to(torch.uint8), expected)
    # Style, read off the pixels: the background is palette[bg_color] (a corner pixel).
    corners = views[:, :, :, 0, 0].mul(255).round().to(torch.uint8)
    assert torch.equal(corners, palette_tensor()[params["bg_color"]])
    # The views carry new style, not the stored one.
    assert not torch.equal(views[:, 0], images)


def test_views_follow_the_data_sets_own_style_distribution(styled) -> None:
    source = styled.style_source
    views, params = default_augmenter(styled)(
        styled.train.float_images(), 4, torch.Generator().manual_seed(0), return_params=True
    )
    scale = params["scale"]
    assert source.min_scale <= float(scale.min()) and float(scale.max()) <= source.max_scale
    assert float(scale.std()) > 0.05
    recorded = styled.train.factors
    assert set(params["fg_color"].unique().tolist()) == set(recorded["fg_color"].unique().tolist())
    assert set(params["bg_color"].unique().tolist()) == set(recorded["bg_color"].unique().tolist())
    glyph = scale * source.base_size / source.canvas  # the glyph stays on the canvas
    assert (params["pos_x"] >= glyph / 2 - 1e-6).all() and (params["pos_x"] <= 1 - glyph / 2 + 1e-6).all()


def test_rendering_with_the_recorded_factors_reproduces_the_stored_evaluation_images(styled) -> None:
    test = styled.test
    restyle = default_augmenter(styled).transform
    again = restyle.apply(test.float_images(), {k: test.factors[k] for k in STYLE_FACTORS})
    assert torch.equal(again, test.float_images())
    # The stored images are also the base glyphs rendered with the recorded factors.
    source = styled.style_source
    index = source.find(test.float_images())
    assert torch.equal(render_styled(source.glyphs[index], test.factors, canvas=source.canvas), test.images)


def test_only_the_chosen_factors_are_redrawn(styled) -> None:
    augmenter = default_augmenter(styled, {"factors": "fg_color,bg_color"})
    images = styled.val.float_images()
    views, params = augmenter(images, 2, torch.Generator().manual_seed(1), return_params=True)
    assert sorted(params) == ["bg_color", "fg_color"]
    recorded = {k: styled.val.factors[k] for k in ("pos_x", "pos_y", "scale")}
    for view in range(2):
        drawn = {**recorded, **{k: v[:, view] for k, v in params.items()}}
        source = styled.style_source
        expected = render_styled(source.glyphs[source.find(images)], drawn, canvas=source.canvas)
        assert torch.equal(views[:, view].mul(255).round().to(torch.uint8), expected)


def test_restyle_draws_on_the_generators_device_and_is_seeded(styled) -> None:
    augmenter = default_augmenter(styled)
    images = styled.test.float_images(slice(0, 16))
    a = augmenter(images, 2, torch.Generator().manual_seed(5))
    b = augmenter(images, 2, torch.Generator().manual_seed(5))
    c = augmenter(images, 2, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert augmenter(images.double(), 2, torch.Generator().manual_seed(5)).dtype == torch.float64


def test_bad_restyle_options_and_inputs_are_refused(styled) -> None:
    shape = styled.image_shape
    with pytest.raises(ValueError, match=r"\(augment.factors\) must be .*pos_x.*got \['pos_x', 'hue'\]"):
        build_augmenter("restyle", shape, {"factors": "pos_x,hue"}, data=styled)
    with pytest.raises(ValueError, match="must be distinct names"):
        build_augmenter("restyle", shape, {"factors": "scale,scale"}, data=styled)
    with pytest.raises(ValueError, match="has no option 'canvas'"):
        build_augmenter("restyle", shape, {"canvas": 20}, data=styled)
    with pytest.raises(ValueError, match="has no option 'data'"):
        AUGMENTATIONS.resolve_options("restyle", {"data": "styled-digits"})
    digits = load_dataset("digits", OPTIONS, seed=0)
    with pytest.raises(ValueError, match="augment=restyle re-renders items of a styled data set.*'digits'"):
        build_augmenter("restyle", digits.image_shape, data=digits)
    with pytest.raises(ValueError, match="image_shape \\(3, 20, 20\\)"):
        build_augmenter("restyle", (3, 20, 20), data=styled)
    generator = torch.Generator().manual_seed(0)
    detached = build_augmenter("restyle", shape)  # no data: buildable (evaluation reads its transform) ...
    assert detached.evaluation_transform() is None
    with pytest.raises(ValueError, match="built without one"):  # ... but it cannot draw views
        detached(styled.train.float_images(slice(0, 4)), 2, generator)
    augmenter = default_augmenter(styled)
    views = augmenter(styled.train.float_images(slice(0, 4)), 1, generator)[:, 0]
    with pytest.raises(ValueError, match="4 of 4 images are not images of the styled data set"):
        augmenter(views * 0.5, 1, generator)  # altered pixels
    with pytest.raises(ValueError, match="images must be \\(n, 3, 16, 16\\)"):
        augmenter(torch.rand(2, 1, 16, 16), 2, generator)
    with pytest.raises(ValueError, match="styles must hold exactly"):
        StyleSource(
            styled.style_source.glyphs,
            {"pos_x": styled.style_source.styles["pos_x"]},
            styled.style_source.images,
            min_scale=1.5,
            max_scale=1.8,
            contrast=True,
        )


def test_source_finds_items_whose_fingerprints_collide() -> None:
    """Two different images with one fingerprint (forced here) are told apart by their pixels."""
    splits = load_dataset("styled-digits", {"limit": 20, "val_fraction": 0.0}, seed=0)
    source = splits.style_source
    source._weights.zero_()  # every image gets fingerprint 0
    source._sorted_keys.zero_()
    images = splits.test.float_images()
    index = source.find(images)
    assert torch.equal(source.images[index], splits.test.images)


class _Pixels(torch.nn.Module):
    """The identity representation: a view's pixels, flattened."""

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1)


def test_style_probes_read_the_restyled_views_parameters(styled) -> None:
    """The drawn factors are the targets of the augmentation-style probes; pixels show the colours."""
    from pssl.evaluation.runner import evaluate_augmentation_style

    result = evaluate_augmentation_style(
        _Pixels(), styled, default_augmenter(styled), num_views=2, seed=0, max_items=120
    )
    assert sorted(result["factors"]) == sorted(STYLE_FACTORS)
    assert result["factors"]["bg_color"]["kind"] == "discrete"
    assert result["factors"]["bg_color"]["linear"] > 0.95  # the background is most of the pixels
