"""Models and figures on disk, written atomically and never clobbered."""

from __future__ import annotations

from pathlib import Path

import joblib

from ._atomic import atomic_write

__all__ = ["load_model", "save_figure", "save_model"]


def save_model(estimator, path, *, overwrite=False):
    """Save a fitted estimator or pipeline with joblib, atomically.

    The file is a pickle: load it only from sources you trust.

    Parameters
    ----------
    estimator : object
        A fitted anomseg estimator or pipeline.
    path : str or path-like
        Target file, conventionally ``*.joblib``.
    overwrite : bool, default=False
        Whether to replace an existing file.

    Returns
    -------
    path : pathlib.Path
    """
    return atomic_write(path, lambda tmp: joblib.dump(estimator, tmp), overwrite=overwrite)


def load_model(path):
    """Load a model written by :func:`save_model` (a pickle: trusted files
    only). Warns if another anomseg version saved it.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If ``path`` does not hold an anomseg model.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No model file at '{path}'.")
    try:
        model = joblib.load(path)
    except Exception as exc:  # pickle raises many types on foreign files
        raise ValueError(f"'{path}' is not a model file written by anomseg: {exc}") from None
    final = model[-1] if hasattr(model, "steps") else model
    if not (hasattr(final, "score_samples") and hasattr(final, "threshold_")):
        raise ValueError(f"'{path}' holds a {type(model).__name__}, not a fitted anomseg model.")
    return model


def save_figure(figure, path, *, overwrite=False, dpi=120):
    """Save a matplotlib figure atomically (format from the file suffix)."""
    suffix = Path(path).suffix
    return atomic_write(
        path,
        lambda tmp: figure.savefig(tmp, dpi=dpi, format=suffix.lstrip(".") or None),
        overwrite=overwrite,
        suffix=suffix,
    )
