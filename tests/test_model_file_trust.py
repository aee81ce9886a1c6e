"""A model file is untrusted input, all of it (issue 24): every value a safe
file holds is checked before it is used, even when whoever altered the file
recomputed its checksum; files without a checksum load only on request;
``info`` shows the model's own values, escaped; and ``save`` refuses a model
whose parameters changed since it was fitted or calibrated."""

import contextlib
import io
import json
import time

import numpy as np
import pytest
import torch

from anomseg import load_model, model_info
from anomseg.baselines import FlairThreshold
from anomseg.cli import main
from anomseg.cli._common import CommandError, _load_model
from anomseg.datasets import make_healthy_images
from anomseg.ensemble import AnomalyEnsemble
from anomseg.persistence._format import checksum
from anomseg.preprocessing import IntensityScaler, make_anomaly_pipeline
from anomseg.restoration import VAEReconstructor
from anomseg.restoration._networks import ConvVAE


@pytest.fixture(scope="module")
def images():
    return make_healthy_images(n_images=8, shape=(32, 32), random_state=0)


@pytest.fixture(scope="module")
def flair(images):
    return FlairThreshold().fit(images)


@pytest.fixture(scope="module")
def vae(images):
    return VAEReconstructor(width=4, n_epochs=1, device="cpu", random_state=0).fit(images)


@pytest.fixture
def flair_file(flair, tmp_path):
    return flair.save(tmp_path / "flair.anomseg")


@pytest.fixture
def vae_file(vae, tmp_path):
    return vae.save(tmp_path / "vae.anomseg")


def crafted(path, record=None, info=None, weights=None, format_version=2):
    """A copy of a safe file with its model record, info record or weights
    edited in place by the given functions and its checksum recomputed, as
    an attacker would; or re-saved as format version 1, which has none."""
    payload = torch.load(path, weights_only=True)
    model, about = json.loads(payload["model"]), json.loads(payload["info"])
    for edit, target in ((record, model), (info, about), (weights, payload["state_dict"])):
        if edit is not None:
            edit(target)
    payload["model"], payload["info"] = json.dumps(model), json.dumps(about)
    payload["checksum"] = checksum(payload["model"], payload["info"], payload["state_dict"])
    if format_version == 1:  # as anomseg 0.1 wrote them
        payload = {
            "format": payload["format"],
            "format_version": 1,
            "anomseg_version": payload["anomseg_version"],
            "estimator": model["estimator"],
            "params": json.dumps(model["params"]),
            "attributes": json.dumps(model["attributes"]),
            "state_dict": payload["state_dict"],
        }
    out = path.with_name("crafted.anomseg")
    torch.save(payload, out)
    return out


def attribute(key, value):
    return lambda record: record["attributes"].update({key: value})


def run_cli(*argv):
    """The exit status and output (stdout and stderr) of ``anomseg argv``."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            status = main([str(a) for a in argv])
        except SystemExit as exc:
            status = exc.code
    return status, out.getvalue()


# -- fitted attributes --------------------------------------------------------------
@pytest.mark.parametrize(
    "value, match",
    [
        (float("nan"), r"'threshold_' of FlairThreshold must be a finite float; got nan"),
        (float("inf"), r"'threshold_' of FlairThreshold must be a finite float; got inf"),
        (-1e300, r"threshold_ -1e\+300 is not the one calibrated for its max_fpr 0.05"),
        ("0.5", r"'threshold_' of FlairThreshold must be a finite float; got '0.5'"),
    ],
)
def test_a_threshold_that_fit_cannot_produce_is_refused(flair_file, value, match):
    path = crafted(flair_file, attribute("threshold_", value))
    with pytest.raises(ValueError, match=rf"'{path}' does not hold a valid FlairThreshold: "):
        load_model(path)
    with pytest.raises(ValueError, match=match):
        load_model(path)


def test_a_threshold_outside_the_healthy_values_is_refused(flair_file):
    # threshold_ and its calibration entry changed together, consistently
    def edit(record):
        thresholds = record["attributes"]["calibration_thresholds_"]["__dict__"]
        for pair in thresholds:
            pair[1] = 50.0
        record["attributes"]["threshold_"] = 50.0

    with pytest.raises(ValueError, match=r"outside the range of its healthy calibration values"):
        load_model(crafted(flair_file, edit))


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("n_channels_", 10**9, r"'n_channels_' of FlairThreshold must be an int in the range"),
        ("calibration_fpr_", -0.5, r"'calibration_fpr_' of FlairThreshold must be a finite"),
        ("image_shape_", {"__tuple__": [32, -1]}, r"'image_shape_' of FlairThreshold"),
        ("healthy_data_", {"x\u001b[2J": 1.0}, r"'healthy_data_' .*got \{'x\\x1b\[2J'"),
        ("module_", 1, r"'module_' is not a fitted attribute of FlairThreshold"),
    ],
)
def test_every_fitted_attribute_is_checked(flair_file, key, value, match):
    with pytest.raises(ValueError, match=match):
        load_model(crafted(flair_file, attribute(key, value)))


def test_a_calibration_with_a_part_missing_is_refused(flair_file):
    path = crafted(flair_file, lambda record: record["attributes"].pop("calibration_thresholds_"))
    with pytest.raises(ValueError, match=r"its calibration lacks calibration_thresholds_"):
        load_model(path)


def test_nested_estimators_and_pipeline_steps_are_checked(images, tmp_path):
    ensemble = AnomalyEnsemble(
        [("a", FlairThreshold()), ("b", FlairThreshold(n_bins=64))], random_state=0
    ).fit(images)
    path = ensemble.save(tmp_path / "ensemble.anomseg")
    member = crafted(
        path, lambda r: r["fitted"]["estimators_"][1]["attributes"].update(threshold_=float("nan"))
    )
    with pytest.raises(ValueError, match=r"'threshold_' of FlairThreshold must be a finite"):
        load_model(member)
    template = crafted(
        path,
        lambda r: r["params"]["estimators"][1]["__tuple__"][1]["__estimator__"][1].update(
            n_bins=-1
        ),
    )
    with pytest.raises(ValueError, match=r"'n_bins' parameter of FlairThreshold"):
        load_model(template)
    pipeline = make_anomaly_pipeline(IntensityScaler(), FlairThreshold()).fit(images)
    path = pipeline.save(tmp_path / "pipeline.anomseg")
    step = crafted(path, lambda r: r["steps"][0][1]["attributes"].update(n_channels_=0))
    with pytest.raises(ValueError, match=r"'n_channels_' of IntensityScaler must be an int"):
        load_model(step)


# -- weights ------------------------------------------------------------------------
def test_nan_weights_are_refused_naming_the_file_and_the_tensor(vae_file):
    def poison(weights):
        weights["decoder.mean.bias"] = torch.full_like(weights["decoder.mean.bias"], np.nan)

    path = crafted(vae_file, weights=poison)
    with pytest.raises(
        ValueError, match=rf"'{path}' .*tensor 'decoder.mean.bias' holds NaN or infinite"
    ):
        load_model(path)


def test_a_weight_of_the_wrong_shape_is_refused_naming_it(vae_file):
    path = crafted(vae_file, weights=lambda w: w.update({"decoder.mean.bias": torch.zeros(3)}))
    with pytest.raises(ValueError, match=r"tensor 'decoder.mean.bias' has shape \(3,\)"):
        load_model(path)
    path = crafted(vae_file, weights=lambda w: w.update({"extra": torch.zeros(1)}))
    with pytest.raises(ValueError, match=r"tensor 'extra' is none of the network's"):
        load_model(path)


def test_a_huge_declared_network_is_refused_before_it_is_built(vae_file, monkeypatch):
    # Width 3000 with the weights of width 4: once about 3 GB, built before
    # the weights were compared. Now the network is built on the meta
    # device only (no memory), and refused there.
    real_init = ConvVAE.__init__

    def meta_only(self, *args, **kwargs):
        assert torch.empty(()).device.type == "meta", "a network built for real"
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(ConvVAE, "__init__", meta_only)
    path = crafted(vae_file, lambda record: record["params"].update(width=3000))
    started = time.perf_counter()
    with pytest.raises(ValueError, match=r"tensor '.*' has shape .* but the network its"):
        load_model(path)
    assert time.perf_counter() - started < 5


# -- format 1 -----------------------------------------------------------------------
def test_format_1_loads_only_on_request(flair, flair_file):
    path = crafted(flair_file, format_version=1)
    with pytest.raises(ValueError, match=r"format version 1 .* no checksum.*allow_unchecked=True"):
        load_model(path)
    with pytest.raises(ValueError, match=r"allow_unchecked=True"):
        FlairThreshold.load(path)
    loaded = FlairThreshold.load(path, allow_unchecked=True)
    assert loaded.threshold_ == flair.threshold_
    with pytest.raises(CommandError, match=r"no checksum.*--allow-unchecked"):
        _load_model(path)
    model, _ = _load_model(path, allow_unchecked=True)
    assert model[-1].threshold_ == flair.threshold_
    # unchecked is no excuse for invalid content
    tampered = crafted(flair_file, attribute("threshold_", -1e300), format_version=1)
    with pytest.raises(ValueError, match=r"not the one calibrated"):
        load_model(tampered, allow_unchecked=True)


def test_info_says_that_format_1_has_no_checksum(flair_file):
    path = crafted(flair_file, format_version=1)
    assert model_info(path)["checksum"] is None
    status, out = run_cli("info", path)
    assert status in (0, None)
    assert "no checksum (format 1)" in out and "checksum OK" not in out
    status, out = run_cli("info", flair_file)
    assert "(format 2, checksum OK)" in out


# -- what info shows ---------------------------------------------------------------
def test_info_shows_the_models_own_values(flair, flair_file):
    def disagree(info):
        info["calibration"].update(max_fpr=0.001, threshold=0.999)

    path = crafted(flair_file, info=disagree)
    calibration = model_info(path)["calibration"]
    assert calibration["max_fpr"] == 0.05 and calibration["threshold"] == flair.threshold_
    _, out = run_cli("info", path)
    assert "calibration max_fpr: 0.05\n" in out
    assert f"calibration threshold: {flair.threshold_:.4g}\n" in out
    assert "0.999" not in out and "0.001" not in out


def test_info_escapes_control_characters(flair_file):
    def inject(info):
        info["metadata"]["modality\u001b[2J"] = "FLAIR\n  calibration threshold: 0.5\u001b[31m"

    _, out = run_cli("info", crafted(flair_file, info=inject))
    assert "\u001b" not in out
    assert "\n  calibration threshold: 0.5" not in out
    assert r"modality\x1b[2J: FLAIR\n  calibration threshold: 0.5\x1b[31m" in out


def test_error_messages_escape_strings_read_from_the_file(flair_file):
    path = crafted(flair_file, lambda record: record.update(estimator="Evil\u001b[2J\n"))
    with pytest.raises(ValueError) as error:
        load_model(path)
    assert "\u001b" not in str(error.value) and "\n" not in str(error.value)
    assert r"Evil\x1b[2J\n" in str(error.value)
    path = crafted(flair_file, attribute("x\u001b[31m_", 1))
    with pytest.raises(ValueError, match=r"'x\\x1b\[31m_' is not a fitted attribute"):
        load_model(path)


# -- parameters changed after fit ---------------------------------------------------
def test_save_refuses_parameters_changed_since_calibration(images, tmp_path):
    model = FlairThreshold().fit(images).set_params(max_fpr=0.01)
    with pytest.raises(ValueError, match=r"'max_fpr' .* changed since calibrate\(\).*calibrate"):
        model.save(tmp_path / "m.anomseg")
    with pytest.raises(ValueError, match=r"call calibrate\(\) again"):
        model.save(tmp_path / "m.joblib", format="pickle")
    assert not list(tmp_path.iterdir())
    model.calibrate(images)
    loaded = load_model(model.save(tmp_path / "m.anomseg"))
    assert loaded.max_fpr == 0.01 and loaded.threshold_ == model.calibration_thresholds_[0.01]


def test_predict_refuses_a_max_fpr_changed_since_calibration(images):
    """set_params(max_fpr=...) left predict flagging at the old rate, without
    a word, while max_fpr promised the new one."""
    model = FlairThreshold().fit(images)
    expected = model.predict(images)
    model.set_params(max_fpr=0.01)
    with pytest.raises(ValueError, match=r"\[FlairThreshold.predict\].*'max_fpr'.*calibrate"):
        model.predict(images)
    model.set_params(max_fpr=0.05)  # set back
    np.testing.assert_array_equal(model.predict(images), expected)
    model.set_params(max_fpr=0.01).calibrate(images)
    assert model.predict(images).sum() < expected.sum()


def test_save_refuses_parameters_changed_since_fit(vae, images, tmp_path):
    from sklearn.base import clone

    model = clone(vae).fit(images).set_params(width=8)
    with pytest.raises(ValueError, match=r"'width' .* changed since fit\(\).*fit it again"):
        model.save(tmp_path / "m.anomseg")
    model.calibrate(images)  # calibrating does not make the weights width 8
    with pytest.raises(ValueError, match=r"fit it again"):
        model.save(tmp_path / "m.anomseg")
    model.set_params(width=4, verbose=1, inference_batch_size=7)  # no effect on the model
    assert load_model(model.save(tmp_path / "m.anomseg")).width == 4


def test_every_class_a_safe_file_rebuilds_declares_its_fitted_attributes():
    from anomseg.persistence._registry import safe_classes

    undeclared = [
        name
        for name, cls in safe_classes().items()
        if not isinstance(getattr(cls, "_fitted_attribute_constraints", None), dict)
    ]
    assert not undeclared
