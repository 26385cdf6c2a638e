"""pyproject.toml ships every subpackage: a non-editable install must not lack one.

The package-dir mapping puts ``models/`` and ``inference/`` inside ``pssl``; the
``packages`` list must name every folder below the three roots that holds an
``__init__.py``. The slow test builds a real non-editable install into a
temporary folder and imports every subpackage from there.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def setuptools_table() -> dict:
    from setuptools.config.pyprojecttoml import read_configuration  # its own TOML reader, any Python

    return read_configuration(ROOT / "pyproject.toml", expand=False)["tool"]["setuptools"]


def packages_on_disk() -> set[str]:
    """Dotted names of every folder with an ``__init__.py`` under each mapped root."""
    found = set()
    for package, folder in setuptools_table()["package-dir"].items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            relative = init.parent.relative_to(base).parts
            if "__pycache__" in relative:
                continue
            found.add(".".join((package, *relative)))
    return found


def test_every_subpackage_is_listed() -> None:
    listed = set(setuptools_table()["packages"])
    on_disk = packages_on_disk()
    assert {"pssl.evaluation", "pssl.models", "pssl.inference", "pssl.datasets"} <= on_disk
    missing = sorted(on_disk - listed)
    assert not missing, f"pyproject.toml [tool.setuptools] packages lacks {missing}"
    assert not sorted(listed - on_disk), f"listed packages without a folder: {sorted(listed - on_disk)}"


@pytest.mark.slow
def test_non_editable_install_has_every_subpackage(tmp_path: Path) -> None:
    source, target = tmp_path / "source", tmp_path / "site"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in set(setuptools_table()["package-dir"].values()):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    pytest.importorskip("wheel", reason="a non-isolated build needs wheel (pip install wheel)")
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            ".",
        ],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    # -S: no .pth files, so the editable install of this checkout cannot answer the imports.
    libraries = [p for p in sys.path if p.endswith("site-packages")]
    names = sorted(packages_on_disk())
    code = (
        "import importlib, pathlib, sys\n"
        f"sys.path[:0] = [{str(target)!r}, *{libraries!r}]\n"
        f"for name in {names!r}:\n"
        "    module = importlib.import_module(name)\n"
        f"    assert module.__file__.startswith({str(target)!r}), (name, module.__file__)\n"
        "import pssl.recipes\n"
        "assert list(pathlib.Path(pssl.recipes.__file__).parent.glob('*.json'))\n"
        "print('imported', len(sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
