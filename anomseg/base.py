"""The estimator contract shared by every anomaly-segmentation method.

A method subclasses :class:`BaseAnomalySegmenter` and implements only what
is its own:

* ``_fit(batch)`` learns from healthy images (an :class:`ImageBatch`);
* ``_score(batch)`` returns one anomaly map per sample, higher meaning more
  anomalous;
* optionally ``_tune(batch)`` chooses what the method chooses on healthy
  calibration images (such as a TV weight) before the threshold is
  calibrated on them, in ``fit`` and in ``calibrate``;
* optionally ``_fit_inputs(batch, y, groups, **fit_params)``, for methods
  that learn from more than healthy images (ASC-Net's unlabelled images);
* its ``__sklearn_tags__``, where its :class:`AnomalyTags` differ from the
  defaults.

The base class validates inputs and parameters, holds out calibration images,
calibrates ``threshold_`` on healthy data, and derives ``predict``,
``decision_function``, ``masked_score_samples`` and ``calibrate`` from
``_score``.
"""

from __future__ import annotations

import itertools
import logging
import warnings
from dataclasses import dataclass, field, fields
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils import Tags, get_tags
from sklearn.utils.validation import check_is_fitted

from ._calibration import PostprocessedSearch, TailTransform, tail_quantiles, voxel_chunks
from ._docstrings import fill_doc
from ._version import __version__
from .exceptions import (
    AnomsegWarning,
    DataDriftWarning,
    ShapeMismatchError,
    VersionMismatchWarning,
)
from .io._scans import is_file_list, streamed_images
from .metrics._pixel import fpr_rank
from .persistence import save_model
from .persistence._models import load_instance
from .persistence._state import plain_import, plain_state, upgrade_state
from .utils import check_generator, check_images, describe_images
from .utils._drift import drift_messages
from .utils._exclusion import apply_exclusion
from .utils._logging import estimator_log
from .utils._param_validation import (
    COMMON_CONSTRAINTS,
    FITTED_CONSTRAINTS,
    DictOf,
    Finite,
    Interval,
    ListOf,
    Name,
    Record,
)
from .utils._progress import Progress
from .utils._smoothing import smooth_map
from .utils._validation import check_groups, mask_like_values
from .utils._values import MapStore, ValueStore

__all__ = [
    "STANDARD_FPRS",
    "AnomalySegmenterTags",
    "AnomalyTags",
    "BaseAnomalySegmenter",
    "PreparedImages",
]

logger = logging.getLogger(__name__)

#: False-positive rates at which every estimator also stores a threshold.
STANDARD_FPRS = (0.01, 0.05, 0.1)

#: Above this 99th foreground percentile, estimators that need intensities of
#: about [0, 1] warn that the images look unscaled.
_MAX_SCALED_INTENSITY = 10.0

#: Voxels enough to check the scale of a training set.
_MAX_SCALE_SAMPLE = 2**24

#: The fitted attributes of a calibration, all set together by ``fit`` and
#: ``calibrate``.
CALIBRATION_ATTRIBUTES = (
    "calibration_thresholds_",
    "threshold_",
    "calibration_fpr_",
    "n_calibration_pixels_",
)


@dataclass(slots=True)
class AnomalyTags:
    """What the shared machinery, the pipelines and the command line need to
    know about a method; read them with
    ``sklearn.utils.get_tags(estimator).anomaly_tags``.

    Attributes
    ----------
    learns_from_images : bool, default=True
        ``fit`` trains on the images, so a ``calibration_fraction`` of them
        is held out for calibration. Learning-free methods calibrate on all.
    slice_wise : bool, default=False
        The method is 2D: volumes are cut into slices along their **last
        axis** (axial for arrays loaded by :func:`anomseg.io.load_nifti`),
        and maps are stacked back into volumes. Calibration images are still
        held out by whole volume.
    requires_fit_shape : bool, default=False
        ``score_samples`` accepts only the spatial shape seen in ``fit`` (of
        the slices, for slice-wise methods).
    requires_scaled_input : bool, default=False
        The method's step sizes and losses assume intensities of about
        [0, 1]: scale each scan first (the command line does).
    learns_from_unlabelled : bool, default=False
        ``fit`` also learns from images that may hold anomalies, marked by
        ``y`` (ASC-Net).
    """

    learns_from_images: bool = True
    slice_wise: bool = False
    requires_fit_shape: bool = False
    requires_scaled_input: bool = False
    learns_from_unlabelled: bool = False


@dataclass(slots=True)
class AnomalySegmenterTags(Tags):
    """scikit-learn's estimator tags plus :class:`AnomalyTags`."""

    anomaly_tags: AnomalyTags = field(default_factory=AnomalyTags)


@fill_doc
class BaseAnomalySegmenter(BaseEstimator):
    """Base class of anomseg estimators: fit on healthy images, then map and
    segment anomalies with a threshold calibrated on healthy data.

    What differs between methods in the shared machinery is said by their
    :class:`AnomalyTags`.

    Methods
    -------
    fit(X, y=None, groups=None, *, calibrate=True)
        Learn from healthy images, then calibrate the threshold.
    score_samples(X)
        Anomaly maps.
    masked_score_samples(X)
        Anomaly maps as masked arrays, masked outside the foreground.
    predict(X)
        Boolean masks, ``score_samples(X) > threshold_``.
    threshold_maps(maps)
        The masks of maps computed elsewhere.
    postprocess_mask(mask)
        One mask post-processed as ``predict`` does.
    tail_probability(maps)
        Maps as healthy tail probabilities, one scale for every method.
    decision_function(X)
        ``score_samples(X) - threshold_``.
    calibrate(X)
        Calibrate ``threshold_`` on other healthy images.

    Attributes
    ----------
    %(calibration_attributes)s
    """

    #: What the drift check compares between the healthy calibration images
    #: and the images scored (see :func:`anomseg.utils.drift_messages`).
    _drift_figures = ("intensity_p50", "foreground_fraction", "shape")

    #: What each parameter accepts (scikit-learn's declarative constraints);
    #: every subclass lists all the parameters of its ``__init__``.
    _parameter_constraints: dict = {"max_fpr": COMMON_CONSTRAINTS["max_fpr"]}

    #: What each fitted attribute accepts, in the same declarative form:
    #: loading a model file checks every attribute it holds against these
    #: (see :func:`~anomseg.utils._param_validation.validate_fitted_attributes`),
    #: and ``_check_fitted_state`` the rules that tie several together.
    #: Every subclass adds the attributes of its own.
    _fitted_attribute_constraints: dict = {
        "image_shape_": [None, *FITTED_CONSTRAINTS["shape"]],
        "n_channels_": FITTED_CONSTRAINTS["n_channels"],
        "calibration_thresholds_": [
            DictOf([Interval(Real, 0, 1, closed="neither")], [Finite()], max_length=64)
        ],
        "threshold_": [Finite()],
        "calibration_fpr_": [Finite(0, 1)],
        "n_calibration_pixels_": [Interval(Integral, 1, None, closed="left")],
        "healthy_quantiles_": [
            Record(
                {
                    "tail": [ListOf([Finite(0, 1, closed="right")], max_length=10_000)],
                    "value": [ListOf([Finite()], max_length=10_000)],
                }
            )
        ],
        "healthy_data_": [
            None,
            DictOf(
                [Name()],
                [Finite(), ListOf([Finite()], max_length=4)],
                max_length=64,
            ),
        ],
    }

    #: Parameters that change neither what was learned nor the calibration,
    #: so that ``set_params`` may change them on a fitted estimator (which
    #: ``save`` allows).
    _runtime_params = frozenset({"verbose", "device", "inference_batch_size", "n_jobs"})

    #: Parameters that change the maps or the threshold of a trained model
    #: but not the training: after changing one, ``calibrate`` again.
    _calibration_params = frozenset({"max_fpr", "smoothing", "postprocessing"})

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        return AnomalySegmenterTags(**{f.name: getattr(tags, f.name) for f in fields(tags)})

    @property
    def _anomaly_tags(self):
        return get_tags(self).anomaly_tags

    # -- the public contract -------------------------------------------------
    def fit(self, X, y=None, groups=None, *, exclude=None, calibrate=True, **fit_params):
        """Learn from healthy images and calibrate the threshold.

        Parameters
        ----------
        X : array-like, list, ImageBatch or list of str
            Healthy images, in any layout of :mod:`anomseg.utils`, or paths
            of NIfTI scans, which are read one at a time and held in
            memory-mapped temporary files rather than in memory (see
            :func:`anomseg.preprocessing.AnomalyPipeline.fit`).
        y : None
            Ignored; present for scikit-learn compatibility. Training is
            unsupervised. (Methods that also learn from unlabelled images,
            such as :class:`~anomseg.adversarial.ASCNetSegmenter`, read it.)
        groups : array-like of shape (n_samples,), default=None
            Group label of each sample, such as the patient of each 2D slice.
            Calibration images are held out by whole groups so that no
            patient is in both parts.
        exclude : list or LesionExclusion, default=None
            Voxels of ``X`` to neither train nor calibrate on, for fitting
            on the healthy parts of patient scans: one lesion mask per
            sample (or, for paths, the paths of NIfTI masks), or a
            :class:`~anomseg.utils.LesionExclusion` that also grows them by
            a margin or to whole slices. Each sample is still scored whole
            for calibration, lesion included, as ``predict`` will score it;
            only its other voxels count. Slice-wise methods train on the
            slices with foreground left.
        calibrate : bool, default=True
            Whether to hold out calibration images and calibrate
            ``threshold_``. With False, a method that learns trains on all
            of ``X``; ``score_samples`` works, and ``calibrate`` must be
            called on other healthy images before ``predict``.
        **fit_params
            Inputs that are a method's own, such as ``X_unlabelled`` of
            :class:`~anomseg.adversarial.ASCNetSegmenter`.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        self.check_params()
        where = f"{type(self).__name__}.fit"
        if is_file_list(X):
            with self._streamed(X, where, exclude) as batch:
                return self.fit(batch, y, groups, calibrate=calibrate, **fit_params)
        batch = apply_exclusion(self._validate_images(X, "fit", reset=True), exclude, where)
        # Checked here, whatever the method does with them: a method that
        # learns nothing from images would otherwise ignore wrong ones.
        groups = check_groups(groups, len(batch), where)
        healthy, groups, fit_data = self._fit_inputs(batch, y, groups, **fit_params)
        if not self._anomaly_tags.learns_from_images:
            self._fit(self._training_input(healthy), **fit_data)
            if calibrate:
                self._tune_and_calibrate(healthy, "fit")
        elif calibrate:
            train, calibration = self._calibration_split(healthy, groups)
            self._fit(self._training_input(healthy.subset(train)), **fit_data)
            self._tune_and_calibrate(healthy.subset(calibration), "fit")
        else:
            self._fit(self._training_input(healthy), **fit_data)
        self._remember_params("fit")
        if calibrate:  # all of them: the calibration part alone may be a few images
            self.healthy_data_ = describe_images(healthy)
            self._remember_params("calibrate")
        return self

    def calibrate(self, X, *, exclude=None):
        """Calibrate ``threshold_`` on other healthy images.

        Whatever a method chooses on healthy calibration data is chosen again
        on ``X``, such as the TV weight of the restorers with
        ``tv_weight="auto"``; the trained model itself is unchanged.

        Parameters
        ----------
        X : array-like, list, ImageBatch or list of str
            Healthy images, not used for training, or the paths of NIfTI
            scans, read as ``fit`` reads them (3D, or 4D with
            ``channel_axis=-1``, or a tuple of one 3D file per channel).
        exclude : list or LesionExclusion, default=None
            Voxels of ``X`` not to calibrate on, as in ``fit``.

        Returns
        -------
        self : object
        """
        check_is_fitted(self)
        self.check_params()
        where = f"{type(self).__name__}.calibrate"
        if is_file_list(X):
            with self._streamed(X, where, exclude) as batch:
                return self.calibrate(batch)
        batch = apply_exclusion(self._validate_images(X, "calibrate"), exclude, where)
        self._tune_and_calibrate(batch, "calibrate")
        self.healthy_data_ = describe_images(batch)
        self._remember_params("calibrate")
        return self

    def _streamed(self, paths, where, exclude):
        """The NIfTI scans at ``paths`` read one at a time into one batch of
        memory-mapped files (see :func:`~anomseg.io._scans.streamed_images`),
        with this estimator's channel axis, for ``where``'s messages."""
        log = estimator_log(self, logger)
        channels = getattr(self, "channel_axis", None)
        return streamed_images(paths, where=where, log=log, exclude=exclude, channel_axis=channels)

    def score_samples(self, X):
        """Anomaly maps of images.

        Parameters
        ----------
        X : array-like, list or ImageBatch
            Images, in the layout seen in ``fit``.

        Returns
        -------
        maps : ndarray of float32 or list of ndarray
            One map per sample with the sample's spatial shape: stacked for
            an array input, a list for a list input. Higher is more
            anomalous; maps are non-negative and 0 outside the foreground.
        """
        check_is_fitted(self)
        batch = self._validate_images(X, "score_samples")
        return batch.wrap(self._score_batch(batch, method="score_samples"))

    def prepare_scoring(self, X):
        """The first stage of :meth:`score_samples`: ``X`` checked as
        ``score_samples`` checks it (warning as it warns, of drift say), to
        be scored by :meth:`score_prepared` together with other inputs.

        Parameters
        ----------
        X : array-like, list or ImageBatch
            Images, in the layout seen in ``fit``.

        Returns
        -------
        prepared : PreparedImages
        """
        check_is_fitted(self)
        return PreparedImages(self._validate_images(X, "score_samples"))

    def score_prepared(self, prepared):
        """Anomaly maps of several inputs of :meth:`prepare_scoring`, scored
        as one batch: many small inputs (the scans of a cohort) fill a
        network's batches as one large input would. Each input's maps are
        ``score_samples``'s of that input, up to the rounding of a network's
        batches grouping other images.

        Parameters
        ----------
        prepared : list of PreparedImages

        Returns
        -------
        maps : list
            For each input, its maps in the layout of :meth:`score_samples`
            and in the geometry the final estimator scores (see
            :meth:`PreparedImages.map_back`).
        """
        check_is_fitted(self)
        batches = [p.batch for p in prepared]
        if not batches:
            return []
        batch = batches[0]
        for other in batches[1:]:
            batch = batch.concatenate(other)
        maps = self._score_batch(batch, method="score_samples")
        starts = np.cumsum([0] + [len(b) for b in batches])
        return [b.wrap(maps[i:j]) for b, i, j in zip(batches, starts[:-1], starts[1:])]

    def masked_score_samples(self, X):
        """Anomaly maps as masked arrays whose mask is the background: the
        pixels that the maps, the calibration and the metrics leave out.

        Parameters
        ----------
        X : array-like, list or ImageBatch
            Images, in the layout seen in ``fit``.

        Returns
        -------
        maps : numpy.ma.MaskedArray or list of numpy.ma.MaskedArray
            ``score_samples(X)``, masked outside each sample's foreground.
        """
        check_is_fitted(self)
        batch = self._validate_images(X, "masked_score_samples")
        return batch.to_masked(self._score_batch(batch, method="masked_score_samples"))

    @fill_doc
    def predict(self, X, return_maps=False):
        """Anomaly masks, ``score_samples(X) > threshold_``.

        Parameters
        ----------
        X : array-like, list or ImageBatch
        %(return_maps)s

        Returns
        -------
        %(masks_and_maps)s
        """
        self._check_calibrated()
        batch = self._validate_images(X, "predict")
        maps = self._score_batch(batch, method="predict")
        masks = batch.wrap(self.threshold_maps(batch.to_masked(maps)))
        return (masks, batch.wrap(maps)) if return_maps else masks

    def threshold_maps(self, maps):
        """Masks of anomaly maps computed elsewhere (for example mapped back
        to an input's geometry): ``maps > threshold_``, post-processed as
        ``predict`` does.

        Parameters
        ----------
        maps : ndarray, list of ndarray, or masked arrays
            Anomaly maps of this estimator; masked pixels are never flagged.

        Returns
        -------
        masks : ndarray of bool or list of ndarray
            In the layout of ``maps``.

        Raises
        ------
        ValueError
            If an unmasked pixel of a map is NaN or infinite, which no
            threshold can classify.
        """
        self._check_calibrated()
        self._check_params_unchanged(
            f"[{type(self).__name__}.predict]", stages=("calibrate",), action="predicting"
        )
        masks = []
        for i, m in enumerate(maps):
            inside = ~np.ma.getmaskarray(m)  # a closing may reach the background
            n_bad = int(np.count_nonzero(~np.isfinite(np.ma.getdata(m)) & inside))
            if n_bad:
                raise ValueError(
                    f"[{type(self).__name__}.threshold_maps] maps[{i}] holds {n_bad} NaN "
                    "or infinite value(s) outside its mask; no threshold classifies "
                    "them, so no mask is made (mask them, or mend what made the map)."
                )
            masks.append(self._postprocess_mask((np.ma.getdata(m) > self.threshold_) & inside))
            masks[-1] &= inside
        return masks if isinstance(maps, list) else np.stack(masks)

    def postprocess_mask(self, mask):
        """Post-process one boolean mask as ``predict`` does: the filters of
        ``postprocessing`` (and a method's own, such as
        ``min_component_size``), or nothing without them.

        Parameters
        ----------
        mask : ndarray of bool
            The mask of one sample (2D or 3D), such as ``map > threshold``
            at one of ``calibration_thresholds_``.

        Returns
        -------
        mask : ndarray of bool
        """
        return self._postprocess_mask(np.asarray(mask, dtype=bool))

    def tail_probability(self, maps, *, log=False):
        """The healthy tail probability of anomaly scores: the fraction of
        the healthy calibration voxels that scored at least as high.

        It puts the maps of any method on one scale, which says how rare a
        score is among healthy voxels (:class:`~anomseg.ensemble.AnomalyEnsemble`
        averages its negative logarithm over members). Between the quantiles
        of ``healthy_quantiles_`` it is interpolated in log scale; above the
        highest healthy score, where healthy data say only that it is below
        ``1 / n_calibration_pixels_``, it keeps falling exponentially, at the
        rate that the highest 1 %% of the healthy scores fall at (a least
        squares fit of their log tail), so that the scores of lesions keep
        their order.

        Parameters
        ----------
        maps : ndarray or list of ndarray
            Anomaly maps of this estimator (``score_samples``).
        log : bool, default=False
            Return the natural logarithm of the tail probability, which does
            not underflow far above the healthy scores.

        Returns
        -------
        tail : ndarray of float32 or list of ndarray
            In the layout of ``maps``: in (0, 1] (below about 1e-38, the
            smallest float32, it is that), 1 where a score is at most the
            lowest healthy one (as outside the foreground); or its logarithm,
            at most 0.
        """
        check_is_fitted(self, "healthy_quantiles_")
        transform = TailTransform(self.healthy_quantiles_)
        tiny = np.finfo(np.float32).tiny
        tails = []
        for m in maps:
            out = transform.log(np.ma.getdata(m))
            tails.append((out if log else np.maximum(np.exp(out), tiny)).astype(np.float32))
        return tails if isinstance(maps, list) else np.stack(tails)

    def decision_function(self, X):
        """Signed distance to the threshold, ``score_samples(X) - threshold_``.

        Parameters
        ----------
        X : array-like, list or ImageBatch

        Returns
        -------
        scores : ndarray of float32 or list of ndarray
            Positive where ``predict`` would flag an anomaly (before any
            post-processing).
        """
        self._check_calibrated()
        batch = self._validate_images(X, "decision_function")
        threshold = np.float32(self.threshold_)
        return batch.wrap(
            m - threshold for m in self._score_batch(batch, method="decision_function")
        )

    def check_params(self):
        """Check the parameters as ``fit`` does, without fitting: a bad
        setting fails before any data is loaded.

        Returns
        -------
        self : object

        Raises
        ------
        sklearn.utils._param_validation.InvalidParameterError
            A ``ValueError`` and ``TypeError`` naming the parameter, what it
            accepts and the value received.
        """
        self._validate_params()
        self._check_params()
        return self

    def __sklearn_is_fitted__(self):
        """Trained (or, for learning-free methods, fitted): maps can be
        computed. ``predict`` also needs a calibrated ``threshold_``."""
        return hasattr(self, "n_channels_")

    def _progress(self, stage, total, unit, **kwargs):
        """A :class:`~anomseg.utils._progress.Progress` of ``total`` ``unit``
        that reports through :func:`~anomseg.utils._logging.estimator_log`
        when its messages would be shown (``verbose`` sets their level, the
        logger decides), and costs nothing else otherwise (``kwargs`` go to
        ``Progress``)."""
        level = logging.INFO if getattr(self, "verbose", 0) else logging.DEBUG
        log = estimator_log(self, logger) if logger.isEnabledFor(level) else None
        return Progress(log, stage, total, unit, **kwargs)

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

    def _fit_inputs(self, batch, y, groups, **fit_params):
        """Split what ``fit`` received into the healthy images, their groups
        and the keyword arguments of ``_fit``. By default, every image is
        healthy and ``y`` is ignored."""
        if fit_params:
            raise TypeError(
                f"{type(self).__name__}.fit got unexpected keyword argument(s) "
                f"{', '.join(map(repr, fit_params))}."
            )
        return batch, groups, {}

    def _check_params(self):
        """Check what ``_parameter_constraints`` cannot express: rules that
        tie several parameters together."""

    def _select_threshold(self):
        """The threshold to use once ``calibration_thresholds_`` is set: by
        default the one at ``max_fpr``."""
        return self.calibration_thresholds_[float(self.max_fpr)]

    def _calibrated_threshold(self):
        """What ``threshold_`` must be, given the other fitted attributes
        (for the check of a loaded model, so without side effects): by
        default the calibrated threshold at ``max_fpr``."""
        thresholds = self.calibration_thresholds_
        if float(self.max_fpr) not in thresholds:
            raise ValueError(
                f"its max_fpr {self.max_fpr!r} has no calibrated threshold among "
                f"{sorted(thresholds)}"
            )
        return thresholds[float(self.max_fpr)]

    def _check_fitted_state(self):
        """Check what ``_fitted_attribute_constraints`` cannot express: the
        rules that tie fitted attributes (and parameters) together, on a
        loaded model. A calibration is whole or absent; its thresholds fall
        as the false-positive rate rises, and lie within the healthy
        calibration values; ``threshold_`` is the one calibrated for
        ``max_fpr`` (so that neither NaN nor a value that flags every or no
        voxel can stand in for it)."""
        present = [key for key in CALIBRATION_ATTRIBUTES if hasattr(self, key)]
        if not present:
            return
        if len(present) < len(CALIBRATION_ATTRIBUTES):
            missing = sorted(set(CALIBRATION_ATTRIBUTES) - set(present))
            raise ValueError(f"its calibration lacks {', '.join(missing)}")
        rates = sorted(self.calibration_thresholds_)
        values = [self.calibration_thresholds_[rate] for rate in rates]
        if any(b > a for a, b in itertools.pairwise(values)):
            raise ValueError(
                "its calibration_thresholds_ rise with the false-positive rate; "
                "calibrated thresholds fall as the rate rises"
            )
        quantiles = getattr(self, "healthy_quantiles_", None)
        if quantiles is not None:
            tails, healthy = quantiles["tail"], quantiles["value"]
            if not healthy or len(tails) != len(healthy):
                raise ValueError("its healthy_quantiles_ have no values, or not one per tail")
            if any(b < a for a, b in itertools.pairwise(healthy)) or any(
                b > a for a, b in itertools.pairwise(tails)
            ):
                raise ValueError("its healthy_quantiles_ are not in order")
            low, high = healthy[0], healthy[-1]
            for rate, value in zip(rates, values):
                if not low <= value <= high:
                    raise ValueError(
                        f"its threshold at a false-positive rate of {rate} is {value!r}, "
                        f"outside the range of its healthy calibration values, "
                        f"[{low!r}, {high!r}]"
                    )
        expected = self._calibrated_threshold()
        if self.threshold_ != expected:
            raise ValueError(
                f"its threshold_ {self.threshold_!r} is not the one calibrated for its "
                f"max_fpr {self.max_fpr!r}, {expected!r}"
            )

    def _remember_params(self, stage):
        """Record the parameters as ``stage`` ("fit" or "calibrate") used
        them, so that ``save`` can refuse a model whose parameters have
        changed since (see :meth:`_check_params_unchanged`)."""
        fingerprint = _param_fingerprints(self.get_params(deep=False))
        if stage == "fit":
            self._params_at_fit = fingerprint
        self._params_at_calibration = fingerprint

    def _check_params_unchanged(self, where, stages=("fit", "calibrate"), action="saving"):
        """Refuse to describe a fitted model by parameters that did not make
        it: ``set_params`` after ``fit`` changes the parameters but not the
        weights nor the threshold, so a file would record, say, a
        ``max_fpr`` of 0.01 beside a threshold calibrated at 0.05, or a
        width that its weights do not have; and ``predict`` would flag at
        the old rate while ``max_fpr`` promises the new one (``stages``:
        which of the two to check)."""
        attributes = {"fit": "_params_at_fit", "calibrate": "_params_at_calibration"}
        if not any(hasattr(self, attributes[stage]) for stage in stages):
            return  # fitted by an anomseg that did not record them
        now = _param_fingerprints(self.get_params(deep=False))
        name = type(self).__name__
        learned = now.keys() - self._runtime_params - self._calibration_params
        for stage, attribute, keys, advice in (
            ("fit", "_params_at_fit", learned, "fit it again"),
            (
                "calibrate",
                "_params_at_calibration",
                self._calibration_params,
                "call calibrate() again",
            ),
        ):
            if stage not in stages:
                continue
            before = getattr(self, attribute, None)
            if before is None:  # fitted by an anomseg that did not record them
                continue
            changed = sorted(key for key in keys & now.keys() if now[key] != before.get(key))
            if changed:
                raise ValueError(
                    f"{where}: the parameter(s) {', '.join(map(repr, changed))} of this "
                    f"{name} changed since {stage}() (set_params), so its fitted state "
                    f"no longer matches them; {advice} before {action}, or set them back."
                )

    def _postprocess_mask(self, mask):
        """Post-process one predicted mask (of one sample): the filters of
        ``postprocessing``, if any, in turn. Methods with post-processing of
        their own apply it first, and say so in ``_postprocesses``."""
        for step in getattr(self, "postprocessing", None) or ():
            mask = step.transform([mask])[0]
        return mask

    # -- shared machinery -----------------------------------------------------
    def _check_calibrated(self):
        check_is_fitted(
            self,
            "threshold_",
            msg=(
                f"This {type(self).__name__} has no calibrated threshold_ yet: fit it, "
                "or call calibrate with healthy images after fit(..., calibrate=False)."
            ),
        )

    def _validate_images(self, X, method, reset=False):
        """``X`` as an :class:`ImageBatch`, validated against what ``fit``
        saw (the number of channels and, with ``requires_fit_shape``, the
        spatial shape); with ``reset`` it records those."""
        name = type(self).__name__
        where = f"{name}.{method}"
        tags = self._anomaly_tags
        batch = check_images(X, where=where, channel_axis=getattr(self, "channel_axis", None))
        self._check_not_masks(batch, where, healthy=reset or method == "calibrate")
        if not (reset or method == "calibrate"):
            # In a pipeline too: what matters is what the threshold saw.
            warn_if_drifted(
                getattr(self, "healthy_data_", None), batch, where, self._drift_figures
            )
        n_channels = batch.images[0].shape[-1] if batch.channel_axis else 1
        if reset:
            shapes = {s[:2] if tags.slice_wise else s for s in batch.spatial_shapes}
            self.image_shape_ = shapes.pop() if len(shapes) == 1 else None
            self.n_channels_ = n_channels
            if tags.requires_scaled_input:
                self._warn_if_unscaled(batch, method)
            return batch
        if n_channels != self.n_channels_:
            raise ShapeMismatchError(
                f"X passed to {where} has {n_channels} channel(s), but "
                f"{name} was fitted on {self.n_channels_}."
            )
        if tags.requires_fit_shape:
            for i, shape in enumerate(batch.spatial_shapes):
                model_shape = shape[:2] if tags.slice_wise else shape
                if model_shape != self.image_shape_:
                    raise ShapeMismatchError(
                        f"X[{i}] passed to {where} has spatial shape {shape}, "
                        f"but {name} was fitted on "
                        f"{'slices of shape ' if tags.slice_wise else ''}"
                        f"{self.image_shape_}; resample or crop it first."
                    )
        return batch

    def _check_not_masks(self, batch, where, healthy):
        """Refuse healthy images that are all masks (or label maps), and
        warn of any other image that is one: a mask passed for a scan
        (a lesion mask given in its place, say) is scored without error, and
        its map or threshold means nothing."""
        found = [(i, v) for i, image in enumerate(batch.images) if (v := mask_like_values(image))]
        if not found:
            return
        first, values = found[0]
        values = ", ".join(f"{v:g}" for v in values[:-1]) + f" and {values[-1]:g}"
        if len(batch) == 1:
            what = f"The image holds only the values {values}: it looks like a mask"
        else:
            which = (
                "Every image"
                if len(found) == len(batch)
                else (
                    f"{len(found)} of the {len(batch)} images ("
                    + ", ".join(f"X[{i}]" for i, _ in found[:3])
                    + (", ...)" if len(found) > 3 else ")")
                )
            )
            verb = "holds" if len(found) == len(batch) else "hold"
            what = f"{which} {verb} only a few values (X[{first}]: {values}): they look like masks"
        what += " (of a lesion or a brain) or " + (
            "a label map, not a scan" if len(batch) == 1 else "label maps, not scans"
        )
        if healthy and len(found) == len(batch):
            raise ValueError(
                f"[{where}] {what}, and a threshold calibrated on them would mean "
                "nothing; give the healthy scans."
            )
        maps = "its anomaly map means" if len(batch) == 1 else "their anomaly maps mean"
        warnings.warn(
            f"[{where}] {what}, so {maps} nothing; give the scans.",
            AnomsegWarning,
            stacklevel=5,
        )

    def _warn_if_unscaled(self, batch, method):
        # At most about _MAX_SCALE_SAMPLE voxels, evenly spaced, so that the
        # check holds no copy of a large training set.
        total = sum(int(np.count_nonzero(fg)) for fg in batch.foreground)
        stride = max(1, total // _MAX_SCALE_SAMPLE)
        values = np.concatenate(
            [
                np.abs(image[fg]).ravel()[::stride]
                for image, fg in zip(batch.images, batch.foreground)
            ]
        )
        level = float(np.percentile(values, 99)) if values.size else 0.0
        if level > _MAX_SCALED_INTENSITY:
            warnings.warn(
                f"[{type(self).__name__}.{method}] The 99th percentile of the "
                f"foreground intensities is {level:.4g}, but the method "
                "assumes intensities of about [0, 1]; scale each volume "
                "first, with IntensityScaler.for_deep_methods().",
                AnomsegWarning,
                stacklevel=4,
            )

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
        return batch.to_slices() if self._anomaly_tags.slice_wise else batch

    def _training_input(self, batch):
        """The batch as ``_fit`` sees it: the model input without the
        excluded voxels (as background) and, for slice-wise methods, without
        the slices that have no foreground left, which teach nothing."""
        batch = self._model_input(batch.without_excluded())
        if not self._anomaly_tags.slice_wise:
            return batch
        kept = [i for i, fg in enumerate(batch.foreground) if fg.any()]
        if not kept:
            raise ValueError(
                f"The healthy images passed to {type(self).__name__}.fit have no "
                "foreground pixel to train on; check the foreground masks and 'exclude'."
            )
        return batch if len(kept) == len(batch) else batch.subset(kept)

    def _from_model_output(self, batch, outputs):
        """Per-sample ``outputs`` of the model input of ``batch`` (2D slices
        for slice-wise methods) as one output per sample of ``batch``."""
        if self._anomaly_tags.slice_wise:
            return batch.from_slices(outputs)
        return list(outputs)

    def _score_batch(self, batch, maps=None, method="score_samples"):
        """Maps of ``_score`` (or the given model-input ``maps``) as float32,
        0 outside the foreground: the one place that says where maps are
        defined, and that they are finite there (``method``, the public
        method scoring, names the caller in the error)."""
        if maps is None:
            maps = self._score(self._model_input(batch))
        maps = [np.asarray(m, dtype=np.float32) for m in self._from_model_output(batch, maps)]
        for i, (m, fg) in enumerate(zip(maps, batch.foreground)):
            if m.shape != fg.shape:  # a bug in the subclass, not user input
                raise RuntimeError(
                    f"{type(self).__name__}._score returned shape {m.shape} "
                    f"for sample {i} of spatial shape {fg.shape}."
                )
        self._check_finite(maps, batch, method)
        sigma = getattr(self, "smoothing", None)
        if sigma is not None:
            return [smooth_map(m, fg, sigma) for m, fg in zip(maps, batch.foreground)]
        return batch.zero_background(maps)

    def _check_finite(self, maps, batch, method):
        """Refuse maps with NaN or infinite scores in the foreground (NaN
        weights, an overflow), which no threshold flags: silent holes in
        every mask made from them."""
        bad = [np.count_nonzero(~np.isfinite(m[fg])) for m, fg in zip(maps, batch.foreground)]
        if not any(bad):
            return
        n_nan = sum(
            int(np.count_nonzero(np.isnan(m[fg]))) for m, fg in zip(maps, batch.foreground)
        )
        samples = [f"X[{i}]" for i, n in enumerate(bad) if n]
        whose = (
            ""
            if len(batch) == 1
            else f" (of {', '.join(samples[:3])}{', ...' * (len(samples) > 3)})"
        )
        calibrating = method in ("fit", "calibrate")
        raise ValueError(
            f"[{type(self).__name__}.{method}] The anomaly maps"
            f"{' of the healthy calibration images' if calibrating else ''} hold "
            f"{n_nan} NaN value(s) and {sum(bad) - n_nan} infinite one(s) in the "
            f"foreground{whose}: the model gives no finite score there (are its "
            "weights finite? are the intensities within the range it was fitted on?), "
            f"so no {'threshold' if calibrating else 'mask'} is made from them."
        )

    def _foreground_values(self, batch, store, maps=None, maps_store=None, method="fit"):
        """Append to ``store`` (a ValueStore) the values of the maps of
        ``batch`` that calibration counts (foreground, not excluded): the
        given ``maps`` (model-input layout), or maps scored a chunk of about
        ``SCORE_CHUNK_VOXELS`` at a time, so that only the values are kept,
        and those in bounded memory; and to ``maps_store`` (a MapStore), if
        given, the maps themselves and their counted voxels."""
        if maps is not None:
            chunks = [(batch, maps)]
        else:
            chunks = ((batch.subset(part), None) for part in voxel_chunks(batch))
        progress = self._progress("scoring the calibration images", len(batch), "images")
        for part, part_maps in chunks:
            with progress.part(len(part)):
                for i, m in enumerate(self._score_batch(part, part_maps, method)):
                    counted = part.counted(i)
                    store.append(m[counted])
                    if maps_store is not None:
                        maps_store.append(m, counted)
        progress.close()

    def _tune_and_calibrate(self, batch, method):
        maps = self._tune(self._model_input(batch))
        postprocessed = self._postprocesses()
        with ValueStore() as values, MapStore() as stored:
            self._foreground_values(
                batch, values, maps, stored if postprocessed else None, method=method
            )
            del maps
            n = len(values)
            if n == 0:
                raise ValueError(
                    f"The healthy calibration images of {type(self).__name__} have "
                    "no foreground pixel; check the foreground masks (and 'exclude')."
                )
            rates = sorted(set(STANDARD_FPRS) | {float(self.max_fpr)})
            if postprocessed:
                search = PostprocessedSearch(values, stored, self._postprocess_mask)
                thresholds = [search.threshold(rate) for rate in rates]
            else:
                thresholds = values.order_statistics([fpr_rank(n, rate) for rate in rates])
            self.calibration_thresholds_ = {
                float(rate): float(t) for rate, t in zip(rates, thresholds)
            }
            self.threshold_ = self._select_threshold()
            if postprocessed:
                self.calibration_fpr_ = search.flagged(self.threshold_) / n
            else:
                self.calibration_fpr_ = values.count_above(self.threshold_) / n
            self.n_calibration_pixels_ = n
            self.healthy_quantiles_ = tail_quantiles(values)
            self._warn_if_degenerate(values, method)

    def _warn_if_degenerate(self, values, method):
        """Warn when the threshold flags no healthy voxel although
        ``max_fpr`` allows some: ties at the top of the healthy scores (all
        of them equal, or a few values, as masks or flat images give), so
        that ``predict`` flags only scores above every healthy one. With
        post-processing, only equal scores warn: filters that remove every
        healthy false positive (a large ``min_size``) are the user's choice;
        nor does a threshold that is not the one calibrated at ``max_fpr``
        (ASC-Net's ``threshold_method="histogram-peak"``)."""
        n = self.n_calibration_pixels_
        allowed = n - fpr_rank(n, self.max_fpr) - 1
        if self.calibration_fpr_ > 0 or allowed < 1:
            return  # too few voxels for the rate to flag one: no tie to blame
        if self.threshold_ != self.calibration_thresholds_.get(float(self.max_fpr)):
            return  # a threshold chosen otherwise (ASC-Net's histogram peak)
        low, high = values.extent()
        if low < high and self._postprocesses():
            return  # the filters the user chose removed what was flagged
        why = (
            f"every one of them scores {low:.4g}"
            if low == high
            else f"the highest {100 * self.max_fpr:g}% of them tie at {self.threshold_:.4g}"
        )
        warnings.warn(
            f"[{type(self).__name__}.{method}] The threshold flags none of the "
            f"{n} healthy calibration voxels although max_fpr={self.max_fpr:g} "
            f"allows {allowed}: {why}. Healthy scans give a spread of scores; "
            "check that these are scans (not masks) with their intensities, so "
            "that the calibration means something.",
            AnomsegWarning,
            stacklevel=4,
        )

    def _postprocesses(self):
        """Whether ``_postprocess_mask`` may change masks, so that the
        threshold is calibrated on post-processed masks."""
        return bool(getattr(self, "postprocessing", None))

    # -- persistence ----------------------------------------------------------
    @fill_doc
    def save(self, path, *, format="safe", overwrite=False, metadata=None):
        """Save the fitted estimator, atomically.

        Parameters
        ----------
        %(save_parameters)s

        Returns
        -------
        path : pathlib.Path
            The written file.

        Raises
        ------
        ValueError
            If a parameter changed (``set_params``) since ``fit`` or
            ``calibrate`` in a way that the fitted state does not follow:
            one that shapes what was learned (such as ``width``: fit again),
            or one that the calibration depends on (``max_fpr``,
            ``smoothing``, ``postprocessing`` and a method's own: call
            ``calibrate`` again). ``save`` refuses rather than recalibrates,
            because it has no healthy images to calibrate on, and a file
            must describe the model that computes its maps: a ``max_fpr`` of
            0.01 beside a threshold calibrated at 0.05 would promise a rate
            that ``predict`` does not keep. Parameters that change neither
            (``verbose``, ``device``, ``inference_batch_size``, ``n_jobs``)
            may change at any time.

        See Also
        --------
        anomseg.load_model : Loads either format.
        anomseg.model_info : What a safe file holds, read without building the model.

        Examples
        --------
        >>> import tempfile, pathlib
        >>> from anomseg.baselines import FlairThreshold
        >>> from anomseg.datasets import make_healthy_images
        >>> X = make_healthy_images(n_images=8, shape=(32, 32), random_state=0)
        >>> model = FlairThreshold().fit(X)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = model.save(pathlib.Path(tmp) / "model.anomseg")
        ...     loaded = FlairThreshold.load(path)
        >>> loaded.threshold_ == model.threshold_
        True
        """
        return save_model(self, path, format=format, overwrite=overwrite, metadata=metadata)

    @classmethod
    def load(cls, path, *, device=None, allow_pickle=False, allow_unchecked=False):
        """Load an estimator of this class saved by :meth:`save`.

        Parameters
        ----------
        path : str or path-like
            A file written by :meth:`save`.
        device : {"auto", "cpu", "cuda"} or None, default=None
            Safe files of torch estimators only: where to put the network
            (see :func:`~anomseg.load_model`).
        allow_pickle : bool, default=False
            Whether to load a pickle, which runs any code the file names.
        allow_unchecked : bool, default=False
            Whether to load a safe file of format version 1 (anomseg 0.1),
            which has no checksum (see :func:`~anomseg.load_model`).

        Returns
        -------
        estimator : BaseAnomalySegmenter
            An instance of this class (of any anomseg estimator when called
            on :class:`BaseAnomalySegmenter`).

        Raises
        ------
        TypeError
            If the file holds another kind of model.
        """
        return load_instance(
            cls, path, device=device, allow_pickle=allow_pickle, allow_unchecked=allow_unchecked
        )

    def _export_state(self):
        """The parameters, fitted attributes and network weights that a safe
        file holds."""
        return plain_state(self)

    @classmethod
    def _import_state(cls, params, attributes, weights, device):
        """The estimator that :meth:`_export_state` described."""
        estimator = plain_import(cls, cls._upgrade_params(params), attributes)
        estimator._remember_params("fit")  # its parameters made it
        return estimator

    @classmethod
    def _upgrade_params(cls, params):
        """Parameters saved by an older anomseg, in today's form, so that
        the model computes what it computed then (the parameters a version
        added take the value that reproduces the old behaviour)."""
        return params

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
        state = upgrade_state(state)
        names = [name for name in self._get_param_names() if name in state]
        upgraded = type(self)._upgrade_params({name: state[name] for name in names})
        super().__setstate__({**state, **upgraded})


def _param_fingerprints(params):
    """Parameter name to a digest of its value, estimators by their class
    and parameters (not their fitted state, which predicting may change)."""
    return {key: _fingerprint(value) for key, value in params.items()}


def _fingerprint(value):
    import joblib

    try:
        return joblib.hash(_canonical(value))
    except Exception:  # unpicklable (a local function): the object itself
        # Such a value cannot be saved either, so its identity is enough to
        # tell a set_params from none.
        return ("unpicklable", id(value))


def _canonical(value):
    if isinstance(value, BaseEstimator):
        params = value.get_params(deep=False)
        return (type(value).__name__, {k: _canonical(v) for k, v in params.items()})
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [_canonical(v) for v in value])
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    return value


class PreparedImages:
    """Images ready for the scoring of an estimator's
    :meth:`~BaseAnomalySegmenter.score_prepared`, as its (or a pipeline's)
    ``prepare_scoring`` returns them.

    Parameters
    ----------
    batch : ImageBatch
        The images as the final estimator scores them.
    map_back : callable or None, default=None
        Takes the maps of ``batch`` back to the geometry of the input that
        was prepared (a pipeline's inverse transforms); None keeps them.

    Attributes
    ----------
    batch : ImageBatch
    """

    def __init__(self, batch, map_back=None):
        self.batch = batch
        self._map_back = map_back

    def map_back(self, maps):
        """``maps`` of :meth:`~BaseAnomalySegmenter.score_prepared` in the
        geometry of the input, as ``score_samples`` returns them."""
        return maps if self._map_back is None else self._map_back(maps)

    @property
    def n_slices(self):
        """The 2D images the batch holds (a volume's depth): what a network
        scoring slices counts in its batches."""
        return sum(s[2] if len(s) == 3 else 1 for s in self.batch.spatial_shapes)


def warn_if_drifted(reference, batch, where, figures):
    """Warn, with the ``figures``, if the images of ``batch`` look unlike
    the healthy images that ``reference`` (a ``healthy_data_``) describes."""
    if not reference:
        return
    messages = drift_messages(reference, batch, figures)
    if messages:
        warnings.warn(
            f"[{where}] The images look unlike the healthy images the threshold "
            f"was calibrated on, so its false-positive rate may not hold for "
            f"them: {'; '.join(messages)}.",
            DataDriftWarning,
            stacklevel=4,
        )
