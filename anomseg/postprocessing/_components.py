"""Connected-component filtering and morphology of binary anomaly masks."""

from __future__ import annotations

from numbers import Integral

import numpy as np
from scipy import ndimage
from skimage.morphology import ball, disk, remove_small_objects

from ..utils._param_validation import MAX_RADIUS, Interval, validate_params

__all__ = ["binary_closing", "binary_opening", "remove_small_components"]

_RADIUS = {"mask": ["array-like"], "radius": [Interval(Integral, 0, MAX_RADIUS, closed="both")]}


def _footprint(ndim, radius):
    """The ball of ``radius`` pixels in 2D or 3D."""
    return (disk if ndim == 2 else ball)(radius).astype(bool)


@validate_params(
    {
        "mask": ["array-like"],
        "min_size": [Interval(Integral, 0, None, closed="left")],
        "connectivity": [None, Interval(Integral, 1, 3, closed="both")],
    },
    prefer_skip_nested_validation=True,
)
def remove_small_components(mask, min_size, connectivity=None):
    """Remove connected components smaller than ``min_size`` pixels.

    Parameters
    ----------
    mask : ndarray of bool
        A 2D or 3D mask.
    min_size : int >= 0
        Components with fewer pixels are removed.
    connectivity : int or None, default=None
        Neighbourhood as in :func:`scipy.ndimage.generate_binary_structure`:
        1 for faces only, up to ``mask.ndim`` (the default) for full
        8- (2D) or 26-connectivity (3D).

    Returns
    -------
    filtered : ndarray of bool
    """
    mask = np.asarray(mask, dtype=bool)
    connectivity = mask.ndim if connectivity is None else connectivity
    if connectivity > mask.ndim:
        raise ValueError(
            f"The 'connectivity' parameter of remove_small_components must be "
            f"in [1, {mask.ndim}] for {mask.ndim}D masks. Got {connectivity!r} instead."
        )
    if min_size <= 1 or not mask.any():
        return mask.copy()
    return remove_small_objects(mask, max_size=min_size - 1, connectivity=connectivity)


@validate_params(_RADIUS, prefer_skip_nested_validation=True)
def binary_opening(mask, radius=1):
    """Morphological opening with a ball of ``radius`` pixels: removes
    structures thinner than the ball."""
    mask = np.asarray(mask, dtype=bool)
    if radius == 0:
        return mask.copy()
    return ndimage.binary_opening(mask, structure=_footprint(mask.ndim, radius))


@validate_params(_RADIUS, prefer_skip_nested_validation=True)
def binary_closing(mask, radius=1):
    """Morphological closing with a ball of ``radius`` pixels: fills gaps
    narrower than the ball. Pixels near the border are closed as if the mask
    continued with background beyond it."""
    mask = np.asarray(mask, dtype=bool)
    if radius == 0:
        return mask.copy()
    padded = np.pad(mask, radius)
    closed = ndimage.binary_closing(padded, structure=_footprint(mask.ndim, radius))
    return closed[tuple(slice(radius, -radius) for _ in range(mask.ndim))]
