"""The overlapped engine of a cohort (predict_cohort(engine="overlapped")):
threads read and write while one thread scores several scans per batch of
the network, the CPU standing in for the GPU that "auto" picks it for."""

import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from anomseg import cohort
from anomseg.baselines import FlairThreshold
from anomseg.cli import main
from anomseg.cohort import ScanTask, _check_engine, _Prediction, predict_cohort, run_cohort
from anomseg.datasets import add_synthetic_lesions, make_healthy_images
from anomseg.denoising import DenoisingAESegmenter
from anomseg.preprocessing import ForegroundMasker, make_anomaly_pipeline

AFFINE = np.diag([2.0, 2.0, 3.0, 1.0])


def _volumes(n, seed, depth=6):
    slices = make_healthy_images(n_images=depth * n, shape=(32, 32), random_state=seed)
    return [np.moveaxis(slices[depth * i : depth * (i + 1)], 0, -1) for i in range(n)]


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """7 lesioned scans as NIfTI files, 3 to 9 slices deep."""
    root = tmp_path_factory.mktemp("overlapped")
    lesioned, _ = add_synthetic_lesions(
        _volumes(7, seed=1, depth=9), n_lesions=2, radius=(2, 3), contrast=1.0, random_state=0
    )
    paths = []
    for i, volume in enumerate(lesioned):
        paths.append(root / f"scan{i}.nii.gz")
        nib.save(nib.Nifti1Image(volume[..., : 3 + i].astype(np.float32), AFFINE), paths[-1])
    return paths


@pytest.fixture(scope="module")
def flair():
    return FlairThreshold(max_fpr=0.02).fit(_volumes(4, seed=0))


@pytest.fixture(scope="module")
def dae():
    """A tiny DAE in a pipeline, whose inference batch (4 slices) is smaller
    than most scans: batches across scans change how slices are grouped."""
    network = DenoisingAESegmenter(
        n_epochs=1, width=4, depth=2, noise_resolution=8, inference_batch_size=4,
        max_fpr=0.02, random_state=0, device="cpu",
    )  # fmt: skip
    return make_anomaly_pipeline(ForegroundMasker(), network).fit(_volumes(4, seed=0))


def _outputs(folder):
    return {p.name: np.asarray(nib.load(p).dataobj) for p in sorted(folder.glob("*.nii.gz"))}


def _statuses(records):
    return [r["status"] for r in records]


class _Counting(_Prediction):
    """A prediction that records the scans of each batch it scores and the
    most scans read but not yet scored at once. Its first batch waits until
    ``ahead`` more scans are read, so that the next batch finds several
    ready however the threads are scheduled."""

    def __init__(self, model, ahead=0):
        super().__init__(model)
        self.groups, self.waiting, self.most_waiting = [], 0, 0
        self.lock, self.ahead = threading.Lock(), ahead

    def prepare(self, path):
        scan = super().prepare(path)
        with self.lock:
            self.waiting += 1
            self.most_waiting = max(self.most_waiting, self.waiting)
        return scan

    def score(self, scans):
        deadline = time.monotonic() + 30
        while not self.groups and self.waiting < len(scans) + self.ahead:
            assert time.monotonic() < deadline, "the readers read nothing ahead"
            time.sleep(0.01)
        with self.lock:
            self.waiting -= len(scans)
        self.groups.append([Path(s.path).name for s in scans])
        super().score(scans)


@pytest.mark.parametrize("n_jobs", [None, 2])
def test_overlapped_gives_the_bytes_of_processes_for_the_flair_baseline(
    flair, scans, tmp_path, n_jobs
):
    serial = predict_cohort(flair, scans, tmp_path / "serial", engine="processes")
    overlapped = predict_cohort(
        flair, scans, tmp_path / "overlapped", engine="overlapped", n_jobs=n_jobs
    )
    assert _statuses(overlapped) == ["done"] * len(scans)
    for name in sorted(p.name for p in (tmp_path / "serial").glob("*.nii.gz")):
        assert (tmp_path / "overlapped" / name).read_bytes() == (
            tmp_path / "serial" / name
        ).read_bytes(), name
    keys = ("anomalous_voxels", "lesion_volume_ml", "n_components", "warnings")
    assert [{k: r[k] for k in keys} for r in overlapped] == [
        {k: r[k] for k in keys} for r in serial
    ]
    assert sum(r["anomalous_voxels"] for r in serial) > 0
    assert not list((tmp_path / "overlapped").glob(".*tmp"))


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_overlapped_scores_several_scans_per_batch_as_processes_scores_each(
    dae, scans, tmp_path, monkeypatch, n_jobs
):
    """The DAE's maps from batches across scans equal those scored scan by
    scan up to float32 rounding (the network's batches group other slices),
    and so do the masks, but at voxels that close to the threshold."""
    serial = predict_cohort(dae, scans, tmp_path / "serial", engine="processes")
    task = _Counting(dae, ahead=2 * n_jobs)
    monkeypatch.setattr(cohort, "OVERLAP_BATCH_SLICES", 16)
    overlapped = run_cohort(task, scans, tmp_path / "overlapped", n_jobs=n_jobs,
                            engine="overlapped")  # fmt: skip
    assert _statuses(overlapped) == ["done"] * len(scans)
    # every scan scored once, in order; some batches hold several scans,
    # none more than 16 slices but a scan deeper alone
    scored = [name for group in task.groups for name in group]
    assert scored == [Path(s).name for s in scans]
    assert any(len(group) > 1 for group in task.groups), task.groups
    depth = {f"scan{i}.nii.gz": 3 + i for i in range(len(scans))}
    assert all(sum(depth[n] for n in g) <= 16 or len(g) == 1 for g in task.groups)
    # bounded: never more than 2 * n_jobs scans read ahead of the batch
    # being scored
    assert task.most_waiting <= 2 * n_jobs + max(len(group) for group in task.groups)
    a, b = _outputs(tmp_path / "serial"), _outputs(tmp_path / "overlapped")
    assert sorted(a) == sorted(b)
    threshold = dae.threshold_
    for name in a:
        if name.endswith("_anomaly_map.nii.gz"):
            spread = float(a[name].max() - a[name].min())
            np.testing.assert_allclose(b[name], a[name], rtol=0, atol=1e-4 * spread, err_msg=name)
            near = np.abs(a[name] - threshold) <= 1e-4 * spread
            mask = name.replace("_anomaly_map", "_mask")
            assert np.array_equal(a[mask][~near], b[mask][~near]), mask
    assert sum(r["anomalous_voxels"] for r in serial) > 0


def test_overlapped_writes_the_figures_of_processes(flair, scans, tmp_path):
    """Figures are made on the writer threads, one at a time (matplotlib is
    not thread-safe): each scan's has the size of the one the processes
    draw, and the report's records are theirs."""
    pytest.importorskip("matplotlib")
    kwargs = {"figures": True, "summary": None}
    serial = predict_cohort(flair, scans, tmp_path / "p", engine="processes", **kwargs)
    overlapped = predict_cohort(flair, scans, tmp_path / "o", engine="overlapped", n_jobs=2,
                                **kwargs)  # fmt: skip
    assert _statuses(overlapped) == ["done"] * len(scans)
    from matplotlib.image import imread

    for a, b in zip(serial, overlapped):
        image_a, image_b = imread(a["figure"]), imread(b["figure"])
        assert image_a.shape == image_b.shape
        assert np.abs(image_a - image_b).mean() < 1e-3, b["figure"]


@pytest.mark.parametrize("model", ["flair", "dae"])
def test_overlapped_fails_a_bad_scan_alone(model, scans, tmp_path, monkeypatch, request):
    """A scan that cannot be read, and one that fails to score, fail alone;
    the others are written. With a network, the batch holding the bad scan
    fails first, and its scans are scored again one by one."""
    fitted = request.getfixturevalue(model)
    constant = tmp_path / "constant.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((32, 32, 4), np.float32), AFFINE), constant)
    poisoned = Path(scans[2]).name
    score = _Prediction.score

    def failing(self, group):
        if any(Path(s.path).name == poisoned for s in group):
            raise ValueError("poisoned scan")
        score(self, group)

    monkeypatch.setattr(_Prediction, "score", failing)
    cohort_scans = [scans[0], constant, *scans[1:4]]
    records = predict_cohort(fitted, cohort_scans, tmp_path / "out", engine="overlapped")
    assert _statuses(records) == ["done", "failed", "done", "failed", "done"]
    assert "constant" in records[1]["message"]
    assert "poisoned scan" in records[3]["message"] and poisoned in records[3]["message"]
    written = sorted(p.name for p in (tmp_path / "out").glob("*_mask.nii.gz"))
    assert written == ["scan0_mask.nii.gz", "scan1_mask.nii.gz", "scan3_mask.nii.gz"]


def test_overlapped_skips_complete_outputs_on_a_rerun(flair, scans, tmp_path):
    out = tmp_path / "out"
    predict_cohort(flair, scans[:2], out, engine="overlapped")
    records = predict_cohort(flair, scans[:4], out, engine="overlapped", n_jobs=2)
    assert _statuses(records) == ["skipped", "skipped", "done", "done"]
    assert records[0]["anomalous_voxels"] == np.count_nonzero(
        np.asarray(nib.load(out / "scan0_mask.nii.gz").dataobj)
    )


def test_a_full_disk_stops_the_overlapped_run(flair, scans, tmp_path, monkeypatch):
    import errno

    from anomseg.exceptions import DiskFullError

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("anomseg.io.save_niftis", full)
    with pytest.raises(DiskFullError):
        predict_cohort(flair, scans, tmp_path / "out", engine="overlapped", n_jobs=2)
    assert not list((tmp_path / "out").glob("*.nii.gz"))


class _OneStep(ScanTask):
    suffixes = ("_copy.nii.gz",)
    fields = ("copy",)


class _OnGPU:
    def __init__(self, staged=True, device="cuda"):
        if staged:
            self.prepare = self.score = self.finish = None
        self.final = type("Final", (), {"device_": device})()


def test_the_engine_is_checked_and_auto_picks_overlapped_on_a_gpu(flair, scans, tmp_path):
    assert _check_engine("auto", _OnGPU(), None) == "overlapped"
    assert _check_engine("auto", _OnGPU(device="cuda:1"), None) == "overlapped"
    assert _check_engine("auto", _OnGPU(device="cpu"), None) == "processes"
    assert _check_engine("auto", _OnGPU(device="cpu"), None, n_jobs=2) == "processes"
    assert _check_engine("auto", _OnGPU(), "tcp://127.0.0.1:1") == "processes"
    assert _check_engine("processes", _OnGPU(), None) == "processes"
    # no network: overlapped for more than one job, where files are the work
    assert _check_engine("auto", _Prediction(flair), None) == "processes"
    assert _check_engine("auto", _Prediction(flair), None, n_jobs=1) == "processes"
    assert _check_engine("auto", _Prediction(flair), None, n_jobs=2) == "overlapped"
    assert _check_engine("auto", _Prediction(flair), None, n_jobs=-1) == "overlapped"
    # an ensemble runs on its members' devices
    members = _OnGPU(device="cpu")
    members.final.estimators_ = [type("Member", (), {"device_": "cuda"})()]
    assert _check_engine("auto", members, None) == "overlapped"
    with pytest.raises(ValueError, match="'engine' must be one of auto, processes, overlapped"):
        predict_cohort(flair, scans, tmp_path / "a", engine="threads")
    with pytest.raises(ValueError, match="engine='overlapped' needs a task that scores in"):
        run_cohort(_OneStep(), scans, tmp_path / "b", engine="overlapped")
    with pytest.raises(ValueError, match="engine='overlapped' runs on this machine"):
        predict_cohort(flair, scans, tmp_path / "c", engine="overlapped", scheduler="tcp://x:1")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_predict_engine_overlapped_from_the_command_line(flair, scans, tmp_path, capsys):
    model = tmp_path / "flair.anomseg"
    flair.save(model)
    paths = [str(s) for s in scans[:3]]
    assert main(["predict", str(model), *paths, "-o", str(tmp_path / "a")]) == 0
    assert main(["predict", str(model), *paths, "-o", str(tmp_path / "b"),
                 "--engine", "overlapped", "--n-jobs", "2"]) == 0  # fmt: skip
    a, b = _outputs(tmp_path / "a"), _outputs(tmp_path / "b")
    assert len(a) == 6 and all(np.array_equal(a[k], b[k]) for k in a)
    with pytest.raises(SystemExit):
        main(["predict", str(model), *paths, "-o", str(tmp_path / "c"), "--engine", "gpu"])
    assert "invalid choice: 'gpu'" in capsys.readouterr().err
    status = main(["predict", str(model), *paths, "-o", str(tmp_path / "d"), "--engine",
                   "overlapped", "--dask-scheduler", "tcp://127.0.0.1:1"])  # fmt: skip
    assert status != 0
    assert "--engine overlapped runs the scans on this machine, --dask-scheduler" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "d").exists()
