"""``anomseg predict --figures [--truth MASK...]``: a figure per scan and a
cohort page, outputs of the folder like the maps and masks."""

import json
import re
import subprocess
import sys

import matplotlib
import matplotlib.figure
import numpy as np
import pytest

from anomseg import load_model
from anomseg.cli import main
from anomseg.cohort import read_summary

from .bad_inputs import SHAPE, volume, write

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """A model fitted on healthy scans, two scans (``a`` with a bright
    lesion) and their truth masks, named to pair by name."""
    root = tmp_path_factory.mktemp("figures")
    healthy = [write(root / f"healthy{i}.nii.gz", volume(i)) for i in range(3)]
    scan = volume(10)
    truth = np.zeros(SHAPE, np.uint8)
    truth[10:14, 10:14, 2:4] = 1
    scan[truth > 0] *= 1.8
    scans = [write(root / "a.nii.gz", scan), write(root / "b.nii.gz", volume(11))]
    truths = [
        write(root / "a_seg.nii.gz", truth, dtype=np.uint8),
        write(root / "b_seg.nii.gz", np.zeros(SHAPE), dtype=np.uint8),
    ]
    model = root / "model.anomseg"
    assert (
        main(["fit", "--no-progress", "--method", "flair-threshold", *healthy, "-o", str(model)])
        == 0
    )
    return {"root": root, "model": str(model), "scans": scans, "truths": truths}


def _predict(cohort, output, *options):
    return main(
        [
            "predict",
            "--no-progress",
            cohort["model"],
            *cohort["scans"],
            "-o",
            str(output),
            *options,
        ]
    )


def test_a_figure_per_scan_and_a_report(cohort, tmp_path, monkeypatch, capsys):
    saved = []
    savefig = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(
        matplotlib.figure.Figure,
        "savefig",
        lambda figure, *args, **kwargs: saved.append(figure) or savefig(figure, *args, **kwargs),
    )
    output = tmp_path / "out"
    # the masks given in another order than the scans: paired by name
    assert _predict(cohort, output, "--figures", "--truth", *cohort["truths"][::-1]) == 0
    # said by the command that runs
    assert "anomseg predict: warning: --truth masks paired" in capsys.readouterr().err
    final = load_model(cohort["model"])  # a bare FlairThreshold: no preprocessing to hold
    rows = read_summary(output / "summary.csv")
    assert len(saved) == 2
    for figure, scan, name in zip(saved, cohort["scans"], "ab"):
        row = rows[scan]
        title = figure.get_suptitle()
        assert title.startswith(
            f"{name}\nFlairThreshold, threshold {final.threshold_:.4g} (healthy FPR 0.05); "
            f"lesion {row['lesion_volume_ml']:.3g} mL in {row['n_components']} component(s), "
            "truth "
        ), title
        assert re.search(r"Dice \d\.\d{3}$", title)
        titles = [ax.get_title() for ax in figure.axes if ax.axison]
        assert titles[-3:] == [
            t for t in titles[-3:] if re.fullmatch(r"(sagittal|coronal|axial) \(\w = \d+\)", t)
        ]
        assert len(titles) == 6
    # scan a's truth (paired by name, not by order) is outlined in cyan
    # around its lesion (x and y 10-13, z 2-3: columns and, turned, rows 10-13)
    axial = next(ax for ax in saved[0].axes if ax.get_title().startswith("axial (z = 3)"))
    cyan = [c for c in axial.collections if tuple(c.get_edgecolor()[0][:3]) == (0, 1, 1)]
    [truth_outline] = cyan
    (x0, y0), (x1, y1) = truth_outline.get_paths()[0].get_extents().get_points()
    assert (x0, x1) == (9.5, 13.5) and (y0, y1) == (SHAPE[1] - 14.5, SHAPE[1] - 10.5)
    # b's truth is empty: no cyan outline
    assert not any(
        tuple(c.get_edgecolor()[0][:3]) == (0, 1, 1)
        for ax in saved[1].axes
        for c in ax.collections
    )
    record = json.loads((output / "anomseg-outputs.json").read_text())["outputs"]
    for name in ("a_figure.png", "b_figure.png", "report.html"):
        assert record[name]["state"] == "written"
    for name in ("a_figure.png", "b_figure.png"):
        assert (output / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (output / "report.html").read_text()
    assert page.count('<tr class="done">') == 2
    for name in "ab":
        assert f'<a href="{name}_figure.png"><img src="{name}_figure.png"' in page
        assert f'<a href="{name}_mask.nii.gz">{name}_mask.nii.gz</a>' in page
    assert "<th>lesion volume ml</th>" in page
    # a rerun skips the complete scans, figures included, and keeps them
    before = {
        name: (output / name).stat().st_mtime_ns for name in ("a_figure.png", "b_figure.png")
    }
    saved.clear()
    assert _predict(cohort, output, "--figures") == 0
    assert saved == []
    assert {name: (output / name).stat().st_mtime_ns for name in before} == before
    page = (output / "report.html").read_text()
    assert page.count('<tr class="skipped">') == 2
    assert '<img src="a_figure.png"' in page


def test_a_run_killed_before_its_figure_is_redone(cohort, tmp_path, capsys):
    output = tmp_path / "out"
    assert _predict(cohort, output, "--figures") == 0
    (output / "a_figure.png").unlink()
    assert _predict(cohort, output, "--figures") == 0
    assert (output / "a_figure.png").stat().st_size > 0
    assert "1 done, 1 skipped" in capsys.readouterr().err


def test_a_report_anomseg_did_not_write_is_left_alone(cohort, tmp_path, capsys):
    output = tmp_path / "out"
    output.mkdir()
    (output / "report.html").write_text("mine")
    assert _predict(cohort, output, "--figures") == 1
    err = capsys.readouterr().err
    assert "report.html' exists and anomseg did not write it" in err
    assert (output / "report.html").read_text() == "mine"
    assert not (output / "a_mask.nii.gz").exists()  # refused before any work


def test_truth_needs_figures_and_one_mask_per_scan(cohort, tmp_path, capsys):
    assert _predict(cohort, tmp_path / "o", "--truth", *cohort["truths"]) == 1
    assert "--truth outlines the truth in the figures: add --figures." in capsys.readouterr().err
    assert _predict(cohort, tmp_path / "o", "--figures", "--truth", cohort["truths"][0]) == 1
    assert "got 2 scan(s) but 1 --truth mask(s)" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_truth_off_the_grid_fails_its_scan(cohort, tmp_path, capsys):
    off = write(tmp_path / "a_seg.nii.gz", np.zeros((5, 5, 5)), dtype=np.uint8)
    args = ["--figures", "--truth", off, cohort["truths"][1]]
    assert _predict(cohort, tmp_path / "out", *args) == 1
    assert "is not on the grid of" in capsys.readouterr().err
    assert not (tmp_path / "out" / "a_mask.nii.gz").exists()
    assert (tmp_path / "out" / "b_figure.png").exists()


def test_without_figures_matplotlib_is_not_imported(cohort, tmp_path):
    code = (
        "import sys; from anomseg.cli import main; "
        f"rc = main(['predict', '--no-progress', {cohort['model']!r}, {cohort['scans'][0]!r}, "
        f"'-o', {str(tmp_path)!r}]); "
        "print(rc, 'matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[-2:] == ["0", "False"]
    assert not (tmp_path / "report.html").exists()
