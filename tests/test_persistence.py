"""Saving and loading models: the safe format's exact round trips, plain
data only, and refusal of what it cannot or must not build; pickles only on
request; the files of earlier versions; the deprecated functions of
anomseg.io."""

import json
import os
import pickle
import warnings

import numpy as np
import pytest
import torch

from anomseg import __version__, load_model, model_info
from anomseg.base import BaseAnomalySegmenter
from anomseg.baselines import FlairThreshold
from anomseg.datasets import make_healthy_images
from anomseg.exceptions import AnomsegWarning, NotFittedError, VersionMismatchWarning
from anomseg.restoration import GMVAERestorer, VAEReconstructor


@pytest.fixture(scope="module")
def images():
    return make_healthy_images(n_images=12, shape=(32, 32), random_state=0)


@pytest.fixture(scope="module")
def gmvae(images):
    # The barely trained prior's healthy change still falls at 1, the edge
    # of this grid; the search warns so, which is beside the point here.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*tv_weight='auto' chose", AnomsegWarning)
        return GMVAERestorer(
            width=4,
            n_clusters=3,
            n_epochs=2,
            n_restoration_steps=5,
            step_sizes=(0.05, 0.02),
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
    return gmvae.save(tmp_path / "gmvae.pt")


def _rewrite(path, **changes):
    """A copy of a saved file with some entries of its payload changed (the
    checksum left as it was)."""
    payload = torch.load(path, weights_only=True)
    payload.update(changes)
    out = path.with_name("changed.pt")
    torch.save(payload, out)
    return out


def _recrafted(path, edit):
    """A copy of a saved file whose model record ``edit(record)`` changed,
    with a checksum recomputed to match, as an attacker would."""
    from anomseg.persistence._format import checksum

    payload = torch.load(path, weights_only=True)
    record = json.loads(payload["model"])
    edit(record)
    payload["model"] = json.dumps(record)
    payload["checksum"] = checksum(payload["model"], payload["info"], payload["state_dict"])
    out = path.with_name("recrafted.pt")
    torch.save(payload, out)
    return out


def test_round_trip_restorer(gmvae, gmvae_file, images):
    loaded = load_model(gmvae_file)
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
    loaded = load_model(reconstructor.save(tmp_path / "vae.pt"))
    assert type(loaded) is VAEReconstructor
    np.testing.assert_array_equal(
        loaded.score_samples(images), reconstructor.score_samples(images)
    )
    assert loaded.get_params() == reconstructor.get_params()
    assert loaded.threshold_ == reconstructor.threshold_


def test_file_is_plain_data(gmvae, gmvae_file):
    payload = torch.load(gmvae_file, map_location="cpu", weights_only=True)
    assert payload["format_version"] == 2
    assert payload["anomseg_version"] == __version__
    record = json.loads(payload["model"])
    assert record["estimator"] == "GMVAERestorer"
    assert record["params"]["width"] == 4 and "threshold_" in record["attributes"]
    assert payload["state_dict"].keys() == gmvae.module_.state_dict().keys()
    assert all(t.device.type == "cpu" for t in payload["state_dict"].values())
    assert payload["checksum"].startswith("sha256:") and len(payload["checksum"]) == 71


def test_other_arrays_and_scalars_round_trip():
    # Through the encoding itself: a model file holds only the fitted
    # attributes its classes declare, so none carries these.
    from anomseg.persistence._format import decode, encode

    original = {
        "empty": np.zeros((0, 3), np.float32),
        "ints": np.arange(4, dtype=np.int16).reshape(2, 2),
        "scalar": np.float32(0.1),
        "nan": float("nan"),
        "__tuple__": (1, "a", None),
        "tag_lookalike": {"__tuple__": [1]},
    }
    extra = decode(json.loads(json.dumps(encode(original, "extra", {}))), {})
    for key in ("empty", "ints", "scalar"):
        assert type(extra[key]) is type(original[key])
        assert extra[key].dtype == original[key].dtype
        assert extra[key].shape == original[key].shape
        np.testing.assert_array_equal(extra[key], original[key])
    assert np.isnan(extra["nan"]) and extra["__tuple__"] == (1, "a", None)
    assert extra["tag_lookalike"] == {"__tuple__": [1]}


def test_class_outside_allow_list_is_refused(gmvae_file):
    for name in ("os.system", "ConvGMVAE", "BaseAnomalySegmenter", "Pipeline", ["x"]):
        crafted = _recrafted(gmvae_file, lambda record, name=name: record.update(estimator=name))
        with pytest.raises(ValueError, match="rebuilds only"):
            load_model(crafted)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the joblib file
def test_foreign_files_are_refused_without_running_code(tmp_path, gmvae):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(Payload(), protocol=2))
    with pytest.raises(ValueError, match="is a pickle.*allow_pickle=True"):
        load_model(evil)
    # a pickle inside a torch file is refused by torch.load(weights_only=True)
    torch.save({"format": Payload()}, tmp_path / "inside.pt")
    with pytest.raises(ValueError, match="not a safe anomseg model file"):
        load_model(tmp_path / "inside.pt")
    assert not marker.exists()
    joblib_file = gmvae.save(tmp_path / "model.joblib", format="pickle")
    with pytest.raises(ValueError, match="is a pickle"):
        load_model(joblib_file)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((tmp_path / "inside.pt").read_bytes()[:100])
    with pytest.raises(ValueError, match="not a safe anomseg model file"):
        load_model(truncated)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.pt")


def test_tampered_content_is_refused(gmvae_file):
    payload = torch.load(gmvae_file, weights_only=True)
    with pytest.raises(ValueError, match="format version 3; this anomseg reads versions 1 to 2"):
        load_model(_rewrite(gmvae_file, format_version=3))
    with pytest.raises(ValueError, match="does not match its checksum"):
        changed = payload["model"].replace('"width": 4', '"width": 5')
        load_model(_rewrite(gmvae_file, model=changed))
    weights = {k: v.clone() for k, v in payload["state_dict"].items()}
    next(iter(weights.values())).view(-1)[0] += 1
    with pytest.raises(ValueError, match="does not match its checksum"):
        load_model(_rewrite(gmvae_file, state_dict=weights))
    with pytest.raises(ValueError, match="does not match its checksum"):
        load_model(_rewrite(gmvae_file, checksum="sha256:" + "0" * 64))
    # content whose checksum was recomputed still has to fit the class
    crafted = _recrafted(gmvae_file, lambda record: record.update(attributes={"__class__": "x"}))
    with pytest.raises(ValueError, match="not a fitted attribute"):
        load_model(crafted)
    crafted = _recrafted(gmvae_file, lambda record: record["params"].update(width=-1))
    with pytest.raises(ValueError, match="'width' parameter of GMVAERestorer"):
        load_model(crafted)
    with pytest.raises(ValueError, match="does not hold a valid GMVAERestorer"):
        load_model(_rewrite(gmvae_file, state_dict={}, checksum=_checksum_of(payload, {})))


def _checksum_of(payload, state_dict):
    from anomseg.persistence._format import checksum

    return checksum(payload["model"], payload["info"], state_dict)


def test_non_plain_parameter_is_refused(gmvae, tmp_path):
    est = GMVAERestorer(random_state=np.random.default_rng(0))
    est.__dict__.update({k: v for k, v in vars(gmvae).items() if k.endswith("_")})
    with pytest.raises(TypeError, match="parameter 'random_state'.*Generator"):
        est.save(tmp_path / "g.pt")


def test_no_overwrite_unless_asked(gmvae, reconstructor, gmvae_file):
    before = gmvae_file.read_bytes()
    with pytest.raises(FileExistsError):
        reconstructor.save(gmvae_file)
    assert gmvae_file.read_bytes() == before
    reconstructor.save(gmvae_file, overwrite=True)
    assert type(load_model(gmvae_file)) is VAEReconstructor
    assert sorted(p.name for p in gmvae_file.parent.iterdir()) == ["gmvae.pt"]


def test_cuda_model_loads_on_cpu_with_warning(gmvae, tmp_path, monkeypatch, images):
    monkeypatch.setattr(gmvae, "device_", "cuda")
    path = gmvae.save(tmp_path / "cuda.pt")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(AnomsegWarning, match=r"^\[load_model\] .*CUDA"):
        loaded = load_model(path)
    assert loaded.device_ == "cpu"
    assert next(loaded.module_.parameters()).device.type == "cpu"
    with pytest.raises(ValueError, match="no CUDA device"):
        load_model(path, device="cuda")
    assert load_model(path, device="cpu").device_ == "cpu"  # no warning


def test_version_mismatch_warns(gmvae_file):
    changed = _rewrite(gmvae_file, anomseg_version="0.0.1")
    with pytest.warns(VersionMismatchWarning, match=r"^\[load_model\] .*0\.0\.1"):
        load_model(changed)


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
    loaded = load_model(est.save(tmp_path / "ascnet.pt"))
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
    loaded = load_model(est.save(tmp_path / "predictor.pt"))
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
    with pytest.raises(TypeError, match="parameter 'inpainter'.*FrozenEstimator.*format='pickle'"):
        est.save(tmp_path / "predictor.pt")
    assert not (tmp_path / "predictor.pt").exists()


def test_unfitted_and_unregistered_estimators_are_refused(tmp_path, images):
    class Custom(FlairThreshold):
        pass

    with pytest.raises(NotFittedError):
        GMVAERestorer().save(tmp_path / "a.pt")
    with pytest.raises(
        TypeError, match="transformers and pipelines.*save a Custom with format='pickle'"
    ):
        Custom().fit(images).save(tmp_path / "b.pt")
    assert os.listdir(tmp_path) == []


def test_learning_free_estimators_round_trip(images, tmp_path):
    est = FlairThreshold(max_fpr=0.1, min_component_size=3).fit(images)
    path = est.save(tmp_path / "flair.pt")
    assert torch.load(path, weights_only=True)["state_dict"] == {}
    loaded = FlairThreshold.load(path)
    assert loaded.get_params() == est.get_params()
    assert loaded.calibration_thresholds_ == est.calibration_thresholds_
    np.testing.assert_array_equal(loaded.predict(images), est.predict(images))
    with pytest.raises(TypeError, match="holds a FlairThreshold, not a GMVAERestorer"):
        GMVAERestorer.load(path)
    assert type(BaseAnomalySegmenter.load(path)) is FlairThreshold


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickles_load_only_when_allowed(gmvae, images, tmp_path):
    path = gmvae.save(tmp_path / "gmvae.joblib", format="pickle")
    with pytest.raises(ValueError, match="is a pickle.*allow_pickle=True"):
        GMVAERestorer.load(path)
    loaded = GMVAERestorer.load(path, allow_pickle=True)
    np.testing.assert_array_equal(loaded.score_samples(images), gmvae.score_samples(images))
    with pytest.raises(ValueError, match="'device' applies to safe files only"):
        load_model(path, device="cpu", allow_pickle=True)
    with pytest.raises(ValueError, match="'format' parameter of GMVAERestorer.save"):
        gmvae.save(tmp_path / "x", format="json")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pipelines_round_trip_in_the_safe_format(images, tmp_path):
    from anomseg.preprocessing import (
        AnomalyPipeline,
        ForegroundCropper,
        IntensityScaler,
        Resizer,
        make_anomaly_pipeline,
    )

    prior = GMVAERestorer(
        width=4,
        n_clusters=3,
        n_epochs=1,
        n_restoration_steps=3,
        tv_weight=1.0,
        device="cpu",
        random_state=0,
    )
    pipe = make_anomaly_pipeline(
        ForegroundCropper(margin=2), Resizer((16, 16)), IntensityScaler(), prior
    ).fit(images)
    path = pipe.save(tmp_path / "pipe.anomseg", metadata={"modality": "FLAIR"})
    loaded = AnomalyPipeline.load(path)
    assert [type(s) for _, s in loaded.steps] == [type(s) for _, s in pipe.steps]
    assert loaded[0].window_ == pipe[0].window_
    np.testing.assert_array_equal(loaded.score_samples(images), pipe.score_samples(images))
    np.testing.assert_array_equal(loaded.predict(images), pipe.predict(images))
    assert loaded[-1].healthy_data_ == pipe[-1].healthy_data_
    weights = torch.load(path, weights_only=True)["state_dict"]
    assert weights and all(key.startswith("gmvaerestorer/") for key in weights)
    info = model_info(path)
    assert info["steps"] == ["ForegroundCropper", "Resizer", "IntensityScaler", "GMVAERestorer"]
    assert info["metadata"] == {"modality": "FLAIR"}
    assert info["calibration"]["threshold"] == pipe.threshold_
    assert info["calibration"]["healthy_data"] == pipe[-1].healthy_data_
    pickled = pipe.save(tmp_path / "pipe.joblib", format="pickle")
    with pytest.raises(ValueError, match="is a pickle"):
        AnomalyPipeline.load(pickled)
    loaded = AnomalyPipeline.load(pickled, allow_pickle=True)
    np.testing.assert_array_equal(loaded.predict(images), pipe.predict(images))
    with pytest.raises(TypeError, match="holds a FlairThreshold, not a AnomalyPipeline"):
        AnomalyPipeline.load(FlairThreshold().fit(images).save(tmp_path / "f.pt"))
    with pytest.raises(ValueError, match="'metadata' of AnomalyPipeline.save must hold plain"):
        pipe.save(tmp_path / "bad.anomseg", metadata={"when": object()})
    assert not (tmp_path / "bad.anomseg").exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_the_deprecated_functions_of_anomseg_io_still_work(gmvae, images, tmp_path):
    from anomseg import io

    with pytest.warns(FutureWarning, match="save_torch_model is deprecated.*estimator.save"):
        path = io.save_torch_model(gmvae, tmp_path / "g.pt")
    with pytest.warns(FutureWarning, match="load_torch_model is deprecated"):
        assert io.load_torch_model(path, device="cpu").threshold_ == gmvae.threshold_
    with pytest.warns(FutureWarning, match="save_model is deprecated"):
        path = io.save_model(gmvae, tmp_path / "g.joblib")
    with (
        pytest.warns(FutureWarning, match="load_model is deprecated"),
        pytest.raises(ValueError, match="is a pickle"),  # no longer unasked
    ):
        io.load_model(path)
    with pytest.warns(FutureWarning, match="load_model is deprecated"):
        loaded = io.load_model(path, allow_pickle=True)
    np.testing.assert_array_equal(loaded.score_samples(images), gmvae.score_samples(images))
    with pytest.warns(FutureWarning), pytest.raises(ValueError, match="is a pickle"):
        io.load_torch_model(path)  # never a pickle, as before
