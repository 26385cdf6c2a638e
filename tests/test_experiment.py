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
        assert saved["training"]["objective"]["name"] == "tempered_elbo"
        assert not saved["training"]["objective"]["is_bound"]
        assert "val_elbo" not in saved["training"]["final_terms_nats_per_item"]
        assert "tempered_elbo" in saved["training"]["val_bits_per_dim_info"]["note"]
    else:
        dims = 2 * 1 * 8 * 8
        elbo = saved["training"]["final_terms_nats_per_item"]["val_elbo"]
        # continuous density on 8-bit data: -ELBO / (D ln 2) + log2(255)
        assert math.isclose(bpd, -elbo / (dims * math.log(2)) + math.log2(255), rel_tol=1e-9)
    assert set(saved) >= {"content", "protocol", "training"}


@pytest.mark.parametrize(
    ("objective", "name", "is_bound"),
    [
        (Component("iwae", {"num_particles": 2}), "iwae", True),
        (Component("renyi", {"alpha": 1.5, "num_particles": 2}), "renyi(alpha=1.5)", False),
    ],
)
def test_metrics_json_names_an_iwae_or_renyi_objective(
    tmp_path: Path, objective: Component, name: str, is_bound: bool
) -> None:
    run_experiment(tiny(tmp_path / "run", likelihood=Component("bernoulli"), objective=objective))
    training = json.loads((tmp_path / "run" / "metrics.json").read_text())["training"]
    assert (training["objective"]["name"], training["objective"]["is_bound"]) == (name, is_bound)
    terms = training["final_terms_nats_per_item"]
    assert "val_elbo" not in terms and "val_objective" in terms  # the summed objective is not an ELBO
    assert (training["val_bits_per_dim"] is not None) == is_bound


@pytest.mark.parametrize(
    ("model", "likelihood", "name", "is_bound"),
    [
        ("simvae", Component("bernoulli"), "elbo", True),
        ("simclr", None, "infonce", False),
    ],
)
def test_metrics_json_names_the_objective_and_its_units(
    tmp_path: Path, model: str, likelihood: Component | None, name: str, is_bound: bool
) -> None:
    run_experiment(tiny(tmp_path / "run", model=Component(model), likelihood=likelihood))
    training = json.loads((tmp_path / "run" / "metrics.json").read_text())["training"]
    objective = training["objective"]
    assert (objective["name"], objective["is_bound"], objective["unit"]) == (name, is_bound, "nats per item")
    terms = training["final_terms_nats_per_item"]
    # "elbo" only for a bound on log p(x); anything else is the objective under its label.
    assert ("val_elbo" in terms) == is_bound and ("val_objective" in terms) == (not is_bound)
    if model == "simclr":
        assert training["val_bits_per_dim"] is None and "infonce" in objective["note"]
    elif is_bound:
        info = training["val_bits_per_dim_info"]
        assert info["discrete_likelihood"] and not info["dequantised"]
        assert info["observed_values_per_item"] == 2 * 1 * 8 * 8
        # Bernoulli on grey digits: the cross-entropy caveat is in metrics.json too.
        assert "cross-entropy" in info["note"]
        assert training["val_bits_per_dim"] == pytest.approx(-terms["val_elbo"] / (128 * math.log(2)))


def test_compare_rows_never_mix_a_bound_and_a_non_bound(tmp_path: Path) -> None:
    from pssl.compare import ComparePlan, flatten, label_objective_columns, write_report

    def metrics(name: str, is_bound: bool, value: float) -> dict:
        key = "val_elbo" if is_bound else "val_objective"
        return {
            "content": {"test": {"linear": {"accuracy": 0.9}}},
            "training": {
                "seconds_per_epoch": 1.0,
                "objective": {"name": name, "is_bound": is_bound, "unit": "nats per item", "note": ""},
                "final_terms_nats_per_item": {key: value, "train_" + key[4:]: value},
            },
        }

    runs = {
        "simvae": metrics("elbo", True, -88.0),
        "vae": metrics("elbo", True, -90.0),
        "simclr": metrics("infonce", False, -4.6),
        "vicreg": metrics("invariance+variance+covariance", False, -20.0),
        "tempered": metrics("tempered_elbo", False, -9000.0),
    }
    old = {"training": {"final_terms_nats_per_item": {"val_elbo": -3.0}}}  # an unlabelled metrics.json
    rows = []
    for model, m in [*runs.items(), ("old", old)]:
        rows.append({"model": model, "seed": 0, **label_objective_columns(flatten(m), m)})
    plan = ComparePlan(models=(*runs, "old"), seeds=(0,), base=Config(), out=tmp_path)
    write_report(plan, rows)
    bound = {"simvae", "vae"}
    table = (tmp_path / "results.md").read_text()
    objective_rows = [line for line in table.splitlines() if "final_terms_nats_per_item" in line]
    assert len(objective_rows) == 5  # elbo, infonce, vicreg's, tempered_elbo, unlabelled: one row each
    columns = [
        c.strip() for c in next(line for line in table.splitlines() if line.startswith("| metric")).split("|")
    ]
    for line in objective_rows:
        cells = dict(zip(columns[2:-1], [c.strip() for c in line.split("|")[2:-1]]))
        filled = {model for model, cell in cells.items() if cell != "-"}
        assert filled <= bound or not (filled & bound), line  # never a bound next to a non-bound
        assert len({rows[[r["model"] for r in rows].index(m)]["objective"] for m in filled}) == 1, line
    assert any("val_elbo (ELBO: bound on log p(x)" in line for line in objective_rows)
    csv_header = (tmp_path / "results.csv").read_text().splitlines()[0]
    assert "val_objective[infonce]" in csv_header and "is_bound" in csv_header
