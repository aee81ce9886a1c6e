"""Docstring fragments shared by many estimators (nilearn's ``docdict``).

Decorate a class or function with :func:`fill_doc` and write
``%(max_fpr)s`` in its docstring to insert the entry ``max_fpr``.
"""

import re

docdict = {}

docdict["images"] = """\
X : array-like of shape (n_images, H, W) or (n_volumes, X, Y, Z), or list
    Images: a stack of 2D images, a stack of 3D volumes, or a list of images
    or volumes whose shapes may differ. With ``channel_axis=-1`` every sample
    has a trailing channel axis. The foreground is the unmasked part of a
    :class:`numpy.ma.MaskedArray`, or else the non-zero pixels; see
    :mod:`anomseg.utils`."""

docdict["maps_returned"] = """\
maps : ndarray of float32 or list of ndarray
    One anomaly map per sample, with the sample's spatial shape (no channel
    axis): a stacked array for an array input, a list for a list input.
    Higher means more anomalous. Maps are non-negative and exactly 0 outside
    the foreground."""

docdict["max_fpr"] = """\
max_fpr : float in (0, 1), default=0.05
    The largest pixel false-positive rate allowed on healthy calibration
    images. ``threshold_`` is the smallest threshold that achieves it,
    computed exactly from the sorted calibration scores."""

docdict["calibration_fraction"] = """\
calibration_fraction : float in (0, 1), default=0.2
    Fraction of the healthy images held out from training to calibrate the
    threshold. The split is by sample (by volume when volumes are given, or by
    ``groups`` passed to ``fit``), seeded by ``random_state``."""

docdict["random_state"] = """\
random_state : int, numpy.random.Generator or None, default=None
    Seeds every random choice made in ``fit``; the same value gives the same
    result. Global random states are never touched."""

docdict["channel_axis"] = """\
channel_axis : None or -1, default=None
    ``-1`` when samples carry a trailing channel axis (multi-modal input such
    as FLAIR + T2), None for single-channel images."""

docdict["n_channels_attribute"] = """\
n_channels_ : int
    Number of channels seen in ``fit`` (1 without a channel axis)."""

docdict["calibration_attributes"] = """\
threshold_ : float
    Anomaly-map threshold calibrated on healthy data at ``max_fpr``;
    ``predict(X)`` is ``score_samples(X) > threshold_``.
calibration_thresholds_ : dict of float to float
    Thresholds calibrated on the same healthy pixels at false-positive rates
    0.01, 0.05, 0.1 and ``max_fpr``, keyed by rate. Pass it to
    :func:`anomseg.metrics.evaluate` for Dice at calibrated thresholds.
calibration_fpr_ : float
    The false-positive rate ``threshold_`` achieves on the calibration pixels.
n_calibration_pixels_ : int
    Number of foreground pixels the threshold was calibrated on.
image_shape_ : tuple of int or None
    Spatial shape of the images the model was trained on (of their 2D slices
    for slice-wise methods), or None if they differed.
n_channels_ : int
    Number of channels seen in ``fit`` (1 without a channel axis)."""


def fill_doc(obj):
    """Substitute ``%(key)s`` entries of :data:`docdict` in ``obj.__doc__``.

    Each entry is indented like the line that names it, so entries can be
    written flush-left here and placed anywhere in a numpydoc section.
    """
    if obj.__doc__:
        obj.__doc__ = _PLACEHOLDER.sub(_indented_entry, obj.__doc__)
    return obj


_PLACEHOLDER = re.compile(r"^([ \t]*)%\((\w+)\)s", flags=re.MULTILINE)


def _indented_entry(match):
    indent, key = match.groups()
    lines = docdict[key].splitlines()
    return "\n".join(indent + line if line else line for line in lines)
