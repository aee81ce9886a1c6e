"""Atomic, no-clobber file writing shared by every writer of anomseg."""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_all"]


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
    return atomic_write_all([(path, write, suffix)], overwrite=overwrite)[0]


def atomic_write_all(items, *, overwrite=False):
    """Create several files as one: all of them, or none.

    Every file is first written to a temporary file beside its target; only
    when all are complete are they linked (or, with ``overwrite=True``,
    renamed) into place, with SIGINT and SIGTERM held back for those few
    system calls, so that an interrupted run leaves either every target or
    none of them, and no temporary file.

    Parameters
    ----------
    items : list of (path, write, suffix)
        Each target, the ``write(tmp_path)`` that fills it and the suffix of
        its temporary file (see :func:`atomic_write`).
    overwrite : bool, default=False
        Whether to replace existing targets.

    Returns
    -------
    paths : list of pathlib.Path

    Raises
    ------
    FileExistsError
        If a target exists and ``overwrite`` is False (before anything is
        written, or, if another process created it meanwhile, after which
        the targets already linked are removed again).
    FileNotFoundError
        If the directory of a target does not exist.
    """
    paths = [Path(path) for path, _, _ in items]
    for path in paths:
        if not path.parent.is_dir():
            raise FileNotFoundError(
                f"Cannot save '{path}': directory '{path.parent}' does not exist."
            )
        if not overwrite and os.path.lexists(path):
            raise _exists(path)
    temporaries = []
    try:
        for path, (_, write, suffix) in zip(paths, items):
            fd, tmp = tempfile.mkstemp(suffix=suffix, prefix=f".{path.name}.", dir=path.parent)
            temporaries.append(tmp)
            os.close(fd)
            os.chmod(tmp, _FILE_MODE)
            write(tmp)
        with _signals_held():
            _commit(paths, temporaries, overwrite)
    finally:
        for tmp in temporaries:
            if os.path.lexists(tmp):
                os.unlink(tmp)
    return paths


def _exists(path):
    return FileExistsError(f"'{path}' exists; pass overwrite=True to replace it.")


def _commit(paths, temporaries, overwrite):
    """Move every temporary file into place, or, on failure, none."""
    done = []
    try:
        for path, tmp in zip(paths, temporaries):
            if overwrite:
                os.replace(tmp, path)
            else:
                try:
                    # link() fails if the target exists: no check-then-write race.
                    os.link(tmp, path)
                except FileExistsError:
                    raise _exists(path) from None
            done.append(path)
    except BaseException:
        for path in done:
            os.unlink(path)
        raise


@contextlib.contextmanager
def _signals_held():
    """Hold SIGINT and SIGTERM back (Unix, the main thread) until the block
    ends; they are delivered then."""
    held = {signal.SIGINT, signal.SIGTERM}
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not (
        threading.main_thread()
    ):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
