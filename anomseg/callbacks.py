"""Callbacks of the training of the torch estimators: progress, early
stopping, and checkpoints that an interrupted training resumes from.

Every torch estimator (:mod:`anomseg.restoration`, :mod:`anomseg.adversarial`,
:mod:`anomseg.denoising`, :mod:`anomseg.inpainting`) takes a ``callbacks``
parameter, a list of :class:`Callback`. The shared training loop calls each
one's hooks, in order, after its own progress report and early stopping:

* ``on_train_begin(training)`` once, before the first epoch (after a
  resumed training's state is restored, for the callbacks that follow the
  :class:`Checkpoint`);
* ``on_epoch_end(training)`` after each epoch, once its record is in
  ``training.history``;
* ``on_train_end(training)`` once, after the last epoch, before the weights
  to keep are installed as ``module_`` (not when training fails).

``training`` is the training in progress:

* ``training.estimator``: the estimator being fitted;
* ``training.history``: the records of the epochs so far (``history_``
  once fitted), the last one the epoch just ended;
* ``training.epoch`` and ``training.n_epochs``: epochs done and planned
  (ASC-Net's cycles, the inpainting models' records of updates);
* ``training.stop``: set it to True to end training after this epoch;
* ``training.log(message)``: report through the estimator's logger.

Callbacks keep no state of their own from one hook to the next: what they
need is in ``training.history``, which a checkpoint holds, so that a resumed
training takes the decisions the uninterrupted one takes. They are not
saved with a model: a model file records ``callbacks=None``.

Resuming a long training
------------------------
With ``Checkpoint(path, resume=True)`` among the callbacks, ``fit`` writes
the state of the training to ``path`` every ``every`` epochs and at its end,
and, when ``path`` exists, continues from it instead of starting over; so
the same script, run again after an interruption, finishes the training::

    from anomseg.callbacks import Checkpoint, EarlyStopping
    from anomseg.denoising import DenoisingAESegmenter

    est = DenoisingAESegmenter(
        n_epochs=50,
        random_state=0,  # needed: the resumed fit rebuilds its split from it
        callbacks=[Checkpoint("dae.ckpt", resume=True)],
    )
    est.fit(X)  # killed at epoch 30? run it again: it goes on from there

The checkpoint holds the weights of every network trained (ASC-Net's and the
inpainter's discriminators too), the optimisers' and learning-rate schedules'
state, the epoch, the history, the best weights so far and every random
state (the numpy Generator of sampling, the torch Generator of the noise and
torch's generator of dropout, of every process under
:mod:`anomseg.distributed`). On the CPU, a resumed training ends with the
same weights as the uninterrupted one, bit for bit; on a GPU, as far as its
kernels are deterministic.

A checkpoint is refused with a clear error when it was written by another
estimator, with other training parameters, or on other training images (a
digest of them is in the file). The parameters that do not change the
training may differ (``verbose``, ``device``, ``inference_batch_size``,
``callbacks`` and those of the threshold). The VAE and GMVAE estimators of
:mod:`anomseg.restoration` also accept a larger ``n_epochs``, and continue
training as if it had been planned so from the start (their training does
not depend on it); the others must keep theirs (the denoising autoencoder's
learning rate anneals over ``n_epochs``, ASC-Net's cycles and the inpainting
models' updates are planned in stages). Continuing from a fitted model's
weights alone (scikit-learn's ``warm_start``) is not offered: the fitted
model does not keep its optimiser, so that would not continue the same
training.

Checkpoint files hold tensors and plain data only and are read with
``torch.load(..., weights_only=True)``, so loading one runs no code; they
are written atomically (see :func:`anomseg.io.atomic_write`), so a training
killed while writing leaves the previous checkpoint whole.

Importing this module does not import torch.
"""

from __future__ import annotations

import os
import pickle
from numbers import Integral, Real

from . import distributed
from .io import atomic_write
from .utils._param_validation import Interval, validate_parameter_constraints

__all__ = ["Callback", "Checkpoint", "EarlyStopping", "EpochLog", "read_checkpoint"]


class Callback:
    """Base of the callbacks of the torch estimators' training.

    Its hooks do nothing; a callback overrides those it needs. See
    :mod:`anomseg.callbacks` for when each is called and what ``training``
    holds.
    """

    def on_train_begin(self, training):
        """Called once, before the first epoch."""

    def on_epoch_end(self, training):
        """Called after each epoch, once its record is in
        ``training.history``."""

    def on_train_end(self, training):
        """Called once, after the last epoch."""

    def __repr__(self):
        args = ", ".join(f"{key}={value!r}" for key, value in vars(self).items())
        return f"{type(self).__name__}({args})"


class EpochLog(Callback):
    """Report each epoch's record, and the time left.

    Every torch estimator reports this way already, through its logger (see
    ``verbose``); add one to send the lines elsewhere as well.

    Parameters
    ----------
    sink : callable or None, default=None
        ``sink(line)`` receives each line, such as :func:`print`; None: the
        estimator's logger (``INFO`` with ``verbose >= 1``, else ``DEBUG``).
        It must be picklable for the estimator to be.
    every : int >= 1, default=1
        Report every this many epochs (and the last).

    Examples
    --------
    >>> from anomseg.callbacks import EpochLog
    >>> from anomseg.datasets import make_healthy_images
    >>> from anomseg.restoration import VAEReconstructor
    >>> X = make_healthy_images(n_images=8, shape=(16, 16), random_state=0)
    >>> lines = []
    >>> est = VAEReconstructor(width=2, n_epochs=2, validation_fraction=0,
    ...                        random_state=0,
    ...                        callbacks=[EpochLog(sink=lines.append)])
    >>> est = est.fit(X, calibrate=False)
    >>> lines[0].startswith("epoch 1/2: train_reconstruction")
    True
    """

    def __init__(self, sink=None, *, every=1):
        self.sink = sink
        self.every = every

    def on_train_begin(self, training):
        _check(
            self, {"sink": [None, callable], "every": [Interval(Integral, 1, None, closed="left")]}
        )

    def on_epoch_end(self, training):
        epoch, n_epochs = training.epoch, training.n_epochs
        if epoch % self.every and epoch < n_epochs:
            return
        record = training.history[-1]
        left = record["seconds"] / epoch * (n_epochs - epoch)
        line = (
            f"epoch {epoch}/{n_epochs}: "
            + ", ".join(f"{k} {v:.4g}" for k, v in record.items() if k != "epoch")
            + (f"; at most about {left:.0f} s left" if epoch < n_epochs else "")
        )
        (self.sink or training.log)(line)


class EarlyStopping(Callback):
    """Stop training when a quantity of the history stops decreasing.

    The estimators that hold out validation slices (``validation_fraction``)
    stop on their validation loss already (``patience``); this callback
    stops on any quantity of ``history_``, for any estimator, such as
    ASC-Net's ``reconstruction_loss``. Stopping does not choose the weights
    kept: the estimators with a validation loss keep those of its lowest
    epoch, the others the last.

    Parameters
    ----------
    monitor : str, default="train_loss"
        The key of the epochs' records to watch (see the estimator's
        ``history_``).
    patience : int >= 1, default=5
        Stop after this many epochs without a new lowest value.
    min_delta : float >= 0, default=0.0
        A value is lower only if it is lower by more than this.
    """

    def __init__(self, monitor="train_loss", *, patience=5, min_delta=0.0):
        self.monitor = monitor
        self.patience = patience
        self.min_delta = min_delta

    def on_train_begin(self, training):
        _check(
            self,
            {
                "monitor": [str],
                "patience": [Interval(Integral, 1, None, closed="left")],
                "min_delta": [Interval(Real, 0, None, closed="left")],
            },
        )

    def on_epoch_end(self, training):
        if self.monitor not in training.history[-1]:
            raise ValueError(
                f"'monitor' of EarlyStopping is {self.monitor!r}, which the records of "
                f"{type(training.estimator).__name__} lack; choose one of "
                f"{sorted(training.history[-1])}."
            )
        # From the history alone, so that a resumed training stops when the
        # uninterrupted one does.
        best, best_epoch = float("inf"), 0
        for record in training.history:
            if record[self.monitor] < best - self.min_delta:
                best, best_epoch = record[self.monitor], record["epoch"]
        if training.epoch - best_epoch >= self.patience:
            training.stop = True
            training.log(f"early stop: no lower {self.monitor} for {self.patience} epochs")


class Checkpoint(Callback):
    """Write the state of the training to a file, and resume from it.

    See :mod:`anomseg.callbacks` for what the file holds and when a
    resumed training reproduces the uninterrupted one. Put it last among
    the callbacks, so that it saves what the others decided. Under
    :mod:`anomseg.distributed`, every process must reach ``path`` (process 0
    writes it; every process reads it to resume).

    Parameters
    ----------
    path : str or path-like
        The checkpoint file; its folder must exist. It is replaced at each
        write.
    every : int >= 1, default=1
        Write every this many epochs, and after the last.
    resume : bool, default=False
        Whether ``fit`` continues from ``path`` when it exists (it starts
        afresh when it does not). With False, ``fit`` starts afresh and
        replaces the file.

    Raises
    ------
    ValueError
        From ``fit``: if the estimator's ``random_state`` is not an int (a
        resumed training rebuilds its data split and starting point from
        it), or if, resuming, the file was written by another estimator,
        with other training parameters or on other training images.

    Examples
    --------
    >>> import os, tempfile
    >>> from anomseg.callbacks import Checkpoint, read_checkpoint
    >>> from anomseg.datasets import make_healthy_images
    >>> from anomseg.restoration import VAEReconstructor
    >>> X = make_healthy_images(n_images=8, shape=(16, 16), random_state=0)
    >>> path = os.path.join(tempfile.mkdtemp(), "vae.ckpt")
    >>> est = VAEReconstructor(width=2, n_epochs=2, validation_fraction=0,
    ...                        random_state=0,
    ...                        callbacks=[Checkpoint(path, resume=True)])
    >>> est = est.fit(X, calibrate=False)
    >>> read_checkpoint(path)["epoch"]
    2
    >>> est = est.set_params(n_epochs=3).fit(X, calibrate=False)  # 1 more
    >>> len(est.history_)
    3
    """

    def __init__(self, path, *, every=1, resume=False):
        self.path = path
        self.every = every
        self.resume = resume

    def on_train_begin(self, training):
        _check(
            self,
            {
                "path": [str, os.PathLike],
                "every": [Interval(Integral, 1, None, closed="left")],
                "resume": ["boolean"],
            },
        )
        estimator = training.estimator
        seed = estimator.random_state
        if not isinstance(seed, Integral) or isinstance(seed, bool):
            raise ValueError(
                f"Checkpoint needs the 'random_state' of {type(estimator).__name__} to be "
                f"an int, since a resumed training rebuilds its data split and starting "
                f"point from it; got {seed!r}."
            )
        if self.resume and os.path.exists(self.path):
            training.load_state_dict(read_checkpoint(self.path), source=f"'{self.path}'")
            training.log(f"resumed from '{self.path}' after epoch {training.epoch}")

    def on_epoch_end(self, training):
        if training.epoch % self.every == 0:
            self._write(training)

    def on_train_end(self, training):
        self._write(training)  # the final state, and a stop decided after the last write

    def _write(self, training):
        import torch

        state = training.state_dict()  # on every process: it gathers their random states
        if distributed.is_main_process():
            atomic_write(self.path, lambda tmp: torch.save(state, tmp), overwrite=True)


def read_checkpoint(path):
    """The contents of a checkpoint file written by :class:`Checkpoint`.

    It is read with ``torch.load(..., weights_only=True)``: tensors and
    plain data only, so reading runs no code from the file.

    Parameters
    ----------
    path : str or path-like
        The file.

    Returns
    -------
    state : dict
        Among others ``epoch`` (epochs done), ``history`` (their records),
        ``estimator`` (the class that wrote it) and ``params`` (its training
        parameters, as their ``repr``).

    Raises
    ------
    ValueError
        If the file is not a checkpoint of anomseg.
    """
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise ValueError(f"'{path}' is not a checkpoint of anomseg: {exc}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"'{path}' is not a checkpoint of anomseg (no checkpoint format).")
    return state


#: The ``format`` entry of every checkpoint file.
CHECKPOINT_FORMAT = "anomseg.checkpoint"


def _check(callback, constraints):
    name = type(callback).__name__
    validate_parameter_constraints(constraints, vars(callback), caller_name=name)
