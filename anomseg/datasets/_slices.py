"""Cut 3D volumes into 2D slices, for methods that learn from slices."""

from __future__ import annotations

from numbers import Integral

import numpy as np
from sklearn.utils import Bunch

from ..utils._param_validation import COMMON_CONSTRAINTS, Interval, Options, validate_params

__all__ = ["extract_slices"]

_WHERE = "extract_slices"


def _as_list(volumes, name):
    if isinstance(volumes, (list, tuple)):
        return list(volumes)
    if volumes is None or np.ndim(volumes) == 0:
        raise TypeError(
            f"'{name}' of {_WHERE} must be a stack or a list of volumes; "
            f"got {type(volumes).__name__}."
        )
    return list(volumes)


def _foreground(volume, n_spatial):
    """Spatial foreground: unmasked pixels, else non-zero in any channel."""
    if isinstance(volume, np.ma.MaskedArray):
        background = np.ma.getmaskarray(volume)
        fg = ~background
        return fg.all(axis=-1) if fg.ndim > n_spatial else fg
    fg = np.asarray(volume) != 0
    return fg.any(axis=-1) if fg.ndim > n_spatial else fg


@validate_params(
    {
        "axis": [Options(Integral, {0, 1, 2, -1, -2, -3})],
        "lesion_free": [None, "boolean"],
        "min_foreground": [Interval(Integral, 0, None, closed="left")],
        "channel_axis": COMMON_CONSTRAINTS["channel_axis"],
    },
    prefer_skip_nested_validation=True,
)
def extract_slices(
    volumes,
    masks=None,
    *,
    axis=-1,
    lesion_free=None,
    min_foreground=0,
    groups=None,
    channel_axis=None,
):
    """Cut volumes into 2D slices, optionally keeping only lesion-free ones.

    The usual training set of slice-based methods is the lesion-free axial
    slices of the training patients, with each slice's patient as its group
    so that calibration holds out whole patients::

        healthy = extract_slices(data.images, data.masks, lesion_free=True,
                                 groups=data.subjects)
        estimator.fit(healthy.images, groups=healthy.groups)

    Lesion-free slices lie mostly at the top and bottom of a volume, which
    biases such a healthy set towards the ends of the brain.

    Parameters
    ----------
    volumes : array-like of shape (n_volumes, X, Y, Z), or list
        Volumes, plain or :class:`numpy.ma.MaskedArray`, with a trailing
        channel axis if ``channel_axis=-1``. The slices of all volumes along
        ``axis`` must have the same shape.
    masks : array-like or list of bool arrays, or None, default=None
        Lesion masks with the volumes' spatial shapes. Required when
        ``lesion_free`` is not None.
    axis : {0, 1, 2, -1, -2, -3}, default=-1
        Spatial axis to slice along; -1 gives axial slices of volumes in
        canonical orientation.
    lesion_free : {None, True, False}, default=None
        None keeps every slice, True only slices without lesion pixels, False
        only slices with at least one.
    min_foreground : int >= 0, default=0
        Keep only slices with at least this many foreground pixels (unmasked
        pixels of a masked array, else pixels non-zero in any channel).
    groups : sequence of length n_volumes, or None, default=None
        A label per volume, such as its subject id; default the volume index.
    channel_axis : None or -1, default=None
        ``-1`` when volumes carry a trailing channel axis, which slices keep.

    Returns
    -------
    slices : sklearn.utils.Bunch
        With fields

        images : ndarray of shape (n_slices, H, W) or (n_slices, H, W, C)
            The slices, a masked array if any volume was one.
        masks : ndarray of bool of shape (n_slices, H, W), or None
            The lesion masks of the slices, if ``masks`` was given.
        groups : ndarray of shape (n_slices,)
            The group of each slice's volume, for ``fit(X, groups=...)``.
        slice_index : ndarray of int of shape (n_slices,)
            Index of each slice along ``axis`` in its volume.

    Raises
    ------
    ValueError
        If no slice is kept, masks are missing or mis-shaped, or slices of
        different volumes have different shapes.

    Examples
    --------
    >>> import numpy as np
    >>> from anomseg.datasets import extract_slices
    >>> volumes = np.ones((2, 8, 8, 5), dtype=np.float32)
    >>> masks = np.zeros((2, 8, 8, 5), dtype=bool)
    >>> masks[0, 2:4, 2:4, 1:3] = True
    >>> healthy = extract_slices(volumes, masks, lesion_free=True)
    >>> healthy.images.shape
    (8, 8, 8)
    >>> healthy.groups
    array([0, 0, 0, 1, 1, 1, 1, 1])
    >>> healthy.slice_index
    array([0, 3, 4, 0, 1, 2, 3, 4])
    """
    volumes = _as_list(volumes, "volumes")
    n_volumes = len(volumes)
    if n_volumes == 0:
        raise ValueError(f"'volumes' of {_WHERE} is empty.")
    if masks is None and lesion_free is not None:
        raise ValueError(f"'masks' of {_WHERE} is required with lesion_free={lesion_free}.")
    masks = None if masks is None else _as_list(masks, "masks")
    groups = np.arange(n_volumes) if groups is None else np.asarray(groups)
    for name, values in (("masks", masks), ("groups", groups)):
        if values is not None and len(values) != n_volumes:
            raise ValueError(
                f"'{name}' of {_WHERE} must have one entry per volume "
                f"({n_volumes}); got {len(values)}."
            )

    n_spatial = 3
    spatial_axis = axis % n_spatial
    kept = {"images": [], "masks": [], "groups": [], "slice_index": []}
    for i, volume in enumerate(volumes):
        volume = volume if isinstance(volume, np.ma.MaskedArray) else np.asarray(volume)
        if volume.ndim != n_spatial + (channel_axis is not None):
            raise ValueError(
                f"volumes[{i}] of {_WHERE} has shape {volume.shape}; expected "
                f"a 3D volume{' with a trailing channel axis' if channel_axis else ''}."
            )
        spatial_shape = volume.shape[:n_spatial]
        keep = np.ones(spatial_shape[spatial_axis], dtype=bool)
        other_axes = tuple(a for a in range(n_spatial) if a != spatial_axis)
        if min_foreground:
            fg = _foreground(volume, n_spatial)
            keep &= fg.sum(axis=other_axes) >= min_foreground
        if masks is not None:
            mask = np.asarray(masks[i], dtype=bool)
            if mask.shape != spatial_shape:
                raise ValueError(
                    f"masks[{i}] of {_WHERE} has shape {mask.shape}; expected "
                    f"the spatial shape of volumes[{i}], {spatial_shape}."
                )
            if lesion_free is not None:
                has_lesion = mask.any(axis=other_axes)
                keep &= ~has_lesion if lesion_free else has_lesion
            kept["masks"].append(np.moveaxis(mask, spatial_axis, 0)[keep])
        kept["images"].append(np.moveaxis(volume, spatial_axis, 0)[keep])
        kept["groups"].append(np.repeat(groups[i : i + 1], keep.sum()))
        kept["slice_index"].append(np.flatnonzero(keep))

    if sum(len(s) for s in kept["slice_index"]) == 0:
        raise ValueError(
            f"{_WHERE} kept no slice (lesion_free={lesion_free}, min_foreground={min_foreground})."
        )
    slice_shapes = {im.shape[1:] for im in kept["images"] if len(im)}
    if len(slice_shapes) > 1:
        raise ValueError(
            f"Slices of {_WHERE} must share one shape to be stacked; got "
            f"{sorted(slice_shapes)}. Crop or resample the volumes first."
        )
    any_masked = any(isinstance(v, np.ma.MaskedArray) for v in volumes)
    concatenate = np.ma.concatenate if any_masked else np.concatenate
    return Bunch(
        images=concatenate([im for im in kept["images"] if len(im)]),
        masks=(
            np.concatenate([m for m in kept["masks"] if len(m)]) if masks is not None else None
        ),
        groups=np.concatenate(kept["groups"]),
        slice_index=np.concatenate(kept["slice_index"]),
    )
