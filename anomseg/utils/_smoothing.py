"""Gaussian smoothing of anomaly maps inside their foreground."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["smooth_map"]


def smooth_map(anomaly_map, foreground, sigma):
    """Smooth an anomaly map with a Gaussian inside its foreground.

    A normalised convolution: the map (0 outside the foreground) and the
    foreground are both smoothed, and their ratio is kept inside the
    foreground, so that voxels near the edge of the brain are averaged over
    brain voxels only; the background stays 0.

    Parameters
    ----------
    anomaly_map : ndarray
        A 2D or 3D map.
    foreground : ndarray of bool
        Its foreground, of the same shape.
    sigma : float or sequence of float
        Standard deviation in voxels, for all axes or one per axis (0: none
        along that axis).

    Returns
    -------
    smoothed : ndarray of float32
        Of the map's shape, 0 outside the foreground.

    Raises
    ------
    ValueError
        If ``sigma`` has another number of axes than the map.

    Examples
    --------
    >>> import numpy as np
    >>> from anomseg.postprocessing import smooth_map
    >>> fg = np.zeros((6, 6), bool); fg[1:5, 1:5] = True
    >>> m = np.where(fg, 2.0, 0.0); m[2, 2] = 3.0
    >>> s = smooth_map(m, fg, 1.0)
    >>> bool(2.0 < s[2, 2] < 3.0 and s[2, 3] > 2.0), bool(s[~fg].any())
    (True, False)
    >>> bool(np.allclose(smooth_map(np.where(fg, 2.0, 0.0), fg, 1.0)[fg], 2.0))
    True
    """
    foreground = np.asarray(foreground, dtype=bool)
    sigma = (
        np.broadcast_to(np.asarray(sigma, dtype=float), (foreground.ndim,))
        if np.ndim(sigma) == 0
        else np.asarray(sigma, dtype=float)
    )
    if sigma.shape != (foreground.ndim,):
        raise ValueError(
            f"'smoothing' has {sigma.size} value(s) but the maps have {foreground.ndim} "
            "spatial axes; give one standard deviation per axis, or one for all."
        )
    weight = foreground.astype(np.float32)
    inside = np.where(foreground, anomaly_map, 0).astype(np.float32)
    num = ndimage.gaussian_filter(inside, sigma, mode="constant")
    den = ndimage.gaussian_filter(weight, sigma, mode="constant")
    out = np.zeros(foreground.shape, np.float32)
    np.divide(num, den, out=out, where=foreground & (den > 0))
    return out
