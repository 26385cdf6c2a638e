"""Property: any override string either parses into a valid Config or raises ConfigError, never anything else.

``parse_overrides`` + ``apply_overrides`` are what ``pssl train key=value ...``
runs first; the CLI turns a :class:`~pssl.config.ConfigError` into a one-line
message and exit code 2, so any other exception there would be a traceback.
Hypothesis draws tokens from a grammar close to real overrides (known keys,
component options, typed-looking values, junk) as well as arbitrary text.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pssl.config import (
    COMPONENT_KEYS,
    PLAIN_KEYS,
    Component,
    Config,
    ConfigError,
    apply_overrides,
    parse_overrides,
)

KEYS = st.sampled_from(PLAIN_KEYS + COMPONENT_KEYS)
OPTION_KEYS = st.builds(lambda c, o: f"{c}.{o}", st.sampled_from(COMPONENT_KEYS), st.text(max_size=6))
VALUES = st.one_of(
    st.text(max_size=12),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(
        [
            "",
            "none",
            "None",
            "auto",
            "true",
            "false",
            "nan",
            "inf",
            "-inf",
            "1e400",
            "-0",
            "0x10",
            "1_000",
            "=",
            " ",
        ]
    ),
)
TOKENS = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", KEYS, VALUES),
    st.builds(lambda k, v: f"{k}={v}", OPTION_KEYS, VALUES),
    st.builds(lambda k, v: f"{k}={v}", st.text(max_size=8), VALUES),
    st.text(max_size=20),
)


def assert_valid(config: Config) -> None:
    """A config that parsed is usable: names present, numbers finite and in range."""
    config.validate()
    for key in ("model", "data"):
        assert isinstance(getattr(config, key), Component), key
    for key in ("lr", "adam_eps", "weight_decay"):
        assert math.isfinite(getattr(config, key)), key
    assert 0 <= config.seed < 2**63


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(TOKENS, max_size=6))
def test_overrides_parse_or_raise_config_error(tokens: list[str]) -> None:
    try:
        config = apply_overrides(Config(), parse_overrides(tokens))
    except ConfigError:
        return
    assert_valid(config)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.one_of(KEYS, OPTION_KEYS, st.text(max_size=8)), VALUES, max_size=5))
def test_dict_overrides_parse_or_raise_config_error(overrides: dict[str, str]) -> None:
    try:
        config = apply_overrides(Config(), overrides)
    except ConfigError:
        return
    assert_valid(config)


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.none(), st.integers(), st.floats(), st.booleans(), st.lists(st.integers(), max_size=2)))
def test_non_string_tokens_raise_config_error(token: object) -> None:
    with pytest.raises(ConfigError):
        parse_overrides([token])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        (["epochs"], "malformed override 'epochs'"),
        (["=3"], "empty key"),
        (["nosuch=1"], "unknown override key 'nosuch'"),
        (["epochs=ten"], "epochs: expected an integer, got 'ten'"),
        (["lr=nan"], "lr: expected a finite number, got 'nan'"),
        (["lr=inf"], "lr: expected a finite number, got 'inf'"),
        (["weight_decay=-1"], "weight_decay must be a non-negative finite number"),
        (["seed=99999999999999999999"], "seed must be"),
        (["model=none"], "model cannot be none"),
        (["data="], "data cannot be none"),
        (["model.=1"], "unknown override key 'model.'"),
    ],
)
def test_named_problems(tokens: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        apply_overrides(Config(), parse_overrides(tokens))
