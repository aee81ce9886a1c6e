"""Sphinx configuration of the anomseg documentation.

The build runs offline: no intersphinx inventories are fetched, the theme is
Sphinx's built-in alabaster, and the gallery examples run on the data
embedded in anomseg. Build with ``make docs``.
"""

import argparse
import os
import warnings
from pathlib import Path

# The gallery's networks are tiny: one thread runs them as fast as several,
# and several per process slow them down by orders of magnitude on a busy
# machine (as in conftest.py). Set before any example imports torch.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import anomseg
from anomseg.cli._main import build_parser

HERE = Path(__file__).parent

project = "anomseg"
author = "The anomseg developers"
copyright = "The anomseg developers"
version = release = anomseg.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

exclude_patterns = ["_build", "gen_modules/cli_help.rst"]  # included by cli.rst
templates_path = ["_templates"]
nitpicky = False

# -- API reference -------------------------------------------------------------
autosummary_generate = True
autodoc_typehints = "none"  # numpydoc sections already give the types
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False

# -- Gallery -------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "image_scrapers": ("matplotlib",),
    "within_subsection_order": "FileNameSortKey",
    "abort_on_example_error": True,
    "download_all_examples": False,
    "remove_config_comments": True,
    "doc_module": ("anomseg",),
    "backreferences_dir": "gen_modules/backreferences",
    "reference_url": {"anomseg": None},
}


def _format_warning(message, category, filename, lineno, line=None):
    """A warning as ``Category: message``. The gallery pages show what the
    examples warn, and the default format starts with the path of the
    warning's source on the build machine (``make docs`` fails on a page
    that shows one)."""
    return f"{category.__name__}: {message}\n"


warnings.formatwarning = _format_warning

# -- HTML ----------------------------------------------------------------------
html_theme = "alabaster"
html_theme_options = {
    "description": "Unsupervised anomaly segmentation for brain MRI",
    "fixed_sidebar": True,
}
html_static_path = []


def _literal(text):
    return ".. code-block:: none\n\n" + "".join(
        f"   {line}".rstrip() + "\n" for line in text.splitlines()
    )


def _write_cli_help():
    """Write ``anomseg --help`` and the help of every command as
    ``gen_modules/cli_help.rst``, included by cli.rst, so that the page
    follows the parser."""
    os.environ["COLUMNS"] = "80"  # argparse wraps to the terminal otherwise
    parser = build_parser()
    sections = [("anomseg --help", parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            sections += [(f"anomseg {name}", sub) for name, sub in action.choices.items()]
    text = "".join(
        f"``{title}``\n{'-' * (len(title) + 4)}\n\n{_literal(p.format_help())}\n"
        for title, p in sections
    )
    out = HERE / "gen_modules"
    out.mkdir(exist_ok=True)
    target = out / "cli_help.rst"
    if not target.exists() or target.read_text() != text:  # keep builds incremental
        target.write_text(text)


_write_cli_help()


def _skip_foreign_members(app, what, name, obj, skip, options):
    """Skip members that anomseg classes inherit from scikit-learn, torch or
    Python (``get_params``, ``set_output``, metadata routing, the
    ``torch.nn.Module`` methods of the networks, exception attributes): they
    are documented upstream, and their docstrings link into documentation
    that this offline build cannot reach (torch's are not numpydoc)."""
    obj = getattr(obj, "fget", obj)  # a property: where its getter lives
    owner = getattr(obj, "__objclass__", None)  # a C-level descriptor
    module = getattr(owner or obj, "__module__", None) or ""
    if module == "builtins" or module.split(".")[0] in ("sklearn", "torch"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_foreign_members)
