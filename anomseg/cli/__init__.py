"""The ``anomseg`` command line (``anomseg --help``)."""

from ._main import main

__all__ = ["main"]
