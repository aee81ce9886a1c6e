"""scikit-learn scorers, so ``GridSearchCV(estimator, grid, scoring=...)``
selects hyper-parameters on anomaly maps."""

from __future__ import annotations

from ..utils import check_images
from ._pixel import CurveMetrics, dice_score, pooled_pixels

__all__ = ["SCORERS", "get_scorer"]


def _maps_and_pixels(estimator, X, y):
    """Foreground pixels of ``y`` and of the estimator's maps of ``X``."""
    batch = check_images(X, where="scorer", channel_axis=getattr(estimator, "channel_axis", None))
    if y is None:
        raise ValueError(
            "This scorer needs ground-truth masks: pass them as y to GridSearchCV.fit(X, y)."
        )
    truth = list(y) if not isinstance(y, (list, tuple)) else y
    maps = estimator.score_samples(X)
    maps = list(maps) if not isinstance(maps, list) else maps
    return maps, truth, batch.foreground


def _curve_scorer(field):
    def scorer(estimator, X, y=None):
        maps, truth, foreground = _maps_and_pixels(estimator, X, y)
        labels, scores = pooled_pixels(truth, maps, foreground)
        return getattr(CurveMetrics.from_pixels(labels, scores), field)

    scorer.__name__ = f"{field}_scorer"
    scorer.__doc__ = (
        f"Pooled foreground {field} of ``estimator.score_samples(X)`` against masks ``y``."
    )
    return scorer


def calibrated_dice_scorer(estimator, X, y=None):
    """Pooled foreground Dice of ``estimator.predict(X)`` against masks ``y``:
    the Dice at the estimator's healthy-calibrated threshold."""
    batch = check_images(X, where="scorer", channel_axis=getattr(estimator, "channel_axis", None))
    if y is None:
        raise ValueError("This scorer needs ground-truth masks as y.")
    masks = estimator.predict(X)
    return dice_score(list(y), list(masks), batch.foreground)


SCORERS = {
    "auroc": _curve_scorer("auroc"),
    "average_precision": _curve_scorer("average_precision"),
    "best_dice": _curve_scorer("best_dice"),
    "dice": calibrated_dice_scorer,
}


def get_scorer(name):
    """Return the anomseg scorer called ``name``.

    Parameters
    ----------
    name : {"auroc", "average_precision", "best_dice", "dice"}
        ``"dice"`` uses the estimator's calibrated threshold (``predict``);
        ``"best_dice"`` is an oracle over all thresholds of the validation
        fold. All count foreground pixels only, pooled over the fold.

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y) -> float``, higher is better, for the
        ``scoring`` argument of :class:`sklearn.model_selection.GridSearchCV`.
    """
    if name not in SCORERS:
        raise ValueError(f"'name' must be one of {', '.join(map(repr, SCORERS))}; got {name!r}.")
    return SCORERS[name]
