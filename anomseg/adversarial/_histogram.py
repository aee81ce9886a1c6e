"""The histogram-peak threshold of ASC-Net: cut a map whose histogram has
well-separated peaks at the valley that isolates its outermost peak."""

from __future__ import annotations

import warnings
from numbers import Integral, Real

import numpy as np
from scipy import ndimage, signal

from ..exceptions import AnomsegWarning
from ..utils._param_validation import MAX_BINS, Interval, StrOptions, validate_params

__all__ = ["histogram_peak_threshold"]


@validate_params(
    {
        "side": [StrOptions({"right", "left"})],
        "n_bins": [Interval(Integral, 3, MAX_BINS, closed="both")],
        "smoothing": [Interval(Real, 0, None, closed="left")],
        "min_prominence": [Interval(Real, 0, None, closed="neither")],
        "return_histogram": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def histogram_peak_threshold(
    values,
    *,
    side="right",
    n_bins=256,
    smoothing=2.0,
    min_prominence=1.0,
    return_histogram=False,
):
    """Threshold that isolates the rightmost (or leftmost) histogram peak.

    ASC-Net's reconstruction has a histogram of well-separated peaks, and
    Dey and Hong segment the anomaly as the pixels of one outermost peak,
    chosen once for a data set. This finds the peaks of the histogram of
    ``log(1 + count)``, smoothed with a Gaussian of ``smoothing`` bins (the
    logarithm keeps a small lesion peak next to a large tissue peak), and
    returns the deepest point of the valley between the outermost peak and
    its neighbour (the centre of the valley's floor, where it is flat).

    Parameters
    ----------
    values : array-like
        Map values, typically the foreground pixels of a whole data set.
    side : {"right", "left"}, default="right"
        Which outermost peak is the anomaly: "right" for values above the
        threshold (hyper-intense lesions), "left" for values below it.
    n_bins : int >= 3, default=256
        Histogram bins between the smallest and largest value.
    smoothing : float >= 0, default=2.0
        Standard deviation, in bins, of the Gaussian smoothing.
    min_prominence : float > 0, default=1.0
        Smallest prominence of a peak in ``log(1 + count)``: 1.0 means a peak
        at least e (about 2.7) times as high as the valley that separates it.
    return_histogram : bool, default=False
        Also return the histogram and the peaks found.

    Returns
    -------
    threshold : float
        Anomalies are ``values > threshold`` for ``side="right"`` and
        ``values < threshold`` for ``side="left"``. When the histogram has a
        single peak, there is no anomaly peak: the threshold is then the
        largest (smallest) value, so that nothing is flagged, and a warning
        says so.
    histogram : dict
        With ``return_histogram=True``: ``counts``, ``edges``, ``smoothed``
        (the smoothed log counts) and ``peaks`` (the bin centres of the peaks
        found, ascending).

    Examples
    --------
    >>> import numpy as np
    >>> from anomseg.adversarial import histogram_peak_threshold
    >>> rng = np.random.default_rng(0)
    >>> values = np.concatenate([rng.normal(0.3, 0.03, 10000),
    ...                          rng.normal(0.9, 0.02, 300)])
    >>> 0.4 < histogram_peak_threshold(values) < 0.85
    True
    """
    where = "histogram_peak_threshold"
    values = np.asarray(values, dtype=float).ravel()
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise ValueError(f"'values' of {where} must be a non-empty array of finite numbers.")
    low, high = float(values.min()), float(values.max())
    counts, edges = np.histogram(values, bins=n_bins, range=_histogram_range(low, high))
    return peak_threshold(
        counts,
        edges,
        (low, high),
        side=side,
        smoothing=smoothing,
        min_prominence=min_prominence,
        return_histogram=return_histogram,
        where=where,
    )


def _histogram_range(low, high):
    return (low, high if high > low else low + 1)


def stored_histogram(store, n_bins):
    """The histogram that :func:`histogram_peak_threshold` makes of the
    values of a :class:`~anomseg.utils._values.ValueStore`, counted chunk by
    chunk: ``(counts, edges, (low, high))``."""
    if len(store) == 0 or not all(np.all(np.isfinite(c)) for c in store.chunks()):
        raise ValueError("The values to threshold must be non-empty and finite.")
    low, high = store.extent()
    counts = np.zeros(n_bins, np.int64)
    for chunk in store.chunks():
        chunk_counts, edges = np.histogram(
            chunk.astype(float), bins=n_bins, range=_histogram_range(low, high)
        )
        counts += chunk_counts
    return counts, edges, (low, high)


def peak_threshold(
    counts,
    edges,
    extent,
    *,
    side="right",
    smoothing=2.0,
    min_prominence=1.0,
    return_histogram=False,
    where="histogram_peak_threshold",
):
    """:func:`histogram_peak_threshold` from the histogram ``counts`` on
    ``edges`` of values within ``extent``, ``(low, high)``."""
    low, high = extent
    smoothed = np.log1p(counts.astype(float))
    if smoothing > 0:
        smoothed = ndimage.gaussian_filter1d(smoothed, smoothing, mode="constant")
    # Zero padding lets a peak in the first or last bin (a saturated sigmoid)
    # count as a peak.
    peaks, _ = signal.find_peaks(np.pad(smoothed, 1), prominence=min_prominence)
    peaks = peaks - 1
    centres = (edges[:-1] + edges[1:]) / 2
    if len(peaks) < 2:
        warnings.warn(
            f"[{where}] The histogram has {len(peaks)} peak(s) of prominence "
            f">= {min_prominence}, so no {side} peak stands apart; the "
            "threshold flags nothing.",
            AnomsegWarning,
            stacklevel=3,
        )
        threshold = high if side == "right" else low
    else:
        a, b = (peaks[-2], peaks[-1]) if side == "right" else (peaks[0], peaks[1])
        between = smoothed[a : b + 1]
        # The middle of the lowest stretch: an empty gap between the peaks
        # is cut in its centre, not at its edge.
        lowest = np.flatnonzero(between <= between.min() + 1e-9)
        valley = a + int(lowest[len(lowest) // 2])
        threshold = float(centres[valley])
    if not return_histogram:
        return threshold
    histogram = {"counts": counts, "edges": edges, "smoothed": smoothed, "peaks": centres[peaks]}
    return threshold, histogram
