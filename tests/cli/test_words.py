"""Issue 24's words: what the command line says of an optional dependency
that is missing, and names that are not UTF-8, end to end."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from anomseg.cli import main

from .bad_inputs import Fixtures, run_in_process, volume, write


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    return Fixtures(tmp_path_factory.mktemp("fixtures"), run_in_process)


def test_dask_scheduler_without_dask_names_the_extra(fixtures, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import fails
    argv = ["predict", fixtures.model, fixtures.scan, "-o", str(tmp_path / "out")]
    assert main([*argv, "--dask-scheduler", "tcp://127.0.0.1:1", "--no-progress"]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "--dask-scheduler" in line and "pip install 'anomseg[cluster]'" in line
    assert not (tmp_path / "out").exists()  # said before any work


def test_a_name_that_is_not_utf8_is_scored_summarised_and_printed(fixtures, tmp_path):
    name = os.fsdecode(b"caf\xe9.nii.gz")  # a Latin-1 name on a UTF-8 system
    write(tmp_path / name, volume(30))
    write(tmp_path / "plain.nii.gz", volume(31))
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}  # strict, as a UTF-8 terminal
    argv = ["predict", fixtures.model, "--glob", "*.nii.gz", "-o", "out"]
    done = subprocess.run(
        [sys.executable, "-m", "anomseg", *argv, "--no-progress"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert b"caf\xe9.nii.gz: " in done.stdout  # the name's own bytes
    rerun = run_in_process(argv, tmp_path)  # reads the summary back: both skipped
    assert rerun.status == 0 and "2 skipped" in rerun.stderr, rerun.stderr
    summary = (tmp_path / "out" / "summary.csv").read_bytes()
    rows = list(csv.DictReader(summary.decode("utf-8", "surrogateescape").splitlines()))
    assert [(row["scan"], row["status"]) for row in rows] == [
        (name, "done"),
        ("plain.nii.gz", "done"),
    ]
    assert Path(tmp_path / "out" / os.fsdecode(b"caf\xe9_mask.nii.gz")).is_file()


def test_a_name_with_a_newline_is_named_whole_in_its_error(fixtures, tmp_path):
    """An error line names the file with its newline escaped, rather than cut
    at it (the rest of the line, the reason, was lost)."""
    import numpy as np

    name = "two\nlines.nii.gz"
    write(tmp_path / name, np.full((8, 8, 4), 3.0, np.float32))  # constant: fails
    write(tmp_path / "plain.nii.gz", volume(31))
    done = run_in_process(["predict", fixtures.model, "--glob", "*.nii.gz", "-o", "out"], tmp_path)
    assert done.status == 1
    [line] = [line for line in done.stderr.splitlines() if "error" in line]
    assert "'two\\nlines.nii.gz'" in line and "constant" in line, done.stderr
    assert "1 done, 0 skipped, 1 failed" in done.stderr


def test_a_list_holds_any_name_and_refuses_a_binary_file(fixtures, tmp_path):
    """``ls > cohort.txt`` may hold a name that is not UTF-8 and end its lines
    with CRLF (a list written on Windows); a scan given as the list is no
    text at all."""
    name = os.fsdecode(b"caf\xe9.nii.gz")
    write(tmp_path / name, volume(30))
    write(tmp_path / "plain.nii.gz", volume(31))
    (tmp_path / "cohort.txt").write_bytes(b"caf\xe9.nii.gz\r\nplain.nii.gz\r\n")
    argv = ["predict", fixtures.model, "--list", "cohort.txt", "-o", "out"]
    done = run_in_process(argv, tmp_path)
    assert done.status == 0, done.stderr
    assert (tmp_path / "out" / os.fsdecode(b"caf\xe9_mask.nii.gz")).is_file()
    argv = ["predict", fixtures.model, "--list", "plain.nii.gz", "-o", "out2"]
    done = run_in_process(argv, tmp_path)
    assert done.status == 1 and "NUL bytes" in done.stderr, done.stderr
    assert not (tmp_path / "out2").exists()
