"""Intensity normalisation, per sample and per channel, inside the foreground."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from skimage.exposure import equalize_hist

from .._docstrings import fill_doc
from ..utils._param_validation import COMMON_CONSTRAINTS, MAX_BINS, ArrayOf, Interval
from ._base import _BaseImageTransformer, _channels_last

__all__ = ["HistogramEqualizer", "HistogramMatcher", "IntensityScaler"]


def _map_foreground(batch, func):
    """Replace each sample's foreground values, channel by channel, with
    ``func(channel_image, foreground, channel_index)``; background becomes 0."""
    outputs = []
    for image, fg in zip(batch.images, batch.foreground):
        channels = _channels_last(image, fg)
        out = np.zeros(channels.shape, np.float32)
        if fg.any():
            for c in range(channels.shape[-1]):
                out[..., c][fg] = func(channels[..., c], fg, c)
        outputs.append(out.reshape(image.shape))
    return batch.with_images(outputs)


@fill_doc
class IntensityScaler(_BaseImageTransformer):
    """Scale each sample's foreground intensities to [0, 1].

    Per sample (each image of a 2D stack, each volume of a 3D stack) and per
    channel, the foreground's ``lower_percentile`` maps to 0 and its
    ``upper_percentile`` to 1, linearly: min-max scaling with the defaults,
    robust scaling with, say, 1 and 99. Nothing is learned in ``fit``.
    Background pixels stay masked (and are set to 0).

    Parameters
    ----------
    lower_percentile : float in [0, 100), default=0.0
        Foreground percentile mapped to 0.
    upper_percentile : float in (0, 100], default=100.0
        Foreground percentile mapped to 1; above ``lower_percentile``.
    clip : bool, default=True
        Clip the scaled values to [0, 1] (only matters with percentiles
        other than 0 and 100).
    %(channel_axis)s

    Attributes
    ----------
    %(n_channels_attribute)s

    Notes
    -----
    A channel whose two percentiles coincide (a constant foreground) is
    mapped to 0.

    Examples
    --------
    >>> import numpy as np
    >>> from anomseg.preprocessing import IntensityScaler
    >>> image = np.array([[[0.0, 10.0], [20.0, 30.0]]])  # 0 is background
    >>> scaled = IntensityScaler().fit_transform(image)
    >>> scaled[0].tolist()
    [[None, 0.0], [0.5, 1.0]]
    """

    def __init__(self, lower_percentile=0.0, upper_percentile=100.0, clip=True, channel_axis=None):
        self.lower_percentile = lower_percentile
        self.upper_percentile = upper_percentile
        self.clip = clip
        self.channel_axis = channel_axis

    @classmethod
    def for_deep_methods(cls, **params):
        """The scaling that anomseg's deep methods assume (their
        ``requires_scaled_input`` tag), as the command line applies it.

        Each sample's foreground minimum maps to 0 and its 90th percentile
        to 1, unclipped, so that brighter voxels such as lesions keep their
        contrast above 1. Not the maximum: one bright lesion would then
        shrink the whole scan, and with it the residuals (on synthetic
        volumes with about 2 % lesion, the GMVAE's true-positive rate fell
        from 0.77 to 0.14 and its FPR in healthy tissue from 0.05 to 0). The
        90th percentile moves little below a lesion load of 10 %. Scale
        whole volumes, before cutting them into slices.

        Parameters
        ----------
        **params
            Parameters overriding these, such as ``channel_axis=-1``.

        Returns
        -------
        scaler : IntensityScaler
        """
        return cls(**{"upper_percentile": 90.0, "clip": False, **params})

    #: Learns nothing across scans: fits on NIfTI paths, one scan at a time.
    _per_scan = True

    _parameter_constraints: dict = {
        "lower_percentile": [Interval(Real, 0, 100, closed="left")],
        "upper_percentile": [Interval(Real, 0, 100, closed="right")],
        "clip": ["boolean"],
        "channel_axis": COMMON_CONSTRAINTS["channel_axis"],
    }

    def _check_params(self):
        if self.upper_percentile <= self.lower_percentile:
            raise ValueError(
                f"The 'upper_percentile' parameter of {type(self).__name__} must be "
                f"above 'lower_percentile', {self.lower_percentile}. Got "
                f"{self.upper_percentile} instead."
            )

    def _transform(self, batch):
        def scale(channel, fg, c):
            values = channel[fg]
            low, high = np.percentile(values, [self.lower_percentile, self.upper_percentile])
            if high <= low:
                return np.zeros_like(values)
            scaled = (values - low) / (high - low)
            return np.clip(scaled, 0, 1) if self.clip else scaled

        return _map_foreground(batch, scale)


@fill_doc
class HistogramMatcher(_BaseImageTransformer):
    """Match each sample's foreground histogram to a reference learned in fit.

    ``fit`` computes, for every training sample and channel, the quantile
    function of the foreground intensities at ``n_quantiles`` evenly spaced
    levels from 0 to 1, and averages them into ``reference_quantiles_``.
    ``transform`` maps each sample's own foreground quantiles onto the
    reference and interpolates linearly in between (the piecewise-linear
    standardisation of Nyúl and Udupa), so intensities of different scans
    become comparable while their order is kept.

    Parameters
    ----------
    n_quantiles : int >= 2, default=256
        Number of quantile landmarks, including the minimum and maximum.
    %(channel_axis)s

    Attributes
    ----------
    reference_quantiles_ : ndarray of shape (n_quantiles,) or (n_quantiles, n_channels)
        The mean foreground quantile function of the training samples; one
        column per channel when ``channel_axis=-1``.
    %(n_channels_attribute)s

    References
    ----------
    .. [1] L. G. Nyúl, J. K. Udupa, X. Zhang. "New variants of a method of
       MRI scale standardization". IEEE Trans. Med. Imaging 19(2), 2000.

    Examples
    --------
    >>> import numpy as np
    >>> from anomseg.preprocessing import HistogramMatcher
    >>> rng = np.random.default_rng(0)
    >>> a = rng.uniform(1, 2, size=(1, 16, 16))
    >>> b = 3 * a + 10                       # the same scan, scaled
    >>> matcher = HistogramMatcher(n_quantiles=32).fit(np.concatenate([a, b]))
    >>> bool(np.allclose(matcher.transform(a), matcher.transform(b), atol=1e-5))
    True
    """

    def __init__(self, n_quantiles=256, channel_axis=None):
        self.n_quantiles = n_quantiles
        self.channel_axis = channel_axis

    _fitted_attribute_constraints: dict = {
        **_BaseImageTransformer._fitted_attribute_constraints,
        "reference_quantiles_": [ArrayOf("f", 1), ArrayOf("f", 2)],
    }

    _parameter_constraints: dict = {
        "n_quantiles": [Interval(Integral, 2, None, closed="left")],
        "channel_axis": COMMON_CONSTRAINTS["channel_axis"],
    }

    def _levels(self):
        return np.linspace(0.0, 1.0, self.n_quantiles)

    def _fit(self, batch):
        quantiles = [
            np.quantile(_channels_last(image, fg)[fg], self._levels(), axis=0)
            for image, fg in zip(batch.images, batch.foreground)
            if fg.any()
        ]
        if not quantiles:
            raise ValueError(
                f"The images passed to {type(self).__name__}.fit have no "
                "foreground pixel; check the foreground masks."
            )
        reference = np.mean(quantiles, axis=0)
        self.reference_quantiles_ = reference[:, 0] if batch.channel_axis is None else reference

    def _transform(self, batch):
        reference = self.reference_quantiles_.reshape(self.n_quantiles, -1)

        def match(channel, fg, c):
            values = channel[fg]
            own = np.quantile(values, self._levels())
            # Tied landmarks (many equal intensities) map to the mean of
            # their reference values, keeping the map a function.
            landmarks, group = np.unique(own, return_inverse=True)
            targets = np.bincount(group, reference[:, c]) / np.bincount(group)
            return np.interp(values, landmarks, targets)

        return _map_foreground(batch, match)


@fill_doc
class HistogramEqualizer(_BaseImageTransformer):
    """Equalise each sample's histogram inside its foreground.

    Every foreground intensity becomes its quantile within the sample and
    channel (:func:`skimage.exposure.equalize_hist` with the foreground as
    mask), a value in [0, 1]. Nothing is learned in ``fit``. The foreground
    values are exactly the anomaly maps of
    :class:`anomseg.baselines.FlairThreshold`, here as input for learned
    methods.

    Parameters
    ----------
    n_bins : int >= 2, default=256
        Histogram bins of the equalisation.
    %(channel_axis)s

    Attributes
    ----------
    %(n_channels_attribute)s

    See Also
    --------
    anomseg.baselines.FlairThreshold : The same equalisation as a baseline.

    Examples
    --------
    >>> import numpy as np
    >>> from anomseg.preprocessing import HistogramEqualizer
    >>> rng = np.random.default_rng(0)
    >>> images = rng.gamma(2.0, size=(2, 32, 32)) + 1
    >>> equalized = HistogramEqualizer().fit_transform(images)
    >>> float(equalized.min()) >= 0, float(equalized.max()) <= 1
    (True, True)
    """

    def __init__(self, n_bins=256, channel_axis=None):
        self.n_bins = n_bins
        self.channel_axis = channel_axis

    #: Learns nothing across scans: fits on NIfTI paths, one scan at a time.
    _per_scan = True

    _parameter_constraints: dict = {
        "n_bins": [Interval(Integral, 2, MAX_BINS, closed="both")],
        "channel_axis": COMMON_CONSTRAINTS["channel_axis"],
    }

    def _transform(self, batch):
        def equalize(channel, fg, c):
            return equalize_hist(channel, nbins=self.n_bins, mask=fg)[fg]

        return _map_foreground(batch, equalize)
