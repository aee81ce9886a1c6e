"""The denoising autoencoder as an anomseg estimator (Kascenas et al., 2022)."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import torch
from scipy import ndimage
from skimage.exposure import equalize_hist

from .._docstrings import fill_doc
from .._torch import TorchSegmenter, TrainingPlan, chunks, update
from ..utils._param_validation import Interval, StrOptions
from ._networks import DenoisingUNet, coarse_noise

__all__ = ["DenoisingAESegmenter"]


#: Sides of the cropped windows are multiples of this (within the slice),
#: so that the network meets few shapes.
_WINDOW_MULTIPLE = 32


def _window(foreground, margin):
    """The window of a slice that the network sees: the bounding box of its
    foreground grown by ``margin``, each side rounded up to a multiple of
    ``_WINDOW_MULTIPLE`` (within the slice, centred); None without
    foreground."""
    window = []
    for axis in (0, 1):
        where = np.flatnonzero(foreground.any(axis=1 - axis))
        if where.size == 0:
            return None
        size = foreground.shape[axis]
        low, high = max(where[0] - margin, 0), min(where[-1] + 1 + margin, size)
        want = min(-(-(high - low) // _WINDOW_MULTIPLE) * _WINDOW_MULTIPLE, size)
        low = min(max(low - (want - (high - low)) // 2, 0), size - want)
        window.append(slice(int(low), int(low + want)))
    return tuple(window)


def _by_shape(batch, indices):
    """``indices`` grouped by their slices' shape, in order of first
    appearance (one group when the slices share a shape)."""
    groups = {}
    for i in indices:
        groups.setdefault(batch.foreground[i].shape, []).append(i)
    return [np.asarray(group) for group in groups.values()]


def _same_shape_batches(batch, indices, size, rng):
    """One epoch's mini-batches of ``indices``: shuffled, each of slices of
    one shape (so that no pixel is padding), in shuffled order."""
    groups = _by_shape(batch, indices)
    batches = [piece for group in groups for piece in chunks(rng.permutation(group), size)]
    if len(groups) == 1:
        return batches
    return [batches[k] for k in rng.permutation(len(batches))]


@fill_doc
class DenoisingAESegmenter(TorchSegmenter):
    """Anomaly segmentation by a denoising autoencoder.

    A U-Net learns, on healthy slices only, to remove coarse, spatially
    correlated Gaussian noise added inside the foreground. Faced with a
    lesion, it "denoises" it towards healthy anatomy, so the residual
    between a slice and its denoised version is the anomaly map. Scoring is
    one forward pass per slice. Kascenas et al. report it as one of the few
    learned methods that beat intensity thresholding on FLAIR.

    Parameters
    ----------
    width : int >= 1, default=8
        Channels of the U-Net at full resolution, doubling at each level
        (64 in the paper; 8 was measured on LGG FLAIR, see Notes).
    depth : int >= 2, default=4
        Resolution levels of the U-Net (4 in the paper). Slices are
        zero-padded to multiples of ``2**(depth - 1)``.
    noise_std : float > 0, default=0.2
        Standard deviation of the training noise (0.2 in the paper, for
        intensities scaled to about [0, 1]).
    noise_resolution : int >= 1, default=16
        Side of the grid of independent noise values, bilinearly upsampled
        to the slice (16 in the paper, for 128 x 128 slices): the noise is
        correlated over ``H / noise_resolution`` pixels, ``H`` the side of
        the largest training slice (cropped slices get the same correlation
        length, on a grid of their own size).
    n_epochs : int >= 1, default=20
        Most passes over the training slices (the learning rate reaches 0
        at the last).
    batch_size : int >= 1, default=16
        Slices per update.
    learning_rate : float > 0, default=1e-3
        Adam's step size (AMSGrad, weight decay 1e-5, as in the paper; which
        used 1e-4 for far more updates), annealed to 0 over ``n_epochs`` by
        a cosine schedule.
    validation_fraction : float in [0, 1), default=0.1
        Fraction of the training slices held out for early stopping on the
        denoising loss (with fixed noise); 0 keeps the last epoch.
    patience : int >= 1, default=10
        Epochs without a lower validation loss before training stops.
    residual : {"absolute", "positive"}, default="positive"
        The map is ``|X - f(X)|``, or with "positive" (the default, for
        hyper-intense lesions such as FLAIR's) only where the slice is
        brighter than its denoised version.
    median_size : int >= 1, default=5
        Side of the 2D median filter applied to the residual (5 in the
        paper; 1: none).
    edge_margin : int >= 0, default=2
        The map is 0 within this many pixels of the background, where the
        denoiser errs most (2 in the paper: its 5 x 5 erosion).
    crop_margin : int >= 0 or None, default=8
        The network sees each slice cropped to the bounding box of its
        foreground grown by this many pixels, its sides rounded up to
        multiples of 32 pixels (within the slice), in training and in
        scoring alike; None feeds whole slices, as the paper does. On brain
        MRI the brain's bounding box is a fifth to a quarter of a slice, so
        the network does several times less work, and learns no background
        (see Notes).
    intensity_prior : bool, default=False
        Multiply each map by its sample's histogram-equalised intensity
        inside the foreground (the map of
        :class:`~anomseg.baselines.FlairThreshold`; the first channel with a
        channel axis), the prior that lesions are bright in FLAIR. Each
        sample is equalised on its own: pass whole volumes, not slices, as
        the published baseline does.
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
    module_ : DenoisingUNet
        The trained network, in evaluation mode, on ``device_``.
    device_ : str
        The device ``device`` resolved to in ``fit``.
    history_ : list of dict
        One record per epoch: ``epoch``, ``train_loss`` and
        ``validation_loss`` (mean squared error per foreground pixel),
        ``learning_rate`` and ``seconds`` since training started.
    best_epoch_ : int
        The epoch whose weights were kept.
    n_epochs_ : int
        Epochs run before early stopping.
    training_time_ : float
        Seconds spent training.
    %(calibration_attributes)s

    See Also
    --------
    anomseg.baselines.FlairThreshold : The learning-free baseline it should
        beat.
    anomseg.restoration.VAEReconstructor : The reconstruction residual of a
        VAE, without noise.

    Notes
    -----
    Training follows the reference code (``AntanasKascenas/DenoisingAE``):
    the noise is added inside the foreground only, the loss is the squared
    error against the clean slice over the foreground, and the map is the
    channel-mean residual, median filtered, inside the eroded foreground.
    Deliberate differences: the default network is 8 times narrower, trained
    for tens of epochs with a higher learning rate rather than 67,000
    updates, so that it trains on a CPU; plain convolutions replace the
    weight-standardised ones; and the map is the positive residual by
    default (``residual="absolute"`` is the paper's).

    On LGG FLAIR inside the brain (``benchmarks/quality/bench_denoising.py``: 20
    validation patients, pooled over brain pixels, threshold at a healthy FPR
    of 5 %), width 8 and 20 epochs (24 minutes on one CPU thread) gave AUPRC
    0.622, best Dice 0.598 and per-patient Dice 0.597 with the positive
    residual, 0.565 / 0.575 / 0.524 with the absolute one and 0.648 / 0.623 /
    0.593 with ``intensity_prior=True``, against 0.532 / 0.566 / 0.518 for
    the FLAIR baseline on the same voxels (those runs fed whole slices).
    Through ``anomseg fit`` with the tumour slices of the 60 training
    patients excluded (``benchmarks/quality/bench_user_lgg.py``, seed 0), the
    default cropped windows gave AUPRC 0.663 and best Dice 0.637 against
    0.612 and 0.594 with ``crop_margin=None``. Timed side by side, cropped
    training took 0.84 times the wall time of whole slices (3 epochs, 10
    patients) and scoring through ``anomseg predict`` about the same.

    References
    ----------
    .. [1] A. Kascenas, N. Pugeault, A. Q. O'Neil. "Denoising autoencoders
       for unsupervised anomaly detection in brain MRI". MIDL 2022.

    Examples
    --------
    >>> from anomseg.datasets import make_healthy_images
    >>> from anomseg.denoising import DenoisingAESegmenter
    >>> X = make_healthy_images(n_images=16, shape=(32, 32), random_state=0)
    >>> est = DenoisingAESegmenter(width=4, depth=3, n_epochs=2,
    ...                            noise_resolution=4, random_state=0).fit(X)
    >>> est.score_samples(X[:2]).shape
    (2, 32, 32)
    """

    _module_class = DenoisingUNet
    _module_params = ("width", "depth")

    _fitted_attribute_constraints: dict = {
        **TorchSegmenter._fitted_attribute_constraints,
        "n_epochs_": [Interval(Integral, 1, None, closed="left")],
    }

    #: They shape the maps of the trained network, not the network.
    _calibration_params = TorchSegmenter._calibration_params | {
        "residual",
        "median_size",
        "edge_margin",
        "intensity_prior",
    }

    _parameter_constraints: dict = {
        **TorchSegmenter._parameter_constraints,
        "width": [Interval(Integral, 1, None, closed="left")],
        "depth": [Interval(Integral, 2, None, closed="left")],
        "noise_std": [Interval(Real, 0, None, closed="neither")],
        "noise_resolution": [Interval(Integral, 1, None, closed="left")],
        "n_epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "patience": [Interval(Integral, 1, None, closed="left")],
        "residual": [StrOptions({"absolute", "positive"})],
        "median_size": [Interval(Integral, 1, None, closed="left")],
        "edge_margin": [Interval(Integral, 0, None, closed="left")],
        "crop_margin": [None, Interval(Integral, 0, None, closed="left")],
        "intensity_prior": ["boolean"],
    }

    def __init__(
        self,
        *,
        width=8,
        depth=4,
        noise_std=0.2,
        noise_resolution=16,
        n_epochs=20,
        batch_size=16,
        learning_rate=1e-3,
        validation_fraction=0.1,
        patience=10,
        residual="positive",
        median_size=5,
        edge_margin=2,
        crop_margin=8,
        intensity_prior=False,
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
        self.depth = depth
        self.noise_std = noise_std
        self.noise_resolution = noise_resolution
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.residual = residual
        self.median_size = median_size
        self.edge_margin = edge_margin
        self.crop_margin = crop_margin
        self.intensity_prior = intensity_prior
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
    def _upgrade_params(cls, params):
        # Models saved before crop_margin existed saw whole slices.
        return {"crop_margin": None, **super()._upgrade_params(params)}

    # -- tensors ----------------------------------------------------------------
    def _cropped(self, batch):
        """The 2D ``batch`` as the network sees it: each slice cut to its
        window (see ``crop_margin``), and the windows, ``(rows, cols)``
        slices, None for slices without foreground (or all whole slices
        with ``crop_margin=None``)."""
        if self.crop_margin is None:
            return batch, [None] * len(batch)
        windows = [_window(fg, self.crop_margin) for fg in batch.foreground]
        images, foreground = [], []
        for image, fg, window in zip(batch.images, batch.foreground, windows):
            window = window or (slice(0, 1), slice(0, 1))
            images.append(image[window])
            foreground.append(fg[window])
        return batch.with_images(images, foreground, excluded=None), windows

    def _padded(self, batch, indices):
        """Images and foreground masks of ``indices``, zero-padded to the
        next multiple of the U-Net's total downsampling."""
        multiple = 2 ** (self.depth - 1)
        h = max(batch.foreground[i].shape[0] for i in indices)
        w = max(batch.foreground[i].shape[1] for i in indices)
        shape = (-(-h // multiple) * multiple, -(-w // multiple) * multiple)
        return self._tensors(batch, indices, shape)

    # -- training -----------------------------------------------------------------
    def _fit(self, batch):
        super()._fit(batch)
        self.n_epochs_ = len(self.history_)

    def _training_plan(self, batch, rng, generator):
        # Cropped slices get noise of the correlation length of whole ones.
        side = max(max(shape) for shape in batch.spatial_shapes)
        cell = None if self.crop_margin is None else side / self.noise_resolution
        batch, _ = self._cropped(batch)
        validation, train = self._validation_split(len(batch), rng)
        n_validation = len(validation)
        module = self._build_module()
        optimizer = torch.optim.Adam(
            module.parameters(), lr=self.learning_rate, amsgrad=True, weight_decay=1e-5
        )
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.n_epochs)
        # The validation noise is drawn once, so that the validation loss
        # compares epochs on the same task.
        validation_generator = torch.Generator(device=self.device_).manual_seed(
            int(rng.integers(2**62))
        )
        validation_chunks = [
            (indices, *self._noisy(batch, indices, validation_generator, cell))
            for group in _by_shape(batch, validation)
            for indices in chunks(group, self.inference_batch_size_)
        ]

        def step(indices):
            module.train()
            clean, noisy, mask = self._noisy(batch, indices, generator, cell)
            loss = ((module(noisy) - clean) ** 2 * mask).sum()
            pixels = mask.sum().clamp(min=1) * clean.shape[1]
            update(optimizer, loss / pixels)
            return {"train_loss": (float(loss.detach()), float(pixels))}

        def end_epoch(epoch, record):
            metrics = {"learning_rate": schedule.get_last_lr()[0]}
            schedule.step()
            if validation_chunks:
                module.eval()
                total, pixels = 0.0, 0.0
                with torch.no_grad():
                    for _indices, clean, noisy, mask in validation_chunks:
                        total += float(((module(noisy) - clean) ** 2 * mask).sum())
                        pixels += float(mask.sum()) * clean.shape[1]
                metrics["validation_loss"] = total / max(pixels, 1.0)
            return metrics

        return TrainingPlan(
            module=module,
            n_epochs=self.n_epochs,
            steps=lambda epoch: _same_shape_batches(batch, train, self.batch_size, rng),
            step=step,
            end_epoch=end_epoch,
            monitor="validation_loss" if n_validation else None,
            patience=self.patience if n_validation else None,
            optimizers=(optimizer,),
            schedulers=(schedule,),
        )

    def _noisy(self, batch, indices, generator, cell=None):
        """Clean slices, slices with coarse noise inside the foreground, and
        the foreground masks; the noise varies over ``cell`` pixels, or over
        ``1 / noise_resolution`` of the slice if None."""
        clean, mask = self._padded(batch, indices)
        grid = self.noise_resolution
        if cell is not None:
            grid = tuple(max(1, round(n / cell)) for n in clean.shape[-2:])
        noise = coarse_noise(clean.shape, grid, self.noise_std, generator)
        return clean, clean + noise * mask, mask

    # -- scoring ------------------------------------------------------------------
    @fill_doc
    def denoise(self, X):
        """The network's denoised version of images, ``f(X)``.

        Parameters
        ----------
        %(images)s

        Returns
        -------
        denoised : ndarray of float32 or list of ndarray
            In the layout of ``X``; 0 outside the foreground.
        """
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self)
        batch = self._validate_images(X, "denoise")
        slices = self._model_input(batch)
        cropped, windows = self._cropped(slices)
        out = [np.zeros_like(image) for image in slices.images]
        scored = [i for i, fg in enumerate(slices.foreground) if fg.any()]
        for indices in self._shape_groups(cropped.subset(scored)):
            indices = [scored[k] for k in indices]
            for i, image in zip(indices, self._denoised(cropped, indices)):
                out[i][windows[i] or (slice(None), slice(None))] = image
        return batch.wrap(batch.zero_background(self._from_model_output(batch, out)))

    def _denoised(self, batch, indices):
        x, _ = self._padded(batch, indices)
        with torch.no_grad():
            return self._to_images(batch, indices, self.module_(x))

    def _score_batch(self, batch, maps=None, method="score_samples"):
        maps = super()._score_batch(batch, maps, method)
        if not self.intensity_prior:
            return maps
        for image, fg, m in zip(batch.images, batch.foreground, maps):
            if fg.any():
                flair = image if batch.channel_axis is None else image[..., 0]
                m *= equalize_hist(flair, nbins=256, mask=fg).astype(np.float32)
        return maps

    def _score(self, batch):
        cropped, windows = self._cropped(batch)
        maps = [np.zeros(fg.shape, np.float32) for fg in batch.foreground]
        scored = [i for i, fg in enumerate(batch.foreground) if fg.any()]
        for indices in self._shape_groups(cropped.subset(scored)):
            indices = [scored[k] for k in indices]
            for i, denoised in zip(indices, self._denoised(cropped, indices)):
                window = windows[i] or (slice(None), slice(None))
                image = cropped.images[i]
                maps[i][window] = self._map(image, denoised, cropped.foreground[i])
        return maps

    def _map(self, image, denoised, foreground):
        diff = image - denoised
        diff = np.abs(diff) if self.residual == "absolute" else np.maximum(diff, 0)
        if diff.ndim == 3:  # channels last
            diff = diff.mean(axis=-1)
        diff = diff * foreground
        if self.median_size > 1:
            diff = ndimage.median_filter(diff, size=self.median_size, mode="constant")
        inside = foreground
        if self.edge_margin:
            inside = ndimage.binary_erosion(
                foreground, iterations=self.edge_margin, border_value=0
            )
        return (diff * inside).astype(np.float32)
