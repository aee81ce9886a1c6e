"""Loaders of the real data sets in ../shared/data (skipped when absent)."""

from pathlib import Path

import numpy as np
import pytest

from anomseg.datasets import (
    apply_brain_masks,
    extract_slices,
    load_ixi_t1,
    load_lgg_flair,
    load_mslub,
)
from anomseg.io import NiftiReference

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _data_dir(name):
    path = DATA / name
    if not path.is_dir():
        pytest.skip(f"real data set '{name}' not found at {path}")
    return path


@pytest.fixture(scope="module")
def lgg_validation():
    return load_lgg_flair(_data_dir("lgg_flair"), split="validation")


def test_lgg_split_sizes(lgg_validation):
    split = lgg_validation.split
    assert len(split["train"]) == 60 and len(split["validation"]) == 20
    assert not set(split["train"]) & set(split["validation"])
    assert lgg_validation.subjects == sorted(split["validation"])


def test_lgg_volumes(lgg_validation):
    data = lgg_validation
    assert len(data.images) == len(data.masks) == len(data.references) == 20
    for image, mask, ref in zip(data.images, data.masks, data.references):
        assert image.dtype == np.float32 and mask.dtype == bool
        assert image.shape[:2] == (128, 128) and 20 <= image.shape[2] <= 88
        assert mask.shape == image.shape == ref.canonical_shape
        assert isinstance(ref, NiftiReference)
    assert sum(m.any() for m in data.masks) > 0


def test_lgg_brain_masks(lgg_validation):
    data = lgg_validation
    assert len(data.brain_masks) == 20
    for image, mask, brain in zip(data.images, data.masks, data.brain_masks):
        assert brain.dtype == bool and brain.shape == image.shape
        # The brain is a part of the head, and holds (nearly) all of the tumour.
        assert 0.05 < brain.mean() < 0.6  # 0.13-0.38 of the 128 x 128 x n grid
        if mask.any():
            assert brain[mask].mean() > 0.97
    brains = apply_brain_masks(data.images, data.brain_masks)
    assert all(b.count() == m.sum() for b, m in zip(brains, data.brain_masks))


def test_lgg_subjects_and_errors(tmp_path):
    path = _data_dir("lgg_flair")
    data = load_lgg_flair(path, subjects=["TCGA_CS_4941_19960909"])
    assert data.subjects == ["TCGA_CS_4941_19960909"]
    assert len(data.images) == 1
    with pytest.raises(ValueError, match="'split'"):
        load_lgg_flair(path, split="test")
    with pytest.raises(ValueError, match="unknown 'nobody'"):
        load_lgg_flair(path, subjects=["nobody"])
    with pytest.raises(FileNotFoundError, match="split.json"):
        load_lgg_flair(tmp_path)


def test_lgg_healthy_slices(lgg_validation):
    data = lgg_validation
    healthy = extract_slices(data.images, data.masks, lesion_free=True, groups=data.subjects)
    lesion = extract_slices(data.images, data.masks, lesion_free=False)
    n_slices = sum(im.shape[-1] for im in data.images)
    assert len(healthy.images) + len(lesion.images) == n_slices
    assert healthy.images.shape[1:] == (128, 128)
    assert not healthy.masks.any()
    assert all(m.any() for m in lesion.masks)
    assert set(healthy.groups) <= set(data.subjects)
    first = data.subjects[0]
    n_first = int((~data.masks[0].any(axis=(0, 1))).sum())
    assert (healthy.groups == first).sum() == n_first


def test_mslub_foreground_is_flair_positive():
    path = _data_dir("mslub")
    data = load_mslub(path, modalities=("flair", "t2"), subjects=["patient07"])
    image = data.images[0]
    assert image.shape == (182, 218, 182, 2)
    assert isinstance(image, np.ma.MaskedArray)
    flair = np.ma.getdata(image)[..., 0]
    np.testing.assert_array_equal(image.mask[..., 0], flair <= 0)
    np.testing.assert_array_equal(image.mask[..., 1], flair <= 0)
    assert data.masks[0].sum() == 1300
    assert data.modalities == ["flair", "t2"]
    single = load_mslub(path, subjects=["patient07"])
    assert single.images[0].shape == (182, 218, 182)


def test_mslub_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no data folder"):
        load_mslub(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="_flair.nii.gz"):
        load_mslub(tmp_path)
    with pytest.raises(ValueError, match="'modalities'"):
        load_mslub(tmp_path, modalities=("pd",))


def test_ixi():
    path = _data_dir("ixi_t1")
    data = load_ixi_t1(path, subjects=["IXI013-HH-1212"])
    # Stored P, S, R at 120 x 120 x 90: canonical puts R first, S last.
    assert data.images[0].shape == (90, 120, 120)
    assert data.references[0].shape == (120, 120, 90)
    assert data.subjects == ["IXI013-HH-1212"]
    with pytest.raises(FileNotFoundError, match="_T1.nii.gz"):
        load_ixi_t1(DATA / "lgg_flair")
