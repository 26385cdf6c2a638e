"""Registries coerce command-line strings by annotation; the config parser reads overrides."""

from __future__ import annotations

from typing import Literal

import pytest

from pssl.config import Component, Config, ConfigError, apply_overrides, parse_overrides
from pssl.registry import Registry


def make_registry() -> Registry:
    reg: Registry = Registry("widget")

    @reg.register("plain", help="a function factory")
    def plain(size: int, *, scale: float = 1.0, flag: bool = False, sizes: tuple[int, ...] = (1,)) -> dict:
        return {"size": size, "scale": scale, "flag": flag, "sizes": sizes}

    @reg.register("klass", help="a class factory")
    class Klass:
        note: str  # a class attribute annotation must not be mistaken for an option

        def __init__(self, *, mode: Literal["a", "b"] = "a", scale: float = 2.0) -> None:
            self.mode, self.scale = mode, scale

    return reg


def test_function_options_are_coerced_from_strings() -> None:
    built = make_registry().build("plain", {"scale": "2.5", "flag": "true", "sizes": "3,4"}, size=7)
    assert built == {"size": 7, "scale": 2.5, "flag": True, "sizes": (3, 4)}


def test_class_options_are_coerced_from_init_annotations() -> None:
    built = make_registry().build("klass", {"scale": "99.5", "mode": "b"})
    assert built.scale == 99.5 and built.mode == "b"


def test_unknown_name_lists_accepted() -> None:
    with pytest.raises(ValueError, match="unknown widget 'nope'; accepted: plain, klass"):
        make_registry().entry("nope")


def test_unknown_option_lists_accepted() -> None:
    with pytest.raises(ValueError, match="no option 'colour'.*scale"):
        make_registry().build("klass", {"colour": "red"})


def test_framework_argument_is_not_a_user_option() -> None:
    with pytest.raises(ValueError, match="no option 'size'"):
        make_registry().build("plain", {"size": "3"}, size=1)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"scale": "big"}, "expected a number"),
        ({"flag": "maybe"}, "true or false"),
        ({"sizes": "1,x"}, "integer"),
    ],
)
def test_bad_values_name_the_option(options: dict, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        make_registry().build("plain", options, size=1)


def test_literal_rejects_other_values() -> None:
    with pytest.raises(ValueError, match="'c' is not one of"):
        make_registry().build("klass", {"mode": "c"})


def test_overrides_round_trip() -> None:
    tokens = [
        "model=vae",
        "likelihood=bernoulli",
        "likelihood.scale=99.5",
        "epochs=3",
        "resume=true",
        "lr=1e-3",
    ]
    config = apply_overrides(Config(), parse_overrides(tokens))
    assert config.model == Component("vae")
    assert config.likelihood == Component("bernoulli", {"scale": "99.5"})
    assert (config.epochs, config.resume, config.lr) == (3, True, 1e-3)
    assert Config.from_dict(config.to_dict()) == config


def test_renaming_a_component_clears_its_options_but_same_name_keeps_them() -> None:
    config = apply_overrides(Config(), parse_overrides(["prior=gaussian", "prior.scale=2"]))
    assert apply_overrides(config, {"prior": "gaussian"}).prior.options == {"scale": "2"}
    assert apply_overrides(config, {"prior": "flat"}).prior.options == {}


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        (["epochs"], "malformed override"),
        (["=3"], "empty key"),
        (["colour=red"], "unknown override key 'colour'"),
        (["epochs.x=1"], "COMPONENT.OPTION"),
        (["epochs=ten"], "expected an integer"),
        (["epochs=-1"], "positive integer"),
        (["epochs=0"], "epochs must be a positive integer"),
        (["out="], "out= names no folder"),
        (["out=none"], "out=none names no folder"),
        (["lr=nan"], "lr: expected a finite number"),
        (["checkpoint_seconds=inf"], "checkpoint_seconds: expected a finite number"),
        (["batch_size=0"], "positive integer"),
        (["nonfinite=ignore"], "'stop' or 'skip'"),
    ],
)
def test_bad_overrides_raise_config_error(tokens: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        apply_overrides(Config(), parse_overrides(tokens))
