"""scikit-learn scorers, so ``GridSearchCV(estimator, grid, scoring=...)``
selects hyper-parameters on anomaly maps."""

from __future__ import annotations

import numpy as np

from ..utils import check_images
from ._pixel import CurveMetrics, dice_score, pooled_pixels

__all__ = ["SCORERS", "get_scorer"]


def _masked_maps(estimator, X, y):
    """The estimator's maps of ``X``, masked outside the foreground it
    scored, and the masks ``y``.

    Estimators and :class:`~anomseg.preprocessing.AnomalyPipeline` say which
    pixels they scored (``masked_score_samples``), so the scorer counts the
    same pixels as calibration did, after a ``ForegroundMasker`` too. For
    another pipeline, the foreground is that of ``X`` itself.
    """
    if y is None:
        raise ValueError(
            "This scorer needs ground-truth masks: pass them as y to GridSearchCV.fit(X, y)."
        )
    if hasattr(estimator, "masked_score_samples"):
        maps = estimator.masked_score_samples(X)
    else:
        batch = check_images(
            X, where="scorer", channel_axis=getattr(estimator, "channel_axis", None)
        )
        maps = batch.to_masked(list(estimator.score_samples(X)))
    return list(maps), list(y)


def _curve_scorer(field):
    def scorer(estimator, X, y=None):
        maps, truth = _masked_maps(estimator, X, y)
        labels, scores = pooled_pixels(truth, maps)
        return getattr(CurveMetrics.from_pixels(labels, scores), field)

    scorer.__name__ = f"{field}_scorer"
    scorer.__doc__ = (
        f"Pooled foreground {field} of ``estimator.score_samples(X)`` against masks ``y``."
    )
    return scorer


def calibrated_dice_scorer(estimator, X, y=None):
    """Pooled foreground Dice of ``estimator.predict(X)`` against masks ``y``:
    the Dice at the estimator's healthy-calibrated threshold."""
    maps, truth = _masked_maps(estimator, X, y)
    if hasattr(estimator, "threshold_maps"):  # no second scoring pass
        masks = estimator.threshold_maps(maps)
    else:
        masks = estimator.predict(X)
    return dice_score(truth, list(masks), [~np.ma.getmaskarray(m) for m in maps])


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
