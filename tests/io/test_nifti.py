"""NIfTI loading in canonical orientation and atomic saving onto the
original grid."""

import os
import pickle

import nibabel as nib
import numpy as np
import pytest

from anomseg.io import (
    NiftiReference,
    load_nifti,
    load_nifti_reference,
    load_niftis,
    save_nifti,
    save_niftis,
)

# A permuted, flipped, anisotropic grid (axis codes P, S, L) with an offset,
# the kind of file a scanner writes and viewers must overlay exactly.
NON_CANONICAL_AFFINE = np.array(
    [
        [0.0, 0.0, -2.0, 10.0],
        [-1.5, 0.0, 0.0, 20.0],
        [0.0, 3.0, 0.0, -5.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
SHAPE = (5, 6, 7)


@pytest.fixture
def scan(tmp_path):
    data = np.random.default_rng(0).random(SHAPE).astype(np.float32)
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(data, NON_CANONICAL_AFFINE), path)
    return path, data


def test_load_gives_canonical_orientation(scan):
    path, data = scan
    loaded, ref = load_nifti(path)
    assert nib.aff2axcodes(NON_CANONICAL_AFFINE) == ("P", "S", "L")
    assert nib.aff2axcodes(ref.canonical_affine) == ("R", "A", "S")
    assert loaded.dtype == np.float32
    assert loaded.shape == ref.canonical_shape == (7, 5, 6)
    expected = nib.as_closest_canonical(nib.load(path))
    np.testing.assert_allclose(ref.canonical_affine, expected.affine)
    np.testing.assert_array_equal(loaded, expected.get_fdata(dtype=np.float32))
    # The world coordinate of every voxel is unchanged by the reorientation.
    i, j, k = 1, 2, 3
    original_index = (
        np.linalg.solve(NON_CANONICAL_AFFINE, ref.canonical_affine @ [i, j, k, 1])[:3]
        .round()
        .astype(int)
    )
    assert loaded[i, j, k] == data[tuple(original_index)]


def test_round_trip_keeps_grid_and_values(scan, tmp_path):
    path, data = scan
    loaded, ref = load_nifti(path)
    out = save_nifti(loaded, ref, tmp_path / "map.nii.gz")
    saved = nib.load(out)
    assert saved.shape == SHAPE
    np.testing.assert_array_equal(saved.affine, NON_CANONICAL_AFFINE)
    np.testing.assert_array_equal(saved.get_fdata(dtype=np.float32), data)
    assert saved.get_data_dtype() == np.float32
    assert saved.header.get_slope_inter() == (None, None)
    again, _ = load_nifti(out)
    np.testing.assert_array_equal(again, loaded)


def test_bool_saved_as_uint8_and_scaling_dropped(tmp_path):
    # A scaled int16 source: maps must not inherit its slope.
    image = nib.Nifti1Image(np.arange(60, dtype=np.int16).reshape(3, 4, 5), NON_CANONICAL_AFFINE)
    image.header.set_slope_inter(2.0, 1.0)
    nib.save(image, tmp_path / "scaled.nii")
    loaded, ref = load_nifti(tmp_path / "scaled.nii")
    assert loaded.max() == 2 * 59 + 1
    save_nifti(loaded > 50, ref, tmp_path / "mask.nii.gz")
    saved = nib.load(tmp_path / "mask.nii.gz")
    assert saved.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(
        np.asarray(saved.dataobj), np.arange(60).reshape(3, 4, 5) * 2 + 1 > 50
    )
    save_nifti(loaded.astype(np.float64) / 4, ref, tmp_path / "f.nii.gz")
    saved = nib.load(tmp_path / "f.nii.gz")
    assert saved.get_data_dtype() == np.float32
    assert saved.header.get_slope_inter() == (None, None)


def test_load_dtype_bool(scan):
    path, data = scan
    mask, _ = load_nifti(path, dtype=bool)
    assert mask.dtype == bool and mask.sum() == (data != 0).sum()


def test_squeezes_singleton_fourth_axis(tmp_path):
    nib.save(nib.Nifti1Image(np.ones((3, 4, 5, 1), np.float32), np.eye(4)), tmp_path / "a.nii")
    data, ref = load_nifti(tmp_path / "a.nii")
    assert data.shape == (3, 4, 5) and ref.shape == (3, 4, 5)


def test_reference_pickles(scan, tmp_path):
    path, _ = scan
    loaded, ref = load_nifti(path)
    copy = pickle.loads(pickle.dumps(ref))
    assert isinstance(copy, NiftiReference)
    assert copy.canonical_shape == ref.canonical_shape
    save_nifti(loaded, copy, tmp_path / "from_copy.nii.gz")
    np.testing.assert_array_equal(
        nib.load(tmp_path / "from_copy.nii.gz").affine, NON_CANONICAL_AFFINE
    )


def test_no_overwrite_leaves_original_untouched(scan, tmp_path):
    path, _ = scan
    loaded, ref = load_nifti(path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="scan.nii.gz"):
        save_nifti(loaded * 2, ref, path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["scan.nii.gz"]


def test_link_refuses_target_created_during_write(scan, tmp_path, monkeypatch):
    # Another process creates the target after the up-front check: the
    # final link must still refuse to replace it.
    path, _ = scan
    loaded, ref = load_nifti(path)
    target = tmp_path / "late.nii.gz"
    real_save = nib.save

    def save_then_race(image, filename):
        real_save(image, filename)
        target.write_bytes(b"other")

    monkeypatch.setattr(nib, "save", save_then_race)
    with pytest.raises(FileExistsError, match="late.nii.gz"):
        save_nifti(loaded, ref, target)
    assert target.read_bytes() == b"other"
    assert sorted(os.listdir(tmp_path)) == ["late.nii.gz", "scan.nii.gz"]


def test_overwrite_replaces(scan, tmp_path):
    path, data = scan
    loaded, ref = load_nifti(path)
    save_nifti(loaded * 2, ref, path, overwrite=True)
    np.testing.assert_allclose(nib.load(path).get_fdata(), data * 2)
    assert sorted(os.listdir(tmp_path)) == ["scan.nii.gz"]


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt])
@pytest.mark.parametrize("overwrite", [False, True])
def test_failed_write_leaves_nothing(scan, tmp_path, monkeypatch, error, overwrite):
    path, _ = scan
    loaded, ref = load_nifti(path)

    def failing_save(image, filename):
        with open(filename, "wb") as f:
            f.write(b"half")
        raise error

    monkeypatch.setattr(nib, "save", failing_save)
    with pytest.raises(type(error) if isinstance(error, Exception) else error):
        save_nifti(loaded, ref, tmp_path / "map.nii.gz", overwrite=overwrite)
    assert sorted(os.listdir(tmp_path)) == ["scan.nii.gz"]


def test_save_wrong_shape(scan, tmp_path):
    path, _ = scan
    loaded, ref = load_nifti(path)
    with pytest.raises(ValueError, match=r"canonical grid .* \(7, 5, 6\)"):
        save_nifti(loaded[:, :, :-1], ref, tmp_path / "map.nii.gz")
    assert sorted(os.listdir(tmp_path)) == ["scan.nii.gz"]


def test_save_missing_directory_creates_nothing(scan, tmp_path):
    path, _ = scan
    loaded, ref = load_nifti(path)
    target = tmp_path / "missing" / "map.nii.gz"
    with pytest.raises(FileNotFoundError, match="missing"):
        save_nifti(loaded, ref, target)
    assert not target.parent.exists()


def test_save_bad_suffix(scan, tmp_path):
    path, _ = scan
    loaded, ref = load_nifti(path)
    with pytest.raises(ValueError, match="map.png"):
        save_nifti(loaded, ref, tmp_path / "map.png")


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.nii.gz"):
        load_nifti(tmp_path / "nope.nii.gz")


def test_load_not_nifti(tmp_path):
    path = tmp_path / "text.nii.gz"
    path.write_text("not an image")
    with pytest.raises(ValueError, match="text.nii.gz"):
        load_nifti(path)


@pytest.mark.parametrize("shape", [(4, 5), (3, 4, 5, 2)])
def test_load_not_3d(tmp_path, shape):
    path = tmp_path / "bad.nii"
    nib.save(nib.Nifti1Image(np.ones(shape, np.float32), np.eye(4)), path)
    with pytest.raises(ValueError, match=r"bad.nii.*3D"):
        load_nifti(path)


def test_load_niftis(scan):
    path, _ = scan
    volumes, refs = load_niftis([path, path])
    assert len(volumes) == len(refs) == 2
    np.testing.assert_array_equal(volumes[0], volumes[1])


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt])
def test_save_niftis_writes_all_or_none(scan, tmp_path, monkeypatch, error):
    path, _ = scan
    loaded, ref = load_nifti(path)
    real_save, calls = nib.save, []

    def second_fails(image, filename):
        calls.append(filename)
        real_save(image, filename)
        if len(calls) == 2:
            raise error

    monkeypatch.setattr(nib, "save", second_fails)
    targets = [(loaded, ref, tmp_path / "a_map.nii.gz"), (loaded > 0.5, ref, tmp_path / "a.nii")]
    with pytest.raises(type(error) if isinstance(error, Exception) else error):
        save_niftis(targets)
    assert sorted(os.listdir(tmp_path)) == ["scan.nii.gz"]  # not even the first
    monkeypatch.setattr(nib, "save", real_save)
    written = save_niftis(targets)
    assert [p.name for p in written] == ["a_map.nii.gz", "a.nii"]
    np.testing.assert_array_equal(load_nifti(written[1], dtype=bool)[0], loaded > 0.5)


def test_save_niftis_undoes_the_first_when_the_second_target_appears(scan, tmp_path, monkeypatch):
    path, _ = scan
    loaded, ref = load_nifti(path)
    real_save = nib.save
    late = tmp_path / "b_mask.nii.gz"

    def save_then_race(image, filename):
        real_save(image, filename)
        if not late.exists():
            late.write_bytes(b"other")

    monkeypatch.setattr(nib, "save", save_then_race)
    with pytest.raises(FileExistsError, match="b_mask.nii.gz"):
        save_niftis([(loaded, ref, tmp_path / "b_map.nii.gz"), (loaded, ref, late)])
    assert late.read_bytes() == b"other"
    assert sorted(os.listdir(tmp_path)) == ["b_mask.nii.gz", "scan.nii.gz"]


def test_load_nifti_reference_reads_the_header_alone(scan):
    path, _ = scan
    reference = load_nifti_reference(path)
    _, full = load_nifti(path)
    assert reference.shape == full.shape == SHAPE
    np.testing.assert_array_equal(reference.affine, full.affine)
    assert reference.canonical_shape == full.canonical_shape
    assert reference.header.get_zooms() == full.header.get_zooms()


def test_truncated_and_complex_files_are_named(scan, tmp_path):
    _, data = scan
    truncated = tmp_path / "truncated.nii.gz"
    large = np.random.default_rng(0).random((40, 40, 40)).astype(np.float32)
    nib.save(nib.Nifti1Image(large, NON_CANONICAL_AFFINE), truncated)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated.nii.gz' is truncated or corrupt"):
        load_nifti(truncated)
    complex_path = tmp_path / "complex.nii.gz"
    nib.save(nib.Nifti1Image(data.astype(np.complex64), np.eye(4)), complex_path)
    with pytest.raises(ValueError, match="complex.nii.gz' holds complex values"):
        load_nifti(complex_path)


# -- issue 24: headers, files and sizes that look wrong, named as such ------------
def _raw_nifti(path, edit, data=None):
    """A .nii.gz whose header ``edit(header)`` changed after nibabel set it
    up: written by hand, since nibabel rewrites the affine on save."""
    import gzip

    data = np.ones(SHAPE, np.float32) if data is None else data
    header = nib.Nifti1Image(data, np.eye(4)).header.copy()
    header.set_data_offset(352)
    edit(header)
    body = np.asarray(data, header.get_data_dtype()).tobytes(order="F")
    path.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4 + body))
    return path


def _nan_sform(header):
    sform = np.eye(4)
    sform[0, 0] = np.nan
    header.set_sform(sform, 1)


def _empty_axis(header):
    header["dim"][3] = 0


@pytest.mark.parametrize(
    "edit, words",
    [
        (_nan_sform, r"corrupt NIfTI header.*NaN or infinite"),
        (lambda h: h.set_sform(np.zeros((4, 4)), 1), r"corrupt NIfTI header.*singular"),
        (_empty_axis, r"corrupt NIfTI header.*5 x 6 x 0 voxels"),
    ],
    ids=["NaN in the sform", "zero sform", "dim[3]=0"],
)
def test_corrupt_headers_are_named_with_the_file(tmp_path, edit, words):
    path = _raw_nifti(tmp_path / "bad.nii.gz", edit)
    for load in (load_nifti_reference, load_nifti):
        with pytest.raises(ValueError, match=rf"bad\.nii\.gz.*{words}"):
            load(path)


def test_a_declared_size_beyond_the_budget_fails_before_any_voxel_is_read(tmp_path, monkeypatch):
    path = tmp_path / "huge.nii"
    header = nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4)).header
    header.set_data_shape((2000, 2000, 2000))
    path.write_bytes(header.binaryblock + b"\0" * 4)  # 352 bytes, no voxels
    words = r"huge\.nii.*2000 x 2000 x 2000 voxels.*32 GB.*ANOMSEG_MAX_VOXELS.*--max-voxels"
    with pytest.raises(ValueError, match=words):
        load_nifti(path)
    small = tmp_path / "small.nii.gz"
    nib.save(nib.Nifti1Image(np.ones(SHAPE, np.float32), np.eye(4)), small)
    with pytest.raises(ValueError, match=r"small\.nii\.gz.*budget of 100 voxels"):
        load_nifti(small, max_voxels=100)
    monkeypatch.setenv("ANOMSEG_MAX_VOXELS", "100")
    with pytest.raises(ValueError, match=r"budget of 100 voxels"):
        load_nifti_reference(small)
    assert load_nifti(small, max_voxels=210)[0].shape == SHAPE  # the keyword wins
    monkeypatch.setenv("ANOMSEG_MAX_VOXELS", "lots")
    with pytest.raises(ValueError, match=r"ANOMSEG_MAX_VOXELS must be a positive.*'lots'"):
        load_nifti(small)


def test_values_beyond_float32_are_named_as_such(tmp_path):
    data = np.ones(SHAPE)
    data[0, 0, :3] = 1e39
    data[1, 1, 1] = np.inf  # a true infinity is the caller's to name
    path = tmp_path / "big.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    with pytest.raises(ValueError, match=r"big\.nii\.gz.*3 value\(s\) beyond the float32 range"):
        load_nifti(path)
    assert load_nifti(path, dtype=np.float64)[0].max() == np.inf


def test_a_folder_or_a_pipe_is_not_a_nifti_file(tmp_path):
    (tmp_path / "folder.nii.gz").mkdir()
    with pytest.raises(IsADirectoryError, match=r"folder\.nii\.gz' is a folder"):
        load_nifti(tmp_path / "folder.nii.gz")
    os.mkfifo(tmp_path / "fifo.nii.gz")
    with pytest.raises(ValueError, match=r"fifo\.nii\.gz' is not a regular file"):
        load_nifti_reference(tmp_path / "fifo.nii.gz")
