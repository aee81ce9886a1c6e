"""Healthy data from patient scans: the voxels ``fit`` leaves out.

Groups with annotated patient cohorts but no healthy controls train on the
healthy parts of the patients' scans. :class:`LesionExclusion` says which
voxels those are not: the delineated lesions, optionally grown by a margin
or widened to whole slices. ``fit(X, exclude=...)`` neither trains nor
calibrates on them, but still scores each scan whole, lesions included, as
``predict`` will: a method whose map of a voxel depends on the rest of its
scan (histogram equalisation, say) is calibrated on the values it gives on
such scans.
"""

from __future__ import annotations

import os
import warnings
from numbers import Integral

import numpy as np
from scipy import ndimage

from ..exceptions import AnomsegWarning

__all__ = ["LesionExclusion", "apply_exclusion", "grow_lesion"]


class LesionExclusion:
    """The voxels of each training scan that ``fit`` must leave out.

    Pass it (or just the list of masks) as ``exclude`` to the ``fit`` of an
    estimator or an :class:`~anomseg.preprocessing.AnomalyPipeline`: the
    excluded voxels are used neither for training nor for calibrating the
    threshold; the rest of each scan is.

    Parameters
    ----------
    masks : list of array-like or list of str
        One lesion mask per sample of ``X``, in the same order: boolean
        arrays (or integer arrays of 0 and 1) with the sample's spatial
        shape, or, when ``X`` holds NIfTI paths, the paths of NIfTI masks of
        0 and 1 on each scan's grid; None for a sample with nothing to
        exclude.
    margin : int >= 0, default=0
        Also leave out the voxels within ``margin`` voxels of a lesion (in
        3D for volumes): lesion borders are uncertain, and a method's map is
        raised around a lesion too.
    whole_slices : bool, default=False
        Leave out every slice along ``axis`` that holds a (grown) lesion
        voxel, the "lesion-free slices" protocol of the slice-wise methods,
        rather than the voxels alone: a slice-wise method then trains on
        whole slices only, without holes.
    axis : int, default=-1
        The slicing axis of ``whole_slices`` (the last: axial for volumes
        read by :func:`anomseg.io.load_nifti`).

    Examples
    --------
    >>> import numpy as np
    >>> from anomseg.utils import LesionExclusion
    >>> lesion = np.zeros((6, 6, 4), bool); lesion[2, 2, 1] = True
    >>> exclusion = LesionExclusion([lesion], margin=1)
    >>> int(exclusion.mask(0, (6, 6, 4)).sum())   # the voxel and its 6 neighbours
    7
    >>> int(LesionExclusion([lesion], whole_slices=True).mask(0, (6, 6, 4)).sum())
    36
    """

    def __init__(self, masks, *, margin=0, whole_slices=False, axis=-1):
        if isinstance(masks, (str, os.PathLike, np.ndarray)) or not hasattr(masks, "__len__"):
            raise TypeError(
                "'masks' of LesionExclusion must be a list of one mask (array or "
                f"NIfTI path) per sample; got {type(masks).__name__}."
            )
        if not isinstance(margin, Integral) or isinstance(margin, bool) or margin < 0:
            raise ValueError(f"'margin' of LesionExclusion must be an int >= 0; got {margin!r}.")
        if not isinstance(whole_slices, (bool, np.bool_)):
            raise TypeError(
                f"'whole_slices' of LesionExclusion must be a bool; got {whole_slices!r}."
            )
        if not isinstance(axis, Integral) or isinstance(axis, bool):
            raise TypeError(f"'axis' of LesionExclusion must be an int; got {axis!r}.")
        self.masks = list(masks)
        self.margin = int(margin)
        self.whole_slices = bool(whole_slices)
        self.axis = int(axis)

    def __len__(self):
        return len(self.masks)

    def __repr__(self):
        return (
            f"LesionExclusion({len(self)} masks, margin={self.margin}, "
            f"whole_slices={self.whole_slices})"
        )

    def source(self, i):
        """The mask of sample ``i`` as given (an array or a path)."""
        return self.masks[i]

    def mask(self, i, shape, reference=None):
        """The voxels to leave out of sample ``i``, of spatial ``shape``.

        Parameters
        ----------
        i : int
            The sample.
        shape : tuple of int
            Its spatial shape.
        reference : NiftiReference or None, default=None
            Its grid, when the sample was read from a NIfTI file: a mask
            given as a path must lie on it.

        Returns
        -------
        excluded : ndarray of bool
            The lesion, grown by ``margin`` and widened to whole slices as
            asked.
        """
        source = self.masks[i]
        if source is None:
            return np.zeros(shape, bool)
        if isinstance(source, (str, os.PathLike)):
            from ..io import load_mask

            lesion = load_mask(source, reference, what="exclusion mask")[0]
            name = f"exclusion mask '{source}'"
        else:
            lesion = _as_mask(source, f"exclude[{i}]")
            name = f"exclude[{i}]"
        if lesion.shape != tuple(shape):
            raise ValueError(
                f"{name} has shape {lesion.shape}, but its sample has spatial shape "
                f"{tuple(shape)}; give one mask per sample, in the order of X."
            )
        return grow_lesion(lesion, self.margin, self.whole_slices, self.axis)


def grow_lesion(lesion, margin=0, whole_slices=False, axis=-1):
    """A boolean lesion mask grown by ``margin`` voxels (the full
    neighbourhood of each step: faces only) and, with ``whole_slices``,
    widened to every slice along ``axis`` that it touches."""
    if margin and lesion.any():
        lesion = ndimage.binary_dilation(lesion, iterations=margin)
    if whole_slices:
        axis = axis % lesion.ndim
        others = tuple(a for a in range(lesion.ndim) if a != axis)
        hit = lesion.any(axis=others)
        shape = [1] * lesion.ndim
        shape[axis] = -1
        lesion = np.broadcast_to(hit.reshape(shape), lesion.shape).copy()
    return lesion


def _as_mask(mask, name):
    """``mask`` as a bool array: booleans, or integers of 0 and 1 only."""
    array = np.asarray(mask)
    if array.dtype == bool:
        return array
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(
            f"{name} must be a boolean mask (or integers of 0 and 1); got dtype {array.dtype}."
        )
    if not np.isin(np.unique(array), (0, 1)).all():
        raise ValueError(f"{name} must hold 0 and 1 only; got {np.unique(array)[:5]!r}.")
    return array.astype(bool)


def as_exclusion(exclude, n_samples, where):
    """``exclude`` (None, a list of masks or a :class:`LesionExclusion`) as
    a LesionExclusion of one mask per sample, or None."""
    if exclude is None:
        return None
    if not isinstance(exclude, LesionExclusion):
        if isinstance(exclude, (str, os.PathLike)) or not isinstance(
            exclude, (list, tuple, np.ndarray)
        ):
            raise TypeError(
                f"'exclude' passed to {where} must be a list of one mask per sample "
                f"or a LesionExclusion; got {type(exclude).__name__}."
            )
        exclude = LesionExclusion(list(exclude))
    if len(exclude) != n_samples:
        raise ValueError(
            f"'exclude' passed to {where} has {len(exclude)} mask(s) for {n_samples} "
            "sample(s); give one per sample of X, in the same order."
        )
    return exclude


def apply_exclusion(batch, exclude, where, names=None):
    """``batch`` (an ImageBatch) with the excluded masks of ``exclude``
    (see :func:`as_exclusion`) attached; a sample left with no voxel to
    count warns, and a batch left with none raises."""
    exclusion = as_exclusion(exclude, len(batch), where)
    if exclusion is None:
        return batch
    excluded = [exclusion.mask(i, fg.shape) for i, fg in enumerate(batch.foreground)]
    batch = batch.with_excluded(excluded)
    check_counted(batch, where, names)
    return batch


def check_counted(batch, where, names=None):
    """Warn of every sample whose foreground is all excluded, and raise if
    every sample's is."""
    empty = [i for i in range(len(batch)) if not batch.counted(i).any()]
    if len(empty) == len(batch):
        raise ValueError(
            f"'exclude' passed to {where} leaves no foreground voxel in any sample: "
            "there is nothing healthy to learn from."
        )
    for i in empty:
        if batch.foreground[i].any():
            name = f"'{names[i]}'" if names else f"X[{i}]"
            warnings.warn(
                f"[{where}] 'exclude' leaves no foreground voxel of {name}; it is "
                "neither trained nor calibrated on.",
                AnomsegWarning,
                stacklevel=4,
            )
