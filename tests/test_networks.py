"""Tests for pssl.networks: shapes, options, gradients, layouts and errors."""

from __future__ import annotations

import pytest
import torch

from pssl.networks import (
    DECODERS,
    ENCODERS,
    ProjectionHead,
    build_decoder,
    build_encoder,
    default_networks,
)

# Small options so every network builds and runs in milliseconds.
SMALL = {
    "mlp": {"hidden": (16, 8)},
    "conv": {"channels": (4, 8), "hidden": 16},
    "resnet": {"channels": (4, 8, 8), "blocks_per_stage": 1},
    "resnet18-half": {"channels": (4, 8, 8), "blocks_per_stage": 1},
}
SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 64, 64)]


def applicable(name: str, shape: tuple[int, int, int]) -> bool:
    return not name.startswith("resnet") or shape[1] >= 32


def small(name: str, role: str) -> dict:
    """Small options for ``name``; the reference ResNet's decoder lists its own (wider) widths."""
    if name == "resnet18-half" and role == "decoder":
        return {"channels": (4, 8, 8, 8), "blocks_per_stage": 1}
    return SMALL[name]


CASES = [(name, shape) for name in ENCODERS.names() for shape in SHAPES if applicable(name, shape)]


def test_registries_hold_the_reference_networks() -> None:
    for registry in (ENCODERS, DECODERS):
        assert {"mlp", "conv", "resnet"} <= set(registry.names())
    assert set(ENCODERS.names()) == set(DECODERS.names())


@pytest.mark.parametrize(("name", "shape"), CASES)
def test_encoder_output_shape(name: str, shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    encoder = build_encoder(name, shape, 6, SMALL[name])
    assert encoder.output_dim == 6
    out = encoder(torch.rand(3, *shape))
    assert out.shape == (3, 6)
    assert torch.isfinite(out).all()
    # Leading (batch, views) dimensions are flattened and restored.
    assert encoder(torch.rand(2, 3, *shape)).shape == (2, 3, 6)


@pytest.mark.parametrize(("name", "shape"), CASES)
def test_encoder_batch_of_one_in_eval_mode(name: str, shape: tuple[int, int, int]) -> None:
    encoder = build_encoder(name, shape, 4, SMALL[name]).eval()
    with torch.no_grad():
        assert encoder(torch.rand(1, *shape)).shape == (1, 4)


@pytest.mark.parametrize(("name", "shape"), CASES)
def test_decoder_output_shape_with_leading_dims(name: str, shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    decoder = build_decoder(name, 5, shape, small(name, "decoder"))
    assert decoder.latent_dim == 5
    assert decoder(torch.randn(4, 5)).shape == (4, *shape)
    out = decoder(torch.randn(2, 3, 5))
    assert out.shape == (2, 3, *shape)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", DECODERS.names())
def test_decoder_outputs_are_raw_not_squashed(name: str) -> None:
    torch.manual_seed(0)
    decoder = build_decoder(name, 3, (3, 32, 32), SMALL[name])
    with torch.no_grad():
        out = decoder(100.0 * torch.randn(64, 3))
    # A sigmoid (or any squashing link) would keep every value inside (0, 1).
    assert (out < 0).any() and (out.abs() > 1).any()


@pytest.mark.parametrize("shape", [(1, 7, 7), (2, 9, 13), (3, 30, 34)])
@pytest.mark.parametrize("name", ["conv", "resnet"])
def test_conv_networks_reproduce_odd_sizes_exactly(name: str, shape: tuple[int, int, int]) -> None:
    encoder = build_encoder(name, shape, 4, SMALL[name])
    decoder = build_decoder(name, 4, shape, SMALL[name])
    assert decoder(encoder(torch.rand(2, *shape))).shape == (2, *shape)


@pytest.mark.parametrize("name", ENCODERS.names())
def test_unknown_and_bad_options_name_the_accepted_ones(name: str) -> None:
    with pytest.raises(ValueError, match="accepted:.*hidden|accepted:.*channels"):
        build_encoder(name, (3, 32, 32), 4, {"no_such_option": 1})


def test_unknown_names_raise_listing_accepted_names() -> None:
    with pytest.raises(ValueError, match=r"unknown encoder 'vit'.*mlp.*conv.*resnet"):
        build_encoder("vit", (1, 28, 28), 4)
    with pytest.raises(ValueError, match=r"unknown decoder 'vit'.*mlp.*conv.*resnet"):
        build_decoder("vit", 4, (1, 28, 28))


def test_hidden_option_from_string() -> None:
    encoder = build_encoder("mlp", (1, 8, 8), 3, {"hidden": "64,32"})
    decoder = build_decoder("mlp", 3, (1, 8, 8), {"hidden": "64,32"})
    enc_widths = [m.out_features for m in encoder.modules() if isinstance(m, torch.nn.Linear)]
    dec_widths = [m.out_features for m in decoder.modules() if isinstance(m, torch.nn.Linear)]
    assert enc_widths == [64, 32, 3]
    assert dec_widths == [64, 32, 64]
    conv = build_encoder("conv", (1, 8, 8), 3, {"channels": "2,3", "hidden": "5"})
    assert conv.channels == (2, 3)


def test_mlp_default_is_the_reference_network() -> None:
    encoder = build_encoder("mlp", (1, 28, 28), 20)
    widths = [(m.in_features, m.out_features) for m in encoder.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [(784, 2000), (2000, 500), (500, 500), (500, 20)]
    decoder = build_decoder("mlp", 10, (1, 28, 28))
    widths = [(m.in_features, m.out_features) for m in decoder.modules() if isinstance(m, torch.nn.Linear)]
    # d-500-500-2000-784: the encoder's widths reversed, 500 next to the latent (PAPER.md section 5)
    assert widths == [(10, 500), (500, 500), (500, 2000), (2000, 784)]
    assert sum(p.numel() for p in decoder.parameters()) == 2_826_784
    assert (
        sum(p.numel() for p in encoder.parameters())
        == 784 * 2000 + 2000 + 2000 * 500 + 500 + 500 * 500 + 500 + 500 * 20 + 20
    )


# (image side, encoder parameters for output_dim 128, decoder parameters for latent 64, final feature map)
REFERENCE_RESNET = {
    32: (969_920, 8_984_387, (128, 4, 4)),
    64: (1_757_632, 9_383_747, (128, 8, 8)),
}


@pytest.mark.parametrize("side", sorted(REFERENCE_RESNET))
def test_reference_resnet_pair_parameter_counts_and_shapes(side: int) -> None:
    """The half-width ResNet-18 pair of the paper's CIFAR-10 (32 px) and CelebA (64 px) setups.

    The counts equal those of the authors' released networks (their decoder holds
    6 more parameters in a batch norm it never calls).
    """
    encoder_params, decoder_params, feature_shape = REFERENCE_RESNET[side]
    torch.manual_seed(0)
    encoder = build_encoder("resnet18-half", (3, side, side), 128)
    decoder = build_decoder("resnet18-half", 64, (3, side, side))
    assert sum(p.numel() for p in encoder.parameters()) == encoder_params
    assert sum(p.numel() for p in decoder.parameters()) == decoder_params
    assert encoder.feature_shape == feature_shape
    stem = encoder.stem[0]
    assert stem.kernel_size == ((3, 3) if side == 32 else (4, 4))
    assert stem.stride == (1, 1) and stem.padding == (0, 0)
    # flattened, not pooled: the linear layer reads the whole final map
    assert encoder.fc.in_features == feature_shape[0] * feature_shape[1] * feature_shape[2]
    blocks = [m for m in encoder.trunk if m.__class__.__name__ == "BasicBlock"]
    assert [b.conv1.out_channels for b in blocks] == [32, 32, 64, 64, 128, 128]
    images = torch.rand(2, 2, 3, side, side)
    assert encoder(images).shape == (2, 2, 128)
    out = decoder(torch.randn(2, 2, 64))
    assert out.shape == (2, 2, 3, side, side)
    assert torch.isfinite(out).all()


def test_reference_resnet_convolutions_start_kaiming_normal() -> None:
    """Kaiming-normal (fan-out, ReLU gain): weight std sqrt(2 / (out_channels * k * k)) within 10%."""
    torch.manual_seed(0)
    encoder = build_encoder("resnet18-half", (3, 32, 32), 128)
    conv = encoder.trunk[-1].conv2  # 128 x 128 x 3 x 3: enough weights for a tight estimate
    expected = (2.0 / (conv.out_channels * 9)) ** 0.5
    assert abs(float(conv.weight.detach().std()) / expected - 1) < 0.1


def test_resnet_default_channels_are_the_reference() -> None:
    encoder = build_encoder("resnet", (3, 32, 32), 128)
    convs = [m for m in encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert sorted({m.out_channels for m in convs}) == [32, 64, 128]
    assert encoder.fc.in_features == 128


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"hidden": "0,4"}, "hidden must be positive"),
        ({"hidden": "a,b"}, "expected an integer"),
    ],
)
def test_bad_option_values_raise(options: dict, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        build_encoder("mlp", (1, 8, 8), 3, options)


@pytest.mark.parametrize("shape", [(28, 28), (1, 0, 8), (1.0, 8, 8), "1,8,8"])
def test_bad_image_shape_raises(shape: object) -> None:
    with pytest.raises(ValueError, match="image_shape"):
        build_encoder("mlp", shape, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="image_shape"):
        default_networks(shape)  # type: ignore[arg-type]


def test_bad_sizes_raise() -> None:
    with pytest.raises(ValueError, match="output_dim"):
        build_encoder("mlp", (1, 8, 8), 0)
    with pytest.raises(ValueError, match="latent_dim"):
        build_decoder("conv", -1, (1, 8, 8))
    with pytest.raises(ValueError, match="channels"):
        build_encoder("resnet", (3, 32, 32), 4, {"channels": ()})


def test_wrong_input_shapes_raise() -> None:
    encoder = build_encoder("conv", (1, 8, 8), 3, SMALL["conv"])
    with pytest.raises(ValueError, match=r"\(1, 8, 8\).*\(2, 3, 8, 8\)"):
        encoder(torch.rand(2, 3, 8, 8))
    decoder = build_decoder("conv", 3, (1, 8, 8), SMALL["conv"])
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\).*\(2, 4\)"):
        decoder(torch.rand(2, 4))


@pytest.mark.parametrize(("name", "shape"), [(n, s) for n, s in CASES if s[1] <= 32])
def test_gradient_reaches_every_parameter(name: str, shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    encoder = build_encoder(name, shape, 4, SMALL[name])
    decoder = build_decoder(name, 4, shape, SMALL[name])
    x = torch.rand(3, *shape)
    loss = (decoder(encoder(x)) - x).pow(2).sum()
    loss.backward()
    for label, module in (("encoder", encoder), ("decoder", decoder)):
        for pname, param in module.named_parameters():
            assert param.grad is not None, f"{name} {label}.{pname} got no gradient"
            assert torch.isfinite(param.grad).all(), f"{name} {label}.{pname} has a non-finite gradient"
            assert param.grad.abs().sum() > 0, f"{name} {label}.{pname} has an all-zero gradient"


@pytest.mark.parametrize("batch_norm", [True, False])
def test_resnet_without_batch_norm_has_none(batch_norm: bool) -> None:
    options = {**SMALL["resnet"], "batch_norm": str(batch_norm).lower()}
    for module in (
        build_encoder("resnet", (3, 32, 32), 4, options),
        build_decoder("resnet", 4, (3, 32, 32), options),
    ):
        has_bn = any(isinstance(m, torch.nn.BatchNorm2d) for m in module.modules())
        assert has_bn is batch_norm


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("size", [32, 64])
def test_resnet_channels_last_matches_contiguous(size: int, train: bool) -> None:
    torch.manual_seed(0)
    shape = (3, size, size)
    encoder = build_encoder("resnet", shape, 4, SMALL["resnet"]).train(train)
    decoder = build_decoder("resnet", 4, shape, SMALL["resnet"]).train(train)
    x = torch.rand(2, *shape)
    with torch.no_grad():
        expected = encoder(x)
        expected_image = decoder(expected)
        encoder = encoder.to(memory_format=torch.channels_last)
        decoder = decoder.to(memory_format=torch.channels_last)
        got = encoder(x.contiguous(memory_format=torch.channels_last))
        got_image = decoder(got)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_image, expected_image, atol=1e-5, rtol=1e-5)


def test_encoder_is_per_image_in_eval_mode() -> None:
    # Leading-dimension flattening must not mix images: encoding a (B, J) stack
    # equals encoding each image alone.
    torch.manual_seed(0)
    encoder = build_encoder("resnet", (3, 32, 32), 4, SMALL["resnet"]).eval()
    x = torch.rand(2, 2, 3, 32, 32)
    with torch.no_grad():
        stacked = encoder(x)
        single = torch.stack([torch.stack([encoder(x[i, j : j + 1])[0] for j in range(2)]) for i in range(2)])
    torch.testing.assert_close(stacked, single, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("num_layers", "batch_norm"), [(1, True), (2, True), (3, False)])
def test_projection_head_shape(num_layers: int, batch_norm: bool) -> None:
    head = ProjectionHead(12, hidden_dim=16, output_dim=5, num_layers=num_layers, batch_norm=batch_norm)
    assert head.output_dim == 5
    assert head(torch.randn(8, 12)).shape == (8, 5)
    assert head(torch.randn(4, 2, 12)).shape == (4, 2, 5)
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == num_layers
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in head.modules()) is (batch_norm and num_layers > 1)


def test_projection_head_defaults_and_errors() -> None:
    head = ProjectionHead(64)
    assert head(torch.randn(4, 64)).shape == (4, 128)
    assert head.hidden_dim == 512
    with pytest.raises(ValueError, match="num_layers"):
        ProjectionHead(8, num_layers=0)
    with pytest.raises(ValueError, match=r"\(\.\.\., 64\)"):
        head(torch.randn(4, 63))


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((1, 28, 28), ("mlp", "mlp")),
        ((1, 8, 8), ("mlp", "mlp")),
        ((3, 32, 32), ("resnet", "resnet")),
        ((3, 64, 64), ("resnet", "resnet")),
        ((1, 64, 64), ("conv", "conv")),
        ((3, 16, 16), ("conv", "conv")),
        ((3, 128, 128), ("conv", "conv")),
    ],
)
def test_default_networks(shape: tuple[int, int, int], expected: tuple[str, str]) -> None:
    assert default_networks(shape) == expected
    for name in expected:
        assert name in ENCODERS and name in DECODERS
