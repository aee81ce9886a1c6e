"""Machinery of the base class that the public estimators do not all use:
slice-wise 2D methods and the calibration split."""

import numpy as np
import pytest

from anomseg.base import BaseAnomalySegmenter
from anomseg.datasets import make_healthy_images
from anomseg.exceptions import ShapeMismatchError


class MeanImageDistance(BaseAnomalySegmenter):
    """A toy 2D method: distance to the mean training slice."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.anomaly_tags.slice_wise = True
        tags.anomaly_tags.requires_fit_shape = True
        return tags

    def __init__(self, max_fpr=0.05, calibration_fraction=0.25, random_state=None):
        self.max_fpr = max_fpr
        self.calibration_fraction = calibration_fraction
        self.random_state = random_state

    def _fit(self, batch):
        assert batch.spatial_ndim == 2
        self.n_training_slices_ = len(batch)
        self.mean_ = np.mean(batch.images, axis=0)

    def _score(self, batch):
        assert batch.spatial_ndim == 2
        return [np.abs(image - self.mean_) for image in batch.images]


@pytest.fixture
def volumes():
    slices = make_healthy_images(n_images=40, shape=(24, 24), random_state=0)
    return np.moveaxis(slices.reshape(8, 5, 24, 24), 1, -1)  # 8 volumes, 5 slices


def test_volumes_are_processed_slice_by_slice_along_the_last_axis(volumes):
    model = MeanImageDistance(random_state=0).fit(volumes)
    # 2 of 8 volumes are held out whole: 6 x 5 training slices
    assert model.n_training_slices_ == 30
    assert model.image_shape_ == (24, 24)
    maps = model.score_samples(volumes)
    assert maps.shape == volumes.shape
    slices = np.moveaxis(volumes[3], -1, 0)
    np.testing.assert_array_equal(np.moveaxis(model.score_samples(slices), 0, -1), maps[3])
    # volumes of other depths are fine; other slice shapes are not
    assert model.score_samples([volumes[0, ..., :2]])[0].shape == (24, 24, 2)
    with pytest.raises(ShapeMismatchError, match="slices of shape"):
        model.score_samples([volumes[0, :20]])


def test_calibration_split_by_groups_is_seeded(volumes):
    slices = np.concatenate([np.moveaxis(v, -1, 0) for v in volumes])
    groups = np.repeat(np.arange(8), 5)
    a = MeanImageDistance(random_state=1)
    train, calibration = a._calibration_split(
        a._validate_images(slices, "fit", reset=True), groups
    )
    assert len(calibration) == 10 and len(set(groups[train]) & set(groups[calibration])) == 0
    again = MeanImageDistance(random_state=1)._calibration_split(
        a._validate_images(slices, "fit"), groups
    )
    np.testing.assert_array_equal(again[1], calibration)
    with pytest.raises(ValueError, match="one label per sample"):
        a._calibration_split(a._validate_images(slices, "fit"), groups[:-1])
    with pytest.raises(ValueError, match="at least 2"):
        MeanImageDistance().fit(slices[:5], groups=np.zeros(5))


def test_calibration_scores_in_chunks_and_spills_its_values(volumes, monkeypatch):
    """With a chunk of one volume and values that go to a file, the
    thresholds are those of all the calibration maps scored at once."""
    import anomseg._calibration
    import anomseg.base
    from anomseg.metrics import threshold_at_fpr
    from anomseg.utils._values import ValueStore

    reference = MeanImageDistance(random_state=0).fit(volumes)
    chunks, stores = [], []

    class SpyingStore(ValueStore):
        def __init__(self):
            super().__init__(memory_limit=1000, chunk_size=100)
            stores.append(self)

    score = MeanImageDistance._score

    def spying_score(self, batch):
        chunks.append(len(batch))
        return score(self, batch)

    monkeypatch.setattr(MeanImageDistance, "_score", spying_score)
    monkeypatch.setattr(anomseg._calibration, "SCORE_CHUNK_VOXELS", 24 * 24 * 5)
    monkeypatch.setattr(anomseg.base, "ValueStore", SpyingStore)
    model = MeanImageDistance(random_state=0).fit(volumes)
    # 2 calibration volumes of 5 slices, scored one volume at a time
    assert chunks == [5, 5]
    assert len(stores) == 1 and stores[0]._file is None  # closed, file removed
    assert model.calibration_thresholds_ == reference.calibration_thresholds_
    assert model.calibration_fpr_ == reference.calibration_fpr_
    assert model.n_calibration_pixels_ == reference.n_calibration_pixels_
    # and they are the thresholds of the held-out volumes' maps
    batch = model._validate_images(volumes, "fit")
    held_out = model._calibration_split(batch, None)[1]
    maps = list(model.score_samples(volumes[held_out]))
    foreground = [batch.foreground[i] for i in held_out]
    assert model.n_calibration_pixels_ == sum(int(fg.sum()) for fg in foreground)
    for rate, threshold in model.calibration_thresholds_.items():
        assert threshold == threshold_at_fpr(maps, rate, foreground)
    values = np.concatenate([m[fg] for m, fg in zip(maps, foreground)])
    assert model.calibration_fpr_ == np.mean(values > model.threshold_)


# -- issue 24: inputs that look wrong get a word --------------------------------
def _flair_images():
    return make_healthy_images(n_images=6, shape=(24, 24), random_state=0)


@pytest.mark.parametrize("calibrate", [True, False])
def test_groups_of_the_wrong_length_are_refused(calibrate):
    from anomseg.baselines import FlairThreshold  # learns nothing: groups unused

    with pytest.raises(
        ValueError, match=r"'groups' passed to FlairThreshold\.fit.*length 6; got length 4"
    ):
        FlairThreshold().fit(_flair_images(), groups=[0, 0, 1, 1], calibrate=calibrate)


class NaNWeights(MeanImageDistance):
    """Maps of NaN in one corner, as a network with NaN weights gives."""

    def _score(self, batch):
        maps = super()._score(batch)
        for m in maps:
            m[10:12, 10:12] = np.nan
        return maps


def test_maps_with_nan_are_refused_never_thresholded(volumes):
    model = MeanImageDistance(random_state=0).fit(volumes)
    broken = NaNWeights(random_state=0)
    broken.__dict__.update({k: v for k, v in vars(model).items() if k.endswith("_")})
    for method in ("score_samples", "predict", "decision_function", "masked_score_samples"):
        with pytest.raises(ValueError, match=rf"\[NaNWeights\.{method}\].*hold \d+ NaN value"):
            getattr(broken, method)(volumes[:2])
    with pytest.raises(ValueError, match=r"\[NaNWeights\.fit\].*healthy calibration images"):
        NaNWeights(random_state=0).fit(volumes)
    maps = model.score_samples(volumes[:1])
    maps[0, 12, 12, 2] = np.nan
    with pytest.raises(ValueError, match=r"\[MeanImageDistance\.threshold_maps\] maps\[0\]"):
        model.threshold_maps(maps)


def test_masks_as_scans_warn_and_cannot_be_fitted_on():
    from anomseg.baselines import FlairThreshold
    from anomseg.exceptions import AnomsegWarning

    images = _flair_images()
    masks = (images > np.median(images[images > 0])).astype(np.float32)
    with pytest.raises(ValueError, match=r"FlairThreshold\.fit\].*look like masks"):
        FlairThreshold().fit(masks)
    model = FlairThreshold().fit(images)
    with pytest.warns(AnomsegWarning, match=r"score_samples\].*values 0 and 1.*a mask"):
        model.score_samples(masks[:1])
    with pytest.warns(AnomsegWarning, match=r"predict\] 2 of the 3 images \(X\[0\], X\[1\]\)"):
        model.predict(np.concatenate([masks[:2] * 255, images[:1]]))


def test_a_degenerate_calibration_warns():
    from anomseg.baselines import FlairThreshold
    from anomseg.exceptions import AnomsegWarning

    images = _flair_images()
    inside = images > 0
    levels = np.where(images > np.median(images[inside]), 100.5, 50.5)
    flat = np.where(inside, levels, 0).astype(np.float32)  # two values: no spread
    with pytest.warns(AnomsegWarning, match=r"\[FlairThreshold\.fit\] The threshold flags none"):
        model = FlairThreshold().fit(flat)
    assert model.calibration_fpr_ == 0
    with pytest.warns(AnomsegWarning, match=r"\[FlairThreshold\.calibrate\].*tie at"):
        model.calibrate(flat)


@pytest.mark.parametrize("as_list", [False, True])
def test_predict_returns_the_maps_of_its_one_scoring_pass(volumes, as_list, monkeypatch):
    model = MeanImageDistance(random_state=0).fit(volumes)
    X = list(volumes) if as_list else volumes
    maps, masks = model.score_samples(X), model.predict(X)
    calls = []
    score = MeanImageDistance._score
    monkeypatch.setattr(
        MeanImageDistance, "_score", lambda self, batch: calls.append(1) or score(self, batch)
    )
    got_masks, got_maps = model.predict(X, return_maps=True)
    assert len(calls) == 1  # one scoring pass gives both
    assert isinstance(got_maps, list) == isinstance(got_masks, list) == as_list
    np.testing.assert_array_equal(np.asarray(got_maps), np.asarray(maps))
    np.testing.assert_array_equal(np.asarray(got_masks), np.asarray(masks))
    assert np.asarray(got_masks).any()
