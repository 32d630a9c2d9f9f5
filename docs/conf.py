"""Sphinx configuration: build with ``python -m sphinx -W -b html docs docs/_build/html``."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "fastjmt"
author = "fastjmt developers"
release = "0.1.0"
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "examples", "results"]  # results/: tables included by quality.md
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
autodoc_member_order = "bysource"
autodoc_typehints = "none"
myst_heading_anchors = 3
html_theme = "alabaster"
suppress_warnings = ["myst.header"]
