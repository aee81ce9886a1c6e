"""The atomic writer's crash consistency: temporaries named with their
writer's process id and swept once it is dead, data flushed to disk before
the link, and a full disk said in one line."""

import errno
import os
import shutil
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest

from anomseg.io import atomic_write


@pytest.fixture(scope="module")
def dead_pid():
    """The id of a process that has ended."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_dead_writers_temporaries_are_removed_by_the_next_write(tmp_path, dead_pid):
    dead = tmp_path / f".anomseg-tmp-{dead_pid}-m.anomseg-abcd1234"
    alive = tmp_path / f".anomseg-tmp-{os.getppid()}-m.anomseg-abcd1234"  # still writing
    users = tmp_path / ".m.anomseg.notes"
    for path in (dead, alive, users):
        path.write_bytes(b"x")
    atomic_write(tmp_path / "new.txt", lambda tmp: Path(tmp).write_text("ok"))
    assert not dead.exists()
    assert alive.exists() and users.exists()
    assert (tmp_path / "new.txt").read_text() == "ok"


def test_the_file_and_its_folder_are_flushed_to_disk(tmp_path, monkeypatch):
    flushed, fsync = [], os.fsync

    def record(fd):
        flushed.append(os.path.realpath(f"/proc/self/fd/{fd}") if sys.platform == "linux" else fd)
        return fsync(fd)

    monkeypatch.setattr(os, "fsync", record)
    target = atomic_write(tmp_path / "m.txt", lambda tmp: Path(tmp).write_text("ok"))
    assert len(flushed) == 2
    if sys.platform == "linux":
        assert Path(flushed[0]).name.startswith(f".anomseg-tmp-{os.getpid()}-m.txt-")
        assert flushed[1] == str(target.parent)


def test_a_full_disk_names_the_path_and_leaves_no_temporary(tmp_path):
    def full(tmp):
        Path(tmp).write_bytes(b"x" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(
        OSError, match=r"no space left on the device of '.*m\.anomseg'.*bytes"
    ) as e:
        atomic_write(tmp_path / "m.anomseg", full)
    assert e.value.errno == errno.ENOSPC
    assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_a_writer_that_hides_a_full_disk_is_still_said_to_fill_it(tmp_path, monkeypatch):
    """torch's zip writer fails with "unexpected pos 64 vs 0" on a full disk."""
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(100, 100, 0))

    def torch_like(tmp):
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")

    with pytest.raises(OSError, match=r"no space left.*m\.anomseg.*0 bytes free"):
        atomic_write(tmp_path / "m.anomseg", torch_like)
    assert list(tmp_path.iterdir()) == []


def test_a_target_without_an_extension_can_be_written_by_torch(tmp_path):
    """torch.save refuses a file name that is all leading dot ("invalid file
    name"): the temporary file keeps an extension even when the target
    (``anomseg fit -o model``) has none."""
    import torch

    path = atomic_write(tmp_path / "model", lambda tmp: torch.save({"a": 1}, tmp))
    assert torch.load(path, weights_only=True) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
