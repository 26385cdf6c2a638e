"""run_experiment: metrics.json content and the bits-per-dimension rule."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pssl.config import Component, Config
from pssl.experiment import run_experiment


def tiny(out: Path, **changes) -> Config:
    base = dict(
        model=Component("simvae"),
        data=Component("digits", {"limit": 160}),
        encoder=Component("mlp", {"hidden": "32"}),
        decoder=Component("mlp", {"hidden": "32"}),
        latent_dim=4,
        batch_size=32,
        epochs=1,
        lr=1e-3,
        out=str(out),
        progress=False,
    )
    base.update(changes)
    return Config(**base)


@pytest.mark.parametrize(
    ("likelihood", "tempered"),
    [(Component("gaussian-learned"), False), (Component("bernoulli", {"scale": "99.5"}), True)],
)
def test_bits_per_dim_only_for_untempered_elbo(tmp_path: Path, likelihood: Component, tempered: bool) -> None:
    metrics = run_experiment(tiny(tmp_path / "run", likelihood=likelihood))
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["training"] == json.loads(json.dumps(metrics["training"]))
    bpd = saved["training"]["val_bits_per_dim"]
    if tempered:
        assert bpd is None
    else:
        dims = 2 * 1 * 8 * 8
        elbo = saved["training"]["final_terms_nats_per_item"]["val_elbo"]
        # continuous density on 8-bit data: -ELBO / (D ln 2) + log2(255)
        assert math.isclose(bpd, -elbo / (dims * math.log(2)) + math.log2(255), rel_tol=1e-9)
    assert set(saved) >= {"content", "protocol", "training"}
