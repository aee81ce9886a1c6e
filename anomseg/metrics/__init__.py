"""Honest pixel-level metrics: every figure says how it was aggregated and
where its threshold came from.

Only foreground pixels count. "Pooled" figures treat all foreground pixels of
a data set as one set; "per-volume" figures are the mean ± sd over volumes
with a lesion. Oracle figures (best Dice, Youden rates) choose their
threshold on the test labels and are upper bounds no user can attain; Dice
at a threshold calibrated on healthy data is the attainable figure.
Lesion-wise figures count lesions (connected components) detected and
missed, and predicted components that are true or false positives.
"""

from ._lesion import LesionMetrics, lesion_wise_metrics
from ._pixel import (
    CurveMetrics,
    average_precision,
    best_dice,
    calibrate_thresholds,
    dice_score,
    roc_auc,
    threshold_at_fpr,
    youden_threshold,
)
from ._report import EvaluationReport, MetricResult, evaluate
from ._scorers import get_scorer

__all__ = [
    "CurveMetrics",
    "EvaluationReport",
    "LesionMetrics",
    "MetricResult",
    "average_precision",
    "best_dice",
    "calibrate_thresholds",
    "dice_score",
    "evaluate",
    "get_scorer",
    "lesion_wise_metrics",
    "roc_auc",
    "threshold_at_fpr",
    "youden_threshold",
]
