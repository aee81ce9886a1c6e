"""ASC-Net as an anomseg estimator (Dey and Hong, 2021)."""

from __future__ import annotations

import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from .._docstrings import fill_doc
from .._torch import TorchSegmenter, TrainingPlan, update
from ..exceptions import AnomsegWarning
from ..postprocessing import binary_closing, binary_opening
from ..utils import ImageBatch
from ..utils._param_validation import ArrayOf, Finite, Interval, Record, StrOptions
from ..utils._values import ValueStore
from ._histogram import peak_threshold, stored_histogram
from ._networks import ASCNetModule, CutDiscriminator, soft_dice

__all__ = ["ASCNetSegmenter"]

#: Values of ``y`` in ``fit``: 0 marks a reference (normal) image; -1
#: (scikit-learn's mark of an unlabelled sample) or 1 (known abnormal) an
#: image of the unlabelled input set.
_REFERENCE, _UNLABELLED = (0,), (-1, 1)


@fill_doc
class ASCNetSegmenter(TorchSegmenter):
    """Anomaly segmentation by adversarial selective cutting (ASC-Net).

    A U-Net with one encoder and two decoders splits each image into two
    "cuts": a fence cut ``I_fc``, which a discriminator must find
    indistinguishable from a reference set of normal images, and a wild cut
    ``I_wc``, which holds what the reference does not explain. A soft Dice
    loss keeps the cuts disjoint, and a 1x1 convolution recombines them into
    ``I_ro``, trained to reproduce the input. ``I_ro`` ends up with
    well-separated histogram peaks, one of which is the anomaly.

    ASC-Net learns from two sets: the **reference** images (normal anatomy,
    the ``X`` of ``fit``) and an **unlabelled input set** that may contain
    anomalies (``X_unlabelled``, or images of ``X`` marked by ``y``). The
    cuts are learnt on the input set: its anomalies are what the
    discriminator teaches the network to move into the wild cut. Without an
    input set, the network trains on the reference alone; the
    discriminator then never sees an anomaly, nothing teaches the wild cut
    to take one, so expect much weaker maps (``benchmarks/quality/bench_ascnet.py
    --reference-only`` measures it).

    Parameters
    ----------
    width : int >= 1, default=8
        Channels of the first encoder block (doubling at each of the four
        poolings, 16 x ``width`` in the transition); the paper uses 32.
    n_stage1_cycles : int >= 0, default=20
        Cycles of stage 1: each trains the discriminator for
        ``discriminator_steps`` mini-batches (reference images are real,
        fence cuts of the input set fake), then the main module for
        ``generator_steps`` with the discriminator frozen.
    n_stage2_cycles : int >= 0, default=10
        Cycles of stage 2, in which the fence cuts of the reference images
        also count as real for the discriminator.
    discriminator_steps : int >= 1, default=5
        Mini-batch updates of the discriminator per cycle.
    generator_steps : int >= 1, default=30
        Mini-batch updates of the main module per cycle.
    batch_size : int >= 2, default=16
        Images per update; a discriminator batch is half real, half fake.
    learning_rate : float > 0, default=1e-3
        Adam's step size for both networks (5e-5 in the reference code).
    anomaly_map : {"reconstruction", "wild-cut"}, default="reconstruction"
        The map of ``score_samples``: the reconstruction ``I_ro``, which the
        authors threshold, or the wild cut ``I_wc``; averaged over channels.
    anomaly_peak : {"right", "left"}, default="right"
        Which end of ``I_ro``'s histogram is the anomaly. With "left" the
        map is ``1 - I_ro``, so that higher is always more anomalous. Not
        used with ``anomaly_map="wild-cut"``.
    threshold_method : {"fpr", "histogram-peak"}, default="fpr"
        How ``threshold_`` is chosen: at ``max_fpr`` on held-out reference
        images (the anomseg contract), or by the paper's rule, the valley
        that isolates the rightmost peak of the map's histogram over the
        training input set (:func:`histogram_peak_threshold`). Both are
        always computed and stored.
    histogram_bins : int >= 3, default=256
        Bins of that histogram.
    opening_radius : int >= 0, default=0
        Radius of a 2D morphological opening of each predicted slice mask
        (0: none), which removes specks.
    closing_radius : int >= 0, default=0
        Radius of the 2D closing that follows, which fills small holes.
    %(torch_runtime)s
    %(max_fpr)s
    %(smoothing)s
    %(postprocessing)s
    %(calibration_fraction)s
    %(random_state)s
    verbose : int >= 0, default=0
        Report the losses of every cycle when positive (through
        :mod:`logging`, see :mod:`anomseg.utils._logging`).
    %(channel_axis)s
    %(callbacks)s
    %(precision)s

    Attributes
    ----------
    module_ : ASCNetModule
        The trained main module, in evaluation mode, on ``device_``. The
        discriminator is used in training only and is not kept.
    device_ : str
        The device ``device`` resolved to in ``fit``.
    history_ : list of dict
        One record per cycle (an epoch of the shared training loop):
        ``epoch`` (the cycle, from 1), ``stage``, the mean losses of its
        updates (``discriminator_loss``, ``fence_loss``, ``disjoint_loss``,
        ``reconstruction_loss``), ``discriminator_accuracy`` (the fraction
        of its training images whose output had the target's sign) and
        ``seconds`` since training started.
    n_reference_ : int
        Reference slices trained on (after the calibration hold-out).
    n_unlabelled_ : int
        Slices of the unlabelled input set (0: trained on the reference
        alone).
    training_time_ : float
        Seconds spent training.
    histogram_threshold_ : float
        The histogram-peak threshold, chosen on the maps of the input set
        (of the reference training slices without one).
    histogram_ : dict
        Its histogram: ``counts``, ``edges``, ``smoothed`` and ``peaks``.
    fpr_threshold_ : float
        The threshold at ``max_fpr`` on the calibration images.
    %(calibration_attributes)s

    See Also
    --------
    histogram_peak_threshold : The paper's threshold rule.
    anomseg.baselines.FlairThreshold : The learning-free baseline.

    Notes
    -----
    Training follows the reference code (``raun1/ASC-NET``): the main
    module's loss is ``mean|D(I_fc) - 1| + Dice(I_fc, I_wc) + MSE(X, I_ro)``
    with equal weights, the discriminator's ``mean|D(x) - t|`` with
    ``t = +1`` for real and ``-1`` for fake images. Deliberate differences:
    cycles have a fixed number of updates (the reference trained by hand,
    typing epoch counts at a prompt); the discriminator is kept across
    cycles rather than rebuilt before each; real and fake images are mixed
    in every discriminator batch, as the reference's shuffled set mixes
    them. Dropout and batch norm make training random: it is seeded from
    ``random_state`` inside :func:`torch.random.fork_rng`, so global state
    is untouched, and results are reproducible on the CPU.

    The 2D discriminator ends in a dense layer, so all training slices are
    zero-padded to their largest height and width; scoring works at any
    size.

    Adversarial training is sensitive to the floating-point path: on toy
    images with inserted blobs, trained for 20 to 40 cycles, the wild cut
    isolated the blobs in about half of the runs over seeds and thread
    counts (``tests/adversarial/test_estimators.py`` says what it did
    reliably). Compare several seeds before trusting one model.

    References
    ----------
    .. [1] R. Dey, Y. Hong. "ASC-Net: Adversarial-based Selective Network
       for Unsupervised Anomaly Segmentation". MICCAI 2021.

    Examples
    --------
    >>> from anomseg.datasets import make_healthy_images
    >>> from anomseg.adversarial import ASCNetSegmenter
    >>> X = make_healthy_images(n_images=16, shape=(32, 32), random_state=0)
    >>> est = ASCNetSegmenter(width=4, n_stage1_cycles=2, n_stage2_cycles=1,
    ...                       discriminator_steps=2, generator_steps=2,
    ...                       batch_size=4, random_state=0)
    >>> est = est.fit(X[:12], X_unlabelled=X[12:])
    >>> est.score_samples(X[:2]).shape
    (2, 32, 32)
    """

    _module_class = ASCNetModule
    _module_params = ("width",)

    _fitted_attribute_constraints: dict = {
        **TorchSegmenter._fitted_attribute_constraints,
        "n_reference_": [Interval(Integral, 0, None, closed="left")],
        "n_unlabelled_": [Interval(Integral, 0, None, closed="left")],
        "histogram_threshold_": [Finite()],
        "histogram_": [
            Record(
                {
                    "counts": [ArrayOf("iu", 1)],
                    "edges": [ArrayOf("f", 1)],
                    "smoothed": [ArrayOf("f", 1)],
                    "peaks": [ArrayOf("fiu", 1)],
                }
            )
        ],
        "fpr_threshold_": [Finite()],
    }

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.anomaly_tags.learns_from_unlabelled = True
        return tags

    def __init__(
        self,
        *,
        width=8,
        n_stage1_cycles=20,
        n_stage2_cycles=10,
        discriminator_steps=5,
        generator_steps=30,
        batch_size=16,
        learning_rate=1e-3,
        anomaly_map="reconstruction",
        anomaly_peak="right",
        threshold_method="fpr",
        histogram_bins=256,
        opening_radius=0,
        closing_radius=0,
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
        self.n_stage1_cycles = n_stage1_cycles
        self.n_stage2_cycles = n_stage2_cycles
        self.discriminator_steps = discriminator_steps
        self.generator_steps = generator_steps
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.anomaly_map = anomaly_map
        self.anomaly_peak = anomaly_peak
        self.threshold_method = threshold_method
        self.histogram_bins = histogram_bins
        self.opening_radius = opening_radius
        self.closing_radius = closing_radius
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
        "width": [Interval(Integral, 1, None, closed="left")],
        "n_stage1_cycles": [Interval(Integral, 0, None, closed="left")],
        "n_stage2_cycles": [Interval(Integral, 0, None, closed="left")],
        "discriminator_steps": [Interval(Integral, 1, None, closed="left")],
        "generator_steps": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 2, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "anomaly_map": [StrOptions({"reconstruction", "wild-cut"})],
        "anomaly_peak": [StrOptions({"right", "left"})],
        "threshold_method": [StrOptions({"fpr", "histogram-peak"})],
        "histogram_bins": [Interval(Integral, 3, None, closed="left")],
        "opening_radius": [Interval(Integral, 0, None, closed="left")],
        "closing_radius": [Interval(Integral, 0, None, closed="left")],
    }

    def _check_params(self):
        if self.n_stage1_cycles + self.n_stage2_cycles == 0:
            raise ValueError(
                f"The 'n_stage1_cycles' and 'n_stage2_cycles' parameters of "
                f"{type(self).__name__} are both 0; at least one training cycle is needed."
            )

    # -- fit ----------------------------------------------------------------------
    def fit(self, X, y=None, groups=None, *, exclude=None, calibrate=True, X_unlabelled=None):
        """Train on reference images and an unlabelled input set, then
        calibrate the threshold.

        Parameters
        ----------
        X : array-like or list
            Images, in any layout of :mod:`anomseg.utils`: the reference
            (normal) images, plus, where ``y`` marks them, images of the
            unlabelled input set.
        y : array-like of shape (n_samples,), default=None
            Which images of ``X`` are reference: 0 for reference, -1
            (scikit-learn's mark of an unlabelled sample) or 1 (known
            abnormal; ASC-Net does not use the label) for the input set.
            None: all of ``X`` is reference. Marking with ``y`` is the way
            to fit in a :class:`~sklearn.pipeline.Pipeline`, because the
            pipeline's transformers then process both sets.
        groups : array-like of shape (n_samples,), default=None
            Group label (such as the patient) of each sample of ``X``;
            calibration images are held out from the reference by whole
            groups.
        exclude : list or LesionExclusion, default=None
            Voxels of the reference images to neither train nor calibrate
            on (see :meth:`~anomseg.base.BaseAnomalySegmenter.fit`); None
            for the unlabelled ones, which are learnt from whole.
        calibrate : bool, default=True
            Whether to hold out reference images and calibrate
            ``threshold_`` on them (see
            :meth:`~anomseg.base.BaseAnomalySegmenter.fit`).
        X_unlabelled : array-like or list, default=None
            More images of the input set, in the channel layout of ``X``.
            A pipeline does not transform this argument: prefer ``y`` there.

        Returns
        -------
        self : object
        """
        return super().fit(
            X, y, groups, exclude=exclude, calibrate=calibrate, X_unlabelled=X_unlabelled
        )

    def _fit_inputs(self, batch, y, groups, X_unlabelled=None):
        is_reference = self._reference_mask(y, len(batch))
        if batch.excluded is not None and any(
            batch.excluded[i].any() for i in np.flatnonzero(~is_reference)
        ):
            raise ValueError(
                f"'exclude' passed to {type(self).__name__}.fit marks voxels of "
                "unlabelled samples (y = -1), which are learnt from whole; exclude "
                "voxels of the reference samples (y = 0) only."
            )
        parts = [batch.subset(np.flatnonzero(~is_reference)).with_excluded(None)]
        if X_unlabelled is not None:
            parts.append(self._validate_images(X_unlabelled, "fit"))
        unlabelled = ImageBatch([], [], False, batch.channel_axis)
        for part in parts:
            if len(part):
                unlabelled = unlabelled.concatenate(self._model_input(part))
        if groups is not None:
            groups = np.asarray(groups)
            if groups.shape != (len(batch),):
                raise ValueError(
                    f"'groups' passed to {type(self).__name__}.fit must have "
                    f"one label per sample of X, shape ({len(batch)},); got "
                    f"shape {groups.shape}."
                )
            groups = groups[is_reference]
        reference = batch.subset(np.flatnonzero(is_reference))
        return reference, groups, {"unlabelled": unlabelled}

    def _reference_mask(self, y, n):
        name = type(self).__name__
        if y is None:
            return np.ones(n, dtype=bool)
        y = np.asarray(y)
        allowed = _REFERENCE + _UNLABELLED
        if y.shape != (n,) or y.dtype.kind not in "iub" or not np.isin(y, allowed).all():
            raise ValueError(
                f"'y' passed to {name}.fit must mark each of the {n} samples "
                "of X as reference (0) or unlabelled (-1 or 1), an integer "
                f"array of shape ({n},); got {y.dtype} values of shape "
                f"{y.shape}: {np.unique(y)[:5]!r}."
            )
        return np.isin(y, _REFERENCE)

    def _fit(self, batch, unlabelled):
        # The discriminator's input shape, from all the slices (under data
        # parallelism, each process trains on a shard of them).
        everything = batch.concatenate(unlabelled)
        shape = tuple(max(s[k] for s in everything.spatial_shapes) for k in (0, 1))
        super()._fit(batch, unlabelled=unlabelled, shape=shape)
        self.n_reference_ = len(batch)
        self.n_unlabelled_ = len(unlabelled)
        self._set_histogram_threshold(unlabelled if len(unlabelled) else batch)
        self._log(
            f"trained in {self.training_time_:.1f} s; histogram-peak threshold "
            f"{self.histogram_threshold_:.4g}"
        )

    def _training_plan(self, batch, rng, generator, unlabelled, shape):
        """Cycles of the two stages; each cycle is ``discriminator_steps``
        updates of the discriminator, then ``generator_steps`` of the main
        module. Slices are zero-padded to ``shape``."""
        inputs = unlabelled if len(unlabelled) else batch
        module = self._build_module()
        discriminator = CutDiscriminator(self.n_channels_, self.width, shape).to(self.device_)
        optimizers = {
            "main": torch.optim.Adam(module.parameters(), lr=self.learning_rate),
            "discriminator": torch.optim.Adam(discriminator.parameters(), lr=self.learning_rate),
        }
        stages = [1] * self.n_stage1_cycles + [2] * self.n_stage2_cycles

        def sample(source, n):
            indices = rng.choice(len(source), size=n, replace=n > len(source))
            return self._tensors(source, indices, shape)[0]

        def fence_cuts(x):
            module.eval()
            with torch.no_grad():
                return module(x)[0]

        def discriminator_step(stage):
            discriminator.train().requires_grad_(True)
            half = self.batch_size // 2
            real = sample(batch, self.batch_size - half)
            if stage == 2:  # the fence cuts of half the real images are real too
                k = real.shape[0] // 2
                real = torch.cat([real[:k], fence_cuts(real[k:])])
            fake = fence_cuts(sample(inputs, half))
            x = torch.cat([real, fake])
            target = torch.cat([x.new_ones(real.shape[0]), -x.new_ones(half)])
            permutation = torch.from_numpy(rng.permutation(x.shape[0])).to(x.device)
            x, target = x[permutation], target[permutation]
            output = discriminator(x)
            loss = (output - target).abs().mean()
            update(optimizers["discriminator"], loss)
            correct = int((torch.sign(output.detach()) == target).sum())
            return {
                "discriminator_loss": float(loss.detach()),
                "discriminator_accuracy": (correct, x.shape[0]),
            }

        def main_step():
            # As in the reference (Keras 2.2), the frozen discriminator keeps
            # normalising with batch statistics: in evaluation mode its
            # running statistics, from mixed real and fake batches, saturate
            # its tanh on an all-fake batch, and the main module gets no
            # gradient.
            discriminator.train().requires_grad_(False)
            module.train()
            x = sample(inputs, self.batch_size)
            fence, wild, reconstruction = module(x)
            terms = {
                "fence_loss": (discriminator(fence) - 1).abs().mean(),
                "disjoint_loss": soft_dice(fence, wild).mean(),
                "reconstruction_loss": (reconstruction - x).pow(2).mean(),
            }
            update(optimizers["main"], sum(terms.values()))
            return {key: float(value.detach()) for key, value in terms.items()}

        def steps(epoch):
            stage = stages[epoch - 1]
            return [stage] * self.discriminator_steps + [None] * self.generator_steps

        return TrainingPlan(
            module=module,
            n_epochs=len(stages),
            steps=steps,
            step=lambda stage: main_step() if stage is None else discriminator_step(stage),
            describe=lambda epoch: {"stage": stages[epoch - 1]},
            networks=(discriminator,),
            optimizers=tuple(optimizers.values()),
        )

    # -- maps ----------------------------------------------------------------------
    def _cut_slices(self, batch):
        """The fence cut, wild cut and reconstruction of each slice of a 2D
        batch, as three lists of images (H, W[, C])."""
        out = [[None] * len(batch) for _ in range(3)]
        for indices in self._shape_groups(batch):
            x, _ = self._tensors(batch, indices)
            with torch.no_grad():
                cuts = self.module_(x)
            for images, tensor in zip(out, cuts):
                for i, image in zip(indices, self._to_images(batch, indices, tensor)):
                    images[i] = image
        return out

    def _maps_of_cuts(self, wild, reconstruction):
        source = wild if self.anomaly_map == "wild-cut" else reconstruction
        maps = [m.mean(axis=-1) if m.ndim == 3 else m for m in source]
        if self.anomaly_map == "reconstruction" and self.anomaly_peak == "left":
            maps = [1 - m for m in maps]
        return maps

    def _score(self, batch):
        _, wild, reconstruction = self._cut_slices(batch)
        return self._maps_of_cuts(wild, reconstruction)

    def cuts(self, X):
        """The two cuts and the reconstruction of images.

        Parameters
        ----------
        X : array-like or list
            Images, in the layout seen in ``fit``.

        Returns
        -------
        cuts : dict
            ``"fence"`` (``I_fc``), ``"wild"`` (``I_wc``) and
            ``"reconstruction"`` (``I_ro``), each in the layout of ``X``,
            with values in (0, 1) (0 outside the foreground).
        """
        check_is_fitted(self)
        batch = self._validate_images(X, "cuts")
        slices = self._model_input(batch)
        out = {}
        for key, images in zip(("fence", "wild", "reconstruction"), self._cut_slices(slices)):
            out[key] = batch.wrap(batch.zero_background(self._from_model_output(batch, images)))
        return out

    # -- thresholds -----------------------------------------------------------------
    def _set_histogram_threshold(self, batch):
        with ValueStore() as values:
            self._foreground_values(batch, values)
            counts, edges, extent = stored_histogram(values, self.histogram_bins)
        with warnings.catch_warnings():  # said below, and only if it matters
            warnings.simplefilter("ignore", AnomsegWarning)
            self.histogram_threshold_, self.histogram_ = peak_threshold(
                counts, edges, extent, return_histogram=True
            )
        if self.threshold_method == "histogram-peak" and len(self.histogram_["peaks"]) < 2:
            warnings.warn(
                f"[{type(self).__name__}.fit] The histogram of the maps of the "
                "training input set has a single peak, so the histogram-peak "
                "threshold flags nothing; train longer, pass unlabelled images "
                "that hold anomalies, or use threshold_method='fpr'.",
                AnomsegWarning,
                stacklevel=3,
            )

    def _select_threshold(self):
        self.fpr_threshold_ = super()._select_threshold()
        if self.threshold_method == "histogram-peak":
            return self.histogram_threshold_
        return self.fpr_threshold_

    def _calibrated_threshold(self):
        if self.fpr_threshold_ != super()._calibrated_threshold():
            raise ValueError(
                f"its fpr_threshold_ {self.fpr_threshold_!r} is not the one calibrated "
                f"for its max_fpr {self.max_fpr!r}"
            )
        if self.threshold_method != "histogram-peak":
            return self.fpr_threshold_
        edges = self.histogram_["edges"]
        if not edges[0] <= self.histogram_threshold_ <= edges[-1]:
            raise ValueError(
                f"its histogram_threshold_ {self.histogram_threshold_!r} lies outside "
                f"its histogram, [{edges[0]!r}, {edges[-1]!r}]"
            )
        return self.histogram_threshold_

    def _postprocess_mask(self, mask):
        if self.opening_radius or self.closing_radius:
            slices = mask[..., None] if mask.ndim == 2 else mask
            out = np.empty_like(slices)
            for k in range(slices.shape[-1]):
                s = binary_opening(slices[..., k], self.opening_radius)
                out[..., k] = binary_closing(s, self.closing_radius)
            mask = out.reshape(mask.shape)
        return super()._postprocess_mask(mask)

    def _postprocesses(self):
        return bool(self.opening_radius or self.closing_radius) or super()._postprocesses()
