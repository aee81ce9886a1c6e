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
from anomseg.cli._main import _load_model
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
