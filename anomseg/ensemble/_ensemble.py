"""Ensembles of anomaly estimators, combined on one calibrated scale."""

from __future__ import annotations

import logging
import os
import re
import warnings
from numbers import Integral

import numpy as np
from sklearn.base import clone
from sklearn.utils import get_tags
from sklearn.utils.validation import check_is_fitted

from .._docstrings import fill_doc
from ..base import BaseAnomalySegmenter
from ..exceptions import DataDriftWarning, NotFittedError
from ..utils import check_generator
from ..utils._logging import estimator_log
from ..utils._param_validation import COMMON_CONSTRAINTS, StrOptions

logger = logging.getLogger(__name__)

__all__ = ["AnomalyEnsemble", "make_recommended_ensemble", "make_seed_ensemble"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@fill_doc
class AnomalyEnsemble(BaseAnomalySegmenter):
    """Several anomaly estimators trained on the same healthy data, their
    maps combined on one calibrated scale.

    The maps of different methods, or of one method trained from different
    seeds, are on different scales, so they are not averaged as they are.
    Each member is calibrated on the ensemble's held-out healthy images like
    any estimator, and its map is turned into the healthy tail probability
    of its scores (:meth:`~anomseg.base.BaseAnomalySegmenter.tail_probability`:
    how rare such a score is among that member's healthy calibration
    voxels). The ensemble's map is the mean (or the largest) of the members'
    ``-log10`` tail probabilities: 2 where the members agree that a voxel
    scores as only 1 %% of healthy voxels do. Its own threshold is then
    calibrated on the same held-out healthy images, as any estimator's.

    Averaging seeds removes most of the luck of one training run; mixing
    methods adds what each sees that the others miss (a learned residual and
    the FLAIR intensity, say).

    Parameters
    ----------
    estimators : list of (str, estimator)
        The members, named: unfitted anomseg estimators (cloned in ``fit``).
        Names are identifiers, so that ``set_params(<name>__<param>=...)``
        reaches a member's parameter.
    combine : {"mean", "max"}, default="mean"
        How the members' ``-log10`` tail probabilities are combined: their
        mean (a geometric mean of the probabilities), or their largest.
    n_jobs : int or None, default=None
        Members trained at once, in joblib worker processes (loky) that
        share the cores equally; None or 1 trains them one after another in
        this process. Each worker holds its own member and a view of the
        training images (memory-mapped where joblib can).
    %(max_fpr)s
    %(smoothing)s
    %(postprocessing)s
    %(calibration_fraction)s
    random_state : int, numpy.random.Generator or None, default=None
        Seeds the split of the healthy images into training and calibration
        images (the members keep their own ``random_state``).
    verbose : int >= 0, default=0
        Report which member is training, through :mod:`logging` (``INFO``;
        ``DEBUG`` with 0, see ``anomseg.utils._logging``), and pass
        ``verbose`` to the members.
    %(channel_axis)s

    Attributes
    ----------
    estimators_ : list of estimator
        The fitted and calibrated members, in the order of ``estimators``.
    named_estimators_ : dict of str to estimator
        The same, by name.
    %(calibration_attributes)s

    See Also
    --------
    make_seed_ensemble : An ensemble of one estimator trained from several
        seeds.

    Examples
    --------
    >>> from anomseg.baselines import FlairThreshold
    >>> from anomseg.datasets import make_healthy_images
    >>> from anomseg.denoising import DenoisingAESegmenter
    >>> from anomseg.ensemble import AnomalyEnsemble
    >>> X = make_healthy_images(n_images=12, shape=(32, 32), random_state=0)
    >>> dae = DenoisingAESegmenter(width=4, depth=3, n_epochs=2,
    ...                            noise_resolution=4, random_state=0)
    >>> ensemble = AnomalyEnsemble([("dae", dae), ("flair", FlairThreshold())],
    ...                            random_state=0).fit(X)
    >>> ensemble.score_samples(X[:2]).shape
    (2, 32, 32)
    >>> sorted(ensemble.named_estimators_)
    ['dae', 'flair']
    """

    _parameter_constraints: dict = {
        "estimators": [list],
        "combine": [StrOptions({"mean", "max"})],
        "n_jobs": [None, Integral],
        **{
            key: COMMON_CONSTRAINTS[key]
            for key in (
                "max_fpr",
                "smoothing",
                "postprocessing",
                "calibration_fraction",
                "random_state",
                "verbose",
                "channel_axis",
            )
        },
    }

    #: The members are records of their own in a model file, each checked
    #: against its class's declarations.
    _fitted_attribute_constraints: dict = {
        **BaseAnomalySegmenter._fitted_attribute_constraints,
        "estimators_": [list],
    }

    def __init__(
        self,
        estimators,
        *,
        combine="mean",
        n_jobs=None,
        max_fpr=0.05,
        smoothing=None,
        postprocessing=None,
        calibration_fraction=0.2,
        random_state=None,
        verbose=0,
        channel_axis=None,
    ):
        self.estimators = estimators
        self.combine = combine
        self.n_jobs = n_jobs
        self.max_fpr = max_fpr
        self.smoothing = smoothing
        self.postprocessing = postprocessing
        self.calibration_fraction = calibration_fraction
        self.random_state = random_state
        self.verbose = verbose
        self.channel_axis = channel_axis

    # -- parameters of the members, as scikit-learn's compositions have them --------
    def get_params(self, deep=True):
        """Parameters of the ensemble and, with ``deep``, of each member
        (``<name>`` and ``<name>__<param>``)."""
        params = super().get_params(deep=False)
        if not deep:
            return params
        for name, member in self._members():
            params[name] = member
            for key, value in member.get_params(deep=True).items():
                params[f"{name}__{key}"] = value
        return params

    def set_params(self, **params):
        """Set the ensemble's parameters, a member (``<name>``) or a
        member's parameter (``<name>__<param>``)."""
        members = dict(self._members())
        own, nested = {}, {}
        for key, value in params.items():
            name, sep, rest = key.partition("__")
            if name in members and not sep:
                self.estimators = [(n, value if n == name else e) for n, e in self._members()]
                members[name] = value
            elif name in members:
                nested.setdefault(name, {})[rest] = value
            else:
                own[key] = value
        for name, values in nested.items():
            members[name].set_params(**values)
        return super().set_params(**own) if own else self

    def _members(self):
        return [tuple(item) for item in self.estimators or []]

    def _check_params(self):
        name = type(self).__name__
        if not self.estimators:
            raise ValueError(
                f"The 'estimators' parameter of {name} must name at least one member."
            )
        seen = set()
        for item in self.estimators:
            if not (
                isinstance(item, (tuple, list))
                and len(item) == 2
                and isinstance(item[0], str)
                and isinstance(item[1], BaseAnomalySegmenter)
            ):
                raise TypeError(
                    f"The 'estimators' parameter of {name} must be a list of (name, "
                    f"estimator) pairs of anomseg estimators; got {item!r}."
                )
            member_name, member = item
            if not _NAME.match(member_name) or "__" in member_name:
                raise ValueError(
                    f"Member names of {name} must be identifiers without '__'; got "
                    f"{member_name!r}."
                )
            if member_name in seen or member_name in self._get_param_names():
                raise ValueError(
                    f"Member names of {name} must be unique and differ from its "
                    f"parameters; got {member_name!r} twice or as a parameter."
                )
            seen.add(member_name)
            axis = member.get_params(deep=False).get("channel_axis", self.channel_axis)
            if axis != self.channel_axis:
                raise ValueError(
                    f"Member {member_name!r} of {name} has channel_axis={axis}, but the "
                    f"ensemble has {self.channel_axis}; give them the same."
                )
            member.check_params()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        members = [get_tags(m).anomaly_tags for _, m in self._members()]
        own = tags.anomaly_tags
        own.learns_from_images = any(t.learns_from_images for t in members)
        own.requires_fit_shape = any(t.requires_fit_shape for t in members)
        own.requires_scaled_input = any(t.requires_scaled_input for t in members)
        own.learns_from_unlabelled = any(t.learns_from_unlabelled for t in members)
        return tags

    # -- fitting ---------------------------------------------------------------------
    def _fit_inputs(self, batch, y, groups, **fit_params):
        """Members that learn from unlabelled images (ASC-Net) get them,
        marked by ``y`` (0 healthy, -1 unlabelled); the others, and the
        calibration, the healthy images only."""
        if y is None:
            return super()._fit_inputs(batch, y, groups, **fit_params)
        if not self._anomaly_tags.learns_from_unlabelled:
            raise ValueError(
                f"'y' passed to {type(self).__name__}.fit marks unlabelled images, but "
                "no member learns from them."
            )
        y = np.asarray(y)
        if y.shape != (len(batch),) or not np.isin(y, (0, -1, 1)).all():
            raise ValueError(
                f"'y' passed to {type(self).__name__}.fit must mark each of the "
                f"{len(batch)} samples as healthy (0) or unlabelled (-1); got {y!r}."
            )
        healthy = np.flatnonzero(y == 0)
        if groups is not None:
            groups = np.asarray(groups)[healthy]
        unlabelled = batch.subset(np.flatnonzero(y != 0))
        return batch.subset(healthy), groups, {"unlabelled": unlabelled, **fit_params}

    def _fit(self, batch, unlabelled=None, **fit_params):
        members = [(name, clone(member)) for name, member in self._members()]
        jobs = [
            (name, member, *self._member_inputs(member, batch, unlabelled))
            for name, member in members
        ]
        n_jobs = self._n_workers(len(members))
        if n_jobs > 1:
            from joblib import Parallel, delayed

            threads = max(1, (os.cpu_count() or 1) // n_jobs)
            self._log(f"training {len(members)} members on {n_jobs} workers")
            fitted = Parallel(n_jobs=n_jobs, backend="loky")(
                delayed(_fit_member)(member, X, y, 0, threads)  # workers report nothing
                for _, member, X, y in jobs
            )
        else:
            fitted = []
            for k, (name, member, X, y) in enumerate(jobs, start=1):
                self._log(f"training member {k}/{len(jobs)}, {name} ({type(member).__name__})")
                fitted.append(_fit_member(member, X, y, self.verbose, None))
        self.estimators_ = fitted

    @property
    def named_estimators_(self):
        """The fitted members by name."""
        check_is_fitted(self, "estimators_")
        return {name: member for (name, _), member in zip(self._members(), self.estimators_)}

    @staticmethod
    def _member_inputs(member, batch, unlabelled):
        """The images and ``y`` of one member's ``fit``."""
        if unlabelled is None or not get_tags(member).anomaly_tags.learns_from_unlabelled:
            return batch, None
        both = batch.concatenate(unlabelled)
        return both, np.r_[np.zeros(len(batch), int), -np.ones(len(unlabelled), int)]

    def _n_workers(self, n_members):
        from .. import distributed

        if self.n_jobs is None or self.n_jobs == 1:
            return 1
        if distributed.world_size() > 1:
            raise ValueError(
                f"'n_jobs' of {type(self).__name__} must be None or 1 under torchrun, "
                "where every process trains each member on its share of the images."
            )
        cores = os.cpu_count() or 1
        n_jobs = cores if self.n_jobs < 0 else self.n_jobs
        return max(1, min(n_jobs, n_members, cores))

    def _tune(self, batch):
        """Calibrate every member on the healthy calibration images (each
        chooses what it chooses there, its threshold and the quantiles of its
        tail probabilities)."""
        for k, member in enumerate(self.estimators_, start=1):
            self._log(f"calibrating member {k}/{len(self.estimators_)}")
            member.calibrate(batch)
        return None

    def _score(self, batch):
        if not all(hasattr(m, "healthy_quantiles_") for m in self.estimators_):
            raise NotFittedError(
                f"The members of this {type(self).__name__} are not calibrated yet, so "
                "their maps have no common scale: call calibrate with healthy images "
                "after fit(..., calibrate=False)."
            )
        combined = None
        for member in self.estimators_:
            with warnings.catch_warnings():  # the ensemble checks drift itself
                warnings.simplefilter("ignore", DataDriftWarning)
                maps = member.score_samples(batch)
            log_tails = member.tail_probability(list(maps), log=True)
            scores = [-t.astype(np.float64) / np.log(10.0) for t in log_tails]
            if combined is None:
                combined = scores
            elif self.combine == "max":
                combined = [np.maximum(a, b) for a, b in zip(combined, scores)]
            else:
                combined = [a + b for a, b in zip(combined, scores)]
        if self.combine == "mean":
            combined = [c / len(self.estimators_) for c in combined]
        return [np.maximum(c, 0).astype(np.float32) for c in combined]

    def _log(self, message):
        estimator_log(self, logger)(message)

    # -- persistence ------------------------------------------------------------------
    def _check_loaded(self):
        """A model file's members must be those its ``estimators`` name."""
        members = self._members()
        if len(self.estimators_) != len(members) or any(
            type(fitted) is not type(template)
            for fitted, (_, template) in zip(self.estimators_, members)
        ):
            raise ValueError("its fitted members are not those its 'estimators' name")


def _fit_member(member, X, y, verbose, n_threads):
    """Fit one member without calibrating it (in a worker with
    ``n_threads`` torch threads, or here), reporting its progress with the
    ensemble's ``verbose``, which it does not keep."""
    import sys

    if n_threads is not None and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n_threads)
    quiet = member.get_params(deep=False).get("verbose") == 0
    if verbose and quiet:
        member.set_params(verbose=verbose)
    try:
        return member.fit(X, y, calibrate=False)
    finally:
        if verbose and quiet:
            member.set_params(verbose=0)


def make_seed_ensemble(estimator, n_members=5, *, random_state=None, name=None, **params):
    """An :class:`AnomalyEnsemble` of one estimator trained from several
    seeds.

    Parameters
    ----------
    estimator : estimator
        An unfitted anomseg estimator with a ``random_state``.
    n_members : int >= 1, default=5
        Members, each a clone of ``estimator`` with its own seed.
    random_state : int, numpy.random.Generator or None, default=None
        Seeds the members' seeds (independent streams of
        :class:`numpy.random.SeedSequence`, so that ensembles of seeds 0 and
        1 share no member) and the ensemble's own split.
    name : str or None, default=None
        Prefix of the members' names (``<name>_<k>``); the estimator's class
        name in lower case by default.
    **params
        Other parameters of :class:`AnomalyEnsemble`.

    Returns
    -------
    ensemble : AnomalyEnsemble

    Examples
    --------
    >>> from anomseg.denoising import DenoisingAESegmenter
    >>> from anomseg.ensemble import make_seed_ensemble
    >>> ensemble = make_seed_ensemble(DenoisingAESegmenter(), 3, random_state=0)
    >>> [name for name, _ in ensemble.estimators]
    ['denoisingaesegmenter_0', 'denoisingaesegmenter_1', 'denoisingaesegmenter_2']
    """
    if "random_state" not in estimator.get_params(deep=False):
        raise ValueError(
            f"make_seed_ensemble needs an estimator with a random_state; "
            f"{type(estimator).__name__} has none (it learns nothing random)."
        )
    if not isinstance(n_members, Integral) or isinstance(n_members, bool) or n_members < 1:
        raise ValueError(
            f"'n_members' of make_seed_ensemble must be an int >= 1; got {n_members!r}."
        )
    return AnomalyEnsemble(
        seed_members(estimator, n_members, random_state, name),
        random_state=random_state,
        **params,
    )


def make_recommended_ensemble(*, random_state=None, n_jobs=None):
    """The recommended default for FLAIR scans, as ``anomseg fit --method
    recommended`` builds it.

    An :class:`AnomalyEnsemble` of 3 seeds of
    :class:`~anomseg.denoising.DenoisingAESegmenter` and
    :class:`~anomseg.baselines.FlairThreshold`, its map smoothed by a
    Gaussian of ``(2, 2, 1)`` voxels and calibrated at a healthy FPR of 2 %%.
    These settings were chosen on the LGG FLAIR training patients only
    (``benchmarks/quality/sweep_user_lgg.py``); the README gives its figures on the
    validation patients. Both members assume that lesions are brighter than
    healthy tissue, as in FLAIR: for other contrasts, build an ensemble of
    methods that do not (``residual="absolute"``).

    Parameters
    ----------
    random_state : int or None, default=None
        Seeds the members' seeds and the ensemble's split; the same value
        gives the model that ``anomseg fit --method recommended --param
        random_state=...`` gives.
    n_jobs : int or None, default=None
        Members trained at once (see :class:`AnomalyEnsemble`).

    Returns
    -------
    ensemble : AnomalyEnsemble
        Unfitted; scale each scan first, as ``anomseg fit`` does, with
        :meth:`~anomseg.preprocessing.IntensityScaler.for_deep_methods` in an
        :class:`~anomseg.preprocessing.AnomalyPipeline`.

    Examples
    --------
    >>> from anomseg.ensemble import make_recommended_ensemble
    >>> ensemble = make_recommended_ensemble(random_state=0)
    >>> [name for name, _ in ensemble.estimators]
    ['denoising_ae_0', 'denoising_ae_1', 'denoising_ae_2', 'flair_threshold']
    >>> ensemble.smoothing, ensemble.max_fpr
    ((2.0, 2.0, 1.0), 0.02)
    """
    from ..persistence._registry import PRESETS, method_class

    preset = PRESETS["recommended"]
    members = []
    for stream, method in enumerate(preset.methods):
        member = method_class(method)(max_fpr=preset.max_fpr)
        label = method.replace("-", "_")
        if "random_state" in member.get_params(deep=False):
            members += seed_members(member, preset.ensemble, random_state, label, stream)
        else:
            members.append((label, member))
    return AnomalyEnsemble(
        members,
        smoothing=preset.smoothing,
        max_fpr=preset.max_fpr,
        random_state=random_state,
        n_jobs=n_jobs,
    )


def seed_members(estimator, n_members, random_state, name=None, stream=0):
    """``n_members`` named clones of ``estimator`` with independent seeds
    drawn from ``random_state``; ``stream`` tells apart the seeds of
    several estimators drawn from one ``random_state`` (two methods of an
    ensemble trained from the same seeds would share their initial
    weights)."""
    name = name or type(estimator).__name__.lower()
    seeds = _member_seeds(random_state, n_members, stream)
    return [
        (f"{name}_{k}", clone(estimator).set_params(random_state=seed))
        for k, seed in enumerate(seeds)
    ]


def _member_seeds(random_state, n, stream=0):
    if random_state is None or isinstance(random_state, Integral):
        entropy = random_state
    else:
        entropy = int(check_generator(random_state).integers(2**63))
    sequence = np.random.SeedSequence(entropy, spawn_key=(stream,) if stream else ())
    return [int(s) for s in sequence.generate_state(n)]
