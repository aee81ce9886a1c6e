"""The safe file format of the torch estimators: exact round trips, plain
data only, and refusal of what it cannot or must not build."""

import os
import pickle

import numpy as np
import pytest
import torch

from anomseg import __version__
from anomseg.baselines import FlairThreshold
from anomseg.datasets import make_healthy_images
from anomseg.exceptions import AnomsegWarning, NotFittedError, VersionMismatchWarning
from anomseg.io import load_torch_model, save_model, save_torch_model
from anomseg.restoration import GMVAERestorer, VAEReconstructor


@pytest.fixture(scope="module")
def images():
    return make_healthy_images(n_images=12, shape=(32, 32), random_state=0)


@pytest.fixture(scope="module")
def gmvae(images):
    return GMVAERestorer(
        width=4,
        n_clusters=3,
        n_epochs=2,
        n_restoration_steps=5,
        tv_weight="auto",
        tv_weights=(0.0, 1.0),
        device="cpu",
        random_state=0,
    ).fit(images)


@pytest.fixture(scope="module")
def reconstructor(images):
    return VAEReconstructor(width=4, n_epochs=2, device="cpu", random_state=0).fit(images)


@pytest.fixture
def gmvae_file(gmvae, tmp_path):
    return save_torch_model(gmvae, tmp_path / "gmvae.pt")


def _rewrite(path, **changes):
    """A copy of a saved file with some entries of its payload changed."""
    payload = torch.load(path, weights_only=True)
    payload.update(changes)
    out = path.with_name("changed.pt")
    torch.save(payload, out)
    return out


def test_round_trip_restorer(gmvae, gmvae_file, images):
    loaded = load_torch_model(gmvae_file)
    assert type(loaded) is GMVAERestorer
    np.testing.assert_array_equal(loaded.score_samples(images), gmvae.score_samples(images))
    np.testing.assert_array_equal(loaded.predict(images), gmvae.predict(images))
    assert loaded.get_params() == gmvae.get_params()
    assert loaded.tv_weights == (0.0, 1.0) and loaded.step_sizes == gmvae.step_sizes
    assert isinstance(loaded.step_sizes, tuple)
    assert loaded.threshold_ == gmvae.threshold_
    assert loaded.calibration_thresholds_ == gmvae.calibration_thresholds_
    assert all(type(rate) is float for rate in loaded.calibration_thresholds_)
    assert loaded.history_ == gmvae.history_
    assert loaded.image_shape_ == (32, 32) and isinstance(loaded.image_shape_, tuple)
    for name in ("tv_weights_", "healthy_change_"):
        original, restored = getattr(gmvae, name), getattr(loaded, name)
        assert isinstance(restored, np.ndarray) and restored.dtype == original.dtype
        np.testing.assert_array_equal(restored, original)
    assert loaded.device_ == "cpu"
    assert not loaded.module_.training
    assert not any(p.requires_grad for p in loaded.module_.parameters())


def test_round_trip_reconstructor(reconstructor, images, tmp_path):
    loaded = load_torch_model(save_torch_model(reconstructor, tmp_path / "vae.pt"))
    assert type(loaded) is VAEReconstructor
    np.testing.assert_array_equal(
        loaded.score_samples(images), reconstructor.score_samples(images)
    )
    assert loaded.get_params() == reconstructor.get_params()
    assert loaded.threshold_ == reconstructor.threshold_


def test_file_is_plain_data(gmvae, gmvae_file):
    payload = torch.load(gmvae_file, map_location="cpu", weights_only=True)
    assert payload["estimator"] == "GMVAERestorer"
    assert payload["anomseg_version"] == __version__
    assert isinstance(payload["params"], str) and isinstance(payload["attributes"], str)
    assert payload["state_dict"].keys() == gmvae.module_.state_dict().keys()
    assert all(t.device.type == "cpu" for t in payload["state_dict"].values())


def test_other_arrays_and_scalars_round_trip(gmvae, tmp_path):
    from sklearn.base import clone

    est = clone(gmvae)
    est.__dict__.update({k: v for k, v in vars(gmvae).items() if k.endswith("_")})
    est.extra_ = {
        "empty": np.zeros((0, 3), np.float32),
        "ints": np.arange(4, dtype=np.int16).reshape(2, 2),
        "scalar": np.float32(0.1),
        "nan": float("nan"),
        "__tuple__": (1, "a", None),
        "tag_lookalike": {"__tuple__": [1]},
    }
    extra = load_torch_model(save_torch_model(est, tmp_path / "x.pt")).extra_
    for key in ("empty", "ints", "scalar"):
        assert type(extra[key]) is type(est.extra_[key])
        assert extra[key].dtype == est.extra_[key].dtype
        assert extra[key].shape == est.extra_[key].shape
        np.testing.assert_array_equal(extra[key], est.extra_[key])
    assert np.isnan(extra["nan"]) and extra["__tuple__"] == (1, "a", None)
    assert extra["tag_lookalike"] == {"__tuple__": [1]}


def test_class_outside_allow_list_is_refused(gmvae_file):
    for name in ("FlairThreshold", "os.system", "ConvGMVAE", ["GMVAERestorer"]):
        with pytest.raises(ValueError, match="only builds"):
            load_torch_model(_rewrite(gmvae_file, estimator=name))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the joblib file
def test_foreign_files_are_refused_without_running_code(tmp_path, gmvae):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(Payload(), protocol=2))
    with pytest.raises(ValueError, match="not a file written by save_torch_model"):
        load_torch_model(evil)
    assert not marker.exists()
    joblib_file = save_model(gmvae, tmp_path / "model.joblib")
    with pytest.raises(ValueError, match="not a file written by save_torch_model"):
        load_torch_model(joblib_file)
    with pytest.raises(FileNotFoundError):
        load_torch_model(tmp_path / "missing.pt")


def test_tampered_content_is_refused(gmvae_file):
    with pytest.raises(ValueError, match="format version 2"):
        load_torch_model(_rewrite(gmvae_file, format_version=2))
    with pytest.raises(ValueError, match="not a fitted attribute"):
        load_torch_model(_rewrite(gmvae_file, attributes='{"__class__": "x"}'))
    with pytest.raises(ValueError, match="'width' parameter of GMVAERestorer"):
        params = torch.load(gmvae_file, weights_only=True)["params"]
        load_torch_model(_rewrite(gmvae_file, params=params.replace('"width": 4', '"width": -1')))
    with pytest.raises(ValueError, match="does not hold a valid GMVAERestorer"):
        load_torch_model(_rewrite(gmvae_file, state_dict={}))


def test_unfitted_and_non_torch_estimators_are_refused(tmp_path, images):
    with pytest.raises(NotFittedError):
        save_torch_model(GMVAERestorer(), tmp_path / "a.pt")
    with pytest.raises(TypeError, match="got a FlairThreshold.*save_model"):
        save_torch_model(FlairThreshold().fit(images), tmp_path / "b.pt")
    assert os.listdir(tmp_path) == []


def test_non_plain_parameter_is_refused(gmvae, tmp_path):
    est = GMVAERestorer(random_state=np.random.default_rng(0))
    est.__dict__.update({k: v for k, v in vars(gmvae).items() if k.endswith("_")})
    with pytest.raises(TypeError, match="parameter 'random_state'.*Generator"):
        save_torch_model(est, tmp_path / "g.pt")


def test_no_overwrite_unless_asked(gmvae, reconstructor, gmvae_file):
    before = gmvae_file.read_bytes()
    with pytest.raises(FileExistsError):
        save_torch_model(reconstructor, gmvae_file)
    assert gmvae_file.read_bytes() == before
    save_torch_model(reconstructor, gmvae_file, overwrite=True)
    assert type(load_torch_model(gmvae_file)) is VAEReconstructor
    assert sorted(p.name for p in gmvae_file.parent.iterdir()) == ["gmvae.pt"]


def test_cuda_model_loads_on_cpu_with_warning(gmvae, tmp_path, monkeypatch, images):
    monkeypatch.setattr(gmvae, "device_", "cuda")
    path = save_torch_model(gmvae, tmp_path / "cuda.pt")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(AnomsegWarning, match=r"^\[load_torch_model\] .*CUDA"):
        loaded = load_torch_model(path)
    assert loaded.device_ == "cpu"
    assert next(loaded.module_.parameters()).device.type == "cpu"
    with pytest.raises(ValueError, match="no CUDA device"):
        load_torch_model(path, device="cuda")
    assert load_torch_model(path, device="cpu").device_ == "cpu"  # no warning


def test_version_mismatch_warns(gmvae_file):
    changed = _rewrite(gmvae_file, anomseg_version="0.0.1")
    with pytest.warns(VersionMismatchWarning, match=r"^\[load_torch_model\] .*0\.0\.1"):
        load_torch_model(changed)


def test_round_trip_ascnet(images, tmp_path):
    from anomseg.adversarial import ASCNetSegmenter

    est = ASCNetSegmenter(
        width=4,
        n_stage1_cycles=1,
        n_stage2_cycles=1,
        discriminator_steps=1,
        generator_steps=1,
        batch_size=4,
        device="cpu",
        random_state=0,
    ).fit(images[:8], X_unlabelled=images[8:])
    loaded = load_torch_model(save_torch_model(est, tmp_path / "ascnet.pt"))
    assert type(loaded) is ASCNetSegmenter
    np.testing.assert_array_equal(loaded.score_samples(images), est.score_samples(images))
    assert loaded.history_ == est.history_
    np.testing.assert_array_equal(loaded.histogram_["counts"], est.histogram_["counts"])
    assert loaded.histogram_threshold_ == est.histogram_threshold_


def test_round_trip_inpainting_predictor(images, tmp_path):
    from anomseg.inpainting import InpaintingLocalizer, InpaintingLossPredictor

    inpainter = InpaintingLocalizer(window_size=4, width=4, n_steps=2, batch_size=4, device="cpu")
    est = InpaintingLossPredictor(
        inpainter, width=4, n_steps=2, batch_size=4, device="cpu", random_state=0
    ).fit(images)
    loaded = load_torch_model(save_torch_model(est, tmp_path / "predictor.pt"))
    assert type(loaded) is InpaintingLossPredictor
    assert isinstance(loaded.inpainter, InpaintingLocalizer)
    assert loaded.inpainter.get_params() == inpainter.get_params()
    np.testing.assert_array_equal(loaded.score_samples(images), est.score_samples(images))
    assert loaded.loss_scale_ == est.loss_scale_


def test_frozen_inpainter_is_refused(images, tmp_path):
    from sklearn.frozen import FrozenEstimator

    from anomseg.inpainting import InpaintingLocalizer, InpaintingLossPredictor

    inpainter = InpaintingLocalizer(window_size=4, width=4, n_steps=2, batch_size=4, device="cpu")
    est = InpaintingLossPredictor(
        FrozenEstimator(inpainter.fit(images)), width=4, n_steps=2, device="cpu"
    ).fit(images)
    with pytest.raises(TypeError, match="parameter 'inpainter'.*FrozenEstimator"):
        save_torch_model(est, tmp_path / "predictor.pt")
    assert not (tmp_path / "predictor.pt").exists()
