"""What every torch estimator of anomseg shares: the device, tensors of 2D
slices, inference batching, the training loop, seeding, progress messages
and persistence.

A method describes its training as a :class:`TrainingPlan` (its networks, the
inputs of each update and the update itself); :class:`TorchSegmenter` runs
every plan the same way, in one seeded session: one ``history_`` format,
divergence errors, early stopping, progress and device placement, the
hooks of the callbacks (:mod:`anomseg.callbacks`) with the state that a
checkpoint holds (:class:`Training`), and data parallelism over the
processes of a :mod:`torch.distributed` group (see
:mod:`anomseg.distributed`): sharding, synchronised weights, averaged
gradients (in :func:`update`) and one ``history_`` on every process.

Importing this module imports torch; only the deep-learning subpackages
(:mod:`anomseg.restoration`, :mod:`anomseg.adversarial`, :mod:`anomseg.denoising`,
:mod:`anomseg.inpainting`) do.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import logging
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from numbers import Integral

import numpy as np
import torch

from . import distributed
from ._version import __version__
from .base import BaseAnomalySegmenter
from .callbacks import CHECKPOINT_FORMAT, EarlyStopping, EpochLog
from .distributed import _average_gradients, _broadcast_tensors, _shard_indices
from .exceptions import AnomsegWarning
from .utils import ImageBatch, check_generator
from .utils._logging import estimator_log
from .utils._param_validation import (
    COMMON_CONSTRAINTS,
    FITTED_CONSTRAINTS,
    Finite,
    HasMethods,
    Interval,
    SequenceOf,
    StrOptions,
)
from .utils._progress import Progress, advance

__all__ = [
    "Progress",
    "TorchSegmenter",
    "Training",
    "TrainingPlan",
    "chunks",
    "resolve_device",
    "resolve_precision",
    "update",
]

logger = logging.getLogger(__name__)


def resolve_device(device, owner):
    """The device ``"auto"``, ``"cpu"`` or ``"cuda"`` (already validated)
    stands for here."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"'device' of {owner} is 'cuda', but torch finds no CUDA device; "
            "use device='auto' or 'cpu'."
        )
    return device


def resolve_precision(precision, device):
    """The reduced dtype that ``precision`` (already validated) stands for
    on ``device``, or None for float32 throughout.

    "auto" is bfloat16 on a CUDA device that supports it and float32
    elsewhere: on the CPU, autocast to bfloat16 is slower than float32
    where the CPU lacks native bfloat16 instructions, and it would change
    the maps that a model gives, so "auto" never changes a CPU result."""
    if precision == "bfloat16" or (
        precision == "auto" and device == "cuda" and torch.cuda.is_bf16_supported()
    ):
        return torch.bfloat16
    return None


def chunks(indices, size):
    """Consecutive pieces of ``indices`` of at most ``size`` items."""
    for start in range(0, len(indices), size):
        yield indices[start : start + size]


def inference_chunks(indices, size):
    """Consecutive pieces of ``indices``: pieces of ``size`` items, then the
    rest in pieces whose sizes are decreasing powers of two (37 = 32 + 4 +
    1).

    Networks then see at most ``1 + log2(size)`` batch sizes, however many
    scans of however many slices pass through. On CPU, oneDNN keeps the
    compiled convolutions of every input shape it meets (up to 1024), several
    MiB each or more: with one batch size per remainder, a cohort's scoring grew
    by hundreds of MiB."""
    full = len(indices) - len(indices) % size
    yield from chunks(indices[:full], size)
    start = full
    while start < len(indices):
        piece = 1 << ((len(indices) - start).bit_length() - 1)
        yield indices[start : start + piece]
        start += piece


def update(optimizer, loss):
    """One optimisation step of ``loss``.

    Every update of the torch estimators passes here, so this is where data
    parallelism averages the gradients over the processes of a
    :mod:`torch.distributed` group before the step (methods compute their
    losses through their own methods, not ``forward``, so
    :class:`~torch.nn.parallel.DistributedDataParallel` would not see them).
    """
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if distributed.world_size() > 1:
        _average_gradients([p for group in optimizer.param_groups for p in group["params"]])
    optimizer.step()


def _pooled(totals):
    """The ``(total, count)`` metrics of every process summed key by key, in
    rank order (so that every process gets the same floats)."""
    out = {}
    for part in totals:
        for key, (total, count) in part.items():
            before = out.get(key, (0.0, 0.0))
            out[key] = (before[0] + total, before[1] + count)
    return out


@dataclass
class TrainingPlan:
    """A method's training, as the shared loop of :class:`TorchSegmenter`
    runs it.

    Attributes
    ----------
    module : torch.nn.Module
        The network kept as ``module_`` after training, on ``device_``.
        Other networks (discriminators, generators of training targets) live
        in the closures of ``step`` and are dropped after training.
    n_epochs : int
        Epochs planned: one record of ``history_`` each.
    steps : callable
        ``steps(epoch)``: the inputs of the epoch's updates, one per update
        (listed at the start of the epoch, to count them).
    step : callable
        ``step(input)``: one update. Returns its metrics, each a float
        (averaged over the epoch's updates that report it) or a ``(total,
        count)`` pair (totals and counts summed over the epoch, then
        divided, such as a loss summed over pixels and the pixel count).
    describe : callable or None
        ``describe(epoch)``: keys that say what the epoch is (a stage, a last
        step), first in its record.
    end_epoch : callable or None
        ``end_epoch(epoch, record)``: more metrics once the epoch's updates
        are done, such as a validation loss.
    monitor : str or None
        The metric whose lowest value selects the epoch whose ``module``
        state is kept (``best_epoch_``); None keeps the last.
    patience : int or None
        Stop after this many epochs without a new lowest ``monitor``; None
        never stops early.
    networks : tuple of torch.nn.Module
        The other networks that the updates train (discriminators): under
        data parallelism their parameters and buffers start from, and their
        buffers return each epoch to, those of process 0, as ``module``'s.
    optimizers : tuple of torch.optim.Optimizer
        Every optimiser of the updates, and
    schedulers : tuple of torch.optim.lr_scheduler.LRScheduler
        every learning-rate schedule: a checkpoint holds their state (see
        :class:`Training`). Whatever else changes during training must be
        drawn from the plan's random generators, or a resumed training
        would differ.
    """

    module: torch.nn.Module
    n_epochs: int
    steps: Callable[[int], Iterable]
    step: Callable[[object], dict]
    describe: Callable[[int], dict] | None = None
    end_epoch: Callable[[int, dict], dict] | None = None
    monitor: str | None = None
    patience: int | None = None
    networks: tuple = ()
    optimizers: tuple = ()
    schedulers: tuple = ()


class Training:
    """A training in progress: what the hooks of the callbacks receive
    (see :mod:`anomseg.callbacks`), and its state as a checkpoint holds it.

    Attributes
    ----------
    estimator : TorchSegmenter
        The estimator being fitted.
    plan : TrainingPlan
        What it trains.
    history : list of dict
        The records of the epochs done.
    epoch : int
        Epochs done.
    n_epochs : int
        Epochs planned.
    stop : bool
        Whether training ends after this epoch.
    best : tuple
        The lowest value of the plan's ``monitor``, its epoch and
        ``module``'s state then (``inf``, 0 and None before any).
    """

    def __init__(self, estimator, plan, rng, generator, data):
        self.estimator = estimator
        self.plan = plan
        self.history = []
        self.epoch = 0
        self.n_epochs = plan.n_epochs
        self.stop = False
        self.best = (np.inf, 0, None)
        self._rng = rng
        self._generator = generator
        self._data = data
        self._digest = None

    def log(self, message):
        """Report ``message`` through the estimator's logger (on process 0)."""
        self.estimator._log(message)

    def _networks(self):
        return (self.plan.module, *self.plan.networks)

    def _random_states(self):
        states = {
            "numpy": self._rng.bit_generator.state,
            "noise": self._generator.get_state(),
            "torch": torch.random.get_rng_state(),
        }
        if self.estimator.device_ == "cuda":
            states["cuda"] = torch.cuda.get_rng_state()
        return states

    def data_digest(self):
        """A digest of the training images (all processes' together) and of
        the weights of the trained estimators the training learns from."""
        if self._digest is None:
            digest = hashlib.blake2b(digest_size=16)
            for data in self._data:
                if isinstance(data, ImageBatch):
                    arrays = [a for pair in zip(data.images, data.foreground) for a in pair]
                else:
                    arrays = [t.cpu().numpy() for t in data.module_.state_dict().values()]
                digest.update(repr(len(arrays)).encode())
                for array in arrays:
                    digest.update(repr(array.shape).encode())
                    digest.update(np.ascontiguousarray(array).data)
            self._digest = digest.hexdigest()
        return self._digest

    def state_dict(self):
        """The state that resuming restores, in tensors and plain data only
        (what ``torch.load(..., weights_only=True)`` reads). Under data
        parallelism every process must call it: it gathers their random
        states."""
        states = self._random_states()
        if distributed.world_size() > 1:
            states = distributed.all_gather_object(states)
        else:
            states = [states]
        value, epoch, module_state = self.best
        return {
            "format": CHECKPOINT_FORMAT,
            "anomseg_version": __version__,
            "estimator": type(self.estimator).__name__,
            "params": self.estimator._training_params(),
            "data": self.data_digest(),
            "world_size": distributed.world_size(),
            "epoch": self.epoch,
            "stop": self.stop,
            "history": [{k: _plain(v) for k, v in r.items()} for r in self.history],
            "best": {"value": float(value), "epoch": epoch, "state": _cpu(module_state)},
            "networks": [_cpu(network.state_dict()) for network in self._networks()],
            "optimizers": [o.state_dict() for o in self.plan.optimizers],
            "schedulers": [s.state_dict() for s in self.plan.schedulers],
            "random_states": states,
        }

    def load_state_dict(self, state, source="the checkpoint"):
        """Continue from ``state`` (of :meth:`state_dict`), after checking
        that it describes this training; ``source`` names it in errors."""
        self._check_same_training(state, source)
        for network, weights in zip(self._networks(), state["networks"]):
            network.load_state_dict(weights)
        for optimizer, optimizer_state in zip(self.plan.optimizers, state["optimizers"]):
            optimizer.load_state_dict(optimizer_state)
        for scheduler, scheduler_state in zip(self.plan.schedulers, state["schedulers"]):
            scheduler.load_state_dict(scheduler_state)
        random = state["random_states"][distributed.rank()]
        self._rng.bit_generator.state = random["numpy"]
        self._generator.set_state(random["noise"])
        torch.random.set_rng_state(random["torch"])
        if "cuda" in random and self.estimator.device_ == "cuda":
            torch.cuda.set_rng_state(random["cuda"])
        self.history[:] = state["history"]
        self.epoch, self.stop = state["epoch"], state["stop"]
        best = state["best"]
        self.best = (best["value"], best["epoch"], best["state"])

    def _check_same_training(self, state, source):
        name = type(self.estimator).__name__
        if state["estimator"] != name:
            raise ValueError(
                f"{source} is a checkpoint of a {state['estimator']}, not of this {name}."
            )
        now, then = self.estimator._training_params(), state["params"]
        changed = sorted(key for key in now.keys() | then.keys() if now.get(key) != then.get(key))
        if changed:
            differences = "; ".join(
                f"{key}={then.get(key, '(none)')} there, {now.get(key, '(none)')} here"
                for key in changed
            )
            raise ValueError(
                f"{source} is a checkpoint of a {name} with other training parameters "
                f"({differences}); set them back, or start afresh with resume=False."
            )
        if state["epoch"] > self.n_epochs:
            raise ValueError(
                f"{source} holds {state['epoch']} epochs of training, more than the "
                f"{self.n_epochs} this {name} plans; raise them, or start afresh with "
                "resume=False."
            )
        if state["data"] != self.data_digest():
            raise ValueError(
                f"{source} is a checkpoint of a {name} trained on other images, or "
                "learning from another trained network; pass the same images (and "
                "groups, exclude and calibrate) to fit, give a nested estimator an "
                "int random_state, or start afresh with resume=False."
            )
        if state["world_size"] != distributed.world_size():
            raise ValueError(
                f"{source} was written by a training on {state['world_size']} "
                f"process(es); resume it on as many, not {distributed.world_size()}."
            )


def _cpu(state_dict):
    """A copy of a state dict on the CPU (None stays None)."""
    if state_dict is None:
        return None
    return {k: v.detach().to("cpu", copy=True) for k, v in state_dict.items()}


def _plain(value):
    """A number of a history record as a Python number (NumPy's are not
    plain data to ``weights_only``)."""
    return value.item() if isinstance(value, np.generic) else value


class TorchSegmenter(BaseAnomalySegmenter):
    """Base of the slice-wise estimators that own a torch network.

    Subclasses set ``_module_class`` and list the constructor arguments of
    the network in ``_module_params``, and implement ``_training_plan``;
    ``fit`` runs the plan and stores the trained network as ``module_``. The
    parameters ``inference_batch_size``, ``device``, ``precision``,
    ``random_state`` and ``verbose`` are expected.

    The parameter ``callbacks`` (see :mod:`anomseg.callbacks`) is expected
    too: the training loop calls its hooks.

    Training is data-parallel whenever a :mod:`torch.distributed` process
    group of more than one process is initialised (see
    :mod:`anomseg.distributed`): each process trains on its shard of the
    slices with ``batch_size`` slices per update (so an update sees
    ``world_size * batch_size``), gradients are averaged over the processes,
    and every process ends with the same ``module_`` and ``history_``. With
    no group, or a group of one, training is exactly as on one process.
    """

    _module_class = None
    _module_params = ()

    #: ``inference_batch_size="auto"``: the slices per batch on the CPU, and
    #: on a GPU, where batches of a few dozen small slices leave it waiting
    #: on kernel launches and the Python loop.
    _auto_inference_batch_size = {"cpu": 64, "cuda": 512}

    _parameter_constraints: dict = {
        key: COMMON_CONSTRAINTS[key]
        for key in (
            "max_fpr",
            "smoothing",
            "postprocessing",
            "calibration_fraction",
            "random_state",
            "channel_axis",
            "device",
            "inference_batch_size",
            "verbose",
        )
    } | {
        "precision": [StrOptions({"float32", "bfloat16", "auto"})],
        "callbacks": [
            None,
            SequenceOf(
                HasMethods(["on_train_begin", "on_epoch_end", "on_train_end"]),
                "callbacks (see anomseg.callbacks.Callback)",
            ),
        ],
    }

    #: Callbacks change how long a training runs, not what a model is: a
    #: model file records ``callbacks=None``.
    _runtime_params = BaseAnomalySegmenter._runtime_params | {"callbacks"}

    #: A fitted model may score in another precision, but its maps move
    #: enough to move the FPR of its threshold (0.064 against 0.069 at a
    #: nominal 5 % on the LGG validation scans, with the DAE): calibrate
    #: again before predicting.
    _calibration_params = BaseAnomalySegmenter._calibration_params | {"precision"}

    #: Parameters that a training resumed from a checkpoint may raise (see
    #: :mod:`anomseg.callbacks`): the plan does not depend on them.
    _extendable_params = frozenset()

    _fitted_attribute_constraints: dict = {
        **BaseAnomalySegmenter._fitted_attribute_constraints,
        "device_": FITTED_CONSTRAINTS["device"],
        "history_": FITTED_CONSTRAINTS["history"],
        "training_time_": [Finite(0, None)],
        "best_epoch_": [Interval(Integral, 1, None, closed="left")],
    }

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.anomaly_tags.slice_wise = True
        tags.anomaly_tags.requires_scaled_input = True
        return tags

    @classmethod
    def _upgrade_params(cls, params):
        # Models saved before precision existed computed in float32.
        return {"precision": "float32", **super()._upgrade_params(params)}

    def _autocast(self):
        """The context in which the networks run: autocast to bfloat16 where
        ``precision`` asks for it on ``device_`` (see
        :func:`resolve_precision`), else nothing, so that float32 runs
        exactly the operations it ran before ``precision`` existed."""
        dtype = resolve_precision(self.precision, self.device_)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_, dtype=dtype)

    @property
    def inference_batch_size_(self):
        """The slices processed together on ``device_``:
        ``inference_batch_size``, where "auto" is resolved for the device
        (see the estimator's parameter)."""
        if self.inference_batch_size != "auto":
            return self.inference_batch_size
        device = "cuda" if str(self.device_).startswith("cuda") else "cpu"
        return self._auto_inference_batch_size[device]

    def _score_batch(self, batch, maps=None, method="score_samples"):
        with self._autocast():
            return super()._score_batch(batch, maps, method)

    # -- tensors ----------------------------------------------------------------
    def _tensors(self, batch, indices, shape=None):
        """Images (n, C, H, W) with a zero background and foreground masks
        (n, 1, H, W) of ``indices`` of a 2D batch, zero-padded at the bottom
        and right to ``shape`` (by default their largest height and width),
        on ``device_``."""
        if shape is None:
            shape = (
                max(batch.foreground[i].shape[0] for i in indices),
                max(batch.foreground[i].shape[1] for i in indices),
            )
        x = np.zeros((len(indices), self.n_channels_, *shape), np.float32)
        m = np.zeros((len(indices), 1, *shape), np.float32)
        for k, i in enumerate(indices):
            fg = batch.foreground[i]
            image = batch.images[i]
            image = image[None] if batch.channel_axis is None else np.moveaxis(image, -1, 0)
            h, w = fg.shape
            x[k, :, :h, :w] = image * fg
            m[k, 0, :h, :w] = fg
        return torch.from_numpy(x).to(self.device_), torch.from_numpy(m).to(self.device_)

    def _shape_groups(self, batch, size=None):
        """Indices of the 2D samples of ``batch`` grouped by spatial shape and
        cut into chunks of ``size`` (default ``inference_batch_size_``)."""
        groups = {}
        for i, shape in enumerate(batch.spatial_shapes):
            groups.setdefault(shape, []).append(i)
        for indices in groups.values():
            for chunk in inference_chunks(indices, size or self.inference_batch_size_):
                yield chunk
                # Scoring's share of a calibration (or other long work) that
                # counts its progress by scans: see utils._progress.
                advance(len(chunk) / len(batch))

    def _to_images(self, batch, indices, tensor, maps=False):
        """Per-sample numpy images (H, W[, C]) of a padded output tensor in
        the channel layout of ``batch``, or 2D maps (H, W) of its first
        channel with ``maps=True``, in float32 whatever the precision."""
        array = tensor.detach().float().cpu().numpy()
        out = []
        for k, i in enumerate(indices):
            h, w = batch.foreground[i].shape
            image = array[k, :, :h, :w]
            if maps or batch.channel_axis is None:
                out.append(image[0])
            else:
                out.append(np.moveaxis(image, 0, -1))
        return out

    # -- training -------------------------------------------------------------
    def _fit(self, batch, **fit_data):
        """Train the method's :class:`TrainingPlan` in one seeded session:
        ``device_`` is resolved, a numpy Generator (for sampling) and a torch
        Generator on ``device_`` (for the noise of the networks) are derived
        from ``random_state``, and torch's global generator (weight
        initialisation, dropout) is seeded inside
        :func:`torch.random.fork_rng`, so global state is never touched.

        Under data parallelism, the seeds are process 0's; each process
        gets its shard of ``batch`` and of the batches of ``fit_data``, and
        its own sampling, noise and dropout seeds (the initial weights are
        process 0's). Whatever describes the whole training set must be
        computed before this is called."""
        self.device_ = resolve_device(self.device, type(self).__name__)
        # What a checkpoint's digest covers: all processes' images, and the
        # trained networks a training learns from (the loss predictor's
        # inpainter, trained again before a resumed training).
        data = [batch, *(v for _, v in sorted(fit_data.items()) if isinstance(v, _DIGESTED))]
        rng = check_generator(self.random_state)
        init_seed, noise_seed = (int(s) for s in rng.integers(2**62, size=2))
        parallel = distributed.world_size() > 1
        if parallel:
            # Process 0's seeds, so that random_state=None agrees too.
            seeds = (init_seed, noise_seed, int(rng.integers(2**62)))
            init_seed, noise_seed, shard_seed = distributed.all_gather_object(seeds)[0]
            rank = distributed.rank()
            rng = np.random.default_rng([shard_seed, rank])
            noise_seed += rank
            batch, fit_data = self._shard(batch, fit_data, shard_seed)
        devices = [torch.cuda.current_device()] if self.device_ == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(init_seed)
            generator = torch.Generator(device=self.device_).manual_seed(noise_seed)
            plan = self._training_plan(batch, rng, generator, **fit_data)
            if parallel:
                _broadcast_tensors(self._synchronised(plan, parameters=True))
                torch.manual_seed(init_seed + rank)  # dropout differs per process
            self._train(Training(self, plan, rng, generator, data))

    @staticmethod
    def _shard(batch, fit_data, seed):
        """This process's shard of ``batch`` and of the image batches of
        ``fit_data`` (the other fit data are shared)."""
        fit_data = {
            key: value.subset(_shard_indices(len(value), seed))
            if isinstance(value, ImageBatch)
            else value
            for key, value in fit_data.items()
        }
        return batch.subset(_shard_indices(len(batch), seed)), fit_data

    @staticmethod
    def _synchronised(plan, parameters=False):
        """The buffers (and parameters) that data parallelism keeps equal to
        process 0's."""
        out = []
        for network in (plan.module, *plan.networks):
            out.extend(network.buffers())
            if parameters:
                out.extend(network.parameters())
        return out

    def _validation_split(self, n, rng):
        """Indices of the ``validation_fraction`` of ``n`` training slices
        held out for early stopping, and of the others, drawn from ``rng``."""
        n_validation = round(self.validation_fraction * n)
        if self.validation_fraction > 0 and not 1 <= n_validation < n:
            raise ValueError(
                f"'validation_fraction'={self.validation_fraction} of {type(self).__name__} "
                f"leaves no training or no validation image among the {n} "
                "training slices; change it or pass more images."
            )
        order = rng.permutation(n)
        return order[:n_validation], order[n_validation:]

    def _training_plan(self, batch, rng, generator, **fit_data):
        """The method's :class:`TrainingPlan` on the 2D training ``batch``
        (this process's shard under data parallelism)."""
        raise NotImplementedError

    def _train(self, training):
        """Run ``training``'s plan, with the callbacks: set ``history_``,
        ``training_time_``, ``best_epoch_`` (with a monitored metric) and
        ``module_``."""
        plan = training.plan
        parallel = distributed.world_size() > 1
        callbacks = [EpochLog()]
        if plan.patience is not None:
            callbacks.append(EarlyStopping(plan.monitor, patience=plan.patience))
        callbacks.extend(self.callbacks or ())
        self.history_ = history = training.history
        for callback in callbacks:
            callback.on_train_begin(training)
        # A resumed training's clock goes on from its checkpoint's.
        started = time.perf_counter() - (history[-1]["seconds"] if history else 0.0)
        while training.epoch < plan.n_epochs and not training.stop:
            epoch = training.epoch + 1
            totals = {}
            items = list(plan.steps(epoch))  # counted, for the progress messages
            progress = self._progress(
                f"epoch {epoch}/{plan.n_epochs}",
                len(items),
                "batches",
                more=plan.n_epochs - epoch,
                whole="the training",
            )
            for item in items:
                with self._autocast():
                    metrics = plan.step(item)
                for key, value in metrics.items():
                    total, count = value if isinstance(value, tuple) else (value, 1)
                    before = totals.get(key, (0.0, 0.0))
                    totals[key] = (before[0] + total, before[1] + count)
                progress.update()
            if parallel:
                totals = _pooled(distributed.all_gather_object(totals))
                _broadcast_tensors(self._synchronised(plan))
            record = {"epoch": epoch, **(plan.describe(epoch) if plan.describe else {})}
            record.update({key: total / max(count, 1) for key, (total, count) in totals.items()})
            with self._autocast():
                end = plan.end_epoch(epoch, record) if plan.end_epoch is not None else {}
            seconds = time.perf_counter() - started
            if parallel:  # the same record everywhere, or early stopping diverges
                gathered = distributed.all_gather_object((end, seconds))
                end = {k: float(np.mean([e[k] for e, _ in gathered])) for k in end}
                seconds = gathered[0][1]
            record.update(end)
            record["seconds"] = seconds
            history.append(record)
            training.epoch = epoch
            for key, value in record.items():
                if not np.isfinite(value):
                    raise FloatingPointError(
                        f"{type(self).__name__}.fit diverged at epoch {epoch} ({key} "
                        f"{value}); lower 'learning_rate' or scale intensities to [0, 1]."
                    )
            if plan.monitor is not None and record[plan.monitor] < training.best[0]:
                state = copy.deepcopy(plan.module.state_dict())
                training.best = (record[plan.monitor], epoch, state)
            for callback in callbacks:
                callback.on_epoch_end(training)
        for callback in callbacks:
            callback.on_train_end(training)
        self.training_time_ = time.perf_counter() - started
        state = plan.module.state_dict()
        if plan.monitor is not None:
            self.best_epoch_, state = training.best[1], training.best[2]
        self._install_module(plan.module, state)

    def _training_params(self):
        """The parameters that make the training, each as its ``repr``:
        what a checkpoint records, and what resuming from it compares."""
        skipped = self._runtime_params | self._calibration_params | self._extendable_params
        params = self.get_params(deep=False)
        return {key: repr(value) for key, value in sorted(params.items()) if key not in skipped}

    # -- the network --------------------------------------------------------------
    def _new_module(self):
        """The network of ``module_``, untrained, on torch's default device
        (its class and constructor arguments are ``_module_class`` and
        ``_module_params``)."""
        params = {p: getattr(self, p) for p in self._module_params}
        return self._module_class(in_channels=self.n_channels_, **params)

    def _build_module(self):
        """The network of ``module_``, untrained, on ``device_``."""
        return self._new_module().to(self.device_)

    def _check_weights(self, weights):
        """Check loaded ``weights`` against the network that the parameters
        describe, before any memory is spent on it: the network is built on
        torch's ``meta`` device (shapes without storage), so a file that
        declares a huge network beside small weights is refused at once.
        Every tensor must be the network's, of its shape and dtype (so the
        network holds exactly as many values as the file), and finite."""
        with torch.device("meta"):
            expected = self._new_module().state_dict()
        extra = sorted(set(weights) - set(expected))
        if extra:
            raise ValueError(f"its tensor {extra[0]!r} is none of the network's")
        for key, meta in expected.items():
            if key not in weights:
                raise ValueError(f"it lacks the network's tensor {key!r}")
            tensor = weights[key]
            if tensor.shape != meta.shape or tensor.dtype != meta.dtype:
                raise ValueError(
                    f"its tensor {key!r} has shape {tuple(tensor.shape)} ({tensor.dtype}), but "
                    f"the network its parameters describe needs {tuple(meta.shape)} "
                    f"({meta.dtype})"
                )
        for key, tensor in weights.items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise ValueError(f"its tensor {key!r} holds NaN or infinite values")

    def _install_module(self, module, state_dict):
        """Load ``state_dict`` into ``module``, freeze it for inference and
        store it on ``device_`` as ``module_``."""
        module.load_state_dict(state_dict)
        module.eval().requires_grad_(False)
        self.module_ = module.to(self.device_)

    def _log(self, message):
        """Report ``message`` through this module's logger (see
        :func:`~anomseg.utils._logging.estimator_log`), on process 0 only."""
        if distributed.is_main_process():
            estimator_log(self, logger)(message)

    def _progress(self, stage, total, unit, **kwargs):
        """A :class:`Progress` of ``total`` ``unit`` that reports through
        :meth:`_log` (on process 0 only) when its messages would be shown:
        ``verbose`` sets their level, the logger decides (``kwargs`` go to
        :class:`Progress`)."""
        level = logging.INFO if self.verbose else logging.DEBUG
        quiet = not (distributed.is_main_process() and logger.isEnabledFor(level))
        return Progress(None if quiet else self._log, stage, total, unit, **kwargs)

    # -- persistence ---------------------------------------------------------------
    def _export_state(self):
        params, attributes, _ = super()._export_state()
        params["callbacks"] = None  # training-time objects, not part of the model
        weights = {k: v.detach().cpu() for k, v in self.module_.state_dict().items()}
        return params, attributes, weights

    @classmethod
    def _import_state(cls, params, attributes, weights, device):
        estimator = super()._import_state(params, attributes, weights, device)
        estimator._place_loaded(weights, device, "load_model")
        return estimator

    def __getstate__(self):
        state = super().__getstate__()
        module = state.get("module_")
        if isinstance(module, torch.nn.Module):
            buffer = io.BytesIO()
            torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, buffer)
            state["module_"] = buffer.getvalue()
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        if isinstance(getattr(self, "module_", None), bytes):
            weights = torch.load(io.BytesIO(self.module_), map_location="cpu", weights_only=True)
            self._place_loaded(weights, None, f"{type(self).__name__}.__setstate__")

    def _place_loaded(self, weights, device, where):
        """Rebuild ``module_`` from loaded ``weights`` on ``device``, or, if
        None, on the device it was trained on, falling back to the CPU with
        a warning if that is CUDA and torch finds none."""
        saved = getattr(self, "device_", "cpu")
        if device is None and saved == "cuda" and not torch.cuda.is_available():
            warnings.warn(
                f"[{where}] The model was trained on CUDA, which is not "
                "available here; it is loaded on the CPU.",
                AnomsegWarning,
                stacklevel=4,
            )
            device = "cpu"
        self.device_ = resolve_device(saved if device is None else device, where)
        self._check_weights(weights)
        self._install_module(self._build_module(), weights)


#: The inputs of a training that a checkpoint's digest covers.
_DIGESTED = (ImageBatch, TorchSegmenter)
