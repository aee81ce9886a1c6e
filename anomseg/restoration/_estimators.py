"""Estimators built on normative VAE/GMVAE priors: MAP restoration (You et
al. 2019) and the plain-reconstruction baseline."""

from __future__ import annotations

import time
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from .._docstrings import fill_doc
from .._torch import TorchSegmenter, TrainingPlan, chunks, update
from ..exceptions import AnomsegWarning
from ..utils._param_validation import (
    ArrayOf,
    Finite,
    Interval,
    NumberSequence,
    StrOptions,
    validate_parameter_constraints,
)
from ._networks import ConvGMVAE, ConvVAE
from ._restore import (
    RESTORATION_SCHEDULES,
    golden_section_argmin,
    golden_section_evaluations,
    map_restore,
    step_size_schedule,
)

__all__ = [
    "DEFAULT_TV_WEIGHTS",
    "PUBLISHED_GMVAE",
    "RESTORATION_SCHEDULES",
    "GMVAERestorer",
    "VAEReconstructor",
    "VAERestorer",
]

#: The lambda grid of the reference code, ``np.arange(20) / 5``.
DEFAULT_TV_WEIGHTS = tuple(float(v) for v in np.arange(20) / 5)


def _residual(kind, observed, restored):
    """The anomaly map of a 2D image: ``|Y - X|`` ("absolute") or
    ``max(Y - X, 0)`` ("positive"), each averaged over channels (so opposite
    changes in two channels do not cancel)."""
    diff = observed - restored
    diff = np.abs(diff) if kind == "absolute" else np.maximum(diff, 0)
    return diff.mean(axis=-1) if diff.ndim == 3 else diff  # channels last


def _tv_slices(batch, most):
    """At most ``most`` evenly spaced slices of ``batch`` to choose the TV
    weight on: among those with foreground and nothing excluded (or, failing
    them, some voxel to count), since blank slices change at no weight."""
    n = len(batch)
    candidates = [i for i in range(n) if batch.foreground[i].any()]
    if batch.excluded is not None:
        whole = [i for i in candidates if not batch.excluded[i].any()]
        candidates = whole or [i for i in candidates if batch.counted(i).any()]
    candidates = np.asarray(candidates or range(n))
    picks = np.linspace(0, len(candidates) - 1, min(len(candidates), most)).round()
    return candidates[np.unique(picks.astype(int))]


class _NormativePriorEstimator(TorchSegmenter):
    """Training of a torch prior by its negative ELBO, with early stopping."""

    _module_class = ConvVAE
    _module_params = ("width", "latent_channels")

    _fitted_attribute_constraints: dict = {
        **TorchSegmenter._fitted_attribute_constraints,
        "n_epochs_": [Interval(Integral, 1, None, closed="left")],
    }

    #: Adam at a constant step size: a checkpoint's training goes on for
    #: more epochs as if they had been planned from the start.
    _extendable_params = frozenset({"n_epochs"})

    _parameter_constraints: dict = {
        **TorchSegmenter._parameter_constraints,
        "width": [Interval(Integral, 1, None, closed="left")],
        "latent_channels": [Interval(Integral, 1, None, closed="left")],
        "n_epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "patience": [Interval(Integral, 1, None, closed="left")],
        "residual": [StrOptions({"absolute", "positive"})],
    }

    # -- training ---------------------------------------------------------------
    def _fit(self, batch):
        super()._fit(batch)
        self.n_epochs_ = len(self.history_)

    def _training_plan(self, batch, rng, generator):
        validation, train = self._validation_split(len(batch), rng)
        n_validation = len(validation)
        module = self._build_module()
        optimizer = torch.optim.Adam(module.parameters(), lr=self.learning_rate)

        def step(indices):
            module.train()
            x, m = self._tensors(batch, indices)
            terms = module.negative_elbo(x, m, generator=generator)
            update(optimizer, sum(terms.values()).sum() / m.sum().clamp(min=1))
            return self._per_pixel(terms, m, "train_")

        def end_epoch(epoch, record):
            metrics = {"train_loss": sum(v for k, v in record.items() if k.startswith("train_"))}
            if n_validation:
                metrics.update(self._validation_loss(module, batch, validation, generator))
            return metrics

        return TrainingPlan(
            module=module,
            n_epochs=self.n_epochs,
            steps=lambda epoch: chunks(rng.permutation(train), self.batch_size),
            step=step,
            end_epoch=end_epoch,
            monitor="validation_loss" if n_validation else "train_loss",
            patience=self.patience if n_validation else None,
            optimizers=(optimizer,),
        )

    @staticmethod
    def _per_pixel(terms, mask, prefix):
        """The ELBO terms of a batch as (sum, foreground pixels) pairs."""
        pixels = float(mask.sum())
        return {f"{prefix}{k}": (float(v.detach().sum()), pixels) for k, v in terms.items()}

    def _validation_loss(self, module, batch, indices, generator):
        module.eval()
        totals = {}
        with torch.no_grad():
            for chunk in chunks(indices, self.inference_batch_size_):
                x, m = self._tensors(batch, chunk)
                terms = module.negative_elbo(x, m, generator=generator)
                for key, (total, pixels) in self._per_pixel(terms, m, "validation_").items():
                    before = totals.get(key, (0.0, 0.0))
                    totals[key] = (before[0] + total, before[1] + pixels)
        out = {key: total / max(pixels, 1.0) for key, (total, pixels) in totals.items()}
        out["validation_loss"] = sum(out.values())
        return out

    # -- public helpers -----------------------------------------------------------
    @fill_doc
    def reconstruct(self, X):
        """Decoder means of the posterior-mean latents of images,
        ``decode(encode(X))``.

        Parameters
        ----------
        %(images)s

        Returns
        -------
        reconstructions : ndarray of float32 or list of ndarray
            In the layout of ``X``; 0 outside the foreground.
        """
        check_is_fitted(self)
        batch = self._validate_images(X, "reconstruct")
        slices = self._model_input(batch)
        out = [None] * len(slices)
        for indices in self._shape_groups(slices):
            x, _ = self._tensors(slices, indices)
            with torch.no_grad():
                recon = self.module_.reconstruct(x)
            for i, image in zip(indices, self._to_images(slices, indices, recon)):
                out[i] = image
        return batch.wrap(batch.zero_background(self._from_model_output(batch, out)))


class _BaseRestorer(_NormativePriorEstimator):
    """MAP restoration with the trained prior; the map is the residual."""

    # Restoration backpropagates through the prior for every slice of a batch.
    _auto_inference_batch_size = {"cpu": 16, "cuda": 128}

    _fitted_attribute_constraints: dict = {
        **_NormativePriorEstimator._fitted_attribute_constraints,
        "tv_weights_": [ArrayOf("fiu", 1)],
        "healthy_change_": [ArrayOf("f", 1)],
        "tv_weight_": [Finite(0, None)],
        "tv_search_time_": [Finite(0, None)],
    }

    #: Restoration changes the maps, not the prior: calibrate again.
    _calibration_params = _NormativePriorEstimator._calibration_params | {
        "tv_weight",
        "tv_weights",
        "tv_search",
        "max_tv_images",
        "schedule",
        "n_restoration_steps",
        "step_sizes",
        "step_size_switch",
        "gradient_clip",
    }

    _parameter_constraints: dict = {
        **_NormativePriorEstimator._parameter_constraints,
        "tv_weight": [StrOptions({"auto"}), Interval(Real, 0, None, closed="left")],
        "tv_weights": [NumberSequence(Interval(Real, 0, None, closed="left"))],
        "tv_search": [StrOptions({"golden", "grid"})],
        "max_tv_images": [Interval(Integral, 1, None, closed="left")],
        "schedule": [StrOptions(set(RESTORATION_SCHEDULES))],
        "n_restoration_steps": [None, Interval(Integral, 1, None, closed="left")],
        "step_sizes": [
            None,
            NumberSequence(Interval(Real, 0, None, closed="neither"), length=2),
        ],
        "step_size_switch": [None, Interval(Integral, 0, None, closed="left")],
        "gradient_clip": [Interval(Real, 0, None, closed="neither")],
    }

    @classmethod
    def _upgrade_params(cls, params):
        # Models saved before the fast schedule existed restored with the
        # paper's schedule and searched the whole TV grid.
        params = dict(super()._upgrade_params(params))
        params.setdefault("schedule", "paper")
        params.setdefault("tv_search", "grid")
        return params

    # -- restoration ------------------------------------------------------------
    def restoration_schedule(self):
        """The restoration this estimator runs: the ``schedule`` preset with
        the parameters that are not None in its place.

        Returns
        -------
        schedule : dict
            ``n_restoration_steps``, ``step_sizes``, ``step_size_switch``
            and ``momentum``.
        """
        out = dict(RESTORATION_SCHEDULES[self.schedule])
        for key in ("n_restoration_steps", "step_sizes", "step_size_switch"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out["step_sizes"] = tuple(float(v) for v in out["step_sizes"])
        return out

    def _restore_slices(self, slices, tv_weights, record_steps=(), stage="restoring"):
        """Restored images of a 2D batch, each at its own TV weight, after
        all steps and after each of ``record_steps``: a dict of step count
        to a list of images (H, W[, C]). With ``verbose``, progress is
        reported as ``stage`` (None: not at all)."""
        plan = self.restoration_schedule()
        schedule = step_size_schedule(
            plan["n_restoration_steps"], plan["step_sizes"], plan["step_size_switch"]
        )
        steps = sorted(set(record_steps) | {len(schedule)})
        out = {s: [None] * len(slices) for s in steps}
        weights = torch.as_tensor(np.asarray(tv_weights, dtype=np.float32))
        progress = self._progress(stage, len(slices), "slices") if stage else None
        # Channels-last convolutions ran about 30 % faster on the CPU (the
        # weights keep their values; saving makes them contiguous again).
        module = self.module_.to(memory_format=torch.channels_last)
        for indices in self._shape_groups(slices):
            y, m = self._tensors(slices, indices)
            step_share = len(indices) / len(schedule)  # slices per step, for the progress
            # Float32 whatever the precision: in bfloat16, the many small
            # gradient steps moved the maps by up to half their range.
            with torch.autocast(self.device_, enabled=False):
                final, recorded = map_restore(
                    module,
                    y.contiguous(memory_format=torch.channels_last),
                    m,
                    weights[indices].to(self.device_),
                    schedule,
                    float(self.gradient_clip),
                    record_steps,
                    momentum=plan["momentum"],
                    callback=progress and (lambda step, share=step_share: progress.update(share)),
                )
            recorded[len(schedule)] = final
            for s in steps:
                for i, image in zip(indices, self._to_images(slices, indices, recorded[s])):
                    out[s][i] = image
        if progress:
            progress.close()
        return out

    def _fit(self, batch):
        super()._fit(batch)
        if self.tv_weight != "auto":
            self.tv_weight_ = float(self.tv_weight)

    def _score(self, batch):
        if not hasattr(self, "tv_weight_"):
            raise NotFittedError(
                f"This {type(self).__name__} has tv_weight='auto' and was fitted "
                "with calibrate=False: call calibrate with healthy images, which "
                "chooses the TV weight, before scoring."
            )
        restored = self._restore_slices(batch, np.full(len(batch), self.tv_weight_))
        [images] = restored.values()
        return [_residual(self.residual, y, x) for y, x in zip(batch.images, images)]

    # -- the TV weight ---------------------------------------------------------
    def _healthy_change(self, slices, grid, stage="healthy change"):
        """Mean absolute change per foreground pixel that restoration causes
        at each TV weight of ``grid``, and the restored images."""
        n, k = len(slices), len(grid)
        repeated = type(slices)(
            slices.images * k, slices.foreground * k, False, slices.channel_axis
        )
        [restored] = self._restore_slices(repeated, np.repeat(grid, n), stage=stage).values()
        pixels = sum(int(fg.sum()) for fg in slices.foreground)
        change = np.empty(k)
        for j in range(k):
            total = 0.0
            for i in range(n):
                diff = slices.images[i] - restored[j * n + i]
                total += float(np.abs(diff[slices.foreground[i]]).sum())
            change[j] = total / max(pixels, 1)
        return change, restored

    def _search_tv_weight(self, subset, grid):
        """The TV weights evaluated (increasing), their healthy change, and
        the restorations at each, by ``tv_search``."""
        if self.tv_search == "grid":
            change, restored = self._healthy_change(subset, grid, "TV weight grid")
            n = len(subset)
            return grid, change, {j: restored[j * n : (j + 1) * n] for j in range(len(grid))}
        evaluated = {}
        bound = golden_section_evaluations(len(grid))
        started = time.perf_counter()

        def at(j):
            if j not in evaluated:
                [change], restored = self._healthy_change(subset, grid[j : j + 1], None)
                evaluated[j] = (change, restored)
                elapsed = time.perf_counter() - started
                left = elapsed / len(evaluated) * (bound - len(evaluated))
                self._log(
                    f"TV weight search: healthy change {change:.4g} at {grid[j]:g} "
                    f"({len(evaluated)} of at most {bound} weights, {elapsed:.0f} s, "
                    f"at most about {left:.0f} s left)"
                )
            return evaluated[j][0]

        golden_section_argmin(at, len(grid))
        order = sorted(evaluated)
        change = np.array([evaluated[j][0] for j in order])
        return grid[order], change, {order.index(j): evaluated[j][1] for j in order}

    def _tune(self, batch):
        if not (isinstance(self.tv_weight, str) and self.tv_weight == "auto"):
            self.tv_weight_ = float(self.tv_weight)
            return None
        started = time.perf_counter()
        # Evenly spaced images keep the choice deterministic and its cost
        # bounded; the mean change converges long before all are used.
        n = len(batch)
        chosen = _tv_slices(batch, self.max_tv_images)
        subset = batch.subset(chosen)
        grid = np.unique(np.asarray(self.tv_weights, dtype=float).ravel())
        weights, change, restored = self._search_tv_weight(subset, grid)
        best = int(np.argmin(change))
        self.tv_weights_ = weights
        self.healthy_change_ = change
        self.tv_weight_ = float(weights[best])
        self.tv_search_time_ = time.perf_counter() - started
        self._log(
            f"healthy change per TV weight ({len(weights)} of {len(grid)} evaluated, "
            f"{self.tv_search_time_:.1f} s): "
            + ", ".join(f"{w:g}: {c:.4g}" for w, c in zip(weights, change))
            + f"; chose {self.tv_weight_:g}"
        )
        self._warn_if_edge(grid)
        if len(chosen) < n:
            return None
        return [_residual(self.residual, y, x) for y, x in zip(batch.images, restored[best])]

    def _warn_if_edge(self, grid):
        """Warn when the chosen weight is the largest of ``grid``, or its
        smallest above 0: the healthy change may fall further beyond it, so
        the grid, not the data, chose."""
        chosen = self.tv_weight_
        if len(grid) < 2 or grid[0] < chosen < grid[-1] or chosen == 0:
            return
        beyond = "above" if chosen == grid[-1] else "below"
        which = "largest" if beyond == "above" else "smallest"
        warnings.warn(
            f"[{type(self).__name__}] tv_weight='auto' chose {chosen:g}, the {which} of "
            f"tv_weights ({grid[0]:g} to {grid[-1]:g}, {len(grid)} weights): the healthy "
            f"change may fall further {beyond} it (see tv_weights_ and healthy_change_); "
            f"extend tv_weights {beyond} {chosen:g}.",
            AnomsegWarning,
            stacklevel=5,
        )

    # -- public ----------------------------------------------------------------
    @fill_doc
    def restore(self, X, tv_weight=None, record_steps=None):
        """Restore images towards the healthy prior.

        Parameters
        ----------
        %(images)s
        tv_weight : float >= 0 or None, default=None
            The TV weight; None uses ``tv_weight_``.
        record_steps : sequence of int or None, default=None
            If given, also return the images after these numbers of steps
            (0 is the input), to study convergence.

        Returns
        -------
        restored : ndarray of float32 or list of ndarray
            The restored images in the layout of ``X``, after all steps of
            :meth:`restoration_schedule`; without ``record_steps`` only.
        recorded : dict of int to ndarray or list
            With ``record_steps``: the restored images after each of them
            and after the last step, keyed by step count.
        """
        check_is_fitted(self)
        self._validate_params()
        weight = self.tv_weight_ if tv_weight is None else tv_weight
        steps = () if record_steps is None else tuple(record_steps)
        n_steps = self.restoration_schedule()["n_restoration_steps"]
        validate_parameter_constraints(
            {
                "tv_weight": [Interval(Real, 0, None, closed="left")],
                "record_steps": [
                    None,
                    NumberSequence(Interval(Integral, 0, n_steps, closed="both")),
                ],
            },
            {"tv_weight": weight, "record_steps": record_steps},
            caller_name=f"{type(self).__name__}.restore",
        )
        batch = self._validate_images(X, "restore")
        slices = self._model_input(batch)
        recorded = self._restore_slices(slices, np.full(len(slices), float(weight)), steps)
        wrapped = {
            s: batch.wrap(self._from_model_output(batch, images)) for s, images in recorded.items()
        }
        return wrapped if record_steps is not None else wrapped[n_steps]

    @fill_doc
    def healthy_change(self, X, tv_weights=None):
        """Mean absolute change per foreground pixel that restoration causes
        on healthy images, epsilon(lambda) of You et al.

        The paper chooses the TV weight that minimises it: too small a weight
        lets restoration drift towards the prior's mean image, too large a
        one makes the TV subgradient oscillate.

        Parameters
        ----------
        %(images)s
            Healthy images.
        tv_weights : sequence of float or None, default=None
            The TV weights to evaluate; None uses ``tv_weight_``.

        Returns
        -------
        change : ndarray of shape (n_weights,)
            The mean absolute change at each weight.
        """
        check_is_fitted(self)
        self._validate_params()
        grid = self.tv_weight_ if tv_weights is None else tv_weights
        validate_parameter_constraints(
            {"tv_weights": [NumberSequence(Interval(Real, 0, None, closed="left"))]},
            {"tv_weights": np.atleast_1d(grid)},
            caller_name=f"{type(self).__name__}.healthy_change",
        )
        grid = np.atleast_1d(np.asarray(grid, dtype=float))
        batch = self._validate_images(X, "healthy_change")
        return self._healthy_change(self._model_input(batch), grid)[0]


@fill_doc
class VAERestorer(_BaseRestorer):
    """Anomaly maps from MAP restoration under a VAE prior of healthy slices.

    A fully convolutional Gaussian VAE with a 2D latent map learns the
    distribution of healthy slices. Each new slice Y is restored by gradient
    ascent on ELBO(X) - lambda * TV(X - Y) from X = Y, with the decoder's
    standard deviation fixed to 1/sqrt(2); the anomaly map is the residual
    ``|Y - X|``. This is the VAE row of You et al. (2019).

    Parameters
    ----------
    %(prior_network)s
    %(prior_training)s
    %(restoration)s
    %(restoration_runtime)s
    %(max_fpr)s
    %(smoothing)s
    %(postprocessing)s
    %(calibration_fraction)s
    %(random_state)s
    %(verbose)s
    %(channel_axis)s
    %(callbacks)s
    %(precision)s

    Attributes
    ----------
    %(restoration_attributes)s
    %(prior_attributes)s
    %(calibration_attributes)s

    See Also
    --------
    GMVAERestorer : The same restoration under a Gaussian-mixture prior.
    VAEReconstructor : The plain reconstruction residual of the same VAE.

    Notes
    -----
    %(prior_notes)s

    References
    ----------
    .. [1] S. You, K. C. Tezcan, X. Chen, E. Konukoglu. "Unsupervised Lesion
       Detection via Image Restoration with a Normative Prior". MIDL 2019.

    Examples
    --------
    >>> from anomseg.datasets import make_healthy_images
    >>> from anomseg.restoration import VAERestorer
    >>> X = make_healthy_images(n_images=16, shape=(32, 32), random_state=0)
    >>> est = VAERestorer(width=4, n_epochs=2, n_restoration_steps=5,
    ...                   tv_weight=1.0, random_state=0).fit(X)
    >>> est.score_samples(X[:2]).shape
    (2, 32, 32)
    """

    _module_class = ConvVAE
    _module_params = ("width", "latent_channels")

    def __init__(
        self,
        *,
        width=16,
        latent_channels=1,
        n_epochs=40,
        batch_size=16,
        learning_rate=1e-3,
        validation_fraction=0.1,
        patience=5,
        tv_weight="auto",
        tv_weights=DEFAULT_TV_WEIGHTS,
        tv_search="golden",
        max_tv_images=16,
        schedule="fast",
        n_restoration_steps=None,
        step_sizes=None,
        step_size_switch=None,
        gradient_clip=100.0,
        residual="absolute",
        inference_batch_size="auto",
        device="auto",
        max_fpr=0.05,
        smoothing=None,
        postprocessing=None,
        calibration_fraction=0.2,
        random_state=None,
        verbose=0,
        channel_axis=None,
        callbacks=None,
        precision="float32",
    ):
        self.width = width
        self.latent_channels = latent_channels
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.tv_weight = tv_weight
        self.tv_weights = tv_weights
        self.tv_search = tv_search
        self.max_tv_images = max_tv_images
        self.schedule = schedule
        self.n_restoration_steps = n_restoration_steps
        self.step_sizes = step_sizes
        self.step_size_switch = step_size_switch
        self.gradient_clip = gradient_clip
        self.residual = residual
        self.inference_batch_size = inference_batch_size
        self.device = device
        self.max_fpr = max_fpr
        self.smoothing = smoothing
        self.postprocessing = postprocessing
        self.calibration_fraction = calibration_fraction
        self.random_state = random_state
        self.verbose = verbose
        self.channel_axis = channel_axis
        self.callbacks = callbacks
        self.precision = precision


@fill_doc
class GMVAERestorer(_BaseRestorer):
    """Anomaly maps from MAP restoration under a Gaussian-mixture VAE prior.

    The prior is a fully convolutional GMVAE (Dilokthanakul et al.) with 2D
    latent maps z and w and ``n_clusters`` clusters; its ELBO has four
    terms: reconstruction, the KL of q(z|X) to the conditional prior
    p(z|w, c) averaged over p(c|z, w), KL(q(w|X) || N(0, I)) and the KL of
    the cluster posterior to a uniform prior. Restoration and the anomaly
    map are those of :class:`VAERestorer`. This is the GMVAE method of You
    et al. (2019), the best of their paper.

    Parameters
    ----------
    %(prior_network)s
    n_clusters : int >= 1, default=9
        Mixture components of the conditional prior p(z|w, c).
    %(prior_training)s
    %(restoration)s
    %(restoration_runtime)s
    %(max_fpr)s
    %(smoothing)s
    %(postprocessing)s
    %(calibration_fraction)s
    %(random_state)s
    %(verbose)s
    %(channel_axis)s
    %(callbacks)s
    %(precision)s

    Attributes
    ----------
    %(restoration_attributes)s
    %(prior_attributes)s
    %(calibration_attributes)s

    See Also
    --------
    VAERestorer : The same restoration under a plain VAE prior.
    GMVAERestorer.published : The configuration of the paper.

    Notes
    -----
    %(prior_notes)s

    References
    ----------
    .. [1] S. You, K. C. Tezcan, X. Chen, E. Konukoglu. "Unsupervised Lesion
       Detection via Image Restoration with a Normative Prior". MIDL 2019.
    .. [2] N. Dilokthanakul et al. "Deep Unsupervised Clustering with
       Gaussian Mixture Variational Autoencoders". arXiv:1611.02648, 2016.

    Examples
    --------
    >>> from anomseg.datasets import make_healthy_images
    >>> from anomseg.restoration import GMVAERestorer
    >>> X = make_healthy_images(n_images=16, shape=(32, 32), random_state=0)
    >>> est = GMVAERestorer(width=4, n_clusters=3, n_epochs=2,
    ...                     n_restoration_steps=5, tv_weight=1.0,
    ...                     random_state=0).fit(X)
    >>> est.predict(X[:2]).dtype
    dtype('bool')
    """

    _module_class = ConvGMVAE
    _module_params = ("width", "latent_channels", "n_clusters")
    _parameter_constraints: dict = {
        **_BaseRestorer._parameter_constraints,
        "n_clusters": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        *,
        width=16,
        latent_channels=1,
        n_clusters=9,
        n_epochs=40,
        batch_size=16,
        learning_rate=1e-3,
        validation_fraction=0.1,
        patience=5,
        tv_weight="auto",
        tv_weights=DEFAULT_TV_WEIGHTS,
        tv_search="golden",
        max_tv_images=16,
        schedule="fast",
        n_restoration_steps=None,
        step_sizes=None,
        step_size_switch=None,
        gradient_clip=100.0,
        residual="absolute",
        inference_batch_size="auto",
        device="auto",
        max_fpr=0.05,
        smoothing=None,
        postprocessing=None,
        calibration_fraction=0.2,
        random_state=None,
        verbose=0,
        channel_axis=None,
        callbacks=None,
        precision="float32",
    ):
        self.width = width
        self.latent_channels = latent_channels
        self.n_clusters = n_clusters
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.tv_weight = tv_weight
        self.tv_weights = tv_weights
        self.tv_search = tv_search
        self.max_tv_images = max_tv_images
        self.schedule = schedule
        self.n_restoration_steps = n_restoration_steps
        self.step_sizes = step_sizes
        self.step_size_switch = step_size_switch
        self.gradient_clip = gradient_clip
        self.residual = residual
        self.inference_batch_size = inference_batch_size
        self.device = device
        self.max_fpr = max_fpr
        self.smoothing = smoothing
        self.postprocessing = postprocessing
        self.calibration_fraction = calibration_fraction
        self.random_state = random_state
        self.verbose = verbose
        self.channel_axis = channel_axis
        self.callbacks = callbacks
        self.precision = precision

    @classmethod
    def published(cls, **params):
        """The configuration of You et al.: 64 channels, 9 clusters, Adam at
        5e-5 and the reference restoration schedule.

        The paper trained on 158 x 198 crops; crop or resample to that shape
        first (for example with :class:`~anomseg.preprocessing.Resizer`).
        Training at this learning rate needs many epochs and, in practice, a
        GPU.

        Parameters
        ----------
        **params
            Parameters overriding the published ones.

        Returns
        -------
        estimator : GMVAERestorer
        """
        return cls(**{**PUBLISHED_GMVAE, **params})


#: The published GMVAE configuration (You et al. 2019).
PUBLISHED_GMVAE = {
    "width": 64,
    "latent_channels": 1,
    "n_clusters": 9,
    "learning_rate": 5e-5,
    "schedule": "paper",
    "tv_search": "grid",
    "gradient_clip": 100.0,
}


@fill_doc
class VAEReconstructor(_NormativePriorEstimator):
    """Anomaly maps from the plain reconstruction residual of a VAE.

    The map is ``|Y - decode(encode(Y))|`` with the posterior-mean latent:
    the VAE-128 baseline row of You et al. (2019), which shows what MAP
    restoration (:class:`VAERestorer`) adds over reconstruction.

    Parameters
    ----------
    %(prior_network)s
    %(prior_training)s
    residual : {"absolute", "positive"}, default="absolute"
        The map is ``|Y - decode(encode(Y))|``, or with "positive" only its
        positive part, for hyper-intense lesions.
    %(torch_runtime)s
    %(max_fpr)s
    %(smoothing)s
    %(postprocessing)s
    %(calibration_fraction)s
    %(random_state)s
    %(verbose)s
    %(channel_axis)s
    %(callbacks)s
    %(precision)s

    Attributes
    ----------
    %(prior_attributes)s
    %(calibration_attributes)s

    See Also
    --------
    VAERestorer : MAP restoration with the same network.

    Notes
    -----
    %(prior_notes)s

    Examples
    --------
    >>> from anomseg.datasets import make_healthy_images
    >>> from anomseg.restoration import VAEReconstructor
    >>> X = make_healthy_images(n_images=16, shape=(32, 32), random_state=0)
    >>> est = VAEReconstructor(width=4, n_epochs=2, random_state=0).fit(X)
    >>> est.score_samples(X[:2]).shape
    (2, 32, 32)
    """

    _module_class = ConvVAE
    _module_params = ("width", "latent_channels")

    def __init__(
        self,
        *,
        width=16,
        latent_channels=1,
        n_epochs=40,
        batch_size=16,
        learning_rate=1e-3,
        validation_fraction=0.1,
        patience=5,
        residual="absolute",
        inference_batch_size="auto",
        device="auto",
        max_fpr=0.05,
        smoothing=None,
        postprocessing=None,
        calibration_fraction=0.2,
        random_state=None,
        verbose=0,
        channel_axis=None,
        callbacks=None,
        precision="float32",
    ):
        self.width = width
        self.latent_channels = latent_channels
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.residual = residual
        self.inference_batch_size = inference_batch_size
        self.device = device
        self.max_fpr = max_fpr
        self.smoothing = smoothing
        self.postprocessing = postprocessing
        self.calibration_fraction = calibration_fraction
        self.random_state = random_state
        self.verbose = verbose
        self.channel_axis = channel_axis
        self.callbacks = callbacks
        self.precision = precision

    def _score(self, batch):
        maps = [None] * len(batch)
        for indices in self._shape_groups(batch):
            x, _m = self._tensors(batch, indices)
            with torch.no_grad():
                recon = self.module_.reconstruct(x)
            for i, image in zip(indices, self._to_images(batch, indices, recon)):
                maps[i] = _residual(self.residual, batch.images[i], image)
        return maps
