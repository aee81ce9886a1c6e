"""Validate inputs once, at the edge of the library.

Image inputs
------------
anomseg accepts images in three layouts, described once here:

* a stack of 2D images, array of shape ``(n_images, H, W)``;
* a stack of 3D volumes, array of shape ``(n_volumes, X, Y, Z)``;
* a list of 2D images or of 3D volumes whose shapes may differ.

**Multi-modal input** (for example FLAIR + T2) adds a trailing channel axis to
every sample, ``(..., n_channels)``, and is declared with ``channel_axis=-1``
on the estimator or transformer, as in scikit-image. Without it
(``channel_axis=None``, the default) images are single-channel. Output maps
never have a channel axis.

**Foreground.** Calibration and metrics count foreground pixels only.
If a sample is a :class:`numpy.ma.MaskedArray`, its mask marks the
background (numpy's convention: masked means "not valid data"); masked
pixels may hold any value, even NaN. For a plain array, the foreground is
every pixel that is non-zero in at least one channel, which is the convention
of skull-stripped scans. Scans that are not skull-stripped should pass through
:class:`anomseg.preprocessing.ForegroundMasker`, which returns masked arrays.
"""

from __future__ import annotations

import itertools
import numbers
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ImageBatch",
    "check_generator",
    "check_images",
    "check_maps",
]


#: ``with_images``'s default: keep the batch's excluded masks.
_KEEP = object()


@dataclass(frozen=True)
class ImageBatch:
    """Validated images: float32 arrays plus their foreground masks.

    Parameters
    ----------
    images : list of ndarray of float32
        One array per sample, spatial axes first, channel axis last if
        ``channel_axis`` is not None. Never modify these in place: they may
        share memory with the caller's data.
    foreground : list of ndarray of bool
        One spatial mask per sample; True inside the foreground.
    stacked : bool
        Whether the input was one array (outputs are then stacked too) rather
        than a list.
    channel_axis : None or int
        ``None`` for single-channel images, ``-1`` for a trailing channel axis.
    excluded : list of ndarray of bool or None, default=None
        One spatial mask per sample of the voxels that ``fit`` must neither
        train nor calibrate on (such as delineated lesions of patient scans
        used as healthy data, see :class:`LesionExclusion`), or None. They
        are still scored with the rest of their sample, as ``predict`` will
        score them.
    voxel_sizes : list of tuple of float or None, default=None
        One voxel size per sample (one positive number per spatial axis, in
        mm, as a NIfTI header gives it), or None where unknown: what
        :class:`~anomseg.preprocessing.Resampler` needs. A step that changes
        the voxel size passes the new ones.
    """

    images: list
    foreground: list
    stacked: bool
    channel_axis: int | None = None
    excluded: list | None = None
    voxel_sizes: list | None = None

    def __post_init__(self):
        if self.excluded is not None and [e.shape for e in self.excluded] != [
            f.shape for f in self.foreground
        ]:  # a bug in a transformer, not user input
            raise RuntimeError("ImageBatch: the excluded masks do not match the foregrounds.")

    def __len__(self):
        return len(self.images)

    @property
    def spatial_shapes(self):
        """List of the spatial shape of each sample."""
        return [m.shape for m in self.foreground]

    @property
    def spatial_ndim(self):
        """2 for images, 3 for volumes."""
        return self.foreground[0].ndim

    @property
    def common_shape(self):
        """The spatial shape shared by all samples, or None if they differ."""
        shapes = set(self.spatial_shapes)
        return shapes.pop() if len(shapes) == 1 else None

    def subset(self, indices):
        """The batch restricted to the samples at ``indices``."""
        indices = list(indices)
        return self.with_images(
            [self.images[i] for i in indices],
            [self.foreground[i] for i in indices],
            excluded=None if self.excluded is None else [self.excluded[i] for i in indices],
            voxel_sizes=None
            if self.voxel_sizes is None
            else [self.voxel_sizes[i] for i in indices],
        )

    def with_images(self, images, foreground=None, *, excluded=_KEEP, voxel_sizes=_KEEP):
        """A batch in this batch's layout holding other images (and, if
        given, other foregrounds, excluded masks and voxel sizes; a step
        that changes the geometry passes the excluded masks changed alike)."""
        foreground = self.foreground if foreground is None else foreground
        excluded = self.excluded if excluded is _KEEP else excluded
        voxel_sizes = self.voxel_sizes if voxel_sizes is _KEEP else voxel_sizes
        return ImageBatch(
            list(images),
            list(foreground),
            self.stacked,
            self.channel_axis,
            None if excluded is None else list(excluded),
            None if voxel_sizes is None else list(voxel_sizes),
        )

    def map_excluded(self, function):
        """``function`` applied to every excluded mask (None stays None):
        for steps that change the geometry."""
        return None if self.excluded is None else [function(e) for e in self.excluded]

    def with_excluded(self, excluded):
        """The batch with other excluded masks (or None)."""
        return self.with_images(self.images, excluded=excluded)

    def counted(self, i):
        """The voxels of sample ``i`` that calibration counts: its
        foreground, less its excluded voxels."""
        if self.excluded is None:
            return self.foreground[i]
        return self.foreground[i] & ~self.excluded[i]

    def without_excluded(self):
        """The batch whose foregrounds leave out the excluded voxels (as
        background), for training."""
        if self.excluded is None:
            return self
        return self.with_images(
            self.images, [self.counted(i) for i in range(len(self))], excluded=None
        )

    def concatenate(self, other):
        """The samples of this batch, then those of ``other``, as a list
        batch."""
        excluded = None
        if self.excluded is not None or other.excluded is not None:
            excluded = [
                np.zeros(fg.shape, bool) if e is None else e
                for part in (self, other)
                for fg, e in zip(part.foreground, part.excluded or [None] * len(part))
            ]
        voxel_sizes = None
        if self.voxel_sizes is not None and other.voxel_sizes is not None:
            voxel_sizes = self.voxel_sizes + other.voxel_sizes
        return ImageBatch(
            self.images + other.images,
            self.foreground + other.foreground,
            False,
            self.channel_axis,
            excluded,
            voxel_sizes,
        )

    def zero_background(self, outputs):
        """Per-sample ``outputs`` (maps, or images with the batch's channel
        layout) with every pixel outside the foreground set to 0."""
        zero = np.float32(0)
        return [
            np.where(fg[..., None] if out.ndim > fg.ndim else fg, out, zero)
            for out, fg in zip(outputs, self.foreground)
        ]

    def to_slices(self):
        """The 2D slices of the samples along their last spatial axis (the
        axial axis of volumes loaded by :func:`anomseg.io.load_nifti`), as a
        list batch; a batch of 2D images is returned as it is."""
        if self.spatial_ndim == 2:
            return self
        images = [s for image in self.images for s in np.moveaxis(image, 2, 0)]
        foreground = [s for fg in self.foreground for s in np.moveaxis(fg, 2, 0)]
        excluded = self.map_excluded(lambda e: list(np.moveaxis(e, 2, 0)))
        excluded = None if excluded is None else [s for e in excluded for s in e]
        return ImageBatch(images, foreground, False, self.channel_axis, excluded)

    def from_slices(self, outputs):
        """Per-slice ``outputs`` of :meth:`to_slices` stacked back into one
        output per sample, slices along the last spatial axis."""
        outputs = list(outputs)
        if self.spatial_ndim == 2:
            return outputs
        bounds = np.cumsum([0] + [fg.shape[2] for fg in self.foreground])
        return [np.stack(outputs[a:b], axis=2) for a, b in itertools.pairwise(bounds)]

    def wrap(self, outputs):
        """Return per-sample ``outputs`` in the layout of the input:
        one stacked array for an array input, a list for a list input."""
        outputs = list(outputs)
        return np.stack(outputs) if self.stacked else outputs

    def to_masked(self, outputs=None):
        """Return ``outputs`` (default: the images) as masked arrays whose
        mask is the background, in the layout of the input."""
        outputs = self.images if outputs is None else outputs
        masked = []
        for out, fg in zip(outputs, self.foreground):
            mask = ~fg
            if out.ndim == fg.ndim + 1:
                mask = np.broadcast_to(mask[..., None], out.shape)
            masked.append(np.ma.MaskedArray(out, mask=mask.copy()))
        if self.stacked:
            return np.ma.stack(masked)
        return masked


def _describe(where):
    return f" passed to {where}" if where else ""


def _check_dtype(array, name, where):
    dtype = array.dtype
    if (
        dtype.kind == "b"
        or not np.issubdtype(dtype, np.number)
        or np.issubdtype(dtype, np.complexfloating)
    ):
        raise TypeError(
            f"{name}{_describe(where)} must hold real numbers (an integer or "
            f"floating dtype); got dtype {dtype}."
        )


def _split_sample(sample, name, where, index):
    """Return (data as float32, background mask or None) for one sample."""
    if isinstance(sample, np.ma.MaskedArray):
        data = np.ma.getdata(sample)
        mask = np.ma.getmaskarray(sample)
    else:
        try:
            data = np.asarray(sample)
        except Exception as exc:  # ragged nested lists and the like
            raise TypeError(
                f"{name}[{index}]{_describe(where)} could not be read as an array: {exc}"
            ) from None
        mask = None
    _check_dtype(data, f"{name}[{index}]", where)
    return data, mask


def check_images(X, *, name="X", where=None, channel_axis=None, voxel_sizes=None):
    """Validate images and return them as float32 arrays with foregrounds.

    Parameters
    ----------
    X : array-like, list of array-like or ImageBatch
        Images in one of the layouts described in :mod:`anomseg.utils`. An
        :class:`ImageBatch`, validated already, is returned as it is: the
        steps of a pipeline pass one on, so that images are validated once.
    name : str, default="X"
        Name of the argument, used in error messages.
    where : str or None, default=None
        The caller, such as ``"FlairThreshold.fit"``, used in error messages.
    channel_axis : None or -1, default=None
        Whether samples carry a trailing channel axis.
    voxel_sizes : sequence or None, default=None
        The voxel size of each sample, in mm: one sequence of positive
        numbers per sample, one number per spatial axis (such as
        ``[(2, 2, 1), (1, 1, 1)]``), carried by the batch for
        :class:`~anomseg.preprocessing.Resampler`. None keeps those of an
        :class:`ImageBatch` (or none).

    Returns
    -------
    batch : ImageBatch
        The validated images, their foregrounds and the input layout.

    Raises
    ------
    TypeError
        If ``X`` is not numeric.
    ValueError
        If ``X`` is empty, has the wrong number of dimensions, mixes 2D and
        3D samples or channel counts, or holds non-finite values in the
        foreground.
    """
    if channel_axis not in (None, -1):
        raise ValueError(
            f"'channel_axis'{_describe(where)} must be None or -1; got {channel_axis!r}."
        )
    if isinstance(X, ImageBatch):  # validated already, by the first step of a pipeline
        if X.channel_axis != channel_axis:
            raise ValueError(
                f"{name}{_describe(where)} was validated with channel_axis="
                f"{X.channel_axis}, but channel_axis={channel_axis} is expected; "
                "give every step of a pipeline the same channel_axis."
            )
        return _with_voxel_sizes(X, voxel_sizes, where)
    n_channel_dims = 0 if channel_axis is None else 1
    if isinstance(X, (list, tuple)):
        stacked = False
        samples = list(X)
        if not samples:
            raise ValueError(f"{name}{_describe(where)} is empty; expected at least one image.")
        allowed = {2 + n_channel_dims, 3 + n_channel_dims}
        layout = "each list element must be a 2D image or a 3D volume"
    else:
        stacked = True
        if isinstance(X, np.ma.MaskedArray):
            array = X
        else:
            if isinstance(X, (str, bytes)) or X is None or np.isscalar(X):
                raise TypeError(
                    f"{name}{_describe(where)} must be an array of images or a "
                    f"list of arrays; got {type(X).__name__}."
                )
            array = np.asarray(X)
        _check_dtype(np.ma.getdata(array), name, where)
        allowed_stack = {3 + n_channel_dims, 4 + n_channel_dims}
        if array.ndim not in allowed_stack:
            raise ValueError(
                f"{name}{_describe(where)} must have "
                f"{' or '.join(map(str, sorted(allowed_stack)))} dimensions "
                f"(n_images, H, W) or (n_volumes, X, Y, Z)"
                f"{' plus a trailing channel axis' if n_channel_dims else ''}"
                f"; got an array of shape {array.shape}."
            )
        if array.shape[0] == 0:
            raise ValueError(f"{name}{_describe(where)} is empty; expected at least one image.")
        samples = list(array)
        allowed = {array.ndim - 1}
        layout = "stack"

    images, foreground = [], []
    for i, sample in enumerate(samples):
        data, background = _split_sample(sample, name, where, i)
        if data.ndim not in allowed:
            raise ValueError(
                f"{name}[{i}]{_describe(where)} has shape {data.shape}; {layout}"
                f" ({' or '.join(map(str, sorted(allowed)))} dimensions"
                f"{', the last being channels' if n_channel_dims else ''})."
            )
        if min(data.shape, default=0) == 0:
            raise ValueError(f"{name}[{i}]{_describe(where)} is empty (shape {data.shape}).")
        data = np.asarray(data, dtype=np.float32)
        if background is None:
            fg = data != 0
            if n_channel_dims:
                fg = fg.any(axis=-1)
        else:
            fg = ~background.any(axis=-1) if n_channel_dims else ~background
            finite = np.isfinite(data)
            if not finite.all():
                # Masked pixels may hold anything: zero them so that no NaN
                # leaks into a network or a histogram. Foreground ones are
                # reported below.
                inside = fg[..., None] if n_channel_dims else fg
                data = np.where(finite | inside, data, np.float32(0))
        if not np.isfinite(data[fg]).all():
            raise ValueError(
                f"{name}[{i}]{_describe(where)} contains NaN or infinite values "
                "in the foreground; mask them (numpy.ma) or replace them."
            )
        images.append(data)
        foreground.append(fg)

    ndims = {fg.ndim for fg in foreground}
    if len(ndims) > 1:
        raise ValueError(
            f"{name}{_describe(where)} mixes 2D images and 3D volumes; pass "
            "only one kind at a time."
        )
    if n_channel_dims:
        channels = {im.shape[-1] for im in images}
        if len(channels) > 1:
            raise ValueError(
                f"{name}{_describe(where)} mixes samples with "
                f"{sorted(channels)} channels; all need the same number."
            )
    return _with_voxel_sizes(
        ImageBatch(images, foreground, stacked, channel_axis), voxel_sizes, where
    )


def _with_voxel_sizes(batch, voxel_sizes, where):
    """``batch`` carrying ``voxel_sizes``, checked: one per sample, of one
    positive finite number per spatial axis."""
    if voxel_sizes is None:
        return batch
    sizes = [np.asarray(s, dtype=float) if np.ndim(s) == 1 else None for s in voxel_sizes]
    ndim = batch.spatial_ndim
    if len(sizes) != len(batch) or any(
        s is None or s.shape != (ndim,) or not (np.isfinite(s) & (s > 0)).all() for s in sizes
    ):
        raise ValueError(
            f"'voxel_sizes'{_describe(where)} must hold one voxel size per image "
            f"({len(batch)}), each {ndim} positive numbers (mm); got {voxel_sizes!r}."
        )
    return batch.with_images(batch.images, voxel_sizes=[tuple(map(float, s)) for s in sizes])


def check_generator(random_state):
    """Turn ``random_state`` into a fresh :class:`numpy.random.Generator`.

    ``None`` gives fresh entropy, an int a seeded generator; a ``Generator``
    or ``RandomState`` is used to draw a seed, so the caller's object is
    advanced but never shared. Global state is never touched.
    """
    if random_state is None or isinstance(random_state, numbers.Integral):
        return np.random.default_rng(random_state)
    if isinstance(random_state, np.random.Generator):
        return np.random.default_rng(random_state.integers(2**63))
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(2**31))
    raise ValueError(
        "'random_state' must be None, an int, a numpy Generator or a "
        f"RandomState; got {random_state!r}."
    )


def check_maps(maps, where, name="maps"):
    """Validate anomaly maps or masks: spatial axes only, stack or list.

    Parameters
    ----------
    maps : array-like of shape (n, H, W) or (n, X, Y, Z), or list
        Float maps or boolean masks, without a channel axis.
    where : str
        The caller, such as ``"Resizer.inverse_transform"``, for messages.
    name : str, default="maps"
        The argument's name, for messages.

    Returns
    -------
    samples : list of ndarray
        Plain arrays (masked pixels filled with 0 or False).
    stacked : bool
        Whether the input was one stacked array.
    """
    if isinstance(maps, (list, tuple)):
        stacked, samples = False, list(maps)
        if not samples:
            raise ValueError(f"{name} passed to {where} is empty.")
    else:
        array = maps if isinstance(maps, np.ma.MaskedArray) else np.asarray(maps)
        if array.ndim not in (3, 4):
            raise ValueError(
                f"{name} passed to {where} must have 3 or 4 dimensions "
                f"(n_images, H, W) or (n_volumes, X, Y, Z); got an array of "
                f"shape {array.shape}."
            )
        stacked, samples = True, list(array)
    out = []
    for i, sample in enumerate(samples):
        data = np.ma.filled(sample, 0) if np.ma.isMaskedArray(sample) else np.asarray(sample)
        if data.dtype != bool and not (
            np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)
        ):
            raise TypeError(
                f"{name}[{i}] passed to {where} must be boolean or real-valued; "
                f"got dtype {data.dtype}."
            )
        if data.ndim not in (2, 3):
            raise ValueError(
                f"{name}[{i}] passed to {where} has shape {data.shape}; maps "
                "have spatial axes only (2D or 3D, no channel axis)."
            )
        out.append(data)
    return out, stacked


#: Values sampled from an image before it is looked at whole, so that a scan
#: is told from a mask in microseconds.
_MASK_SAMPLE = 4096

#: The most distinct integer values (0 included) of an image taken for a
#: label map: tumour label maps (BraTS: 0, 1, 2, 4) hold a few, a scan
#: hundreds.
_MAX_LABELS = 6

#: The fewest voxels of an image taken for a label map: a real slice has
#: 16384 (128 x 128) or more, while hand-made arrays of a few integer
#: intensities (in tests, in examples) are smaller. A binary image is taken
#: for a mask at any size: no scan holds a single non-zero value.
_MIN_LABEL_MAP_SIZE = 10_000


def mask_like_values(image):
    """The distinct values of ``image`` if it looks like a mask or a label
    map rather than a scan, else None.

    It looks like one when it holds 0 and a single other value (a binary
    mask, in any scale), or, with at least ``_MIN_LABEL_MAP_SIZE`` voxels,
    0 and fewer than ``_MAX_LABELS`` other integer values (a label map). A
    strided sample decides for scans at once; only an image whose sample
    holds few values is looked at whole.
    """
    flat = np.asarray(image).ravel()
    sample = flat[:: max(1, flat.size // _MASK_SAMPLE)]
    if not _few_values(sample):
        return None
    nonzero = flat[flat != 0]
    if nonzero.size == 0 or nonzero.size == flat.size:  # blank, or no background
        return None
    if not _few_values(nonzero):
        return None
    values = np.unique(nonzero)
    if values.size > 1 and (
        flat.size < _MIN_LABEL_MAP_SIZE
        or values.size >= _MAX_LABELS
        or not (values == np.round(values)).all()
    ):
        return None
    return [0.0, *map(float, values)]


def _few_values(values):
    """Whether ``values`` may hold few distinct values: one non-zero value,
    or only integers (exactly, up to ``_MAX_LABELS``)."""
    nonzero = values[values != 0]
    if nonzero.size == 0 or (nonzero == nonzero[0]).all():
        return True
    if not (nonzero == np.round(nonzero)).all():
        return False
    return np.unique(nonzero).size < _MAX_LABELS


def check_groups(groups, n_samples, where):
    """``groups`` as an array of one label per sample, or None.

    Raises
    ------
    ValueError
        If ``groups`` does not hold one label per sample, naming ``where``,
        the length expected and the length received.
    """
    if groups is None:
        return None
    array = np.asarray(groups)
    if array.shape != (n_samples,):
        got = f"length {len(array)}" if array.ndim == 1 else f"shape {array.shape}"
        raise ValueError(
            f"'groups' passed to {where} must hold one label per sample, length "
            f"{n_samples}; got {got}."
        )
    return array
