"""The shared training loop of the torch estimators, on toy plans."""

import numpy as np
import pytest
import torch

from anomseg._torch import TorchSegmenter, TrainingPlan
from anomseg.datasets import make_healthy_images


class ToyTrainer(TorchSegmenter):
    """Fits a 1x1 convolution; its plan comes from ``make_plan``."""

    _parameter_constraints: dict = {}

    def __init__(self, make_plan=None, device="cpu", random_state=0, verbose=0, callbacks=None):
        self.make_plan = make_plan
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.callbacks = callbacks
        self.max_fpr = 0.05
        self.calibration_fraction = 0.25
        self.inference_batch_size = 8
        self.precision = "float32"
        self.channel_axis = None

    def _training_plan(self, batch, rng, generator):
        return self.make_plan(torch.nn.Conv2d(1, 1, 1), rng)

    def _score(self, batch):
        return [np.zeros(fg.shape) for fg in batch.foreground]


X = make_healthy_images(n_images=8, shape=(16, 16), random_state=0)


def test_metrics_are_averaged_or_pooled_per_epoch():
    def plan(module, rng):
        return TrainingPlan(
            module=module,
            n_epochs=3,
            steps=lambda epoch: [1, 2, 3],
            step=lambda i: {"mean": float(i), "pooled": (float(i), 2 * i)},
            describe=lambda epoch: {"stage": 10 * epoch},
            end_epoch=lambda epoch, record: {"twice": 2 * record["mean"]},
        )

    est = ToyTrainer(plan).fit(X, calibrate=False)
    assert [list(r) for r in est.history_] == [
        ["epoch", "stage", "mean", "pooled", "twice", "seconds"]
    ] * 3
    assert [r["epoch"] for r in est.history_] == [1, 2, 3]
    assert est.history_[0]["mean"] == 2.0 and est.history_[0]["pooled"] == 6 / 12
    assert est.history_[0]["twice"] == 4.0 and est.history_[2]["stage"] == 30
    assert np.all(np.diff([r["seconds"] for r in est.history_]) >= 0)
    assert not est.module_.training and not any(p.requires_grad for p in est.module_.parameters())


def test_divergence_names_the_epoch_and_the_metric():
    def plan(module, rng):
        return TrainingPlan(
            module=module,
            n_epochs=5,
            steps=lambda epoch: [epoch],
            step=lambda epoch: {"loss": np.inf if epoch == 2 else 1.0},
        )

    with pytest.raises(
        FloatingPointError, match=r"ToyTrainer.fit diverged at epoch 2 \(loss inf\)"
    ):
        ToyTrainer(plan).fit(X, calibrate=False)


def test_early_stopping_keeps_the_best_state():
    losses = [3.0, 1.0, 2.0, 2.5, 0.5, 0.1]
    states = []

    def plan(module, rng):
        def step(epoch):
            with torch.no_grad():
                module.weight.fill_(epoch)  # a state to recognise the epoch by
            states.append(epoch)
            return {"loss": losses[epoch - 1]}

        return TrainingPlan(
            module=module,
            n_epochs=len(losses),
            steps=lambda epoch: [epoch],
            step=step,
            monitor="loss",
            patience=2,
        )

    est = ToyTrainer(plan).fit(X, calibrate=False)
    assert states == [1, 2, 3, 4]  # stopped: epochs 3 and 4 did not beat epoch 2
    assert est.best_epoch_ == 2 and len(est.history_) == 4
    assert float(est.module_.weight) == 2.0


def test_seeding_is_reproducible_and_leaves_global_state_alone():
    def plan(module, rng):
        draws.append((float(module.weight.detach()), float(torch.rand(())), float(rng.random())))
        return TrainingPlan(module=module, n_epochs=1, steps=lambda e: [], step=lambda i: {})

    draws = []
    before = torch.random.get_rng_state()
    ToyTrainer(plan, random_state=3).fit(X, calibrate=False)
    ToyTrainer(plan, random_state=3).fit(X, calibrate=False)
    ToyTrainer(plan, random_state=4).fit(X, calibrate=False)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert draws[0] == draws[1] and draws[0] != draws[2]


def test_inference_chunks_cover_the_indices_in_power_of_two_pieces():
    from anomseg._torch import inference_chunks

    for n in range(0, 70):
        pieces = list(inference_chunks(np.arange(n), 16))
        np.testing.assert_array_equal(np.concatenate([[], *pieces]), np.arange(n))
        sizes = [len(p) for p in pieces]
        assert set(sizes) <= {16, 8, 4, 2, 1}
        tail = [s for s in sizes if s < 16]
        assert tail == sorted(set(tail), reverse=True)  # each power at most once
    assert [len(p) for p in inference_chunks(list(range(37)), 64)] == [32, 4, 1]


@pytest.mark.parametrize("method", ["vae-reconstruction", "inpainting"])
def test_networks_see_few_batch_sizes_whatever_the_depths(method):
    """Scoring volumes of every depth from 1 to 23 feeds the network at most
    1 + log2(inference_batch_size) batch sizes: oneDNN compiles (and keeps)
    convolutions per input shape, so that each new size costs memory."""
    from anomseg.persistence._registry import method_class

    X = make_healthy_images(n_images=12, shape=(32, 32), random_state=0)
    params = {"random_state": 0, "inference_batch_size": 16, "width": 4}
    if method == "vae-reconstruction":
        params["n_epochs"] = 1
    else:
        params.update(n_steps=2, window_size=8, stride=8)
    model = method_class(method)(**params).fit(X, calibrate=False)
    sizes = set()
    conv = next(m for m in model.module_.modules() if isinstance(m, torch.nn.Conv2d))
    hook = conv.register_forward_pre_hook(lambda _, args: sizes.add(args[0].shape[0]))
    try:
        volumes = [np.stack(list(X[np.arange(d) % 12]), axis=-1) for d in range(1, 24)]
        model.score_samples(volumes)
    finally:
        hook.remove()
    assert sizes and sizes <= {16, 8, 4, 2, 1}, sizes
