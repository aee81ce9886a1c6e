"""Sliding-window inpainting heatmaps (Nguyen et al. 2020) and their fast
approximation by a reconstruction-loss predictor (Mavropoulos 2021)."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from sklearn.utils.validation import check_is_fitted
from torch.nn import functional as F

from .. import distributed
from .._docstrings import fill_doc
from .._torch import TorchSegmenter, TrainingPlan, inference_chunks, update
from ..utils import check_generator
from ..utils._param_validation import FITTED_CONSTRAINTS, MAX_SIDE, Finite, Interval, StrOptions
from ._networks import InpaintingGenerator, LossPredictorNet, WindowDiscriminator
from ._windows import (
    default_stride,
    default_window_size,
    gather_patches,
    heatmap,
    perturb_windows,
    sample_windows,
    window_candidates,
    window_grid,
    window_mask,
)

__all__ = ["InpaintingLocalizer", "InpaintingLossPredictor"]

#: Records kept in ``history_`` over a training run.
_N_RECORDS = 20
#: Slices whose windows are gathered together when scoring; the windows are
#: then processed in chunks of ``inference_batch_size``.
_SLICES_PER_GROUP = 32
#: The predictor's sigmoid spans [0, LOSS_SCALE_FACTOR * q99] of the window
#: losses of healthy training windows: anomalies may exceed healthy losses
#: several times before the output saturates.
LOSS_SCALE_FACTOR = 4.0


def window_l1(prediction, patches, weight):
    """Per-patch mean absolute error (n,) over the pixels where ``weight``
    (n or 1, 1, S, S) is 1, averaged over channels."""
    error = (prediction - patches).abs() * weight
    return error.sum(dim=(1, 2, 3)) / (weight.sum(dim=(1, 2, 3)) * patches.shape[1])


class _WindowLocalizer(TorchSegmenter):
    """What both localisers share: the window geometry, padded slices, and
    the heatmap of per-window losses. Subclasses implement
    ``_window_losses(padded, slices, tops, lefts)``, the loss of each
    window of the slices held by a padded tensor."""

    _fitted_attribute_constraints: dict = {
        **TorchSegmenter._fitted_attribute_constraints,
        # Bounded: they size the padding of every slice scored.
        "window_size_": [Interval(Integral, 2, MAX_SIDE, closed="both")],
        "stride_": [Interval(Integral, 1, MAX_SIDE, closed="both")],
        "context_size_": [Interval(Integral, 4, MAX_SIDE, closed="both")],
        "min_foreground_": [Finite(0, 1, closed="right")],
    }

    def _check_fitted_state(self):
        super()._check_fitted_state()
        if not (self.stride_ <= self.window_size_ and self.context_size_ >= self.window_size_ + 2):
            raise ValueError(
                f"its window_size_ {self.window_size_}, stride_ {self.stride_} and "
                f"context_size_ {self.context_size_} are no geometry fit() sets"
            )

    def _margin(self):
        """Zero padding on every side of a slice so that every patch fits."""
        return self.context_size_

    def _slices_per_chunk(self):
        """Slices whose windows are scored together."""
        return _SLICES_PER_GROUP

    def _padded(self, batch, indices):
        x, fg = self._tensors(batch, indices)
        margin = self._margin()
        pad = (margin,) * 4
        return F.pad(x, pad), F.pad(fg, pad)

    def _score(self, batch):
        maps = [None] * len(batch)
        window, stride = self.window_size_, self.stride_
        for indices in self._shape_groups(batch, self._slices_per_chunk()):
            grids = [
                window_grid(batch.foreground[i], window, stride, self.min_foreground_)
                for i in indices
            ]
            where = [np.nonzero(valid) for valid, _ in grids]
            slices = np.concatenate([np.full(r.size, k) for k, (r, _) in enumerate(where)])
            tops = np.concatenate([r for r, _ in where]) * stride
            lefts = np.concatenate([c for _, c in where]) * stride
            losses = np.zeros(slices.size)
            if slices.size:
                padded = self._padded(batch, indices)
                with torch.no_grad():
                    losses = self._window_losses(padded, slices, tops, lefts)
            bounds = np.cumsum([0] + [r.size for r, _ in where])
            for k, i in enumerate(indices):
                valid = grids[k][0]
                grid = np.zeros(valid.shape)
                grid[valid] = losses[bounds[k] : bounds[k + 1]]
                maps[i] = heatmap(grid, valid, window, stride, batch.foreground[i].shape)
        return maps

    def _step_plan(self, module, step, optimizers, networks=()):
        """The plan of ``n_steps`` updates by ``step`` (with ``optimizers``),
        recorded in at most ``_N_RECORDS`` epochs of ``history_``, each
        saying its last update."""
        ends = [
            i
            for i in range(1, self.n_steps + 1)
            if i * _N_RECORDS // self.n_steps != (i - 1) * _N_RECORDS // self.n_steps
        ]
        epochs = [range(start + 1, end + 1) for start, end in zip([0, *ends], ends)]
        return TrainingPlan(
            module=module,
            n_epochs=len(epochs),
            steps=lambda epoch: epochs[epoch - 1],
            step=step,
            describe=lambda epoch: {"step": epochs[epoch - 1][-1]},
            networks=networks,
            optimizers=optimizers,
        )


@fill_doc
class InpaintingLocalizer(_WindowLocalizer):
    """Anomaly heatmaps from how badly a generator inpaints each window
    (Nguyen et al. 2020).

    A U-Net generator learns, on healthy slices, to fill a masked square
    window from the patch around it, with an L1 loss plus an adversarial
    term from a patch discriminator. To score a slice, the window slides
    over it with a stride; the generator fills each position, and the L1
    error on the window's foreground pixels is that position's loss. Each
    pixel's anomaly score is the mean loss of the windows that cover it:
    the generator reproduces healthy anatomy from its context, not a
    lesion.

    Window positions of many slices are inpainted together in batches of
    ``inference_batch_size``; positions with too little foreground are
    skipped.

    Parameters
    ----------
    window_size : "auto" or int >= 2, default="auto"
        Side in pixels of the square window that is masked and inpainted.
        "auto": 16 px for 256 x 256 slices (the papers' value), scaled with
        the side ``sqrt(H * W)`` of the largest training slice; 8 px at 128
        x 128.
    stride : "auto" or int >= 1, default="auto"
        Step between window positions when scoring, at most
        ``window_size``. "auto": a quarter of the window (4 px at 256 x
        256).
    context_size : "auto" or int, default="auto"
        Side of the patch around the window that the generator sees, at
        least ``window_size + 2``. "auto": 4 x ``window_size``.
    min_foreground : float in (0, 1], default=0.5
        Windows are trained on, and evaluated, only where at least this
        fraction of their pixels is foreground: never in the empty
        background, which teaches the generator to erase. 1 keeps them
        wholly inside the foreground, but then the rim of the foreground is
        covered by no window and scored 0.
    width : int >= 1, default=16
        Channels of the generator's first block (doubling at each of its
        three poolings) and of the discriminator's first convolution.
    adversarial_weight : float >= 0, default=0.01
        Weight of the adversarial term against the L1 term; 0 trains
        without the discriminator.
    n_steps : int >= 1, default=2000
        Mini-batch updates of the generator (and discriminator).
    batch_size : int >= 2, default=64
        Windows per update.
    learning_rate : float > 0, default=1e-3
        Adam's step size for both networks (betas 0.5 and 0.999).
    inference_batch_size : int >= 1 or "auto", default="auto"
        Window positions inpainted together when scoring; bounds memory.
        "auto" is 512 on the CPU and 4096 on a GPU.
    device : {"auto", "cpu", "cuda"}, default="auto"
        Where the networks run; "auto" picks CUDA when torch finds it. Maps
        are always returned as NumPy arrays.
    %(max_fpr)s
    %(smoothing)s
    %(postprocessing)s
    %(calibration_fraction)s
    %(random_state)s
    verbose : int >= 0, default=0
        Print the losses 20 times during training when positive.
    %(channel_axis)s
    %(callbacks)s
    %(precision)s

    Attributes
    ----------
    module_ : InpaintingGenerator
        The trained generator, in evaluation mode, on ``device_``. The
        discriminator is used in training only and is not kept.
    device_ : str
        The device ``device`` resolved to in ``fit``.
    window_size_, stride_, context_size_ : int
        The window geometry in pixels, "auto" resolved.
    min_foreground_ : float
        ``min_foreground``, as the predictor reads it.
    history_ : list of dict
        20 records over training, one per epoch of the shared training loop
        (``n_steps / 20`` updates): ``epoch``, ``step`` (the last update of
        the epoch), the mean ``l1_loss`` (on the window),
        ``adversarial_loss`` and ``discriminator_loss`` (binary
        cross-entropies) of its updates, and ``seconds`` since training
        started.
    n_training_windows_ : int
        Windows of the training slices that training drew from.
    training_time_ : float
        Seconds spent training.
    %(calibration_attributes)s

    See Also
    --------
    InpaintingLossPredictor : The same heatmap, predicted without the
        generator, many times faster.
    anomseg.baselines.FlairThreshold : The learning-free baseline.

    Notes
    -----
    Deliberate differences from the paper: the generator inpaints a patch of
    ``context_size`` around the window, not the whole slice, because only
    the window's loss is used and the cost of the sliding window grows with
    the patch area (16 times less work than whole 128 x 128 slices at the
    default geometry); batch norm rather than the paper's exact layers.

    References
    ----------
    .. [1] B. Nguyen, A. Feldman, S. Bethapudi, A. Jennings, C. G. Willcocks.
       "Unsupervised Region-based Anomaly Detection in Brain MRI with
       Adversarial Image Inpainting". ISBI 2021 (arXiv:2010.01942, 2020).

    Examples
    --------
    >>> from anomseg.datasets import make_healthy_images
    >>> from anomseg.inpainting import InpaintingLocalizer
    >>> X = make_healthy_images(n_images=12, shape=(32, 32), random_state=0)
    >>> est = InpaintingLocalizer(width=4, n_steps=5, random_state=0).fit(X)
    >>> est.window_size_, est.stride_, est.context_size_
    (2, 1, 8)
    >>> est.score_samples(X[:2]).shape
    (2, 32, 32)
    """

    _module_class = InpaintingGenerator
    _module_params = ("width",)
    _auto_inference_batch_size = {"cpu": 512, "cuda": 4096}  # window positions

    _fitted_attribute_constraints: dict = {
        **_WindowLocalizer._fitted_attribute_constraints,
        "n_training_windows_": [Interval(Integral, 0, None, closed="left")],
    }

    def __init__(
        self,
        *,
        window_size="auto",
        stride="auto",
        context_size="auto",
        min_foreground=0.5,
        width=16,
        adversarial_weight=0.01,
        n_steps=2000,
        batch_size=64,
        learning_rate=1e-3,
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
        self.window_size = window_size
        self.stride = stride
        self.context_size = context_size
        self.min_foreground = min_foreground
        self.width = width
        self.adversarial_weight = adversarial_weight
        self.n_steps = n_steps
        self.batch_size = batch_size
        self.learning_rate = learning_rate
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

    _parameter_constraints: dict = {
        **TorchSegmenter._parameter_constraints,
        "window_size": [StrOptions({"auto"}), Interval(Integral, 2, None, closed="left")],
        "stride": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "context_size": [StrOptions({"auto"}), Interval(Integral, 4, None, closed="left")],
        "min_foreground": [Interval(Real, 0, 1, closed="right")],
        "width": [Interval(Integral, 1, None, closed="left")],
        "adversarial_weight": [Interval(Real, 0, None, closed="left")],
        "n_steps": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 2, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
    }

    # -- parameters -------------------------------------------------------------
    def _set_geometry(self, batch):
        name = type(self).__name__
        shape = tuple(max(s[k] for s in batch.spatial_shapes) for k in (0, 1))
        window = default_window_size(shape) if self.window_size == "auto" else self.window_size
        stride = default_stride(window) if self.stride == "auto" else self.stride
        context = 4 * window if self.context_size == "auto" else self.context_size
        if stride > window:
            raise ValueError(
                f"The 'stride' parameter of {name} must be at most the window size, "
                f"{window}, so that windows cover every pixel. Got {stride} instead."
            )
        if context < window + 2:
            raise ValueError(
                f"The 'context_size' parameter of {name} must be at least the "
                f"window size plus 2, {window + 2}, to leave context around the "
                f"window. Got {context} instead."
            )
        self.window_size_, self.stride_, self.context_size_ = window, stride, context
        self.min_foreground_ = float(self.min_foreground)

    # -- fit ----------------------------------------------------------------------
    def _fit(self, batch):
        # From all the slices: under data parallelism, each process trains
        # on a shard of them.
        self._set_geometry(batch)
        candidates = window_candidates(batch.foreground, self.window_size_, self.min_foreground_)
        self.n_training_windows_ = int(candidates.size)
        super()._fit(batch)

    def _training_plan(self, batch, rng, generator):
        candidates = window_candidates(batch.foreground, self.window_size_, self.min_foreground_)
        inpainter = self._build_module()
        discriminator = WindowDiscriminator(self.n_channels_, self.width).to(self.device_)
        optimizers = {
            net: torch.optim.Adam(net.parameters(), lr=self.learning_rate, betas=(0.5, 0.999))
            for net in (inpainter, discriminator)
        }
        bce = F.binary_cross_entropy_with_logits
        mask = window_mask(self.context_size_, self.window_size_, self.device_)
        inpainter.train()
        discriminator.train()

        def step(_):
            slices, tops, lefts = sample_windows(candidates, self.batch_size, rng)
            # Only the drawn slices are padded, one copy per window: the
            # training slices are never all copied (nor all put on a GPU).
            padded = self._padded(batch, slices)
            x, fg = self._patches(padded, np.arange(len(slices)), tops, lefts)
            weight = mask * fg
            prediction = inpainter(x, mask)
            inpainted = x * (1 - mask) + prediction * weight
            l1 = window_l1(prediction, x, weight).mean()
            loss, d_loss, g_adv = l1, torch.zeros(()), torch.zeros(())
            if self.adversarial_weight > 0:
                real, fake = discriminator(x), discriminator(inpainted.detach())
                d_loss = bce(real, torch.ones_like(real)) + bce(fake, torch.zeros_like(fake))
                update(optimizers[discriminator], d_loss)
                fooled = discriminator(inpainted)
                g_adv = bce(fooled, torch.ones_like(fooled))
                loss = l1 + self.adversarial_weight * g_adv
            update(optimizers[inpainter], loss)
            return {
                "l1_loss": float(l1.detach()),
                "adversarial_loss": float(g_adv.detach()),
                "discriminator_loss": float(d_loss.detach()),
            }

        return self._step_plan(
            inpainter, step, tuple(optimizers.values()), networks=(discriminator,)
        )

    def _patches(self, padded, slices, tops, lefts):
        """Patches of the images and of their foreground around windows."""
        args = (slices, tops, lefts, self.context_size_, self.window_size_, self._margin())
        return tuple(gather_patches(t, *args) for t in padded)

    # -- maps ---------------------------------------------------------------------
    def window_losses(self, patches, foreground):
        """The generator's inpainting loss on the window at the centre of
        each of a batch of patches.

        The lower-level view of ``score_samples``, which cuts such patches
        around every window position of a slice. The window's pixels are
        masked and inpainted from the rest of the patch.

        Parameters
        ----------
        patches : torch.Tensor of shape (n, C, S, S)
            Image patches, 0 outside the foreground, with ``C`` the
            ``n_channels_`` and ``S`` the ``context_size_`` seen in ``fit``.
        foreground : torch.Tensor of shape (n, 1, S, S)
            Their foreground masks, 1 inside.

        Returns
        -------
        losses : ndarray of shape (n,)
            The mean absolute inpainting error over the foreground pixels of
            each window (NaN for a window without any), evaluated
            ``inference_batch_size`` patches at a time.
        """
        check_is_fitted(self, "module_")
        mask = window_mask(self.context_size_, self.window_size_, self.device_)
        patches, foreground = patches.to(self.device_), foreground.to(self.device_)
        out = np.empty(len(patches))
        with torch.no_grad():
            for part in inference_chunks(np.arange(len(patches)), self.inference_batch_size_):
                x = patches[part]
                loss = window_l1(self.module_(x, mask), x, mask * foreground[part])
                out[part] = loss.float().cpu().numpy()
        return out

    def _window_losses(self, padded, slices, tops, lefts):
        out = np.empty(len(slices))
        for part in inference_chunks(np.arange(len(slices)), self.inference_batch_size_):
            out[part] = self.window_losses(
                *self._patches(padded, slices[part], tops[part], lefts[part])
            )
        return out


@fill_doc
class InpaintingLossPredictor(_WindowLocalizer):
    """Inpainting heatmaps predicted by a small CNN, without the generator
    (Mavropoulos 2021).

    First an :class:`InpaintingLocalizer` is trained on the healthy slices
    (or a fitted one is reused). Then a small CNN learns, on windows of the
    same healthy slices, to predict from the image patch around a window
    the loss the generator makes when it inpaints that window. The
    generator is dropped after training: the heatmap needs only the
    predictor, and is assembled from the predicted window losses exactly as
    :class:`InpaintingLocalizer` assembles the real ones.

    The predictor has no padding, so it is evaluated on every window
    position of a slice in one convolutional pass (see
    :class:`LossPredictorNet`) instead of once per cut-out patch.

    Parameters
    ----------
    inpainter : InpaintingLocalizer or FrozenEstimator, default=None
        The inpainting model whose losses are learnt. An unfitted
        :class:`InpaintingLocalizer` is cloned and trained on the training
        slices with ``fit(..., calibrate=False)``, with this estimator's
        ``channel_axis``; None trains ``InpaintingLocalizer()`` with this
        estimator's ``device``, ``verbose`` and a seed drawn from
        ``random_state``. A fitted one
        wrapped in :class:`sklearn.frozen.FrozenEstimator` is used as it is,
        to compare both localisers on one generator; the frozen estimator,
        generator included, then stays referenced by this parameter.
    width : int >= 1, default=8
        Channels of the first convolution, doubling at each of the three
        blocks.
    perturbed_fraction : float in [0, 1], default=0.5
        Fraction of each training batch whose window gets a random
        Gaussian blob (brighter or darker, of random size and position)
        before both the generator's loss and the predictor's input are
        computed. Healthy windows alone only teach which healthy patterns
        the generator finds hard; perturbed ones teach that content at odds
        with its context makes the loss high, which is what a lesion does.
        0 trains on unaltered healthy windows, as the paper does.
    n_steps : int >= 1, default=1000
        Mini-batch updates of the predictor.
    batch_size : int >= 1, default=64
        Windows per update.
    learning_rate : float > 0, default=1e-3
        Adam's step size.
    inference_batch_size : int >= 1 or "auto", default="auto"
        Slices evaluated together when scoring; bounds memory. "auto" is 16
        on the CPU and 128 on a GPU.
    device : {"auto", "cpu", "cuda"}, default="auto"
        Where the predictor runs; "auto" picks CUDA when torch finds it.
        Maps are always returned as NumPy arrays.
    %(max_fpr)s
    %(smoothing)s
    %(postprocessing)s
    %(calibration_fraction)s
    %(random_state)s
    verbose : int >= 0, default=0
        Print the losses 20 times during training when positive.
    %(channel_axis)s
    %(callbacks)s
    %(precision)s

    Attributes
    ----------
    module_ : LossPredictorNet
        The trained predictor, in evaluation mode, on ``device_``.
    device_ : str
        The device ``device`` resolved to in ``fit``.
    window_size_, stride_, context_size_ : int
        The inpainter's window geometry.
    min_foreground_ : float
        The inpainter's ``min_foreground``.
    final_kernel_ : int
        Kernel of the predictor's last convolution, chosen so that its
        receptive field is close to ``context_size_``.
    receptive_field_ : int
        Side of the patch the predictor sees around each window.
    loss_scale_ : float
        Predicted losses are ``loss_scale_`` times the sigmoid output:
        4 times the 99th percentile of the generator's losses on unperturbed
        healthy training windows.
    history_ : list of dict
        20 records over training, as those of :class:`InpaintingLocalizer`:
        ``epoch``, ``step``, ``loss`` (mean squared error in units of
        ``loss_scale_``) and ``seconds`` since training started.
    generator_history_ : list of dict or None
        The inpainter's ``history_`` when it was trained here.
    training_time_ : float
        Seconds spent training the predictor (without the generator).
    %(calibration_attributes)s

    See Also
    --------
    InpaintingLocalizer : The exact heatmap.

    Notes
    -----
    The paper's predictor takes the image around a window, with the window
    where the generator would inpaint it. Here its input is the original
    patch, not an inpainted one, so that scoring needs no generator at all;
    its target is the generator's L1 loss on the window's foreground.
    Trained on unaltered healthy windows only (``perturbed_fraction=0``),
    it can only learn which healthy patterns the generator finds hard, and
    on toy data it then predicts *low* losses over inserted lesions; the
    perturbed windows are an addition of anomseg's to teach it otherwise.
    ``benchmarks/quality/bench_inpainting.py`` measures both on LGG FLAIR.

    References
    ----------
    .. [1] A. Mavropoulos. "Fast anomaly localization in brain MRI by
       predicting the inpainting loss". Master's thesis, 2021.

    Examples
    --------
    >>> from anomseg.datasets import make_healthy_images
    >>> from anomseg.inpainting import InpaintingLocalizer, InpaintingLossPredictor
    >>> X = make_healthy_images(n_images=12, shape=(32, 32), random_state=0)
    >>> inpainter = InpaintingLocalizer(width=4, n_steps=5)
    >>> est = InpaintingLossPredictor(inpainter, width=4, n_steps=5,
    ...                               random_state=0).fit(X)
    >>> est.score_samples(X[:2]).shape
    (2, 32, 32)
    """

    _module_class = LossPredictorNet
    _module_params = ("width",)
    _auto_inference_batch_size = {"cpu": 16, "cuda": 128}

    _fitted_attribute_constraints: dict = {
        **_WindowLocalizer._fitted_attribute_constraints,
        "generator_history_": [None, *FITTED_CONSTRAINTS["history"]],
        "final_kernel_": [Interval(Integral, 1, MAX_SIDE, closed="both")],
        "receptive_field_": [Interval(Integral, 1, MAX_SIDE, closed="both")],
        "loss_scale_": [Finite(0, None, closed="neither")],
    }

    def __init__(
        self,
        inpainter=None,
        *,
        width=8,
        perturbed_fraction=0.5,
        n_steps=1000,
        batch_size=64,
        learning_rate=1e-3,
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
        self.inpainter = inpainter
        self.width = width
        self.perturbed_fraction = perturbed_fraction
        self.n_steps = n_steps
        self.batch_size = batch_size
        self.learning_rate = learning_rate
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

    _parameter_constraints: dict = {
        **TorchSegmenter._parameter_constraints,
        "inpainter": [None, InpaintingLocalizer, FrozenEstimator],
        "width": [Interval(Integral, 1, None, closed="left")],
        "perturbed_fraction": [Interval(Real, 0, 1, closed="both")],
        "n_steps": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
    }

    def _check_fitted_state(self):
        super()._check_fitted_state()
        # What _training_plan derives from context_size_, and the padding
        # of every slice scored: nothing else is a model fit() makes.
        kernel = LossPredictorNet.kernel_for(self.context_size_)
        with torch.device("meta"):
            field = LossPredictorNet(self.n_channels_, 1, final_kernel=kernel).receptive_field
        if (self.final_kernel_, self.receptive_field_) != (kernel, field):
            raise ValueError(
                f"its final_kernel_ {self.final_kernel_} and receptive_field_ "
                f"{self.receptive_field_} are not those of its context_size_ "
                f"{self.context_size_} ({kernel} and {field})"
            )

    def _check_params(self):
        if isinstance(self.inpainter, FrozenEstimator) and not isinstance(
            self.inpainter.estimator, InpaintingLocalizer
        ):
            raise TypeError(
                f"The 'inpainter' parameter of {type(self).__name__} must wrap an "
                "InpaintingLocalizer when it is a FrozenEstimator. Got a "
                f"FrozenEstimator of {type(self.inpainter.estimator).__name__} instead."
            )

    def _margin(self):
        return max(self.context_size_, self.receptive_field_)

    def _slices_per_chunk(self):
        return self.inference_batch_size_

    # -- fit ----------------------------------------------------------------------
    def _trained_inpainter(self, batch):
        name = type(self).__name__
        if isinstance(self.inpainter, FrozenEstimator):
            inpainter = self.inpainter.estimator
            check_is_fitted(inpainter, "module_")
            if inpainter.n_channels_ != self.n_channels_:
                raise ValueError(
                    f"The frozen 'inpainter' of {name} was fitted on "
                    f"{inpainter.n_channels_} channel(s), X has {self.n_channels_}."
                )
            self.generator_history_ = None
            return inpainter
        if self.inpainter is None:
            seed = None
            if self.random_state is not None:
                seed = int(check_generator(self.random_state).integers(2**31 - 1))
            inpainter = InpaintingLocalizer(
                device=self.device, random_state=seed, verbose=self.verbose
            )
        else:
            inpainter = clone(self.inpainter)
        inpainter.set_params(channel_axis=self.channel_axis)
        inpainter.fit(batch, calibrate=False)
        self.generator_history_ = inpainter.history_
        return inpainter

    def _fit(self, batch):
        super()._fit(batch, inpainter=self._trained_inpainter(batch))

    def _new_module(self):
        return LossPredictorNet(self.n_channels_, self.width, final_kernel=self.final_kernel_)

    def _training_plan(self, batch, rng, generator, inpainter):
        for attribute in ("window_size_", "stride_", "context_size_", "min_foreground_"):
            setattr(self, attribute, getattr(inpainter, attribute))
        self.final_kernel_ = LossPredictorNet.kernel_for(self.context_size_)
        predictor = self._build_module()
        self.receptive_field_ = predictor.receptive_field
        candidates = window_candidates(batch.foreground, self.window_size_, self.min_foreground_)
        n_perturbed = round(self.perturbed_fraction * self.batch_size)
        local = np.arange(self.batch_size)

        def patches(x, tops, lefts, size):
            return gather_patches(x, local, tops, lefts, size, self.window_size_, self._margin())

        def draw():
            """Patches around a batch of windows, some perturbed, and the
            inpainter's losses on them."""
            slices, tops, lefts = sample_windows(candidates, self.batch_size, rng)
            x, fg = self._padded(batch, slices)  # the drawn slices only
            if n_perturbed:
                perturb_windows(
                    x[:n_perturbed],
                    fg[:n_perturbed],
                    tops[:n_perturbed],
                    lefts[:n_perturbed],
                    self.window_size_,
                    self._margin(),
                    rng,
                )
            size = inpainter.context_size_
            target = inpainter.window_losses(
                patches(x, tops, lefts, size), patches(fg, tops, lefts, size)
            )
            return (
                patches(x, tops, lefts, self.receptive_field_),
                torch.as_tensor(target, dtype=torch.float32, device=self.device_),
            )

        first = [draw() for _ in range(max(1, 2048 // self.batch_size))]
        healthy = torch.cat([t[n_perturbed:] for _, t in first]).cpu().numpy()
        if healthy.size == 0:  # every window perturbed
            healthy = torch.cat([t for _, t in first]).cpu().numpy()
        # The same scale on every process, from the windows of all of them.
        healthy = np.concatenate(distributed.all_gather_object(healthy))
        self.loss_scale_ = LOSS_SCALE_FACTOR * max(float(np.percentile(healthy, 99)), 1e-6)
        optimizer = torch.optim.Adam(predictor.parameters(), lr=self.learning_rate)
        predictor.train()

        def step(index):
            x, target = first[index - 1] if index <= len(first) else draw()
            scaled = (target / self.loss_scale_).clamp(max=1.0)
            loss = (predictor(x) - scaled).pow(2).mean()
            update(optimizer, loss)
            return {"loss": float(loss.detach())}

        return self._step_plan(predictor, step, (optimizer,))

    # -- maps ---------------------------------------------------------------------
    def _window_losses(self, padded, slices, tops, lefts):
        dense = self.module_.dense(padded[0].to(self.device_))
        offset = self._margin() - (self.receptive_field_ - self.window_size_) // 2
        index = [
            torch.as_tensor(a, device=dense.device)
            for a in (slices, tops + offset, lefts + offset)
        ]
        return (dense[index[0], index[1], index[2]] * self.loss_scale_).float().cpu().numpy()
