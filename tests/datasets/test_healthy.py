import numpy as np
import pytest

from anomseg.datasets import apply_brain_masks, exclude_lesions


def test_exclude_lesions_voxels_margin_and_slices():
    image = np.ma.MaskedArray(np.ones((6, 6, 4)), mask=np.zeros((6, 6, 4), bool))
    image.mask[0] = True  # existing background is kept
    lesion = np.zeros((6, 6, 4), bool)
    lesion[3, 3, 1] = True
    voxels = exclude_lesions([image], [lesion])[0]
    assert voxels.mask[3, 3, 1] and voxels.mask[0].all()
    assert voxels.count() == 6 * 6 * 4 - 6 * 4 - 1
    margin = exclude_lesions([image], [lesion], margin=1)[0]
    assert margin.count() == voxels.count() - 6  # the 6 face neighbours
    slices = exclude_lesions([image], [lesion], whole_slices=True)[0]
    assert slices.mask[..., 1].all() and not slices.mask[1:, :, [0, 2, 3]].any()
    # data are shared, not copied, and the input is not modified
    assert np.shares_memory(slices.data, image.data)
    assert image.count() == 6 * 6 * 4 - 6 * 4


def test_exclude_lesions_channels_and_errors():
    image = np.ones((5, 5, 2))
    lesion = np.zeros((5, 5), bool)
    lesion[2, 2] = True
    healthy = exclude_lesions([image], [lesion])[0]
    assert healthy.mask[2, 2].all() and healthy.count() == 48
    with pytest.raises(ValueError, match="same length"):
        exclude_lesions([image], [])
    with pytest.raises(ValueError, match="does not match"):
        exclude_lesions([image], [np.zeros((4, 4), bool)])


def test_apply_brain_masks_keeps_data_and_background():
    image = np.ma.MaskedArray(np.arange(12.0).reshape(3, 4), mask=np.zeros((3, 4), bool))
    image.mask[0, 0] = True  # already background
    brain = np.zeros((3, 4), bool)
    brain[:2] = True
    (out,) = apply_brain_masks([image], [brain])
    assert np.shares_memory(np.ma.getdata(out), np.ma.getdata(image))
    assert np.array_equal(np.ma.getmaskarray(out), ~brain | image.mask)
    # A channel axis follows the spatial mask.
    (multi,) = apply_brain_masks([np.ones((3, 4, 2))], [brain])
    assert np.array_equal(np.ma.getmaskarray(multi)[..., 1], ~brain)


def test_apply_brain_masks_errors():
    image = np.ones((3, 4))
    with pytest.raises(ValueError, match="same length"):
        apply_brain_masks([image], [])
    with pytest.raises(ValueError, match="does not match"):
        apply_brain_masks([image], [np.ones((4, 3), bool)])
    with pytest.raises(TypeError, match="bool"):
        apply_brain_masks([image], [np.ones((3, 4), np.uint8)])
