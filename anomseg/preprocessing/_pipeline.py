"""A Pipeline whose anomaly maps come back in the geometry of its input."""

from __future__ import annotations

import logging

import numpy as np
from sklearn.base import clone
from sklearn.pipeline import Pipeline, make_pipeline

from .._docstrings import fill_doc
from ..base import PreparedImages
from ..io._scans import is_file_list, streamed_images
from ..persistence import save_model
from ..persistence._models import load_instance
from ..utils import check_images
from ..utils._exclusion import apply_exclusion
from ..utils._logging import estimator_log

__all__ = ["AnomalyPipeline", "make_anomaly_pipeline"]

logger = logging.getLogger(__name__)


class AnomalyPipeline(Pipeline):
    """Pre-processing steps and an anomaly estimator, with maps in the
    input's geometry.

    A :class:`sklearn.pipeline.Pipeline` whose ``score_samples``,
    ``predict`` and ``decision_function`` return one output per input
    sample with the input's spatial shape: the final estimator maps the
    transformed images, then the ``inverse_transform`` of every geometric
    step (every step that has one, such as :class:`ForegroundCropper`,
    :class:`Resizer` and :class:`Resampler`, which maps back to each
    image's own grid) is applied in reverse order. Intensity steps have no
    inverse and need none. Images are validated once, by the pipeline, and
    passed from step to step as an :class:`~anomseg.utils.ImageBatch`.

    ``predict`` and ``decision_function`` threshold the maps *after* they
    are mapped back, so ``predict(X) == (score_samples(X) > threshold_)``
    holds in the input geometry. The final estimator's mask
    post-processing (such as ``min_component_size``), if any, is then
    applied to the mapped-back masks.

    Parameters
    ----------
    steps : list of (str, estimator) tuples
        Transformers, then an anomaly estimator with ``score_samples`` and
        ``threshold_`` (any :class:`anomseg.base.BaseAnomalySegmenter`).
    memory : str, object with joblib.Memory interface or None, default=None
        As in :class:`sklearn.pipeline.Pipeline`.
    verbose : bool, default=False
        As in :class:`sklearn.pipeline.Pipeline`.

    Attributes
    ----------
    threshold_ : float
        The final estimator's ``threshold_``.

    See Also
    --------
    make_anomaly_pipeline : Build one without naming the steps.

    Examples
    --------
    >>> import numpy as np
    >>> from anomseg.baselines import FlairThreshold
    >>> from anomseg.preprocessing import ForegroundCropper, Resizer
    >>> from anomseg.preprocessing import make_anomaly_pipeline
    >>> rng = np.random.default_rng(0)
    >>> images = np.zeros((4, 40, 40))
    >>> images[:, 5:35, 8:30] = rng.normal(100, 10, size=(4, 30, 22))
    >>> pipe = make_anomaly_pipeline(
    ...     ForegroundCropper(), Resizer((16, 16)), FlairThreshold()
    ... ).fit(images)
    >>> maps = pipe.score_samples(images)
    >>> maps.shape
    (4, 40, 40)
    >>> bool(np.array_equal(pipe.predict(images), maps > pipe.threshold_))
    True
    """

    #: Its state is its steps': a model file holds none of its own.
    _fitted_attribute_constraints: dict = {}

    @property
    def threshold_(self):
        """The final estimator's calibrated ``threshold_``."""
        return self[-1].threshold_

    def fit(self, X, y=None, *, exclude=None, **params):
        """Fit the steps on ``X``, validated once and passed from step to
        step as an :class:`~anomseg.utils.ImageBatch`.

        Parameters
        ----------
        X : array-like, list or list of str
            Images accepted by the first step, or the paths of NIfTI scans
            (3D), for healthy data that need not fit in memory: each scan is
            read (in the closest canonical orientation, as
            :func:`anomseg.io.load_nifti` reads it), preprocessed by the
            steps, which must treat each scan on their own, and appended to
            memory-mapped files in a temporary folder (``TMPDIR``; 5 bytes
            per voxel), from which the method trains; the folder is removed
            after. The model is the one the same scans loaded as arrays give.
        y : array-like, default=None
            Passed to the final estimator's ``fit`` (ignored by most).
        exclude : list or LesionExclusion, default=None
            Voxels of ``X`` that the final estimator must neither train nor
            calibrate on (lesions of patient scans used as healthy data):
            one mask per sample of ``X`` (paths of NIfTI masks for paths),
            or a :class:`~anomseg.utils.LesionExclusion`. The steps see the
            whole scans, as they will in ``predict``; the masks follow
            their geometry.
        **params
            Routed to the steps as by :class:`sklearn.pipeline.Pipeline`,
            such as ``<step>__groups``.

        Returns
        -------
        self : AnomalyPipeline
        """
        if is_file_list(X):
            return self._fit_files(X, y, exclude, **params)
        where = f"{type(self).__name__}.fit"
        batch = apply_exclusion(self._validated(X, "fit"), exclude, where)
        return super().fit(batch, y, **params)

    def _fit_files(self, paths, y, exclude, **params):
        """``fit`` on NIfTI paths: the steps fitted on the first scan (they
        learn nothing across scans) and applied one scan at a time, the
        final estimator fitted on the memory-mapped result."""
        *transformers, (name, final) = self.steps
        foreign = [key for key in params if not key.startswith(f"{name}__")]
        if foreign:
            raise ValueError(
                f"{type(self).__name__}.fit on NIfTI paths passes parameters to the "
                f"final step '{name}' only; got {', '.join(foreign)}."
            )
        final_params = {key[len(name) + 2 :]: value for key, value in params.items()}
        log = estimator_log(final, logger)
        where = f"{type(self).__name__}.fit"
        steps = [step for _, step in transformers if step not in (None, "passthrough")]
        with streamed_images(
            paths, steps, where=where, log=log, exclude=exclude, channel_axis=self._channel_axis()
        ) as batch:
            final.fit(batch, y, **final_params)
        return self

    def calibrate(self, X, *, exclude=None):
        """Calibrate the final estimator's threshold on other healthy images,
        transformed by the other steps.

        Parameters
        ----------
        X : array-like, list or list of str
            Healthy images accepted by the first step, or the paths of NIfTI
            scans (3D, or 4D with ``channel_axis=-1``, or a tuple of one 3D
            file per channel), read and preprocessed one at a time as in
            ``fit``.
            Only the final estimator's calibration changes: the other steps
            and the trained model stay as they are.
        exclude : list or LesionExclusion, default=None
            Voxels of ``X`` not to calibrate on, as in ``fit``.

        Returns
        -------
        self : AnomalyPipeline
        """
        if is_file_list(X):
            # streamed_images fits the steps it is given on the first scan;
            # these treat each scan on their own, so clones transform as the
            # fitted steps do, and the model's own steps stay untouched.
            steps = [clone(step) for step in self._transformers()]
            where = f"{type(self).__name__}.calibrate"
            log = estimator_log(self[-1], logger)
            with streamed_images(
                X, steps, where=where, log=log, exclude=exclude, channel_axis=self._channel_axis()
            ) as batch:
                self[-1].calibrate(batch)
            return self
        self[-1].calibrate(self._transform_to_final(X, "calibrate", exclude)[0])
        return self

    def score_samples(self, X):
        """Anomaly maps in the geometry of ``X``.

        Parameters
        ----------
        X : array-like or list
            Images accepted by the first step.

        Returns
        -------
        maps : ndarray of float32 or list of ndarray
            One map per sample, with the spatial shape of the sample in
            ``X``; stacked for an array input, a list for a list input.
            Higher is more anomalous.
        """
        batch, grids = self._transform_to_final(X)
        return self._map_back(self[-1].score_samples(batch), grids)

    def prepare_scoring(self, X):
        """The first stage of :meth:`score_samples`: ``X`` through the
        transformers and the final estimator's checks, to be scored by
        :meth:`score_prepared` together with other inputs.

        Parameters
        ----------
        X : array-like or list
            Images accepted by the first step.

        Returns
        -------
        prepared : PreparedImages
            Its ``map_back`` takes maps back through the transformers'
            inverses, to the geometry of ``X``.
        """
        batch, grids = self._transform_to_final(X)
        final = self[-1].prepare_scoring(batch)
        return PreparedImages(
            final.batch, lambda maps: self._map_back(final.map_back(maps), grids)
        )

    def score_prepared(self, prepared):
        """Anomaly maps of several inputs of :meth:`prepare_scoring`, scored
        by the final estimator as one batch (see its ``score_prepared``),
        in the geometry it scores; each one's ``map_back`` gives them that
        of its input.

        Parameters
        ----------
        prepared : list of PreparedImages

        Returns
        -------
        maps : list
        """
        return self[-1].score_prepared(prepared)

    def masked_score_samples(self, X):
        """Anomaly maps in the geometry of ``X``, masked outside the
        foreground that the final estimator scored (mapped back too).

        Parameters
        ----------
        X : array-like or list
            Images accepted by the first step.

        Returns
        -------
        maps : numpy.ma.MaskedArray or list of numpy.ma.MaskedArray
            ``score_samples(X)``, masked where the final estimator saw
            background, such as outside a ``ForegroundMasker``'s head mask.
        """
        return self._maps_and_masked(X, "masked_score_samples")[1]

    def _maps_and_masked(self, X, method):
        """``score_samples(X)`` and the same maps masked as
        ``masked_score_samples`` masks them, from one scoring pass."""
        batch, grids = self._transform_to_final(X, method)
        maps = self._map_back(self[-1].score_samples(batch), grids)
        foreground = self._map_back(batch.wrap(batch.foreground), grids)
        masked = [np.ma.MaskedArray(m, mask=~fg) for m, fg in zip(maps, foreground)]
        return maps, np.ma.stack(masked) if isinstance(maps, np.ndarray) else masked

    @fill_doc
    def predict(self, X, return_maps=False):
        """Anomaly masks in the geometry of ``X``: ``score_samples(X) > threshold_``.

        Parameters
        ----------
        X : array-like or list
        %(return_maps)s

        Returns
        -------
        %(masks_and_maps)s
        """
        maps, masked = self._maps_and_masked(X, "predict")
        masks = self.threshold_maps(masked)
        masks = masks if isinstance(masks, list) else np.asarray(masks)
        return (masks, maps) if return_maps else masks

    def threshold_maps(self, maps):
        """Masks of maps of this pipeline, as ``predict`` makes them: the
        final estimator's ``threshold_maps``.

        Parameters
        ----------
        maps : ndarray, list of ndarray, or masked arrays

        Returns
        -------
        masks : ndarray of bool or list of ndarray
        """
        return self[-1].threshold_maps(maps)

    def decision_function(self, X):
        """``score_samples(X) - threshold_``, in the geometry of ``X``.

        Parameters
        ----------
        X : array-like or list

        Returns
        -------
        scores : ndarray of float32 or list of ndarray
            Positive where ``predict`` flags an anomaly (before any
            post-processing).
        """
        maps = self.score_samples(X)
        threshold = np.float32(self.threshold_)
        if isinstance(maps, np.ndarray):
            return maps - threshold
        return [m - threshold for m in maps]

    @fill_doc
    def save(self, path, *, format="safe", overwrite=False, metadata=None):
        """Save the fitted pipeline, atomically.

        Parameters
        ----------
        %(save_parameters)s

        Returns
        -------
        path : pathlib.Path

        Examples
        --------
        >>> import tempfile, pathlib
        >>> from anomseg import load_model
        >>> from anomseg.baselines import FlairThreshold
        >>> from anomseg.datasets import make_healthy_images
        >>> from anomseg.preprocessing import IntensityScaler, make_anomaly_pipeline
        >>> X = make_healthy_images(n_images=8, shape=(32, 32), random_state=0)
        >>> pipe = make_anomaly_pipeline(IntensityScaler(), FlairThreshold()).fit(X)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     loaded = load_model(pipe.save(pathlib.Path(tmp) / "pipe.anomseg"))
        >>> [type(step).__name__ for _, step in loaded.steps]
        ['IntensityScaler', 'FlairThreshold']
        """
        return save_model(self, path, format=format, overwrite=overwrite, metadata=metadata)

    @classmethod
    def load(cls, path, *, device=None, allow_pickle=False, allow_unchecked=False):
        """Load a pipeline saved by :meth:`save` (see
        :func:`~anomseg.load_model`).

        Parameters
        ----------
        path : str or path-like
        device : {"auto", "cpu", "cuda"} or None, default=None
            Safe files only: where to put the networks of torch estimators.
        allow_pickle : bool, default=False
            Whether to load a pickle, which runs any code it names: pass
            True only for files you trust.
        allow_unchecked : bool, default=False
            Whether to load a safe file of format version 1, which has no
            checksum: pass True only for files you trust.

        Returns
        -------
        pipeline : AnomalyPipeline
        """
        return load_instance(
            cls, path, device=device, allow_pickle=allow_pickle, allow_unchecked=allow_unchecked
        )

    def _channel_axis(self):
        """The channel axis of the first step, which every input must have."""
        return getattr(self.steps[0][1], "channel_axis", None)

    def _validated(self, X, method):
        """``X`` validated once, as the first step validates it."""
        first = self.steps[0][1]
        where = f"{type(first).__name__}.{method}"
        return check_images(X, where=where, channel_axis=self._channel_axis())

    def _transform_to_final(self, X, method="score_samples", exclude=None):
        """The batch that the final step receives, and for :meth:`_map_back`
        the input's layout, then the grid (spatial shapes and voxel sizes)
        of the batch that each transformer received."""
        X = apply_exclusion(self._validated(X, method), exclude, f"{type(self).__name__}.{method}")
        # The layout of the input, which a Resampler may turn into a list.
        grids = [{"stacked": X.stacked}]
        for transformer in self._transformers():
            grids.append({"shapes": X.spatial_shapes, "voxel_sizes": X.voxel_sizes})
            X = transformer.transform(X)
        return X, grids

    def _transformers(self):
        """The steps before the final one, without those switched off (None
        or "passthrough"), from ``steps``: scikit-learn's public attribute,
        rather than its private ``Pipeline._iter``."""
        return [step for _, step in self.steps[:-1] if step not in (None, "passthrough")]

    def _map_back(self, maps, grids):
        layout, *grids = grids
        for transformer, grid in reversed(list(zip(self._transformers(), grids))):
            if getattr(transformer, "_inverse_needs_grids", False):  # a Resampler
                maps = transformer.inverse_transform(maps, **grid)
            elif hasattr(transformer, "inverse_transform"):
                maps = transformer.inverse_transform(maps)
        return np.stack(maps) if layout["stacked"] and isinstance(maps, list) else maps


def make_anomaly_pipeline(*steps, memory=None, verbose=False):
    """Build an :class:`AnomalyPipeline`, naming the steps after their class.

    Parameters
    ----------
    *steps : estimators
        Transformers, then an anomaly estimator.
    memory : str, object with joblib.Memory interface or None, default=None
        As in :func:`sklearn.pipeline.make_pipeline`.
    verbose : bool, default=False
        As in :func:`sklearn.pipeline.make_pipeline`.

    Returns
    -------
    pipeline : AnomalyPipeline

    Examples
    --------
    >>> from anomseg.baselines import FlairThreshold
    >>> from anomseg.preprocessing import ForegroundMasker, make_anomaly_pipeline
    >>> make_anomaly_pipeline(ForegroundMasker(), FlairThreshold()).named_steps.keys()
    dict_keys(['foregroundmasker', 'flairthreshold'])
    """
    named = make_pipeline(*steps, memory=memory, verbose=verbose)
    return AnomalyPipeline(named.steps, memory=memory, verbose=verbose)
