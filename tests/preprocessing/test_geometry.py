import numpy as np
import pytest

from anomseg.exceptions import ShapeMismatchError
from anomseg.preprocessing import ForegroundCropper, Resizer


def make_volumes():
    rng = np.random.default_rng(0)
    X = np.zeros((2, 12, 14, 10))
    X[0, 2:7, 3:10, 1:6] = rng.uniform(1, 2, size=(5, 7, 5))
    X[1, 4:9, 5:11, 2:8] = rng.uniform(1, 2, size=(5, 6, 6))
    return X


def test_bbox_is_the_union_of_training_foregrounds():
    cropper = ForegroundCropper().fit(make_volumes())
    assert cropper.input_shape_ == (12, 14, 10)
    assert cropper.window_ == ((2, 9), (3, 11), (1, 8))
    assert cropper.output_shape_ == (7, 8, 7)
    # The margin is clipped at the image border.
    wide = ForegroundCropper(margin=2).fit(make_volumes())
    assert wide.window_ == ((0, 11), (1, 13), (0, 10))


def test_crop_inverse_is_exact():
    X = make_volumes()
    maps = np.random.default_rng(1).uniform(size=X.shape).astype(np.float32)
    cropper = ForegroundCropper(margin=1).fit(X)
    cropped = cropper.transform(maps)  # any image of the input shape
    back = cropper.inverse_transform(cropped.data)
    inside = tuple(slice(a, b) for a, b in cropper.window_)
    np.testing.assert_array_equal(back[(slice(None), *inside)], maps[(slice(None), *inside)])
    outside = np.ones(X.shape[1:], bool)
    outside[inside] = False
    assert (back[:, outside] == 0).all()
    assert back.dtype == np.float32


def test_fixed_mode_pads_and_inverts_exactly():
    X = np.zeros((2, 10, 10))
    X[:, 1:5, 2:8] = 1.0  # centre (3, 5)
    cropper = ForegroundCropper(mode="fixed", size=(8, 4)).fit(X)
    assert cropper.window_ == ((-1, 7), (3, 7))
    out = cropper.transform(X)
    assert out.shape == (2, 8, 4)
    assert out.mask[:, 0].all()  # the padded row is masked background
    np.testing.assert_array_equal(out.filled(0)[:, 2:6], X[:, 1:5, 3:7])
    masks = np.ones((2, 8, 4), bool)
    back = cropper.inverse_transform(masks)
    assert back.dtype == bool and back.shape == X.shape
    assert back.sum() == 2 * 7 * 4 and back[:, :7, 3:7].all()


def test_fixed_mode_int_size_lists_and_masks():
    X = [np.pad(np.ones((4, 4)), 3), np.pad(np.ones((4, 4)), 3)]
    cropper = ForegroundCropper(mode="fixed", size=6).fit(X)
    out = cropper.transform(X)
    assert isinstance(out, list) and out[0].shape == (6, 6)
    back = cropper.inverse_transform([m.filled(0) for m in out])
    assert isinstance(back, list)
    np.testing.assert_array_equal(back[0], X[0])


def test_resize_shapes_and_round_trip():
    x = np.linspace(0, 1, 32)
    smooth = np.add.outer(x, x)[None] + 1  # a smooth ramp, all foreground
    resizer = Resizer((16, 16)).fit(smooth)
    small = resizer.transform(smooth)
    assert small.shape == (1, 16, 16) and not small.mask.any()
    back = resizer.inverse_transform(small.data)
    assert back.shape == (1, 32, 32) and back.dtype == np.float32
    # By nearest neighbour: each pixel of a 2 x 2 block holds one value of
    # the map, near the ramp's there (which rises 1/31 a pixel per axis).
    np.testing.assert_array_equal(back[0], np.kron(small.data[0], np.ones((2, 2))))
    np.testing.assert_allclose(back[0, 4:-4, 4:-4], smooth[0, 4:-4, 4:-4], atol=0.05)


def test_resize_masks_by_nearest_neighbour():
    X = np.zeros((1, 8, 8, 4))
    X[0, 2:6, 2:6, :] = 5.0
    resizer = Resizer((16, 16, 8)).fit(X)
    out = resizer.transform(X)
    assert out.shape == (1, 16, 16, 8)
    np.testing.assert_array_equal(~out.mask[0], np.kron(X[0] > 0, np.ones((2, 2, 2))) > 0)
    back = resizer.inverse_transform(~out.mask)
    assert back.dtype == bool
    np.testing.assert_array_equal(back[0], X[0] > 0)
    # Upsampling without anti-aliasing keeps constant regions constant.
    assert np.allclose(out[0, 6:10, 6:10, 2:6], 5.0)


def test_fit_needs_one_shape():
    with pytest.raises(ShapeMismatchError, match="share one spatial shape"):
        Resizer((4, 4)).fit([np.ones((8, 8)), np.ones((6, 8))])


@pytest.mark.parametrize("transformer", [ForegroundCropper(), Resizer((4, 4))])
def test_transform_and_inverse_check_shapes(transformer):
    transformer.fit(np.ones((2, 8, 8)))
    with pytest.raises(ShapeMismatchError, match=r"X\[0\].*\(6, 8\).*\(8, 8\)"):
        transformer.transform(np.ones((1, 6, 8)))
    with pytest.raises(ShapeMismatchError, match=r"maps\[0\]"):
        transformer.inverse_transform(np.ones((1, 3, 3)))
    with pytest.raises(ValueError, match="spatial axes only"):
        transformer.inverse_transform([np.ones((4, 4, 4, 2))])


def test_only_geometric_transformers_map_back():
    from anomseg.preprocessing import ForegroundMasker, HistogramEqualizer, IntensityScaler

    assert hasattr(ForegroundCropper, "inverse_transform") and hasattr(
        Resizer, "inverse_transform"
    )
    for intensity in (ForegroundMasker, HistogramEqualizer, IntensityScaler):
        assert not hasattr(intensity, "inverse_transform")
