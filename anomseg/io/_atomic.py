"""Atomic, no-clobber file writing shared by every writer of anomseg."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write"]


def _read_umask():
    # os.umask can only be read by setting it; do it once, at import, rather
    # than on every save where another thread could create files meanwhile.
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_read_umask()


def atomic_write(path, write, *, overwrite=False, suffix=""):
    """Create ``path`` atomically with ``write(temporary_path)``.

    ``write`` fills a temporary file in the target's directory, which is then
    linked (no-clobber) or, with ``overwrite=True``, renamed into place. An
    interrupted or failed write leaves neither a half-written target nor the
    temporary file.

    Parameters
    ----------
    path : str or path-like
        The target. Its directory must exist.
    write : callable
        ``write(tmp_path: str)`` writes the complete file to ``tmp_path``.
    overwrite : bool, default=False
        Whether to replace an existing target.
    suffix : str, default=""
        Suffix of the temporary file, for writers that infer the format from
        the file name (``".nii.gz"``, ``".png"``).

    Returns
    -------
    path : pathlib.Path

    Raises
    ------
    FileExistsError
        If the target exists and ``overwrite`` is False, even if another
        process created it during the write.
    FileNotFoundError
        If the target's directory does not exist.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"Cannot save '{path}': directory '{path.parent}' does not exist.")
    exists = FileExistsError(f"'{path}' exists; pass overwrite=True to replace it.")
    if not overwrite and os.path.lexists(path):
        raise exists
    fd, tmp = tempfile.mkstemp(suffix=suffix, prefix=f".{path.name}.", dir=path.parent)
    try:
        os.close(fd)
        os.chmod(tmp, _FILE_MODE)
        write(tmp)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                # link() fails if the target exists: no check-then-write race.
                os.link(tmp, path)
            except FileExistsError:
                raise exists from None
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return path
