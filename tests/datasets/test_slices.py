"""Cutting volumes into 2D slices."""

import numpy as np
import pytest

from anomseg.datasets import extract_slices


@pytest.fixture
def volumes():
    volumes = np.zeros((2, 6, 5, 4), dtype=np.float32)
    volumes[:, 1:5, 1:4, :] = 1.0
    volumes[1, :, :, 3] = 0.0  # an empty slice
    masks = np.zeros(volumes.shape, dtype=bool)
    masks[0, 2, 2, 1] = True
    masks[1, 2, 2, 0] = True
    return volumes, masks


def test_all_slices(volumes):
    images, masks = volumes
    out = extract_slices(images, masks)
    assert out.images.shape == (8, 6, 5) and out.masks.shape == (8, 6, 5)
    np.testing.assert_array_equal(out.groups, [0] * 4 + [1] * 4)
    np.testing.assert_array_equal(out.slice_index, [0, 1, 2, 3] * 2)
    np.testing.assert_array_equal(out.images[5], images[1][:, :, 1])


def test_lesion_free_and_groups(volumes):
    images, masks = volumes
    healthy = extract_slices(images, masks, lesion_free=True, groups=["a", "b"], min_foreground=1)
    np.testing.assert_array_equal(healthy.groups, ["a", "a", "a", "b", "b"])
    np.testing.assert_array_equal(healthy.slice_index, [0, 2, 3, 1, 2])
    assert not healthy.masks.any()
    lesion = extract_slices(list(images), list(masks), lesion_free=False)
    np.testing.assert_array_equal(lesion.slice_index, [1, 0])
    assert lesion.masks.any(axis=(1, 2)).all()


def test_other_axis_and_channels(volumes):
    images, masks = volumes
    multi = np.stack([images, 2 * images], axis=-1)
    out = extract_slices(multi, masks, axis=0, channel_axis=-1)
    assert out.images.shape == (12, 5, 4, 2)
    np.testing.assert_array_equal(out.images[7], multi[1, 1])


def test_masked_input_counts_unmasked_pixels(volumes):
    images, _ = volumes
    masked = [np.ma.MaskedArray(v, mask=v == 0) for v in images]
    masked[0].mask[:, :, 0] = True
    out = extract_slices(masked, min_foreground=1)
    assert isinstance(out.images, np.ma.MaskedArray)
    np.testing.assert_array_equal(out.slice_index, [1, 2, 3, 0, 1, 2])


def test_errors(volumes):
    images, masks = volumes
    with pytest.raises(ValueError, match="'masks' .* required"):
        extract_slices(images, lesion_free=True)
    with pytest.raises(ValueError, match="kept no slice"):
        extract_slices(images, min_foreground=1000)
    with pytest.raises(ValueError, match="'lesion_free'"):
        extract_slices(images, masks, lesion_free="yes")
    with pytest.raises(ValueError, match="'groups' .* one entry per volume"):
        extract_slices(images, groups=[1])
    with pytest.raises(ValueError, match=r"masks\[0\]"):
        extract_slices(images, masks[:, :3])
    with pytest.raises(ValueError, match="share one shape"):
        extract_slices([images[0], images[1][:3]])
