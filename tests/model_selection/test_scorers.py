"""The unsupervised TV-weight scorer, alone, in pipelines and in GridSearchCV."""

import subprocess
import sys

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from anomseg.baselines import FlairThreshold
from anomseg.datasets import make_healthy_images
from anomseg.model_selection import healthy_change_scorer
from anomseg.preprocessing import IntensityScaler, make_anomaly_pipeline
from anomseg.restoration import GMVAERestorer, VAEReconstructor, VAERestorer

TINY = {
    "width": 4,
    "n_epochs": 3,
    "batch_size": 4,
    "n_restoration_steps": 5,
    "device": "cpu",
    "random_state": 0,
}
TRAIN, TEST = np.arange(12), np.arange(12, 16)


@pytest.fixture(scope="module")
def healthy():
    return make_healthy_images(n_images=16, shape=(32, 32), random_state=0)


@pytest.mark.parametrize(
    "estimator",
    [
        VAERestorer(**TINY, tv_weight=1.0),
        GMVAERestorer(**TINY, n_clusters=3, tv_weight="auto", tv_weights=(0.0, 1.0)),
    ],
    ids=["VAERestorer", "GMVAERestorer-auto"],
)
# the barely trained prior's healthy change still falls at 1, the edge of the
# grid, and the search says so: beside the point here
@pytest.mark.filterwarnings("ignore:.*tv_weight='auto' chose")
def test_scorer_is_minus_the_healthy_change_at_the_fitted_weight(estimator, healthy):
    estimator.fit(healthy[TRAIN])
    score = healthy_change_scorer(estimator, healthy[TEST])
    assert isinstance(score, float) and score < 0
    assert score == pytest.approx(-estimator.healthy_change(healthy[TEST])[0], rel=1e-6)


def test_pipeline_steps_transform_before_scoring(healthy):
    raw = 1000 * healthy  # scanner units; the pipeline scales them to [0, 1]
    pipe = Pipeline(
        [
            ("skip", "passthrough"),
            ("scale", IntensityScaler()),
            ("restore", VAERestorer(**TINY, tv_weight=1.0)),
        ]
    ).fit(raw[TRAIN])
    scaled = IntensityScaler().fit_transform(raw[TEST])
    expected = -pipe[-1].healthy_change(scaled)[0]
    assert healthy_change_scorer(pipe, raw[TEST]) == pytest.approx(expected, rel=1e-6)
    # and the same fitted steps as an AnomalyPipeline nested in a pipeline
    inner = make_anomaly_pipeline(pipe["scale"], pipe["restore"])
    nested = Pipeline([("skip", "passthrough"), ("inner", inner)])
    assert healthy_change_scorer(nested, raw[TEST]) == pytest.approx(expected, rel=1e-6)


def test_grid_search_chooses_the_weight_of_least_healthy_change(healthy):
    grid = [0.0, 1.0, 4.0]
    search = GridSearchCV(
        VAERestorer(**TINY, tv_weight=0.0),
        {"tv_weight": grid},
        scoring=healthy_change_scorer,
        cv=[(TRAIN, TEST)],
        refit=False,
        error_score="raise",
    ).fit(healthy)
    # Training is deterministic on the CPU and does not depend on the TV
    # weight, so one network fitted on the same split gives every score.
    reference = VAERestorer(**TINY, tv_weight=0.0).fit(healthy[TRAIN])
    change = reference.healthy_change(healthy[TEST], grid)
    assert np.ptp(change) > 1e-3  # the choice is not a tie
    np.testing.assert_allclose(search.cv_results_["mean_test_score"], -change, rtol=1e-5)
    assert search.best_params_["tv_weight"] == grid[int(np.argmin(change))]


@pytest.mark.parametrize(
    "estimator, named",
    [
        (FlairThreshold(), "got FlairThreshold"),
        (VAEReconstructor(), "got VAEReconstructor"),
        (
            make_anomaly_pipeline(IntensityScaler(), FlairThreshold()),
            "got FlairThreshold, the last step of the AnomalyPipeline",
        ),
    ],
)
def test_rejects_estimators_without_healthy_change(estimator, named, healthy):
    with pytest.raises(TypeError, match=named):
        healthy_change_scorer(estimator, healthy[TEST])


def test_import_does_not_import_torch():
    code = "import sys, anomseg.model_selection; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
