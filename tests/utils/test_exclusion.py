"""fit(X, exclude=...): the healthy parts of patient scans as healthy data.

The excluded voxels (lesions, grown by a margin or widened to whole slices)
are neither trained nor calibrated on, but each scan is still scored whole
for calibration, as predict will score it.
"""

import warnings

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from anomseg.adversarial import ASCNetSegmenter
from anomseg.baselines import FlairThreshold
from anomseg.datasets import add_synthetic_lesions, exclude_lesions, make_healthy_images
from anomseg.denoising import DenoisingAESegmenter
from anomseg.exceptions import AnomsegWarning
from anomseg.io import load_nifti
from anomseg.metrics import threshold_at_fpr
from anomseg.preprocessing import (
    AnomalyPipeline,
    ForegroundCropper,
    Resizer,
    make_anomaly_pipeline,
)
from anomseg.utils import LesionExclusion

# A non-canonical grid (LPS, anisotropic): paths are read reoriented.
AFFINE = np.array([[-1.2, 0, 0, 90.0], [0, -1.0, 0, 120.0], [0, 0, 2.0, -60.0], [0, 0, 0, 1]])
MAX_FPR = 0.1
TINY_DAE = {
    "width": 4,
    "depth": 3,
    "noise_resolution": 4,
    "n_epochs": 2,
    "batch_size": 4,
    "validation_fraction": 0.0,
    "device": "cpu",
    "random_state": 0,
}
TINY_ASCNET = {
    "width": 4,
    "n_stage1_cycles": 2,
    "n_stage2_cycles": 1,
    "discriminator_steps": 2,
    "generator_steps": 3,
    "batch_size": 4,
    "calibration_fraction": 0.5,
    "device": "cpu",
    "random_state": 0,
}


def _volumes(n, seed, shape=(32, 32), depth=6):
    slices = make_healthy_images(n_images=n * depth, shape=shape, random_state=seed)
    return [np.moveaxis(slices[depth * i : depth * (i + 1)], 0, -1) for i in range(n)]


@pytest.fixture(scope="module")
def patients():
    """4 scans of 32 x 32 x 6 with one bright lesion each, and its mask."""
    scans, lesions = add_synthetic_lesions(
        _volumes(4, seed=0), n_lesions=1, radius=(2, 3), contrast=1.0, random_state=0
    )
    lesions = [lesion.astype(bool) for lesion in lesions]
    assert all(lesion.any() for lesion in lesions)
    # the lesions touch some slices of each scan, not all
    assert all(0 < lesion.any(axis=(0, 1)).sum() < 6 for lesion in lesions)
    return scans, lesions


def _counted(scans, excluded):
    return [(scan != 0) & ~mask for scan, mask in zip(scans, excluded)]


# -- LesionExclusion -------------------------------------------------------------------
def _random_lesion(shape, seed):
    rng = np.random.default_rng(seed)
    lesion = np.zeros(shape, bool)
    lesion[tuple(rng.integers(2, s - 2) for s in shape)] = True
    lesion[tuple(rng.integers(2, s - 2) for s in shape)] = True
    return lesion


@pytest.mark.parametrize("shape", [(12, 10, 7), (12, 10)])
@pytest.mark.parametrize("margin", [0, 1, 3])
def test_margin_is_a_binary_dilation(shape, margin):
    lesion = _random_lesion(shape, seed=margin)
    expected = ndimage.binary_dilation(lesion, iterations=margin) if margin else lesion
    got = LesionExclusion([lesion], margin=margin).mask(0, shape)
    assert got.dtype == bool
    np.testing.assert_array_equal(got, expected)
    assert got.sum() > lesion.sum() or margin == 0


@pytest.mark.parametrize("axis", [-1, 0])
def test_whole_slices_are_the_slices_the_grown_lesion_touches(axis):
    shape = (12, 10, 7)
    lesion = _random_lesion(shape, seed=5)
    grown = ndimage.binary_dilation(lesion, iterations=1)
    axis_ = axis % 3
    touched = grown.any(axis=tuple(a for a in range(3) if a != axis_))
    assert 0 < touched.sum() < shape[axis_]
    expected = np.zeros(shape, bool)
    index = [slice(None)] * 3
    index[axis_] = touched
    expected[tuple(index)] = True
    got = LesionExclusion([lesion], margin=1, whole_slices=True, axis=axis).mask(0, shape)
    np.testing.assert_array_equal(got, expected)


def test_none_excludes_nothing_and_integer_masks_are_masks():
    shape = (10, 10, 6)
    lesion = _random_lesion(shape, seed=0)
    exclusion = LesionExclusion([None, lesion.astype(np.uint8), lesion.astype(np.int64)])
    assert len(exclusion) == 3
    assert exclusion.mask(0, shape).shape == shape
    assert not exclusion.mask(0, shape).any()
    np.testing.assert_array_equal(exclusion.mask(1, shape), lesion)
    np.testing.assert_array_equal(exclusion.mask(2, shape), lesion)


@pytest.fixture(scope="module")
def images():
    """4 healthy 2D images and a lesion-like square in each."""
    X = make_healthy_images(n_images=4, shape=(16, 16), random_state=0)
    lesion = np.zeros((16, 16), bool)
    lesion[6:9, 6:9] = True
    return X, lesion


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda m: [m.astype(float)] * 4, TypeError, r"exclude\[0\] must be a boolean mask"),
        (lambda m: [m * np.uint8(2)] * 4, ValueError, r"exclude\[0\] must hold 0 and 1"),
        (
            lambda m: [m, m, m[:8], m],
            ValueError,
            r"exclude\[2\] has shape \(8, 16\).*spatial shape \(16, 16\)",
        ),
        (lambda m: [m] * 3, ValueError, r"3 mask\(s\) for 4 sample\(s\)"),
        (lambda m: LesionExclusion([m] * 5), ValueError, r"5 mask\(s\) for 4 sample\(s\)"),
        (lambda m: "lesions.nii.gz", TypeError, r"'exclude' passed to FlairThreshold.fit.*str"),
        (lambda m: 3, TypeError, r"'exclude' passed to FlairThreshold.fit.*int"),
    ],
    ids=["float", "not-0-1", "shape", "too-few", "too-many", "str", "int"],
)
def test_bad_exclude_is_named(images, make, error, match):
    X, lesion = images
    with pytest.raises(error, match=match):
        FlairThreshold().fit(X, exclude=make(lesion))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"masks": "lesions.nii.gz"}, TypeError, r"'masks' of LesionExclusion.*str"),
        ({"masks": np.zeros((2, 4, 4), bool)}, TypeError, r"'masks' of LesionExclusion"),
        ({"masks": [None], "margin": -1}, ValueError, r"'margin' of LesionExclusion.*-1"),
        ({"masks": [None], "margin": 1.5}, ValueError, r"'margin' of LesionExclusion.*1\.5"),
        ({"masks": [None], "whole_slices": "yes"}, TypeError, r"'whole_slices'"),
    ],
)
def test_bad_lesion_exclusion_is_named(kwargs, error, match):
    masks = kwargs.pop("masks")
    with pytest.raises(error, match=match):
        LesionExclusion(masks, **kwargs)


# -- calibration on the whole scans --------------------------------------------------------
def test_flair_calibrates_on_whole_scans_without_the_lesions(patients):
    scans, lesions = patients
    model = FlairThreshold(max_fpr=MAX_FPR).fit(scans, exclude=lesions)
    counted = _counted(scans, lesions)
    # each scan equalised whole, lesion included, as predict will
    maps = model.score_samples(scans)
    assert model.threshold_ == threshold_at_fpr(maps, MAX_FPR, counted)
    assert model.n_calibration_pixels_ == sum(int(c.sum()) for c in counted)
    values = np.concatenate([m[c] for m, c in zip(maps, counted)])
    assert model.calibration_fpr_ == np.mean(values > model.threshold_)
    assert 0.9 * MAX_FPR <= model.calibration_fpr_ <= MAX_FPR

    # Equalising without the lesions, as exclude_lesions makes fit do, gives
    # the healthy voxels the top of the scale that the bright lesions take in
    # whole scans: a higher threshold, by about the lesions' share.
    background = [np.ma.masked_equal(scan, 0) for scan in scans]
    without = FlairThreshold(max_fpr=MAX_FPR).fit(exclude_lesions(background, lesions))
    assert without.n_calibration_pixels_ == model.n_calibration_pixels_
    share = min(lesion.sum() / (scan != 0).sum() for scan, lesion in zip(scans, lesions))
    assert share > 0.005
    assert without.threshold_ - model.threshold_ > 0.5 * share


def test_margin_and_slices_leave_out_more(patients):
    scans, lesions = patients
    grown = [ndimage.binary_dilation(lesion, iterations=1) for lesion in lesions]
    model = FlairThreshold(max_fpr=MAX_FPR).fit(scans, exclude=LesionExclusion(lesions, margin=1))
    assert model.n_calibration_pixels_ == sum(int(c.sum()) for c in _counted(scans, grown))
    assert model.threshold_ == threshold_at_fpr(
        model.score_samples(scans), MAX_FPR, _counted(scans, grown)
    )
    slices = FlairThreshold(max_fpr=MAX_FPR).fit(
        scans, exclude=LesionExclusion(lesions, whole_slices=True)
    )
    kept = [scan[..., ~lesion.any(axis=(0, 1))] for scan, lesion in zip(scans, lesions)]
    assert slices.n_calibration_pixels_ == sum(int((k != 0).sum()) for k in kept)


def test_calibrate_takes_exclude_too(patients):
    scans, lesions = patients
    counted = _counted(scans, lesions)
    model = FlairThreshold(max_fpr=MAX_FPR).fit(scans)
    assert model.n_calibration_pixels_ == sum(int((s != 0).sum()) for s in scans)
    model.calibrate(scans, exclude=lesions)
    assert model.n_calibration_pixels_ == sum(int(c.sum()) for c in counted)
    assert model.threshold_ == threshold_at_fpr(model.score_samples(scans), MAX_FPR, counted)

    pipe = make_anomaly_pipeline(ForegroundCropper(), FlairThreshold(max_fpr=MAX_FPR))
    pipe.fit(scans)
    pipe.calibrate(scans, exclude=LesionExclusion(lesions))
    assert pipe[-1].n_calibration_pixels_ == model.n_calibration_pixels_
    assert pipe.threshold_ == model.threshold_


def test_pipeline_carries_the_masks_through_geometric_steps(patients):
    scans, lesions = patients
    counted = _counted(scans, lesions)
    direct = FlairThreshold(max_fpr=MAX_FPR).fit(scans, exclude=lesions)
    pipe = make_anomaly_pipeline(ForegroundCropper(), FlairThreshold(max_fpr=MAX_FPR))
    pipe.fit(scans, exclude=lesions)
    # the crop keeps every foreground voxel, and equalisation ignores the rest
    assert pipe[-1].n_calibration_pixels_ == sum(int(c.sum()) for c in counted)
    assert pipe.threshold_ == direct.threshold_

    # A resized scan excluded whole stays excluded whole.
    everything = [np.ones(scans[0].shape, bool), None, None, None]
    resized = make_anomaly_pipeline(Resizer((16, 16, 6)), FlairThreshold(max_fpr=MAX_FPR))
    with pytest.warns(AnomsegWarning, match=r"X\[0\]"):
        resized.fit(scans, exclude=everything)
    others = make_anomaly_pipeline(Resizer((16, 16, 6)), FlairThreshold(max_fpr=MAX_FPR))
    others.fit(scans[1:])
    assert resized[-1].n_calibration_pixels_ == others[-1].n_calibration_pixels_


# -- training ------------------------------------------------------------------------------
def _same_weights(a, b):
    state_a, state_b = a.module_.state_dict(), b.module_.state_dict()
    assert list(state_a) == list(state_b)
    return all(np.array_equal(state_a[k].numpy(), state_b[k].numpy()) for k in state_a)


def test_slice_wise_training_leaves_out_the_excluded_slices(patients):
    """Whole excluded slices: the network trains on the other slices, in the
    same order, as if the scans had been given without them."""
    scans, lesions = patients
    excluded = DenoisingAESegmenter(**TINY_DAE).fit(
        scans, exclude=LesionExclusion(lesions, whole_slices=True), calibrate=False
    )
    kept = [scan[..., ~lesion.any(axis=(0, 1))] for scan, lesion in zip(scans, lesions)]
    assert sum(k.shape[-1] for k in kept) < 4 * 6
    removed = DenoisingAESegmenter(**TINY_DAE).fit(kept, calibrate=False)
    assert _same_weights(excluded, removed)
    # and the exclusion did change what was learnt
    whole = DenoisingAESegmenter(**TINY_DAE).fit(scans, calibrate=False)
    assert not _same_weights(excluded, whole)


# -- samples left with nothing ---------------------------------------------------------------
def test_a_sample_excluded_whole_warns_and_is_not_counted(patients):
    scans, lesions = patients
    exclude = [lesions[0], scans[1] != 0, lesions[2], None]
    with pytest.warns(AnomsegWarning, match=r"no foreground voxel of X\[1\]"):
        model = FlairThreshold(max_fpr=MAX_FPR).fit(scans, exclude=exclude)
    counted = _counted(scans, [lesions[0], scans[1] != 0, lesions[2], np.zeros_like(lesions[3])])
    assert not counted[1].any()
    assert model.n_calibration_pixels_ == sum(int(c.sum()) for c in counted)
    assert model.threshold_ == threshold_at_fpr(model.score_samples(scans), MAX_FPR, counted)


def test_every_sample_excluded_whole_is_an_error(patients):
    scans, _ = patients
    with pytest.raises(ValueError, match="leaves no foreground voxel in any sample"):
        FlairThreshold().fit(scans, exclude=[scan != 0 for scan in scans])
    with pytest.raises(ValueError, match="leaves no foreground voxel in any sample"):
        FlairThreshold().fit(
            scans, exclude=LesionExclusion([np.ones(s.shape, bool) for s in scans])
        )


# -- NIfTI paths ---------------------------------------------------------------------------------
def _write(path, data, affine=AFFINE):
    nib.save(nib.Nifti1Image(np.asarray(data), affine), path)
    return str(path)


@pytest.fixture
def files(patients, tmp_path):
    scans, lesions = patients
    paths = [
        _write(tmp_path / f"scan{i}.nii.gz", s.astype(np.float32)) for i, s in enumerate(scans)
    ]
    masks = [
        _write(tmp_path / f"mask{i}.nii.gz", m.astype(np.uint8)) for i, m in enumerate(lesions)
    ]
    return paths, masks


def test_paths_give_the_model_of_the_loaded_arrays(files):
    paths, masks = files
    scans = [load_nifti(p)[0] for p in paths]
    lesions = [load_nifti(m)[0] > 0 for m in masks]
    for make in (list, lambda m: LesionExclusion(m, margin=1)):
        from_files = FlairThreshold(max_fpr=MAX_FPR).fit(paths, exclude=make(masks))
        from_arrays = FlairThreshold(max_fpr=MAX_FPR).fit(scans, exclude=make(lesions))
        assert from_files.n_calibration_pixels_ == from_arrays.n_calibration_pixels_
        assert from_files.threshold_ == from_arrays.threshold_
        assert from_files.calibration_thresholds_ == from_arrays.calibration_thresholds_
    # the lesions were left out
    assert from_files.n_calibration_pixels_ < sum(int((s != 0).sum()) for s in scans)


def test_a_mask_file_on_another_grid_is_named(files, tmp_path):
    paths, masks = files
    shifted = AFFINE.copy()
    shifted[:3, 3] += 5
    bad = _write(tmp_path / "shifted.nii.gz", nib.load(masks[1]).dataobj, affine=shifted)
    with pytest.raises(
        ValueError, match=r"exclusion mask '.*shifted\.nii\.gz' is not on the grid"
    ):
        FlairThreshold().fit(paths, exclude=[masks[0], bad, *masks[2:]])
    small = _write(tmp_path / "small.nii.gz", np.zeros((16, 16, 6), np.uint8))
    with pytest.raises(ValueError, match=r"small\.nii\.gz"):
        FlairThreshold().fit(paths, exclude=[small, *masks[1:]])


def test_a_mask_file_that_is_not_binary_is_named(files, tmp_path):
    paths, masks = files
    labels = np.asarray(nib.load(masks[2]).dataobj).astype(np.uint8) * 2
    bad = _write(tmp_path / "labels.nii.gz", labels)
    with pytest.raises(ValueError, match=r"exclusion mask '.*labels\.nii\.gz' is not binary"):
        FlairThreshold().fit(paths, exclude=[*masks[:2], bad, masks[3]])


def test_a_scan_file_excluded_whole_warns_naming_it(files, patients, tmp_path):
    paths, masks = files
    scans, _ = patients
    everything = _write(tmp_path / "everything.nii.gz", np.ones(scans[0].shape, np.uint8))
    with pytest.warns(AnomsegWarning, match=r"scan2\.nii\.gz"):
        FlairThreshold().fit(paths, exclude=[masks[0], masks[1], everything, None])


# -- ASC-Net: what it learns from whole -----------------------------------------------------------
@pytest.fixture(scope="module")
def mixed(patients):
    """4 healthy scans then 4 unlabelled ones (y = 0, then -1)."""
    scans, lesions = patients
    X = _volumes(4, seed=1) + list(scans)
    y = np.r_[np.zeros(4, int), -np.ones(4, int)]
    return X, y, lesions


def test_ascnet_refuses_exclusion_on_unlabelled_samples(mixed):
    X, y, lesions = mixed
    exclude = [None] * 4 + list(lesions)
    with pytest.raises(ValueError, match=r"unlabelled samples \(y = -1\)"):
        ASCNetSegmenter(**TINY_ASCNET).fit(X, y, exclude=exclude)


def test_ascnet_refuses_exclusion_on_unlabelled_samples_in_a_pipeline(mixed):
    X, y, lesions = mixed
    pipe = AnomalyPipeline([("ascnet", ASCNetSegmenter(**TINY_ASCNET))])
    with pytest.raises(ValueError, match=r"unlabelled samples \(y = -1\)"):
        pipe.fit(X, y, exclude=[None] * 4 + list(lesions))
    # on the healthy (reference) samples, exclusion is fine
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pipe.fit(X, y, exclude=list(lesions) + [None] * 4)
    assert np.isfinite(pipe.threshold_)
