"""AnomalyEnsemble: members' maps on one scale (healthy tail probabilities),
combined, then calibrated like any estimator's; make_seed_ensemble."""

import pickle

import numpy as np
import pytest
from sklearn.base import clone

from anomseg import load_model, model_info
from anomseg.adversarial import ASCNetSegmenter
from anomseg.baselines import FlairThreshold
from anomseg.datasets import add_synthetic_lesions, make_healthy_images
from anomseg.denoising import DenoisingAESegmenter
from anomseg.ensemble import AnomalyEnsemble, make_seed_ensemble

MAX_FPR = 0.1
TINY_DAE = {
    "width": 4,
    "depth": 3,
    "noise_resolution": 4,
    "n_epochs": 4,
    "batch_size": 4,
    "validation_fraction": 0.0,
    "device": "cpu",
}
TINY_ASCNET = {
    "width": 4,
    "n_stage1_cycles": 2,
    "n_stage2_cycles": 1,
    "discriminator_steps": 2,
    "generator_steps": 3,
    "batch_size": 4,
    "device": "cpu",
}


def _dae(**params):
    return DenoisingAESegmenter(**{**TINY_DAE, "random_state": 0, **params})


def _pair(**params):
    """A learned member and a learning-free one."""
    return AnomalyEnsemble(
        [("dae", _dae()), ("flair", FlairThreshold())],
        **{"max_fpr": MAX_FPR, "calibration_fraction": 0.5, "random_state": 0, **params},
    )


@pytest.fixture(scope="module")
def healthy():
    return make_healthy_images(n_images=12, shape=(32, 32), random_state=0)


@pytest.fixture(scope="module")
def unseen():
    return make_healthy_images(n_images=6, shape=(32, 32), random_state=1)


@pytest.fixture(scope="module")
def pair(healthy):
    return _pair().fit(healthy)


def _copy(estimator):
    return pickle.loads(pickle.dumps(estimator))


def _member_scores(member, X):
    """A member's map on the ensemble's scale, -log10 of its tail probability
    (NaN where float32 holds too little of it, as the ensemble's own float64
    does not: see test_tail_probability_stays_positive)."""
    tail = member.tail_probability(member.score_samples(X)).astype(np.float64)
    return np.where(tail > 1e-30, -np.log10(np.maximum(tail, 1e-45)), np.nan)


def _assert_close_where_defined(maps, expected):
    defined = np.isfinite(expected)
    assert defined.mean() > 0.99
    np.testing.assert_allclose(maps[defined], expected[defined], rtol=1e-5, atol=1e-6)


# -- tail_probability -----------------------------------------------------------------------------
@pytest.mark.parametrize("member", ["dae", "flair"])
def test_tail_probability_follows_the_healthy_quantiles(pair, unseen, member):
    est = pair.named_estimators_[member]
    quantiles = est.healthy_quantiles_
    values = np.asarray(quantiles["value"], np.float32)
    tails = np.asarray(quantiles["tail"])
    assert np.all(np.diff(values) >= 0) and np.all(np.diff(tails) < 0)
    assert tails[0] == 1 and tails[-1] == pytest.approx(1 / est.n_calibration_pixels_)
    # at each quantile value, its stored tail fraction (the largest, for ties)
    distinct, first = np.unique(values, return_index=True)
    got = est.tail_probability(distinct.reshape(1, 1, -1))[0, 0]
    np.testing.assert_allclose(got, tails[first], rtol=1e-5)

    low, high = float(values[0]), float(values[-1])
    span = high - low
    scores = np.linspace(low - span, high + span, 4001, dtype=np.float32)
    tail = est.tail_probability(scores.reshape(1, 1, -1))[0, 0]
    assert tail.dtype == np.float32
    assert np.all(np.diff(tail) <= 0)  # non-increasing in the score
    assert np.all(tail[scores <= low] == 1)
    assert np.all(tail <= 1) and np.all(tail >= 0)
    # strictly decreasing above the highest healthy score (while float32 holds it)
    above = (high + span * np.geomspace(1e-5, 1e-1, 40)).astype(np.float32)
    above = np.unique(above[above > high])
    beyond = est.tail_probability(above.reshape(1, 1, -1))[0, 0]
    positive = beyond[beyond > 1e-30]
    assert positive.size >= 5
    assert beyond[0] < got[-1]
    assert np.all(np.diff(positive) < 0)
    # the background (maps are 0 there) is as common as anything healthy
    maps = est.score_samples(unseen)
    np.testing.assert_array_equal(est.tail_probability(maps)[unseen == 0], 1)
    assert isinstance(est.tail_probability(list(maps)), list)


@pytest.mark.parametrize("member", ["dae", "flair"])
def test_tail_probability_stays_positive_above_the_healthy_scores(pair, member):
    """The tail probability is in (0, 1], as documented: a lesion scoring
    above every healthy voxel is rare, not impossible (and -log10 of 0 is
    infinite)."""
    est = pair.named_estimators_[member]
    values = np.asarray(est.healthy_quantiles_["value"])
    span = values[-1] - values[0]
    scores = np.float32(values[-1] + span * np.array([0.1, 0.5, 1.0]))
    tail = est.tail_probability(scores.reshape(1, 1, -1))[0, 0]
    assert np.all(tail > 0), tail
    assert np.all(np.isfinite(-np.log10(tail)))


# -- combining ------------------------------------------------------------------------------------
def test_one_member_ensemble_is_a_monotone_transform_of_its_member(healthy, unseen):
    ensemble = AnomalyEnsemble(
        [("dae", _dae())], max_fpr=MAX_FPR, calibration_fraction=0.5, random_state=0
    ).fit(healthy)
    member = ensemble.estimators_[0]
    maps, own = ensemble.score_samples(unseen), member.score_samples(unseen)
    foreground = unseen != 0
    _assert_close_where_defined(maps, _member_scores(member, unseen))
    order = np.argsort(own[foreground], kind="stable")
    assert np.all(np.diff(maps[foreground][order]) >= 0)
    assert np.unique(maps[foreground]).size > 0.5 * np.unique(own[foreground]).size
    # the ensemble calibrates its own threshold on these maps
    np.testing.assert_array_equal(ensemble.predict(unseen), maps > ensemble.threshold_)


def test_mean_and_max_combine_the_members_scores(pair, unseen):
    scores = [_member_scores(member, unseen) for member in pair.estimators_]
    assert [type(m).__name__ for m in pair.estimators_] == [
        "DenoisingAESegmenter",
        "FlairThreshold",
    ]
    assert not np.allclose(scores[0], scores[1], equal_nan=True)
    _assert_close_where_defined(pair.score_samples(unseen), (scores[0] + scores[1]) / 2)
    highest = _copy(pair).set_params(combine="max")
    _assert_close_where_defined(highest.score_samples(unseen), np.maximum(*scores))


def test_members_are_fitted_clones_calibrated_on_the_ensembles_split(pair, healthy):
    template = pair.estimators[0][1]
    assert not hasattr(template, "threshold_")  # the given members are not fitted
    assert list(pair.named_estimators_) == ["dae", "flair"]
    assert pair.named_estimators_["dae"] is pair.estimators_[0]
    counts = {m.n_calibration_pixels_ for m in pair.estimators_}
    assert counts == {pair.n_calibration_pixels_}
    # half the images, held out from training
    assert pair.n_calibration_pixels_ < 0.75 * (healthy != 0).sum()
    assert pair.calibration_fpr_ <= MAX_FPR


# -- make_seed_ensemble ---------------------------------------------------------------------------
def test_seed_ensembles_have_independent_seeds():
    def seeds(ensemble):
        return [member.random_state for _, member in ensemble.estimators]

    zero = make_seed_ensemble(_dae(), 3, random_state=0)
    assert [name for name, _ in zero.estimators] == [f"denoisingaesegmenter_{k}" for k in range(3)]
    assert len(set(seeds(zero))) == 3
    assert not set(seeds(zero)) & set(seeds(make_seed_ensemble(_dae(), 3, random_state=1)))
    assert seeds(make_seed_ensemble(_dae(), 3, random_state=0)) == seeds(zero)
    # the first members do not depend on how many there are
    assert seeds(make_seed_ensemble(_dae(), 5, random_state=0))[:3] == seeds(zero)
    assert zero.random_state == 0
    named = make_seed_ensemble(_dae(), 2, random_state=0, name="dae", max_fpr=0.2, combine="max")
    assert [name for name, _ in named.estimators] == ["dae_0", "dae_1"]
    assert named.max_fpr == 0.2 and named.combine == "max"
    # the template is cloned, not changed
    template = _dae(width=8)
    make_seed_ensemble(template, 2, random_state=0)
    assert template.random_state == 0
    assert all(m.width == 8 for _, m in make_seed_ensemble(template, 2).estimators)


@pytest.mark.parametrize("n_members", [0, -1, 2.5, True, "3"])
def test_seed_ensemble_needs_a_positive_number_of_members(n_members):
    with pytest.raises(ValueError, match=r"'n_members' of make_seed_ensemble must be an int >= 1"):
        make_seed_ensemble(_dae(), n_members)


def test_seed_ensemble_needs_a_random_state():
    with pytest.raises(ValueError, match=r"FlairThreshold has none"):
        make_seed_ensemble(FlairThreshold(), 3)


# -- parameters -----------------------------------------------------------------------------------
def test_members_parameters_are_reachable():
    ensemble = _pair()
    params = ensemble.get_params(deep=True)
    assert params["dae__width"] == 4 and params["flair__n_bins"] == 256
    assert params["dae"] is ensemble.estimators[0][1]
    assert "dae__width" not in ensemble.get_params(deep=False)
    ensemble.set_params(dae__width=8, flair__n_bins=64, max_fpr=0.2)
    assert ensemble.estimators[0][1].width == 8 and ensemble.get_params()["dae__width"] == 8
    assert ensemble.estimators[1][1].n_bins == 64 and ensemble.max_fpr == 0.2
    replacement = FlairThreshold(n_bins=32)
    ensemble.set_params(flair=replacement)
    assert ensemble.estimators[1] == ("flair", replacement)
    assert [name for name, _ in ensemble.estimators] == ["dae", "flair"]

    copy = clone(ensemble)
    assert copy.get_params()["dae__width"] == 8 and copy.get_params()["flair__n_bins"] == 32
    assert copy.estimators[0][1] is not ensemble.estimators[0][1]
    copy.set_params(dae__width=16)
    assert ensemble.estimators[0][1].width == 8


@pytest.mark.parametrize(
    "estimators, error, match",
    [
        ([], ValueError, "at least one member"),
        ([_dae()], TypeError, r"\(name, estimator\) pairs"),
        ([("dae", _dae(), 1)], TypeError, r"\(name, estimator\) pairs"),
        ([("dae", "DenoisingAESegmenter")], TypeError, r"\(name, estimator\) pairs"),
        ([(1, _dae())], TypeError, r"\(name, estimator\) pairs"),
        ([("a", _dae()), ("a", FlairThreshold())], ValueError, r"unique.*'a'"),
        ([("max_fpr", FlairThreshold())], ValueError, r"'max_fpr'"),
        ([("dae__1", _dae())], ValueError, r"without '__'.*'dae__1'"),
        ([("my model", _dae())], ValueError, r"identifiers.*'my model'"),
        ([("flair", FlairThreshold(channel_axis=-1))], ValueError, r"'flair'.*channel_axis"),
        ([("flair", FlairThreshold(n_bins=1))], ValueError, r"n_bins"),
    ],
    ids=[
        "empty",
        "not-a-pair",
        "triple",
        "not-an-estimator",
        "name-not-str",
        "duplicate",
        "a-parameter",
        "dunder",
        "space",
        "channel-axis",
        "member-param",
    ],
)
def test_bad_estimators_are_named_at_fit(healthy, estimators, error, match):
    ensemble = AnomalyEnsemble(estimators)  # __init__ only stores them
    assert ensemble.estimators is estimators
    with pytest.raises(error, match=match):
        ensemble.fit(healthy)


def test_a_tuple_of_members_is_refused(healthy):
    with pytest.raises(ValueError, match=r"'estimators' parameter of AnomalyEnsemble"):
        AnomalyEnsemble((("flair", FlairThreshold()),)).fit(healthy)


# -- training on workers --------------------------------------------------------------------------
def test_members_train_on_workers_to_the_same_model(pair, healthy, unseen):
    on_workers = _pair(n_jobs=2).fit(healthy)
    assert [type(m) for m in on_workers.estimators_] == [type(m) for m in pair.estimators_]
    assert on_workers.estimators_[0].random_state == pair.estimators_[0].random_state
    assert len(on_workers.estimators_[0].history_) == TINY_DAE["n_epochs"]
    # Worker threads may sum in another order than this process: close, not equal.
    maps, expected = on_workers.score_samples(unseen), pair.score_samples(unseen)
    foreground = unseen != 0
    assert np.corrcoef(maps[foreground], expected[foreground])[0, 1] > 0.99
    assert np.median(np.abs(maps - expected)[foreground]) < 0.05 * expected[foreground].max()
    assert on_workers.threshold_ == pytest.approx(pair.threshold_, rel=0.1)


def test_members_train_on_workers_after_a_cohort_was_scored_on_workers(tmp_path):
    """Scoring a cohort on worker processes, then training an ensemble on
    workers, in one process (a notebook's session, say)."""
    import nibabel as nib

    from anomseg.cohort import predict_cohort

    images = make_healthy_images(n_images=12, shape=(24, 24), random_state=0)
    scans = []
    for k in range(2):
        scans.append(tmp_path / f"scan{k}.nii.gz")
        nib.save(
            nib.Nifti1Image(np.moveaxis(images[6 * k : 6 * k + 6], 0, -1), np.eye(4)), scans[-1]
        )
    model = FlairThreshold().fit([np.moveaxis(images[:6], 0, -1)])
    records = list(
        predict_cohort(
            model, [str(s) for s in scans], tmp_path / "out", n_jobs=2, engine="processes"
        )
    )
    assert [r["status"] for r in records] == ["done", "done"]
    ensemble = AnomalyEnsemble(
        [("a", FlairThreshold()), ("b", FlairThreshold(n_bins=64))], n_jobs=2, random_state=0
    ).fit(images)
    assert np.isfinite(ensemble.threshold_)


# -- files ----------------------------------------------------------------------------------------
def test_safe_file_round_trip(pair, unseen, tmp_path):
    path = pair.save(tmp_path / "ensemble.anomseg")
    loaded = load_model(path)
    assert type(loaded) is AnomalyEnsemble
    np.testing.assert_array_equal(loaded.score_samples(unseen), pair.score_samples(unseen))
    np.testing.assert_array_equal(loaded.predict(unseen), pair.predict(unseen))
    assert loaded.threshold_ == pair.threshold_
    assert loaded.calibration_thresholds_ == pair.calibration_thresholds_
    assert list(loaded.named_estimators_) == ["dae", "flair"]
    for a, b in zip(loaded.estimators_, pair.estimators_):
        assert a.healthy_quantiles_ == b.healthy_quantiles_
    info = model_info(path)
    assert info["estimator"] == "AnomalyEnsemble"
    assert [m["name"] for m in info["members"]] == ["dae", "flair"]
    assert [m["estimator"] for m in info["members"]] == ["DenoisingAESegmenter", "FlairThreshold"]
    assert info["members"][0]["params"]["width"] == 4
    assert "n_bins" not in info["members"][1]["params"]  # defaults are not listed
    assert [m["threshold"] for m in info["members"]] == [m.threshold_ for m in pair.estimators_]


# -- unlabelled images ----------------------------------------------------------------------------
def test_unlabelled_images_go_to_the_members_that_learn_from_them(healthy):
    patients, _ = add_synthetic_lesions(
        make_healthy_images(n_images=4, shape=(32, 32), random_state=5),
        n_lesions=1,
        radius=(2, 3),
        contrast=1.0,
        random_state=0,
    )
    X = np.concatenate([healthy[:8], patients])
    y = np.r_[np.zeros(8, int), -np.ones(4, int)]
    ensemble = AnomalyEnsemble(
        [("ascnet", ASCNetSegmenter(**TINY_ASCNET, random_state=0)), ("flair", FlairThreshold())],
        max_fpr=MAX_FPR,
        calibration_fraction=0.5,
        random_state=0,
    ).fit(X, y)
    maps = ensemble.score_samples(healthy[8:])
    assert np.isfinite(maps).all() and np.isfinite(ensemble.threshold_)
    # calibrated on half of the 8 healthy images only
    counts = sorted((healthy[:8] != 0).sum(axis=(1, 2)))
    assert sum(counts[:4]) <= ensemble.n_calibration_pixels_ <= sum(counts[4:])
    assert {m.n_calibration_pixels_ for m in ensemble.estimators_} == {
        ensemble.n_calibration_pixels_
    }
    with pytest.raises(ValueError, match=r"'y' passed to AnomalyEnsemble.fit.*no member"):
        _pair().fit(X, y)
    with pytest.raises(ValueError, match=r"'y' passed to AnomalyEnsemble.fit must mark"):
        clone(ensemble).fit(X, np.r_[y[:-1], 2])


# -- calibration on unseen images -----------------------------------------------------------------
def test_fpr_holds_on_unseen_healthy_images(pair):
    """Calibrated on 24 healthy images, the FPR on 24 others is close to
    max_fpr, on average over 3 draws of the images."""
    rates = []
    for seed in (10, 11, 12):
        images = make_healthy_images(n_images=48, shape=(32, 32), random_state=seed)
        calibration, unseen = images[:24], images[24:]
        est = _copy(pair).calibrate(calibration)
        assert est.calibration_fpr_ <= MAX_FPR
        rates.append(est.predict(unseen)[unseen != 0].mean())
    assert 0.5 * MAX_FPR <= np.mean(rates) <= 1.6 * MAX_FPR, rates
    assert min(rates) >= 0.2 * MAX_FPR and max(rates) <= 2.5 * MAX_FPR, rates
