"""Cropping and resizing with an exact geometric inverse, so that anomaly
maps computed in the transformed geometry come back in the input's."""

from __future__ import annotations

from numbers import Integral

import numpy as np
from skimage.transform import resize
from sklearn.utils.validation import check_is_fitted

from .._docstrings import fill_doc
from ..exceptions import ShapeMismatchError
from ..utils import check_maps
from ..utils._param_validation import (
    COMMON_CONSTRAINTS,
    FITTED_CONSTRAINTS,
    MAX_SIDE,
    Interval,
    ListOf,
    NumberSequence,
    StrOptions,
)
from ._base import _BaseImageTransformer, _wrap

__all__ = ["ForegroundCropper", "Resizer"]


#: A spatial size: one positive int for every axis, or one per axis.
_SPATIAL_SIZE = [
    Interval(Integral, 1, None, closed="left"),
    NumberSequence(Interval(Integral, 1, None, closed="left")),
]


def _spatial_size(value, name, owner, ndim):
    """``value`` (validated: an int, or one int per spatial axis) as a tuple
    of ``ndim`` ints."""
    values = (value,) * ndim if isinstance(value, Integral) else tuple(value)
    if len(values) != ndim:
        raise ValueError(
            f"The '{name}' parameter of {owner} must be a positive int or a tuple "
            f"of {ndim} positive ints for {ndim}D samples. Got {value!r} instead."
        )
    return tuple(int(v) for v in values)


class _BaseGeometry(_BaseImageTransformer):
    """A geometric transformer: fit on one spatial shape, transform only that
    shape, and map anomaly maps back with ``inverse_transform`` (which
    :class:`AnomalyPipeline` applies to the maps of its final step)."""

    _fitted_attribute_constraints: dict = {
        **_BaseImageTransformer._fitted_attribute_constraints,
        "input_shape_": FITTED_CONSTRAINTS["shape"],
        "output_shape_": FITTED_CONSTRAINTS["shape"],
    }

    def _check_fitted_state(self):
        """A loaded model's output shape is the one its fitted geometry
        gives, of the input's number of dimensions."""
        if len(self.output_shape_) != len(self.input_shape_) or tuple(self.output_shape_) != tuple(
            self._output_shape()
        ):
            raise ValueError(
                f"its output_shape_ {self.output_shape_} is not the one its geometry gives"
            )

    def _fit(self, batch):
        shape = batch.common_shape
        if shape is None:
            raise ShapeMismatchError(
                f"{type(self).__name__}.fit needs training samples that share "
                f"one spatial shape; got shapes {sorted(set(batch.spatial_shapes))}."
                " Resample them to a common grid first."
            )
        self.input_shape_ = shape
        self._fit_geometry(batch)

    def _check_input(self, X, method):
        batch = super()._check_input(X, method)
        if method != "fit":
            self._check_shapes(batch.spatial_shapes, self.input_shape_, "X", method)
        return batch

    def _check_shapes(self, shapes, expected, name, method):
        for i, shape in enumerate(shapes):
            if shape != expected:
                raise ShapeMismatchError(
                    f"{name}[{i}] passed to {type(self).__name__}.{method} has "
                    f"spatial shape {shape}, but {type(self).__name__} expects "
                    f"{expected}, the "
                    f"{'shape seen in fit' if name == 'X' else 'transformed shape'}."
                )

    def inverse_transform(self, maps):
        """Bring anomaly maps or masks back to the geometry of the input.

        Parameters
        ----------
        maps : ndarray or list of ndarray
            Float anomaly maps or boolean masks with the spatial shape that
            ``transform`` outputs, without a channel axis: a stack or a list.

        Returns
        -------
        maps : ndarray or list of ndarray
            The maps in ``input_shape_``, with their dtype, in the layout of
            the input.
        """
        check_is_fitted(self, "input_shape_")
        samples, stacked = check_maps(maps, f"{type(self).__name__}.inverse_transform")
        self._check_shapes(
            [m.shape for m in samples], self._output_shape(), "maps", "inverse_transform"
        )
        return _wrap([self._inverse_one(m) for m in samples], stacked)


def _take_window(array, window, fill):
    """``array[window]`` where the window may extend beyond the array on
    the leading axes; the outside is ``fill``."""
    out = np.full(
        tuple(stop - start for start, stop in window) + array.shape[len(window) :],
        fill,
        dtype=array.dtype,
    )
    source, target = _overlap(window, array.shape)
    out[target] = array[source]
    return out


def _put_window(array, window, shape, fill):
    """The inverse of :func:`_take_window`: ``array`` placed at ``window``
    in an array of ``shape`` filled with ``fill``."""
    out = np.full(shape + array.shape[len(window) :], fill, dtype=array.dtype)
    source, target = _overlap(window, shape)
    out[source] = array[target]
    return out


def _overlap(window, shape):
    """Slices of the window's overlap with the array, in array and window
    coordinates."""
    source, target = [], []
    for (start, stop), size in zip(window, shape):
        low, high = max(start, 0), max(min(stop, size), max(start, 0))
        source.append(slice(low, high))
        target.append(slice(low - start, high - start))
    return tuple(source), tuple(target)


@fill_doc
class ForegroundCropper(_BaseGeometry):
    """Crop (or pad) images to the foreground of the training set.

    With ``mode="bbox"``, ``fit`` learns the bounding box of the union of the
    training foregrounds, widened by ``margin`` pixels on every side (within
    the image), and ``transform`` crops every sample to it. With
    ``mode="fixed"``, the window has the given ``size`` and is centred on
    the centre of that bounding box; where it extends beyond the image, the
    sample is padded with masked background. ``inverse_transform`` puts
    anomaly maps back into the input geometry, with 0 (or False) outside
    the window, so maps computed on cropped images are exact in the input
    geometry.

    Parameters
    ----------
    mode : {"bbox", "fixed"}, default="bbox"
        Crop to the training foreground's bounding box, or to a window of
        fixed ``size`` around its centre.
    size : int or tuple of int, default=None
        Spatial size of the output with ``mode="fixed"`` (an int for every
        axis); ignored with ``mode="bbox"``.
    margin : int >= 0, default=0
        Pixels added on every side of the bounding box with ``mode="bbox"``.
    %(channel_axis)s

    Attributes
    ----------
    input_shape_ : tuple of int
        The spatial shape of the training samples; ``transform`` accepts
        only this shape.
    window_ : tuple of (int, int)
        ``(start, stop)`` of the crop on every spatial axis, in input
        coordinates. With ``mode="fixed"`` it may extend beyond the image.
    output_shape_ : tuple of int
        The spatial shape of the transformed samples.
    %(n_channels_attribute)s

    Examples
    --------
    >>> import numpy as np
    >>> from anomseg.preprocessing import ForegroundCropper
    >>> images = np.zeros((2, 10, 10))
    >>> images[:, 3:6, 2:8] = 1.0
    >>> cropper = ForegroundCropper(margin=1).fit(images)
    >>> cropper.window_, cropper.output_shape_
    (((2, 7), (1, 9)), (5, 8))
    >>> maps = cropper.transform(images).filled(0)
    >>> bool(np.array_equal(cropper.inverse_transform(maps), images))
    True
    """

    def __init__(self, mode="bbox", size=None, margin=0, channel_axis=None):
        self.mode = mode
        self.size = size
        self.margin = margin
        self.channel_axis = channel_axis

    _fitted_attribute_constraints: dict = {
        **_BaseGeometry._fitted_attribute_constraints,
        "window_": [
            ListOf(
                [
                    ListOf(
                        [Interval(Integral, -MAX_SIDE, 2 * MAX_SIDE, closed="both")],
                        length=2,
                        kind=tuple,
                    )
                ],
                max_length=3,
                kind=tuple,
            )
        ],
    }

    _parameter_constraints: dict = {
        "mode": [StrOptions({"bbox", "fixed"})],
        "size": [None, *_SPATIAL_SIZE],
        "margin": [Interval(Integral, 0, None, closed="left")],
        "channel_axis": COMMON_CONSTRAINTS["channel_axis"],
    }

    def _check_params(self):
        name = type(self).__name__
        if self.mode == "fixed" and self.size is None:
            raise ValueError(
                f"The 'size' parameter of {name} must be given with mode='fixed'. "
                "Got None instead."
            )

    def _fit_geometry(self, batch):
        union = np.logical_or.reduce(batch.foreground)
        if not union.any():
            raise ValueError(
                f"The images passed to {type(self).__name__}.fit have no "
                "foreground pixel; check the foreground masks."
            )
        coords = np.nonzero(union)
        low = np.array([c.min() for c in coords])
        high = np.array([c.max() + 1 for c in coords])
        if self.mode == "bbox":
            low = np.maximum(low - self.margin, 0)
            high = np.minimum(high + self.margin, self.input_shape_)
        else:
            size = np.array(_spatial_size(self.size, "size", type(self).__name__, union.ndim))
            low = (low + high - size) // 2
            high = low + size
        self.window_ = tuple((int(a), int(b)) for a, b in zip(low, high))
        self.output_shape_ = self._output_shape()

    def _output_shape(self):
        return tuple(stop - start for start, stop in self.window_)

    def _transform(self, batch):
        return batch.with_images(
            [_take_window(image, self.window_, 0) for image in batch.images],
            [_take_window(fg, self.window_, False) for fg in batch.foreground],
            excluded=batch.map_excluded(lambda e: _take_window(e, self.window_, False)),
        )

    def _inverse_one(self, m):
        return _put_window(m, self.window_, self.input_shape_, 0)


def _resize(array, shape, interpolate):
    """Resize the leading axes of ``array`` to ``shape``: linearly, with
    anti-aliasing when shrinking, or by nearest neighbour."""
    full = tuple(shape) + array.shape[len(shape) :]
    if not interpolate:
        return resize(array, full, order=0, anti_aliasing=False, preserve_range=True).astype(
            array.dtype
        )
    shrinking = any(new < old for new, old in zip(shape, array.shape))
    out = resize(
        array.astype(np.float32, copy=False),
        full,
        order=1,
        anti_aliasing=shrinking,
        preserve_range=True,
    )
    return out.astype(np.float32)


@fill_doc
class Resizer(_BaseGeometry):
    """Resize the spatial axes of images to a fixed shape.

    Images are interpolated linearly (:func:`skimage.transform.resize`, with
    Gaussian anti-aliasing only when downsampling); foreground masks by
    nearest neighbour. ``inverse_transform`` resizes anomaly maps and masks
    back to ``input_shape_`` by nearest neighbour, so that a threshold
    calibrated at ``shape`` keeps its false-positive rate at the input's
    shape (linear interpolation would shrink the tail of a noisy map; see
    :class:`Resampler`).

    Parameters
    ----------
    shape : int or tuple of int
        Spatial shape of the output (an int for every axis).
    %(channel_axis)s

    Attributes
    ----------
    input_shape_ : tuple of int
        The spatial shape of the training samples; ``transform`` accepts
        only this shape.
    output_shape_ : tuple of int
        ``shape`` as a tuple with one entry per spatial axis.
    %(n_channels_attribute)s

    Examples
    --------
    >>> import numpy as np
    >>> from anomseg.preprocessing import Resizer
    >>> images = np.ones((3, 64, 48))
    >>> resizer = Resizer((32, 32)).fit(images)
    >>> resizer.transform(images).shape
    (3, 32, 32)
    >>> resizer.inverse_transform(np.zeros((3, 32, 32), bool)).shape
    (3, 64, 48)
    """

    _parameter_constraints: dict = {
        "shape": _SPATIAL_SIZE,
        "channel_axis": COMMON_CONSTRAINTS["channel_axis"],
    }

    def __init__(self, shape, channel_axis=None):
        self.shape = shape
        self.channel_axis = channel_axis

    def _fit_geometry(self, batch):
        self.output_shape_ = _spatial_size(
            self.shape, "shape", type(self).__name__, batch.spatial_ndim
        )

    def _output_shape(self):
        return self.output_shape_

    def _transform(self, batch):
        return batch.with_images(
            [_resize(image, self.output_shape_, True) for image in batch.images],
            [_resize(fg, self.output_shape_, False) for fg in batch.foreground],
            excluded=batch.map_excluded(lambda e: _resize(e, self.output_shape_, False)),
        )

    def _inverse_one(self, m):
        # By nearest neighbour, maps too: the calibrated false-positive rate
        # then holds on the input's grid (see Resampler.inverse_transform).
        return _resize(m, self.input_shape_, interpolate=False)
