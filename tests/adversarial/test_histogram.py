"""The histogram-peak threshold on constructed histograms."""

import numpy as np
import pytest

from anomseg.adversarial import histogram_peak_threshold
from anomseg.exceptions import AnomsegWarning


@pytest.fixture
def three_peaks():
    """Peaks at 0.1 (dark, 5 000 values), 0.5 (tissue, 20 000) and 0.9 (a
    small bright lesion, 300), with empty gaps between them."""
    rng = np.random.default_rng(0)
    return np.concatenate(
        [rng.normal(0.1, 0.02, 5000), rng.normal(0.5, 0.04, 20000), rng.normal(0.9, 0.01, 300)]
    )


def test_right_threshold_isolates_the_rightmost_peak(three_peaks):
    threshold, histogram = histogram_peak_threshold(three_peaks, return_histogram=True)
    np.testing.assert_allclose(histogram["peaks"], [0.1, 0.5, 0.9], atol=0.01)
    # in the gap between the tissue and the lesion, near its centre
    assert 0.65 < threshold < 0.8
    assert (three_peaks > threshold).sum() == 300


def test_left_threshold_isolates_the_leftmost_peak(three_peaks):
    threshold = histogram_peak_threshold(three_peaks, side="left")
    assert 0.2 < threshold < 0.35
    assert (three_peaks < threshold).sum() == 5000


def test_threshold_is_at_the_valley_between_overlapping_peaks():
    """Two overlapping peaks: the threshold is the histogram's minimum
    between them, not the midpoint of the peaks."""
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.normal(0.3, 0.1, 50000), rng.normal(0.8, 0.03, 2000)])
    threshold = histogram_peak_threshold(values)
    counts, edges = np.histogram(values, bins=256)
    centres = (edges[:-1] + edges[1:]) / 2
    between = (centres > 0.5) & (centres < 0.8)
    valley = centres[between][np.argmin(counts[between])]
    assert abs(threshold - valley) < 0.05
    assert threshold > 0.55  # well right of the midpoint, 0.55


def test_a_saturated_peak_in_the_last_bin_counts():
    """A sigmoid output that saturates at 1 makes a peak in the last bin."""
    rng = np.random.default_rng(2)
    values = np.concatenate([np.clip(rng.normal(0.3, 0.05, 10000), 0, 1), np.ones(200)])
    threshold = histogram_peak_threshold(values)
    assert 0.45 < threshold < 1 and (values > threshold).sum() == 200


def test_a_single_peak_flags_nothing_and_warns():
    values = np.random.default_rng(3).normal(0, 1, 5000)
    with pytest.warns(AnomsegWarning, match="1 peak"):
        threshold = histogram_peak_threshold(values)
    assert threshold == values.max() and not (values > threshold).any()
    with pytest.warns(AnomsegWarning):
        assert histogram_peak_threshold(values, side="left") == values.min()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"side": "up"}, "'side'"),
        ({"n_bins": 2}, "'n_bins'"),
        ({"smoothing": -1.0}, "'smoothing'"),
        ({"min_prominence": 0.0}, "'min_prominence'"),
    ],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        histogram_peak_threshold(np.arange(10.0), **kwargs)


@pytest.mark.parametrize("values", [[], [0.1, np.nan]])
def test_bad_values(values):
    with pytest.raises(ValueError, match="'values'"):
        histogram_peak_threshold(values)
