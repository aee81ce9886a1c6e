"""The options of ``anomseg fit`` for patient scans (--exclude), calibrated
post-processing (--min-size, --opening, --closing) and ensembles (repeated
--method, --ensemble, METHOD:KEY=VALUE), and ``anomseg evaluate -o``.

Their errors are rows of the bad-input matrix (``bad_inputs.py``), which
checks that each is one line naming the problem, with no model or report
written; here is what the options do when they work.
"""

import csv
import json
import re
import warnings

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

import anomseg.cli._evaluate
import anomseg.cli._fit
import anomseg.cli._main
from anomseg import load_model, model_info
from anomseg.baselines import FlairThreshold
from anomseg.cli import main
from anomseg.datasets import add_synthetic_lesions
from anomseg.ensemble import AnomalyEnsemble
from anomseg.io import load_nifti
from anomseg.metrics import lesion_wise_metrics
from anomseg.postprocessing import smooth_map

from .bad_inputs import volume, write

MAX_FPR = 0.05  # the command line's default
#: A tiny denoising autoencoder in an ensemble, as --param values: width
#: for its members only, the others for whichever member has them.
TINY_DAE = [
    "denoising-ae:width=4",
    "depth=3",
    "n_epochs=1",
    "noise_resolution=4",
    "validation_fraction=0",
    "random_state=0",
    "device=cpu",
]


def run(*args):
    """The command line in this process, its warnings printed as a shell
    shows them (rather than raised, as the suite's warning filters would)."""
    with warnings.catch_warnings():
        warnings.resetwarnings()
        warnings.simplefilter("default")
        return main([*map(str, args), "--no-progress"])


def _lines(err, kind):
    return [line for line in err.splitlines() if f": {kind}:" in line]


def _params(values):
    return [token for value in values for token in ("--param", value)]


@pytest.fixture(scope="module")
def patients(tmp_path_factory):
    """3 patient scans of 24 x 24 x 6 on a non-canonical grid, with a bright
    lesion each, their lesion masks, and a mask covering a whole scan."""
    root = tmp_path_factory.mktemp("patients")
    scans, masks = [], []
    for i in range(3):
        [scan], [lesion] = add_synthetic_lesions(
            [volume(i)], n_lesions=1, radius=(2, 3), contrast=1.0, random_state=i
        )
        assert lesion.any()
        scans.append(write(root / f"patient{i}.nii.gz", scan.astype(np.float32)))
        masks.append(write(root / f"lesion{i}.nii.gz", lesion.astype(np.uint8)))
    everything = write(root / "everything.nii.gz", np.ones(volume(0).shape, np.uint8))
    return {"scans": scans, "masks": masks, "everything": everything}


@pytest.fixture(scope="module")
def filtered_model(patients, tmp_path_factory):
    """A FLAIR model whose masks lose their components under 3 voxels."""
    model = tmp_path_factory.mktemp("model") / "m.anomseg"
    status = run(
        "fit", "--method", "flair-threshold", *patients["scans"], "--min-size", "3", "-o", model
    )
    assert status == 0
    return model


def _counted(scans, masks, margin=0, whole_slices=False):
    """Foreground voxels of the scans outside their (grown) masks, by hand."""
    total = 0
    for scan_path, mask_path in zip(scans, masks):
        scan, mask = load_nifti(scan_path)[0], load_nifti(mask_path)[0] > 0
        if margin:
            mask = ndimage.binary_dilation(mask, iterations=margin)
        if whole_slices:  # axial: the last axis of the canonical array
            mask = np.broadcast_to(mask.any(axis=(0, 1)), mask.shape)
        total += int(np.count_nonzero((scan != 0) & ~mask))
    return total


# -- --exclude ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options, margin, whole_slices, says",
    [
        ([], 0, False, "the voxels of 3 lesion mask(s)"),
        (
            ["--exclude-margin", "1"],
            1,
            False,
            "the voxels of 3 lesion mask(s) grown by 1 voxel(s)",
        ),
        (
            ["--exclude-slices"],
            0,
            True,
            "the voxels of 3 lesion mask(s), widened to whole slices",
        ),
    ],
    ids=["voxels", "margin", "slices"],
)
def test_fit_leaves_out_the_lesions(
    patients, tmp_path, capsys, options, margin, whole_slices, says
):
    model = tmp_path / "m.anomseg"
    scans, masks = patients["scans"], patients["masks"]
    status = run(
        "fit", "--method", "flair-threshold", *scans, "--exclude", *masks, *options, "-o", model
    )
    out, err = capsys.readouterr()
    assert status == 0, err
    assert not _lines(err, "error") and not _lines(err, "warning")
    info = model_info(model)
    assert info["metadata"]["excluded"] == says
    expected = _counted(scans, masks, margin, whole_slices)
    assert info["calibration"]["n_calibration_pixels"] == expected
    assert f"on {expected} calibration voxels" in out
    assert info["calibration"]["achieved_fpr"] <= MAX_FPR
    if margin or whole_slices:
        assert expected < _counted(scans, masks)


def test_fit_without_exclude_counts_every_foreground_voxel(patients, filtered_model):
    info = model_info(filtered_model)
    assert "excluded" not in info["metadata"]
    total = sum(int(np.count_nonzero(load_nifti(p)[0])) for p in patients["scans"])
    assert info["calibration"]["n_calibration_pixels"] == total
    assert _counted(patients["scans"], patients["masks"]) < total


def test_a_scan_excluded_whole_is_a_warning(patients, tmp_path, capsys):
    model = tmp_path / "m.anomseg"
    scans, masks = patients["scans"], patients["masks"]
    exclude = [masks[0], patients["everything"], masks[2]]
    status = run("fit", "--method", "flair-threshold", *scans, "--exclude", *exclude, "-o", model)
    err = capsys.readouterr().err
    assert status == 0, err
    [warning] = _lines(err, "warning")
    assert "patient1.nii.gz" in warning and "no foreground voxel" in warning
    assert not _lines(err, "error")
    expected = _counted([scans[0], scans[2]], [masks[0], masks[2]])
    assert model_info(model)["calibration"]["n_calibration_pixels"] == expected


# -- post-processing ------------------------------------------------------------------------------
def test_min_size_filters_the_saved_models_masks(patients, filtered_model, tmp_path, capsys):
    capsys.readouterr()
    assert run("info", filtered_model) == 0
    shown = capsys.readouterr().out
    assert "FlairThreshold.postprocessing = [ConnectedComponentFilter(min_size=3)]" in shown
    model = load_model(filtered_model)
    assert model.calibration_fpr_ <= MAX_FPR
    out = tmp_path / "out"
    assert run("predict", filtered_model, *patients["scans"], "-o", out) == 0
    for i in range(3):
        mask = np.asarray(nib.load(out / f"patient{i}_mask.nii.gz").dataobj) > 0
        labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))  # 26-connected
        assert n > 0
        assert np.bincount(labels.ravel())[1:].min() >= 3
    # and without the filter, some components would be smaller
    raw = [m > model.threshold_ for m in model.score_samples(_scans(patients))]
    sizes = np.concatenate(
        [np.bincount(ndimage.label(r, structure=np.ones((3, 3, 3)))[0].ravel())[1:] for r in raw]
    )
    assert sizes.min() < 3


def _scans(patients):
    return [load_nifti(p)[0] for p in patients["scans"]]


def test_opening_and_closing_are_calibrated_in_that_order(patients, tmp_path, capsys):
    model = tmp_path / "m.anomseg"
    options = ["--opening", "1", "--closing", "1", "--min-size", "4"]
    assert (
        run("fit", "--method", "flair-threshold", *patients["scans"], *options, "-o", model) == 0
    )
    capsys.readouterr()
    filters = load_model(model).postprocessing
    assert [(type(f).__name__, f.get_params()) for f in filters] == [
        ("MorphologicalFilter", {"operation": "opening", "radius": 1}),
        ("MorphologicalFilter", {"operation": "closing", "radius": 1}),
        ("ConnectedComponentFilter", {"connectivity": None, "min_size": 4}),
    ]
    calibration = model_info(model)["calibration"]
    assert 0.8 * MAX_FPR <= calibration["achieved_fpr"] <= MAX_FPR


def test_smoothing_is_saved_and_applied_before_calibration(patients, tmp_path, capsys):
    model = tmp_path / "m.anomseg"
    options = ["--smoothing", "1.5,1.5,0", "--min-size", "3"]
    assert (
        run("fit", "--method", "flair-threshold", *patients["scans"], *options, "-o", model) == 0
    )
    capsys.readouterr()
    fitted = load_model(model)
    assert fitted.smoothing == (1.5, 1.5, 0.0)
    scans = _scans(patients)
    raw = FlairThreshold().fit(scans).score_samples(scans)
    for scan, smoothed, unsmoothed in zip(scans, fitted.score_samples(scans), raw):
        np.testing.assert_allclose(
            smoothed, smooth_map(unsmoothed, scan != 0, (1.5, 1.5, 0.0)), rtol=1e-5, atol=1e-6
        )
    assert fitted.calibration_fpr_ <= MAX_FPR


# -- ensembles ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ensemble_model(patients, tmp_path_factory):
    model = tmp_path_factory.mktemp("ensemble") / "e.anomseg"
    status = run(
        "fit",
        "--method",
        "denoising-ae",
        "--method",
        "flair-threshold",
        "--ensemble",
        "2",
        *_params([*TINY_DAE, "n_bins=64"]),
        *patients["scans"],
        "-o",
        model,
    )
    assert status == 0
    return model


def test_ensemble_of_seeds_and_methods(ensemble_model, patients, capsys):
    model = load_model(ensemble_model)
    ensemble = model[-1]  # after the scaling the DAE needs
    assert isinstance(ensemble, AnomalyEnsemble)
    names = [name for name, _ in ensemble.estimators]
    assert names == ["denoising_ae_0", "denoising_ae_1", "flair_threshold"]
    first, second, flair = ensemble.estimators_
    assert first.random_state != second.random_state  # two seeds, drawn from random_state=0
    assert ensemble.random_state == 0
    # METHOD:KEY=VALUE for that method; KEY=VALUE for the members that have KEY
    assert first.width == second.width == 4 and first.depth == 3 and first.n_epochs == 1
    assert flair.n_bins == 64 and "width" not in flair.get_params()
    assert ensemble.max_fpr == MAX_FPR and all(m.max_fpr == MAX_FPR for m in ensemble.estimators_)
    maps = model.score_samples(_scans(patients))
    assert all(np.isfinite(m).all() for m in maps)

    capsys.readouterr()
    assert run("info", ensemble_model) == 0
    shown = capsys.readouterr().out
    members = [line.strip() for line in shown.splitlines() if line.strip().startswith("member ")]
    assert len(members) == 3
    assert members[0].startswith("member denoising_ae_0: DenoisingAESegmenter(")
    assert "width=4" in members[0] and "n_bins" not in members[0]
    assert members[2].startswith("member flair_threshold: FlairThreshold(n_bins=64)")
    assert "--ensemble 2" in shown
    assert [m["name"] for m in model_info(ensemble_model)["members"]] == names


def _ensemble_of(*argv):
    """The unfitted estimator that ``anomseg fit`` would train for ``argv``."""
    args = anomseg.cli._main.build_parser().parse_args(["fit", *argv, "x.nii.gz", "-o", "m"])
    return anomseg.cli._fit._fit_estimator(args)


def test_method_key_value_goes_to_that_methods_members_only():
    ensemble = _ensemble_of(
        *("--method", "denoising-ae", "--method", "vae-reconstruction", "--ensemble", "2"),
        *_params(["denoising-ae:width=4", "vae-reconstruction:width=8", "n_epochs=3"]),
        *_params(["random_state=7", "combine='max'"]),
        *("--min-size", "3"),
    )
    members = dict(ensemble.estimators)
    assert list(members) == [
        "denoising_ae_0",
        "denoising_ae_1",
        "vae_reconstruction_0",
        "vae_reconstruction_1",
    ]
    assert [m.width for m in members.values()] == [4, 4, 8, 8]
    assert all(m.n_epochs == 3 for m in members.values())  # KEY=VALUE: every member with KEY
    seeds = [m.random_state for m in members.values()]
    assert seeds[0] != seeds[1] and seeds[2] != seeds[3]  # each method's seeds differ
    assert 7 not in seeds  # they are drawn from random_state=7
    assert ensemble.random_state == 7 and ensemble.combine == "max"
    assert ensemble.max_fpr == MAX_FPR and all(m.max_fpr == MAX_FPR for m in members.values())
    # the ensemble post-processes its own masks, not its members'
    assert [f.min_size for f in ensemble.postprocessing] == [3]
    assert all(m.postprocessing is None for m in members.values())
    # one method, once: no ensemble
    single = _ensemble_of("--method", "flair-threshold", "--min-size", "3", "--param", "n_bins=64")
    assert type(single).__name__ == "FlairThreshold" and single.n_bins == 64
    assert [f.min_size for f in single.postprocessing] == [3]


# -- evaluate -o ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def evaluated(patients, filtered_model, tmp_path_factory):
    """The report of the filtered model on the patients, as JSON and CSV,
    and the masks predict writes for them."""
    root = tmp_path_factory.mktemp("evaluate")
    scans, masks = patients["scans"], patients["masks"]
    for name in ("r.json", "r.csv"):
        assert run("evaluate", filtered_model, *scans, "--truth", *masks, "-o", root / name) == 0
    assert run("predict", filtered_model, *scans, "-o", root / "out") == 0
    return root


_DICE = f"Dice [calibrated on healthy data at FPR {100 * MAX_FPR:g}%]"


def _dice(truth, predicted):
    return 2 * np.sum(truth & predicted) / (truth.sum() + predicted.sum())


def test_evaluate_writes_every_scans_figures_as_json(evaluated, patients):
    report = json.loads((evaluated / "r.json").read_text())
    scans, masks = patients["scans"], patients["masks"]
    assert [r["scan"] for r in report["scans"]] == scans
    assert [r["truth"] for r in report["scans"]] == masks
    assert [r["volume"] for r in report["scans"]] == [0, 1, 2]
    assert all(r["has_lesion"] for r in report["scans"])
    assert {r["aggregation"] for r in report["pooled"]} == {"pooled"}
    assert {r["aggregation"] for r in report["per_volume"]} == {"per-volume"}
    metrics = [r["metric"] for r in report["pooled"]]
    assert metrics.count("Dice") == 3 and "AUROC" in metrics
    # each scan's Dice is that of the (filtered) mask predict writes
    for i, record in enumerate(report["scans"]):
        scan = np.asarray(nib.load(scans[i]).dataobj)
        truth = np.asarray(nib.load(masks[i]).dataobj) > 0
        predicted = np.asarray(nib.load(evaluated / "out" / f"patient{i}_mask.nii.gz").dataobj) > 0
        foreground = scan != 0
        assert record[_DICE] == pytest.approx(_dice(truth[foreground], predicted[foreground]))
    [row] = [r for r in report["per_volume"] if f"{r['metric']} [{r['threshold']}]" == _DICE]
    assert row["value"] == pytest.approx(np.mean([r[_DICE] for r in report["scans"]]))
    assert row["n_volumes"] == 3


def test_evaluate_writes_a_row_per_scan_as_csv(evaluated, patients):
    with open(evaluated / "r.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    report = json.loads((evaluated / "r.json").read_text())
    assert [r["scan"] for r in rows] == [*patients["scans"], "pooled", "per-volume"]
    for row, record in zip(rows, report["scans"]):
        assert float(row[_DICE]) == pytest.approx(record[_DICE])
        assert row["has_lesion"] == "True"
    pooled = {f"{r['metric']} [{r['threshold']}]": r["value"] for r in report["pooled"]}
    assert set(pooled) <= set(rows[-2])
    for key, value in pooled.items():
        assert float(rows[-2][key]) == pytest.approx(value)


_LESION = f"[calibrated on healthy data at FPR {100 * MAX_FPR:g}%]"


def test_evaluate_writes_lesion_wise_figures_of_the_masks_predict_writes(evaluated, patients):
    report = json.loads((evaluated / "r.json").read_text())
    with open(evaluated / "r.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    totals = []
    for i, (record, row) in enumerate(zip(report["scans"], rows)):
        header = nib.load(patients["scans"][i]).header
        scan = np.asarray(nib.load(patients["scans"][i]).dataobj)
        truth = (np.asarray(nib.load(patients["masks"][i]).dataobj) > 0) & (scan != 0)
        predicted = np.asarray(nib.load(evaluated / "out" / f"patient{i}_mask.nii.gz").dataobj) > 0
        expected = lesion_wise_metrics(
            truth, predicted, voxel_volume=np.prod(header.get_zooms()[:3]) / 1000
        )
        totals.append(expected)
        figures = {
            "Lesions": expected.n_lesions,
            "Lesions detected": expected.n_detected,
            "Lesions missed": expected.n_missed,
            "Predicted components": expected.n_components,
            "False-positive components": expected.n_false_positive_components,
            "Lesion sensitivity": expected.sensitivity,
            "Volume error (voxels)": expected.volume_error,
            "Volume error (mL)": expected.volume_error_ml,
            "Relative volume error": expected.relative_volume_error,
        }
        for metric, value in figures.items():
            assert record[f"{metric} {_LESION}"] == pytest.approx(value)
            assert float(row[f"{metric} {_LESION}"]) == pytest.approx(value)
    pooled = sum(totals[1:], totals[0])
    assert pooled.n_lesions >= 3 and pooled.volume_error_ml != 0
    by_key = {f"{r['metric']} [{r['threshold']}]": r["value"] for r in report["pooled"]}
    for metric, value in (
        ("Lesions", pooled.n_lesions),
        ("Lesion sensitivity", pooled.sensitivity),
        ("Volume error (mL)", pooled.volume_error_ml),
    ):
        assert by_key[f"{metric} {_LESION}"] == pytest.approx(value)
        assert float(rows[-2][f"{metric} {_LESION}"]) == pytest.approx(value)


@pytest.mark.parametrize(
    "name, words",
    [
        ("r.json", r"'.*r\.json' exists; pass --overwrite"),
        ("r.txt", r"must end in \.json or \.csv"),
    ],
)
def test_evaluate_refuses_its_output_before_any_work(
    patients, filtered_model, tmp_path, capsys, monkeypatch, name, words
):
    output = tmp_path / name
    output.write_text("precious")

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(anomseg.cli._evaluate, "_load_model", never)
    scans, masks = patients["scans"], patients["masks"]
    assert run("evaluate", filtered_model, *scans, "--truth", *masks, "-o", output) == 1
    [error] = _lines(capsys.readouterr().err, "error")
    assert re.search(words, error), error
    assert output.read_text() == "precious"
    monkeypatch.undo()
    status = run(
        "evaluate", filtered_model, *scans, "--truth", *masks, "-o", output, "--overwrite"
    )
    assert (status == 0) == (name == "r.json")
    if status == 0:
        assert json.loads(output.read_text())["model"] == str(filtered_model)


def test_the_recommended_preset_is_the_python_factorys_ensemble(monkeypatch):
    """--method recommended builds what make_recommended_ensemble builds (the
    same members, seeds and options), and options given win."""
    from anomseg.ensemble import make_recommended_ensemble

    build, built = anomseg.cli._fit._fit_estimator, []

    def capture(args):
        built.append(build(args))
        raise SystemExit(0)  # stop before any scan is read

    monkeypatch.setattr(anomseg.cli._fit, "_fit_estimator", capture)
    fit = ["fit", "--method", "recommended", "x.nii.gz", "-o", "m.anomseg"]
    for options in ([], ["--max-fpr", "0.01", "--ensemble", "2"]):
        with pytest.raises(SystemExit):
            main([*fit, "--param", "random_state=0", *options])
    expected = make_recommended_ensemble(random_state=0)
    assert repr(built[0].get_params()) == repr(expected.get_params())
    assert built[1].max_fpr == 0.01 and len(built[1].estimators) == 3
    assert built[1].smoothing == (2.0, 2.0, 1.0)
    assert run(*fit, "--method", "vae") == 1  # a preset goes alone
