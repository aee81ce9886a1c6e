"""Callbacks of the torch estimators' training: a checkpointed training
resumes to the weights of the uninterrupted one, early stopping, progress
through logging, and the callbacks parameter's contract."""

import json
import logging
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.utils._param_validation import InvalidParameterError

from anomseg import distributed, load_model
from anomseg._torch import TrainingPlan
from anomseg.adversarial import ASCNetSegmenter
from anomseg.callbacks import Callback, Checkpoint, EarlyStopping, EpochLog, read_checkpoint
from anomseg.datasets import make_healthy_images
from anomseg.denoising import DenoisingAESegmenter
from anomseg.inpainting import InpaintingLocalizer, InpaintingLossPredictor
from anomseg.restoration import GMVAERestorer, VAEReconstructor

from .test_torch import ToyTrainer

X = make_healthy_images(n_images=8, shape=(32, 32), random_state=0)
SMALL = make_healthy_images(n_images=6, shape=(16, 16), random_state=1)


class Interrupt(Exception):
    pass


class InterruptAt(Callback):
    """Raise at the end of epoch ``epoch``, as an interruption would."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, training):
        if training.epoch == self.epoch:
            raise Interrupt


@pytest.fixture
def threads(request):
    """Run the test on ``request.param`` torch threads (1 if not
    parametrised), and restore the number after."""
    before = torch.get_num_threads()
    torch.set_num_threads(getattr(request, "param", 1))
    yield
    torch.set_num_threads(before)


def dae(**params):
    defaults = {"width": 2, "depth": 2, "noise_resolution": 4, "n_epochs": 3, "batch_size": 4}
    return DenoisingAESegmenter(**{**defaults, "random_state": 0, **params})


def gmvae(**params):
    defaults = {"width": 2, "n_clusters": 2, "n_epochs": 3, "batch_size": 4, "tv_weight": 1.0}
    return GMVAERestorer(**{**defaults, "random_state": 0, **params})


def ascnet(**params):
    defaults = {"width": 2, "n_stage1_cycles": 2, "n_stage2_cycles": 1, "batch_size": 4}
    defaults.update(discriminator_steps=1, generator_steps=2)
    return ASCNetSegmenter(**{**defaults, "random_state": 0, **params})


def vae(**params):
    defaults = {"width": 2, "n_epochs": 1, "batch_size": 4}
    return VAEReconstructor(**{**defaults, "random_state": 0, **params})


def without_time(estimator):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in estimator.history_]


# -- resuming -------------------------------------------------------------------------
# Two threads on a loaded machine of two cores cost seconds a fit (the
# denoising autoencoder took 10 s there, 1.4 s on one): the cheapest model
# alone is checked on two.
@pytest.mark.parametrize(
    "make, every, interrupted, threads",
    [(dae, 2, 3, 1), (gmvae, 1, 1, 1), (ascnet, 1, 2, 1), (gmvae, 1, 1, 2)],
    ids=["denoising", "gmvae", "ascnet", "gmvae-2-threads"],
    indirect=["threads"],
)
def test_an_interrupted_training_resumes_to_the_same_weights(
    make, every, interrupted, threads, tmp_path
):
    """Interrupted at the end of epoch ``interrupted`` of 3, after the
    checkpoint of every ``every`` epochs: the epochs after the last
    checkpoint run again (the third, for the denoising autoencoder)."""
    path = tmp_path / "training.ckpt"
    uninterrupted = make().fit(X, calibrate=False)
    callbacks = [Checkpoint(path, every=every, resume=True), InterruptAt(interrupted)]
    with pytest.raises(Interrupt):
        make(callbacks=callbacks).fit(X, calibrate=False)
    assert read_checkpoint(path)["epoch"] == interrupted // every * every
    resumed = make(callbacks=[Checkpoint(path, resume=True)]).fit(X, calibrate=False)
    for key, weights in uninterrupted.module_.state_dict().items():
        assert torch.equal(resumed.module_.state_dict()[key], weights), key
    assert without_time(resumed) == without_time(uninterrupted)
    seconds = [r["seconds"] for r in resumed.history_]
    assert seconds == sorted(seconds)  # the clock goes on from the checkpoint's


def test_the_loss_predictor_resumes_only_on_the_same_inpainter(tmp_path):
    """The loss predictor trains its inpainter again before it resumes:
    from a seed, the same one (same weights at the end); without, another
    one, which the checkpoint refuses."""

    def predictor(seed, **params):
        inpainter = InpaintingLocalizer(width=2, n_steps=2, batch_size=4, random_state=seed)
        return InpaintingLossPredictor(
            width=2, n_steps=6, batch_size=4, inpainter=inpainter, random_state=0, **params
        )

    path = tmp_path / "predictor.ckpt"
    uninterrupted = predictor(1).fit(X, calibrate=False)
    with pytest.raises(Interrupt):
        predictor(1, callbacks=[Checkpoint(path, resume=True), InterruptAt(2)]).fit(
            X, calibrate=False
        )
    resumed = predictor(1, callbacks=[Checkpoint(path, resume=True)]).fit(X, calibrate=False)
    for key, weights in uninterrupted.module_.state_dict().items():
        assert torch.equal(resumed.module_.state_dict()[key], weights), key
    unseeded = tmp_path / "unseeded.ckpt"
    predictor(None, callbacks=[Checkpoint(unseeded)]).fit(X, calibrate=False)
    with pytest.raises(ValueError, match="learning from another trained network"):
        predictor(None, callbacks=[Checkpoint(unseeded, resume=True)]).fit(X, calibrate=False)


def test_a_finished_training_goes_on_for_more_epochs(tmp_path):
    """The VAE family's n_epochs may grow: 2 epochs, then 2 more, are the 4
    epochs of one training."""
    path = tmp_path / "vae.ckpt"
    uninterrupted = vae(n_epochs=4).fit(X, calibrate=False)
    est = vae(n_epochs=2, callbacks=[Checkpoint(path, resume=True)]).fit(X, calibrate=False)
    assert len(est.history_) == 2
    est.set_params(n_epochs=4).fit(X, calibrate=False)
    for key, weights in uninterrupted.module_.state_dict().items():
        assert torch.equal(est.module_.state_dict()[key], weights), key
    assert without_time(est) == without_time(uninterrupted)
    assert est.best_epoch_ == uninterrupted.best_epoch_


def test_without_resume_the_training_starts_afresh(tmp_path):
    path = tmp_path / "vae.ckpt"
    vae(n_epochs=2, callbacks=[Checkpoint(path)]).fit(SMALL, calibrate=False)
    est = vae(n_epochs=2, callbacks=[Checkpoint(path)]).fit(SMALL, calibrate=False)
    assert [r["epoch"] for r in est.history_] == [1, 2]


# -- the checkpoint file ------------------------------------------------------------
def test_the_checkpoint_holds_tensors_and_plain_data_only(tmp_path):
    path = tmp_path / "dae.ckpt"
    est = dae(n_epochs=2, callbacks=[Checkpoint(path)]).fit(X, calibrate=False)
    state = torch.load(path, weights_only=True)
    assert state["format"] == "anomseg.checkpoint" and state["estimator"] == "DenoisingAESegmenter"
    assert state["epoch"] == 2 and len(state["history"]) == 2 and not state["stop"]
    assert state["params"]["width"] == "2" and "callbacks" not in state["params"]
    assert state["best"]["epoch"] == est.best_epoch_
    assert len(state["optimizers"]) == 1 and state["schedulers"][0]["last_epoch"] == 2
    [random] = state["random_states"]
    assert set(random) == {"numpy", "noise", "torch"}
    assert sorted(os.listdir(tmp_path)) == ["dae.ckpt"]  # no temporary file left


def test_an_interrupted_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "vae.ckpt"
    vae(n_epochs=2, callbacks=[Checkpoint(path)]).fit(SMALL, calibrate=False)
    save = torch.save

    def save_half_then_fail(obj, f):
        save(obj, f)
        with open(f, "r+b") as file:
            file.truncate(100)
        raise OSError("killed mid-write")

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with pytest.raises(OSError, match="killed mid-write"):
        vae(n_epochs=1, callbacks=[Checkpoint(path)]).fit(SMALL, calibrate=False)
    monkeypatch.undo()
    assert read_checkpoint(path)["epoch"] == 2
    assert sorted(os.listdir(tmp_path)) == ["vae.ckpt"]


@pytest.mark.parametrize(
    "other, message",
    [
        (lambda: dae(n_epochs=1), "is a checkpoint of a VAEReconstructor, not of this Denois"),
        (lambda: vae(width=3), r"other training parameters \(width=2 there, 3 here\)"),
        (lambda: vae(learning_rate=0.01), "learning_rate=0.001 there, 0.01 here"),
        (lambda: vae(n_epochs=1), "holds 2 epochs of training, more than the 1"),
    ],
    ids=["estimator", "width", "learning-rate", "fewer-epochs"],
)
def test_a_checkpoint_of_another_training_is_refused(other, message, tmp_path):
    path = tmp_path / "vae.ckpt"
    vae(n_epochs=2, callbacks=[Checkpoint(path)]).fit(SMALL, calibrate=False)
    est = other().set_params(callbacks=[Checkpoint(path, resume=True)])
    with pytest.raises(ValueError, match=message):
        est.fit(SMALL, calibrate=False)


def test_a_checkpoint_of_other_images_is_refused(tmp_path):
    path = tmp_path / "vae.ckpt"
    vae(n_epochs=2, callbacks=[Checkpoint(path)]).fit(SMALL, calibrate=False)
    est = vae(n_epochs=2, callbacks=[Checkpoint(path, resume=True)])
    with pytest.raises(ValueError, match="trained on other images, or"):
        est.fit(SMALL[::-1], calibrate=False)
    # What does not change the training may differ.
    est.set_params(verbose=1, inference_batch_size=3, max_fpr=0.1).fit(SMALL, calibrate=False)


def test_a_file_that_is_no_checkpoint_is_refused_without_running_it(tmp_path):
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps(os.system, protocol=2))  # would run code if unpickled
    with pytest.raises(ValueError, match="is not a checkpoint of anomseg"):
        read_checkpoint(path)
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="is not a checkpoint of anomseg"):
        vae(callbacks=[Checkpoint(path, resume=True)]).fit(SMALL, calibrate=False)


def test_a_checkpoint_needs_an_integer_random_state(tmp_path):
    est = vae(random_state=None, callbacks=[Checkpoint(tmp_path / "x.ckpt")])
    with pytest.raises(ValueError, match="'random_state' of VAEReconstructor to be an int"):
        est.fit(SMALL, calibrate=False)
    with pytest.raises(InvalidParameterError, match="'every' parameter of Checkpoint"):
        vae(callbacks=[Checkpoint(tmp_path / "x.ckpt", every=0)]).fit(SMALL, calibrate=False)


# -- early stopping ---------------------------------------------------------------------
def toy_plan(losses):
    def plan(module, rng):
        def step(epoch):
            with torch.no_grad():
                module.weight.fill_(epoch)
            return {"loss": losses[epoch - 1]}

        return TrainingPlan(module=module, n_epochs=len(losses), steps=lambda e: [e], step=step)

    return plan


@pytest.mark.parametrize(
    "losses, min_delta, epochs",
    [
        ([3.0, 1.0, 2.0, 2.5, 0.5, 0.1], 0.0, 4),  # epochs 3 and 4 do not beat epoch 2
        ([3.0, 2.95, 2.9, 2.85, 2.8], 0.1, 3),  # each gains less than min_delta
        ([3.0, 2.0, 1.0, 0.5], 0.0, 4),  # always lower: never stops
    ],
)
def test_early_stopping_stops_when_the_monitored_quantity_stops_decreasing(
    losses, min_delta, epochs
):
    stop = EarlyStopping("loss", patience=2, min_delta=min_delta)
    est = ToyTrainer(toy_plan(losses), callbacks=[stop]).fit(X, calibrate=False)
    assert len(est.history_) == epochs
    assert float(est.module_.weight) == epochs  # no monitor in the plan: the last is kept


def test_early_stopping_on_a_real_estimator_and_a_clear_error_on_an_unknown_key():
    # No epoch can be lower by 1e9: the training stops after patience epochs.
    stop = EarlyStopping("train_loss", patience=1, min_delta=1e9)
    est = vae(n_epochs=5, validation_fraction=0, callbacks=[stop]).fit(SMALL, calibrate=False)
    assert len(est.history_) == 2 and est.n_epochs_ == 2
    with pytest.raises(ValueError, match=r"'monitor' of EarlyStopping is 'nope'.*train_loss"):
        vae(callbacks=[EarlyStopping("nope")]).fit(SMALL, calibrate=False)


def test_a_training_stopped_early_stays_stopped_when_resumed(tmp_path):
    path = tmp_path / "toy.ckpt"
    callbacks = [EarlyStopping("loss", patience=2), Checkpoint(path, resume=True)]
    plan = toy_plan([3.0, 1.0, 2.0, 2.5, 0.5, 0.1])
    ToyTrainer(plan, callbacks=callbacks).fit(X, calibrate=False)
    assert read_checkpoint(path)["stop"]
    est = ToyTrainer(plan, callbacks=callbacks).fit(X, calibrate=False)
    assert len(est.history_) == 4 and float(est.module_.weight) == 4


# -- progress through logging --------------------------------------------------------------
def test_progress_goes_through_logging_not_stdout(caplog, capsys, monkeypatch):
    lines = []
    with caplog.at_level(logging.DEBUG, logger="anomseg"):
        vae(n_epochs=2, verbose=1, callbacks=[EpochLog(lines.append, every=2)]).fit(
            SMALL, calibrate=False
        )
    records = [r for r in caplog.records if r.name == "anomseg._torch"]
    assert [r.levelno for r in records] == [logging.INFO] * 2
    assert records[0].getMessage().startswith("[VAEReconstructor] epoch 1/2: train_")
    assert len(lines) == 1 and lines[0].startswith("epoch 2/2: ")
    assert capsys.readouterr().out == ""
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="anomseg"):
        vae(n_epochs=1).fit(SMALL, calibrate=False)
    assert {r.levelno for r in caplog.records if r.name == "anomseg._torch"} == {logging.DEBUG}
    caplog.clear()
    monkeypatch.setattr(distributed, "is_main_process", lambda: False)
    with caplog.at_level(logging.DEBUG, logger="anomseg"):
        vae(n_epochs=1, verbose=1).fit(SMALL, calibrate=False)
    assert not [r for r in caplog.records if r.name == "anomseg._torch"]


# -- the callbacks parameter ---------------------------------------------------------------
def test_callbacks_are_a_parameter_that_clones_pickles_and_is_not_saved(tmp_path):
    callbacks = [EarlyStopping("train_loss", patience=3), Checkpoint(tmp_path / "c.ckpt")]
    est = vae(callbacks=callbacks)
    assert est.get_params()["callbacks"] is callbacks
    copy = clone(est)
    assert repr(copy.callbacks) == repr(callbacks) and copy.callbacks is not callbacks
    est.fit(SMALL, calibrate=False)
    assert est.callbacks is callbacks and repr(callbacks[0]) == (
        "EarlyStopping(monitor='train_loss', patience=3, min_delta=0.0)"
    )
    assert repr(pickle.loads(pickle.dumps(est)).callbacks) == repr(callbacks)
    est.calibrate(SMALL)
    # Callbacks change no fitted model: saving after set_params is allowed.
    est.set_params(callbacks=[EpochLog()]).save(tmp_path / "vae.anomseg")
    loaded = load_model(tmp_path / "vae.anomseg")
    assert loaded.callbacks is None
    np.testing.assert_array_equal(loaded.score_samples(SMALL), est.score_samples(SMALL))


@pytest.mark.parametrize("callbacks", [[object()], "progress", [], EpochLog()])
def test_callbacks_must_be_a_list_of_callbacks(callbacks):
    with pytest.raises(InvalidParameterError, match="'callbacks' parameter of VAEReconstructor"):
        vae(callbacks=callbacks).fit(SMALL, calibrate=False)


# -- data parallelism ------------------------------------------------------------------
@pytest.mark.scale
def test_a_data_parallel_training_resumes_to_the_same_weights(tmp_path):
    """Each process restores its own random states (sampling and noise
    differ by rank); about 20 s of torchrun on 2 cores."""
    from .test_distributed import torchrun

    worker = Path(__file__).with_name("distributed_resume_worker.py")
    done = torchrun(worker, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    for r in (0, 1):
        assert json.loads((tmp_path / f"rank{r}.json").read_text()) == {"same": True, "epochs": 3}
