"""What every torch estimator of anomseg shares: the device, tensors of 2D
slices, inference batching, the training loop, seeding, progress messages
and persistence.

A method describes its training as a :class:`TrainingPlan` (its networks, the
inputs of each update and the update itself); :class:`TorchSegmenter` runs
every plan the same way, in one seeded session: one ``history_`` format,
divergence errors, early stopping, progress and device placement, and
data parallelism over the processes of a :mod:`torch.distributed` group (see
:mod:`anomseg.distributed`): sharding, synchronised weights, averaged
gradients (in :func:`update`) and one ``history_`` on every process.

Importing this module imports torch; only the deep-learning subpackages
(:mod:`anomseg.restoration`, :mod:`anomseg.adversarial`, :mod:`anomseg.denoising`,
:mod:`anomseg.inpainting`) do.
"""

from __future__ import annotations

import copy
import io
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from numbers import Integral

import numpy as np
import torch

from . import distributed
from .base import BaseAnomalySegmenter
from .distributed import _average_gradients, _broadcast_tensors, _shard_indices
from .exceptions import AnomsegWarning
from .utils import ImageBatch, check_generator
from .utils._param_validation import COMMON_CONSTRAINTS, FITTED_CONSTRAINTS, Finite, Interval
from .utils._progress import Progress

__all__ = ["Progress", "TorchSegmenter", "TrainingPlan", "chunks", "resolve_device", "update"]


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
        ``steps(epoch)``: the inputs of the epoch's updates, one per update.
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


class TorchSegmenter(BaseAnomalySegmenter):
    """Base of the slice-wise estimators that own a torch network.

    Subclasses set ``_module_class`` and list the constructor arguments of
    the network in ``_module_params``, and implement ``_training_plan``;
    ``fit`` runs the plan and stores the trained network as ``module_``. The
    parameters ``inference_batch_size``, ``device``, ``random_state`` and
    ``verbose`` are expected.

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
    }

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
        cut into chunks of ``size`` (default ``inference_batch_size``)."""
        groups = {}
        for i, shape in enumerate(batch.spatial_shapes):
            groups.setdefault(shape, []).append(i)
        for indices in groups.values():
            yield from inference_chunks(indices, size or self.inference_batch_size)

    def _to_images(self, batch, indices, tensor, maps=False):
        """Per-sample numpy images (H, W[, C]) of a padded output tensor in
        the channel layout of ``batch``, or 2D maps (H, W) of its first
        channel with ``maps=True``."""
        array = tensor.detach().cpu().numpy()
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
            self._train(plan)

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

    def _train(self, plan):
        """Run ``plan``: set ``history_``, ``training_time_``,
        ``best_epoch_`` (with a monitored metric) and ``module_``."""
        parallel = distributed.world_size() > 1
        self.history_ = history = []
        best = (np.inf, 0, None)
        started = time.perf_counter()
        for epoch in range(1, plan.n_epochs + 1):
            totals = {}
            for item in plan.steps(epoch):
                for key, value in plan.step(item).items():
                    total, count = value if isinstance(value, tuple) else (value, 1)
                    before = totals.get(key, (0.0, 0.0))
                    totals[key] = (before[0] + total, before[1] + count)
            if parallel:
                totals = _pooled(distributed.all_gather_object(totals))
                _broadcast_tensors(self._synchronised(plan))
            record = {"epoch": epoch, **(plan.describe(epoch) if plan.describe else {})}
            record.update({key: total / max(count, 1) for key, (total, count) in totals.items()})
            end = plan.end_epoch(epoch, record) if plan.end_epoch is not None else {}
            seconds = time.perf_counter() - started
            if parallel:  # the same record everywhere, or early stopping diverges
                gathered = distributed.all_gather_object((end, seconds))
                end = {k: float(np.mean([e[k] for e, _ in gathered])) for k in end}
                seconds = gathered[0][1]
            record.update(end)
            record["seconds"] = seconds
            history.append(record)
            left = record["seconds"] / epoch * (plan.n_epochs - epoch)
            self._log(
                f"epoch {epoch}/{plan.n_epochs}: "
                + ", ".join(f"{k} {v:.4g}" for k, v in record.items() if k != "epoch")
                + (f"; at most about {left:.0f} s left" if epoch < plan.n_epochs else "")
            )
            for key, value in record.items():
                if not np.isfinite(value):
                    raise FloatingPointError(
                        f"{type(self).__name__}.fit diverged at epoch {epoch} ({key} "
                        f"{value}); lower 'learning_rate' or scale intensities to [0, 1]."
                    )
            if plan.monitor is None:
                continue
            if record[plan.monitor] < best[0]:
                best = (record[plan.monitor], epoch, copy.deepcopy(plan.module.state_dict()))
            elif plan.patience is not None and epoch - best[1] >= plan.patience:
                self._log(f"early stop: no lower {plan.monitor} for {plan.patience} epochs")
                break
        self.training_time_ = time.perf_counter() - started
        state = plan.module.state_dict()
        if plan.monitor is not None:
            self.best_epoch_, state = best[1], best[2]
        self._install_module(plan.module, state)

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
        if self.verbose and distributed.is_main_process():
            print(f"[{type(self).__name__}] {message}", flush=True)

    def _progress(self, stage, total, unit):
        """A :class:`Progress` of ``total`` ``unit`` that reports through
        :meth:`_log` when ``verbose`` (on process 0 only)."""
        quiet = not (self.verbose and distributed.is_main_process())
        return Progress(None if quiet else self._log, stage, total, unit)

    # -- persistence ---------------------------------------------------------------
    def _export_state(self):
        params, attributes, _ = super()._export_state()
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
