"""Suite-wide settings and shared fixtures.

* One torch thread (the tests use tiny tensors, where threads only add overhead).
* ``mnist_root``: the project's shared copy of the MNIST IDX files, found relative to
  the repository root (``../shared/data/mnist`` beside a clone; the nearest
  ``shared/data/mnist`` above the root, so a ``git worktree`` nested one level deeper
  finds it too), or at ``PSSL_TEST_MNIST``. Tests that need it skip when it is
  absent, unless ``PSSL_REQUIRE_MNIST=1`` (as ``.ci/run`` sets), which makes them fail.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_MNIST = Path("shared") / "data" / "mnist"


def find_shared_mnist() -> tuple[Path | None, list[Path]]:
    """``(folder, tried)``: the shared MNIST folder (``None`` if absent) and every path looked at."""
    explicit = os.environ.get("PSSL_TEST_MNIST")
    tried = [Path(explicit).expanduser()] if explicit else [p / SHARED_MNIST for p in REPO_ROOT.parents]
    for folder in tried:
        if (folder / "train-images-idx3-ubyte.gz").is_file() or (
            folder / "train-images-idx3-ubyte"
        ).is_file():
            return folder, tried
    return None, tried


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The shared MNIST folder; skips (or fails, with ``PSSL_REQUIRE_MNIST=1``) when it is missing."""
    folder, tried = find_shared_mnist()
    if folder is None:
        message = "shared MNIST copy not found; tried: " + ", ".join(map(str, tried))
        if os.environ.get("PSSL_REQUIRE_MNIST") == "1":
            pytest.fail(message + " (PSSL_REQUIRE_MNIST=1)")
        pytest.skip(message)
    return folder
