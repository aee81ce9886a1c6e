"""fit on NIfTI paths: the scans are read and preprocessed one at a time
into memory-mapped files, and the model is the one arrays give."""

import logging
import tempfile

import nibabel as nib
import numpy as np
import pytest
import torch

from anomseg.baselines import FlairThreshold
from anomseg.datasets import make_healthy_images
from anomseg.io import load_nifti
from anomseg.preprocessing import (
    ForegroundCropper,
    ForegroundMasker,
    HistogramMatcher,
    IntensityScaler,
    make_anomaly_pipeline,
)
from anomseg.restoration import VAERestorer

# Not canonical (LPS), so that the orientation is part of what is checked.
AFFINE = np.array([[-1.5, 0, 0, 90.0], [0, -1.0, 0, 120.0], [0, 0, 2.0, -60.0], [0, 0, 0, 1]])


@pytest.fixture
def scans(tmp_path):
    slices = make_healthy_images(n_images=30, shape=(24, 24), random_state=0)
    paths = []
    for i in range(5):
        volume = np.moveaxis(slices[6 * i : 6 * (i + 1)], 0, -1) * 300.0  # not scaled
        paths.append(str(tmp_path / f"healthy{i}.nii.gz"))
        nib.save(nib.Nifti1Image(volume.astype(np.float32), AFFINE), paths[-1])
    return paths


@pytest.fixture
def own_tmpdir(tmp_path, monkeypatch):
    folder = tmp_path / "tmpdir"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _vae():
    return VAERestorer(
        width=4, latent_channels=1, n_epochs=2, batch_size=8, tv_weight=1.0,
        n_restoration_steps=3, random_state=0, validation_fraction=0.2,
    )  # fmt: skip


def test_a_pipeline_fitted_on_paths_equals_one_fitted_on_arrays(scans, own_tmpdir):
    arrays = [load_nifti(path)[0] for path in scans]

    def pipeline():
        scaler = IntensityScaler.for_deep_methods()
        return make_anomaly_pipeline(ForegroundMasker(), scaler, _vae())

    in_memory = pipeline().fit(arrays)
    streamed = pipeline().fit(scans)
    a, b = in_memory[-1], streamed[-1]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in a.history_] == [
        {k: v for k, v in r.items() if k != "seconds"} for r in b.history_
    ]
    for key, value in a.module_.state_dict().items():
        assert torch.equal(value, b.module_.state_dict()[key]), key
    assert a.threshold_ == b.threshold_
    assert a.healthy_data_ == b.healthy_data_
    # and it scores the same
    np.testing.assert_array_equal(
        in_memory.score_samples(arrays[:1])[0], streamed.score_samples(arrays[:1])[0]
    )
    assert not list(own_tmpdir.glob("anomseg-*")), "the temporary files stay"


def test_a_bare_estimator_fits_on_paths(scans, own_tmpdir):
    arrays = [load_nifti(path)[0] for path in scans]
    a = FlairThreshold(max_fpr=0.05).fit(arrays)
    b = FlairThreshold(max_fpr=0.05).fit(scans)
    assert a.threshold_ == b.threshold_
    assert a.healthy_data_ == b.healthy_data_
    assert not list(own_tmpdir.glob("anomseg-*"))


def test_steps_that_learn_across_scans_are_refused(scans, own_tmpdir):
    for step in (HistogramMatcher(), ForegroundCropper()):
        with pytest.raises(ValueError, match=f"{type(step).__name__} learn"):
            make_anomaly_pipeline(step, FlairThreshold()).fit(scans)
    assert not list(own_tmpdir.glob("anomseg-*"))


def test_a_bad_scan_stops_fit_and_leaves_no_files(scans, tmp_path, own_tmpdir):
    bad = tmp_path / "constant.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 4), np.float32), AFFINE), bad)
    with pytest.raises(ValueError, match="constant"):
        make_anomaly_pipeline(ForegroundMasker(), FlairThreshold()).fit([*scans, str(bad)])
    with pytest.raises(FileNotFoundError):
        FlairThreshold().fit([*scans, str(tmp_path / "missing.nii.gz")])
    assert not list(own_tmpdir.glob("anomseg-*"))


def test_the_scans_are_held_on_disk_not_in_memory(scans, own_tmpdir):
    from anomseg.io._scans import streamed_images

    with streamed_images(scans, [ForegroundMasker()], where="test") as batch:
        assert len(batch) == len(scans)
        for image, foreground, path in zip(batch.images, batch.foreground, scans):
            assert isinstance(image.base, np.memmap) and isinstance(foreground.base, np.memmap)
            assert not image.flags.writeable
            assert image.shape == load_nifti(path)[0].shape
        [folder] = own_tmpdir.glob("anomseg-fit-*")
        assert sum(f.stat().st_size for f in folder.iterdir()) == 5 * sum(
            image.size for image in batch.images
        )
    assert not folder.exists()


@pytest.mark.parametrize(
    ("model", "logger", "level"),
    [
        (lambda: FlairThreshold(), "anomseg.base", logging.DEBUG),  # has no verbose
        (
            lambda: make_anomaly_pipeline(IntensityScaler(), _vae().set_params(verbose=1)),
            "anomseg.preprocessing._pipeline",
            logging.INFO,
        ),
    ],
    ids=["estimator", "verbose pipeline"],
)
def test_reading_scans_reports_through_logging_not_stdout(
    scans, own_tmpdir, caplog, capsys, model, logger, level
):
    """The progress of fit on paths goes to the logger of the module that
    reads them, at INFO when the estimator is verbose, else DEBUG, prefixed
    with the estimator's class; nothing to stdout."""
    with caplog.at_level(logging.DEBUG, logger="anomseg"):
        model().fit(scans)
    [record] = [r for r in caplog.records if "trained on the scans' files" in r.getMessage()]
    assert (record.name, record.levelno) == (logger, level)
    assert record.getMessage().startswith(
        "[VAERestorer] " if level == logging.INFO else "[FlairThreshold] "
    )
    assert "trained on the scans' files" not in capsys.readouterr().out
