"""Mixed precision of the torch estimators (``precision``): bfloat16 maps
close to float32 ones, float32 and "auto" on the CPU unchanged, training in
bfloat16, and the parameter's checks and persistence."""

import pickle

import numpy as np
import pytest

from anomseg import load_model
from anomseg.datasets import add_synthetic_lesions, make_healthy_images
from anomseg.denoising import DenoisingAESegmenter
from anomseg.metrics import roc_auc
from anomseg.restoration import VAEReconstructor, VAERestorer

_TINY = {
    DenoisingAESegmenter: {
        "width": 4,
        "depth": 3,
        "noise_resolution": 4,
        "n_epochs": 4,
        "batch_size": 4,
        "validation_fraction": 0.0,
    },
    VAEReconstructor: {"width": 8, "n_epochs": 10, "batch_size": 2, "learning_rate": 3e-3},
}

#: bfloat16 keeps 8 bits of mantissa: the maps of the tiny models moved by
#: at most 2 % of their range (3 % leaves room across seeds and CPUs).
MAX_RELATIVE_DIFFERENCE = 0.03
MAX_AUROC_DIFFERENCE = 0.01


@pytest.fixture(scope="module")
def healthy():
    return make_healthy_images(n_images=12, shape=(32, 32), random_state=0)


@pytest.fixture(scope="module")
def lesioned():
    images = make_healthy_images(n_images=8, shape=(32, 32), random_state=5)
    return add_synthetic_lesions(images, contrast=0.4, random_state=5)


def _fitted(cls, healthy, seed, **params):
    return cls(**_TINY[cls], device="cpu", random_state=seed, **params).fit(healthy)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("cls", list(_TINY), ids=lambda c: c.__name__)
def test_bfloat16_maps_close_to_float32(cls, seed, healthy, lesioned):
    images, truth = lesioned
    model = _fitted(cls, healthy, seed)
    full = np.asarray(model.score_samples(images))
    half = np.asarray(model.set_params(precision="bfloat16").score_samples(images))
    assert half.dtype == np.float32
    assert not np.array_equal(full, half)  # bfloat16 did run
    assert np.abs(full - half).max() <= MAX_RELATIVE_DIFFERENCE * np.ptp(full)
    assert abs(roc_auc(truth, full) - roc_auc(truth, half)) <= MAX_AUROC_DIFFERENCE


@pytest.mark.parametrize("cls", list(_TINY), ids=lambda c: c.__name__)
def test_auto_is_float32_on_cpu(cls, healthy):
    """On the CPU, "auto" trains and scores exactly as float32 (the
    default)."""
    assert cls().precision == "float32"
    full = _fitted(cls, healthy, 0)
    auto = _fitted(cls, healthy, 0, precision="auto")
    assert full.history_ == [
        {**r, "seconds": s["seconds"]} for r, s in zip(auto.history_, full.history_)
    ]
    assert np.array_equal(full.score_samples(healthy), auto.score_samples(healthy))


def test_training_in_bfloat16(healthy):
    full = _fitted(DenoisingAESegmenter, healthy, 0)
    half = _fitted(DenoisingAESegmenter, healthy, 0, precision="bfloat16")
    losses = [r["train_loss"] for r in half.history_]
    assert np.isfinite(losses).all()
    assert losses != [r["train_loss"] for r in full.history_]  # bfloat16 did run
    assert np.isfinite(half.score_samples(healthy)).all()


def test_invalid_precision_is_refused(healthy):
    with pytest.raises(ValueError, match="'precision' .* must be a str among"):
        DenoisingAESegmenter(precision="float16").fit(healthy)


def test_precision_is_saved_and_changes_after_calibrate(healthy, tmp_path):
    model = _fitted(DenoisingAESegmenter, healthy, 0, precision="bfloat16")
    model.save(tmp_path / "model.anomseg")
    loaded = load_model(tmp_path / "model.anomseg")
    assert loaded.precision == "bfloat16"
    # Scoring is free in any precision; the threshold belongs to the old one.
    loaded.set_params(precision="float32").score_samples(healthy)
    with pytest.raises(ValueError, match="precision.*calibrate"):
        loaded.predict(healthy)
    loaded.calibrate(healthy).save(tmp_path / "again.anomseg")
    assert load_model(tmp_path / "again.anomseg").precision == "float32"


def test_pickles_from_before_precision_load_as_float32(healthy):
    model = _fitted(DenoisingAESegmenter, healthy, 0)
    state = model.__getstate__()
    del state["precision"]
    old = DenoisingAESegmenter.__new__(DenoisingAESegmenter)
    old.__setstate__(state)
    assert old.precision == "float32"
    assert np.array_equal(old.score_samples(healthy), model.score_samples(healthy))
    pickle.loads(pickle.dumps(old))


def test_map_restoration_stays_float32(healthy):
    """bfloat16 gradient steps drift: restoration keeps float32."""
    model = VAERestorer(
        width=8,
        n_epochs=3,
        batch_size=2,
        n_restoration_steps=5,
        tv_weight=1.0,
        device="cpu",
        random_state=0,
    ).fit(healthy, calibrate=False)
    full = model.score_samples(healthy)
    assert np.array_equal(full, model.set_params(precision="bfloat16").score_samples(healthy))
