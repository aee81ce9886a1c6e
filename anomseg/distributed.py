"""Data-parallel training of the torch estimators on several processes.

Every torch estimator (:mod:`anomseg.restoration`, :mod:`anomseg.adversarial`,
:mod:`anomseg.denoising`, :mod:`anomseg.inpainting`) trains data-parallel
whenever a :mod:`torch.distributed` process group of more than one process
is initialised, by the user or by :func:`process_group`; there is no
parameter to set. Each process then:

* trains on its own shard of the 2D training slices: one shuffle with a seed
  shared by all processes, cut as :class:`torch.utils.data.DistributedSampler`
  cuts it (padded by repeating slices, so that every process runs the same
  number of updates);
* starts from the weights of process 0, and averages the gradients of every
  update over all processes before the optimiser steps, so that the weights
  stay identical everywhere;
* draws its own noise and mini-batches (its seeds differ by its rank);
* records the same ``history_``: the training metrics are pooled over all
  processes and the end-of-epoch metrics (such as a validation loss on each
  process's held-out slices) averaged, so that early stopping agrees.

``batch_size`` is the batch of each process, so one update sees
``world_size() * batch_size`` slices, as with
:class:`torch.nn.parallel.DistributedDataParallel`. Calibration, the TV
weight search and any other work after training run on every process, on
all the data, with the same result; only rank 0 prints progress, and the
caller should save the model from rank 0 only.

Start one process per device with ``torchrun``; the command line does this
itself (``torchrun --nproc-per-node 2 -m anomseg fit --method vae ...``
trains on 2 processes and writes one model file)::

    # script.py, run as: torchrun --nproc-per-node 2 script.py
    from anomseg.distributed import is_main_process, process_group
    from anomseg.restoration import VAERestorer

    est = VAERestorer(random_state=0)
    with process_group():  # gloo on the CPU, nccl on CUDA
        est.fit(X)
        if is_main_process():
            est.save("model.anomseg")

Each process must call ``fit`` with the same data and parameters. A process
that fails while the others wait in a collective stops them only through
``torchrun``, which terminates the other workers when one exits with an
error; without it they wait until the group's ``timeout``.

Importing this module does not import torch.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sys

__all__ = ["all_gather_object", "is_main_process", "process_group", "rank", "world_size"]


def _initialised():
    # No process group can exist before torch is imported: checking
    # sys.modules keeps the learning-free code paths free of torch.
    dist = sys.modules.get("torch.distributed")
    return dist is not None and dist.is_available() and dist.is_initialized()


def world_size():
    """The number of processes that train together.

    Returns
    -------
    n : int
        The size of the initialised :mod:`torch.distributed` process group,
        or 1 without one.
    """
    return sys.modules["torch.distributed"].get_world_size() if _initialised() else 1


def rank():
    """This process's rank among those that train together.

    Returns
    -------
    rank : int
        Its rank in the initialised process group, or 0 without one.
    """
    return sys.modules["torch.distributed"].get_rank() if _initialised() else 0


def is_main_process():
    """Whether this process is rank 0, the one that prints and saves.

    Returns
    -------
    main : bool
        True without a process group.
    """
    return rank() == 0


def all_gather_object(obj):
    """The picklable ``obj`` of every process, in rank order.

    Parameters
    ----------
    obj : object
        This process's object.

    Returns
    -------
    objects : list
        One object per process; ``[obj]`` without a process group.
    """
    if world_size() == 1:
        return [obj]
    import torch.distributed as dist

    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


@contextlib.contextmanager
def process_group(device="auto", timeout=None):
    """Join the process group that ``torchrun`` describes, for the block.

    If the environment variables set by ``torchrun`` (``WORLD_SIZE``,
    ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) say that
    more than one process runs and no process group is initialised yet,
    one is initialised, and destroyed on exit; the torch estimators fitted
    inside the block then train data-parallel (see
    :mod:`anomseg.distributed`). Otherwise (a plain ``python`` run, a group
    of one, or a group the caller initialised) nothing happens.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda"}, default="auto"
        The ``device`` the estimators will train on, which chooses the
        backend: "nccl" (and the GPU ``cuda:LOCAL_RANK`` for this process)
        for CUDA, "gloo" for the CPU; "auto" is CUDA when torch finds it.
    timeout : float or None, default=None
        Seconds a collective waits for the other processes before failing;
        None keeps torch's default (30 minutes for gloo).

    Yields
    ------
    n : int
        :func:`world_size` inside the block.

    Examples
    --------
    Without ``torchrun``, training is on one process:

    >>> from anomseg.distributed import process_group, world_size
    >>> with process_group(device="cpu") as n:
    ...     print(n, world_size())
    1 1
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or _initialised():
        yield world_size()
        return
    import torch
    import torch.distributed as dist

    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    options = {} if timeout is None else {"timeout": datetime.timedelta(seconds=timeout)}
    dist.init_process_group("nccl" if cuda else "gloo", **options)
    try:
        yield world_size()
    finally:
        dist.destroy_process_group()


# -- what the shared training loop of anomseg._torch calls ------------------------
def _shard_indices(n, seed):
    """This process's indices of ``n`` samples: one shuffle seeded by
    ``seed`` (the same on every process), cut as DistributedSampler cuts it,
    padded by repetition so that every process gets ``ceil(n / size)``."""
    import numpy as np
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(
        range(n), num_replicas=world_size(), rank=rank(), shuffle=True, seed=seed
    )
    return np.fromiter(iter(sampler), dtype=np.int64, count=len(sampler))


def _grouped(tensors):
    """Tensors grouped by dtype and device, each group flattened together."""
    groups = {}
    for tensor in tensors:
        groups.setdefault((tensor.dtype, tensor.device), []).append(tensor)
    return groups.values()


def _broadcast_tensors(tensors):
    """Overwrite ``tensors`` (parameters, buffers) with rank 0's values: one
    broadcast per dtype."""
    import torch
    import torch.distributed as dist

    with torch.no_grad():
        for group in _grouped(tensors):
            flat = torch.cat([t.detach().reshape(-1) for t in group])
            dist.broadcast(flat, src=0)
            for tensor, value in zip(group, flat.split([t.numel() for t in group])):
                tensor.copy_(value.view_as(tensor))


def _average_gradients(params):
    """Replace the gradient of each of ``params`` by its mean over all
    processes, in one all-reduce per dtype. A parameter without a gradient
    counts as a zero gradient, and keeps None only if it had none on every
    process (so that optimisers skip it as they would on one process)."""
    import torch
    import torch.distributed as dist

    n = dist.get_world_size()
    for group in _grouped(params):
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in group]
        seen = [p.grad is not None for p in group]
        like = {"dtype": group[0].dtype, "device": group[0].device}
        flat = torch.cat([g.reshape(-1) for g in grads] + [torch.tensor(seen, **like)])
        dist.all_reduce(flat)
        flat /= n
        sizes = [p.numel() for p in group]
        *grads, seen = flat.split([*sizes, len(group)])
        for p, grad, has in zip(group, grads, seen.tolist()):
            p.grad = grad.view_as(p).clone() if has > 0 else None
