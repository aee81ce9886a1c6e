"""``--overwrite`` replaces outputs, never the command's inputs nor anything
but a regular file: a model written over a scan, a mask written over a
scan, or a device node replaced by a file, are refused before any work."""

import os

import nibabel as nib
import numpy as np
import pytest

from anomseg.cli import main
from anomseg.cohort import plan_outputs


@pytest.fixture
def cohort(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        data = np.zeros((16, 16, 6), np.float32)
        data[3:13, 3:13] = rng.normal(100, 10, (10, 10, 6))
        path = tmp_path / f"h{i}.nii.gz"
        nib.save(nib.Nifti1Image(data, np.eye(4)), path)
        paths.append(path)
    return paths


def _fit(scans, output, *extra):
    arguments = ["fit", "--method", "flair-threshold", *map(str, scans), "-o", str(output)]
    return main([*arguments, "--overwrite", *extra, "--no-progress"])


def test_fit_never_writes_the_model_over_a_scan(cohort, capsys):
    before = cohort[0].read_bytes()
    assert _fit(cohort, cohort[0]) != 0
    err = capsys.readouterr().err
    assert "-o" in err and "input" in err and "h0.nii.gz" in err
    assert cohort[0].read_bytes() == before


def test_fit_never_writes_the_model_over_an_exclusion_mask(cohort, tmp_path, capsys):
    mask = tmp_path / "m.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 6), np.uint8), np.eye(4)), mask)
    before = mask.read_bytes()
    masks = [mask, mask, mask]
    assert _fit(cohort, mask, "--exclude", *map(str, masks)) != 0
    assert "input" in capsys.readouterr().err
    assert mask.read_bytes() == before


def test_fit_never_replaces_what_is_not_a_regular_file(cohort, tmp_path, capsys):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert _fit(cohort, fifo) != 0
    assert "not a regular file" in capsys.readouterr().err
    assert not fifo.is_file() and fifo.exists()  # still the FIFO


def test_fit_still_replaces_its_own_model_with_overwrite(cohort, tmp_path):
    model = tmp_path / "model.anomseg"
    assert _fit(cohort, model) == 0
    first = model.read_bytes()
    assert _fit(cohort[:2], model) == 0  # another healthy set: another model
    assert model.read_bytes() != first


def test_predict_never_writes_an_output_over_a_scan(cohort, tmp_path, capsys):
    model = tmp_path / "model.anomseg"
    assert _fit(cohort, model) == 0
    # The user's own mask next to the scans, matched by the same glob.
    mask = cohort[0].parent / "h0_mask.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((16, 16, 6), np.uint8), np.eye(4)), mask)
    before = mask.read_bytes()
    pattern = str(cohort[0].parent / "*.nii.gz")
    arguments = ["predict", str(model), "--glob", pattern, "-o", str(cohort[0].parent)]
    status = main([*arguments, "--overwrite", "--no-progress"])
    assert status != 0
    assert "h0_mask.nii.gz" in capsys.readouterr().err
    assert mask.read_bytes() == before


def test_plan_outputs_refuses_an_output_that_is_a_scan(tmp_path):
    scans = [tmp_path / "a.nii.gz", tmp_path / "a_mask.nii.gz"]
    for scan in scans:
        scan.touch()
    with pytest.raises(ValueError, match="one of the scans"):
        plan_outputs([str(s) for s in scans], tmp_path)
    plan_outputs([str(s) for s in scans], tmp_path / "out")  # elsewhere: fine
