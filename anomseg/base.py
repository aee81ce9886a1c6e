"""The estimator contract shared by every anomaly-segmentation method.

A method subclasses :class:`BaseAnomalySegmenter` and implements only what
is its own:

* ``_fit(batch)`` learns from healthy images (an :class:`ImageBatch`);
* ``_score(batch)`` returns one anomaly map per sample, higher meaning more
  anomalous;
* optionally ``_tune(batch)`` chooses what the method chooses on healthy
  calibration images (such as a TV weight) before the threshold is
  calibrated on them, in ``fit`` and in ``calibrate``.

The base class validates inputs and parameters, holds out calibration images,
calibrates ``threshold_`` on healthy data, and derives ``predict``,
``decision_function`` and ``calibrate`` from ``_score``.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from ._docstrings import fill_doc
from ._version import __version__
from .exceptions import ShapeMismatchError, VersionMismatchWarning
from .metrics._pixel import calibrate_thresholds
from .utils import ImageBatch, check_generator, check_images
from .utils._param_validation import COMMON_CONSTRAINTS

__all__ = ["STANDARD_FPRS", "BaseAnomalySegmenter"]

#: False-positive rates at which every estimator also stores a threshold.
STANDARD_FPRS = (0.01, 0.05, 0.1)


@fill_doc
class BaseAnomalySegmenter(BaseEstimator):
    """Base class of anomseg estimators: fit on healthy images, then map and
    segment anomalies with a threshold calibrated on healthy data.

    Subclasses set two class attributes:

    * ``_learns_from_images`` (default True): ``fit`` trains on the images,
      so a ``calibration_fraction`` of them is held out for calibration.
      Learning-free methods calibrate on all of them.
    * ``_requires_fit_shape`` (default False): ``score_samples`` only accepts
      the spatial shape seen in ``fit``.
    * ``_slice_wise`` (default False): the method is 2D. Volumes are then cut
      into slices along their **last axis** (axial for arrays loaded from
      NIfTI by :func:`anomseg.io.load_nifti`), ``_fit`` and ``_score`` see
      2D slices only, and maps are stacked back into volumes. Calibration
      images are still held out by whole volume.

    Methods
    -------
    fit(X, y=None, groups=None)
        Learn from healthy images, then calibrate the threshold.
    score_samples(X)
        Anomaly maps.
    predict(X)
        Boolean masks, ``score_samples(X) > threshold_``.
    threshold_maps(maps)
        The masks of maps computed elsewhere.
    decision_function(X)
        ``score_samples(X) - threshold_``.
    calibrate(X)
        Re-calibrate ``threshold_`` on other healthy images.

    Attributes
    ----------
    %(calibration_attributes)s
    """

    _learns_from_images = True
    _requires_fit_shape = False
    _slice_wise = False

    #: What each parameter accepts (scikit-learn's declarative constraints);
    #: every subclass lists all the parameters of its ``__init__``.
    _parameter_constraints: dict = {"max_fpr": COMMON_CONSTRAINTS["max_fpr"]}

    # -- the public contract -------------------------------------------------
    def fit(self, X, y=None, groups=None):
        """Learn from healthy images and calibrate the threshold.

        Parameters
        ----------
        X : array-like or list
            Healthy images, in any layout of :mod:`anomseg.utils`.
        y : None
            Ignored; present for scikit-learn compatibility. Training is
            unsupervised.
        groups : array-like of shape (n_samples,), default=None
            Group label of each sample, such as the patient of each 2D slice.
            Calibration images are held out by whole groups so that no
            patient is in both parts.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        self._validate_params()
        self._check_params()
        self._fit_and_calibrate(self._check_images(X, "fit", reset=True), groups)
        return self

    def calibrate(self, X):
        """Re-calibrate ``threshold_`` on other healthy images.

        Whatever a method chooses on healthy calibration data is chosen again
        on ``X``, such as the TV weight of the restorers with
        ``tv_weight="auto"``; the trained model itself is unchanged.

        Parameters
        ----------
        X : array-like or list
            Healthy images, not used for training.

        Returns
        -------
        self : object
        """
        check_is_fitted(self, "threshold_")
        self._validate_params()
        self._check_params()
        self._tune_and_calibrate(self._check_images(X, "calibrate"))
        return self

    def score_samples(self, X):
        """Anomaly maps of images.

        Parameters
        ----------
        X : array-like or list
            Images, in the layout seen in ``fit``.

        Returns
        -------
        maps : ndarray of float32 or list of ndarray
            One map per sample with the sample's spatial shape: stacked for
            an array input, a list for a list input. Higher is more
            anomalous; maps are non-negative and 0 outside the foreground.
        """
        check_is_fitted(self, "threshold_")
        batch = self._check_images(X, "score_samples")
        return batch.wrap(self._score_batch(batch))

    def predict(self, X):
        """Anomaly masks, ``score_samples(X) > threshold_``.

        Parameters
        ----------
        X : array-like or list

        Returns
        -------
        masks : ndarray of bool or list of ndarray
        """
        check_is_fitted(self, "threshold_")
        batch = self._check_images(X, "predict")
        return batch.wrap(self.threshold_maps(self._score_batch(batch)))

    def threshold_maps(self, maps):
        """Masks of anomaly maps computed elsewhere (for example mapped back
        to an input's geometry): ``maps > threshold_``, post-processed as
        ``predict`` does.

        Parameters
        ----------
        maps : ndarray or list of ndarray
            Anomaly maps of this estimator.

        Returns
        -------
        masks : ndarray of bool or list of ndarray
            In the layout of ``maps``.
        """
        check_is_fitted(self, "threshold_")
        masks = [self._postprocess_mask(m > self.threshold_) for m in maps]
        return masks if isinstance(maps, list) else np.stack(masks)

    def decision_function(self, X):
        """Signed distance to the threshold, ``score_samples(X) - threshold_``.

        Parameters
        ----------
        X : array-like or list

        Returns
        -------
        scores : ndarray of float32 or list of ndarray
            Positive where ``predict`` would flag an anomaly (before any
            post-processing).
        """
        check_is_fitted(self, "threshold_")
        batch = self._check_images(X, "decision_function")
        threshold = np.float32(self.threshold_)
        return batch.wrap(m - threshold for m in self._score_batch(batch))

    # -- what subclasses implement -------------------------------------------
    def _fit(self, batch):
        """Learn from the training part of the healthy images."""

    def _score(self, batch):
        """Return one anomaly map (spatial shape, higher = more anomalous)
        per sample of ``batch``."""
        raise NotImplementedError

    def _tune(self, batch):
        """Choose what the method chooses on healthy calibration images
        (model-input layout) before the threshold is calibrated on them.
        May return their anomaly maps (as ``_score`` would) to save
        recomputing them; returns None by default."""
        return None

    def _check_params(self):
        """Check what ``_parameter_constraints`` cannot express: rules that
        tie several parameters together."""

    def _select_threshold(self):
        """The threshold to use once ``calibration_thresholds_`` is set: by
        default the one at ``max_fpr``."""
        return self.calibration_thresholds_[float(self.max_fpr)]

    def _postprocess_mask(self, mask):
        """Post-process one predicted mask; identity by default."""
        return mask

    # -- shared machinery -----------------------------------------------------
    def _check_images(self, X, method, reset=False):
        where = f"{type(self).__name__}.{method}"
        batch = check_images(X, where=where, channel_axis=getattr(self, "channel_axis", None))
        n_channels = batch.images[0].shape[-1] if batch.channel_axis else 1
        if reset:
            self.image_shape_ = self._model_input(batch).common_shape
            self.n_channels_ = n_channels
            return batch
        if n_channels != self.n_channels_:
            raise ShapeMismatchError(
                f"X passed to {where} has {n_channels} channel(s), but "
                f"{type(self).__name__} was fitted on {self.n_channels_}."
            )
        if self._requires_fit_shape:
            for i, shape in enumerate(batch.spatial_shapes):
                model_shape = shape[:2] if self._slice_wise else shape
                if model_shape != self.image_shape_:
                    raise ShapeMismatchError(
                        f"X[{i}] passed to {where} has spatial shape {shape}, "
                        f"but {type(self).__name__} was fitted on "
                        f"{'slices of shape ' if self._slice_wise else ''}"
                        f"{self.image_shape_}; resample or crop it first."
                    )
        return batch

    def _fit_and_calibrate(self, batch, groups, **fit_data):
        """Train on the healthy ``batch`` (less the held-out calibration
        groups, for methods that learn) and calibrate; ``fit_data`` goes to
        ``_fit``."""
        if self._learns_from_images:
            train, calibration = self._calibration_split(batch, groups)
            self._fit(self._model_input(batch.subset(train)), **fit_data)
            self._tune_and_calibrate(batch.subset(calibration))
        else:
            self._fit(self._model_input(batch), **fit_data)
            self._tune_and_calibrate(batch)

    def _calibration_split(self, batch, groups):
        """Indices of training and calibration samples, split by group."""
        name = type(self).__name__
        n = len(batch)
        if groups is None:
            groups = np.arange(n)
        else:
            groups = np.asarray(groups)
            if groups.shape != (n,):
                raise ValueError(
                    f"'groups' passed to {name}.fit must have one label per "
                    f"sample, shape ({n},); got shape {groups.shape}."
                )
        units = np.unique(groups)
        if units.size < 2:
            raise ValueError(
                f"{name}.fit needs at least 2 healthy samples (or groups) to "
                f"hold out calibration data; got {units.size}."
            )
        n_calibration = round(self.calibration_fraction * units.size)
        n_calibration = min(max(n_calibration, 1), units.size - 1)
        rng = check_generator(self.random_state)
        held_out = rng.permutation(units)[:n_calibration]
        is_calibration = np.isin(groups, held_out)
        return np.flatnonzero(~is_calibration), np.flatnonzero(is_calibration)

    def _model_input(self, batch):
        """The batch as ``_fit`` and ``_score`` see it: 2D slices of volumes
        for slice-wise methods, else unchanged."""
        if not (self._slice_wise and batch.spatial_ndim == 3):
            return batch
        images = [s for image in batch.images for s in np.moveaxis(image, 2, 0)]
        foreground = [s for fg in batch.foreground for s in np.moveaxis(fg, 2, 0)]
        return ImageBatch(images, foreground, False, batch.channel_axis)

    def _from_model_output(self, batch, outputs):
        """Per-sample ``outputs`` of the model input of ``batch`` (2D slices
        for slice-wise methods) stacked back into one output per sample of
        ``batch``, slices along the last spatial axis."""
        if not (self._slice_wise and batch.spatial_ndim == 3):
            return list(outputs)
        bounds = np.cumsum([0] + [fg.shape[2] for fg in batch.foreground])
        return [np.stack(outputs[a:b], axis=2) for a, b in itertools.pairwise(bounds)]

    def _score_batch(self, batch, maps=None):
        """Maps of ``_score`` (or the given model-input ``maps``) as float32,
        0 outside the foreground."""
        if maps is None:
            maps = self._score(self._model_input(batch))
        maps = self._from_model_output(batch, maps)
        out = []
        for i, (m, fg) in enumerate(zip(maps, batch.foreground)):
            m = np.asarray(m, dtype=np.float32)
            if m.shape != fg.shape:  # a bug in the subclass, not user input
                raise RuntimeError(
                    f"{type(self).__name__}._score returned shape {m.shape} "
                    f"for sample {i} of spatial shape {fg.shape}."
                )
            out.append(np.where(fg, m, np.float32(0)))
        return out

    def _tune_and_calibrate(self, batch):
        maps = self._tune(self._model_input(batch))
        self._calibrate_batch(batch, maps)

    def _calibrate_batch(self, batch, maps=None):
        maps = self._score_batch(batch, maps)
        values = np.concatenate([m[fg] for m, fg in zip(maps, batch.foreground)])
        if values.size == 0:
            raise ValueError(
                f"The healthy calibration images of {type(self).__name__} have "
                "no foreground pixel; check the foreground masks."
            )
        rates = sorted(set(STANDARD_FPRS) | {float(self.max_fpr)})
        self.calibration_thresholds_ = calibrate_thresholds(values, rates)
        self.threshold_ = self._select_threshold()
        self.calibration_fpr_ = float(np.mean(values > self.threshold_))
        self.n_calibration_pixels_ = int(values.size)

    # -- persistence ----------------------------------------------------------
    def __getstate__(self):
        # A copy: object.__getstate__ returns the instance's own __dict__.
        state = dict(super().__getstate__())
        state["_anomseg_version"] = __version__
        return state

    def __setstate__(self, state):
        version = state.pop("_anomseg_version", None)
        if version != __version__:
            warnings.warn(
                f"[{type(self).__name__}.__setstate__] This model was saved by "
                f"anomseg {version} and is loaded by {__version__}; results "
                "may differ.",
                VersionMismatchWarning,
                stacklevel=2,
            )
        super().__setstate__(state)
