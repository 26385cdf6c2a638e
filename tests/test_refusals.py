"""Inputs that used to give a silent wrong run are refused, naming what the user typed.

* every numeric option of every registered component and every numeric field
  refuses NaN and infinity, through the one shared check in
  :func:`pssl.registry.coerce` (a property over the registries, so a new option is
  covered by being registered);
* a refusal raised inside a factory names the option the user typed
  (``model.proj_dim=0``, not the parameter ``output_dim``);
* paired methods refuse unpaired data, and paired data refuses a vertical flip;
  ``epochs=0``, ``out=`` and ``out=none`` are refused;
* the image entry points (``encode``, ``reconstruct``) of every registered method
  check their input as training does: ``uint8`` is converted, ``0..255`` floats,
  NaN and other dtypes are refused with a message.
"""

from __future__ import annotations

import inspect
import math
import typing

import pytest
import torch

from pssl.augment import AUGMENTATIONS
from pssl.cli import main
from pssl.config import _HINTS, PLAIN_KEYS, Config, ConfigError, apply_overrides, parse_overrides
from pssl.datasets import DATASETS
from pssl.evaluation.protocol import PROBES
from pssl.inference.objectives import OBJECTIVES
from pssl.models import LIKELIHOODS, MODELS, PRIORS, VIEW_PRIORS
from pssl.models.build import build_for_data
from pssl.networks import DECODERS, ENCODERS
from pssl.registry import coerce

REGISTRIES = [
    MODELS,
    DATASETS,
    PRIORS,
    VIEW_PRIORS,
    LIKELIHOODS,
    ENCODERS,
    DECODERS,
    AUGMENTATIONS,
    OBJECTIVES,
]


def _numeric(annotation) -> bool:
    if annotation in (float,):
        return True
    return any(_numeric(a) for a in typing.get_args(annotation) if a is not Ellipsis)


def numeric_options() -> list:
    cases = []
    for registry in REGISTRIES:
        for entry in registry.entries():
            hints = entry.type_hints()
            for name, parameter in entry.parameters().items():
                if parameter.default is inspect.Parameter.empty or not _numeric(hints.get(name)):
                    continue
                cases.append(
                    pytest.param(registry, entry.name, name, id=f"{registry.key}={entry.name}.{name}")
                )
    return cases


NUMERIC = numeric_options()


def test_the_property_covers_many_options() -> None:
    assert len(NUMERIC) >= 40, len(NUMERIC)


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "NaN", "Infinity"])
@pytest.mark.parametrize("registry,name,option", NUMERIC)
def test_every_numeric_option_refuses_non_finite(registry, name: str, option: str, bad: str) -> None:
    hints = registry.entry(name).type_hints()
    annotation = hints[option]
    default = registry.entry(name).parameters()[option].default
    # a pair/tuple option gets the bad value in its first place, the rest from the default
    value = bad
    if typing.get_origin(annotation) is tuple or isinstance(default, tuple):
        rest = [str(v) for v in (default[1:] if isinstance(default, tuple) else [1.0])]
        value = ",".join([bad, *rest])
    with pytest.raises((ValueError, TypeError), match=rf"{registry.key}\.{option}: .*finite"):
        registry.resolve_options(name, {option: value})


def test_every_numeric_field_refuses_non_finite() -> None:
    numeric = [k for k in PLAIN_KEYS if _HINTS[k] in (float,) or _numeric(_HINTS[k])]
    assert {"lr", "adam_eps", "weight_decay", "checkpoint_seconds"} <= set(numeric)
    for key in numeric:
        for bad in ("nan", "inf", "-inf"):
            with pytest.raises(ConfigError, match=rf"{key}: expected a finite number"):
                apply_overrides(Config(), parse_overrides([f"{key}={bad}"]))


def test_a_json_nan_is_refused_like_a_typed_one() -> None:
    assert math.isnan(float("nan"))
    with pytest.raises(ValueError, match="augment.crop_scale_min: expected a finite number"):
        AUGMENTATIONS.resolve_options("digits", {"crop_scale_min": float("nan")})
    assert coerce("0.5", float, where="x") == 0.5


@pytest.mark.parametrize(
    "args,expected",
    [
        (["model=simclr", "model.proj_dim=0"], "model=simclr with model.proj_dim=0: "),
        (["augment.crop_scale_min=2"], "augment=digits with augment.crop_scale_min=2: "),
        (["augment.crop_ratio=2,1"], "augment=digits with augment.crop_ratio=2,1: "),
        (["augment.crop_scale_min=nan"], "augment.crop_scale_min: expected a finite number, got 'nan'"),
        (["augment.crop_ratio=nan,1"], "augment.crop_ratio: expected a finite number, got 'nan'"),
        (["likelihood.scale=inf"], "likelihood.scale: expected a finite number, got 'inf'"),
        (["data.val_fraction=nan"], "data.val_fraction: expected a finite number"),
        (["model=clip"], "model=clip needs paired data"),
        (["model=simvae-multimodal"], "model=simvae-multimodal needs paired data"),
        (["model=clip", "data=paired-digits", "augment=digits"], "augment=digits flips views vertically"),
        (["epochs=0"], "epochs must be a positive integer, got 0"),
        (["out="], "out= names no folder"),
        (["out=none"], "out=none names no folder"),
        (["out=  "], "out=   names no folder"),
    ],
)
def test_train_refusals_name_the_option_typed(tmp_path, capsys, monkeypatch, args, expected) -> None:
    monkeypatch.chdir(tmp_path)
    code = main(["train", "data.limit=64", "epochs=1", "progress=false", "device=cpu", *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert expected in err, err
    assert err.strip().count("\n") == 0, err
    assert not list(tmp_path.iterdir()), "a refused run wrote something"


def test_paired_methods_still_train_on_paired_data(tmp_path) -> None:
    code = main(
        ["train", "model=clip", "data=paired-digits", "data.limit=64", "epochs=1", "progress=false"]
        + ["device=cpu", "batch_size=16", f"out={tmp_path / 'run'}", "model.proj_hidden=16"]
    )
    assert code == 0


# --- image entry points ------------------------------------------------------------------------

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module", params=MODELS.names())
def method(request):
    torch.manual_seed(0)
    return build_for_data(request.param, SHAPE).eval()


def entry_points(method) -> list[str]:
    return ["encode", "reconstruct"] if method.generative else ["encode"]


def test_uint8_is_accepted_and_equals_floats_in_unit_range(method) -> None:
    images = torch.randint(0, 256, (3, *SHAPE), dtype=torch.uint8)
    with torch.no_grad():
        for where in entry_points(method):
            call = getattr(method, where)
            assert torch.allclose(call(images), call(images.float() / 255.0), atol=1e-6), where


@pytest.mark.parametrize(
    "images,error,message",
    [
        (torch.full((2, *SHAPE), 255.0), ValueError, r"\[0, 1\].*divide by 255"),
        (torch.full((2, *SHAPE), -0.5), ValueError, r"\[0, 1\]"),
        (torch.full((2, *SHAPE), float("nan")), ValueError, "NaN or infinite"),
        (torch.full((2, *SHAPE), float("inf")), ValueError, "NaN or infinite"),
        (torch.zeros((2, *SHAPE), dtype=torch.int32), TypeError, "uint8 .* or floating point"),
        (torch.zeros((2, *SHAPE), dtype=torch.bool), TypeError, "uint8 .* or floating point"),
        ([[0.0]], TypeError, "must be a torch.Tensor"),
        (torch.zeros(8), ValueError, r"shape \(B, C, H, W\)"),
    ],
    ids=["0-255 floats", "negative", "nan", "inf", "int32", "bool", "list", "1-d"],
)
def test_entry_points_refuse_what_training_refuses(method, images, error, message) -> None:
    for where in entry_points(method):
        with pytest.raises(error, match=message) as caught:
            getattr(method, where)(images)
        assert f"{where}(images)" in str(caught.value)


def test_float64_models_get_float64_inputs() -> None:
    method = build_for_data("vae", SHAPE).double().eval()
    images = torch.randint(0, 256, (2, *SHAPE), dtype=torch.uint8)
    with torch.no_grad():
        assert method.encode(images).dtype == torch.float64
        assert method.encode(images.float() / 255).dtype == torch.float64


def test_probes_registry_keeps_its_name() -> None:
    assert PROBES.key == "probe"


def test_an_identity_link_likelihood_accepts_real_valued_images() -> None:
    from pssl.config import Component

    method = build_for_data("vae", SHAPE, likelihood=Component("gaussian", {"link": "identity"})).eval()
    images = torch.linspace(-3, 3, 2 * 64).reshape(2, *SHAPE)
    with torch.no_grad():
        assert method.encode(images).shape[0] == 2
    sigmoid = build_for_data("vae", SHAPE, likelihood="gaussian").eval()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        sigmoid.encode(images)
