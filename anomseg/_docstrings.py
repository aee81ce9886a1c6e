"""Docstring fragments shared by many estimators (nilearn's ``docdict``).

Decorate a class or function with :func:`fill_doc` and write
``%(max_fpr)s`` in its docstring to insert the entry ``max_fpr``.
"""

import re

docdict = {}

docdict["images"] = """\
X : array-like of shape (n_images, H, W) or (n_volumes, X, Y, Z), or list
    Images: a stack of 2D images, a stack of 3D volumes, or a list of images
    or volumes whose shapes may differ. With ``channel_axis=-1`` every sample
    has a trailing channel axis. The foreground is the unmasked part of a
    :class:`numpy.ma.MaskedArray`, or else the non-zero pixels; see
    :mod:`anomseg.utils`."""

docdict["maps_returned"] = """\
maps : ndarray of float32 or list of ndarray
    One anomaly map per sample, with the sample's spatial shape (no channel
    axis): a stacked array for an array input, a list for a list input.
    Higher means more anomalous. Maps are non-negative and exactly 0 outside
    the foreground."""

docdict["return_maps"] = """\
return_maps : bool, default=False
    Whether to return the anomaly maps, ``score_samples(X)``, with the
    masks. Both come from one scoring pass, where ``score_samples`` then
    ``predict`` would score (for the restoration methods, restore) every
    image twice."""

docdict["masks_and_maps"] = """\
masks : ndarray of bool or list of ndarray
    The anomaly masks: a stacked array for an array input, a list for a
    list input.
maps : ndarray of float32 or list of ndarray
    Only with ``return_maps=True``: the anomaly maps that gave the masks,
    ``score_samples(X)``."""

docdict["max_fpr"] = """\
max_fpr : float in (0, 1), default=0.05
    The largest pixel false-positive rate allowed on healthy calibration
    images. ``threshold_`` is the smallest threshold that achieves it,
    computed exactly from the sorted calibration scores."""

docdict["smoothing"] = """\
smoothing : float, sequence of float or None, default=None
    Standard deviation, in voxels (one per spatial axis, or one for all), of
    a Gaussian smoothing of each map inside its foreground (a normalised
    convolution, so the background neither leaks in nor dilutes it), before
    calibration and thresholding. Lesions are blobs, healthy false positives
    specks: on LGG FLAIR, ``(2, 2, 1)`` raised the AUPRC of the denoising
    autoencoder and of the learning-free baseline alike
    (``benchmarks/quality/sweep_user_lgg.py``). None: no smoothing."""

docdict["postprocessing"] = """\
postprocessing : list of mask filters or None, default=None
    Steps applied in turn to each mask that ``predict`` returns, such as
    :class:`~anomseg.postprocessing.MorphologicalFilter` (opening, closing)
    and :class:`~anomseg.postprocessing.ConnectedComponentFilter` (3D for
    volumes). The threshold is calibrated on the post-processed masks, so
    ``max_fpr`` bounds the false-positive rate of what ``predict``
    returns."""

docdict["calibration_fraction"] = """\
calibration_fraction : float in (0, 1), default=0.2
    Fraction of the healthy images held out from training to calibrate the
    threshold. The split is by sample (by volume when volumes are given, or by
    ``groups`` passed to ``fit``), seeded by ``random_state``."""

docdict["random_state"] = """\
random_state : int, numpy.random.Generator or None, default=None
    Seeds every random choice made in ``fit``; the same value gives the same
    result. Global random states are never touched."""

docdict["channel_axis"] = """\
channel_axis : None or -1, default=None
    ``-1`` when samples carry a trailing channel axis (multi-modal input such
    as FLAIR + T2), None for single-channel images."""

docdict["callbacks"] = """\
callbacks : list of Callback or None, default=None
    Called during training (see :mod:`anomseg.callbacks`): progress, early
    stopping, and :class:`~anomseg.callbacks.Checkpoint`, which writes the
    state of the training to a file that an interrupted training resumes
    from. Not saved with the model."""

docdict["precision"] = """\
precision : {"float32", "bfloat16", "auto"}, default="float32"
    The arithmetic of the networks, in training and scoring. "bfloat16" runs
    them under :func:`torch.autocast` to bfloat16 (faster on GPUs with
    bfloat16 units, not on every CPU); "auto" is bfloat16 on a CUDA device
    that supports it and float32 elsewhere, so it never changes a CPU
    result. Maps are float32 whatever the precision. A fitted model may
    score in another precision (``set_params``), but its threshold was
    calibrated on maps of the old one: call ``calibrate`` again before
    ``predict`` (on the LGG validation scans, the DAE's bfloat16 maps moved
    by up to 6 % of their range, AUROC, AUPRC and best Dice not at all, and
    the FPR at the threshold calibrated for 5 % from 0.064 to 0.069). MAP
    restoration (:class:`~anomseg.restoration.VAERestorer`,
    :class:`~anomseg.restoration.GMVAERestorer`) restores in float32
    whatever the precision: in bfloat16 its many small gradient steps
    drift."""

docdict["n_channels_attribute"] = """\
n_channels_ : int
    Number of channels seen in ``fit`` (1 without a channel axis)."""

docdict["calibration_attributes"] = """\
threshold_ : float
    Anomaly-map threshold calibrated on healthy data at ``max_fpr``;
    ``predict(X)`` is ``score_samples(X) > threshold_``, post-processed by
    ``postprocessing`` if any.
calibration_thresholds_ : dict of float to float
    Thresholds calibrated on the same healthy pixels at false-positive rates
    0.01, 0.05, 0.1 and ``max_fpr``, keyed by rate (of post-processed masks,
    with post-processing). Pass it to :func:`anomseg.metrics.evaluate` for
    Dice at calibrated thresholds.
calibration_fpr_ : float
    The false-positive rate that ``predict``'s masks (post-processed, if
    so) achieve on the calibration pixels.
n_calibration_pixels_ : int
    Number of foreground pixels the threshold was calibrated on.
healthy_quantiles_ : dict
    Quantiles of the calibration scores: ``"value"`` (ascending) at
    ``"tail"`` fractions of the calibration pixels scoring at least as high
    (from 1 down to ``1 / n_calibration_pixels_``, evenly in log scale),
    from which :meth:`tail_probability` puts the maps of different methods
    on one scale.
healthy_data_ : dict
    What the healthy images of ``fit`` (or of ``calibrate``) looked like
    (:func:`anomseg.utils.describe_images`: their number, shapes, foreground
    fractions and intensity percentiles).
    Scoring images that fall well outside it warns (``DataDriftWarning``),
    since the calibrated false-positive rate may not hold for them.
image_shape_ : tuple of int or None
    Spatial shape of the images the model was trained on (of their 2D slices
    for slice-wise methods), or None if they differed.
n_channels_ : int
    Number of channels seen in ``fit`` (1 without a channel axis)."""


docdict["save_parameters"] = """\
path : str or path-like
    The file to write; its directory must exist. ``.anomseg`` is the
    conventional suffix of safe files.
format : {"safe", "pickle"}, default="safe"
    "safe" writes plain data (parameters and fitted attributes as JSON, a
    summary of the calibration) and the networks' weights, with a SHA-256
    checksum of it all; :func:`~anomseg.load_model` reads it back
    without running code from the file, so it is the format to share
    models in. It holds the estimators, transformers and pipelines of
    anomseg; parameters that hold a fitted estimator (a
    :class:`~sklearn.frozen.FrozenEstimator`) cannot be saved so. "pickle"
    writes a joblib pickle of anything, whose loading can run any code the
    file names: for files that never leave your hands.
overwrite : bool, default=False
    Whether to replace an existing file.
metadata : dict or None, default=None
    Plain JSON data stored with a safe file, read back by
    :func:`~anomseg.model_info`, such as the modality of the healthy
    scans."""


docdict["prior_network"] = """\
width : int >= 1, default=16
    Channels of every hidden convolution (64 in the published network).
latent_channels : int >= 1, default=1
    Channels of each latent map, whose resolution is a quarter of the
    input's (1, as published)."""

docdict["prior_training"] = """\
n_epochs : int >= 1, default=40
    Most passes over the training slices.
batch_size : int >= 1, default=16
    Slices per Adam step.
learning_rate : float > 0, default=1e-3
    Adam's step size (5e-5 in the published configuration).
validation_fraction : float in [0, 1), default=0.1
    Fraction of the training slices held out for early stopping; the
    weights of the epoch with the lowest validation loss are kept. 0 trains
    for ``n_epochs`` and keeps the last weights with the lowest training
    loss.
patience : int >= 1, default=5
    Epochs without a lower validation loss before training stops."""

docdict["torch_runtime"] = """\
inference_batch_size : int >= 1 or "auto", default="auto"
    Slices processed together when scoring or restoring; bounds memory.
    "auto" is 64 on the CPU and 512 on a GPU (``inference_batch_size_``
    gives the size in use).
device : {"auto", "cpu", "cuda"}, default="auto"
    Where the network runs; "auto" picks CUDA when torch finds it. Maps are
    always returned as NumPy arrays."""

docdict["restoration_runtime"] = """\
inference_batch_size : int >= 1 or "auto", default="auto"
    Slices restored (or scored) together; bounds memory. "auto" is 16 on the
    CPU and 128 on a GPU (``inference_batch_size_`` gives the size in use).
    On the CPU, 16 slices of 128 x 128 ran a restoration step about 20 %
    faster per slice than 64
    (``benchmarks/performance/bench_restoration_speed.py``); on a GPU,
    larger batches use it better.
device : {"auto", "cpu", "cuda"}, default="auto"
    Where the network runs; "auto" picks CUDA when torch finds it. Maps are
    always returned as NumPy arrays."""

docdict["verbose"] = """\
verbose : int >= 0, default=0
    The level of the estimator's progress messages (the loss of every
    epoch, the TV-weight curve; restorers also report the TV weight search
    and restoration batches, with the time left, at most every 10 seconds),
    which go through :mod:`logging` under the ``anomseg`` logger: ``INFO``
    (shown) when positive, else ``DEBUG`` (shown only where logging asks for
    it, as ``anomseg fit`` and ``predict`` do). Nothing goes to stdout."""

docdict["prior_attributes"] = """\
module_ : torch.nn.Module
    The trained network, in evaluation mode, on ``device_``.
device_ : str
    The device ``device`` resolved to in ``fit``.
history_ : list of dict
    One record per epoch: ``epoch``, ``train_loss`` and
    ``validation_loss`` (negative ELBO per foreground pixel), their
    ``train_*``/``validation_*`` terms, and ``seconds`` since training
    started.
best_epoch_ : int
    The epoch whose weights were kept.
n_epochs_ : int
    Epochs run before early stopping.
training_time_ : float
    Seconds spent training."""


docdict["restoration"] = """\
tv_weight : "auto" or float >= 0, default="auto"
    The weight lambda of TV(X - Y). "auto" chooses the value of
    ``tv_weights`` with the smallest healthy change epsilon(lambda) on the
    held-out calibration images (again on the images of ``calibrate``), as
    You et al. do.
tv_weights : sequence of float >= 0, default=DEFAULT_TV_WEIGHTS
    The values ``tv_weight="auto"`` chooses from: 0, 0.2, ..., 3.8, as in
    the reference code.
tv_search : {"golden", "grid"}, default="golden"
    How ``tv_weight="auto"`` finds the smallest healthy change among
    ``tv_weights``. "grid" evaluates every value, as You et al. do.
    "golden" runs a golden-section search over the sorted values, which
    assumes epsilon(lambda) falls then rises (as it does: too small a
    weight lets restoration drift to the prior's mean, too large a one
    makes the TV term dominate) and evaluates about ``log(n) / log(1.618)
    + 2`` of them: 8 of the default 20.
max_tv_images : int >= 1, default=16
    At most this many evenly spaced calibration slices are restored at
    every evaluated weight to choose the TV weight; on LGG FLAIR, 12 slices
    already gave a clean U-shaped curve
    (``benchmarks/quality/bench_restoration.py``).
schedule : {"fast", "paper"}, default="fast"
    The restoration schedule whose values ``n_restoration_steps``,
    ``step_sizes`` and ``step_size_switch`` take when they are None (see
    :data:`~anomseg.restoration.RESTORATION_SCHEDULES`). "paper" is the
    reference code's: 500 plain gradient steps of 5e-3, then 2e-3 after
    100. "fast" covers the same distance in 45 steps with heavy-ball
    momentum 0.9 (18 of 0.5 / 18, then 27 of 0.8 / 27); on LGG FLAIR it
    matched or beat the paper schedule's AUROC, AUPRC and best Dice in
    10 to 12 times less time (``benchmarks/performance/bench_restoration_speed.py``).
n_restoration_steps : int >= 1 or None, default=None
    Steps of the restoration; None takes the schedule's (45 or 500).
step_sizes : pair of float > 0 or None, default=None
    The step size before and after ``step_size_switch`` steps; None takes
    the schedule's.
step_size_switch : int >= 0 or None, default=None
    The step after which the second step size is used; None takes the
    schedule's.
gradient_clip : float > 0, default=100.0
    Elementwise bound on the restoration gradient.
residual : {"absolute", "positive"}, default="absolute"
    The map is ``|Y - X|``, or with "positive" only ``max(Y - X, 0)``, for
    lesions known to be hyper-intense (such as FLAIR lesions)."""

docdict["restoration_attributes"] = """\
tv_weight_ : float
    The TV weight used by ``score_samples``.
tv_weights_ : ndarray
    With ``tv_weight="auto"``: the weights evaluated, in increasing order
    (all of ``tv_weights`` with ``tv_search="grid"``).
healthy_change_ : ndarray
    With ``tv_weight="auto"``: epsilon(lambda) at each value of
    ``tv_weights_``, to plot the curve.
tv_search_time_ : float
    With ``tv_weight="auto"``: seconds spent choosing the TV weight."""


docdict["prior_notes"] = """\
The network's losses and the restoration step sizes assume foreground
intensities of about [0, 1]; ``fit`` warns when they are far above. Scale
each volume as a whole before cutting it into slices, with a robust upper
percentile and no clipping:
:meth:`IntensityScaler.for_deep_methods() <anomseg.preprocessing.IntensityScaler.for_deep_methods>`
(min-max scaling lets one bright lesion shrink the whole scan, and its
residuals with it). The
method is 2D: volumes are cut into slices along their last axis. Compared
with the reference code, convolutions are zero-padded (so any input size
works) and the latent means, not samples, are used during restoration and
reconstruction (so results are deterministic)."""


def fill_doc(obj):
    """Substitute ``%(key)s`` entries of :data:`docdict` in ``obj.__doc__``.

    Each entry is indented like the line that names it, so entries can be
    written flush-left here and placed anywhere in a numpydoc section.
    """
    if obj.__doc__:
        obj.__doc__ = _PLACEHOLDER.sub(_indented_entry, obj.__doc__)
    return obj


_PLACEHOLDER = re.compile(r"^([ \t]*)%\((\w+)\)s", flags=re.MULTILINE)


def _indented_entry(match):
    indent, key = match.groups()
    lines = docdict[key].splitlines()
    return "\n".join(indent + line if line else line for line in lines)
