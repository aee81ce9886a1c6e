"""The arithmetic of a calibration: thresholds of post-processed masks, the
tail probability of scores, and the chunks in which healthy images are
scored. :class:`anomseg.base.BaseAnomalySegmenter` calibrates with them;
they hold no estimator and read no file, so that ``base.py`` reads as the
contract alone.
"""

from __future__ import annotations

import numpy as np

from .metrics._pixel import fpr_rank

__all__ = [
    "SCORE_CHUNK_VOXELS",
    "TAIL_QUANTILES",
    "PostprocessedSearch",
    "TailTransform",
    "tail_quantiles",
    "voxel_chunks",
]

#: Calibration scores at most about this many voxels at a time (16 MiB of
#: float32 maps), so that its memory does not grow with the healthy data.
SCORE_CHUNK_VOXELS = 2**22

#: Healthy tail fractions at most this many apart in log scale in
#: ``healthy_quantiles_`` (about 200 quantiles for 10 million values).
TAIL_QUANTILES = 200


def tail_quantiles(values):
    """The quantiles of the healthy calibration ``values`` (a ValueStore)
    at tail fractions spaced evenly in log scale from 1 (the smallest
    value) to 1/n (the largest): ``{"tail": [...], "value": [...]}``,
    values ascending, tails descending."""
    n = len(values)
    counts = np.unique(np.geomspace(1, n, TAIL_QUANTILES).round().astype(np.int64))
    quantiles = values.order_statistics([n - k for k in counts[::-1]])
    return {
        "tail": [float(k) / n for k in counts[::-1]],
        "value": [float(v) for v in quantiles],
    }


class TailTransform:
    """The log tail probability of scores, from ``healthy_quantiles_``
    (see :meth:`BaseAnomalySegmenter.tail_probability`)."""

    #: The tail fractions whose quantiles set the exponential tail's rate.
    _TOP = 1e-2

    def __init__(self, quantiles):
        values = np.asarray(quantiles["value"], dtype=np.float64)
        log_tail = np.log(np.asarray(quantiles["tail"], dtype=np.float64))
        # Ties: a value's tail is that of its first (largest-tail) quantile.
        self.values, first = np.unique(values, return_index=True)
        self.log_tail = log_tail[first]
        self.rate = self._rate()

    def _rate(self):
        """The rate at which the log tail falls with the score among the
        highest healthy scores: least squares over their quantiles (at least
        3 of them), which a few nearly equal top values do not sway."""
        for top in (self._TOP, 0.1, 1.0):
            upper = self.log_tail <= np.log(top)
            if upper.sum() >= 3:
                x, y = self.values[upper], self.log_tail[upper]
                slope = np.polyfit(x - x.mean(), y, 1)[0]
                if slope < 0:
                    return -slope
        spread = max(self.values[-1] - self.values[0], abs(self.values[-1]), 1e-12)
        return max(self.log_tail[0] - self.log_tail[-1], 1.0) / spread

    def log(self, scores):
        """``log P(healthy >= score)``, float64."""
        scores = np.asarray(scores, dtype=np.float64)
        out = np.interp(scores, self.values, self.log_tail)
        above = scores > self.values[-1]
        out[above] = self.log_tail[-1] - self.rate * (scores[above] - self.values[-1])
        return out


class PostprocessedSearch:
    """The thresholds of post-processed masks: for a rate, the lowest
    threshold among the calibration values whose post-processed masks flag
    at most that fraction of the counted voxels.

    The post-processing steps (connected-component size filters, opening,
    closing) are increasing operators, so the voxels they flag can only
    shrink as the threshold rises, and a bracketing search applies: on a
    geometric grid of 64 candidate ranks, then a linear one between the
    two that bracket the rate, which finds the threshold to within about
    half a percent of the count it allows."""

    _GRID = 64

    def __init__(self, values, maps, postprocess):
        self.values = values
        self.maps = maps
        self.postprocess = postprocess
        self.n = len(values)

    def flagged(self, threshold):
        """How many counted voxels the post-processed masks flag."""
        total = 0
        for m, counted in self.maps:
            total += int(np.count_nonzero(self.postprocess(m > threshold) & counted))
        return total

    def _best(self, counts, allowed):
        """Of ascending candidate ``counts`` (of values above the
        threshold), the largest whose threshold flags at most ``allowed``
        voxels after post-processing, by bisection; None if none does."""
        thresholds = self.values.order_statistics([self.n - 1 - k for k in counts])
        low, high = -1, len(counts)
        while high - low > 1:
            mid = (low + high) // 2
            if self.flagged(thresholds[mid]) <= allowed:
                low = mid
            else:
                high = mid
        return (None, None) if low < 0 else (counts[low], thresholds[low])

    def threshold(self, rate):
        allowed = self.n - 1 - fpr_rank(self.n, rate)  # floor(rate * n)
        grid = np.unique(np.geomspace(1, self.n - 1, self._GRID).astype(np.int64))
        coarse, threshold = self._best(np.concatenate([[0], grid]), allowed)
        if coarse is None:  # even the highest value flags too much
            return float(self.values.order_statistics([self.n - 1])[0])
        above = grid[grid > coarse]
        if above.size and above[0] - coarse > 1:
            fine = np.unique(np.linspace(coarse, above[0] - 1, self._GRID).astype(np.int64))
            found, fine_threshold = self._best(fine, allowed)
            if found is not None:
                threshold = fine_threshold
        return float(threshold)


def voxel_chunks(batch):
    """Indices of consecutive samples of ``batch`` holding together at most
    ``SCORE_CHUNK_VOXELS`` voxels, one sample at least."""
    part, voxels = [], 0
    for i, fg in enumerate(batch.foreground):
        if part and voxels + fg.size > SCORE_CHUNK_VOXELS:
            yield part
            part, voxels = [], 0
        part.append(i)
        voxels += fg.size
    if part:
        yield part
