"""Resampler: images to a voxel spacing, each from its own voxel size, and
anomaly maps back onto each image's own grid."""

import pickle

import nibabel as nib
import numpy as np
import pytest
from sklearn.base import clone

from anomseg import load_model, model_info
from anomseg.baselines import FlairThreshold
from anomseg.exceptions import ShapeMismatchError
from anomseg.io import load_nifti
from anomseg.preprocessing import IntensityScaler, Resampler, make_anomaly_pipeline
from anomseg.utils import check_images


def blob(shape, voxel_size, centre=(12.0, 11.0, 7.0), width=5.0):
    """A smooth bright head on 0: a Gaussian of ``width`` mm sampled at the
    voxel centres of a grid of ``shape`` voxels of ``voxel_size`` mm (voxel
    ``i`` centred at ``(i + 0.5) * size``), so that two grids of one field
    of view image the same object."""
    axes = [(np.arange(n) + 0.5) * s - c for n, s, c in zip(shape, voxel_size, centre)]
    grid = np.meshgrid(*axes, indexing="ij")
    r2 = sum(g**2 for g in grid)
    return np.where(r2 < 9**2, 1 + np.exp(-r2 / (2 * width**2)), 0).astype(np.float32)


def two_sites():
    """One object imaged at 2 x 2 x 2 mm and at 1 x 1 x 1 mm (one field of
    view), as an ImageBatch that carries the voxel sizes."""
    scans = [blob((12, 12, 8), (2, 2, 2)), blob((24, 24, 16), (1, 1, 1))]
    return check_images(scans, voxel_sizes=[(2, 2, 2), (1, 1, 1)])


def test_each_image_is_resampled_from_its_own_voxel_size():
    X = two_sites()
    out = Resampler(spacing=1).fit(X).transform(X)
    assert out.spatial_shapes == [(24, 24, 16), (24, 24, 16)]
    assert out.voxel_sizes == [(1.0, 1.0, 1.0)] * 2
    # The coarse scan lands on the fine one's grid: the same object, to
    # within the linear interpolation of a 2 mm grid, away from its rim
    # (inside 6 mm of its centre).
    coarse, fine = out.images
    inner = fine > 1 + np.exp(-(6**2) / (2 * 5**2))
    assert inner.sum() > 500
    assert np.abs(coarse - fine)[inner].max() < 0.05
    # The foregrounds, by nearest neighbour, are the same but for the rim.
    assert out.foreground[0].dtype == bool
    assert (out.foreground[0] != out.foreground[1]).mean() < 0.05


def test_grids_keep_the_field_of_view_and_centre():
    # A ramp in mm is kept by linear interpolation: each output voxel holds
    # the position of its centre, so the grids are aligned as documented.
    shape, size = (10, 6, 4), (1.0, 2.0, 3.0)
    ramp = ((np.arange(10) + 0.5) * 1.0)[:, None, None] * np.ones(shape, np.float32)
    X = check_images([ramp + 1], voxel_sizes=[size])
    resampler = Resampler(spacing=(0.5, 1, 1)).fit(X)
    out = resampler.transform(X).images[0]
    assert out.shape == (20, 12, 12)
    centres = (np.arange(20) + 0.5) * 0.5
    np.testing.assert_allclose(out[1:-1, 0, 0], centres[1:-1] + 1, rtol=1e-6)
    # Back on the image's grid: the same shape, and at each voxel the value
    # of the nearest voxel of the fine grid, whose centre lies 0.25 mm off.
    back = resampler.inverse_transform([out], shapes=[shape], voxel_sizes=[size])[0]
    assert back.shape == shape and back.dtype == np.float32
    error = np.abs(back - (ramp + 1))[1:-1]
    np.testing.assert_allclose(error, 0.25, rtol=1e-4)
    assert set(np.unique(back)) <= set(np.unique(out))  # values of the map, none made up


def test_inverse_takes_maps_and_masks_back_to_each_grid():
    X = two_sites()
    resampler = Resampler(spacing=1.5).fit(X)
    out = resampler.transform(X)
    grids = {"shapes": X.spatial_shapes, "voxel_sizes": X.voxel_sizes}
    maps = resampler.inverse_transform(out.images, **grids)
    assert [m.shape for m in maps] == X.spatial_shapes
    masks = resampler.inverse_transform(out.foreground, **grids)
    assert all(m.dtype == bool for m in masks)
    # Nearest neighbour: a foreground mask comes back where it was, but for
    # a rim of at most one voxel.
    for mask, fg in zip(masks, X.foreground):
        assert (mask != fg).mean() < 0.05
    with pytest.raises(ShapeMismatchError, match=r"maps\[0\].*resamples to"):
        resampler.inverse_transform(X.images, **grids)


def test_a_pipeline_fits_and_scores_scans_of_two_voxel_sizes_on_their_grids():
    X = two_sites()
    pipe = make_anomaly_pipeline(Resampler(spacing=1), FlairThreshold()).fit(X)
    maps = pipe.score_samples(X)
    assert [m.shape for m in maps] == X.spatial_shapes
    masks = pipe.predict(X)
    for m, mask, fg in zip(maps, masks, X.foreground):
        np.testing.assert_array_equal(mask, (m > pipe.threshold_) & fg)
    masked = pipe.masked_score_samples(X)
    for m, fg in zip(masked, X.foreground):
        assert (m.mask != ~fg).mean() < 0.05
    # The same object gives the same flagged fraction at both voxel sizes.
    fractions = [mask.sum() / fg.sum() for mask, fg in zip(masks, X.foreground)]
    assert abs(fractions[0] - fractions[1]) < 0.05


def test_a_pipeline_scores_inputs_of_two_voxel_sizes_together_on_their_grids():
    """prepare_scoring resamples each input, score_prepared scores them as
    one batch and map_back brings each input's maps back to its own grid:
    score_samples's maps of each input alone."""
    X = two_sites()
    pipe = make_anomaly_pipeline(Resampler(spacing=1), FlairThreshold()).fit(X)
    first, second = X.subset([0]), X.subset([1])
    prepared = [pipe.prepare_scoring(first), pipe.prepare_scoring(second)]
    # both on the model's 1 mm grid: 16 slices each
    assert [p.batch.spatial_shapes for p in prepared] == [[(24, 24, 16)]] * 2
    assert [p.n_slices for p in prepared] == [16, 16]
    together = pipe.score_prepared(prepared)
    for p, maps, alone in zip(prepared, together, (first, second)):
        back = p.map_back(maps)
        assert [m.shape for m in back] == alone.spatial_shapes
        np.testing.assert_array_equal(back[0], pipe.score_samples(alone)[0])
    assert together[0][0].shape == (24, 24, 16)  # before map_back, the model's grid


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_calibrated_rate_holds_on_the_scans_grid(seed):
    """A threshold calibrated on the resampled grid flags the same share of
    healthy voxels on the scans' own grid: maps go back by nearest
    neighbour. (Linearly interpolated, these noisy maps flagged 0.2 %.)"""
    rng = np.random.default_rng(seed)
    shape, size = (40, 40, 12), (1.0, 1.0, 1.0)
    scans = [100 + 10 * rng.standard_normal(shape).astype(np.float32) for _ in range(8)]
    healthy, new = (check_images(s, voxel_sizes=[size] * 4) for s in (scans[:4], scans[4:]))
    pipe = make_anomaly_pipeline(Resampler(spacing=(2, 2, 1)), FlairThreshold(max_fpr=0.05))
    masks = pipe.fit(healthy).predict(new)
    assert [m.shape for m in masks] == [shape] * 4
    assert 0.035 < np.mean(masks) < 0.065


def test_arrays_without_voxel_sizes_are_refused_naming_what_is_missing():
    images = [np.ones((8, 8, 4))]
    resampler = Resampler(spacing=1).fit(images)
    with pytest.raises(ValueError, match=r"Resampler.transform needs the voxel size.*voxel_sizes"):
        resampler.transform(images)
    with pytest.raises(ValueError, match=r"'voxel_sizes'.*one voxel size per image \(1\)"):
        check_images(images, voxel_sizes=[(1, 1)])
    with pytest.raises(ValueError, match=r"'voxel_sizes'.*positive"):
        check_images(images, voxel_sizes=[(1, 0, 1)])


@pytest.mark.parametrize("spacing", [0, -1, (1, 1), (1, 1, 1, 1), "big", np.nan, 2000])
def test_bad_spacing_names_itself(spacing):
    X = check_images([np.ones((8, 8, 4))], voxel_sizes=[(1, 1, 1)])
    with pytest.raises(ValueError, match="'spacing' parameter of Resampler must"):
        Resampler(spacing=spacing).fit(X)


def test_transformer_contract():
    X = two_sites()
    resampler = Resampler(spacing=2).fit(X)
    assert clone(resampler).get_params() == {"spacing": 2, "channel_axis": None}
    assert not hasattr(clone(resampler), "spacing_")
    restored = pickle.loads(pickle.dumps(resampler))
    for a, b in zip(restored.transform(X).images, resampler.transform(X).images):
        np.testing.assert_array_equal(a, b)
    # Masked list out for a list in, the input untouched.
    copies = [image.copy() for image in X.images]
    out = resampler.fit_transform(X.images[:1] and X).to_masked()
    assert isinstance(out, list) and isinstance(out[0], np.ma.MaskedArray)
    for image, copy in zip(X.images, copies):
        np.testing.assert_array_equal(image, copy)
    # Channels ride along.
    two = [np.stack([image, 2 * image], axis=-1) for image in X.images]
    Xc = check_images(two, channel_axis=-1, voxel_sizes=X.voxel_sizes)
    fitted = Resampler(spacing=2, channel_axis=-1).fit(Xc)
    outc = fitted.transform(Xc)
    assert fitted.n_channels_ == 2 and outc.images[0].shape == (12, 12, 8, 2)
    np.testing.assert_allclose(outc.images[0][..., 1], 2 * outc.images[0][..., 0], rtol=1e-6)


def write(path, data, affine):
    nib.save(nib.Nifti1Image(data, affine), path)
    return str(path)


def test_nifti_scans_carry_their_voxel_sizes_in_canonical_order(tmp_path):
    # Axes stored as (z, y, x) with voxels of 3, 2, 1 mm: reoriented to RAS,
    # the array's axes have voxels of 1, 2, 3 mm.
    affine = np.array([[0, 0, 1.0, 0], [0, 2.0, 0, 0], [3.0, 0, 0, 0], [0, 0, 0, 1]])
    path = write(tmp_path / "s.nii.gz", np.ones((4, 5, 6), np.float32), affine)
    image, reference = load_nifti(path)
    assert image.shape == (6, 5, 4)
    assert reference.canonical_voxel_sizes == (1.0, 2.0, 3.0)


def test_fit_on_paths_is_fit_on_arrays_and_the_model_file_holds_it(tmp_path):
    """Streamed NIfTI paths carry their voxel sizes, exclusion masks follow
    the resampling, and the safe format rebuilds the Resampler."""
    sizes = [(2.0, 2.0, 2.0), (1.0, 1.0, 1.0)]
    X = two_sites()
    paths = [
        write(tmp_path / f"s{i}.nii.gz", image, np.diag([*size, 1.0]))
        for i, (image, size) in enumerate(zip(X.images, sizes))
    ]
    lesions = [np.zeros(shape, np.uint8) for shape in X.spatial_shapes]
    lesions[0][5:7, 5:7, 3:5] = 1
    lesions[1][10:14, 10:14, 6:10] = 1
    masks = [
        write(tmp_path / f"l{i}.nii.gz", m, np.diag([*s, 1.0]))
        for i, (m, s) in enumerate(zip(lesions, sizes))
    ]

    def pipeline():
        return make_anomaly_pipeline(Resampler(spacing=1.5), IntensityScaler(), FlairThreshold())

    streamed = pipeline().fit(paths, exclude=masks)
    in_memory = pipeline().fit(X, exclude=[m.astype(bool) for m in lesions])
    assert streamed.threshold_ == in_memory.threshold_
    assert streamed[-1].n_calibration_pixels_ == in_memory[-1].n_calibration_pixels_
    path = streamed.save(tmp_path / "m.anomseg")
    loaded = load_model(path)
    assert isinstance(loaded[0], Resampler) and loaded[0].spacing_ == (1.5, 1.5, 1.5)
    assert model_info(path)["steps"] == ["Resampler", "IntensityScaler", "FlairThreshold"]
    for a, b in zip(loaded.score_samples(X), streamed.score_samples(X)):
        np.testing.assert_array_equal(a, b)


def test_a_stack_of_several_voxel_sizes_comes_back_a_stack():
    # Same shape, other voxel sizes: resampled shapes differ, maps do not.
    images = np.stack([blob((12, 12, 8), (2, 2, 2)), blob((12, 12, 8), (2, 2, 1))])
    X = check_images(images, voxel_sizes=[(2, 2, 2), (2, 2, 1)])
    pipe = make_anomaly_pipeline(Resampler(spacing=1), FlairThreshold()).fit(X)
    for method in (pipe.score_samples, pipe.predict, pipe.masked_score_samples):
        out = method(X)
        assert isinstance(out, np.ndarray) and out.shape == images.shape
    out = pipe.score_samples(check_images(list(images), voxel_sizes=X.voxel_sizes))
    assert isinstance(out, list)


def test_the_voxel_budget_counts_the_resampled_voxels(monkeypatch):
    """A scan within the budget that resampling makes larger than it is
    refused before it is resampled; the scan's own voxels are not what the
    method processes."""
    X = check_images([blob((12, 12, 8), (2, 2, 2))], voxel_sizes=[(2, 2, 2)])
    monkeypatch.setenv("ANOMSEG_MAX_VOXELS", str(12 * 12 * 8))
    assert Resampler(spacing=2).fit_transform(X).images[0].shape == (12, 12, 8)
    with pytest.raises(
        ValueError,
        match=r"X\[0\] passed to Resampler.transform, of 12 x 12 x 8 voxels of 2 x 2 x 2 mm, "
        r"resamples at spacing 1 x 1 x 2 mm to 24 x 24 x 8 voxels \(4,608\), beyond the "
        r"budget of 1,152 voxels; .*'spacing'.*ANOMSEG_MAX_VOXELS=N \(--max-voxels N",
    ):
        Resampler(spacing=(1, 1, 2)).fit_transform(X)
    monkeypatch.setenv("ANOMSEG_MAX_VOXELS", "4608")
    assert Resampler(spacing=(1, 1, 2)).fit_transform(X).images[0].shape == (24, 24, 8)
