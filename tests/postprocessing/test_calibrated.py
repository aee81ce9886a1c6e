"""Post-processing calibrated with the threshold: ``postprocessing`` filters
apply in predict, and max_fpr bounds the false-positive rate of the
post-processed masks."""

import pickle

import numpy as np
import pytest
from scipy import ndimage

from anomseg.baselines import FlairThreshold
from anomseg.datasets import add_synthetic_lesions, make_healthy_images
from anomseg.denoising import DenoisingAESegmenter
from anomseg.metrics import evaluate
from anomseg.postprocessing import ConnectedComponentFilter, MorphologicalFilter
from anomseg.utils._values import MapStore

MAX_FPR = 0.1
TINY_DAE = {
    "width": 4,
    "depth": 3,
    "noise_resolution": 4,
    "n_epochs": 4,
    "batch_size": 4,
    "validation_fraction": 0.0,
    "device": "cpu",
    "random_state": 0,
    "max_fpr": MAX_FPR,
}
#: 2D full connectivity, image by image of a stack.
_IN_PLANE = np.zeros((3, 3, 3), bool)
_IN_PLANE[1] = True


@pytest.fixture(scope="module")
def trained_dae():
    """A tiny denoising autoencoder, trained, not calibrated."""
    train = make_healthy_images(n_images=12, shape=(32, 32), random_state=0)
    return DenoisingAESegmenter(**TINY_DAE).fit(train, calibrate=False)


@pytest.fixture(scope="module")
def calibration():
    return make_healthy_images(n_images=12, shape=(32, 32), random_state=1)


def _calibrated(kind, dae, X, postprocessing):
    """A FlairThreshold, or the trained DAE (a copy), calibrated on X."""
    if kind == "flair":
        return FlairThreshold(max_fpr=MAX_FPR, postprocessing=postprocessing).fit(X)
    est = pickle.loads(pickle.dumps(dae))
    return est.set_params(postprocessing=postprocessing).calibrate(X)


def _component_sizes(masks):
    labels, _ = ndimage.label(masks, structure=_IN_PLANE)
    return np.bincount(labels.ravel())[1:]


@pytest.mark.parametrize("kind", ["flair", "dae"])
def test_predict_returns_the_calibrated_filtered_masks(kind, trained_dae, calibration):
    unseen = make_healthy_images(n_images=6, shape=(32, 32), random_state=2)
    est = _calibrated(kind, trained_dae, calibration, [ConnectedComponentFilter(min_size=4)])
    maps = est.score_samples(unseen)
    masks = est.predict(unseen)
    expected = np.stack([est.postprocess_mask(m > est.threshold_) for m in maps])
    np.testing.assert_array_equal(masks, expected)
    # the filter of scikit-learn's API, applied by hand, gives the same
    np.testing.assert_array_equal(
        masks, ConnectedComponentFilter(min_size=4).transform(maps > est.threshold_)
    )
    assert masks.any()
    assert _component_sizes(masks).min() >= 4
    assert _component_sizes(maps > est.threshold_).min() < 4  # the filter had work
    # the FPR of the filtered masks on the calibration pixels: at most max_fpr, close to it
    assert 0.9 * MAX_FPR <= est.calibration_fpr_ <= MAX_FPR
    own = est.predict(calibration)[calibration != 0].mean()
    assert own == pytest.approx(est.calibration_fpr_, abs=1e-9)
    # removing specks lets the threshold come down
    plain = _calibrated(kind, trained_dae, calibration, None)
    assert plain.calibration_fpr_ <= MAX_FPR
    raw = plain.score_samples(calibration) > plain.threshold_
    filtered = ConnectedComponentFilter(min_size=4).transform(raw)
    assert filtered.sum() < raw.sum()  # the filter had work at the plain threshold
    assert est.threshold_ <= plain.threshold_
    if kind == "flair":  # (a trained map's margin depends on its training)
        assert est.threshold_ < plain.threshold_


@pytest.mark.parametrize("seed", [10, 11, 12])
def test_filtered_fpr_holds_on_unseen_healthy_images(seed):
    """Calibrated on 24 healthy images, the FPR of the filtered masks on 24
    others is close to max_fpr."""
    images = make_healthy_images(n_images=48, shape=(32, 32), random_state=seed)
    calibration, unseen = images[:24], images[24:]
    est = FlairThreshold(max_fpr=MAX_FPR, postprocessing=[ConnectedComponentFilter(min_size=4)])
    est.fit(calibration)
    fpr = est.predict(unseen)[unseen != 0].mean()
    assert 0.5 * MAX_FPR <= fpr <= 1.6 * MAX_FPR, fpr


def test_filtered_fpr_of_a_learned_map_holds_on_unseen_healthy_images(trained_dae):
    """The same for the tiny DAE, whose false positives come in clusters: the
    mean over 3 draws of the healthy images."""
    rates = []
    for seed in (10, 11, 12):
        images = make_healthy_images(n_images=48, shape=(32, 32), random_state=seed)
        calibration, unseen = images[:24], images[24:]
        est = _calibrated("dae", trained_dae, calibration, [ConnectedComponentFilter(min_size=4)])
        assert est.calibration_fpr_ <= MAX_FPR
        rates.append(est.predict(unseen)[unseen != 0].mean())
    assert 0.5 * MAX_FPR <= np.mean(rates) <= 1.6 * MAX_FPR, rates
    assert min(rates) >= 0.2 * MAX_FPR and max(rates) <= 2.5 * MAX_FPR, rates


def _flagged(maps, foreground, threshold, min_size):
    """Foreground voxels that survive a connected-component filter, by hand."""
    labels, _ = ndimage.label(maps > threshold, structure=_IN_PLANE)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_size
    keep[0] = False
    return int(np.count_nonzero(keep[labels] & foreground))


@pytest.mark.parametrize("seed, rate, min_size", [(0, 0.1, 4), (1, 0.05, 6), (2, 0.02, 3)])
def test_the_search_finds_the_best_threshold(seed, rate, min_size):
    """Against brute force over the calibration values: the lowest of them
    whose filtered masks flag at most floor(rate * n) voxels."""
    X = make_healthy_images(n_images=16, shape=(32, 32), random_state=seed)
    est = FlairThreshold(max_fpr=rate, postprocessing=[ConnectedComponentFilter(min_size)])
    est.fit(X)
    maps, foreground = est.score_samples(X), X != 0
    n = int(foreground.sum())
    allowed = int(np.floor(rate * n))
    assert est.n_calibration_pixels_ == n
    values = np.unique(maps[foreground])
    # The filter only removes voxels, so the filtered count falls as the
    # threshold rises: no value below the unfiltered threshold at 3 * rate
    # can be the best one, which the first flagged count confirms.
    start = np.searchsorted(values, np.quantile(maps[foreground], 1 - 3 * rate))
    counts = np.array([_flagged(maps, foreground, v, min_size) for v in values[start:]])
    assert counts[0] > allowed
    assert np.all(np.diff(counts) <= 0)
    best = np.flatnonzero(counts <= allowed)[0]
    got = _flagged(maps, foreground, est.threshold_, min_size)
    assert est.calibration_fpr_ * n == pytest.approx(got)
    assert got <= allowed
    assert got >= 0.99 * counts[best]
    assert est.threshold_ >= values[start + best]


@pytest.mark.parametrize(
    "postprocessing",
    [
        [MorphologicalFilter("opening-closing", 1)],
        [MorphologicalFilter("closing", 2)],
        [MorphologicalFilter("opening", 1), ConnectedComponentFilter(min_size=5)],
    ],
    ids=["opening-closing", "closing", "opening-components"],
)
def test_filters_that_add_voxels_are_calibrated_too(postprocessing, calibration):
    """Closing adds voxels to the raw mask: the filtered FPR still holds."""
    est = FlairThreshold(max_fpr=MAX_FPR, postprocessing=postprocessing).fit(calibration)
    masks = est.predict(calibration)
    foreground = calibration != 0
    assert est.calibration_fpr_ <= MAX_FPR
    assert masks[foreground].mean() == pytest.approx(est.calibration_fpr_, abs=1e-9)
    assert est.calibration_fpr_ >= 0.8 * MAX_FPR
    expected = est.score_samples(calibration) > est.threshold_
    for step in postprocessing:
        expected = step.transform(expected)
    np.testing.assert_array_equal(masks, expected)


def test_closing_never_flags_the_background():
    """A mask never holds a voxel outside the foreground, which maps are 0
    at and calibration does not count, even where closing would fill a hole
    of background among flagged voxels ("masked pixels are never flagged",
    says threshold_maps)."""
    X = make_healthy_images(n_images=8, shape=(32, 32), random_state=0)
    est = FlairThreshold(max_fpr=MAX_FPR, postprocessing=[MorphologicalFilter("closing", 1)])
    est.fit(X)
    image = X[0].copy()
    rows, cols = np.nonzero(image)
    r, c = int(rows.mean()), int(cols.mean())
    image[r - 2 : r + 3, c - 2 : c + 3] = 1.0  # a bright patch
    image[r, c] = 0.0  # with one background voxel in its middle
    assert est.predict(image[None])[0, r - 2 : r + 3, c - 1].all()
    masks = est.predict(image[None])
    assert not masks[0][image == 0].any()
    masked = est.masked_score_samples(image[None])
    assert not est.threshold_maps(masked)[0][np.ma.getmaskarray(masked[0])].any()


@pytest.mark.parametrize("memory_limit", [2**26, 0], ids=["in-memory", "spilled"])
def test_map_store_round_trips_maps_and_masks(memory_limit):
    rng = np.random.default_rng(0)
    shapes = [(5, 7), (3, 5, 7), (1, 1), (4, 4, 3)]  # masks of 35 and 105 bits too
    pairs = [(rng.normal(size=s), rng.random(s) < 0.3) for s in shapes]
    pairs.append((np.array([[np.inf, -0.0], [1e-40, 3.4e38]]), np.ones((2, 2), bool)))
    with MapStore(memory_limit=memory_limit) as store:
        for anomaly_map, mask in pairs:
            store.append(anomaly_map, mask.astype(np.uint8) if anomaly_map.ndim == 3 else mask)
        assert len(store) == len(pairs)
        for _ in range(2):  # read again and again
            got = list(store)
            assert len(got) == len(pairs)
            for (m, k), (expected_map, expected_mask) in zip(got, pairs):
                assert m.dtype == np.float32 and k.dtype == bool
                np.testing.assert_array_equal(m, expected_map.astype(np.float32))
                np.testing.assert_array_equal(k, expected_mask)
        assert (store._file is not None) == (memory_limit == 0)
    assert len(store) == 0


def _dice(truth, predicted):
    return 2 * np.sum(truth & predicted) / (truth.sum() + predicted.sum())


def test_evaluate_gives_the_dice_of_the_filtered_masks():
    healthy = make_healthy_images(n_images=12, shape=(32, 32), random_state=0)
    est = FlairThreshold(max_fpr=MAX_FPR, postprocessing=[ConnectedComponentFilter(min_size=6)])
    est.fit(healthy)
    test = make_healthy_images(n_images=5, shape=(32, 32), random_state=3)
    scans, truth = add_synthetic_lesions(
        test, n_lesions=1, radius=(2, 4), contrast=0.8, random_state=0
    )
    scans, truth = np.asarray(scans), np.asarray(truth).astype(bool)
    truth[4] = False  # a scan without a lesion
    scans[4] = test[4]
    maps = est.score_samples(scans)
    foreground = scans != 0
    report = evaluate(
        truth,
        maps,
        foreground=foreground,
        thresholds=est.calibration_thresholds_,
        postprocess=est.postprocess_mask,
    )
    key = f"calibrated on healthy data at FPR {100 * MAX_FPR:g}%"
    predicted = est.predict(scans)
    pooled = _dice(truth[foreground], predicted[foreground])
    assert report["Dice", "pooled", key] == pytest.approx(pooled)
    # the filter matters here: without it, another Dice
    plain = evaluate(truth, maps, foreground=foreground, thresholds=est.calibration_thresholds_)
    assert plain["Dice", "pooled", key] != pytest.approx(pooled)

    records = report.volume_records()
    assert [r["volume"] for r in records] == list(range(5))
    assert [r["has_lesion"] for r in records] == [True] * 4 + [False]
    assert records[4] == {"volume": 4, "has_lesion": False} and report.volumes[4] == []
    for i in range(4):
        own = _dice(truth[i][foreground[i]], predicted[i][foreground[i]])
        assert records[i][f"Dice [{key}]"] == pytest.approx(own)
    # every per-volume row is the mean of the volumes' own figures
    for row in report.results:
        if row.aggregation != "per-volume":
            continue
        values = [r[f"{row.metric} [{row.threshold}]"] for r in records if r["has_lesion"]]
        assert row.n_volumes == 4
        assert row.value == pytest.approx(np.mean(values), nan_ok=True)
    assert all(v.aggregation == "volume" for volume in report.volumes for v in volume)
