import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score
from sklearn.model_selection import GridSearchCV

from anomseg.baselines import FlairThreshold
from anomseg.metrics import (
    average_precision,
    best_dice,
    calibrate_thresholds,
    dice_score,
    evaluate,
    get_scorer,
    roc_auc,
    threshold_at_fpr,
    youden_threshold,
)


@pytest.fixture
def scored():
    rng = np.random.default_rng(0)
    truth = rng.random((3, 20, 20)) < 0.1
    # rounded scores create ties, the hard case for curve metrics
    scores = np.round(rng.random((3, 20, 20)) + 0.6 * truth, 1)
    foreground = np.ones_like(truth)
    foreground[:, :2] = False
    truth &= foreground  # lesions lie in the pixels scored
    return truth, scores, foreground


def test_hand_computed_values():
    truth = np.array([True, True, False, False, False])
    scores = np.array([0.9, 0.4, 0.5, 0.1, 0.2])
    # positive-negative pairs ranked correctly: (0.9 > all 3) + (0.4 > 0.1, 0.2) = 5 of 6
    assert roc_auc(truth, scores) == pytest.approx(5 / 6)
    # ranks: 0.9 (P, precision 1, recall .5), 0.5 (N), 0.4 (P, precision 2/3, recall 1)
    assert average_precision(truth, scores) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # threshold 0.9 -> TP 1, FP 0, FN 1: 2/3; threshold 0.4 -> TP 2, FP 1: 4/5
    assert best_dice(truth, scores) == (pytest.approx(0.8), 0.4)
    # 0.9 and 0.5 predicted: TP 1, FP 1, FN 1 -> 2 / (2 + 1 + 1)
    assert dice_score(truth, scores > 0.45) == pytest.approx(0.5)
    assert dice_score(np.zeros(3, bool), np.zeros(3, bool)) == 1.0
    threshold, fpr, fnr = youden_threshold(truth, scores)
    # J at 0.9: 0.5 - 0 ; at 0.4: 1 - 1/3 = 0.667 (best)
    assert (threshold, fpr, fnr) == (0.4, pytest.approx(1 / 3), 0.0)


def test_against_scikit_learn(scored):
    truth, scores, fg = scored
    t, s = truth[fg], scores[fg]
    assert roc_auc(truth, scores, fg) == pytest.approx(roc_auc_score(t, s), abs=1e-12)
    assert average_precision(truth, scores, fg) == pytest.approx(
        average_precision_score(t, s), abs=1e-12
    )
    dices = [f1_score(t, s >= u) for u in np.unique(s)]
    assert best_dice(truth, scores, fg)[0] == pytest.approx(max(dices))
    # lists of differently shaped samples pool like one array
    as_list = [scores[0], scores[1, :10], scores[2]]
    truths = [truth[0], truth[1, :10], truth[2]]
    fgs = [fg[0], fg[1, :10], fg[2]]
    expected = roc_auc_score(
        np.concatenate([a[f] for a, f in zip(truths, fgs)]),
        np.concatenate([a[f] for a, f in zip(as_list, fgs)]),
    )
    assert roc_auc(truths, as_list, fgs) == pytest.approx(expected)


@pytest.mark.parametrize("max_fpr", [0.01, 0.05, 0.1, 0.29, 0.5])
def test_threshold_at_fpr_is_exact_and_smallest(max_fpr):
    rng = np.random.default_rng(1)
    scores = rng.random(1000)
    t = threshold_at_fpr(scores, max_fpr)
    assert np.mean(scores > t) <= max_fpr
    below = scores[scores < t].max()
    # any smaller threshold (the next score down) breaks the limit
    assert np.mean(scores > below) > max_fpr
    assert np.sum(scores > t) == round(max_fpr * 1000)


def test_threshold_at_fpr_with_ties_and_foreground():
    scores = np.array([[0.0, 1.0, 1.0, 1.0], [5.0, 0.5, 0.5, 0.5]])
    foreground = np.array([[False, True, True, True], [False, True, True, True]])
    # the foreground holds 3 x 1.0 and 3 x 0.5: at 50 % the threshold is 0.5
    assert threshold_at_fpr(scores, 0.5, foreground) == 0.5
    # below 50 % no threshold under 1.0 works: ties cannot be split
    assert threshold_at_fpr(scores, 0.4, foreground) == 1.0
    with pytest.raises(ValueError, match="max_fpr"):
        threshold_at_fpr(scores, 1.0)


def test_calibrate_thresholds_matches_single_calls():
    rng = np.random.default_rng(2)
    maps = [rng.random((8, 8)), rng.random((5, 5))]
    thresholds = calibrate_thresholds(maps, rates=(0.05, 0.1))
    pooled = np.concatenate([m.ravel() for m in maps])
    assert thresholds == {0.05: threshold_at_fpr(pooled, 0.05), 0.1: threshold_at_fpr(pooled, 0.1)}


def test_report_labels_and_values(scored):
    truth, scores, fg = scored
    report = evaluate(truth, scores, foreground=fg, thresholds={0.05: 0.95})
    assert report["AUROC", "pooled"] == pytest.approx(roc_auc(truth, scores, fg))
    assert report["Dice", "pooled"] == pytest.approx(dice_score(truth, scores > 0.95, fg))
    per_volume = [roc_auc(truth[i], scores[i], fg[i]) for i in range(3)]
    row = next(r for r in report.results if r.metric == "AUROC" and r.aggregation == "per-volume")
    assert row.value == pytest.approx(np.mean(per_volume))
    assert row.sd == pytest.approx(np.std(per_volume, ddof=1))
    assert row.n_volumes == 3
    table = report.to_table()
    assert "oracle: chosen on the test labels" in table
    assert "calibrated on healthy data at FPR 5%" in table
    best = [r for r in report.results if r.metric == "Best Dice"]
    assert all(r.threshold.startswith("oracle") for r in best)


def test_report_gives_the_false_positive_rate_at_each_calibrated_threshold(scored):
    """Whether a calibration holds on the evaluated scans: the share of their
    lesion-free foreground above each calibrated threshold."""
    truth, scores, fg = scored
    thresholds = {0.01: 0.95, 0.05: 0.75}
    report = evaluate(truth, scores, foreground=fg, thresholds=thresholds)
    for rate, threshold in thresholds.items():
        healthy = fg & ~truth
        expected = np.count_nonzero((scores > threshold) & healthy) / np.count_nonzero(healthy)
        source = f"calibrated on healthy data at FPR {100 * rate:g}%"
        assert report["FPR", "pooled", source] == pytest.approx(expected)
        each = [
            np.count_nonzero((s > threshold) & h) / np.count_nonzero(h)
            for s, h in zip(scores, healthy)
        ]
        assert report["FPR", "per-volume", source] == pytest.approx(np.mean(each))
    assert (
        report["FPR", "pooled", "calibrated on healthy data at FPR 1%"]
        < report["FPR", "pooled", "calibrated on healthy data at FPR 5%"]
    )


def test_report_groups_slices_into_volumes(scored):
    truth, scores, fg = scored
    slices_t = np.concatenate([truth[:, :10], truth[:, 10:]])
    slices_s = np.concatenate([scores[:, :10], scores[:, 10:]])
    slices_f = np.concatenate([fg[:, :10], fg[:, 10:]])
    groups = np.tile(np.arange(3), 2)
    by_volume = evaluate(slices_t, slices_s, foreground=slices_f, groups=groups)
    direct = evaluate(truth, scores, foreground=fg)
    assert by_volume["AUROC", "per-volume"] == pytest.approx(direct["AUROC", "per-volume"])
    assert by_volume["AUROC", "pooled"] == pytest.approx(direct["AUROC", "pooled"])


def test_lesion_free_volumes_are_left_out_per_volume(scored):
    truth, scores, fg = scored
    truth = truth.copy()
    truth[1] = False
    report = evaluate(truth, scores, foreground=fg)
    rows = [r for r in report.results if r.aggregation == "per-volume"]
    assert {r.n_volumes for r in rows} == {2}


def test_scorers_in_grid_search():
    rng = np.random.default_rng(0)
    images = rng.normal(100, 5, size=(12, 16, 16))
    truth = np.zeros(images.shape, bool)
    truth[:, 4:8, 4:8] = True
    images[truth] += 40
    search = GridSearchCV(
        FlairThreshold(),
        {"max_fpr": [0.02, 0.3]},
        scoring={"dice": get_scorer("dice"), "auroc": get_scorer("auroc")},
        refit="dice",
        cv=3,
    ).fit(images, truth)
    # 1/16 of the pixels are lesion: a 2 % FPR threshold keeps their Dice high
    assert search.best_params_ == {"max_fpr": 0.02}
    assert search.cv_results_["mean_test_auroc"][0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="name"):
        get_scorer("accuracy")


def test_masked_maps_carry_their_foreground(scored):
    truth, scores, fg = scored
    masked = np.ma.MaskedArray(scores, mask=~fg)
    explicit = evaluate(truth, scores, foreground=fg)
    implied = evaluate(truth, masked)
    assert [r.value for r in implied.results] == [r.value for r in explicit.results]
    assert roc_auc(truth, masked) == roc_auc(truth, scores, foreground=fg)


def test_scorers_count_the_pixels_the_model_scored():
    """After a ForegroundMasker, the scorers count the head it found, as the
    calibration did, not the non-zero pixels of the raw input."""
    from anomseg.preprocessing import ForegroundMasker, make_anomaly_pipeline

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 3, size=(6, 24, 24))  # background noise
    images[:, 4:20, 4:20] = rng.normal(100, 5, size=(6, 16, 16))
    truth = np.zeros(images.shape, bool)
    truth[:, 8:12, 8:12] = True
    images[truth] += 40
    pipe = make_anomaly_pipeline(ForegroundMasker(), FlairThreshold()).fit(images)
    head = ~ForegroundMasker().fit_transform(images).mask
    maps = pipe.score_samples(images)
    assert get_scorer("auroc")(pipe, images, truth) == roc_auc(truth, maps, foreground=head)
    assert get_scorer("auroc")(pipe, images, truth) != roc_auc(truth, maps, foreground=images != 0)
    expected = dice_score(truth, pipe.predict(images), foreground=head)
    assert get_scorer("dice")(pipe, images, truth) == expected


def test_a_table_of_nothing_but_n_a_is_refused(scored):
    from anomseg.exceptions import AnomsegWarning

    truth, scores, fg = scored
    with pytest.raises(ValueError, match=r"No truth mask has a lesion.*y_true\[0\] holds no"):
        evaluate(np.zeros_like(truth), scores, foreground=fg)
    outside = truth & ~fg  # the lesions moved out of the foreground
    outside[0] = ~fg[0]
    with pytest.raises(ValueError, match=r"undefined: the \d+ lesion pixel\(s\) of a\.nii"):
        evaluate(outside, scores, foreground=fg, names=["a.nii", "b.nii", "c.nii"][: len(truth)])
    truth = truth & fg  # the others' lesions inside
    truth[0] = ~fg[0]  # one volume's lesion outside, the others counted
    with pytest.warns(
        AnomsegWarning, match=r"\[evaluate\] the \d+ lesion pixel\(s\) of y_true\[0\]"
    ):
        evaluate(truth, scores, foreground=fg)


def test_a_lesion_partly_outside_the_foreground_warns_beyond_a_trim(scored):
    """Pixels of a lesion outside the foreground count in no figure: a trim
    at the brain's edge (up to 5 %) passes quietly, more is said."""
    from anomseg.exceptions import AnomsegWarning

    truth, scores, fg = scored
    truth = truth & fg
    lesion = int(truth[0].sum())
    background = np.argwhere(~fg[0])
    assert lesion > 20 and len(background) > lesion // 4
    trimmed = truth.copy()
    for i, j in background[: lesion // 25]:  # 4 % of the lesion outside
        trimmed[0, i, j] = True
    evaluate(trimmed, scores, foreground=fg)  # no warning (warnings are errors)
    for i, j in background[: lesion // 4]:  # 20 % more outside
        truth[0, i, j] = True
    with pytest.warns(
        AnomsegWarning, match=r"\d+ of the \d+ lesion pixels of y_true\[0\] \(\d+%\)"
    ):
        evaluate(truth, scores, foreground=fg)
