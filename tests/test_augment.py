"""Tests of the batched augmentations: agreement with torchvision's per-image functions,
parameter distributions, seeding, shapes and presets.

Tolerances: geometric and colour operations are compared with torchvision's
float kernels at ``1e-4`` (float32 rounding of coordinates and blends; the
algorithms are the same). Frequencies are checked at 4 binomial standard
deviations with fixed seeds.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from pssl import augment
from pssl.augment import (
    AUGMENTATIONS,
    JITTER_OPS,
    ColorJitter,
    Compose,
    GaussianBlur,
    RandomGrayscale,
    RandomHorizontalFlip,
    RandomResizedCrop,
    RandomVerticalFlip,
    Threshold,
    ViewAugmenter,
    build_augmenter,
)

TOL = 1e-4


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n: int = 6, channels: int = 3, height: int = 16, width: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, channels, height, width, generator=gen(seed))


def box_params(boxes: list[tuple[int, int, int, int]], height: int, width: int) -> dict[str, torch.Tensor]:
    """Pixel boxes (top, left, h, w) as the crop's normalised params."""
    t = torch.tensor(boxes, dtype=torch.float32)
    scale = torch.tensor([height, width, height, width], dtype=torch.float32)
    return dict(zip(("top", "left", "height", "width"), (t / scale).unbind(dim=1)))


# ------------------------------------------------------------ agreement with torchvision


def test_crop_downscale_matches_torchvision_resized_crop():
    # box at least as large as the output: every sample point lies inside the crop, so the
    # batched crop equals crop-then-resize exactly (up to float rounding)
    x = images(4, 3, 20, 24)
    boxes = [(0, 0, 20, 24), (2, 3, 16, 16), (4, 8, 12, 14), (1, 0, 19, 10)]
    crop = RandomResizedCrop(size=(10, 8))
    out = crop.apply(x, box_params(boxes, 20, 24))
    for k, (top, left, h, w) in enumerate(boxes):
        ref = TF.resized_crop(x[k], top, left, h, w, [10, 8], antialias=False)
        assert (out[k] - ref).abs().max() < TOL, k


def test_crop_upscale_matches_torchvision_inside_border_ring():
    # upscaling: torchvision clamps to the crop's edge pixels while we read the neighbour
    # outside the crop, so only the outermost output ring may differ (by design)
    x = images(3, 1, 16, 16)
    boxes = [(3, 4, 8, 8), (5, 2, 6, 9), (0, 0, 7, 7)]
    crop = RandomResizedCrop(size=(16, 16))
    out = crop.apply(x, box_params(boxes, 16, 16))
    for k, (top, left, h, w) in enumerate(boxes):
        ref = TF.resized_crop(x[k], top, left, h, w, [16, 16], antialias=False)
        assert (out[k, :, 1:-1, 1:-1] - ref[:, 1:-1, 1:-1]).abs().max() < TOL, k
    # a box touching the image corner agrees on its two image-edge sides too (border padding)
    ref = TF.resized_crop(x[2], 0, 0, 7, 7, [16, 16], antialias=False)
    assert (out[2, :, 0, :-1] - ref[:, 0, :-1]).abs().max() < TOL
    assert (out[2, :, :-1, 0] - ref[:, :-1, 0]).abs().max() < TOL


def test_full_box_crop_is_identity():
    x = images(3, 3, 12, 9)
    out = RandomResizedCrop().apply(x, box_params([(0, 0, 12, 9)] * 3, 12, 9))
    assert (out - x).abs().max() < TOL


@pytest.mark.parametrize("flip_cls, dim", [(RandomHorizontalFlip, -1), (RandomVerticalFlip, -2)])
def test_flips_equal_torch_flip_per_image(flip_cls, dim):
    x = images(5)
    flip = torch.tensor([True, False, True, True, False])
    out = flip_cls().apply(x, {"flip": flip})
    for k in range(5):
        expected = torch.flip(x[k], dims=[dim]) if flip[k] else x[k]
        assert torch.equal(out[k], expected)


@pytest.mark.parametrize("flip_cls, dim", [(RandomHorizontalFlip, -1), (RandomVerticalFlip, -2)])
def test_flip_matrix_resampling_is_the_flip(flip_cls, dim):
    flip = flip_cls()
    params = {"flip": torch.tensor([True, False, True])}
    x = images(3)
    resampled = augment.AffineAugmentation.apply(flip, x, params)
    assert (resampled - flip.apply(x, params)).abs().max() < TOL


def test_compose_fuses_crop_and_flips_into_one_grid_sample(monkeypatch):
    calls = []
    real = F.grid_sample

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(augment.F, "grid_sample", counting)
    x = images(4, 3, 16, 16)
    pipeline = Compose([RandomResizedCrop(), RandomHorizontalFlip(), RandomVerticalFlip()])
    boxes = [(2, 1, 12, 13), (0, 0, 16, 16), (4, 4, 10, 8), (1, 3, 14, 11)]
    params = {f"crop.{k}": v for k, v in box_params(boxes, 16, 16).items()}
    params["hflip.flip"] = torch.tensor([True, True, False, False])
    params["vflip.flip"] = torch.tensor([True, False, True, False])
    out = pipeline.apply(x, params)
    assert len(calls) == 1
    for k, (top, left, h, w) in enumerate(boxes):
        ref = TF.resized_crop(x[k], top, left, h, w, [16, 16], antialias=False)
        if params["hflip.flip"][k]:
            ref = ref.flip(-1)
        if params["vflip.flip"][k]:
            ref = ref.flip(-2)
        assert (out[k, :, 1:-1, 1:-1] - ref[:, 1:-1, 1:-1]).abs().max() < TOL, k


TV_JITTER = {
    "brightness": TF.adjust_brightness,
    "contrast": TF.adjust_contrast,
    "saturation": TF.adjust_saturation,
    "hue": TF.adjust_hue,
}


@pytest.mark.parametrize("channels", [3, 1])
def test_color_jitter_matches_torchvision_ops_in_the_same_order(channels):
    jitter = ColorJitter(0.8, 0.8, 0.8, 0.2, p=0.7)
    params = jitter.sample_params(64, gen(3))
    x = images(64, channels, 8, 8)
    out = jitter.apply(x, params)
    assert not params["applied"].all() and params["applied"].any()
    for k in range(64):
        ref = x[k]
        if params["applied"][k]:
            for op_index in params["order"][k].tolist():
                op = JITTER_OPS[op_index]
                if channels == 1 and op in ("saturation", "hue"):
                    continue  # documented: grey images get brightness and contrast only
                ref = TV_JITTER[op](ref, float(params[op][k]))
        assert (out[k] - ref).abs().max() < TOL, k


def test_color_jitter_order_matters():
    # the same factors in two orders give different images: the order is really used
    jitter = ColorJitter(0.8, 0.8, 0.8, 0.2)
    params = jitter.sample_params(1, gen(0))
    params.update(brightness=torch.tensor([1.7]), contrast=torch.tensor([0.3]))
    x = images(1)
    a = jitter.apply(x, {**params, "order": torch.tensor([[0, 1, 2, 3]])})
    b = jitter.apply(x, {**params, "order": torch.tensor([[1, 0, 2, 3]])})
    assert (a - b).abs().max() > 0.05


def test_hue_shift_full_turn_is_identity_and_greys_are_fixed():
    x = images(4, 3, 8, 8)
    assert (augment.shift_hue(x, torch.tensor([0.0, 1.0, -1.0, 2.0])) - x).abs().max() < 1e-5
    grey = x[:, :1].expand(4, 3, 8, 8)
    assert (augment.shift_hue(grey, torch.tensor([0.1, 0.3, -0.4, 0.5])) - grey).abs().max() < 1e-6
    # a third of a turn maps red to green and green to blue
    red_green = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).view(2, 3, 1, 1)
    turned = augment.shift_hue(red_green, torch.tensor([1 / 3, 1 / 3]))
    assert (turned - torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]).view(2, 3, 1, 1)).abs().max() < 1e-5


def test_grayscale_matches_torchvision():
    x = images(4)
    applied = torch.tensor([True, False, True, False])
    out = RandomGrayscale(0.5).apply(x, {"applied": applied})
    for k in range(4):
        ref = TF.rgb_to_grayscale(x[k], num_output_channels=3) if applied[k] else x[k]
        assert (out[k] - ref).abs().max() < TOL


def test_gaussian_blur_matches_torchvision():
    blur = GaussianBlur(5, sigma=(0.3, 2.0), p=0.75)
    params = blur.sample_params(8, gen(4))
    x = images(8, 3, 12, 10)
    out = blur.apply(x, params)
    for k in range(8):
        sigma = float(params["sigma"][k])
        ref = TF.gaussian_blur(x[k], [5, 5], [sigma, sigma]) if params["applied"][k] else x[k]
        assert (out[k] - ref).abs().max() < TOL, k


def test_threshold_output_binary():
    x = images(3, 1, 8, 8)
    out = Threshold(0.5).apply(x, {})
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(out, (x > 0.5).float())
    views = build_augmenter("mnist-binary", (1, 8, 8))(x, 3, gen())
    assert set(views.unique().tolist()) <= {0.0, 1.0}


# --------------------------------------------------------------- parameter distributions


def test_crop_params_within_stated_ranges():
    n, scale, ratio = 20000, (0.08, 1.0), (3 / 4, 4 / 3)
    height, width = 24, 32
    p = RandomResizedCrop(scale=scale, ratio=ratio).sample_params(n, gen(5), image_size=(height, width))
    area = p["height"] * p["width"]
    aspect = (p["width"] * width) / (p["height"] * height)
    assert (p["top"] >= 0).all() and (p["left"] >= 0).all()
    assert (p["top"] + p["height"] <= 1 + 1e-6).all() and (p["left"] + p["width"] <= 1 + 1e-6).all()
    assert (area >= scale[0] - 1e-6).all() and (area <= scale[1] + 1e-6).all()
    assert (aspect >= ratio[0] - 1e-4).all() and (aspect <= ratio[1] + 1e-4).all()
    # draws spread over the range (not all at one value)
    assert area.min() < 0.1 and area.max() > 0.95 and aspect.min() < 0.76 and aspect.max() > 1.32


KS_CRITICAL_1E3 = 1.949
"""c(alpha) = sqrt(-log(alpha / 2) / 2) of the two-sample KS test at alpha = 1e-3."""


def ks_statistic(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest gap between the empirical distribution functions of samples ``a`` and ``b``."""
    points = torch.cat([a, b]).double().sort().values
    cdf_a = torch.searchsorted(a.double().sort().values, points, right=True) / a.numel()
    cdf_b = torch.searchsorted(b.double().sort().values, points, right=True) / b.numel()
    return (cdf_a - cdf_b).abs().max().item()


@pytest.mark.parametrize(
    "image_size, scale, ratio",
    [((300, 500), (0.08, 1.0), (3 / 4, 4 / 3)), ((400, 300), (0.6, 1.0), (0.5, 2.0))],
)
def test_crop_box_distribution_follows_torchvision(image_size, scale, ratio):
    # torchvision draws integer boxes one image at a time; on a large image rounding of the
    # box size is negligible, so heights and widths must have the same distribution
    # (two-sample Kolmogorov-Smirnov test, fixed seeds, level 1e-3). Positions are discrete uniform there
    # (an atom at 0 when the box nearly fills the image), continuous here: compare means.
    from torchvision.transforms import v2

    n, (height, width) = 2000, image_size
    reference = v2.RandomResizedCrop(size=(4, 4), scale=scale, ratio=ratio)
    blank = torch.zeros(1, height, width)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        boxes = [reference.make_params([blank]) for _ in range(n)]
    ours = RandomResizedCrop(scale=scale, ratio=ratio).sample_params(n, gen(1), image_size=image_size)
    for key, size in [("height", height), ("width", width)]:
        theirs = [box[key] / size for box in boxes]
        assert ks_statistic(ours[key], torch.tensor(theirs)) < KS_CRITICAL_1E3 * math.sqrt(2 / n), key
    for key, size in [("top", height), ("left", width)]:
        theirs = torch.tensor([box[key] / size for box in boxes])
        standard_error = math.sqrt((theirs.var() + ours[key].var()) / n)
        assert abs(theirs.mean() - ours[key].mean()) < 4 * standard_error, key


def test_crop_fallback_is_central_with_clamped_ratio():
    # on a square image no box of area ~1 and aspect 2-3 fits: torchvision's fallback is the
    # central crop of aspect max(ratio)... clamped: width 1, height 1/2
    p = RandomResizedCrop(scale=(0.99, 1.0), ratio=(2.0, 3.0)).sample_params(50, gen(), image_size=(10, 10))
    assert torch.allclose(p["width"], torch.ones(50))
    assert torch.allclose(p["height"], torch.full((50,), 0.5))
    assert torch.allclose(p["top"], torch.full((50,), 0.25))
    assert torch.allclose(p["left"], torch.zeros(50))


def test_crop_takes_first_fitting_candidate_and_rarely_falls_back():
    # with torchvision's defaults a candidate fails with probability < 1/2, so fallback
    # (all 10 fail) is rare; a single attempt would fall back often
    p = RandomResizedCrop().sample_params(20000, gen(6), image_size=(16, 16))
    fallback = (p["height"] == 1) & (p["width"] == 1)
    assert fallback.float().mean() < 0.005


@pytest.mark.parametrize("flip_cls", [RandomHorizontalFlip, RandomVerticalFlip])
@pytest.mark.parametrize("prob", [0.0, 0.3, 0.5, 1.0])
def test_flip_frequency(flip_cls, prob):
    n = 10000
    flips = flip_cls(prob).sample_params(n, gen(7))["flip"]
    sd = math.sqrt(prob * (1 - prob) / n)
    assert abs(flips.float().mean().item() - prob) <= 4 * sd + 1e-9


def test_jitter_params_within_ranges():
    n = 5000
    p = ColorJitter(0.8, 0.4, (0.5, 1.5), 0.2, p=0.8).sample_params(n, gen(8))
    for key, (low, high) in {
        "brightness": (0.2, 1.8),
        "contrast": (0.6, 1.4),
        "saturation": (0.5, 1.5),
        "hue": (-0.2, 0.2),
    }.items():
        assert p[key].min() >= low and p[key].max() <= high, key
        assert p[key].min() < low + 0.01 and p[key].max() > high - 0.01, key
    assert torch.equal(p["order"].sort(dim=1).values, torch.arange(4).expand(n, 4))
    # every op is first about a quarter of the time
    first = torch.bincount(p["order"][:, 0], minlength=4).float() / n
    assert (first - 0.25).abs().max() < 4 * math.sqrt(0.25 * 0.75 / n)
    assert abs(p["applied"].float().mean().item() - 0.8) < 4 * math.sqrt(0.8 * 0.2 / n)


def test_zero_strength_jitter_is_identity():
    x = images(8)
    assert torch.equal(ColorJitter()(x, gen()), x)


# -------------------------------------------------------------- views, seeds and shapes


@pytest.mark.parametrize("channels", [1, 3])
def test_view_augmenter_shapes_seed_and_independence(channels):
    aug = build_augmenter("cifar", (channels, 16, 16))
    x = images(5, channels)
    views, params = aug(x, 3, gen(11), return_params=True)
    assert views.shape == (5, 3, channels, 16, 16)
    assert views.dtype == x.dtype
    for key, value in params.items():
        assert value.shape[:2] == (5, 3), key
    assert params["jitter.order"].shape == (5, 3, 4)
    again = aug(x, 3, gen(11))
    assert torch.equal(views, again)
    other = aug(x, 3, gen(12))
    assert not torch.equal(views, other)
    for j in range(3):
        for k in range(j):
            assert not torch.allclose(views[:, j], views[:, k])
    assert views.min() >= 0 and views.max() <= 1


def test_view_params_describe_each_view():
    # view (i, j) is the transform of image i with params [i, j]
    aug = ViewAugmenter(Compose([RandomResizedCrop(), RandomHorizontalFlip()]))
    x = images(3)
    views, params = aug(x, 2, gen(13), return_params=True)
    for i in range(3):
        for j in range(2):
            single = {k: v[i, j].reshape(1, *v.shape[2:]) for k, v in params.items()}
            assert (aug.transform.apply(x[i : i + 1], single)[0] - views[i, j]).abs().max() < 1e-5


def test_identity_views_repeat_the_images():
    x = images(4, 1, 8, 8)
    views, params = ViewAugmenter.identity()(x, 3, gen(), return_params=True)
    assert params == {}
    assert torch.equal(views, x.unsqueeze(1).expand(4, 3, 1, 8, 8))


def test_crop_output_size():
    aug = ViewAugmenter(RandomResizedCrop(size=(8, 12)))
    assert aug(images(2, 3, 16, 16), 2, gen()).shape == (2, 2, 3, 8, 12)
    assert aug.output_shape((3, 16, 16)) == (3, 8, 12)


# ------------------------------------------------------------------------ presets/errors


# restyle re-renders the items of a styled data set, not arbitrary images: tests/test_restyle.py
@pytest.mark.parametrize("preset", [name for name in AUGMENTATIONS.names() if name != "restyle"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 8, 8)])
def test_every_preset_runs(preset, shape):
    aug = build_augmenter(preset, shape)
    x = torch.rand(4, *shape, generator=gen(2))
    views, params = aug(x, 2, gen(), return_params=True)
    assert views.shape == (4, 2, *aug.output_shape(shape))
    assert torch.isfinite(views).all() and views.min() >= 0 and views.max() <= 1
    assert all(v.shape[:2] == (4, 2) for v in params.values())


def test_preset_options_are_coerced_and_checked():
    aug = build_augmenter("mnist", (1, 28, 28), {"threshold": "0.5", "crop_scale_min": "0.9"})
    assert isinstance(aug.transform.transforms[-1], Threshold)
    assert aug.transform.transforms[0].scale == (0.9, 1.0)
    cifar = build_augmenter("cifar", (3, 32, 32), {"jitter": "0.4,0.4,0.4,0.1", "jitter_p": "1"})
    jitter = cifar.transform.transforms[0]
    assert jitter.brightness == (0.6, 1.4) and jitter.hue == (-0.1, 0.1) and jitter.p == 1.0
    with pytest.raises(ValueError, match="crop_scale_min"):
        build_augmenter("mnist", (1, 28, 28), {"scale": 0.3})
    with pytest.raises(ValueError, match="simclr"):
        build_augmenter("nope", (1, 28, 28))
    with pytest.raises(ValueError, match="image_shape"):
        build_augmenter("mnist", (28, 28))


@pytest.mark.parametrize(
    "make",
    [
        lambda: RandomResizedCrop(scale=(0.5, 0.2)),
        lambda: RandomResizedCrop(scale=(0.0, 1.0)),
        lambda: RandomResizedCrop(ratio=(2.0, 1.0)),
        lambda: RandomResizedCrop(size=(0, 4)),
        lambda: RandomHorizontalFlip(1.5),
        lambda: ColorJitter(brightness=-0.1),
        lambda: ColorJitter(hue=0.7),
        lambda: GaussianBlur(4),
        lambda: Threshold(1.5),
        lambda: Compose([RandomHorizontalFlip(), RandomHorizontalFlip()]),
    ],
)
def test_bad_arguments_raise_value_error(make):
    with pytest.raises(ValueError):
        make()


def test_bad_inputs_raise():
    aug = build_augmenter("mnist", (1, 8, 8))
    with pytest.raises(ValueError, match="shape"):
        aug(torch.rand(1, 8, 8), 2, gen())
    with pytest.raises(TypeError, match="floating"):
        aug(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), 2, gen())
    with pytest.raises(ValueError, match="num_views"):
        aug(torch.rand(2, 1, 8, 8), 0, gen())
    with pytest.raises(TypeError, match="Generator"):
        aug(torch.rand(2, 1, 8, 8), 2, 0)
    with pytest.raises(ValueError, match="crop.top"):
        aug.transform.apply(torch.rand(2, 1, 8, 8), {})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_images_with_cpu_generator_match_cpu():
    aug = build_augmenter("simclr", (3, 16, 16))
    x = images(4)
    cpu = aug(x, 2, gen(9))
    cuda = aug(x.cuda(), 2, gen(9))
    assert cuda.device.type == "cuda"
    assert (cuda.cpu() - cpu).abs().max() < 1e-4
