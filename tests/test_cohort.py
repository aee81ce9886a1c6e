"""Scoring a cohort (anomseg.cohort.predict_cohort): streaming, local worker
processes, a Dask cluster on loopback (with a worker killed mid-run), the
summary file and resuming."""

import csv
import json
import os
import signal
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from anomseg import cohort
from anomseg.baselines import FlairThreshold
from anomseg.cli import main
from anomseg.cohort import SUMMARY_FIELDS, _Prediction, mask_statistics, predict_cohort, run_cohort
from anomseg.datasets import add_synthetic_lesions, make_healthy_images
from anomseg.exceptions import AnomsegWarning
from anomseg.io import load_nifti_reference
from anomseg.preprocessing import ForegroundMasker, make_anomaly_pipeline

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
AFFINE = np.diag([2.0, 2.0, 3.0, 1.0])  # 12 µL voxels


def _volumes(n, seed):
    slices = make_healthy_images(n_images=6 * n, shape=(32, 32), random_state=seed)
    return [np.moveaxis(slices[6 * i : 6 * (i + 1)], 0, -1) for i in range(n)]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A fitted model and 6 lesioned scans as NIfTI files."""
    root = tmp_path_factory.mktemp("cohort")
    lesioned, _ = add_synthetic_lesions(
        _volumes(6, seed=1), n_lesions=2, radius=(2, 3), contrast=1.0, random_state=0
    )
    scans = []
    for i, volume in enumerate(lesioned):
        scans.append(root / f"scan{i}.nii.gz")
        nib.save(nib.Nifti1Image(volume.astype(np.float32), AFFINE), scans[-1])
    model = FlairThreshold(max_fpr=0.02).fit(_volumes(4, seed=0))
    return model, scans


def _outputs(folder):
    """Every NIfTI output of a folder, decoded, by name."""
    return {p.name: np.asarray(nib.load(p).dataobj) for p in sorted(folder.glob("*.nii.gz"))}


def _assert_same_outputs(a, b):
    outputs_a, outputs_b = _outputs(a), _outputs(b)
    assert outputs_a, "no outputs"
    assert sorted(outputs_a) == sorted(outputs_b)
    for name, array in outputs_a.items():
        np.testing.assert_array_equal(array, outputs_b[name], err_msg=name)
    assert not list(b.rglob(".*")), "temporary files left"


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _figures(records):
    keys = ("scan", "status", "anomalous_voxels", "lesion_volume_ml", "n_components")
    return [{k: Path(r[k]).name if k == "scan" else r[k] for k in keys} for r in records]


class _WaitingPrediction(_Prediction):
    """A prediction whose process, after its first scan, scores the next
    only once a worker has written a scan: so that a worker scores some,
    however slowly it starts. Each record says which process wrote it."""

    def __init__(self, model):
        super().__init__(model)
        self.parent, self.scored = os.getpid(), 0

    def write(self, path, targets, replace):
        if os.getpid() == self.parent and self.scored:
            deadline = time.monotonic() + 60
            while len(list(targets[0].parent.glob("*_mask.nii.gz"))) <= self.scored:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        figures = super().write(path, targets, replace)
        self.scored += os.getpid() == self.parent
        return {**figures, "pid": os.getpid()}


def test_local_workers_give_the_serial_outputs(synthetic, tmp_path, monkeypatch):
    model, scans = synthetic
    serial = predict_cohort(model, scans, tmp_path / "serial")
    monkeypatch.setattr(cohort, "PARALLEL_AFTER_SECONDS", 0.0)  # workers after one scan
    parallel = run_cohort(
        _WaitingPrediction(model),
        scans,
        tmp_path / "parallel",
        n_jobs=2,
        summary="summary.csv",
        engine="processes",
    )
    assert len({r["pid"] for r in parallel}) == 2, "a worker scored none"
    for name in sorted(os.listdir(tmp_path / "serial")):  # the same bytes
        if name.endswith(".nii.gz"):
            assert (tmp_path / "parallel" / name).read_bytes() == (
                tmp_path / "serial" / name
            ).read_bytes(), name
    assert [r["status"] for r in parallel] == ["done"] * len(scans)
    assert _figures(parallel) == _figures(serial)  # in the order of the scans
    assert sum(r["anomalous_voxels"] for r in serial) > 0


def test_local_workers_start_only_for_work_that_repays_them(synthetic, tmp_path, monkeypatch):
    """A cohort that this process scores in well under PARALLEL_AFTER_SECONDS
    never starts a worker, so n_jobs is not slower than serial."""
    from joblib.externals import loky

    def no_workers(*args, **kwargs):
        raise AssertionError("workers started for a second of work")

    monkeypatch.setattr(loky, "get_reusable_executor", no_workers)
    model, scans = synthetic
    records = predict_cohort(model, scans, tmp_path / "out", n_jobs=2, engine="processes")
    assert [r["status"] for r in records] == ["done"] * len(scans)


def test_summary_records_each_scan(synthetic, tmp_path):
    model, scans = synthetic
    records = predict_cohort(model, scans, tmp_path / "out")
    rows = _rows(tmp_path / "out" / "summary.csv")
    assert [row["scan"] for row in rows] == [str(s) for s in scans]
    assert tuple(rows[0]) == SUMMARY_FIELDS
    for row, record in zip(rows, records):
        mask = np.asarray(nib.load(record["mask"]).dataobj) > 0
        assert int(row["anomalous_voxels"]) == mask.sum()
        # 2 x 2 x 3 mm voxels are 0.012 mL
        assert float(row["lesion_volume_ml"]) == pytest.approx(mask.sum() * 0.012, abs=1e-4)
        assert float(row["seconds"]) > 0
        assert row["status"] == "done"
    # JSON, by the suffix
    predict_cohort(model, scans[:2], tmp_path / "json", summary="s.json")
    rows = json.loads((tmp_path / "json" / "s.json").read_text())
    assert [row["status"] for row in rows] == ["done", "done"]
    assert isinstance(rows[0]["n_components"], int)


def test_components_are_26_connected(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((6, 6, 6), np.float32), np.eye(4)), tmp_path / "a.nii")
    reference = load_nifti_reference(tmp_path / "a.nii")
    mask = np.zeros((6, 6, 6), bool)
    mask[0, 0, 0] = mask[1, 1, 1] = True  # corners touch: one component
    mask[4, 4, 4] = True
    assert mask_statistics(mask, reference) == {
        "anomalous_voxels": 3,
        "lesion_volume_ml": 0.003,
        "n_components": 2,
    }


def test_rerun_resumes_and_keeps_the_summary(synthetic, tmp_path):
    model, scans = synthetic
    out = tmp_path / "out"
    predict_cohort(model, scans[:3], out)
    first = (out / "summary.csv").read_bytes()
    # a run killed outright (SIGKILL) left a temporary file of a scan not done
    stale = out / f".{Path(scans[3]).name[:-7]}_mask.nii.gz.x1y2z3.nii.gz"
    stale.write_bytes(b"half")
    records = predict_cohort(model, scans, out)
    assert [r["status"] for r in records] == ["skipped"] * 3 + ["done"] * 3
    assert not stale.exists()
    rows = _rows(out / "summary.csv")
    # the scans skipped keep the row of the run that scored them
    assert "\n".join(first.decode().splitlines()[1:4]) in (out / "summary.csv").read_text()
    assert [row["status"] for row in rows] == ["done"] * 6
    # nothing left to do: the summary is not even rewritten
    before = os.stat(out / "summary.csv").st_mtime_ns
    time.sleep(0.01)
    assert {r["status"] for r in predict_cohort(model, scans, out)} == {"skipped"}
    assert os.stat(out / "summary.csv").st_mtime_ns == before


def test_a_bad_scan_fails_alone(synthetic, tmp_path):
    model, scans = synthetic
    constant = tmp_path / "constant.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 4), np.float32), AFFINE), constant)
    records = predict_cohort(model, [scans[0], constant, scans[1]], tmp_path / "out")
    assert [r["status"] for r in records] == ["done", "failed", "done"]
    assert "constant" in records[1]["message"]
    assert not (tmp_path / "out" / "constant_mask.nii.gz").exists()
    rows = _rows(tmp_path / "out" / "summary.csv")
    assert rows[1]["status"] == "failed" and "constant" in rows[1]["message"]


def test_bad_arguments_are_named(synthetic, tmp_path):
    model, scans = synthetic
    with pytest.raises(ValueError, match="'n_jobs'"):
        predict_cohort(model, scans, tmp_path, n_jobs=0)
    with pytest.raises(ValueError, match="either 'n_jobs'.*or 'scheduler'"):
        predict_cohort(model, scans, tmp_path, n_jobs=2, scheduler="tcp://127.0.0.1:1")
    with pytest.raises(ValueError, match="'summary'.*.csv or .json"):
        predict_cohort(model, scans, tmp_path, summary="s.txt")
    with pytest.raises(TypeError, match="'scans'.*list"):
        predict_cohort(model, scans[0], tmp_path)
    with pytest.raises(TypeError, match="fitted anomseg estimator"):
        predict_cohort("model.anomseg", scans, tmp_path)
    with pytest.raises(ValueError, match="given twice"):
        predict_cohort(model, [scans[0], scans[0]], tmp_path / "twice")
    # a user's file is never taken for a summary
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "summary.csv").write_text("subject,age\n1,40\n")
    with pytest.raises(FileExistsError, match="not a summary written by anomseg"):
        predict_cohort(model, scans, tmp_path / "mine")
    assert (tmp_path / "mine" / "summary.csv").read_text() == "subject,age\n1,40\n"
    assert not list((tmp_path / "mine").glob("*.nii.gz"))


# -- a Dask cluster on loopback, real scans ------------------------------------------
# (in `make test-scale`, which .ci/run runs: a cluster takes seconds to start)
def test_large_scans_warn_before_any_work(synthetic, tmp_path, monkeypatch, capsys):
    """A grid far beyond a brain's is named once, from the headers alone,
    before a scan is scored (a 512^3 volume in half a megabyte took 40 s and
    3 GB without a word)."""
    import anomseg.cohort

    model, scans = synthetic
    n_voxels = int(np.prod(load_nifti_reference(scans[0]).shape))
    monkeypatch.setattr(anomseg.cohort, "LARGE_SCAN_VOXELS", n_voxels)
    anomseg.cohort.check_scans(scans[:2])  # no warning at the limit (warnings are errors)
    monkeypatch.setattr(anomseg.cohort, "LARGE_SCAN_VOXELS", n_voxels - 1)
    # the command line's fit (and evaluate), which prints it before "fitting"
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        fitted = main(
            ["fit", "--method", "flair-threshold", str(scans[0]), "-o", str(tmp_path / "m")]
        )
    assert fitted == 0
    err = capsys.readouterr().err
    assert err.index("holds 32 x 32 x 6 voxels") < err.index("fitting")
    scored = []
    monkeypatch.setattr(anomseg.cohort, "read_scan", scored.append)
    monkeypatch.setattr(anomseg.cohort, "plan_outputs", lambda *a: 1 / 0)
    large = r"holds 32 x 32 x 6 voxels.*and 1 other scan"
    # stopped by plan_outputs once the warning is out
    with pytest.warns(AnomsegWarning, match=large), pytest.raises(ZeroDivisionError):
        predict_cohort(model, scans[:2], tmp_path / "out")
    assert not scored


def _scans_for_the_cluster(folder):
    """4 LGG FLAIR and 4 IXI T1 scans of ../shared/data; where that data is
    absent (a clone without it), 8 synthetic heads of 128 x 128 x 40, so
    that the engine is still tested."""
    lgg = sorted((DATA / "lgg_flair").glob("*_flair.nii.gz"))[:4]
    ixi = sorted((DATA / "ixi_t1").glob("*_T1.nii.gz"))[:4]
    if len(lgg) == 4 and len(ixi) == 4:
        return lgg + ixi
    rng = np.random.default_rng(0)
    axes = [np.linspace(-1, 1, n) for n in (128, 128, 40)]
    inside = (np.stack(np.meshgrid(*axes, indexing="ij")) ** 2).sum(axis=0) < 0.8
    scans = []
    for i in range(8):
        data = np.where(inside, rng.normal(100, 10, inside.shape), 0).astype(np.float32)
        scans.append(folder / f"head{i}.nii.gz")
        nib.save(nib.Nifti1Image(data, AFFINE), scans[-1])
    return scans


@pytest.fixture(scope="module")
def real_cohort(tmp_path_factory):
    from anomseg.io import load_nifti

    scans = _scans_for_the_cluster(tmp_path_factory.mktemp("heads"))
    healthy = [load_nifti(path)[0] for path in scans[4:6]]
    model = make_anomaly_pipeline(ForegroundMasker(), FlairThreshold(max_fpr=0.01))
    return model.fit(healthy), scans


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield cluster, client


@pytest.fixture(scope="module")
def serial_run(real_cohort, tmp_path_factory):
    model, scans = real_cohort
    out = tmp_path_factory.mktemp("serial")
    return out, predict_cohort(model, scans, out)


@pytest.mark.scale
def test_dask_cluster_gives_the_serial_outputs(real_cohort, cluster, serial_run, tmp_path):
    model, scans = real_cohort
    local_cluster, client = cluster
    serial_out, serial = serial_run
    records = predict_cohort(model, scans, tmp_path, scheduler=client)
    _assert_same_outputs(serial_out, tmp_path)
    assert _figures(records) == _figures(serial)
    assert all(r["status"] == "done" for r in records)
    # by address too, as the command line passes it
    # by address, from the command line
    model.save(tmp_path / "m.anomseg")
    args = ["predict", tmp_path / "m.anomseg", *scans, "-o", tmp_path / "cli", "--no-progress"]
    address = local_cluster.scheduler_address
    assert main([*map(str, args), "--dask-scheduler", address]) == 0
    _assert_same_outputs(serial_out, tmp_path / "cli")


@pytest.mark.scale
def test_dask_completes_the_cohort_when_a_worker_dies(real_cohort, cluster, serial_run, tmp_path):
    """A worker killed (SIGKILL) mid-run: Dask reschedules its scans on the
    other worker (and the restarted one); every output is whole and equal to
    the serial run's, and none failed."""
    model, scans = real_cohort
    _, client = cluster
    serial_out, _ = serial_run
    killed = []

    def kill_a_busy_worker(record):
        if killed:
            return
        busy = [worker for worker, tasks in client.processing().items() if tasks]
        pids = client.run(os.getpid, workers=busy[:1])
        for pid in pids.values():
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    records = predict_cohort(model, scans, tmp_path, scheduler=client, callback=kill_a_busy_worker)
    assert killed, "no worker was busy to kill"
    # A scan that the killed worker had written before it died is found
    # complete when Dask reruns it: skipped, which is right.
    statuses = [r["status"] for r in records]
    assert set(statuses) <= {"done", "skipped"}, [r.get("message") for r in records]
    _assert_same_outputs(serial_out, tmp_path)
    client.wait_for_workers(2, timeout=60)  # the nanny restarted it
