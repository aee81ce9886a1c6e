"""What anomseg wrote in an output folder, and who is writing there now.

:class:`OutputRecord` is a small JSON file in the output folder,
``anomseg-outputs.json``, written atomically, that lists every output file
anomseg wrote there: the scan it comes from, the identity of the model that
scored it, and, once written, its size and modification time. A file at an
output's path that the record does not list (or whose size or time differ:
replaced since) is someone else's, and is never replaced.

The record is updated in two steps, so that a run killed at any point
(SIGKILL, a power loss) leaves a folder whose next run knows what is its
own: before any scan is written, every output the run may write is listed
as ``"pending"``; as scans are written (every minute, and at the end), their
outputs become ``"written"``, and the pending outputs that never appeared
are dropped. A file found at a pending path was written by that run (its
map without its mask, say, when it was killed between the two), so a rerun
redoes or keeps it without asking for ``overwrite``.

:func:`folder_lock` keeps two runs out of one folder at a time.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from pathlib import Path

from ._atomic import atomic_write, pid_alive

__all__ = ["MANIFEST_NAME", "OutputRecord", "folder_lock"]

#: The name of the record of a folder's outputs.
MANIFEST_NAME = "anomseg-outputs.json"

_FORMAT = "anomseg output record 1"


class OutputRecord:
    """anomseg's record of the files it wrote in an output folder.

    Parameters
    ----------
    folder : str or path-like
        The output folder; the record is ``folder/anomseg-outputs.json``,
        and it names the outputs relative to the folder (those of
        subfolders too).

    Attributes
    ----------
    path : pathlib.Path
        The record's file.
    entries : dict
        By output path relative to ``folder``: ``scan``, ``model`` (its
        identity), ``state`` (``"pending"`` or ``"written"``) and, once
        written, ``size`` and ``mtime_ns``.

    Raises
    ------
    ValueError
        If a file of the record's name exists that anomseg did not write.
    """

    def __init__(self, folder):
        self.folder = Path(folder)
        self.path = self.folder / MANIFEST_NAME
        self.entries = {}
        self._saved = None
        if os.path.lexists(self.path):
            self.entries = self._read()

    def _read(self):
        try:
            text = self.path.read_text(errors="surrogateescape")
            content = json.loads(text)
        except (OSError, ValueError):
            content = None
        if not (isinstance(content, dict) and content.get("format") == _FORMAT):
            raise ValueError(
                f"'{self.path}' exists and is not anomseg's record of its outputs; "
                "it is left alone: move it away or choose another output folder."
            )
        outputs = content.get("outputs", {})
        entries = {k: v for k, v in outputs.items() if isinstance(v, dict)}
        self._saved = copy.deepcopy(entries)
        return entries

    def key(self, target):
        """The record's name of an output path."""
        return Path(os.path.relpath(target, self.folder)).as_posix()

    def owner(self, target):
        """The entry of an existing output that anomseg wrote (listed as
        pending, or written with the size and time it still has), else
        None."""
        entry = self.entries.get(self.key(target))
        if entry is None:
            return None
        if entry.get("state") == "pending":
            return entry
        try:
            stat = os.stat(target)
        except OSError:
            return None
        if (stat.st_size, stat.st_mtime_ns) != (entry.get("size"), entry.get("mtime_ns")):
            return None  # replaced since
        return entry

    def files(self):
        """The paths of every output recorded, whether or not it exists."""
        return [self.folder / key for key in self.entries]

    def mark_pending(self, targets, scan, model):
        """List ``targets`` as outputs that this run may write."""
        for target in targets:
            self.entries[self.key(target)] = {
                "scan": str(scan),
                "model": model,
                "state": "pending",
            }

    def mark_written(self, targets, scan, model):
        """List ``targets``, as they are now on disk, as written."""
        for target in targets:
            stat = os.stat(target)
            self.entries[self.key(target)] = {
                "scan": str(scan),
                "model": model,
                "state": "written",
                "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns,
            }

    def forget_missing(self, targets):
        """Drop the entries of ``targets`` that do not exist."""
        for target in targets:
            if not os.path.lexists(target):
                self.entries.pop(self.key(target), None)

    def save(self):
        """Write the record atomically (and flushed to disk), unless its
        entries are those the file holds already (a rerun that skips every
        scan writes nothing: the writer's pid, which the file holds too, is
        not a reason to write); a record of nothing is removed, so that a
        run that wrote nothing leaves nothing."""
        if not self.entries:
            if self._saved is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
                self._saved = None
            return
        if self.entries == self._saved:
            return
        content = {"format": _FORMAT, "pid": os.getpid(), "outputs": self.entries}
        data = (json.dumps(content, indent=1, sort_keys=True) + "\n").encode(
            "utf-8", "surrogateescape"
        )
        atomic_write(
            self.path, lambda tmp: Path(tmp).write_bytes(data), overwrite=True, size=len(data)
        )
        self._saved = copy.deepcopy(self.entries)


def _writer_pid(folder):
    """The process id that last wrote a folder's record, or None."""
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        text = (Path(folder) / MANIFEST_NAME).read_text(errors="surrogateescape")
        return int(json.loads(text)["pid"])
    return None


@contextlib.contextmanager
def folder_lock(folder, command="predict"):
    """Hold an exclusive lock on ``folder`` for the block, or refuse at once.

    The lock is ``flock`` on the folder itself, so no lock file is left
    behind, and the system releases it when its process ends, however it
    ends (SIGKILL included). Where the platform or the file system has no
    such locks (Windows, some network file systems), the block runs unlocked.

    Raises
    ------
    BlockingIOError
        If another process holds the lock: its one-line message names the
        folder and, where the record of outputs says it, that process's id.
    """
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _writer_pid(folder)
            who = f" (pid {pid})" if pid and pid != os.getpid() and pid_alive(pid) else ""
            raise BlockingIOError(
                f"another anomseg {command}{who} is writing to '{folder}'; wait for it "
                "to end, or write to another folder."
            ) from None
        except OSError:  # a file system without locks: run unlocked
            pass
        yield
    finally:
        os.close(fd)
