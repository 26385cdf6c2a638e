"""A probe registered outside pssl (here, in this test file) works in `pssl evaluate` and `pssl compare`."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pssl.cli import main
from pssl.evaluation import PROBES, Probe, content_probe_names

TINY = [
    "data=digits",
    "data.limit=200",
    "encoder=mlp",
    "encoder.hidden=32",
    "decoder=mlp",
    "decoder.hidden=32",
    "latent_dim=4",
    "batch_size=32",
    "epochs=1",
    "progress=false",
]


class CentroidProbe(Probe):
    """Nearest class mean (Euclidean), with or without standardising the features (chosen on validation)."""

    name = "centroid"
    tasks = ("classification",)

    def __init__(self, *, standardise: tuple[bool, ...] = (False, True), seed: int = 0) -> None:
        self.standardise = standardise
        self.seed = seed
        self.task = "classification"

    def _fit_one(self, x: np.ndarray, y: np.ndarray, standardise: bool) -> tuple:
        mean, std = x.mean(0), (x.std(0) + 1e-8 if standardise else np.ones(x.shape[1]))
        z = (x - mean) / std
        classes = np.unique(y[y >= 0])
        return mean, std, classes, np.stack([z[y == c].mean(0) for c in classes])

    def _predict(self, model: tuple, x: np.ndarray) -> np.ndarray:
        mean, std, classes, centres = model
        z = (x - mean) / std
        return classes[((z[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)]

    def fit(self, train_x, train_y, val_x, val_y) -> Probe:
        scores = {}
        for flag in self.standardise:
            model = self._fit_one(train_x, train_y, flag)
            scores[flag] = (float((self._predict(model, val_x) == val_y).mean()), model)
        best = max(scores, key=lambda f: scores[f][0])
        self.model_ = scores[best][1]
        self.selected_ = {"standardise": best}
        self.val_score_ = scores[best][0]
        self.diagnostics_ = {"val_by_setting": {str(f): s for f, (s, _) in scores.items()}}
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self._predict(self.model_, x)


@pytest.fixture
def centroid_probe() -> Iterator[None]:
    PROBES.register("centroid", help="nearest class mean (registered by a test)")(CentroidProbe)
    try:
        yield
    finally:
        PROBES._entries.pop("centroid")  # leave the registry as the rest of the suite expects it


def test_a_registered_probe_is_accepted_everywhere(tmp_path: Path, centroid_probe, capsys) -> None:
    assert "centroid" in content_probe_names()
    run = tmp_path / "run"
    assert main(["train", "model=vae", *TINY, f"out={run}"]) == 0
    assert main(["evaluate", str(run), "--probes", "centroid,linear"]) == 0
    content = json.loads((run / "metrics.json").read_text())["content"]
    assert set(content) == {"centroid", "linear"}
    centroid = content["centroid"]
    assert 0.1 < centroid["accuracy"] <= 1.0 and centroid["selected"]["standardise"] in (True, False)
    assert set(centroid["val_by_setting"]) == {"False", "True"}

    out = tmp_path / "cmp"
    assert main(["compare", "models=vae", "seeds=0", "probes=centroid", *TINY, f"out={out}"]) == 0
    with (out / "results.csv").open() as handle:
        (row,) = list(csv.DictReader(handle))
    assert 0.1 < float(row["content.centroid.accuracy"]) <= 1.0
    assert not [k for k in row if k.startswith("content.linear")]


def test_unknown_and_non_content_probes_are_refused(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert main(["train", "model=vae", *TINY, f"out={run}"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--probes", "centroid"]) != 0
    err = capsys.readouterr().err
    assert "unknown probe 'centroid'" in err and "linear, mlp, knn, cluster" in err
    assert main(["evaluate", str(run), "--probes", "ridge"]) != 0  # regression only: no class label
    assert "cannot read a class label" in capsys.readouterr().err
    assert main(["compare", "models=vae", "probes=nosuch", *TINY, f"out={tmp_path / 'c'}"]) != 0
    assert "unknown probe 'nosuch'" in capsys.readouterr().err
