"""Honest pixel-level metrics: every figure says how it was aggregated and
where its threshold came from."""

from ._pixel import (
    average_precision,
    best_dice,
    dice_score,
    roc_auc,
    threshold_at_fpr,
    youden_threshold,
)

__all__ = [
    "average_precision",
    "best_dice",
    "dice_score",
    "roc_auc",
    "threshold_at_fpr",
    "youden_threshold",
]
