import numpy as np
import pytest

from anomseg.baselines import FlairThreshold
from anomseg.preprocessing import HistogramEqualizer, HistogramMatcher, IntensityScaler


def test_scaler_maps_min_max_to_zero_one_and_keeps_background_masked():
    image = np.array([[[0.0, 2.0, 4.0], [6.0, 10.0, 0.0]]])
    out = IntensityScaler().fit_transform(image)
    np.testing.assert_array_equal(out.mask, image == 0)
    np.testing.assert_allclose(out.compressed(), [0.0, 0.25, 0.5, 1.0])
    assert (out.data[image == 0] == 0).all()


def test_scaler_is_per_sample_and_per_channel():
    images = np.stack(
        [np.arange(1.0, 17.0).reshape(4, 4), 10 * np.arange(1.0, 17.0).reshape(4, 4)]
    )
    out = IntensityScaler().fit_transform(images)
    np.testing.assert_allclose(out[0], out[1], atol=1e-6)
    two = np.stack([images[0], images[1] + 5], axis=-1)[None]
    out = IntensityScaler(channel_axis=-1).fit_transform(two)
    np.testing.assert_allclose(out[0, ..., 0], out[0, ..., 1], atol=1e-6)


def test_scaler_percentiles_and_clip():
    image = np.arange(1.0, 102.0)[None, None, :]  # 1..101
    image = np.repeat(image, 2, axis=1)
    out = IntensityScaler(lower_percentile=10, upper_percentile=90).fit_transform(image)
    assert out.min() == 0 and out.max() == 1
    np.testing.assert_allclose(out[0, 0, 50], 0.5)  # the median
    unclipped = IntensityScaler(10, 90, clip=False).fit_transform(image)
    np.testing.assert_allclose(unclipped[0, 0, 0], -0.125)  # (1 - 11) / 80


def test_scaler_constant_foreground_maps_to_zero():
    out = IntensityScaler().fit_transform(np.full((1, 3, 3), 7.0))
    assert (out == 0).all() and not out.mask.any()


def test_matcher_makes_scaled_images_agree():
    rng = np.random.default_rng(0)
    a = np.zeros((20, 20))
    a[2:18, 3:17] = rng.gamma(2.0, 10.0, size=(16, 14)) + 1
    b = np.where(a > 0, 3 * a + 50, 0)
    matcher = HistogramMatcher(n_quantiles=64).fit([a, b])
    ta, tb = matcher.transform([a, b])
    levels = np.linspace(0, 1, 11)
    np.testing.assert_allclose(
        np.quantile(ta.compressed(), levels), np.quantile(tb.compressed(), levels), rtol=1e-5
    )
    # The reference lies between the two inputs' quantiles: their mean.
    np.testing.assert_allclose(
        matcher.reference_quantiles_,
        (np.quantile(a[a > 0], np.linspace(0, 1, 64)) * 4 + 50) / 2,
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        np.quantile(ta.compressed(), levels),
        np.quantile(matcher.reference_quantiles_, levels),
        rtol=0.05,
    )


def test_matcher_maps_training_image_onto_itself():
    rng = np.random.default_rng(1)
    image = rng.uniform(1, 10, size=(1, 12, 12))
    out = HistogramMatcher(n_quantiles=32).fit_transform(image)
    np.testing.assert_allclose(out.data, image, rtol=1e-5)


def test_matcher_handles_tied_quantiles_and_channels():
    image = np.ones((1, 8, 8, 2))
    image[0, :2, :, 0] = 5.0  # 75 % of channel 0 is tied at 1
    image[..., 1] = np.arange(1.0, 65.0).reshape(8, 8)
    matcher = HistogramMatcher(n_quantiles=8, channel_axis=-1).fit(image)
    assert matcher.reference_quantiles_.shape == (8, 2)
    out = matcher.transform(image)
    assert np.isfinite(out).all()
    assert len(np.unique(out[0, ..., 0])) == 2  # the order of values is kept


def test_matcher_no_foreground():
    with pytest.raises(ValueError, match="no foreground"):
        HistogramMatcher().fit(np.zeros((2, 4, 4)))


@pytest.mark.parametrize("shape", [(4, 20, 20), (2, 12, 12, 6)])
def test_equalizer_equals_flair_threshold_maps(shape):
    rng = np.random.default_rng(0)
    X = np.where(rng.uniform(size=shape) < 0.8, rng.gamma(2.0, 30.0, size=shape), 0)
    out = HistogramEqualizer().fit_transform(X)
    maps = FlairThreshold().fit(X).score_samples(X)
    fg = X != 0
    np.testing.assert_array_equal(out.data[fg], maps[fg])
    assert out.min() >= 0 and out.max() <= 1
    np.testing.assert_array_equal(out.mask, ~fg)


def test_equalizer_channels_are_independent():
    rng = np.random.default_rng(0)
    flair = rng.gamma(2.0, 30.0, size=(3, 10, 10)) + 1
    X = np.stack([flair, 2 * flair + 5], axis=-1)  # same histogram shape
    out = HistogramEqualizer(channel_axis=-1).fit_transform(X)
    np.testing.assert_allclose(out[..., 0], out[..., 1], atol=1e-5)


def test_the_scaling_of_the_deep_methods():
    scaler = IntensityScaler.for_deep_methods(channel_axis=-1)
    assert (scaler.lower_percentile, scaler.upper_percentile, scaler.clip) == (0, 90.0, False)
    assert scaler.channel_axis == -1
    image = np.arange(1, 101, dtype=float).reshape(1, 10, 10)  # 1..100, no background
    scaled = scaler.set_params(channel_axis=None).fit_transform(image)
    assert scaled.min() == 0 and scaled.max() > 1  # the top decile stays above 1
    assert np.isclose(np.percentile(scaled.compressed(), 90), 1.0)
