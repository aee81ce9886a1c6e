"""Figures on disk, written atomically and never clobbered; and the model
functions of anomseg 0.1, deprecated for the estimators' own ``save`` and
:func:`anomseg.load_model`.

Model files are :mod:`anomseg.persistence`'s, a layer above io
(``tools/import_graph.py``): these deprecated functions import it when
called, each import marked as the exception it is, until their removal in
anomseg 0.3.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from ._atomic import atomic_write

__all__ = ["load_model", "load_torch_model", "save_figure", "save_model", "save_torch_model"]


def _deprecated(old, new):
    warnings.warn(
        f"anomseg.io.{old} is deprecated since anomseg 0.2 and will be removed in 0.3; use {new}.",
        FutureWarning,
        stacklevel=3,
    )


def save_model(estimator, path, *, overwrite=False):
    """Save a fitted estimator or pipeline as a joblib pickle, atomically.

    .. deprecated:: 0.2
        Use ``estimator.save(path, format="pickle")``, or, to share a model,
        the safe format of ``estimator.save(path)``.
    """
    from ..persistence._format import write_pickle  # upward: deprecated, removed in 0.3

    _deprecated("save_model", "estimator.save(path, format='pickle')")
    return write_pickle(estimator, path, overwrite=overwrite)


def load_model(path, *, allow_pickle=False):
    """Load a model file: a safe file, or a pickle with ``allow_pickle=True``.

    .. deprecated:: 0.2
        Use :func:`anomseg.load_model`.

    .. versionchanged:: 0.2
        Pickles, which run any code they name, need ``allow_pickle=True``:
        this function no longer loads them unasked.
    """
    from ..persistence import load_model as _load_model  # upward: deprecated, removed in 0.3

    _deprecated("load_model", "anomseg.load_model(path)")
    return _load_model(path, allow_pickle=allow_pickle)


def save_torch_model(estimator, path, *, overwrite=False):
    """Save a fitted estimator in the safe format.

    .. deprecated:: 0.2
        Use ``estimator.save(path)``.
    """
    _deprecated("save_torch_model", "estimator.save(path)")
    return estimator.save(path, format="safe", overwrite=overwrite)


def load_torch_model(path, *, device=None):
    """Load an estimator saved in the safe format; never a pickle.

    .. deprecated:: 0.2
        Use :func:`anomseg.load_model`.
    """
    from ..persistence import load_model as _load_model  # upward: deprecated, removed in 0.3

    _deprecated("load_torch_model", "anomseg.load_model(path)")
    return _load_model(path, device=device)


def save_figure(figure, path, *, overwrite=False, dpi=120):
    """Save a matplotlib figure atomically (format from the file suffix)."""
    suffix = Path(path).suffix
    return atomic_write(
        path,
        lambda tmp: figure.savefig(tmp, dpi=dpi, format=suffix.lstrip(".") or None),
        overwrite=overwrite,
        suffix=suffix,
    )
