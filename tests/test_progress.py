"""Progress messages of the long phases of fit (reading the scans, the
batches of an epoch, scoring the calibration images), with the time left,
and no cost while nobody would see them."""

import logging
import re

import nibabel as nib
import numpy as np
import pytest

import anomseg._torch
import anomseg.utils._progress
from anomseg.datasets import make_healthy_images
from anomseg.denoising import DenoisingAESegmenter
from anomseg.utils._progress import Progress, advance

TINY = {
    "width": 2,
    "depth": 2,
    "noise_resolution": 4,
    "n_epochs": 2,
    "batch_size": 2,
    "validation_fraction": 0,
    "calibration_fraction": 0.5,
    "device": "cpu",
    "random_state": 0,
}


@pytest.fixture
def every_time(monkeypatch):
    """A message at every count."""
    monkeypatch.setattr(anomseg.utils._progress, "PROGRESS_INTERVAL", 0.0)


@pytest.fixture
def scans(tmp_path):
    slices = make_healthy_images(n_images=16, shape=(16, 16), random_state=0)
    paths = []
    for i in range(4):
        volume = np.moveaxis(slices[4 * i : 4 * (i + 1)], 0, -1)
        paths.append(str(tmp_path / f"healthy{i}.nii.gz"))
        nib.save(nib.Nifti1Image(volume.astype(np.float32), np.eye(4)), paths[-1])
    return paths


def test_the_time_left_is_said_at_once_when_the_work_will_be_long(monkeypatch):
    """The first count reports when the whole is expected to last longer
    than the interval, rather than only after the interval; then one
    message per interval."""
    clock = iter([0.0, 4.0, 8.0, 15.0, 20.0])
    monkeypatch.setattr(anomseg.utils._progress.time, "perf_counter", lambda: next(clock))
    messages = []
    progress = Progress(messages.append, "reading scans", 5, "scans", more=2, whole="all")
    progress.update()  # 4 s for 1 of 5: 20 s in all
    progress.update()  # 8 s: not yet 10 s since the last message
    progress.update()  # 15 s: 11 s since the last
    progress.close()
    assert messages == [
        "reading scans: 1/5 scans, 4 s, about 16 s left (56 s for all)",
        "reading scans: 3/5 scans, 15 s, about 10 s left (60 s for all)",
        "reading scans: 5 scans in 20 s",
    ]


def test_work_within_a_part_counts_its_share_and_no_more(every_time):
    messages = []
    progress = Progress(messages.append, "scoring", 2, "images")
    with progress.part(1):
        advance(0.04)
        advance(0.46)
        advance(0.9)  # beyond the part: capped at it
    with progress.part(1):
        pass  # nothing inside reports: the part counts when it ends
    advance(0.5)  # outside any part: nothing to count
    assert progress.done == 2
    assert re.match(r"scoring: 0\.04/2 images, \d+ s, about \d+ s left", messages[0])
    assert messages[1].startswith("scoring: 0.5/2 images")
    assert messages[2].startswith("scoring: 1/2 images")  # whole: no decimals
    assert len(messages) == 3


def test_quiet_progress_does_not_read_the_clock(monkeypatch):
    progress = Progress(None, "epoch 1/1", 1000, "batches")

    def clock():
        raise AssertionError("a quiet progress read the clock")

    monkeypatch.setattr(anomseg.utils._progress.time, "perf_counter", clock)
    for _ in range(1000):
        progress.update()
        advance(1.0)
    progress.close()


def test_fit_on_scans_reports_each_long_phase_with_the_time_left(scans, every_time, caplog):
    with caplog.at_level(logging.INFO, logger="anomseg"):
        DenoisingAESegmenter(**TINY, verbose=1, inference_batch_size=1).fit(scans)
    text = caplog.text
    assert re.search(r"reading scans: 1/4 scans, \d+ s, about \d+ s left", text)
    # 2 training scans of 4 slices, in batches of 2: 4 per epoch.
    assert re.search(
        r"epoch 1/2: 1/4 batches, \d+ s, about \d+ s left \(\d+ s for the training\)", text
    )
    assert re.search(r"epoch 2/2: 3/4 batches, \d+ s, about \d+ s left", text)
    # Both calibration scans are scored in one call: counted by its batches.
    assert re.search(r"scoring the calibration images: 0\.\d/2 images, \d+ s, about \d+ s", text)
    assert re.search(r"scoring the calibration images: 1/2 images, .* left", text)
    assert re.search(r"scoring the calibration images: 2 images in \d+ s", text)


def test_a_quiet_fit_reports_nothing_and_counts_without_the_clock(
    scans, every_time, caplog, monkeypatch
):
    made = []

    class Recorded(Progress):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(anomseg._torch, "Progress", Recorded)
    monkeypatch.setattr(anomseg.base, "Progress", Recorded)
    with caplog.at_level(logging.INFO, logger="anomseg"):
        DenoisingAESegmenter(**TINY).fit(scans)
    assert caplog.text == ""
    assert len(made) == 3 and all(progress.log is None for progress in made)


def test_reading_counts_each_preprocessing_step_within_a_scan(scans, every_time):
    """A brain extraction takes seconds a scan: the reading and each step
    count as a share of it, so that messages come within a scan."""
    from anomseg.io._scans import streamed_images
    from anomseg.preprocessing import ForegroundMasker

    messages = []
    with streamed_images(scans, [ForegroundMasker()], where="test", log=messages.append):
        pass
    assert re.match(r"reading scans: 0\.5/4 scans, \d+ s, about \d+ s left", messages[0])
    assert messages[1].startswith("reading scans: 1/4 scans")
    assert messages[-2] == "reading scans: 4 scans in 0 s"
