"""``anomseg fit`` and ``predict`` killed outright (SIGKILL) at each commit
point, two runs on one folder, a rerun with another model, a full disk, a
folder matched by its own ``--glob``: a rerun without ``--overwrite``
completes the work, nothing is left orphaned or partial, and no file of the
user's changes.

A kill is injected in a forked child, where ``os.link`` or ``os.replace``
sends SIGKILL to the process at the chosen call, before the call: the
moments between the system calls of a commit that no signal handler sees.
"""

import contextlib
import errno
import io
import json
import multiprocessing
import os
import signal
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from anomseg.cli import main

#: anomseg's record of its outputs in an output folder.
MANIFEST_NAME = "anomseg-outputs.json"

FORK = multiprocessing.get_context("fork")


def _scan(path, seed):
    rng = np.random.default_rng(seed)
    data = np.zeros((24, 24, 8), np.float32)
    data[4:20, 4:20] = rng.normal(100, 10, (16, 16, 8))
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return str(path)


def _quiet(argv):
    """Run the command line in this process: its status and stderr."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        status = main([*map(str, argv), "--no-progress"])
    return status, err.getvalue()


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    scans = [_scan(root / "scans" / f"h{i}.nii.gz", i) for i in range(3)]
    models = []
    for name, fpr in (("m.anomseg", "0.05"), ("other.anomseg", "0.2")):
        fit = ["fit", "--method", "flair-threshold", *scans, "-o", root / name, "--max-fpr", fpr]
        assert _quiet(fit)[0] == 0
        models.append(str(root / name))
    return scans, models


def _kill_at(kind, n):
    """Make this process SIGKILL itself at the ``n``-th call of ``os.link``
    or ``os.replace`` (``kind``), or, for ``"replace-after-links"``, at the
    first ``os.replace`` after two links: after a pair was committed; for
    ``"after-link"``, right after the ``n``-th link."""
    real = {"link": os.link, "replace": os.replace}
    calls = {"link": 0, "replace": 0}

    def patched(name):
        def call(*args, **kwargs):
            calls[name] += 1
            after_pair = kind == "replace-after-links" and name == "replace"
            if (name == kind and calls[name] == n) or (after_pair and calls["link"] >= 2):
                os.kill(os.getpid(), signal.SIGKILL)
            result = real[name](*args, **kwargs)
            if kind == "after-link" and name == "link" and calls[name] == n:
                os.kill(os.getpid(), signal.SIGKILL)
            return result

        return call

    os.link, os.replace = patched("link"), patched("replace")


def _killed(argv, kind, n, setup=None):
    """Run the command line in a forked child killed at a commit point;
    its pid."""

    def child():
        if setup is not None:
            setup()
        _kill_at(kind, n)
        _quiet(argv)
        os._exit(0)

    process = FORK.Process(target=child)
    process.start()
    process.join(60)
    assert process.exitcode == -signal.SIGKILL, "the kill point was not reached"
    return process.pid


def _hidden(folder):
    return sorted(p.name for p in Path(folder).rglob(".*"))


def _whole_pairs(folder):
    """The scans whose map and mask are both there and readable; fails on a
    map or a mask alone."""
    folder = Path(folder)
    maps = {p.name[: -len("_anomaly_map.nii.gz")] for p in folder.glob("*_anomaly_map.nii.gz")}
    masks = {p.name[: -len("_mask.nii.gz")] for p in folder.glob("*_mask.nii.gz")}
    assert maps == masks, f"half pairs: {maps ^ masks}"
    for stem in maps:
        for suffix in ("_anomaly_map.nii.gz", "_mask.nii.gz"):
            np.asarray(nib.load(folder / f"{stem}{suffix}").dataobj)
    return sorted(maps)


# -- SIGKILL ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kind, n",
    [("link", 1), ("link", 2), ("replace-after-links", 1)],
    ids=["before-the-map-link", "between-map-and-mask-links", "after-the-pair-before-record"],
)
def test_predict_killed_at_a_commit_point_is_finished_by_a_plain_rerun(cohort, tmp_path, kind, n):
    scans, (model, _) = cohort
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    argv = ["predict", model, scans[0], "-o", out]
    pid = _killed(argv, kind, n)
    # what the kill left is recognisable as that run's
    assert all(name.startswith(f".anomseg-tmp-{pid}-") for name in _hidden(out)), _hidden(out)

    status, err = _quiet(argv)  # no --overwrite
    assert status == 0, err
    assert _hidden(out) == []
    assert _whole_pairs(out) == ["h0"]
    assert (out / "notes.txt").read_text() == "mine"
    record = json.loads((out / MANIFEST_NAME).read_text())["outputs"]
    assert {entry["state"] for entry in record.values()} == {"written"}
    assert sorted(record) == ["h0_anomaly_map.nii.gz", "h0_mask.nii.gz"]


def test_fit_killed_at_the_final_link_leaves_a_temporary_the_next_fit_removes(cohort, tmp_path):
    scans, _ = cohort
    argv = ["fit", "--method", "flair-threshold", *scans, "-o", tmp_path / "m.anomseg"]
    pid = _killed(argv, "link", 1)
    [left] = _hidden(tmp_path)
    assert left.startswith(f".anomseg-tmp-{pid}-m.anomseg-")
    assert _quiet(argv)[0] == 0  # no --overwrite: there was no model
    assert _hidden(tmp_path) == []


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["refused", "overwrite"])
def test_fit_killed_after_the_final_link_leaves_no_orphan_after_any_rerun(
    cohort, tmp_path, overwrite
):
    scans, _ = cohort
    argv = ["fit", "--method", "flair-threshold", *scans, "-o", tmp_path / "m.anomseg"]
    _killed(argv, "after-link", 1)
    assert len(_hidden(tmp_path)) == 1 and (tmp_path / "m.anomseg").exists()
    status, err = _quiet([*argv, *overwrite])
    assert status == (0 if overwrite else 1), err
    assert overwrite or "exists" in err
    assert _hidden(tmp_path) == []


def test_an_empty_model_path_is_named(cohort, tmp_path, monkeypatch):
    scans, _ = cohort
    monkeypatch.chdir(tmp_path)
    status, err = _quiet(["fit", "--method", "flair-threshold", scans[0], "-o", ""])
    assert status == 1
    assert "-o is empty; give the model file's path" in err


def test_fit_killed_while_training_leaves_scratch_the_next_fit_removes(
    cohort, tmp_path, monkeypatch
):
    scans, _ = cohort
    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    argv = ["fit", "--method", "flair-threshold", *scans, "-o", tmp_path / "m.anomseg"]

    def die_in_training():
        from anomseg.baselines import FlairThreshold

        FlairThreshold._fit = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)

    pid = _killed(argv, "never", 0, setup=die_in_training)
    [left] = [p.name for p in scratch.iterdir()]
    assert left.startswith(f"anomseg-fit-{pid}-")
    assert _quiet(argv)[0] == 0
    assert list(scratch.iterdir()) == []


# -- two runs, another model, its own outputs as inputs ----------------------------------
def test_a_second_predict_on_the_folder_refuses_while_the_first_runs(cohort, tmp_path):
    scans, (model, _) = cohort
    out = tmp_path / "out"
    started, release = FORK.Event(), FORK.Event()

    def first():
        from anomseg import cohort as module

        read = module.read_scan

        def slow_read(path, *args):
            started.set()
            release.wait(60)
            return read(path, *args)

        module.read_scan = slow_read
        os._exit(_quiet(["predict", model, *scans, "-o", out])[0])

    process = FORK.Process(target=first)
    process.start()
    try:
        assert started.wait(60)
        status, err = _quiet(["predict", model, *scans, "-o", out])
    finally:
        release.set()
        process.join(60)
    assert status == 1
    [line] = err.strip().splitlines()
    assert f"another anomseg predict (pid {process.pid}) is writing to '{out}'" in line
    assert process.exitcode == 0  # the first run was not disturbed
    assert _whole_pairs(out) == ["h0", "h1", "h2"]
    assert _hidden(out) == []


def test_a_rerun_with_another_model_refuses_or_redoes_with_overwrite(cohort, tmp_path):
    scans, (model, other) = cohort
    out = tmp_path / "out"
    assert _quiet(["predict", model, scans[0], "-o", out])[0] == 0
    written = json.loads((out / MANIFEST_NAME).read_text())["outputs"]
    before = (out / "h0_mask.nii.gz").read_bytes()

    status, err = _quiet(["predict", other, scans[0], "-o", out])
    assert status == 1
    [line] = err.strip().splitlines()
    assert "h0_anomaly_map.nii.gz" in line and "another model" in line and "--overwrite" in line
    assert (out / "h0_mask.nii.gz").read_bytes() == before

    assert _quiet(["predict", other, scans[0], "-o", out, "--overwrite"])[0] == 0
    redone = json.loads((out / MANIFEST_NAME).read_text())["outputs"]
    assert redone["h0_mask.nii.gz"]["model"] != written["h0_mask.nii.gz"]["model"]


def test_a_glob_over_the_output_folder_run_twice_scores_only_the_scans(cohort, tmp_path):
    scans, (model, _) = cohort
    root = tmp_path / "cohort"
    for i, scan in enumerate(scans[:2]):
        (root / "a").mkdir(parents=True, exist_ok=True)
        (root / "a" / f"s{i}.nii.gz").write_bytes(Path(scan).read_bytes())
    argv = ["predict", model, "--glob", root / "**", "-o", root / "results"]
    assert _quiet(argv)[0] == 0
    status, err = _quiet(argv)
    assert status == 0, err
    assert "left out 6 file(s)" in err  # 4 outputs, the record and the summary
    assert "0 done, 2 skipped, 0 failed" in err
    assert _whole_pairs(root / "results") == ["s0", "s1"]


def test_a_glob_over_the_cohort_leaves_out_the_results_of_a_run_in_another_folder(
    cohort, tmp_path
):
    scans, (model, _) = cohort
    root = tmp_path / "cohort"
    (root / "a").mkdir(parents=True)
    for i, scan in enumerate(scans[:2]):
        (root / "a" / f"s{i}.nii.gz").write_bytes(Path(scan).read_bytes())
    pattern = root / "**" / "*"  # the summaries and records too
    assert _quiet(["predict", model, "--glob", pattern, "-o", root / "run1"])[0] == 0
    status, err = _quiet(["predict", model, "--glob", pattern, "-o", root / "run2"])
    assert status == 0, err
    # run1's 4 outputs, its record and its summary, in one note
    [note] = [line for line in err.splitlines() if "left out" in line]
    assert "left out 6 file(s)" in note and "run1" in note
    assert "2 done, 0 skipped, 0 failed" in err
    assert _whole_pairs(root / "run2") == ["s0", "s1"]


def test_an_edited_summary_is_rewritten_without_the_rows_it_cannot_parse(cohort, tmp_path):
    scans, (model, _) = cohort
    out = tmp_path / "out"
    assert _quiet(["predict", model, scans[0], "-o", out])[0] == 0
    with open(out / "summary.csv", "a") as summary:
        summary.write("# note\nh9,done,not a number,,,,,,\n")
    status, err = _quiet(["predict", model, *scans[:2], "-o", out])
    assert status == 0, err
    assert "1 done, 1 skipped, 0 failed" in err
    rows = (out / "summary.csv").read_text().splitlines()
    assert [row.split(",")[1] for row in rows[1:]] == ["done", "done"]
    assert _whole_pairs(out) == ["h0", "h1"]


def test_an_empty_output_folder_is_refused(cohort, tmp_path, monkeypatch):
    scans, (model, _) = cohort
    monkeypatch.chdir(tmp_path)
    status, err = _quiet(["predict", model, scans[0], "-o", ""])
    assert status == 1
    assert "-o is empty" in err
    assert list(tmp_path.iterdir()) == []


def test_n_jobs_is_capped_by_the_scans_and_the_cores_and_says_so_once(
    cohort, tmp_path, monkeypatch
):
    from anomseg import cohort as module

    scans, (model, _) = cohort
    started = []

    def serial(model, tasks, n_jobs):
        started.append(n_jobs)
        return module._run_serial(model, tasks)

    monkeypatch.setattr(module, "_run_local", serial)
    status, err = _quiet(["predict", model, *scans[:2], "-o", tmp_path, "--n-jobs", "64"])
    assert status == 0
    cap = min(2, module.usable_cores())
    [note] = [line for line in err.splitlines() if "--n-jobs 64 capped" in line]
    assert f"--n-jobs 64 capped to {cap} (2 scan(s), {module.usable_cores()} core(s))" in note
    assert all(n <= cap for n in started)


# -- a full disk --------------------------------------------------------------------
def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_output_disk_stops_predict_in_one_line_leaving_nothing(
    cohort, tmp_path, monkeypatch
):
    scans, (model, _) = cohort
    out = tmp_path / "out"

    def half_then_full(image, filename):
        Path(filename).write_bytes(b"\x1f\x8b partial")
        _no_space()

    monkeypatch.setattr(nib, "save", half_then_full)
    status, err = _quiet(["predict", model, *scans, "-o", out])
    assert status == 1
    [line] = [line for line in err.splitlines() if "error" in line]
    assert "no space left" in line and "h0_anomaly_map.nii.gz" in line
    assert "bytes" in line  # how much it needs
    assert list(out.iterdir()) == []  # no output, temporary, record or empty summary


def _two_channels(scans, folder):
    """The scans as 4D files of two channels (FLAIR and a copy as T2)."""
    out = []
    for scan in scans:
        data = np.asarray(nib.load(scan).dataobj)
        path = folder / Path(scan).name
        nib.save(nib.Nifti1Image(np.stack([data, data], axis=-1), np.eye(4)), path)
        out.append(str(path))
    return out


@pytest.mark.parametrize(
    ("channels", "per_voxel"), [(1, 5), (2, 9)], ids=["3d", "4d-two-channels"]
)
def test_a_full_tmpdir_stops_fit_in_one_line_leaving_nothing(
    cohort, tmp_path, monkeypatch, channels, per_voxel
):
    from anomseg.io import _scans as _stream

    scans, _ = cohort
    options = []
    if channels == 2:
        scans = _two_channels(scans, tmp_path)
        options = ["--param", "channel_axis=-1"]
    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))

    class Full(io.BytesIO):
        write = _no_space

    monkeypatch.setattr(_stream, "open", lambda *args: Full(), raising=False)
    argv = ["fit", "--method", "flair-threshold", *scans, "-o", tmp_path / "m.anomseg"]
    status, err = _quiet([*argv, *options])
    assert status == 1
    [line] = [line for line in err.splitlines() if "error" in line]
    assert "no space left" in line and str(scratch) in line and "TMPDIR" in line
    # 4 bytes per voxel and channel, 1 of foreground
    assert f"{per_voxel * 3 * 24 * 24 * 8} bytes" in line
    assert list(scratch.iterdir()) == [] and not (tmp_path / "m.anomseg").exists()


def test_a_rerun_that_skips_every_scan_writes_nothing_even_on_a_full_disk(
    cohort, tmp_path, monkeypatch
):
    from anomseg.io import _atomic

    scans, (model, _) = cohort
    out = tmp_path / "out"
    # by another process, whose pid the record holds
    first = FORK.Process(
        target=lambda: os._exit(_quiet(["predict", model, scans[0], "-o", out])[0])
    )
    first.start()
    first.join(60)
    assert first.exitcode == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    monkeypatch.setattr(_atomic.tempfile, "mkstemp", _no_space)
    status, err = _quiet(["predict", model, scans[0], "-o", out])
    assert status == 0, err
    assert "0 done, 1 skipped, 0 failed" in err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_a_full_disk_says_the_record_needs_at_least_its_own_size(tmp_path, monkeypatch):
    from anomseg.io._outputs import OutputRecord

    record = OutputRecord(tmp_path)
    record.mark_pending([tmp_path / "a_mask.nii.gz"], "a.nii.gz", "sha256:" + "0" * 64)
    monkeypatch.setattr(Path, "write_bytes", _no_space)
    monkeypatch.setattr(Path, "write_text", _no_space)
    with pytest.raises(OSError, match="no space left") as failed:
        record.save()
    needed = int(str(failed.value).split("needs about ")[1].split(" bytes")[0])
    assert needed > 100  # the record's text, not "1 bytes"
    assert not (tmp_path / MANIFEST_NAME).exists() and _hidden(tmp_path) == []


# -- words ---------------------------------------------------------------------------
def test_a_bad_summary_is_named_in_options_before_the_folder_is_made(cohort, tmp_path):
    scans, (model, _) = cohort
    out = tmp_path / "out"
    status, err = _quiet(["predict", model, scans[0], "-o", out, "--summary", "s.txt"])
    assert status == 1
    assert "--summary must end in .csv or .json" in err and "pass --no-summary" in err
    assert "summary=None" not in err and not out.exists()
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()) as err:
        main(["predict", model, scans[0], "-o", str(out), "--summary", "a.csv", "--no-summary"])
    assert "--no-summary" in err.getvalue() and "--summary" in err.getvalue()


def test_a_closed_stdout_ends_the_command_quietly(cohort):
    _, (model, _) = cohort
    read, write = os.pipe()
    os.close(read)  # the reader has gone, as `anomseg info M | head` does
    with (
        open(write, "w") as stdout,
        contextlib.redirect_stdout(stdout),
        contextlib.redirect_stderr(io.StringIO()) as err,
    ):
        status = main(["info", model])
    assert status == 141
    assert err.getvalue() == ""
