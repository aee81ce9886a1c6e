"""Lesion-wise metrics against hand-counted cases."""

import numpy as np
import pytest

from anomseg.exceptions import AnomsegWarning
from anomseg.metrics import evaluate, lesion_wise_metrics


def _case():
    """Two true lesions and two predicted components in a 12^3 volume:

    * lesion A, a 3^3 cube, shares one voxel, (4, 4, 4), with component P1;
    * lesion B, three voxels touching only at their corners along a
      diagonal (one lesion with 26-connectivity, three with 6), is missed;
    * P1, a 2^3 cube with one more voxel touching it at a corner (one
      component with 26-connectivity), overlaps A;
    * P2, a 2 x 2 x 1 block far from both, is a false positive.
    """
    truth = np.zeros((12, 12, 12), bool)
    truth[2:5, 2:5, 2:5] = True  # A, 27 voxels
    for i in (8, 9, 10):  # B, 3 voxels
        truth[i, i, i] = True
    predicted = np.zeros_like(truth)
    predicted[4:6, 4:6, 4:6] = True  # P1, 8 voxels + 1
    predicted[6, 6, 6] = True
    predicted[0:2, 9:11, 0] = True  # P2, 4 voxels
    return truth, predicted


def test_hand_counted_case():
    truth, predicted = _case()
    m = lesion_wise_metrics(truth, predicted, voxel_volume=1.0 * 1.0 * 2.0 / 1000)
    assert (m.n_lesions, m.n_detected, m.n_missed) == (2, 1, 1)
    assert (m.n_components, m.n_true_positive_components, m.n_false_positive_components) == (
        2,
        1,
        1,
    )
    assert (m.sensitivity, m.precision, m.f1) == (0.5, 0.5, 0.5)
    assert (m.true_volume, m.predicted_volume, m.volume_error) == (30, 13, -17)
    assert m.volume_error_ml == pytest.approx(-17 * 0.002)
    assert m.true_volume_ml == pytest.approx(0.06)
    assert m.relative_volume_error == pytest.approx(-17 / 30)
    assert m.as_dict()["n_missed"] == 1 and m.as_dict()["f1"] == 0.5


def test_min_overlap_leaves_a_one_voxel_overlap_unmatched():
    truth, predicted = _case()
    m = lesion_wise_metrics(truth, predicted, min_overlap=2)
    assert (m.n_detected, m.n_true_positive_components) == (0, 0)
    assert (m.sensitivity, m.precision, m.f1) == (0.0, 0.0, 0.0)
    assert m.volume_error_ml is None  # no voxel volume given


def test_corner_touching_pixels_are_one_lesion_in_2d():
    truth = np.eye(5, dtype=np.uint8)  # a diagonal line: one lesion with 8-connectivity
    predicted = np.zeros((5, 5), bool)
    predicted[4, 4] = True
    m = lesion_wise_metrics(truth, predicted)
    assert (m.n_lesions, m.n_detected, m.sensitivity, m.precision) == (1, 1, 1.0, 1.0)


def test_one_component_over_two_lesions_detects_both():
    truth = np.zeros((3, 9), bool)
    truth[1, [1, 7]] = True
    predicted = np.zeros_like(truth)
    predicted[1, 1:8] = True
    m = lesion_wise_metrics(truth, predicted)
    assert (m.n_detected, m.n_components, m.n_true_positive_components) == (2, 1, 1)


def test_undefined_ratios():
    empty = np.zeros((4, 4), bool)
    m = lesion_wise_metrics(empty, empty)
    assert np.isnan(m.sensitivity) and np.isnan(m.precision) and np.isnan(m.f1)
    lesion = empty.copy()
    lesion[1, 1] = True
    missed = lesion_wise_metrics(lesion, empty)
    assert np.isnan(missed.precision) and missed.f1 == 0.0 and missed.relative_volume_error == -1


def test_sum_pools_counts():
    truth, predicted = _case()
    m = lesion_wise_metrics(truth, predicted, voxel_volume=0.001)
    both = m + lesion_wise_metrics(truth, truth, voxel_volume=0.002)
    assert (both.n_lesions, both.n_detected, both.n_components) == (4, 3, 4)
    assert both.sensitivity == 0.75 and both.precision == 0.75
    assert both.volume_error_ml == pytest.approx(-17 * 0.001)
    assert (m + lesion_wise_metrics(truth, truth)).volume_error_ml is None


@pytest.mark.parametrize(
    "truth, predicted, kwargs, words",
    [
        (np.zeros((4, 4)), np.zeros((4, 5)), {}, r"'y_pred' must have the shape of 'y_true'"),
        (np.full((4, 4), 2), np.zeros((4, 4)), {}, r"'y_true' must be a binary mask.*\[2\]"),
        (np.zeros((4, 4)), np.full((4, 4), 0.5), {}, r"'y_pred' must be a binary mask"),
        (np.zeros((4, 4)), np.zeros((4, 4)), {"min_overlap": 0}, r"'min_overlap'.*positive"),
        (np.zeros((4, 4)), np.zeros((4, 4)), {"min_overlap": 0.5}, r"'min_overlap'.*integer"),
        (np.zeros((4, 4)), np.zeros((4, 4)), {"voxel_volume": -1}, r"'voxel_volume'.*positive"),
    ],
)
def test_bad_input_names_the_parameter(truth, predicted, kwargs, words):
    with pytest.raises(ValueError, match=words):
        lesion_wise_metrics(truth, predicted, **kwargs)


# -- in evaluate ------------------------------------------------------------------------------
def _cohort():
    """The hand-counted volume (2 lesions, 1 detected, 2 components, 1 a
    false positive), a volume whose lesion is found whole (1 of 1), and a
    volume whose two lesions are missed with nothing predicted, as maps that
    threshold at 0.5 to those masks."""
    truth, predicted = _case()
    found = np.zeros_like(truth)
    found[5:7, 5:7, 5:7] = True
    missed = np.zeros_like(truth)
    missed[1, 1, [1, 4]] = True
    truths = [truth, found, missed]
    maps = [predicted * 1.0, found * 1.0, np.zeros(truth.shape)]
    return truths, maps


def _row(report, metric, aggregation):
    [row] = [r for r in report.results if (r.metric, r.aggregation) == (metric, aggregation)]
    return row


def test_evaluate_pools_lesion_counts_then_takes_ratios():
    truths, maps = _cohort()
    report = evaluate(
        truths, maps, thresholds={0.05: 0.5, 0.1: 0.2}, lesion_fpr=0.05, voxel_volume=0.002
    )
    calibrated = "calibrated on healthy data at FPR 5%"
    assert report["Lesions", "pooled", calibrated] == 5
    assert report["Lesions detected", "pooled"] == 2
    assert report["Lesions missed", "pooled"] == 3
    assert report["Predicted components", "pooled"] == 3
    assert report["False-positive components", "pooled"] == 1
    assert report["Lesion sensitivity", "pooled"] == 2 / 5  # not the mean of 1/2, 1 and 0
    assert report["Lesion precision", "pooled"] == 2 / 3
    assert report["Lesion F1", "pooled"] == pytest.approx(2 * 0.4 * (2 / 3) / (0.4 + 2 / 3))
    assert report["Volume error (voxels)", "pooled"] == (13 + 8 + 0) - (30 + 8 + 2)
    assert report["Volume error (mL)", "pooled"] == pytest.approx(-19 * 0.002)
    assert report["Relative volume error", "pooled"] == pytest.approx(-19 / 40)
    sensitivity = _row(report, "Lesion sensitivity", "per-volume")
    assert (sensitivity.value, sensitivity.n_volumes) == (pytest.approx(0.5), 3)
    # the volume with no predicted component has no lesion precision
    precision = _row(report, "Lesion precision", "per-volume")
    assert (precision.value, precision.n_volumes) == (pytest.approx(0.75), 2)
    assert [r["Lesions detected [" + calibrated + "]"] for r in report.volume_records()] == [
        1,
        1,
        0,
    ]


def test_evaluate_adds_lesion_rows_only_when_asked():
    truths, maps = _cohort()
    report = evaluate(truths, maps, thresholds={0.05: 0.5})
    assert not any(r.metric.startswith("Lesion") for r in report.results)
    without_ml = evaluate(truths, maps, thresholds={0.05: 0.5}, lesion_fpr=0.05)
    assert "Volume error (voxels)" in {r.metric for r in without_ml.results}
    assert "Volume error (mL)" not in {r.metric for r in without_ml.results}


def test_evaluate_counts_lesions_of_the_postprocessed_masks_inside_the_foreground():
    truths, maps = _cohort()
    foreground = [np.ones(t.shape, bool) for t in truths]
    foreground[0][8:, 8:, 8:] = False  # lesion B lies outside: not counted
    with pytest.warns(AnomsegWarning, match="3 of the 30 lesion pixels"):
        report = evaluate(
            truths,
            maps,
            foreground=foreground,
            thresholds={0.05: 0.5},
            lesion_fpr=0.05,
            postprocess=lambda mask: mask & (np.arange(12) < 3)[:, None, None],  # keeps P2
        )
    assert report["Lesions", "pooled"] == 4
    assert report["Predicted components", "pooled"] == 1
    assert report["False-positive components", "pooled"] == 1


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"lesion_fpr": 0.01}, r"'lesion_fpr' must be one of the rates of 'thresholds'"),
        ({"lesion_fpr": 0.05, "voxel_volume": [1.0]}, r"'voxel_volume' must be one number"),
    ],
)
def test_evaluate_bad_lesion_options_name_the_parameter(kwargs, words):
    truths, maps = _cohort()
    with pytest.raises(ValueError, match=words):
        evaluate(truths, maps, thresholds={0.05: 0.5}, **kwargs)


def test_evaluate_refuses_a_non_binary_truth_for_lesions():
    truths, maps = _cohort()
    truths[1] = truths[1] * 2
    with pytest.raises(ValueError, match=r"'y_true' must be a binary mask"):
        evaluate(truths, maps, thresholds={0.05: 0.5}, lesion_fpr=0.05)
