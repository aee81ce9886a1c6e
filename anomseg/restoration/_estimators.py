"""Estimators built on normative VAE/GMVAE priors: MAP restoration (You et
al. 2019) and the plain-reconstruction baseline."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from .._docstrings import fill_doc
from .._torch import TorchSegmenter, TrainingPlan, chunks, update
from ..utils._param_validation import (
    Interval,
    NumberSequence,
    StrOptions,
    validate_parameter_constraints,
)
from ._networks import ConvGMVAE, ConvVAE
from ._restore import map_restore, step_size_schedule

__all__ = [
    "DEFAULT_TV_WEIGHTS",
    "PUBLISHED_GMVAE",
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


class _NormativePriorEstimator(TorchSegmenter):
    """Training of a torch prior by its negative ELBO, with early stopping."""

    _module_class = ConvVAE
    _module_params = ("width", "latent_channels")

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
            for chunk in chunks(indices, self.inference_batch_size):
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

    _parameter_constraints: dict = {
        **_NormativePriorEstimator._parameter_constraints,
        "tv_weight": [StrOptions({"auto"}), Interval(Real, 0, None, closed="left")],
        "tv_weights": [NumberSequence(Interval(Real, 0, None, closed="left"))],
        "max_tv_images": [Interval(Integral, 1, None, closed="left")],
        "n_restoration_steps": [Interval(Integral, 1, None, closed="left")],
        "step_sizes": [NumberSequence(Interval(Real, 0, None, closed="neither"), length=2)],
        "step_size_switch": [Interval(Integral, 0, None, closed="left")],
        "gradient_clip": [Interval(Real, 0, None, closed="neither")],
    }

    # -- restoration ------------------------------------------------------------
    def _restore_slices(self, slices, tv_weights, record_steps=()):
        """Restored images of a 2D batch, each at its own TV weight, after
        ``n_restoration_steps`` and after each of ``record_steps``: a dict of
        step count to a list of images (H, W[, C])."""
        schedule = step_size_schedule(
            self.n_restoration_steps, self.step_sizes, self.step_size_switch
        )
        steps = sorted(set(record_steps) | {len(schedule)})
        out = {s: [None] * len(slices) for s in steps}
        weights = torch.as_tensor(np.asarray(tv_weights, dtype=np.float32))
        for indices in self._shape_groups(slices):
            y, m = self._tensors(slices, indices)
            final, recorded = map_restore(
                self.module_,
                y,
                m,
                weights[indices].to(self.device_),
                schedule,
                float(self.gradient_clip),
                record_steps,
            )
            recorded[len(schedule)] = final
            for s in steps:
                for i, image in zip(indices, self._to_images(slices, indices, recorded[s])):
                    out[s][i] = image
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
    def _healthy_change(self, slices, grid):
        """Mean absolute change per foreground pixel that restoration causes
        at each TV weight of ``grid``, and the restored images."""
        n, k = len(slices), len(grid)
        repeated = type(slices)(
            slices.images * k, slices.foreground * k, False, slices.channel_axis
        )
        [restored] = self._restore_slices(repeated, np.repeat(grid, n)).values()
        pixels = sum(int(fg.sum()) for fg in slices.foreground)
        change = np.empty(k)
        for j in range(k):
            total = 0.0
            for i in range(n):
                diff = slices.images[i] - restored[j * n + i]
                total += float(np.abs(diff[slices.foreground[i]]).sum())
            change[j] = total / max(pixels, 1)
        return change, restored

    def _tune(self, batch):
        if not (isinstance(self.tv_weight, str) and self.tv_weight == "auto"):
            self.tv_weight_ = float(self.tv_weight)
            return None
        # Evenly spaced images keep the choice deterministic and its cost
        # bounded; the mean change converges long before all are used.
        n = len(batch)
        chosen = np.unique(np.linspace(0, n - 1, min(n, self.max_tv_images)).round().astype(int))
        subset = batch.subset(chosen)
        grid = np.asarray(self.tv_weights, dtype=float).ravel()
        change, restored = self._healthy_change(subset, grid)
        best = int(np.argmin(change))
        self.tv_weights_ = grid
        self.healthy_change_ = change
        self.tv_weight_ = float(grid[best])
        self._log(
            "healthy change per TV weight: "
            + ", ".join(f"{w:g}: {c:.4g}" for w, c in zip(grid, change))
            + f"; chose {self.tv_weight_:g}"
        )
        if len(chosen) < n:
            return None
        images = restored[best * n : (best + 1) * n]
        return [_residual(self.residual, y, x) for y, x in zip(batch.images, images)]

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
            The restored images in the layout of ``X``, after
            ``n_restoration_steps`` steps; without ``record_steps`` only.
        recorded : dict of int to ndarray or list
            With ``record_steps``: the restored images after each of them
            and after ``n_restoration_steps``, keyed by step count.
        """
        check_is_fitted(self)
        self._validate_params()
        weight = self.tv_weight_ if tv_weight is None else tv_weight
        steps = () if record_steps is None else tuple(record_steps)
        validate_parameter_constraints(
            {
                "tv_weight": [Interval(Real, 0, None, closed="left")],
                "record_steps": [
                    None,
                    NumberSequence(Interval(Integral, 0, self.n_restoration_steps, closed="both")),
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
        return wrapped if record_steps is not None else wrapped[self.n_restoration_steps]

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
    %(torch_runtime)s
    %(max_fpr)s
    %(calibration_fraction)s
    %(random_state)s
    %(verbose)s
    %(channel_axis)s

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
        max_tv_images=16,
        n_restoration_steps=500,
        step_sizes=(5e-3, 2e-3),
        step_size_switch=100,
        gradient_clip=100.0,
        residual="absolute",
        inference_batch_size=64,
        device="auto",
        max_fpr=0.05,
        calibration_fraction=0.2,
        random_state=None,
        verbose=0,
        channel_axis=None,
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
        self.max_tv_images = max_tv_images
        self.n_restoration_steps = n_restoration_steps
        self.step_sizes = step_sizes
        self.step_size_switch = step_size_switch
        self.gradient_clip = gradient_clip
        self.residual = residual
        self.inference_batch_size = inference_batch_size
        self.device = device
        self.max_fpr = max_fpr
        self.calibration_fraction = calibration_fraction
        self.random_state = random_state
        self.verbose = verbose
        self.channel_axis = channel_axis


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
    %(torch_runtime)s
    %(max_fpr)s
    %(calibration_fraction)s
    %(random_state)s
    %(verbose)s
    %(channel_axis)s

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
        max_tv_images=16,
        n_restoration_steps=500,
        step_sizes=(5e-3, 2e-3),
        step_size_switch=100,
        gradient_clip=100.0,
        residual="absolute",
        inference_batch_size=64,
        device="auto",
        max_fpr=0.05,
        calibration_fraction=0.2,
        random_state=None,
        verbose=0,
        channel_axis=None,
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
        self.max_tv_images = max_tv_images
        self.n_restoration_steps = n_restoration_steps
        self.step_sizes = step_sizes
        self.step_size_switch = step_size_switch
        self.gradient_clip = gradient_clip
        self.residual = residual
        self.inference_batch_size = inference_batch_size
        self.device = device
        self.max_fpr = max_fpr
        self.calibration_fraction = calibration_fraction
        self.random_state = random_state
        self.verbose = verbose
        self.channel_axis = channel_axis

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
    "n_restoration_steps": 500,
    "step_sizes": (5e-3, 2e-3),
    "step_size_switch": 100,
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
    %(calibration_fraction)s
    %(random_state)s
    %(verbose)s
    %(channel_axis)s

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
        inference_batch_size=64,
        device="auto",
        max_fpr=0.05,
        calibration_fraction=0.2,
        random_state=None,
        verbose=0,
        channel_axis=None,
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
        self.calibration_fraction = calibration_fraction
        self.random_state = random_state
        self.verbose = verbose
        self.channel_axis = channel_axis

    def _score(self, batch):
        maps = [None] * len(batch)
        for indices in self._shape_groups(batch):
            x, _m = self._tensors(batch, indices)
            with torch.no_grad():
                recon = self.module_.reconstruct(x)
            for i, image in zip(indices, self._to_images(batch, indices, recon)):
                maps[i] = _residual(self.residual, batch.images[i], image)
        return maps
