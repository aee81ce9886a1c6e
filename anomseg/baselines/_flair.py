"""The FLAIR histogram-equalisation baseline of Meissen et al. (2021)."""

from __future__ import annotations

from numbers import Integral

import numpy as np
from skimage.exposure import equalize_hist

from .._docstrings import fill_doc
from ..base import BaseAnomalySegmenter
from ..postprocessing import remove_small_components
from ..utils._param_validation import COMMON_CONSTRAINTS, MAX_BINS, Interval

__all__ = ["FlairThreshold"]


@fill_doc
class FlairThreshold(BaseAnomalySegmenter):
    """Anomaly maps from the histogram-equalised FLAIR intensity.

    Lesions such as multiple-sclerosis plaques and gliomas are hyper-intense
    in FLAIR. Equalising each sample's histogram inside its foreground maps
    every intensity to its quantile in that sample, a score in [0, 1] that
    needs no learning: ``fit`` only calibrates ``threshold_`` on healthy
    images. Meissen et al. showed that this outperforms many published deep
    methods, so every learned method in anomseg is measured against it.

    Each sample is equalised on its own: pass whole volumes to reproduce the
    published per-volume baseline; a 2D stack is equalised slice by slice.

    Parameters
    ----------
    %(max_fpr)s
    %(smoothing)s
    %(postprocessing)s
    n_bins : int >= 2, default=256
        Histogram bins of the equalisation (256 as in the reference code).
    %(channel_axis)s
    flair_channel : int, default=0
        Index of the FLAIR channel when ``channel_axis=-1``.
    min_component_size : int >= 0, default=0
        If positive, ``predict`` removes connected components of the mask
        (3D for volumes, 2D for images, full connectivity) smaller than this
        many pixels, before any ``postprocessing``; ``threshold_`` is
        calibrated on the filtered masks.

    Attributes
    ----------
    %(calibration_attributes)s

    See Also
    --------
    anomseg.preprocessing.HistogramEqualizer : The same equalisation as a
        transformer, to feed learned methods.

    References
    ----------
    .. [1] F. Meissen, G. Kaissis, D. Rueckert. "Challenging Current
       Semi-Supervised Anomaly Segmentation Methods for Brain MRI".
       BrainLes workshop, MICCAI 2021.

    Examples
    --------
    >>> import numpy as np
    >>> from anomseg.baselines import FlairThreshold
    >>> rng = np.random.default_rng(0)
    >>> healthy = rng.normal(100, 10, size=(8, 32, 32))
    >>> model = FlairThreshold(max_fpr=0.05).fit(healthy)
    >>> masks = model.predict(healthy)
    >>> round(float(masks.mean()), 2)
    0.05
    """

    #: Each image is equalised on its own, so its intensity scale does not
    #: change the rates at which healthy voxels cross the threshold.
    _drift_figures = ("foreground_fraction", "shape")

    _parameter_constraints: dict = {
        "max_fpr": COMMON_CONSTRAINTS["max_fpr"],
        "smoothing": COMMON_CONSTRAINTS["smoothing"],
        "postprocessing": COMMON_CONSTRAINTS["postprocessing"],
        "n_bins": [Interval(Integral, 2, MAX_BINS, closed="both")],
        "channel_axis": COMMON_CONSTRAINTS["channel_axis"],
        "flair_channel": [Interval(Integral, 0, None, closed="left")],
        "min_component_size": [Interval(Integral, 0, None, closed="left")],
    }

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.anomaly_tags.learns_from_images = False
        return tags

    def __init__(
        self,
        max_fpr=0.05,
        smoothing=None,
        postprocessing=None,
        n_bins=256,
        channel_axis=None,
        flair_channel=0,
        min_component_size=0,
    ):
        self.max_fpr = max_fpr
        self.smoothing = smoothing
        self.postprocessing = postprocessing
        self.n_bins = n_bins
        self.channel_axis = channel_axis
        self.flair_channel = flair_channel
        self.min_component_size = min_component_size

    def _fit(self, batch):
        if batch.channel_axis is not None and self.flair_channel >= self.n_channels_:
            raise ValueError(
                f"The 'flair_channel' parameter of {type(self).__name__} must be "
                f"below the number of channels, {self.n_channels_}. Got "
                f"{self.flair_channel} instead."
            )

    def _score(self, batch):
        maps = []
        for image, fg in zip(batch.images, batch.foreground):
            flair = image if batch.channel_axis is None else image[..., self.flair_channel]
            if not fg.any():
                maps.append(np.zeros(fg.shape, np.float32))
                continue
            maps.append(equalize_hist(flair, nbins=self.n_bins, mask=fg))
        return maps

    def _postprocess_mask(self, mask):
        mask = remove_small_components(mask, self.min_component_size)
        return super()._postprocess_mask(mask)

    def _postprocesses(self):
        return self.min_component_size > 1 or super()._postprocesses()
