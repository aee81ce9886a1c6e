"""Helpers shared by the data-set loaders."""

from __future__ import annotations

from pathlib import Path

__all__ = ["get_demo_path"]

_DATA_DIR = Path(__file__).resolve().parent / "data"


def get_demo_path(filename=None):
    """Path of the embedded demo data folder, or of one file in it.

    Parameters
    ----------
    filename : str or None, default=None
        A file of the embedded data, such as ``"patient07_flair.nii.gz"``.

    Returns
    -------
    path : pathlib.Path
        The folder when ``filename`` is None, else the file.

    Raises
    ------
    FileNotFoundError
        If ``filename`` is not part of the embedded data.

    See Also
    --------
    load_demo_mslub : Loads the embedded data.

    Examples
    --------
    >>> from anomseg.datasets import get_demo_path
    >>> get_demo_path("ATTRIBUTION.md").name
    'ATTRIBUTION.md'
    """
    if filename is None:
        return _DATA_DIR
    path = _DATA_DIR / filename
    if not path.is_file():
        available = sorted(p.name for p in _DATA_DIR.iterdir())
        raise FileNotFoundError(
            f"'{filename}' is not part of the embedded data in '{_DATA_DIR}'; "
            f"available: {', '.join(available)}."
        )
    return path


def check_directory(path, loader):
    """Return ``path`` as a Path, or raise if it is not a directory."""
    if path is None:
        raise TypeError(f"{loader} needs the path of the data folder; got None.")
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{loader}: no data folder at '{path}'.")
    return path


def check_files(paths, loader):
    """Raise one error naming every missing file of ``paths``."""
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{loader}: missing file{'s' if len(missing) > 1 else ''}: {', '.join(missing)}."
        )


def find_subjects(directory, suffix, loader):
    """Sorted subject ids of the files ``<subject><suffix>`` in ``directory``."""
    subjects = sorted(p.name[: -len(suffix)] for p in directory.glob(f"*{suffix}"))
    if not subjects:
        raise FileNotFoundError(f"{loader}: no '*{suffix}' file in '{directory}'.")
    return subjects


def select_subjects(available, subjects, loader):
    """``subjects`` in the caller's order, checked against ``available``."""
    if subjects is None:
        return list(available)
    if isinstance(subjects, str):
        subjects = [subjects]
    subjects = list(subjects)
    unknown = [s for s in subjects if s not in set(available)]
    if unknown:
        raise ValueError(
            f"'subjects' of {loader} must be among the {len(available)} "
            f"available ones ({', '.join(available[:5])}"
            f"{', ...' if len(available) > 5 else ''}); got unknown "
            f"{', '.join(map(repr, unknown))}."
        )
    if not subjects:
        raise ValueError(f"'subjects' of {loader} is empty.")
    return subjects
