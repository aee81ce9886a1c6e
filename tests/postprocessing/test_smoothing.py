"""Smoothing of anomaly maps inside their foreground, and the estimators'
``smoothing`` parameter."""

import numpy as np
import pytest
from scipy import ndimage

from anomseg.baselines import FlairThreshold
from anomseg.datasets import make_healthy_images
from anomseg.postprocessing import smooth_map


def test_a_constant_map_stays_constant_inside_and_zero_outside():
    fg = np.zeros((12, 14, 6), bool)
    fg[2:10, 3:12, 1:5] = True
    smoothed = smooth_map(np.where(fg, 3.0, 0.0), fg, (2.0, 2.0, 1.0))
    np.testing.assert_allclose(smoothed[fg], 3.0, rtol=1e-5)
    assert not smoothed[~fg].any()
    assert smoothed.dtype == np.float32


def test_it_is_the_normalised_convolution():
    rng = np.random.default_rng(0)
    m = rng.random((16, 16)).astype(np.float32)
    fg = rng.random((16, 16)) > 0.3
    expected = ndimage.gaussian_filter(m * fg, 1.5, mode="constant") / ndimage.gaussian_filter(
        fg.astype(np.float32), 1.5, mode="constant"
    )
    np.testing.assert_allclose(smooth_map(m, fg, 1.5)[fg], expected[fg], rtol=1e-4)


def test_a_zero_sigma_leaves_its_axis_alone():
    m = np.zeros((5, 5, 5), np.float32)
    m[2, 2, :] = np.arange(5)
    smoothed = smooth_map(m, np.ones(m.shape, bool), (0.0, 0.0, 1.0))
    assert not smoothed[1].any() and not smoothed[:, 1].any()  # nothing across x or y
    assert smoothed[2, 2, 0] > 0  # mixed along z


def test_one_sigma_per_axis():
    with pytest.raises(ValueError, match="one standard deviation per axis"):
        smooth_map(np.ones((4, 4)), np.ones((4, 4), bool), (1.0, 1.0, 1.0))


def test_the_estimator_calibrates_and_predicts_on_smoothed_maps():
    X = make_healthy_images(n_images=10, shape=(32, 32), random_state=0)
    raw = FlairThreshold(max_fpr=0.1).fit(X)
    smoothed = FlairThreshold(max_fpr=0.1, smoothing=1.5).fit(X)
    maps = smoothed.score_samples(X)
    expected = [smooth_map(m, x != 0, 1.5) for m, x in zip(raw.score_samples(X), X)]
    np.testing.assert_allclose(maps, np.stack(expected), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(smoothed.predict(X), maps > smoothed.threshold_)
    assert smoothed.calibration_fpr_ <= 0.1
    assert (smoothed.predict(X)[X != 0]).mean() == smoothed.calibration_fpr_


@pytest.mark.parametrize("bad", [0.0, -1.0, (1.0, -1.0), "1"])
def test_bad_smoothing_is_refused(bad):
    X = make_healthy_images(n_images=4, shape=(16, 16), random_state=0)
    with pytest.raises((ValueError, TypeError), match="'smoothing' parameter of FlairThreshold"):
        FlairThreshold(smoothing=bad).fit(X)
