"""Post-processing of binary anomaly masks as scikit-learn transformers."""

from __future__ import annotations

from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from ..utils import check_maps
from ..utils._param_validation import MAX_RADIUS, Interval, StrOptions
from ._components import binary_closing, binary_opening, remove_small_components

__all__ = ["ConnectedComponentFilter", "MorphologicalFilter"]


def _stack_like(samples, stacked):
    return np.stack(samples) if stacked else list(samples)


class _BaseMaskFilter(TransformerMixin, BaseEstimator):
    """A stateless filter of boolean masks (2D or 3D, stack or list).

    Nothing is learned: ``fit`` only validates the parameters, and
    ``transform`` works without it. Subclasses declare
    ``_parameter_constraints`` and implement ``_filter(mask)``.
    """

    #: They learn nothing: a model file holds no fitted attribute of theirs.
    _fitted_attribute_constraints: dict = {}

    def fit(self, X, y=None):
        """Validate the parameters and masks; nothing is learned.

        Parameters
        ----------
        X : ndarray of bool or list of ndarray
            Masks, see ``transform``.
        y : None
            Ignored; present for scikit-learn compatibility.

        Returns
        -------
        self : object
        """
        self._validate_params()
        check_maps(X, f"{type(self).__name__}.fit", name="X")
        return self

    def transform(self, X):
        """Filter masks.

        Parameters
        ----------
        X : ndarray of bool or list of ndarray
            Boolean masks (non-zero counts as True), 2D or 3D, as a stack of
            shape (n_masks, H, W) or (n_masks, X, Y, Z) or a list. Masked
            pixels of a masked array count as False.

        Returns
        -------
        masks : ndarray of bool or list of ndarray
            The filtered masks, in the layout of ``X``. ``X`` is never
            modified.
        """
        self._validate_params()
        masks, stacked = check_maps(X, f"{type(self).__name__}.transform", name="X")
        return _stack_like([self._filter(m.astype(bool, copy=False)) for m in masks], stacked)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        return tags


class ConnectedComponentFilter(_BaseMaskFilter):
    """Remove connected components smaller than ``min_size`` pixels.

    Components are found in 2D for images and in 3D for volumes
    (:func:`remove_small_components`).

    Parameters
    ----------
    min_size : int >= 1, default=10
        Components with fewer pixels are removed.
    connectivity : int or None, default=None
        1 for face neighbours only, up to the number of spatial dimensions
        (the default) for full 8- (2D) or 26-connectivity (3D).

    Examples
    --------
    >>> import numpy as np
    >>> from anomseg.postprocessing import ConnectedComponentFilter
    >>> masks = np.zeros((1, 8, 8), bool)
    >>> masks[0, :5, :4] = True     # 20 pixels, kept
    >>> masks[0, 7, 5:8] = True     # 3 pixels, removed
    >>> int(ConnectedComponentFilter(min_size=10).fit_transform(masks).sum())
    20
    """

    def __init__(self, min_size=10, connectivity=None):
        self.min_size = min_size
        self.connectivity = connectivity

    _parameter_constraints: dict = {
        "min_size": [Interval(Integral, 1, None, closed="left")],
        "connectivity": [None, Interval(Integral, 1, 3, closed="both")],
    }

    def _filter(self, mask):
        if self.connectivity is not None and self.connectivity > mask.ndim:
            raise ValueError(
                f"The 'connectivity' parameter of {type(self).__name__} must be "
                f"in [1, {mask.ndim}] for {mask.ndim}D masks. Got {self.connectivity} instead."
            )
        return remove_small_components(mask, self.min_size, self.connectivity)


class MorphologicalFilter(_BaseMaskFilter):
    """Morphological opening and/or closing of masks with a ball.

    Opening removes structures thinner than the ball (isolated false
    positives); closing fills gaps narrower than it.

    Parameters
    ----------
    operation : {"opening", "closing", "opening-closing"}, default="opening"
        The operation; ``"opening-closing"`` opens, then closes.
    radius : int >= 0, default=1
        Radius of the ball in pixels (0 leaves masks unchanged).

    See Also
    --------
    binary_opening, binary_closing : The functions applied.

    Examples
    --------
    >>> import numpy as np
    >>> from anomseg.postprocessing import MorphologicalFilter
    >>> masks = np.zeros((1, 7, 7), bool)
    >>> masks[0, 1:6, 1:6] = True
    >>> masks[0, 3, 3] = False      # a one-pixel gap
    >>> bool(MorphologicalFilter("closing").fit_transform(masks)[0, 3, 3])
    True
    """

    def __init__(self, operation="opening", radius=1):
        self.operation = operation
        self.radius = radius

    _parameter_constraints: dict = {
        "operation": [StrOptions({"opening", "closing", "opening-closing"})],
        "radius": [Interval(Integral, 0, MAX_RADIUS, closed="both")],
    }

    def _filter(self, mask):
        if self.operation in ("opening", "opening-closing"):
            mask = binary_opening(mask, self.radius)
        if self.operation in ("closing", "opening-closing"):
            mask = binary_closing(mask, self.radius)
        return mask
