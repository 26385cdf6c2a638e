"""Sphinx configuration for the pssl documentation site.

The API reference is generated at build time from the public names of ``pssl``,
``pssl.models`` and ``pssl.inference`` (autosummary, recursive), so moving a module
inside a package needs no edit here.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

project = "pssl"
author = "pssl developers"
copyright = "pssl developers"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_nb",
]

autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = True

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
nb_execution_mode = os.environ.get("PSSL_DOCS_EXECUTE", "cache")
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_execution_cache_path = str(HERE / "_build" / ".jupyter_cache")

html_theme = "furo"
html_title = "pssl"
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
templates_path = ["_templates"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}

# The README's results section shows the claims figures by their repository paths;
# the site serves them from the same relative path below docs/.
_figures = ROOT / "results" / "claims-cpu"
if _figures.is_dir():
    target = HERE / "results" / "claims-cpu"
    target.mkdir(parents=True, exist_ok=True)
    for figure in [*_figures.glob("*.png"), _figures / "claims.md"]:
        if figure.exists():
            shutil.copy2(figure, target / figure.name)

# Public names: a module's ``__all__`` where it has one, else what it defines.
autosummary_ignore_module_all = False
