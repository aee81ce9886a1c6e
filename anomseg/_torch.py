"""What every torch estimator of anomseg shares: the device, tensors of 2D
slices, inference batching, seeding, progress messages and persistence.

Importing this module imports torch; only the deep-learning subpackages
(:mod:`anomseg.restoration`, :mod:`anomseg.adversarial`) do.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch

from .base import BaseAnomalySegmenter
from .exceptions import AnomsegWarning
from .utils import check_generator
from .utils._param_validation import COMMON_CONSTRAINTS

__all__ = ["TorchSegmenter", "chunks", "resolve_device"]


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


class TorchSegmenter(BaseAnomalySegmenter):
    """Base of the slice-wise estimators that own a torch network.

    Subclasses set ``_module_class`` and list the constructor arguments of
    the network in ``_module_params``; ``fit`` stores the trained network as
    ``module_`` with :meth:`_install_module`. The parameters
    ``inference_batch_size``, ``device`` and ``verbose`` are expected.
    """

    _module_class = None
    _module_params = ()

    _parameter_constraints: dict = {
        key: COMMON_CONSTRAINTS[key]
        for key in (
            "max_fpr",
            "calibration_fraction",
            "random_state",
            "channel_axis",
            "device",
            "inference_batch_size",
            "verbose",
        )
    }

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.anomaly_tags.slice_wise = True
        tags.anomaly_tags.requires_scaled_input = True
        return tags

    # -- tensors ----------------------------------------------------------------
    def _tensors(self, batch, indices, device, shape=None):
        """Images (n, C, H, W) with a zero background and foreground masks
        (n, 1, H, W) of ``indices`` of a 2D batch, zero-padded at the bottom
        and right to ``shape``, by default their largest height and width."""
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
        return torch.from_numpy(x).to(device), torch.from_numpy(m).to(device)

    def _shape_groups(self, batch, size=None):
        """Indices of the 2D samples of ``batch`` grouped by spatial shape and
        cut into chunks of ``size`` (default ``inference_batch_size``)."""
        groups = {}
        for i, shape in enumerate(batch.spatial_shapes):
            groups.setdefault(shape, []).append(i)
        for indices in groups.values():
            yield from chunks(indices, size or self.inference_batch_size)

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

    # -- the network --------------------------------------------------------------
    def _build_module(self):
        params = {p: getattr(self, p) for p in self._module_params}
        return self._module_class(in_channels=self.n_channels_, **params)

    def _seeded(self, build, seed):
        """``build()`` with torch's global generator seeded with ``seed`` and
        restored afterwards: initialisation is reproducible, and global state
        is never touched."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build()

    def _start_training(self):
        """Resolve ``device_`` and return a numpy Generator and a torch
        Generator on it, both derived from ``random_state``, plus a seed for
        network initialisation."""
        self.device_ = resolve_device(self.device, type(self).__name__)
        rng = check_generator(self.random_state)
        init_seed, noise_seed = (int(s) for s in rng.integers(2**62, size=2))
        generator = torch.Generator(device=self.device_).manual_seed(noise_seed)
        return rng, generator, init_seed

    def _install_module(self, module, state_dict):
        """Load ``state_dict`` into ``module``, freeze it for inference and
        store it on ``device_`` as ``module_``."""
        module.load_state_dict(state_dict)
        module.eval().requires_grad_(False)
        self.module_ = module.to(self.device_)

    def _log(self, message):
        if self.verbose:
            print(f"[{type(self).__name__}] {message}", flush=True)

    # -- persistence ---------------------------------------------------------------
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
            if self.device_ == "cuda" and not torch.cuda.is_available():
                warnings.warn(
                    f"[{type(self).__name__}.__setstate__] The model was "
                    "trained on CUDA, which is not available here; it is "
                    "loaded on the CPU.",
                    AnomsegWarning,
                    stacklevel=2,
                )
                self.device_ = "cpu"
            self._install_module(self._build_module(), weights)
