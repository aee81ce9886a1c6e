"""ASCNetSegmenter: training, the cuts, the fit signature and thresholds."""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from anomseg.adversarial import ASCNetModule, ASCNetSegmenter, CutDiscriminator
from anomseg.datasets import add_synthetic_lesions, make_healthy_images
from anomseg.exceptions import AnomsegWarning
from anomseg.preprocessing import IntensityScaler, make_anomaly_pipeline

#: Enough training for the cuts to separate on 32 x 32 toy images: about
#: 15 s on one CPU thread.
TRAINED = {
    "width": 4,
    "n_stage1_cycles": 15,
    "n_stage2_cycles": 5,
    "discriminator_steps": 3,
    "generator_steps": 20,
    "batch_size": 16,
    "device": "cpu",
    "random_state": 0,
}
#: Barely trained, for everything that does not need the cuts to work.
TINY = {
    "width": 4,
    "n_stage1_cycles": 1,
    "n_stage2_cycles": 1,
    "discriminator_steps": 1,
    "generator_steps": 2,
    "batch_size": 4,
    "calibration_fraction": 0.25,
    "device": "cpu",
    "random_state": 0,
}


@pytest.fixture(scope="module")
def data():
    X = make_healthy_images(n_images=120, shape=(32, 32), random_state=0)
    lesioned, truth = add_synthetic_lesions(X[60:], radius=(3, 6), contrast=1.0, random_state=1)
    return X[:60], lesioned, truth


@pytest.fixture(scope="module")
def trained(data):
    reference, unlabelled, _ = data
    return ASCNetSegmenter(**TRAINED).fit(reference, X_unlabelled=unlabelled)


def test_losses_decrease_over_cycles(trained):
    history = trained.history_
    assert [h["stage"] for h in history] == [1] * 15 + [2] * 5
    first, last = history[0], history[-1]
    assert last["reconstruction_loss"] < 0.8 * first["reconstruction_loss"]
    assert last["disjoint_loss"] < 0.8 * first["disjoint_loss"]
    stage1 = [h["discriminator_loss"] for h in history if h["stage"] == 1]
    assert min(stage1[1:]) < 0.5 * stage1[0]
    assert all(0 <= h["discriminator_accuracy"] <= 1 for h in history)
    assert np.all(np.diff([h["seconds"] for h in history]) > 0)


def test_a_bright_blob_goes_to_the_wild_cut(trained, data):
    _, unlabelled, truth = data
    cuts = trained.cuts(unlabelled)
    foreground = unlabelled != 0
    wild = cuts["wild"]
    assert wild[truth].mean() > 1.4 * wild[foreground & ~truth].mean()
    assert roc_auc_score(truth[foreground], wild[foreground]) > 0.7
    # the fence cut, which the discriminator compares with healthy images,
    # does not single the blob out
    fence = cuts["fence"]
    assert fence[truth].mean() < 1.2 * fence[foreground & ~truth].mean()


def test_maps_are_the_reconstruction_or_the_wild_cut(trained, data):
    _, unlabelled, _ = data
    cuts = trained.cuts(unlabelled[:4])
    foreground = unlabelled[:4] != 0
    for key in ("fence", "wild", "reconstruction"):
        assert cuts[key].shape == (4, 32, 32)
        assert (cuts[key][~foreground] == 0).all()
        assert (cuts[key][foreground] > 0).all() and (cuts[key] <= 1).all()
    np.testing.assert_allclose(trained.score_samples(unlabelled[:4]), cuts["reconstruction"])
    est = ASCNetSegmenter(**TRAINED)
    est.__dict__.update(trained.__dict__)
    est.set_params(anomaly_peak="left")
    np.testing.assert_allclose(
        est.score_samples(unlabelled[:4]),
        np.where(foreground, 1 - cuts["reconstruction"], 0),
        rtol=1e-6,
    )
    est.set_params(anomaly_map="wild-cut")
    np.testing.assert_allclose(est.score_samples(unlabelled[:4]), cuts["wild"])


def test_histogram_threshold_is_stored_and_selectable(trained, data):
    reference, unlabelled, _ = data
    assert trained.threshold_ == trained.fpr_threshold_
    assert trained.histogram_["counts"].sum() == (unlabelled != 0).sum()
    est = ASCNetSegmenter(**TRAINED)
    est.__dict__.update(trained.__dict__)
    est.set_params(threshold_method="histogram-peak")
    est.calibrate(reference[:10])
    assert est.threshold_ == trained.histogram_threshold_
    maps = est.score_samples(reference[:10])
    fg = reference[:10] != 0
    assert est.calibration_fpr_ == pytest.approx((maps[fg] > est.threshold_).mean())
    np.testing.assert_array_equal(
        est.predict(unlabelled), est.score_samples(unlabelled) > est.threshold_
    )


def test_marking_with_y_equals_passing_unlabelled(data):
    reference, unlabelled, _ = data
    reference, unlabelled = reference[:12], unlabelled[:8]
    apart = ASCNetSegmenter(**TINY).fit(reference, X_unlabelled=unlabelled)
    marked = ASCNetSegmenter(**TINY).fit(
        np.concatenate([reference, unlabelled]), y=[0] * 12 + [-1] * 8
    )
    np.testing.assert_array_equal(
        marked.score_samples(unlabelled), apart.score_samples(unlabelled)
    )
    assert (marked.n_reference_, marked.n_unlabelled_) == (apart.n_reference_, 8)
    # 1 (known abnormal) counts as unlabelled too
    labelled = ASCNetSegmenter(**TINY).fit(
        np.concatenate([reference, unlabelled]), y=[0] * 12 + [1] * 8
    )
    np.testing.assert_array_equal(
        labelled.score_samples(unlabelled), apart.score_samples(unlabelled)
    )


def test_reference_only_training(data):
    reference, _, _ = data
    est = ASCNetSegmenter(**TINY).fit(reference[:12])
    assert est.n_unlabelled_ == 0 and est.n_reference_ == 9
    assert est.histogram_["counts"].sum() == (reference[:12] != 0).sum() - (
        est.n_calibration_pixels_
    )


def test_in_a_pipeline_with_y(data):
    """y reaches the estimator, and the scaler transforms both sets."""
    reference, unlabelled, _ = data
    X = np.concatenate([reference[:12], unlabelled[:8]]) * 1000
    pipe = make_anomaly_pipeline(IntensityScaler(), ASCNetSegmenter(**TINY))
    pipe.fit(X, [0] * 12 + [-1] * 8)
    assert pipe[-1].n_unlabelled_ == 8
    assert pipe.score_samples(X[:2]).shape == (2, 32, 32)


def test_volumes_and_groups(data):
    reference, unlabelled, _ = data
    volumes = [np.moveaxis(reference[5 * i : 5 * i + 5], 0, -1) for i in range(4)]
    est = ASCNetSegmenter(**{**TINY, "calibration_fraction": 0.5}).fit(
        volumes, groups=[0, 0, 1, 1], X_unlabelled=unlabelled[:6]
    )
    # one patient, two volumes of 5 slices, is held out for calibration
    assert (est.n_reference_, est.n_unlabelled_) == (10, 6)
    assert est.score_samples(volumes[:1])[0].shape == (32, 32, 5)
    with pytest.raises(ValueError, match="'groups'"):
        ASCNetSegmenter(**TINY).fit(volumes, groups=[0, 1])


def test_postprocessing_opens_then_closes_each_slice():
    from anomseg.postprocessing import binary_closing, binary_opening

    est = ASCNetSegmenter(opening_radius=1, closing_radius=2)
    mask = np.zeros((16, 16, 2), bool)
    mask[1, 1, 0] = True  # a speck: opened away
    mask[4:12, 4:12, :] = True
    mask[7, 7, 1] = False  # a hole: closed
    out = est._postprocess_mask(mask)
    assert not out[1, 1, 0] and out[7, 7, 1]
    for k in range(2):  # 2D, slice by slice, opening first
        expected = binary_closing(binary_opening(mask[..., k], 1), 2)
        np.testing.assert_array_equal(out[..., k], expected)
    np.testing.assert_array_equal(est._postprocess_mask(mask[..., 0]), out[..., 0])
    assert est.set_params(opening_radius=0, closing_radius=0)._postprocess_mask(mask) is mask


@pytest.mark.parametrize(
    "y, match",
    [
        ([0, 2] * 6, "'y' passed to ASCNetSegmenter.fit"),
        ([0] * 11, "shape"),
        ([0.0] * 12, "integer"),
    ],
)
def test_bad_y(data, y, match):
    with pytest.raises(ValueError, match=match):
        ASCNetSegmenter(**TINY).fit(data[0][:12], y=y)


@pytest.mark.parametrize(
    "param, value",
    [
        ("width", 0),
        ("n_stage1_cycles", -1),
        ("discriminator_steps", 0),
        ("batch_size", 1),
        ("learning_rate", 0.0),
        ("anomaly_map", "fence"),
        ("anomaly_peak", "middle"),
        ("threshold_method", "otsu"),
        ("histogram_bins", 2),
        ("opening_radius", -1),
        ("device", "tpu"),
    ],
)
def test_bad_params(data, param, value):
    with pytest.raises(ValueError, match=f"'{param}' parameter of ASCNetSegmenter must be"):
        ASCNetSegmenter(**{**TINY, param: value}).fit(data[0][:12])


def test_no_cycle_at_all_is_an_error(data):
    with pytest.raises(ValueError, match="at least one training cycle"):
        ASCNetSegmenter(**{**TINY, "n_stage1_cycles": 0, "n_stage2_cycles": 0}).fit(data[0][:12])


def test_histogram_mode_warns_on_a_single_peak(data):
    reference = data[0][:12]
    with pytest.warns(AnomsegWarning, match="single peak"):
        ASCNetSegmenter(**{**TINY, "threshold_method": "histogram-peak"}).fit(reference)


def test_networks_keep_shapes_and_ranges():
    module = ASCNetModule(in_channels=2, width=2)
    x = torch.rand(3, 2, 21, 35)
    outputs = module(x)
    for t in outputs:
        assert t.shape == x.shape and ((t > 0) & (t < 1)).all()
    discriminator = CutDiscriminator(in_channels=2, width=2, input_shape=(21, 35))
    d = discriminator(outputs[0])
    assert d.shape == (3,) and (d.abs() < 1).all()
    with pytest.raises(ValueError, match="built for images of shape"):
        discriminator(torch.rand(1, 2, 32, 32))


def test_multichannel_images(data):
    reference, _unlabelled, _ = data
    two = np.stack([reference[:12], reference[:12] ** 2], axis=-1)
    est = ASCNetSegmenter(**{**TINY, "channel_axis": -1}).fit(two)
    assert est.score_samples(two[:2]).shape == (2, 32, 32)
    assert est.cuts(two[:2])["fence"].shape == (2, 32, 32, 2)
