"""Connected-component filtering and morphology of binary anomaly masks."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["binary_closing", "binary_opening", "remove_small_components"]


def _structure(ndim, connectivity):
    if connectivity is None:
        connectivity = ndim
    if not 1 <= connectivity <= ndim:
        raise ValueError(
            f"'connectivity' must be in [1, {ndim}] for {ndim}D masks; got {connectivity!r}."
        )
    return ndimage.generate_binary_structure(ndim, connectivity)


def _ball(ndim, radius):
    grid = np.indices((2 * radius + 1,) * ndim) - radius
    return (grid**2).sum(axis=0) <= radius**2


def remove_small_components(mask, min_size, connectivity=None):
    """Remove connected components smaller than ``min_size`` pixels.

    Parameters
    ----------
    mask : ndarray of bool
        A 2D or 3D mask.
    min_size : int
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
    if min_size <= 1 or not mask.any():
        return mask.copy()
    labels, _ = ndimage.label(mask, structure=_structure(mask.ndim, connectivity))
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_size
    keep[0] = False
    return keep[labels]


def binary_opening(mask, radius=1):
    """Morphological opening with a ball of ``radius`` pixels: removes
    structures thinner than the ball."""
    mask = np.asarray(mask, dtype=bool)
    if radius == 0:
        return mask.copy()
    return ndimage.binary_opening(mask, structure=_ball(mask.ndim, radius))


def binary_closing(mask, radius=1):
    """Morphological closing with a ball of ``radius`` pixels: fills gaps
    narrower than the ball. Pixels near the border are closed as if the mask
    continued with background beyond it."""
    mask = np.asarray(mask, dtype=bool)
    if radius == 0:
        return mask.copy()
    pad = radius
    padded = np.pad(mask, pad)
    closed = ndimage.binary_closing(padded, structure=_ball(mask.ndim, radius))
    return closed[tuple(slice(pad, -pad) for _ in range(mask.ndim))]
