"""Find every public estimator of the package (for the common tests)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

__all__ = ["all_estimators"]

_SKIPPED_PACKAGES = {"anomseg.cli", "anomseg.utils"}


def all_estimators():
    """Return ``(name, class)`` of every public, concrete
    :class:`~anomseg.base.BaseAnomalySegmenter` subclass in anomseg, sorted
    by name. Importing the subpackages may import torch."""
    import anomseg
    from anomseg.base import BaseAnomalySegmenter

    found = {}
    for info in pkgutil.iter_modules(anomseg.__path__, "anomseg."):
        if not info.ispkg or info.name in _SKIPPED_PACKAGES:
            continue
        module = importlib.import_module(info.name)
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseAnomalySegmenter)
                and not inspect.isabstract(obj)
                and not name.startswith("_")
            ):
                found[name] = obj
    return sorted(found.items())
