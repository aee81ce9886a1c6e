from pathlib import Path

import numpy as np
import pytest

from anomseg.preprocessing import ForegroundMasker, foreground_mask

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
LGG = DATA / "lgg_flair"


def make_head(shape=(24, 24, 6)):
    """A bright ellipsoid 'head' with a dark 'ventricle' touching the top
    slice, on faint noise, plus a bright speck outside."""
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 4, size=shape)
    grid = np.indices(shape[:2])
    head = ((grid[0] - 12) ** 2 + (grid[1] - 12) ** 2) <= 81
    image[head] = 100.0
    image[10:14, 10:14, 3:] = 0.5  # dark, enclosed in-plane, open at the top
    image[1, 1, 0] = 200.0
    return image, head


def test_head_with_dark_ventricle_and_noise():
    image, head = make_head()
    mask = foreground_mask(image)
    np.testing.assert_array_equal(mask, np.repeat(head[..., None], 6, axis=-1))


def test_without_hole_filling_the_ventricle_is_background():
    image, _ = make_head()
    mask = foreground_mask(image, fill_holes=False)
    assert not mask[10:14, 10:14, 3:].any() and mask[12, 12, 0]


def test_without_largest_component_the_speck_stays():
    image, _ = make_head()
    assert foreground_mask(image, largest_component=False)[1, 1, 0]
    assert not foreground_mask(image)[1, 1, 0]


def test_explicit_threshold():
    image = np.array([[0.0, 5.0, 5.0], [5.0, 20.0, 20.0], [0.0, 5.0, 20.0]])
    mask = foreground_mask(image, threshold=10.0, largest_component=False)
    np.testing.assert_array_equal(mask, image > 10)


def test_masked_input_pixels_count_as_below_threshold():
    image = np.full((1, 5, 5), 50.0)
    masked = np.ma.MaskedArray(image, mask=np.zeros_like(image, bool))
    masked.mask[0, :, 0] = True
    out = ForegroundMasker().fit_transform(masked)
    np.testing.assert_array_equal(out.mask, masked.mask)
    np.testing.assert_array_equal(out.data, image)  # values unchanged


def test_transformer_equals_function():
    image, _ = make_head()
    out = ForegroundMasker().fit_transform(image[None])
    np.testing.assert_array_equal(~out.mask[0], foreground_mask(image))


def test_bad_threshold_of_the_function():
    with pytest.raises(ValueError, match="'threshold' parameter of foreground_mask must"):
        foreground_mask(np.ones((4, 4)), threshold="high")


def test_lgg_flair_volume():
    if not LGG.is_dir():
        pytest.skip(f"LGG FLAIR data not found at {LGG.resolve()}")
    nibabel = pytest.importorskip("nibabel")
    case = "TCGA_CS_4941_19960909"

    def load(kind):
        image = nibabel.as_closest_canonical(nibabel.load(LGG / f"{case}_{kind}.nii.gz"))
        return np.asarray(image.dataobj)

    flair, tumour = load("flair"), load("mask") > 0
    masked = ForegroundMasker().fit_transform([flair])[0]
    head = ~masked.mask
    assert (head & tumour).sum() / tumour.sum() > 0.95
    # The head fills a third to two thirds of this field of view
    # (measured 0.26-0.68 over the 80 volumes, 0.53 for this one).
    assert 0.25 < head.mean() < 0.75
    # Dark CSF and ventricles inside the head come back through hole filling.
    assert (head & (flair < 0.1 * np.percentile(flair[flair > 0], 99))).sum() > 0
    # Image corners are air.
    assert not head[:3, :3].any() and not head[-3:, -3:].any()
    np.testing.assert_array_equal(masked.data, flair)
