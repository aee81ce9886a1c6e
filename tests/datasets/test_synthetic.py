"""Synthetic healthy images and lesions with exact ground truth."""

import numpy as np
import pytest
from scipy import ndimage

from anomseg.datasets import add_synthetic_lesions, make_healthy_images


@pytest.fixture(scope="module")
def healthy():
    return make_healthy_images(6, shape=(48, 48), random_state=0)


def test_make_healthy_images(healthy):
    assert healthy.shape == (6, 48, 48) and healthy.dtype == np.float32
    fg = healthy > 0
    assert (healthy[~fg] == 0).all()
    assert 0.3 < fg.mean() < 0.6
    assert healthy[fg].min() >= 0.05 and healthy.max() <= 1
    # Each image's tissue is one ellipse without holes.
    for image in fg:
        assert ndimage.label(image)[1] == 1
        assert (ndimage.binary_fill_holes(image) == image).all()
    np.testing.assert_array_equal(healthy, make_healthy_images(6, shape=(48, 48), random_state=0))
    assert make_healthy_images(2, shape=(16, 16, 16)).shape == (2, 16, 16, 16)


@pytest.mark.parametrize("shape", ["ellipsoid", "blob"])
def test_mask_is_exactly_the_changed_pixels(healthy, shape):
    X, masks = add_synthetic_lesions(healthy, n_lesions=(1, 3), shape=shape, random_state=0)
    assert X.dtype == np.float32 and masks.dtype == bool
    assert X.shape == masks.shape == healthy.shape
    np.testing.assert_array_equal(healthy != X, masks)
    assert masks.any(axis=(1, 2)).all()
    assert not (masks & (healthy == 0)).any()


def test_respects_given_foreground_and_masked_arrays(healthy):
    region = np.zeros(healthy.shape, dtype=bool)
    region[:, 20:28, 20:28] = True
    X, masks = add_synthetic_lesions(healthy, radius=10, foreground=region, random_state=1)
    assert masks.any() and not (masks & ~region).any()

    masked = [np.ma.MaskedArray(im, mask=~r) for im, r in zip(healthy, region)]
    X, masks = add_synthetic_lesions(masked, radius=10, random_state=1)
    assert isinstance(X, list) and isinstance(X[0], np.ma.MaskedArray)
    for out, mask, r in zip(X, masks, region):
        np.testing.assert_array_equal(out.mask, ~r)
        assert mask.any() and not (mask & ~r).any()


def test_volumes():
    volumes = make_healthy_images(2, shape=(24, 24, 24), random_state=0)
    for shape in ("ellipsoid", "blob"):
        X, masks = add_synthetic_lesions(volumes, radius=(3, 5), shape=shape, random_state=0)
        assert masks.shape == volumes.shape
        np.testing.assert_array_equal(volumes != X, masks)
        assert not (masks & (volumes == 0)).any()


@pytest.mark.parametrize("shape", ["ellipsoid", "blob"])
def test_size_grows_with_radius(healthy, shape):
    sizes = [
        add_synthetic_lesions(healthy, radius=r, shape=shape, random_state=0)[1].sum()
        for r in (2, 4, 8)
    ]
    assert sizes[0] < sizes[1] < sizes[2]


def test_contrast_sign_and_size(healthy):
    fg = healthy[0] > 0
    spread = healthy[0][fg].max() - healthy[0][fg].min()
    for contrast in (0.5, -0.3):
        X, masks = add_synthetic_lesions(healthy, contrast=contrast, random_state=0)
        delta = (X - healthy)[masks]
        assert np.sign(delta).tolist() == [np.sign(contrast)] * len(delta)
        added = (X[0] - healthy[0])[masks[0]]
        np.testing.assert_allclose(added, contrast * spread, rtol=1e-5)


def test_blob_is_irregular_and_smoothness_matters(healthy):
    _, ellipses = add_synthetic_lesions(healthy, radius=8, random_state=3)
    _, blobs = add_synthetic_lesions(
        healthy, radius=8, shape="blob", smoothness=0.2, random_state=3
    )
    assert not np.array_equal(ellipses, blobs)
    for blob in blobs:
        assert ndimage.label(blob)[1] == 1  # one connected lesion


def test_seed_and_input_unchanged(healthy):
    original = healthy.copy()
    a = add_synthetic_lesions(healthy, shape="blob", n_lesions=2, random_state=7)
    b = add_synthetic_lesions(healthy, shape="blob", n_lesions=2, random_state=7)
    c = add_synthetic_lesions(healthy, shape="blob", n_lesions=2, random_state=8)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    np.testing.assert_array_equal(healthy, original)
    state = np.random.get_state()[1].copy()  # noqa: NPY002 (global state untouched)
    add_synthetic_lesions(healthy, random_state=np.random.default_rng(0))
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # noqa: NPY002


def test_no_lesions(healthy):
    X, masks = add_synthetic_lesions(healthy, n_lesions=0, random_state=0)
    np.testing.assert_array_equal(X, healthy)
    assert not masks.any()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"contrast": 0}, "'contrast'"),
        ({"radius": (5, 2)}, "'radius'"),
        ({"radius": -1}, "'radius'"),
        ({"n_lesions": 1.5}, "'n_lesions'"),
        ({"shape": "cube"}, "'shape'"),
        ({"smoothness": 0}, "'smoothness'"),
        ({"foreground": np.ones((2, 3, 3), bool)}, "'foreground'"),
    ],
)
def test_errors(healthy, kwargs, match):
    with pytest.raises(ValueError, match=match):
        add_synthetic_lesions(healthy, **kwargs)


def test_empty_foreground():
    with pytest.raises(ValueError, match="no foreground"):
        add_synthetic_lesions(np.zeros((1, 8, 8)), random_state=0)
