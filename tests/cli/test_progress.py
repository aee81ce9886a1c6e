"""``anomseg fit`` and ``anomseg calibrate`` say how far each long phase
is, with the time left, on stderr; ``--no-progress`` silences them."""

import re

import nibabel as nib
import numpy as np
import pytest

import anomseg.utils._progress
from anomseg.cli import main
from anomseg.datasets import make_healthy_images

TINY = ["width=2", "depth=2", "n_epochs=1", "batch_size=2", "inference_batch_size=1"]
TINY += ["validation_fraction=0", "device=cpu"]


@pytest.fixture
def scans(tmp_path):
    slices = make_healthy_images(n_images=12, shape=(16, 16), random_state=0)
    paths = []
    for i in range(3):
        volume = np.moveaxis(slices[4 * i : 4 * (i + 1)], 0, -1)
        paths.append(str(tmp_path / f"healthy{i}.nii.gz"))
        nib.save(nib.Nifti1Image(volume.astype(np.float32), np.eye(4)), paths[-1])
    return paths


@pytest.mark.parametrize("progress", [True, False])
def test_fit_and_calibrate_report_each_phase_with_the_time_left(
    scans, tmp_path, capsys, monkeypatch, progress
):
    monkeypatch.setattr(anomseg.utils._progress, "PROGRESS_INTERVAL", 0.0)
    flags = [] if progress else ["--no-progress"]
    params = [arg for param in TINY for arg in ("--param", param)]
    model = tmp_path / "m.anomseg"
    fit = ["fit", "--method", "denoising-ae", *params, *scans, "-o", str(model)]
    assert main([*fit, *flags]) == 0
    err = capsys.readouterr().err
    phases = [r"reading scans: 1/3 scans", r"epoch 1/1: 1/\d+ batches"]
    phases.append(r"scoring the calibration images: 0\.\d/1 images")
    for phase in phases:
        assert bool(re.search(phase + r", \d+ s, about \d+ s left", err)) is progress, phase
    calibrated = tmp_path / "c.anomseg"
    assert main(["calibrate", str(model), *scans, "-o", str(calibrated), *flags]) == 0
    err = capsys.readouterr().err
    for phase in (r"reading scans: 1/3 scans", r"scoring the calibration images: 1/3 images"):
        assert bool(re.search(phase + r", \d+ s, about \d+ s left", err)) is progress, phase
    assert ("calibrated on the scans' files in" in err) is progress
