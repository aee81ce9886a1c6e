"""The MSLUB demo data shipped inside the package."""

import numpy as np
import pytest

from anomseg.datasets import get_demo_path, load_demo_mslub
from anomseg.io import load_nifti


@pytest.fixture(scope="module")
def demo():
    return load_demo_mslub(modalities=("flair", "t2"))


def test_size_on_disk():
    total = sum(p.stat().st_size for p in get_demo_path().iterdir())
    assert total < 10 * 2**20


def test_attribution_and_licence(demo):
    for name in ("ATTRIBUTION.md", "LICENSE.txt"):
        assert get_demo_path(name).is_file()
    assert "Lesjak" in demo.description
    assert "CC-BY" in demo.description


def test_content(demo):
    assert demo.subjects == ["patient07", "patient19", "patient26"]
    for image, mask, ref in zip(demo.images, demo.masks, demo.references):
        assert isinstance(image, np.ma.MaskedArray)
        assert image.shape == (132, 165, 127, 2) and image.dtype == np.float32
        data = np.ma.getdata(image)
        brain = data[..., 0] > 0
        np.testing.assert_array_equal(~image.mask[..., 0], brain)
        np.testing.assert_array_equal(image.mask[..., 0], image.mask[..., 1])
        assert data[brain].min() >= 1 and data.max() == 255
        assert mask.dtype == bool and mask.any()
        assert ref.canonical_shape == mask.shape


def test_affine_keeps_mni_coordinates(demo):
    # Canonical voxel (26, 28, 17) of the 182 x 218 x 182 MNI grid.
    np.testing.assert_array_equal(
        demo.references[0].canonical_affine[:3, 3], [-65.0, -98.0, -55.0]
    )


def test_single_modality_and_errors():
    data = load_demo_mslub()
    assert data.images[0].shape == (132, 165, 127)
    with pytest.raises(ValueError, match="'modalities'"):
        load_demo_mslub(modalities=("t1",))
    with pytest.raises(FileNotFoundError, match="nothing.nii.gz"):
        get_demo_path("nothing.nii.gz")


def test_files_load_through_io():
    flair, _ref = load_nifti(get_demo_path("patient19_mask.nii.gz"), dtype=bool)
    assert flair.sum() == 49769
