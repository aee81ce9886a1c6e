"""A metric table in which every number says how it was aggregated and where
its threshold came from."""

from __future__ import annotations

import functools
import operator
import warnings
from dataclasses import asdict, dataclass

import numpy as np

from ..exceptions import AnomsegWarning
from ._lesion import lesion_wise_metrics
from ._pixel import CurveMetrics, _as_list, dice_score, masked_foreground, pooled_pixels

__all__ = ["EvaluationReport", "MetricResult", "evaluate"]

THRESHOLD_FREE = "none (threshold-free)"
ORACLE = "oracle: chosen on the test labels"


def _calibrated(rate):
    return f"calibrated on healthy data at FPR {100 * rate:g}%"


@dataclass(frozen=True)
class MetricResult:
    """One row of an :class:`EvaluationReport`.

    Attributes
    ----------
    metric : str
        Metric name, such as ``"AUROC"`` or ``"Dice"``.
    aggregation : str
        ``"pooled"`` (all foreground pixels of the data set together; for
        lesion-wise counts, their sum, and ratios of those sums) or
        ``"per-volume"`` (mean over volumes with a lesion).
    threshold : str
        Where the threshold came from: none, an oracle chosen on the test
        labels (not attainable on new data), or a healthy-data calibration.
    value : float
        The pooled value, or the mean over volumes.
    sd : float or None
        Standard deviation over volumes (``ddof=1``); None when pooled.
    n_volumes : int or None
        Number of volumes averaged (those with a lesion, less those where
        the figure is undefined, such as the lesion precision of a volume
        with no predicted component); None when pooled.
    """

    metric: str
    aggregation: str
    threshold: str
    value: float
    sd: float | None = None
    n_volumes: int | None = None

    @property
    def formatted(self):
        """The value as text, with ``± sd`` for per-volume rows."""
        if np.isnan(self.value):
            return "n/a"
        if self.sd is None:
            return f"{self.value:.3f}"
        sd = "n/a" if np.isnan(self.sd) else f"{self.sd:.3f}"
        return f"{self.value:.3f} ± {sd}"


class EvaluationReport:
    """The metrics of an anomaly-segmentation evaluation.

    Index it by ``(metric, aggregation)`` or ``(metric, aggregation,
    threshold)`` to get a value, print it for a table, or call
    :meth:`to_records` for a list of dicts (e.g. for pandas).

    Parameters
    ----------
    results : list of MetricResult
    volumes : list of list of MetricResult, default=None
        The metrics of each volume on its own, in the order of the volumes
        (their ``aggregation`` is ``"volume"``); empty lists for volumes
        without a lesion.

    Attributes
    ----------
    volumes : list of list of MetricResult
        As given (empty if None).
    """

    def __init__(self, results, volumes=None):
        self.results = list(results)
        self.volumes = [list(v) for v in volumes or []]

    def __getitem__(self, key):
        matches = [
            r
            for r in self.results
            if (r.metric, r.aggregation, r.threshold)[: len(key)] == tuple(key)
        ]
        if len(matches) != 1:
            raise KeyError(
                f"{key!r} matches {len(matches)} rows; index with (metric, "
                "aggregation) or (metric, aggregation, threshold)."
            )
        return matches[0].value

    def to_records(self):
        """Rows as a list of dicts."""
        return [asdict(r) for r in self.results]

    def volume_records(self):
        """One dict per volume: its index (``volume``), whether it holds a
        lesion (``has_lesion``), and each metric's value keyed as
        ``"<metric> [<threshold>]"`` (none for volumes without a lesion)."""
        return [
            {"volume": i, "has_lesion": bool(rows)}
            | {f"{r.metric} [{r.threshold}]": r.value for r in rows}
            for i, rows in enumerate(self.volumes)
        ]

    def to_table(self):
        """The report as an aligned plain-text table."""
        header = ("metric", "aggregation", "value", "threshold")
        rows = [
            (
                r.metric,
                r.aggregation + ("" if r.n_volumes is None else f" (n={r.n_volumes})"),
                r.formatted,
                r.threshold,
            )
            for r in self.results
        ]
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths)).rstrip()]
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
        return "\n".join(lines)

    def __str__(self):
        return self.to_table()

    def __repr__(self):
        return f"EvaluationReport({len(self.results)} metrics)\n{self.to_table()}"


def _lesion_rows(y_true, masks, foreground, source, lesions):
    """(metric, threshold source, value) of the lesion-wise figures of
    ``masks``, their counts summed over the samples."""
    _, min_overlap, voxel_volumes = lesions
    m = functools.reduce(
        operator.add,
        (
            # the truth inside the foreground, as for the pixel figures
            lesion_wise_metrics(np.where(f, t, 0), p, min_overlap=min_overlap, voxel_volume=v)
            for t, p, f, v in zip(y_true, masks, foreground, voxel_volumes)
        ),
    )
    rows = [
        ("Lesions", m.n_lesions),
        ("Lesions detected", m.n_detected),
        ("Lesions missed", m.n_missed),
        ("Predicted components", m.n_components),
        ("False-positive components", m.n_false_positive_components),
        ("Lesion sensitivity", m.sensitivity),
        ("Lesion precision", m.precision),
        ("Lesion F1", m.f1),
        ("Volume error (voxels)", m.volume_error),
    ]
    if m.volume_error_ml is not None:
        rows.append(("Volume error (mL)", m.volume_error_ml))
    rows.append(("Relative volume error", m.relative_volume_error))
    return [(metric, source, float(value)) for metric, value in rows]


def _metric_rows(y_true, y_score, foreground, thresholds, postprocess=None, lesions=None):
    """(metric, threshold source, value) for one pooled set of samples.

    ``thresholds`` holds one ``{rate: threshold}`` dict per sample;
    ``lesions`` is None or ``(rate, min_overlap, voxel volume of each
    sample)``, for the lesion-wise rows of the masks at that rate.
    """
    labels, scores = pooled_pixels(y_true, y_score, foreground)
    curve = CurveMetrics.from_pixels(labels, scores)
    rows = [
        ("AUROC", THRESHOLD_FREE, curve.auroc),
        ("AUPRC", THRESHOLD_FREE, curve.average_precision),
        ("Best Dice", ORACLE, curve.best_dice),
    ]
    lesion_rows = []
    for rate in sorted(thresholds[0]):
        masks = [(s > t[rate]) & f for s, t, f in zip(y_score, thresholds, foreground)]
        if postprocess is not None:  # the masks as predict returns them
            masks = [np.asarray(postprocess(m), dtype=bool) for m in masks]
        predicted = np.concatenate([m[f] for m, f in zip(masks, foreground)])
        rows.append(("Dice", _calibrated(rate), dice_score(labels, predicted)))
        # Whether the calibration holds on these scans' own healthy voxels.
        rows.append(("FPR", _calibrated(rate), _false_positive_rate(labels, predicted)))
        if lesions is not None and rate == lesions[0]:
            lesion_rows = _lesion_rows(y_true, masks, foreground, _calibrated(rate), lesions)
    rows += [
        ("FPR at Youden", ORACLE, curve.youden_fpr),
        ("FNR at Youden", ORACLE, curve.youden_fnr),
    ]
    return rows + lesion_rows


def _false_positive_rate(labels, predicted):
    """The fraction of the negative pixels predicted anomalous (NaN if none
    is negative)."""
    negative = ~labels
    n_negative = np.count_nonzero(negative)
    return np.count_nonzero(predicted & negative) / n_negative if n_negative else np.nan


def _per_sample_thresholds(thresholds, n_samples):
    if thresholds is None:
        return [{}] * n_samples
    if isinstance(thresholds, dict):
        return [dict(thresholds)] * n_samples
    thresholds = [dict(t) for t in thresholds]
    if len(thresholds) != n_samples or len({tuple(sorted(t)) for t in thresholds}) != 1:
        raise ValueError(
            "'thresholds' must be one dict, or a list of one dict per sample "
            f"({n_samples}) with the same rates; got {len(thresholds)} dicts."
        )
    return thresholds


def _per_sample_voxel_volumes(voxel_volume, n_samples):
    if voxel_volume is None or np.ndim(voxel_volume) == 0:
        return [voxel_volume] * n_samples
    if len(voxel_volume) != n_samples or any(v is None for v in voxel_volume):
        raise ValueError(
            f"'voxel_volume' must be one number, or one per sample ({n_samples}); "
            f"got {len(voxel_volume)} numbers."
        )
    return list(voxel_volume)


def _group_samples(samples, groups):
    if groups is None:
        return [[s] for s in samples]
    groups = np.asarray(groups)
    if groups.shape != (len(samples),):
        raise ValueError(
            f"'groups' must have one label per sample, shape ({len(samples)},); "
            f"got shape {groups.shape}."
        )
    return [[samples[i] for i in np.flatnonzero(groups == g)] for g in np.unique(groups)]


#: The fraction of a volume's lesion pixels outside the foreground beyond
#: which ``evaluate`` warns: a brain mask trims a little of a lesion at the
#: brain's edge (at most 1.1 % on the 80 LGG patients with deepbet's masks),
#: while a mask of another scan, or off its grid, leaves much of it out.
OUTSIDE_FRACTION = 0.05


def _check_lesions(trues, fgs, groups, names):
    """Warn of each volume whose lesion lies wholly outside the foreground
    (not the mask of that scan, or not on its grid), or more than
    :data:`OUTSIDE_FRACTION` of it, and refuse a set in
    which no volume has a lesion pixel inside the foreground: every figure
    would be undefined, a table of n/a. Volumes without any lesion, such as
    healthy controls, are left out of the per-volume rows without a word."""
    if names is None:
        names = [f"y_true[{i}]" for i in range(len(trues))]
    elif len(names) != len(trues):
        raise ValueError(f"'names' must hold one name per sample, {len(trues)}; got {len(names)}.")
    volumes = _group_samples(list(zip(names, trues, fgs)), groups)
    if groups is None:
        labels = [volume[0][0] for volume in volumes]
    else:
        labels = [f"the volume of group {g}" for g in np.unique(np.asarray(groups))]
    empty, outside, partly = [], [], []
    for label, volume in zip(labels, volumes):
        lesion = sum(int(np.count_nonzero(t)) for _, t, _ in volume)
        inside = sum(int(np.count_nonzero(np.asarray(t, bool) & f)) for _, t, f in volume)
        if lesion == 0:
            empty.append(f"{label} holds no lesion pixel")
        elif inside == 0:
            outside.append(
                f"the {lesion} lesion pixel(s) of {label} all lie outside the foreground "
                "(the pixels scored): is it the mask of this scan, on its grid?"
            )
        elif lesion - inside > OUTSIDE_FRACTION * lesion:
            partly.append(
                f"{lesion - inside} of the {lesion} lesion pixels of {label} "
                f"({(lesion - inside) / lesion:.0%}) lie outside the foreground, so no "
                "figure counts them: is the mask on this scan's grid, and does the "
                "foreground (the brain mask) hold the whole lesion?"
            )
    if len(empty) + len(outside) == len(volumes):
        notes = outside + empty
        raise ValueError(
            "No truth mask has a lesion pixel inside the foreground, so every figure "
            f"would be undefined: {'; '.join(notes[:2])}{'; ...' if len(notes) > 2 else ''}"
        )
    for note in outside:
        warnings.warn(
            f"[evaluate] {note} It counts in the pooled rows only, as healthy pixels.",
            AnomsegWarning,
            stacklevel=4,
        )
    for note in partly:
        warnings.warn(f"[evaluate] {note}", AnomsegWarning, stacklevel=4)


def evaluate(
    y_true,
    y_score,
    *,
    foreground=None,
    thresholds=None,
    groups=None,
    per_volume=True,
    postprocess=None,
    names=None,
    lesion_fpr=None,
    min_overlap=1,
    voxel_volume=None,
):
    """Evaluate anomaly maps against ground-truth masks.

    Reports, pooled over all foreground pixels and per volume:

    * AUROC and AUPRC (average precision), which need no threshold;
    * the best-possible Dice over all thresholds, an **oracle** figure whose
      threshold is chosen on the test labels themselves;
    * Dice at thresholds **calibrated on healthy data** (``thresholds``), the
      figure a user can actually obtain on new scans, and the false-positive
      rate there, on the lesion-free foreground pixels: near the rate it was
      calibrated at when the calibration holds on these scans (it may not
      at another site; see ``anomseg calibrate``);
    * the false-positive and false-negative rates at the Youden threshold
      (an oracle too);
    * with ``lesion_fpr``, lesion-wise figures of the masks at the
      threshold calibrated at that rate (see :func:`lesion_wise_metrics`
      for the overlap rule): the numbers of true lesions, detected and
      missed lesions, predicted and false-positive components, lesion-wise
      sensitivity, precision and F1, and the volume error (predicted minus true
      lesion volume, in voxels, in mL with ``voxel_volume``, and relative to
      the true volume). Pooled rows sum the counts and volumes over all
      samples, then take the ratios; per-volume rows average each volume's
      own. Lesions are the connected components of each sample: pass
      volumes, since a lesion spanning several 2D slices counts once per
      slice.

    Parameters
    ----------
    y_true : array-like or list of array-like of bool
        Ground-truth masks, one per sample.
    y_score : array-like or list of array-like
        Anomaly maps with the masks' shapes. Masked arrays, such as those of
        an estimator's ``masked_score_samples``, carry their foreground.
    foreground : array-like or list of array-like of bool, default=None
        Pixels to count (brain or head). None: the unmasked pixels of masked
        maps, or else all pixels, which inflates AUROC with easy background
        pixels; pass one of them.
    thresholds : dict of float to float, or list of dict, default=None
        Healthy-calibrated thresholds keyed by false-positive rate, such as
        an estimator's ``calibration_thresholds_``, or the output of
        :func:`calibrate_thresholds`; or one such dict per sample (e.g. from
        a leave-one-subject-out calibration). A pixel is predicted anomalous
        when ``score > threshold``, as in ``predict``.
    groups : array-like of shape (n_samples,), default=None
        Volume of each sample, to aggregate 2D slices into volumes for the
        per-volume rows. Each sample is a volume when None.
    per_volume : bool, default=True
        Whether to add per-volume mean ± sd rows. Volumes without any lesion
        are left out of them (their AUROC is undefined); the row says how
        many volumes were averaged. Each volume's own figures are in the
        report's ``volumes``.
    postprocess : callable or None, default=None
        Applied to each sample's boolean mask (spatial) after thresholding
        at a calibrated threshold, before Dice: an estimator's
        :meth:`~anomseg.base.BaseAnomalySegmenter.postprocess_mask`, so that
        the calibrated Dice is that of the masks ``predict`` returns.
    names : list of str or None, default=None
        What to call each sample in warnings and errors, such as the file
        of its truth mask; ``y_true[i]`` when None.
    lesion_fpr : float or None, default=None
        The false-positive rate, a key of ``thresholds``, at whose threshold
        to add the lesion-wise rows, such as an estimator's ``max_fpr`` (the
        masks ``predict`` returns); None adds none.
    min_overlap : int, default=1
        The fewest voxels a true lesion and a predicted component must share
        to match (any overlap by default).
    voxel_volume : float, list of float or None, default=None
        The volume of a voxel in mL, for all samples or one per sample, to
        add the volume error in mL.

    Returns
    -------
    report : EvaluationReport

    Raises
    ------
    ValueError
        If no volume has a lesion pixel inside the foreground: every figure
        would be undefined; if ``lesion_fpr`` is not a rate of
        ``thresholds``; or, for the lesion-wise rows, if a truth mask is
        not binary.

    Warns
    -----
    AnomsegWarning
        For each volume whose lesion lies wholly outside the foreground: it
        is not counted as a lesion at all; and for each with more than 5 %
        of its lesion pixels outside: those are not counted.

    Examples
    --------
    >>> import numpy as np
    >>> from anomseg.metrics import evaluate
    >>> truth = np.zeros((2, 4, 4), bool); truth[:, 1, 1] = True
    >>> maps = np.where(truth, 0.9, 0.1) + np.linspace(0, 0.05, 16).reshape(4, 4)
    >>> report = evaluate(truth, maps, thresholds={0.05: 0.5})
    >>> report["AUROC", "pooled"], report["Dice", "pooled"]
    (1.0, 1.0)
    """
    foreground = masked_foreground(y_score, foreground)
    trues, scores = _as_list(y_true), _as_list(y_score)
    if len(trues) == 1 and not isinstance(y_true, (list, tuple)):
        trues, scores = list(trues[0]), list(scores[0])  # a stacked array
    if foreground is None:
        fgs = [np.ones(t.shape, bool) for t in trues]
    else:
        fgs = _as_list(foreground)
        if len(fgs) == 1 and not isinstance(foreground, (list, tuple)):
            fgs = list(fgs[0])
    fgs = [f.astype(bool) for f in fgs]
    thresholds = _per_sample_thresholds(thresholds, len(trues))
    _check_lesions(trues, fgs, groups, names)
    voxel_volumes = _per_sample_voxel_volumes(voxel_volume, len(trues))
    lesions = None
    if lesion_fpr is not None:
        if lesion_fpr not in thresholds[0]:
            raise ValueError(
                f"'lesion_fpr' must be one of the rates of 'thresholds', {sorted(thresholds[0])}; "
                f"got {lesion_fpr!r}."
            )
        lesions = (lesion_fpr, min_overlap, voxel_volumes)

    results = [
        MetricResult(metric, "pooled", source, value)
        for metric, source, value in _metric_rows(
            trues, scores, fgs, thresholds, postprocess, lesions
        )
    ]
    if not per_volume:
        return EvaluationReport(results)

    per_volume_rows, volumes = [], []
    samples = list(zip(trues, scores, fgs, thresholds, voxel_volumes))
    for volume in _group_samples(samples, groups):
        t, s, f, th, v = (list(x) for x in zip(*volume))
        if not any(np.any(ti[fi]) for ti, fi in zip(t, f)):
            volumes.append([])
            continue
        volume_lesions = None if lesions is None else (*lesions[:2], v)
        rows = _metric_rows(t, s, f, th, postprocess, volume_lesions)
        per_volume_rows.append(rows)
        volumes.append([MetricResult(m, "volume", source, value) for m, source, value in rows])
    pooled_rows = list(results)
    for i, pooled in enumerate(pooled_rows):
        values = np.array([rows[i][2] for rows in per_volume_rows], dtype=float)
        values = values[~np.isnan(values)]  # e.g. lesion precision without a component
        n = values.size
        mean = float(values.mean()) if n else float("nan")
        sd = float(values.std(ddof=1)) if n > 1 else float("nan")
        results.append(MetricResult(pooled.metric, "per-volume", pooled.threshold, mean, sd, n))
    return EvaluationReport(results, volumes)
