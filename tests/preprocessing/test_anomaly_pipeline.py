import pickle

import numpy as np
import pytest
from sklearn.base import clone

from anomseg.baselines import FlairThreshold
from anomseg.preprocessing import (
    AnomalyPipeline,
    ForegroundCropper,
    ForegroundMasker,
    HistogramMatcher,
    IntensityScaler,
    Resizer,
    make_anomaly_pipeline,
)


def make_scans(n=6, shape=(40, 36), seed=0):
    """Heads of noise on faint background noise, one with a bright lesion."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 2, size=(n, *shape))
    X[:, 6:34, 5:29] = rng.normal(100, 10, size=(n, 28, 24))
    X[0, 15:20, 12:18] = 250.0
    return X


@pytest.fixture
def pipe():
    return make_anomaly_pipeline(
        ForegroundMasker(),
        ForegroundCropper(margin=2),
        Resizer((16, 16)),
        FlairThreshold(max_fpr=0.05),
    )


def test_maps_come_back_in_the_input_geometry(pipe):
    X = make_scans()
    pipe.fit(X)
    maps = pipe.score_samples(X)
    assert maps.shape == X.shape
    masks = pipe.predict(X)
    assert masks.shape == X.shape and masks.dtype == bool
    np.testing.assert_array_equal(masks, maps > pipe.threshold_)
    np.testing.assert_allclose(pipe.decision_function(X), maps - np.float32(pipe.threshold_))
    assert pipe.threshold_ == pipe[-1].threshold_
    # The lesion is found where it is in the input; the background is 0.
    assert masks[0, 16:19, 13:17].all()
    assert (maps[:, :4] == 0).all()


def test_lists_stay_lists(pipe):
    X = make_scans()
    pipe.fit(X)
    maps = pipe.score_samples(list(X))
    assert isinstance(maps, list) and maps[0].shape == X.shape[1:]
    masks = pipe.predict(list(X))
    assert isinstance(masks, list)
    np.testing.assert_array_equal(masks[0], maps[0] > pipe.threshold_)


def test_intensity_only_pipeline_equals_the_estimator():
    X = make_scans()
    pipe = make_anomaly_pipeline(IntensityScaler(), FlairThreshold()).fit(X)
    # Equalisation ignores min-max scaling, up to float32 rounding.
    np.testing.assert_allclose(
        pipe.score_samples(X), FlairThreshold().fit(X).score_samples(X), atol=1e-6
    )


def test_clone_pickle_and_params(pipe):
    X = make_scans()
    assert isinstance(clone(pipe), AnomalyPipeline)
    pipe.set_params(resizer__shape=(12, 12), flairthreshold__max_fpr=0.1)
    pipe.fit(X)
    assert pipe[-2].output_shape_ == (12, 12)
    restored = pickle.loads(pickle.dumps(pipe))
    np.testing.assert_array_equal(restored.predict(X), pipe.predict(X))
    assert restored.threshold_ == pipe.threshold_


def test_threshold_before_fit_is_missing():
    pipe = AnomalyPipeline([("match", HistogramMatcher()), ("flair", FlairThreshold())])
    assert not hasattr(pipe, "threshold_")


def test_predict_applies_the_estimators_post_processing():
    X = make_scans()
    pipe = make_anomaly_pipeline(
        ForegroundMasker(), ForegroundCropper(), FlairThreshold(min_component_size=10)
    ).fit(X)
    masks = pipe.predict(X)
    raw = pipe.score_samples(X) > pipe.threshold_
    assert masks.sum() < raw.sum() and not (masks & ~raw).any()


def test_images_are_validated_once_per_call(pipe, monkeypatch):
    """The pipeline validates the input, then passes an ImageBatch on: no step
    converts and checks the images again."""
    from anomseg.utils import _validation

    calls = []
    original = _validation._split_sample

    def spy(sample, *args):
        calls.append(1)
        return original(sample, *args)

    monkeypatch.setattr(_validation, "_split_sample", spy)
    X = make_scans()
    pipe.fit(X)
    assert len(calls) == len(X)
    calls.clear()
    pipe.predict(X)
    assert len(calls) == len(X)


def test_masked_maps_carry_the_foreground_the_estimator_scored(pipe):
    X = make_scans()
    pipe.fit(X)
    masked = pipe.masked_score_samples(X)
    np.testing.assert_array_equal(masked.data, pipe.score_samples(X))
    # the head mask of ForegroundMasker, not the noisy non-zero background,
    # cropped and resized, then mapped back to the input grid
    head = ~ForegroundMasker().fit_transform(X).mask
    assert (masked.mask == ~head).mean() > 0.97
    assert not masked.mask[:, 10:30, 10:25].any() and masked.mask[:, :3, :].all()
    np.testing.assert_array_equal(pipe.threshold_maps(masked), pipe.predict(X) & head)


def test_a_bare_estimator_as_a_one_step_pipeline():
    X = make_scans()
    est = FlairThreshold().fit(X)
    pipe = make_anomaly_pipeline(FlairThreshold()).fit(X)
    np.testing.assert_array_equal(pipe.predict(X), est.predict(X))
    np.testing.assert_array_equal(pipe.masked_score_samples(X).mask, X == 0)


def test_predict_returns_the_maps_in_the_input_geometry_from_one_pass(pipe, monkeypatch):
    X = make_scans()
    pipe.fit(X)
    maps, masks = pipe.score_samples(X), pipe.predict(X)
    calls = []
    score = type(pipe[-1]).score_samples
    monkeypatch.setattr(
        type(pipe[-1]), "score_samples", lambda self, b: calls.append(1) or score(self, b)
    )
    got_masks, got_maps = pipe.predict(X, return_maps=True)
    assert calls == [1]  # the final step scored once for both
    assert got_maps.shape == got_masks.shape == X.shape  # the input's geometry
    np.testing.assert_array_equal(got_maps, maps)
    np.testing.assert_array_equal(got_masks, masks)
    assert got_masks[0, 16:19, 13:17].all()
    # a list input gives lists
    got_masks, got_maps = pipe.predict(list(X), return_maps=True)
    assert isinstance(got_maps, list) and isinstance(got_masks, list)
    np.testing.assert_array_equal(got_maps[0], maps[0])
