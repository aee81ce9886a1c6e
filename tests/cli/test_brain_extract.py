"""The command line with brain extraction: ``brain-extract`` and
``--foreground brain``, on the embedded demo scans (deepbet runs about 5 s
per scan, so each test extracts one or two).

The tests that run deepbet skip where it is not installed (``make test-min``).
"""

import sys

import nibabel as nib
import numpy as np
import pytest

from anomseg.cli import main
from anomseg.cli._common import _load_model
from anomseg.datasets import get_demo_path
from anomseg.preprocessing import AnomalyPipeline, BrainExtractor

# Left-Posterior-Superior, anisotropic: outputs must keep the scan's own grid.
LPS = np.array([[-1.0, 0, 0, 90.0], [0, -1.2, 0, 120.0], [0, 0, 1.0, -60.0], [0, 0, 0, 1]])
FIT = ("fit", "--method", "flair-threshold")


def run(*args):
    return main([*map(str, args), "--no-progress"])


@pytest.fixture
def deepbet():
    return pytest.importorskip("deepbet", reason="deepbet not installed (anomseg[brain])")


@pytest.fixture
def lps_scan(tmp_path):
    """The demo FLAIR of patient07 (skull-stripped), stored in LPS order."""
    image = nib.as_closest_canonical(nib.load(get_demo_path("patient07_flair.nii.gz")))
    data = np.ascontiguousarray(np.flip(np.asarray(image.dataobj), (0, 1)))
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(data, LPS), path)
    return path, data


def _dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def test_brain_extract_writes_masks_on_each_scans_grid(deepbet, lps_scan, tmp_path, capsys):
    path, data = lps_scan
    out = tmp_path / "brains"
    assert run("brain-extract", path, "-o", out) == 0
    written = nib.load(out / "scan_brainmask.nii.gz")
    assert written.get_data_dtype() == np.uint8
    assert written.shape == data.shape and np.allclose(written.affine, LPS)
    mask = np.asarray(written.dataobj)
    assert set(np.unique(mask)) == {0, 1}
    assert _dice(mask == 1, data != 0) >= 0.95  # skull-stripped: the brain is non-zero
    assert "scan_brainmask.nii.gz" in capsys.readouterr().out
    # A second run skips the scan, whose mask is complete, and leaves it alone.
    before = (out / "scan_brainmask.nii.gz").stat().st_mtime_ns
    assert run("brain-extract", path, "-o", out) == 0
    assert "0 done, 1 skipped, 0 failed" in capsys.readouterr().err
    assert (out / "scan_brainmask.nii.gz").stat().st_mtime_ns == before


def test_fit_and_predict_with_foreground_brain(deepbet, lps_scan, tmp_path):
    path, data = lps_scan
    model = tmp_path / "model.joblib"
    assert run(*FIT, path, "-o", model, "--foreground", "brain") == 0
    pipeline, _ = _load_model(model, "brain")
    assert isinstance(pipeline[0], BrainExtractor)
    assert not any(isinstance(step, BrainExtractor) for _, step in pipeline.steps[1:])
    out = tmp_path / "out"
    assert run("predict", model, path, "-o", out) == 0
    mask = nib.load(out / "scan_mask.nii.gz")
    assert mask.shape == data.shape and np.allclose(mask.affine, LPS)
    anomaly_map = nib.load(out / "scan_anomaly_map.nii.gz").get_fdata()
    assert (anomaly_map[data == 0] == 0).mean() > 0.95  # scored inside the brain only


def test_evaluate_with_foreground_brain(deepbet, tmp_path, capsys):
    scan = get_demo_path("patient07_flair.nii.gz")
    model = tmp_path / "model.joblib"
    assert run(*FIT, scan, "-o", model) == 0
    capsys.readouterr()
    truth = get_demo_path("patient07_mask.nii.gz")
    assert run("evaluate", model, scan, "--truth", truth, "--foreground", "brain") == 0
    assert "AUROC" in capsys.readouterr().out


def test_foreground_brain_puts_a_brain_extractor_first(deepbet, tmp_path):
    scan = get_demo_path("patient07_flair.nii.gz")
    model = tmp_path / "model.joblib"
    assert run(*FIT, scan, "-o", model) == 0
    assert not isinstance(_load_model(model)[0][0], BrainExtractor)
    pipeline, _ = _load_model(model, "brain")
    assert isinstance(pipeline, AnomalyPipeline) and len(pipeline.steps) == 2
    assert isinstance(pipeline[0], BrainExtractor)


def test_without_deepbet_the_error_names_the_extra(lps_scan, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "deepbet", None)
    path, _ = lps_scan
    assert run("brain-extract", path, "-o", tmp_path / "brains") == 1
    err = capsys.readouterr().err
    assert "pip install 'anomseg[brain]'" in err and "Traceback" not in err
    model = tmp_path / "model.joblib"
    assert run(*FIT, path, "-o", model, "--foreground", "brain") == 1
    assert "anomseg[brain]" in capsys.readouterr().err


@pytest.fixture
def quick_extractor(monkeypatch):
    """BrainExtractor without deepbet: the mask is the non-zero voxels (the
    command's bookkeeping is under test here, not the network)."""
    monkeypatch.setattr(BrainExtractor, "fit", lambda self, X, y=None: self)
    monkeypatch.setattr(BrainExtractor, "get_mask", lambda self, X: [x != 0 for x in X])


def test_brain_extract_keeps_a_record_and_never_replaces_a_users_file(
    quick_extractor, lps_scan, tmp_path, capsys
):
    """As predict does: a mask of the user's own in the way is left alone,
    even with --overwrite; other options are noticed; a rerun over the folder
    does not extract its own outputs; a second run waits its turn."""
    from anomseg.io._outputs import folder_lock

    path, data = lps_scan
    folder = path.parent
    own = folder / "scan_brainmask.nii.gz"  # the user's corrected mask
    nib.save(nib.Nifti1Image((data > 10).astype(np.uint8), LPS), own)
    before = own.read_bytes()
    assert run("brain-extract", path, "-o", folder, "--overwrite") == 1
    assert "anomseg did not write it" in capsys.readouterr().err
    assert own.read_bytes() == before
    own.unlink()
    glob = ("--glob", folder / "*.nii.gz")
    assert run("brain-extract", *glob, "-o", folder) == 0
    assert run("brain-extract", *glob, "-o", folder) == 0  # its own mask left out
    err = capsys.readouterr().err
    assert "left out 1 file(s)" in err and "0 done, 1 skipped" in err
    assert sorted(p.name for p in folder.glob("*.nii.gz")) == [path.name, own.name]
    assert run("brain-extract", path, "-o", folder, "--threshold", "0.7") == 1
    assert "other options" in capsys.readouterr().err
    assert run("brain-extract", path, "-o", folder, "--threshold", "0.7", "--overwrite") == 0
    with folder_lock(folder, "predict"):
        assert run("brain-extract", path, "-o", folder) == 1
    assert "is writing to" in capsys.readouterr().err
