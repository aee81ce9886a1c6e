"""Lesion-wise metrics: lesions as connected components, counted as detected
or missed, and predicted components as true or false positives."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

__all__ = ["LesionMetrics", "lesion_wise_metrics"]


def _ratio(numerator, denominator):
    return numerator / denominator if denominator else float("nan")


def _sum_or_none(a, b):
    return None if a is None or b is None else a + b


@dataclass(frozen=True)
class LesionMetrics:
    """The lesion-wise counts of one volume, or of several added together
    (``a + b`` sums the counts and volumes, so that the ratios of a sum are
    pooled ratios).

    Attributes
    ----------
    n_lesions : int
        True lesions: connected components of the truth mask.
    n_detected : int
        True lesions overlapped by a predicted component.
    n_components : int
        Predicted components: connected components of the predicted mask.
    n_true_positive_components : int
        Predicted components that overlap a true lesion.
    true_volume, predicted_volume : int
        Voxels of the truth and of the predicted mask.
    true_volume_ml, predicted_volume_ml : float or None
        The same in millilitres; None when the voxel volume is unknown.
    """

    n_lesions: int
    n_detected: int
    n_components: int
    n_true_positive_components: int
    true_volume: int
    predicted_volume: int
    true_volume_ml: float | None = None
    predicted_volume_ml: float | None = None

    def __add__(self, other):
        return LesionMetrics(
            *(getattr(self, f) + getattr(other, f) for f in _COUNTS),
            _sum_or_none(self.true_volume_ml, other.true_volume_ml),
            _sum_or_none(self.predicted_volume_ml, other.predicted_volume_ml),
        )

    @property
    def n_missed(self):
        """True lesions that no predicted component overlaps."""
        return self.n_lesions - self.n_detected

    @property
    def n_false_positive_components(self):
        """Predicted components that overlap no true lesion."""
        return self.n_components - self.n_true_positive_components

    @property
    def sensitivity(self):
        """Detected / true lesions; NaN without a true lesion."""
        return _ratio(self.n_detected, self.n_lesions)

    @property
    def precision(self):
        """True-positive / predicted components; NaN without a predicted
        component."""
        return _ratio(self.n_true_positive_components, self.n_components)

    @property
    def f1(self):
        """The harmonic mean of :attr:`sensitivity` and :attr:`precision`:
        0 when nothing matches (no lesion detected, but lesions or
        components exist), NaN when there is neither a lesion nor a
        component."""
        if self.n_lesions == 0 and self.n_components == 0:
            return float("nan")
        if self.n_detected == 0:
            return 0.0
        s, p = self.sensitivity, self.precision
        return 2 * s * p / (s + p)

    @property
    def volume_error(self):
        """Predicted minus true volume, in voxels (positive: over-segmented)."""
        return self.predicted_volume - self.true_volume

    @property
    def volume_error_ml(self):
        """Predicted minus true volume in millilitres; None when unknown."""
        if self.true_volume_ml is None:
            return None
        return self.predicted_volume_ml - self.true_volume_ml

    @property
    def relative_volume_error(self):
        """:attr:`volume_error` / true volume; NaN without a true lesion."""
        return _ratio(self.volume_error, self.true_volume)

    def as_dict(self):
        """The counts, volumes and every derived figure, as a dict."""
        return asdict(self) | {name: getattr(self, name) for name in _DERIVED}


_COUNTS = (
    "n_lesions",
    "n_detected",
    "n_components",
    "n_true_positive_components",
    "true_volume",
    "predicted_volume",
)
_DERIVED = (
    "n_missed",
    "n_false_positive_components",
    "sensitivity",
    "precision",
    "f1",
    "volume_error",
    "volume_error_ml",
    "relative_volume_error",
)


def _binary(array, name):
    array = np.asarray(array)
    if array.dtype != bool and not np.isin(array, (0, 1)).all():
        values = np.unique(array)
        raise ValueError(
            f"'{name}' must be a binary mask (0 and 1, or bool); got the values "
            f"{values[:5].tolist()}{' ...' if values.size > 5 else ''}."
        )
    return array.astype(bool)


def lesion_wise_metrics(y_true, y_pred, *, min_overlap=1, voxel_volume=None):
    """Count lesions detected and missed, and predicted components that are
    true or false positives, in one volume (or one 2D image).

    Lesions are the connected components of ``y_true`` and predicted
    components those of ``y_pred``, with full connectivity: voxels touching
    by a face, an edge or a corner belong together (26-connectivity in 3D,
    8 in 2D). **Overlap rule**: a true lesion is *detected* when at least one
    predicted component shares ``min_overlap`` voxels with it (by default
    any overlap, the usual rule of MS and tumour lesion detection); a
    predicted component is a *true positive* when it shares ``min_overlap``
    voxels with at least one true lesion, and a *false positive* otherwise.
    One large component covering two lesions detects both and counts once
    as a true positive.

    Parameters
    ----------
    y_true : array-like of bool or {0, 1}
        The ground-truth mask.
    y_pred : array-like of bool or {0, 1}
        The predicted mask, with the shape of ``y_true``, such as the mask
        ``predict`` returns.
    min_overlap : int, default=1
        The fewest voxels a lesion and a predicted component must share to
        match.
    voxel_volume : float or None, default=None
        The volume of one voxel in millilitres (the product of the voxel
        sizes in mm, divided by 1000), to give volumes in mL too.

    Returns
    -------
    metrics : LesionMetrics
        Counts and volumes; its properties give the sensitivity, precision,
        F1 and volume errors, and :meth:`~LesionMetrics.as_dict` all of them.

    Raises
    ------
    ValueError
        If the masks differ in shape or are not binary, if ``min_overlap``
        is not a positive integer, or ``voxel_volume`` not a positive number.

    Examples
    --------
    >>> import numpy as np
    >>> from anomseg.metrics import lesion_wise_metrics
    >>> truth = np.zeros((8, 8), bool); truth[1:3, 1:3] = True; truth[6, 6] = True
    >>> mask = np.zeros((8, 8), bool); mask[2:4, 2:4] = True; mask[5, 1] = True
    >>> m = lesion_wise_metrics(truth, mask)
    >>> m.n_lesions, m.n_detected, m.n_components, m.n_false_positive_components
    (2, 1, 2, 1)
    >>> m.sensitivity, m.precision
    (0.5, 0.5)
    """
    truth, predicted = _binary(y_true, "y_true"), _binary(y_pred, "y_pred")
    if truth.shape != predicted.shape:
        raise ValueError(
            f"'y_pred' must have the shape of 'y_true', {truth.shape}; got {predicted.shape}."
        )
    if (
        isinstance(min_overlap, bool)
        or not isinstance(min_overlap, (int, np.integer))
        or min_overlap < 1
    ):
        raise ValueError(f"'min_overlap' must be a positive integer; got {min_overlap!r}.")
    if voxel_volume is not None and not (np.isfinite(voxel_volume) and voxel_volume > 0):
        raise ValueError(
            f"'voxel_volume' must be a positive number of mL, or None; got {voxel_volume!r}."
        )
    structure = np.ones((3,) * truth.ndim, bool)  # full connectivity
    lesions, n_lesions = ndimage.label(truth, structure)
    components, n_components = ndimage.label(predicted, structure)
    both = (lesions > 0) & (components > 0)
    pairs, shared = np.unique(
        np.stack([lesions[both], components[both]]), axis=1, return_counts=True
    )
    matched = pairs[:, shared >= min_overlap]
    true_volume, predicted_volume = int(truth.sum()), int(predicted.sum())
    return LesionMetrics(
        n_lesions=int(n_lesions),
        n_detected=int(np.unique(matched[0]).size),
        n_components=int(n_components),
        n_true_positive_components=int(np.unique(matched[1]).size),
        true_volume=true_volume,
        predicted_volume=predicted_volume,
        true_volume_ml=None if voxel_volume is None else true_volume * float(voxel_volume),
        predicted_volume_ml=None
        if voxel_volume is None
        else predicted_volume * float(voxel_volume),
    )
