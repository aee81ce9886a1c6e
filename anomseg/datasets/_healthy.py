"""Healthy calibration data from scans whose lesions are delineated."""

from __future__ import annotations

import numpy as np

from ..utils._exclusion import grow_lesion

__all__ = ["apply_brain_masks", "exclude_lesions"]


def exclude_lesions(images, masks, *, margin=0, whole_slices=False, axis=-1):
    """Remove lesions from the foreground, leaving only healthy tissue.

    Thresholds are calibrated on healthy data. When no healthy scans of the
    right modality exist (as for the embedded MSLUB data), the lesion-free
    tissue of *other* patients is the next best thing; never calibrate on
    the tissue of the patients you evaluate.

    The lesions become background here: a method then sees each scan
    without them, and a per-scan step such as histogram equalisation
    computes its statistics without them too. ``fit(X, exclude=masks)``
    (:class:`~anomseg.utils.LesionExclusion`) instead scores each scan
    whole, as ``predict`` will, and leaves the lesions out of training and
    calibration only; prefer it for fitting.

    Parameters
    ----------
    images : list of ndarray or numpy.ma.MaskedArray
        Volumes (or 2D images); a masked array's mask is kept as background,
        and a plain array's zero voxels are background (the foreground rule
        of :mod:`anomseg.utils`).
    masks : list of ndarray of bool
        Lesion masks with the images' spatial shapes.
    margin : int, default=0
        Also exclude voxels within ``margin`` voxels of a lesion (lesion
        borders are uncertain).
    whole_slices : bool, default=False
        Exclude every slice along ``axis`` that holds any lesion voxel, the
        "tumour-free slices" protocol of slice-based methods, instead of the
        lesion voxels only.
    axis : int, default=-1
        Slicing axis for ``whole_slices`` (axial for canonical NIfTI arrays).

    Returns
    -------
    healthy : list of numpy.ma.MaskedArray
        The images, sharing their data, with lesions masked as background.

    Examples
    --------
    >>> import numpy as np
    >>> from anomseg.datasets import exclude_lesions
    >>> image = np.ones((4, 4, 3)); lesion = np.zeros((4, 4, 3), bool)
    >>> lesion[1, 1, 0] = True
    >>> healthy = exclude_lesions([image], [lesion], whole_slices=True)[0]
    >>> int(healthy.count()), int(exclude_lesions([image], [lesion])[0].count())
    (32, 47)
    """
    if len(images) != len(masks):
        raise ValueError(
            f"'images' and 'masks' must have the same length; got {len(images)} and {len(masks)}."
        )
    healthy = []
    for image, lesion in zip(images, masks):
        lesion = np.asarray(lesion, dtype=bool)
        spatial = np.ma.getdata(image).shape[: lesion.ndim]
        if lesion.shape != spatial:
            raise ValueError(
                f"A lesion mask of shape {lesion.shape} does not match its "
                f"image's spatial shape {spatial}."
            )
        lesion = grow_lesion(lesion, margin, whole_slices, axis)
        if np.ma.isMaskedArray(image):
            background = np.ma.getmaskarray(image)
        else:  # a plain array's background is its zero voxels (all channels)
            data = np.asarray(image)
            zero = data == 0
            background = zero if zero.ndim == lesion.ndim else zero.all(axis=-1, keepdims=True)
            background = np.broadcast_to(background, data.shape)
        extra = lesion if background.ndim == lesion.ndim else lesion[..., None]
        healthy.append(np.ma.MaskedArray(np.ma.getdata(image), mask=background | extra))
    return healthy


def apply_brain_masks(images, brain_masks):
    """Restrict images to their brain masks, as masked arrays.

    Published anomaly segmentation methods work on skull-stripped scans: the
    skull and scalp are bright in FLAIR and swamp every anomaly map. This
    turns full-head images and their brain masks (such as the
    ``brain_masks`` of :func:`load_lgg_flair`, or the output of
    :class:`anomseg.preprocessing.BrainExtractor`) into masked arrays whose
    background is everything outside the brain, so that every transformer,
    estimator and metric downstream works inside the brain only.

    Parameters
    ----------
    images : list of ndarray or numpy.ma.MaskedArray
        Volumes (or 2D images), with an optional trailing channel axis; a
        masked array's mask is kept as background.
    brain_masks : list of ndarray of bool
        Brain masks with the images' spatial shapes.

    Returns
    -------
    brains : list of numpy.ma.MaskedArray
        The images, sharing their data, with everything outside the brain
        masked as background.

    Examples
    --------
    >>> import numpy as np
    >>> from anomseg.datasets import apply_brain_masks
    >>> image = np.arange(8.0).reshape(2, 4); brain = image > 4
    >>> brains = apply_brain_masks([image], [brain])
    >>> brains[0].compressed()
    array([5., 6., 7.])
    """
    if len(images) != len(brain_masks):
        raise ValueError(
            "'images' and 'brain_masks' must have the same length; got "
            f"{len(images)} and {len(brain_masks)}."
        )
    brains = []
    for image, brain in zip(images, brain_masks):
        brain = np.asarray(brain)
        if brain.dtype != bool:
            raise TypeError(f"'brain_masks' must hold bool arrays; got dtype {brain.dtype}.")
        spatial = np.ma.getdata(image).shape[: brain.ndim]
        if brain.shape != spatial:
            raise ValueError(
                f"A brain mask of shape {brain.shape} does not match its image's "
                f"spatial shape {spatial}."
            )
        background = np.ma.getmaskarray(image)
        outside = ~brain if background.ndim == brain.ndim else ~brain[..., None]
        brains.append(np.ma.MaskedArray(np.ma.getdata(image), mask=background | outside))
    return brains
