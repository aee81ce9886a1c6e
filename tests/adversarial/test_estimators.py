"""ASCNetSegmenter: training, the cuts, the fit signature and thresholds."""

import numpy as np
import pytest
import torch

from anomseg.adversarial import ASCNetModule, ASCNetSegmenter, CutDiscriminator
from anomseg.datasets import add_synthetic_lesions, make_healthy_images
from anomseg.exceptions import AnomsegWarning
from anomseg.preprocessing import IntensityScaler, make_anomaly_pipeline

#: A short training of 30 reference and 30 lesioned 32 x 32 toy images
#: (about 9 s on one CPU thread), whose outcome the tests check only where it
#: held with a margin over 5 seeds at 1 torch thread and 3 at 2: the
#: reconstruction loss fell to 0.59-0.74 of its first cycle's, the
#: discriminator's stage-1 loss to at most 0.016 of its first, and the fence
#: cut's mean over the blobs stayed within 0.96-1.19 of its mean elsewhere
#: (1.60 in the input). Whether the *wild* cut isolates the blobs is left
#: untested: it did in about half of the runs (wild-cut AUROC 0.50-0.93 over
#: 8 runs; 0.31-0.83 over 4 with 40 cycles), a matter of the floating-point
#: path, not a property of the method at this budget.
TRAINED = {
    "width": 4,
    "n_stage1_cycles": 6,
    "n_stage2_cycles": 2,
    "discriminator_steps": 3,
    "generator_steps": 10,
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
def small_data():
    X = make_healthy_images(n_images=60, shape=(32, 32), random_state=0)
    lesioned, truth = add_synthetic_lesions(X[30:], radius=(3, 6), contrast=1.0, random_state=1)
    return X[:30], lesioned, truth


@pytest.fixture(scope="module")
def trained(small_data):
    reference, unlabelled, _ = small_data
    return ASCNetSegmenter(**TRAINED).fit(reference, X_unlabelled=unlabelled)


def test_training_progresses(trained):
    history = trained.history_
    assert [h["stage"] for h in history] == [1] * 6 + [2] * 2
    first, last = history[0], history[-1]
    assert last["reconstruction_loss"] < 0.85 * first["reconstruction_loss"]
    # the discriminator learns to tell fence cuts from reference images
    stage1 = [h["discriminator_loss"] for h in history if h["stage"] == 1]
    assert min(stage1[1:]) < 0.1 * stage1[0]
    assert all(0 <= h["discriminator_accuracy"] <= 1 for h in history)
    assert np.all(np.diff([h["seconds"] for h in history]) > 0)


def test_the_fence_cut_does_not_single_the_blob_out(trained, small_data):
    """The fence cut is what the discriminator compares with normal images:
    the blobs stand out much less there than in the input."""
    _, unlabelled, truth = small_data
    foreground = unlabelled != 0
    contrast_in_input = unlabelled[truth].mean() / unlabelled[foreground & ~truth].mean()
    assert contrast_in_input > 1.5
    fence = trained.cuts(unlabelled)["fence"]
    assert fence[truth].mean() < 1.35 * fence[foreground & ~truth].mean()


def test_maps_are_the_reconstruction_or_the_wild_cut(trained, small_data):
    _, unlabelled, _ = small_data
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


def test_histogram_threshold_is_stored_and_selectable(trained, small_data):
    reference, unlabelled, _ = small_data
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


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_networks_keep_shapes_and_ranges(seed):
    # Seeded: unseeded, a rare draw (torch.rand gives exact zeros, float32
    # sigmoids saturate) made the ranges fail once in CI.
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        module = ASCNetModule(in_channels=2, width=2)
        x = torch.rand(3, 2, 21, 35)
    outputs = module(x)
    for t in outputs:
        assert t.shape == x.shape and ((t >= 0) & (t <= 1)).all()
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
