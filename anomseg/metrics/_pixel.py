"""Pixel-level metrics, computed exactly from sorted scores.

All functions take ``y_true`` (ground-truth masks), ``y_score`` (anomaly maps)
and an optional ``foreground``; pixels outside the foreground are ignored. Each
argument is an array or a list of arrays of matching shapes, so volumes of
different sizes can be pooled without padding. Without ``foreground``, maps
that are masked arrays (such as those of an estimator's
``masked_score_samples``) count their unmasked pixels only.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

__all__ = [
    "CurveMetrics",
    "average_precision",
    "best_dice",
    "dice_score",
    "roc_auc",
    "threshold_at_fpr",
    "youden_threshold",
]


def _as_list(a):
    """A list of plain arrays (masked pixels keep their data)."""
    if isinstance(a, (list, tuple)):
        return [np.ma.getdata(x) if np.ma.isMaskedArray(x) else np.asarray(x) for x in a]
    return [np.ma.getdata(a) if np.ma.isMaskedArray(a) else np.asarray(a)]


def masked_foreground(y_score, foreground=None):
    """``foreground``, or, when it is None and ``y_score`` holds masked
    arrays, their unmasked pixels (in the layout of ``y_score``)."""
    if foreground is not None:
        return foreground
    listed = isinstance(y_score, (list, tuple))
    samples = list(y_score) if listed else [y_score]
    if not any(np.ma.isMaskedArray(s) for s in samples):
        return None
    fgs = [~np.ma.getmaskarray(s) for s in samples]
    return fgs if listed else fgs[0]


def pooled_pixels(y_true, y_score, foreground=None):
    """Flatten masks and maps (and an optional foreground) to 1D vectors of
    the foreground pixels, pooled over all samples.

    Returns
    -------
    labels : ndarray of bool
    scores : ndarray of float64
    """
    foreground = masked_foreground(y_score, foreground)
    trues, scores = _as_list(y_true), _as_list(y_score)
    fgs = [None] * len(trues) if foreground is None else _as_list(foreground)
    if not (len(trues) == len(scores) == len(fgs)):
        raise ValueError(
            "y_true, y_score and foreground must hold the same number of "
            f"samples; got {len(trues)}, {len(scores)} and {len(fgs)}."
        )
    labels, values = [], []
    for t, s, f in zip(trues, scores, fgs):
        if t.shape != s.shape or (f is not None and f.shape != s.shape):
            raise ValueError(
                f"y_true {t.shape}, y_score {s.shape} and foreground "
                f"{None if f is None else f.shape} must have the same shape."
            )
        if f is None:
            labels.append(t.ravel().astype(bool))
            values.append(s.ravel())
        else:
            f = f.astype(bool)
            labels.append(t[f].astype(bool))
            values.append(s[f])
    scores_1d = np.concatenate(values).astype(np.float64)
    if not np.isfinite(scores_1d).all():
        raise ValueError("y_score contains NaN or infinite values.")
    return np.concatenate(labels), scores_1d


def binary_curve(labels, scores):
    """True and false positive counts at every distinct threshold.

    A pixel is predicted positive at threshold ``t`` when its score is
    ``>= t``. Thresholds are the distinct scores, in decreasing order.

    Returns
    -------
    tps, fps : ndarray of int64
        Counts of positives predicted at each threshold.
    thresholds : ndarray of float64
    """
    order = np.argsort(scores, kind="mergesort")[::-1]
    scores = scores[order]
    labels = labels[order]
    distinct = np.flatnonzero(np.diff(scores)) if scores.size > 1 else np.array([], int)
    ends = np.r_[distinct, labels.size - 1]
    tps = np.cumsum(labels, dtype=np.int64)[ends]
    fps = ends + 1 - tps
    return tps, fps, scores[ends]


@dataclass(frozen=True)
class CurveMetrics:
    """Every threshold-sweep metric of one set of pixels, from one sort.

    Thresholds are applied as ``score >= threshold``. Fields that are
    undefined for the data (e.g. AUROC without any anomalous pixel) are NaN.
    """

    auroc: float
    average_precision: float
    best_dice: float
    best_dice_threshold: float
    youden_threshold: float
    youden_fpr: float
    youden_fnr: float

    @classmethod
    def from_pixels(cls, labels, scores):
        """Compute the metrics of 1D ``labels`` (bool) and ``scores``."""
        n_pos = int(labels.sum())
        n_neg = labels.size - n_pos
        nan = float("nan")
        if n_pos == 0:
            return cls(nan, nan, nan, nan, nan, nan, nan)
        tps, fps, thresholds = binary_curve(labels, scores)
        dice = 2 * tps / (tps + fps + n_pos)
        best = int(np.argmax(dice))
        precision = tps / (tps + fps)
        ap = float(np.sum(np.diff(np.r_[0, tps]) / n_pos * precision))
        if n_neg == 0:
            return cls(nan, ap, float(dice[best]), float(thresholds[best]), nan, nan, nan)
        tpr = tps / n_pos
        fpr = fps / n_neg
        # The trapezoid rule, as numpy.trapezoid (numpy >= 2) computes it.
        x, y = np.r_[0, fpr], np.r_[0, tpr]
        auroc = float((np.diff(x) * (y[1:] + y[:-1]) / 2.0).sum())
        j = int(np.argmax(tpr - fpr))
        return cls(
            auroc,
            ap,
            float(dice[best]),
            float(thresholds[best]),
            float(thresholds[j]),
            float(fpr[j]),
            float(1 - tpr[j]),
        )


def _curve(y_true, y_score, foreground, metric, need_negatives=True):
    labels, scores = pooled_pixels(y_true, y_score, foreground)
    n_pos = int(labels.sum())
    if n_pos == 0 or (need_negatives and n_pos == labels.size):
        raise ValueError(
            f"{metric} is undefined when the foreground holds only one class "
            f"({n_pos} anomalous of {labels.size} pixels)."
        )
    return CurveMetrics.from_pixels(labels, scores)


def roc_auc(y_true, y_score, foreground=None):
    """Area under the pixel ROC curve (ties count one half).

    Equals :func:`sklearn.metrics.roc_auc_score` on the foreground pixels.
    """
    return _curve(y_true, y_score, foreground, "AUROC").auroc


def average_precision(y_true, y_score, foreground=None):
    """Average precision, the step-wise area under the precision-recall curve.

    Equals :func:`sklearn.metrics.average_precision_score` on the foreground
    pixels: ``sum_n (R_n - R_{n-1}) P_n``.
    """
    return _curve(
        y_true, y_score, foreground, "Average precision", need_negatives=False
    ).average_precision


def dice_score(y_true, y_pred, foreground=None):
    """Dice overlap ``2|A∩B| / (|A| + |B|)`` of boolean masks.

    Returns 1.0 when both masks are empty (nothing to find, nothing found).
    """
    labels, pred = pooled_pixels(y_true, y_pred, foreground)
    pred = pred.astype(bool)
    denom = labels.sum() + pred.sum()
    if denom == 0:
        return 1.0
    return float(2 * np.sum(labels & pred) / denom)


def best_dice(y_true, y_score, foreground=None):
    """The best Dice over all thresholds of the map: an oracle upper bound.

    The threshold is chosen with the ground truth it is scored on, so no
    user can obtain this figure on new data; it measures how separable the
    map is. Use a healthy-calibrated threshold for an attainable Dice.

    Returns
    -------
    dice : float
    threshold : float
        The map is thresholded as ``y_score >= threshold``.
    """
    curve = _curve(y_true, y_score, foreground, "Best Dice", need_negatives=False)
    return curve.best_dice, curve.best_dice_threshold


def youden_threshold(y_true, y_score, foreground=None):
    """The threshold maximising ``TPR - FPR`` (Youden's J), an oracle.

    Returns
    -------
    threshold : float
        Pixels with ``y_score >= threshold`` are positive.
    fpr : float
        False-positive rate at that threshold.
    fnr : float
        False-negative rate at that threshold.
    """
    curve = _curve(y_true, y_score, foreground, "The Youden threshold")
    return curve.youden_threshold, curve.youden_fpr, curve.youden_fnr


def threshold_at_fpr(healthy_scores, max_fpr, foreground=None):
    """The smallest threshold whose false-positive rate is at most ``max_fpr``.

    On healthy data every pixel is a negative, so the false-positive rate of
    a threshold ``t`` is the fraction of foreground pixels with score ``> t``.
    With ``N`` pixels and ``k = floor(max_fpr * N)``, the smallest such ``t``
    is the ``(N - k)``-th smallest score, found exactly by a partial sort.

    Parameters
    ----------
    healthy_scores : array-like or list of array-like
        Anomaly maps of healthy images.
    max_fpr : float in (0, 1)
        The largest false-positive rate allowed.
    foreground : array-like or list of array-like, default=None
        Pixels to count; all pixels if None.

    Returns
    -------
    threshold : float
        Predict anomalies as ``score > threshold``.
    """
    if not 0 < max_fpr < 1:
        raise ValueError(f"'max_fpr' must be in (0, 1); got {max_fpr!r}.")
    maps = _as_list(healthy_scores)
    if foreground is None:
        values = np.concatenate([m.ravel() for m in maps])
    else:
        values = np.concatenate([m[f.astype(bool)] for m, f in zip(maps, _as_list(foreground))])
    if values.size == 0:
        raise ValueError("No foreground pixel to calibrate the threshold on.")
    index = fpr_rank(values.size, max_fpr)
    return float(np.partition(values, index)[index])


def fpr_rank(n, max_fpr):
    """The 0-based ascending rank, among ``n`` healthy values, of the
    threshold of :func:`threshold_at_fpr`: ``n - floor(max_fpr * n) - 1``."""
    # Exact decimal arithmetic: in floats 0.29 * 100 is 28.999..., one short.
    k = int(Fraction(repr(float(max_fpr))) * n)
    return n - k - 1


def calibrate_thresholds(healthy_scores, rates=(0.01, 0.05, 0.1), foreground=None):
    """Thresholds at several false-positive rates on healthy anomaly maps.

    Parameters
    ----------
    healthy_scores : array-like or list of array-like
        Anomaly maps of healthy images, not used for training.
    rates : sequence of float in (0, 1), default=(0.01, 0.05, 0.1)
    foreground : array-like or list of array-like, default=None

    Returns
    -------
    thresholds : dict of float to float
        Keyed by rate; pass it to :func:`evaluate`.
    """
    maps = _as_list(healthy_scores)
    fgs = [None] * len(maps) if foreground is None else _as_list(foreground)
    values = np.concatenate(
        [m.ravel() if f is None else m[f.astype(bool)] for m, f in zip(maps, fgs)]
    )
    return {float(rate): threshold_at_fpr(values, rate) for rate in rates}
