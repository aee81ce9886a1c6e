"""Find every public estimator of the package (for the common tests)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

__all__ = ["all_estimators"]

_SKIPPED_PACKAGES = {"anomseg.cli", "anomseg.utils"}

#: The estimator contract, named rather than imported: it sits in a layer
#: above utils (tools/import_graph.py).
_CONTRACT = "anomseg.base.BaseAnomalySegmenter"


def _follows_contract(cls):
    return any(f"{c.__module__}.{c.__qualname__}" == _CONTRACT for c in cls.__mro__)


def all_estimators():
    """Return ``(name, class)`` of every public, concrete
    :class:`~anomseg.base.BaseAnomalySegmenter` subclass in anomseg, sorted
    by name. Importing the subpackages may import torch."""
    package = Path(__file__).parents[1]
    found = {}
    for info in pkgutil.iter_modules([str(package)], f"{package.name}."):
        if not info.ispkg or info.name in _SKIPPED_PACKAGES:
            continue
        # Every subpackage, by name: what it exports is what is looked for.
        module = importlib.import_module(info.name)
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if (
                inspect.isclass(obj)
                and _follows_contract(obj)
                and not inspect.isabstract(obj)
                and not name.startswith("_")
            ):
                found[name] = obj
    return sorted(found.items())
