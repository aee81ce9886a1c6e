"""Unsupervised scorers for :class:`~sklearn.model_selection.GridSearchCV`."""

from __future__ import annotations

import numpy as np
from sklearn.pipeline import Pipeline

__all__ = ["healthy_change_scorer"]


def _final_estimator(estimator):
    """The last step of a (possibly nested) pipeline, or the estimator."""
    while isinstance(estimator, Pipeline):
        estimator = estimator[-1]
    return estimator


def _transform_to_final(estimator, X):
    """``X`` transformed by every step of a (possibly nested) pipeline
    before its last; unchanged for an estimator that is no pipeline."""
    while isinstance(estimator, Pipeline):
        *head, (_, estimator) = estimator.steps
        for _, step in head:
            if step is not None and step != "passthrough":
                X = step.transform(X)
    return X


def healthy_change_scorer(estimator, X, y=None):
    """Minus the healthy change of a restorer: the TV weight score of You et
    al., for :class:`~sklearn.model_selection.GridSearchCV`.

    The score is ``-mean(estimator.healthy_change(X))``, minus the mean
    absolute change per foreground pixel that MAP restoration at the fitted
    TV weight ``tv_weight_`` causes on the healthy images ``X``. Greater is
    better, as scikit-learn expects, so a grid search over ``tv_weight``
    chooses the weight that changes healthy anatomy least. No lesion mask is
    needed: in cross-validation, ``X`` are the held-out healthy images of
    each fold.

    Parameters
    ----------
    estimator : estimator
        A fitted estimator with a ``healthy_change`` method, such as
        :class:`~anomseg.restoration.GMVAERestorer` or
        :class:`~anomseg.restoration.VAERestorer`, or a
        :class:`~sklearn.pipeline.Pipeline` (such as an
        :class:`~anomseg.preprocessing.AnomalyPipeline`) whose last step is
        one; ``X`` is then transformed by the steps before it.
    X : array-like or list
        Healthy images, not used for training.
    y : None
        Ignored; present for scikit-learn compatibility.

    Returns
    -------
    score : float
        ``-mean(healthy_change(X))``, at most 0.

    Raises
    ------
    TypeError
        If the estimator (the last step of a pipeline) has no
        ``healthy_change`` method.

    See Also
    --------
    anomseg.metrics.get_scorer : Scorers that need ground-truth masks.

    Notes
    -----
    ``GridSearchCV`` trains one network per candidate TV weight and per
    split, although training does not depend on the TV weight. The cheap
    way to choose it is ``tv_weight="auto"``: ``fit`` trains one network,
    then restores the held-out calibration images at every value of
    ``tv_weights`` and keeps the weight with the smallest healthy change,
    the same criterion. Use this scorer to tune the TV weight together with
    parameters that do change training, or with your own splits.

    Examples
    --------
    >>> from sklearn.model_selection import GridSearchCV
    >>> from anomseg.datasets import make_healthy_images
    >>> from anomseg.model_selection import healthy_change_scorer
    >>> from anomseg.restoration import VAERestorer
    >>> X = make_healthy_images(n_images=8, shape=(32, 32), random_state=0)
    >>> restorer = VAERestorer(width=4, n_epochs=2, n_restoration_steps=5,
    ...                        validation_fraction=0, tv_weight=0.0,
    ...                        device="cpu", random_state=0)
    >>> search = GridSearchCV(restorer, {"tv_weight": [0.0, 2.0]},
    ...                       scoring=healthy_change_scorer, cv=2).fit(X)
    >>> search.best_params_["tv_weight"] in (0.0, 2.0)
    True
    """
    final = _final_estimator(estimator)
    if not callable(getattr(final, "healthy_change", None)):
        described = type(final).__name__
        if final is not estimator:
            described += f", the last step of the {type(estimator).__name__}"
        raise TypeError(
            "healthy_change_scorer needs an estimator with a healthy_change "
            "method, such as GMVAERestorer or VAERestorer (or a pipeline "
            f"ending in one); got {described}."
        )
    return -float(np.mean(final.healthy_change(_transform_to_final(estimator, X))))
