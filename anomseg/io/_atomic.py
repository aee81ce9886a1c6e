"""Atomic, no-clobber, crash-consistent file writing shared by every writer
of anomseg.

A file is written to a temporary file beside its target, flushed to disk
(``fsync``), then linked (no-clobber) or renamed into place, and the folder
is flushed too, so that after a crash or a power loss the target is either
the old file, or absent, or the whole new one. The temporary files are
named ``.anomseg-tmp-PID-NAME-XXXXXXXX.tmp`` (or the writer's suffix): a
process killed outright (SIGKILL, the out-of-memory killer, a lost cluster
node), which cannot clean up, leaves them behind, and the next write into
that folder, by any anomseg process, removes those whose process ``PID`` is no longer alive.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import signal
import tempfile
import threading
from pathlib import Path

from ..exceptions import DiskFullError

__all__ = ["atomic_write", "atomic_write_all"]

#: The start of the name of every temporary file of an atomic write.
TEMP_PREFIX = ".anomseg-tmp-"

#: The characters of a target's name kept in its temporary file's name
#: (which only helps a reader; the name's limit is 255 bytes).
_NAME_KEPT = 64

_TEMPORARY = re.compile(re.escape(TEMP_PREFIX) + r"(\d+)-")

#: Folders swept of dead writers' temporary files by this process already
#: (once is enough: later leftovers come from processes killed since, whose
#: temporaries the next run sweeps).
_swept = set()


def _read_umask():
    # os.umask can only be read by setting it; do it once, at import, rather
    # than on every save where another thread could create files meanwhile.
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_read_umask()


def pid_alive(pid):
    """Whether a process ``pid`` runs on this machine (one of another user
    counts: it may not be signalled, but it is alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:  # no way to tell (a platform without signals): keep it
        return True
    return True


def writer_pid(name, prefix):
    """The process id in ``name`` (``PREFIX + PID + "-" ...``), or None."""
    if not name.startswith(prefix):
        return None
    head = name[len(prefix) :].split("-", 1)[0]
    return int(head) if head.isdigit() else None


def remove_stale_temporaries(folder):
    """Remove the temporary files that atomic writes into ``folder`` left
    when their process died without cleaning up (SIGKILL, a power loss):
    those whose writer's process is no longer alive.

    A live process's temporaries are kept, so that a writer running
    meanwhile, in this process or another, is never disturbed; a process id
    reused since by another process keeps its dead writer's files until a
    later sweep. (Processes on other machines that share the folder look
    alive or dead by this machine's process ids; the folder lock of
    :func:`~anomseg.cohort.predict_cohort` keeps two runs apart.)

    Returns
    -------
    removed : list of pathlib.Path
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        pid = writer_pid(entry.name, TEMP_PREFIX)
        if pid is None or pid == os.getpid() or pid_alive(pid):
            continue
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    _swept.add(os.path.realpath(folder))
    return removed


def fsync_folder(folder):
    """Flush a folder's entries (a link, a rename) to disk where the
    platform allows it (not on Windows; some file systems refuse)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- a full disk -----------------------------------------------------------------
def free_bytes(path):
    """Bytes free to this user on the file system of ``path`` (or of its
    closest existing folder), or None where unknown."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def is_disk_full(exc):
    """Whether an exception, or one that caused it, is a full disk or quota
    (ENOSPC, EDQUOT)."""
    full = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in full:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def disk_full_error(path, needed, what=None):
    """A :class:`~anomseg.exceptions.DiskFullError` (errno ENOSPC) whose
    message names ``path``, the bytes it needs (an estimate, or at least
    what was written when it failed) and the bytes free, in one line."""
    free = free_bytes(path)
    text = (
        f"no space left on the device of '{path}'"
        + (f" ({what})" if what else "")
        + f": it needs about {_size(needed)}"
        + (f", {_size(free)} free" if free is not None else "")
        + "; free some space or write elsewhere, then rerun."
    )
    return DiskFullError(errno.ENOSPC, text)


def _size(n):
    n = int(n)
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n} bytes ({n / scale:.3g} {unit})"
    return f"{n} bytes"


# -- writing ---------------------------------------------------------------------
def atomic_write(path, write, *, overwrite=False, suffix="", size=0):
    """Create ``path`` atomically with ``write(temporary_path)``.

    ``write`` fills a temporary file in the target's directory, which is then
    flushed to disk and linked (no-clobber) or, with ``overwrite=True``,
    renamed into place. An interrupted or failed write leaves neither a
    half-written target nor the temporary file; one killed outright
    (SIGKILL) leaves a temporary file that the next write into the folder
    removes (see the module's notes).

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
    size : int, default=0
        The bytes the file will hold, where the writer knows them: a full
        disk says it needs at least these.

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
    DiskFullError
        An OSError (errno ENOSPC), if the disk is full: its message names
        the path, the bytes written when it failed and the bytes free.
    """
    return atomic_write_all([(path, write, suffix)], overwrite=overwrite, sizes=[size])[0]


def atomic_write_all(items, *, overwrite=False, sizes=None):
    """Create several files as one: all of them, or none.

    Every file is first written to a temporary file beside its target and
    flushed to disk; only when all are complete are they linked (or, with
    ``overwrite=True``, renamed) into place, with SIGINT and SIGTERM held
    back for those few system calls, and their folders flushed, so that an
    interrupted run leaves either every target or none of them, and no
    temporary file. A process killed outright between two links (SIGKILL)
    cannot keep that promise: it leaves some targets and the temporary
    files, which say by their name which process wrote them (see the
    module's notes); :func:`~anomseg.cohort.predict_cohort` completes such
    a half pair on its next run.

    Parameters
    ----------
    items : list of (path, write, suffix)
        Each target, the ``write(tmp_path)`` that fills it and the suffix of
        its temporary file (see :func:`atomic_write`).
    overwrite : bool, default=False
        Whether to replace existing targets.
    sizes : list of int or None, default=None
        The bytes each file will hold, where the writer knows them (see
        :func:`atomic_write`).

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
    DiskFullError
        If the disk is full (see :func:`atomic_write`).
    """
    paths = [Path(path) for path, _, _ in items]
    for path in paths:
        if not path.parent.is_dir():
            raise FileNotFoundError(
                f"Cannot save '{path}': directory '{path.parent}' does not exist."
            )
        if not overwrite and os.path.lexists(path):
            raise _exists(path)
    folders = list(dict.fromkeys(path.parent for path in paths))
    for folder in folders:
        if os.path.realpath(folder) not in _swept:
            remove_stale_temporaries(folder)
    temporaries = []
    sizes = sizes or [0] * len(items)
    try:
        for path, (_, write, suffix), size in zip(paths, items, sizes):
            prefix = f"{TEMP_PREFIX}{os.getpid()}-{path.name[:_NAME_KEPT]}-"
            # A name with an extension: torch.save refuses a file whose name
            # is all leading dot and no stem ("invalid file name").
            fd, tmp = tempfile.mkstemp(suffix=suffix or ".tmp", prefix=prefix, dir=path.parent)
            temporaries.append(tmp)
            os.close(fd)
            os.chmod(tmp, _FILE_MODE)
            try:
                write(tmp)
                _fsync_file(tmp)
            except Exception as exc:
                # The writer's own error (torch's zip writer says "unexpected
                # pos") hides a full disk: say so, in the user's words.
                if is_disk_full(exc) or free_bytes(path.parent) == 0:
                    written = os.path.getsize(tmp) if os.path.exists(tmp) else 0
                    raise disk_full_error(path, max(written, size, 1)) from exc
                raise
        with _signals_held():
            _commit(paths, temporaries, overwrite)
    finally:
        for tmp in temporaries:
            if os.path.lexists(tmp):
                os.unlink(tmp)
    for folder in folders:
        fsync_folder(folder)
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
