from pathlib import Path

import numpy as np
import pytest
from skimage.exposure import equalize_hist

from anomseg.baselines import FlairThreshold
from anomseg.datasets import add_synthetic_lesions, load_mslub, make_healthy_images
from anomseg.exceptions import AnomsegWarning
from anomseg.metrics import CurveMetrics
from anomseg.metrics._pixel import pooled_pixels

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def test_scores_are_foreground_quantiles():
    image = np.zeros((1, 10, 10))
    image[0, 2:8, 2:8] = np.arange(36).reshape(6, 6) + 1.0
    scores = FlairThreshold().fit(image).score_samples(image)[0]
    inside = scores[2:8, 2:8].ravel()
    assert (np.diff(inside) > 0).all() and inside[-1] == 1.0
    assert (scores[:2] == 0).all()
    # two intensities, half the foreground each: the cumulative histogram
    # gives the darker half 0.5 and the brighter half 1.0
    image[0, 2:8, 2:8] = np.repeat([1.0, 2.0], 18).reshape(6, 6)
    with pytest.warns(AnomsegWarning, match="tie at 1"):  # two scores: no 5 % FPR
        scores = FlairThreshold(n_bins=2).fit(image).score_samples(image)[0]
    np.testing.assert_array_equal(scores[2:8, 2:8], np.repeat([0.5, 1.0], 18).reshape(6, 6))


def test_bright_lesions_score_highest():
    healthy = make_healthy_images(n_images=8, shape=(48, 48), random_state=0)
    test = make_healthy_images(n_images=4, shape=(48, 48), random_state=1)
    lesioned, truth = add_synthetic_lesions(test, radius=(3, 5), contrast=0.8, random_state=0)
    model = FlairThreshold(max_fpr=0.05).fit(healthy)
    maps = model.score_samples(lesioned)
    assert maps[truth].mean() > 0.95
    assert maps[~truth & (lesioned != 0)].mean() < 0.6
    masks = model.predict(lesioned)
    # rank-based: lesions filling 2-5 % of an image mostly pass a 5 % FPR
    assert masks[truth].mean() > 0.8


def test_channel_selection_and_component_filter():
    healthy = make_healthy_images(n_images=6, shape=(40, 40), random_state=0)
    noise = np.random.default_rng(0).random(healthy.shape) * (healthy != 0)
    two_channels = np.stack([noise + (healthy != 0), healthy], axis=-1)
    model = FlairThreshold(channel_axis=-1, flair_channel=1).fit(two_channels)
    np.testing.assert_array_equal(
        model.score_samples(two_channels), FlairThreshold().fit(healthy).score_samples(healthy)
    )
    with pytest.raises(ValueError, match="'flair_channel' parameter of FlairThreshold"):
        FlairThreshold(channel_axis=-1, flair_channel=2).fit(two_channels)

    raw = FlairThreshold(max_fpr=0.1).fit(healthy)
    filtered = FlairThreshold(max_fpr=0.1, min_component_size=5).fit(healthy)
    filtered_masks = filtered.predict(healthy)
    # calibrated on the filtered masks: a lower threshold, the same rate
    assert filtered.threshold_ < raw.threshold_
    fpr = filtered_masks[healthy != 0].mean()
    assert fpr == filtered.calibration_fpr_ and 0.09 < fpr <= 0.1
    unfiltered = filtered.score_samples(healthy) > filtered.threshold_
    assert filtered_masks.sum() < unfiltered.sum()
    assert not (filtered_masks & ~unfiltered).any()
    from scipy import ndimage

    for mask in filtered_masks:
        labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
        assert n == 0 or np.bincount(labels.ravel())[1:].min() >= 5


def test_equals_scikit_image_per_volume():
    volumes = [np.random.default_rng(i).gamma(4, size=(12, 14, 9)) for i in range(2)]
    maps = FlairThreshold().fit(volumes).score_samples(volumes)
    for volume, anomaly_map in zip(volumes, maps):
        np.testing.assert_allclose(anomaly_map, equalize_hist(volume, nbins=256), rtol=1e-6)


@pytest.mark.skipif(not (DATA / "mslub").is_dir(), reason="../shared/data/mslub is absent")
def test_reproduces_published_figures_on_mslub():
    """Pooled over the 3 patients inside the brain, the published method
    gives AUROC 0.938, AUPRC 0.288 and best Dice 0.382 on these files (the
    paper: best Dice 0.374 on all 30 MSLUB patients)."""
    data = load_mslub(DATA / "mslub")
    model = FlairThreshold().fit(data.images)  # fit only calibrates
    maps = model.score_samples(data.images)
    foreground = [~np.ma.getmaskarray(im) for im in data.images]
    curve = CurveMetrics.from_pixels(*pooled_pixels(data.masks, maps, foreground))
    assert curve.auroc == pytest.approx(0.938, abs=0.03)
    assert curve.average_precision == pytest.approx(0.288, abs=0.03)
    assert curve.best_dice == pytest.approx(0.382, abs=0.03)
    assert curve.best_dice == pytest.approx(0.374, abs=0.03)
