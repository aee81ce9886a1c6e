"""Synthetic data: healthy toy images and lesions with exact ground truth."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from scipy import ndimage

from ..utils import check_generator, check_images
from ..utils._param_validation import (
    COMMON_CONSTRAINTS,
    Interval,
    NumberSequence,
    StrOptions,
    validate_params,
)

__all__ = ["add_synthetic_lesions", "make_healthy_images"]

_WHERE = "add_synthetic_lesions"
# How far the smoothed noise of a blob (standardised, clipped to +-2) moves
# its boundary, in units of the squared normalised radius: boundaries vary
# between about 0.6 and 1.5 times the drawn radius.
_BLOB_AMPLITUDE = 0.6
_BLOB_REACH = np.sqrt(1 + 2 * _BLOB_AMPLITUDE)


def _as_range(value, name):
    """A number or a validated (low, high) pair, returned as a pair."""
    pair = tuple(value) if isinstance(value, (tuple, list, np.ndarray)) else (value, value)
    if pair[0] > pair[1]:
        raise ValueError(
            f"The '{name}' parameter of {_WHERE} must be a (low, high) pair with "
            f"low <= high. Got {value!r} instead."
        )
    return pair


def _check_foreground(foreground, batch):
    if foreground is None:
        return batch.foreground
    masks = list(foreground)
    shapes = batch.spatial_shapes
    if len(masks) != len(shapes) or any(np.shape(m) != s for m, s in zip(masks, shapes)):
        raise ValueError(
            f"'foreground' of {_WHERE} must hold one mask per image with the "
            f"image's shape {shapes[:3]}{'...' if len(shapes) > 3 else ''}; "
            f"got shapes {[np.shape(m) for m in masks][:3]}."
        )
    return [np.asarray(m, dtype=bool) for m in masks]


def _lesion(fg, rng, radius, shape, smoothness):
    """Boolean mask of one lesion centred on a random foreground pixel."""
    ndim = fg.ndim
    candidates = np.flatnonzero(fg)
    center = np.unravel_index(candidates[rng.integers(len(candidates))], fg.shape)
    semi_axes = rng.uniform(*radius, size=ndim)
    reach = np.ceil(semi_axes * (_BLOB_REACH if shape == "blob" else 1.0))
    reach = reach.astype(int)
    box = tuple(
        slice(max(c - r, 0), min(c + r + 1, n)) for c, r, n in zip(center, reach, fg.shape)
    )
    grid = np.ogrid[box]
    d2 = sum(((g - c) / a) ** 2 for g, c, a in zip(grid, center, semi_axes))
    if shape == "ellipsoid":
        region = d2 <= 1
    else:
        noise = rng.standard_normal(d2.shape)
        field = ndimage.gaussian_filter(noise, smoothness * semi_axes.mean())
        field = np.clip((field - field.mean()) / (field.std() or 1.0), -2, 2)
        region = d2 - _BLOB_AMPLITUDE * field <= 1
        local_center = tuple(c - s.start for c, s in zip(center, box))
        region[local_center] = True
        labels, _ = ndimage.label(region)
        region = labels == labels[local_center]
    lesion = np.zeros(fg.shape, dtype=bool)
    lesion[box] = region & fg[box]
    return lesion


def _rewrap(images, outputs, batch):
    """Outputs in the input's layout, masked wherever the input was."""
    if batch.stacked:
        if isinstance(images, np.ma.MaskedArray):
            return batch.to_masked(outputs)
        return np.stack(outputs)
    return [
        np.ma.MaskedArray(out, mask=np.ma.getmaskarray(src).copy())
        if isinstance(src, np.ma.MaskedArray)
        else out
        for src, out in zip(images, outputs)
    ]


@validate_params(
    {
        "n_lesions": [
            Interval(Integral, 0, None, closed="left"),
            NumberSequence(Interval(Integral, 0, None, closed="left"), length=2),
        ],
        "radius": [
            Interval(Real, 0, None, closed="neither"),
            NumberSequence(Interval(Real, 0, None, closed="neither"), length=2),
        ],
        "contrast": [Interval(Real, None, None, closed="neither")],
        "shape": [StrOptions({"ellipsoid", "blob"})],
        "smoothness": [Interval(Real, 0, None, closed="neither")],
        "random_state": COMMON_CONSTRAINTS["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def add_synthetic_lesions(
    images,
    *,
    n_lesions=1,
    radius=(3, 8),
    contrast=0.5,
    shape="ellipsoid",
    smoothness=0.5,
    foreground=None,
    random_state=None,
):
    """Insert lesions of known size, shape and contrast into healthy images.

    Each lesion is centred on a random foreground pixel and clipped to the
    foreground, and a constant intensity is added to it. The returned masks
    are the exact ground truth: precisely the pixels whose value changed.

    Parameters
    ----------
    images : array-like of shape (n_images, H, W) or (n_volumes, X, Y, Z), or list
        Healthy 2D images or 3D volumes, plain or
        :class:`numpy.ma.MaskedArray`. They are not modified.
    n_lesions : int >= 0 or (low, high) pair, default=1
        Lesions per image, or the inclusive range the number is drawn from.
        Overlapping lesions merge.
    radius : float > 0 or (low, high) pair, default=(3, 8)
        Semi-axes of each lesion in pixels, drawn uniformly and independently
        per axis from the range.
    contrast : float, non-zero, default=0.5
        Added intensity as a fraction of the image's foreground intensity
        range (max - min, or 1 for a constant foreground): positive for
        hyper-intense lesions (such as MS plaques in FLAIR), negative for
        hypo-intense ones.
    shape : {"ellipsoid", "blob"}, default="ellipsoid"
        Axis-aligned ellipsoids (ellipses in 2D), or irregular blobs: the
        ellipsoid's boundary displaced by smoothed random noise, keeping the
        connected part that holds the centre.
    smoothness : float > 0, default=0.5
        For blobs, the Gaussian smoothing of the noise as a fraction of the
        mean radius: small values give ragged outlines, large ones nearly
        ellipsoidal lesions.
    foreground : array-like or list of bool arrays, or None, default=None
        Where lesions may lie, one mask per image; default the images'
        foreground (unmasked pixels of a masked array, else non-zero pixels).
    random_state : int, numpy.random.Generator or None, default=None
        Seeds the lesions; the same value gives the same output. Global
        random states are never touched.

    Returns
    -------
    images_with_lesions : ndarray of float32 or list of ndarray
        Copies of the images with the lesions, in the input's layout (a
        masked array wherever the input was one, with the same mask).
    masks : ndarray of bool or list of ndarray
        The lesion pixels of each image, exactly the pixels that changed;
        never outside the foreground.

    Raises
    ------
    ValueError
        If a parameter is out of range or an image has no foreground.

    See Also
    --------
    make_healthy_images : Toy healthy images to insert lesions into.

    Examples
    --------
    >>> import numpy as np
    >>> from anomseg.datasets import add_synthetic_lesions, make_healthy_images
    >>> healthy = make_healthy_images(4, shape=(64, 64), random_state=0)
    >>> X, masks = add_synthetic_lesions(healthy, n_lesions=2, radius=(3, 6),
    ...                                  contrast=0.4, random_state=0)
    >>> X.shape, masks.shape, masks.dtype
    ((4, 64, 64), (4, 64, 64), dtype('bool'))
    >>> bool(np.array_equal(X != healthy, masks))
    True
    """
    batch = check_images(images, name="images", where=_WHERE)
    n_lesions = _as_range(n_lesions, "n_lesions")
    radius = _as_range(radius, "radius")
    if contrast == 0:
        raise ValueError(
            f"The 'contrast' parameter of {_WHERE} must be a non-zero number. Got 0 instead."
        )
    foregrounds = _check_foreground(foreground, batch)
    rng = check_generator(random_state)

    outputs, masks = [], []
    for i, (image, fg) in enumerate(zip(batch.images, foregrounds)):
        if not fg.any():
            raise ValueError(
                f"images[{i}] passed to {_WHERE} has no foreground pixel to place lesions in."
            )
        values = image[fg]
        spread = float(values.max() - values.min()) or 1.0
        lesion = np.zeros(fg.shape, dtype=bool)
        for _ in range(rng.integers(n_lesions[0], n_lesions[1] + 1)):
            lesion |= _lesion(fg, rng, radius, shape, smoothness)
        out = image.copy()
        out[lesion] += np.float32(contrast * spread)
        outputs.append(out)
        # Exact ground truth even where float32 rounding absorbed the change.
        masks.append(lesion & (out != image))
    return _rewrap(images, outputs, batch), batch.wrap(masks)


@validate_params(
    {
        "n_images": [Interval(Integral, 1, None, closed="left")],
        "shape": [
            NumberSequence(Interval(Integral, 8, None, closed="left"), length=2),
            NumberSequence(Interval(Integral, 8, None, closed="left"), length=3),
        ],
        "random_state": COMMON_CONSTRAINTS["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def make_healthy_images(n_images=16, shape=(64, 64), random_state=None):
    """Toy "healthy brain" images: a textured ellipse on a zero background.

    Each image holds an ellipse (ellipsoid for a 3D ``shape``) of tissue of
    random size and position, with a smooth texture, a darker centre and mild
    noise; intensities are positive inside and exactly 0 outside, so the
    foreground is the tissue. Fast to make, for tests and documentation.

    Parameters
    ----------
    n_images : int >= 1, default=16
        Number of images.
    shape : tuple of 2 or 3 int, default=(64, 64)
        Shape of each image, each side at least 8.
    random_state : int, numpy.random.Generator or None, default=None
        Seeds the images; global random states are never touched.

    Returns
    -------
    images : ndarray of float32 of shape ``(n_images, *shape)``
        Intensities in about [0.05, 1] inside the tissue, 0 outside.

    See Also
    --------
    add_synthetic_lesions : Adds lesions with exact ground truth.

    Examples
    --------
    >>> from anomseg.datasets import make_healthy_images
    >>> X = make_healthy_images(8, shape=(32, 48), random_state=0)
    >>> X.shape, X.dtype
    ((8, 32, 48), dtype('float32'))
    >>> bool(X.min() == 0), bool(X.max() <= 1)
    (True, True)
    """
    shape = tuple(int(n) for n in shape)
    rng = check_generator(random_state)
    sizes = np.array(shape, dtype=float)
    grid = np.indices(shape, dtype=float)
    images = np.zeros((n_images, *shape), dtype=np.float32)
    for image in images:
        center = sizes / 2 + rng.uniform(-0.05, 0.05, len(shape)) * sizes
        semi_axes = rng.uniform(0.34, 0.42, len(shape)) * sizes
        d2 = sum(((g - c) / a) ** 2 for g, c, a in zip(grid, center, semi_axes))
        tissue = d2 <= 1
        texture = ndimage.gaussian_filter(rng.standard_normal(shape), min(shape) / 12)
        texture /= texture.std() or 1.0
        values = (
            0.6
            + 0.08 * texture
            - 0.2 * np.exp(-d2 / 0.05)  # darker "ventricles" in the centre
            + 0.15 * (1 - d2)  # brighter deep tissue
            + 0.02 * rng.standard_normal(shape)
        )
        image[tissue] = np.clip(values[tissue], 0.05, 1.0)
    return images
