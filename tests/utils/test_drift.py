"""The drift check: images from the healthy data's source pass, lesions
included; another intensity scale, a head where a brain was expected, or a
far other shape are reported with the figures; and estimators warn."""

import numpy as np
import pytest

from anomseg.datasets import add_synthetic_lesions, make_healthy_images
from anomseg.exceptions import DataDriftWarning
from anomseg.utils import check_images, describe_images, drift_messages


@pytest.fixture(scope="module")
def healthy():
    return make_healthy_images(n_images=20, shape=(32, 32), random_state=0)


@pytest.fixture(scope="module")
def summary(healthy):
    return describe_images(check_images(healthy))


def _messages(summary, images, figures=("intensity_p50", "foreground_fraction", "shape")):
    return drift_messages(summary, check_images(images), figures)


def test_summary_is_plain_numbers(summary, healthy):
    assert summary["n_images"] == 20
    assert summary["shape_min"] == summary["shape_max"] == [32, 32]
    low, high = summary["intensity_p50"]
    medians = [np.median(im[im != 0]) for im in healthy]
    assert low == pytest.approx(min(medians)) and high == pytest.approx(max(medians))
    assert all(type(v) in (int, list) for v in summary.values())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_new_healthy_images_and_lesions_pass(summary, seed):
    unseen = make_healthy_images(n_images=10, shape=(32, 32), random_state=seed)
    assert _messages(summary, unseen) == []
    lesioned, _ = add_synthetic_lesions(unseen, n_lesions=2, contrast=1.5, random_state=seed)
    assert _messages(summary, lesioned) == []
    top_slices = unseen.copy()
    top_slices[:, 12:] = 0
    assert _messages(summary, top_slices) == []  # a smaller foreground is no drift


def test_other_images_are_reported_with_figures(summary, healthy):
    [message] = _messages(summary, healthy[:3] * 1000)
    assert message.startswith("intensity p50 ") and "in 3 of 3 image(s) (healthy data: " in message
    head = np.where(healthy[:2] == 0, 0.3, healthy[:2])  # no background left
    assert any(
        m.startswith("foreground fraction 1 in 2 of 2 image(s)") for m in _messages(summary, head)
    )
    big = make_healthy_images(n_images=2, shape=(128, 128), random_state=5)
    assert any(m.startswith("shape (128, 128)") for m in _messages(summary, big))
    # a method blind to a figure leaves it out
    assert _messages(summary, healthy[:3] * 1000, figures=("foreground_fraction",)) == []


def test_volumes_against_slices_compare_intensity_only(summary, healthy):
    volume = np.moveaxis(healthy[:8], 0, -1)[None]
    assert _messages(summary, volume) == []
    assert len(_messages(summary, volume * 1000)) == 1


def test_estimators_warn_on_drift_but_not_on_lesions(healthy):
    from anomseg.restoration import VAERestorer

    model = VAERestorer(
        width=4, n_epochs=1, n_restoration_steps=1, tv_weight=1.0, device="cpu", random_state=0
    ).fit(healthy)
    lesioned, _ = add_synthetic_lesions(healthy[:4], n_lesions=1, contrast=1.5, random_state=0)
    model.score_samples(lesioned)  # AnomsegWarnings are errors in this suite
    with pytest.warns(DataDriftWarning, match=r"^\[VAERestorer.score_samples\] .*intensity p50"):
        model.score_samples(healthy[:2] * 50)
    with pytest.warns(DataDriftWarning, match=r"^\[VAERestorer.predict\]"):
        model.predict(healthy[:2] * 50)
