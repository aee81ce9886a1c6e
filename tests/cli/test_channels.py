"""Multi-channel scans from the command line: 4D files whose fourth axis
holds the channels (such as FLAIR and T2), declared at ``fit`` with
``--param channel_axis=-1`` and recorded in the model, so that ``predict``,
``evaluate`` and ``calibrate`` read them as ``fit`` did."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from anomseg import load_model
from anomseg.cli import main

from .bad_inputs import SHAPE, volume, write

#: An oblique grid, so that the maps' grid is checked, not just their shape.
AFFINE = np.array(
    [[-1.0, 0.0, 0.0, 20.0], [0.0, 0.0, 1.2, -8.0], [0.0, 1.1, 0.0, 4.0], [0, 0, 0, 1]]
)


def scan4d(seed, lesion=False):
    """A FLAIR-like channel (brighter in the lesion) and a T2-like one."""
    flair, t2 = volume(seed), volume(seed + 100)
    if lesion:
        flair[10:14, 10:14, 2:4] *= 1.8
    return np.stack([flair, t2], axis=-1)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("channels")
    healthy = [write(root / f"h{i}.nii.gz", scan4d(i), AFFINE) for i in range(3)]
    scan = write(root / "p.nii.gz", scan4d(10, lesion=True), AFFINE)
    truth = np.zeros(SHAPE, np.uint8)
    truth[10:14, 10:14, 2:4] = 1
    truth = write(root / "p_seg.nii.gz", truth, AFFINE, np.uint8)
    model = root / "model.anomseg"
    fit = ["fit", "--no-progress", "--method", "flair-threshold", "-o", str(model)]
    assert main([*fit, "--param", "channel_axis=-1", *healthy]) == 0
    return {"root": root, "healthy": healthy, "scan": scan, "truth": truth, "model": str(model)}


def test_predict_writes_3d_maps_on_the_scans_grid_equal_to_the_api(cohort, tmp_path):
    out = tmp_path / "out"
    assert main(["predict", "--no-progress", cohort["model"], cohort["scan"], "-o", str(out)]) == 0
    model = load_model(cohort["model"])
    stacked = scan4d(10, lesion=True)  # the file's axes are canonical up to the affine's
    canonical = nib.as_closest_canonical(nib.load(cohort["scan"])).get_fdata(dtype=np.float32)
    masks, maps = model.predict([canonical], return_maps=True)
    for name, expected in (("mask", masks[0]), ("anomaly_map", maps[0])):
        written = nib.load(out / f"p_{name}.nii.gz")
        assert written.shape == SHAPE == stacked.shape[:3]
        np.testing.assert_allclose(written.affine, AFFINE)
        canonical_written = nib.as_closest_canonical(written).get_fdata()
        np.testing.assert_allclose(canonical_written, np.ma.filled(expected, 0), atol=1e-6)
    assert nib.load(out / "p_mask.nii.gz").get_fdata()[10:14, 10:14, 2:4].mean() > 0.5


def test_evaluate_and_calibrate_read_4d_scans_as_the_model_says(cohort, tmp_path, capsys):
    assert main(["evaluate", cohort["model"], cohort["scan"], "--truth", cohort["truth"]]) == 0
    assert "1 scan(s)" in capsys.readouterr().out
    new = tmp_path / "new.anomseg"
    assert main(["calibrate", cohort["model"], *cohort["healthy"][:2], "-o", str(new)]) == 0
    assert load_model(new).channel_axis == -1


@pytest.mark.parametrize(
    ("command", "scan", "message"),
    [
        (
            "predict",
            scan4d(20)[..., :1].repeat(3, axis=-1),
            "has 3 channel(s) (the fourth axis of its file), but the model was fitted "
            "on scans of 2",
        ),
        ("evaluate", scan4d(20)[..., 0], "but the model was fitted on scans of 2"),
    ],
)
def test_a_scan_of_other_channels_than_the_model_is_refused(
    cohort, tmp_path, capsys, command, scan, message
):
    path = write(tmp_path / "other.nii.gz", scan, AFFINE)
    options = {"predict": ["-o", str(tmp_path / "out")], "evaluate": ["--truth", cohort["truth"]]}
    assert main([command, cohort["model"], path, *options[command]]) == 1
    err = capsys.readouterr().err
    assert message in err and "other.nii.gz" in err
    assert not (tmp_path / "out").exists()


def test_4d_scans_need_channel_axis_declared_at_fit(cohort, tmp_path, capsys):
    fit = ["fit", "--method", "flair-threshold", "-o", str(tmp_path / "m.anomseg")]
    assert main([*fit, *cohort["healthy"]]) == 1
    err = capsys.readouterr().err
    assert "2 volumes on its fourth axis" in err
    assert "fit the model with --param channel_axis=-1" in err
    # and a 3D model refuses them at predict, with the same advice
    single = tmp_path / "single.anomseg"
    assert main([*fit[:-1], str(single), write(tmp_path / "h.nii.gz", volume(0))]) == 0
    out = tmp_path / "out"
    assert main(["predict", str(single), cohort["scan"], "-o", str(out)]) != 0
    assert "fit the model with --param channel_axis=-1" in capsys.readouterr().err


def test_every_scan_of_a_fit_needs_the_same_channels(cohort, tmp_path, capsys):
    three = write(tmp_path / "three.nii.gz", scan4d(5)[..., [0, 1, 1]], AFFINE)
    fit = ["fit", "--method", "flair-threshold", "-o", str(tmp_path / "m.anomseg")]
    assert main([*fit, "--param", "channel_axis=-1", cohort["healthy"][0], three]) == 1
    err = capsys.readouterr().err
    assert "'" + three + "' has 3 channel(s)" in err and "h0.nii.gz' has 2" in err


def test_a_deep_method_fits_and_predicts_4d_scans(cohort, tmp_path):
    model = tmp_path / "dae.anomseg"
    tiny = ["width=4", "depth=3", "noise_resolution=4", "n_epochs=1", "batch_size=4"]
    tiny += ["validation_fraction=0.0", "device=cpu", "random_state=0", "channel_axis=-1"]
    fit = ["fit", "--no-progress", "--method", "denoising-ae", "-o", str(model)]
    assert main([*fit, *(f"--param={p}" for p in tiny), *cohort["healthy"]]) == 0
    out = tmp_path / "out"
    assert main(["predict", "--no-progress", str(model), cohort["scan"], "-o", str(out)]) == 0
    canonical = nib.as_closest_canonical(nib.load(cohort["scan"])).get_fdata(dtype=np.float32)
    expected = load_model(model).predict([canonical])[0]
    written = nib.load(out / "p_mask.nii.gz")
    assert written.shape == SHAPE
    np.testing.assert_array_equal(nib.as_closest_canonical(written).get_fdata(), expected)


# -- one file per channel ----------------------------------------------------------------
@pytest.fixture(scope="module")
def per_channel(cohort):
    """The scans of ``cohort`` as one file per channel, named ``SCAN_flair``
    and ``SCAN_t2``, and a model fitted on them with the channels named in
    the other order than the 4D files hold them."""
    root = cohort["root"] / "split"
    for path in [*cohort["healthy"], cohort["scan"]]:
        image = nib.load(path)
        for k, name in enumerate(("flair", "t2")):
            write(
                root / Path(path).name.replace(".nii", f"_{name}.nii"),
                image.dataobj[..., k],
                AFFINE,
            )
    healthy = [str(root / f"h{i}_{{channel}}.nii.gz") for i in range(3)]
    model = root / "model.anomseg"
    fit = ["fit", "--no-progress", "--method", "flair-threshold", "-o", str(model)]
    assert main([*fit, "--channels", "t2,flair", *healthy]) == 0
    return {
        "root": root,
        "healthy": healthy,
        "scan": str(root / "p_{channel}.nii.gz"),
        "model": str(model),
    }


def test_per_channel_files_give_the_4d_files_masks(cohort, per_channel, tmp_path, capsys):
    split, stacked = tmp_path / "split", tmp_path / "stacked"
    model = per_channel["model"]
    assert main(["predict", "--no-progress", model, per_channel["scan"], "-o", str(split)]) == 0
    # named after the template without its field; the model's channels, in its order
    assert sorted(p.name for p in split.glob("*.nii.gz")) == [
        "p_anomaly_map.nii.gz",
        "p_mask.nii.gz",
    ]
    assert load_model(model).flair_channel == 1  # the channel named flair
    assert (
        main(["predict", "--no-progress", cohort["model"], cohort["scan"], "-o", str(stacked)])
        == 0
    )
    mask = nib.load(split / "p_mask.nii.gz")
    assert mask.shape == SHAPE
    np.testing.assert_allclose(mask.affine, AFFINE)
    np.testing.assert_array_equal(
        mask.get_fdata(), nib.load(stacked / "p_mask.nii.gz").get_fdata()
    )
    # evaluate and calibrate take the templates too
    capsys.readouterr()
    assert main(["evaluate", model, per_channel["scan"], "--truth", cohort["truth"]]) == 0
    assert "p_{channel}" not in capsys.readouterr().err
    new = tmp_path / "new.anomseg"
    assert main(["calibrate", model, *per_channel["healthy"][:2], "-o", str(new)]) == 0
    capsys.readouterr()
    assert main(["info", str(new)]) == 0
    assert "  channels: t2, flair\n" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["4d", "per_channel"])
def test_figures_draw_the_flair_channel(kind, cohort, per_channel, tmp_path, monkeypatch):
    """The anatomy under the outlines is the FLAIR channel: channel 0 of the
    4D files, channel 1 of the per-channel model (fitted as t2,flair)."""
    import anomseg.plotting

    drawn = []
    real = anomseg.plotting.plot_scan_figure

    def spy(image, *args, **kwargs):
        drawn.append(np.asarray(image))
        return real(image, *args, **kwargs)

    monkeypatch.setattr(anomseg.plotting, "plot_scan_figure", spy)
    setup = cohort if kind == "4d" else per_channel
    out = tmp_path / "out"
    args = ["predict", "--no-progress", setup["model"], setup["scan"], "-o", str(out)]
    assert main([*args, "--figures"]) == 0
    flair = nib.as_closest_canonical(nib.load(cohort["scan"])).get_fdata()[..., 0]
    (image,) = drawn
    np.testing.assert_allclose(image, flair, rtol=1e-5)


def test_the_channel_files_of_a_scan_must_share_a_grid(per_channel, tmp_path, capsys):
    flair = write(tmp_path / "q_flair.nii.gz", volume(30), AFFINE)
    t2 = write(tmp_path / "q_t2.nii.gz", volume(31), np.diag([2.0, 1, 1, 1]))
    out = tmp_path / "out"
    assert (
        main(
            ["predict", per_channel["model"], str(tmp_path / "q_{channel}.nii.gz"), "-o", str(out)]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert f"the channel files '{t2}' and '{flair}' of one scan are not on one grid" in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            [],
            "is a path template of one file per channel, but the model records no channel "
            "names; fit it with --channels",
        ),
        (
            ["--channels", "t1,t2"],
            "flair-threshold thresholds one FLAIR channel, and --channels t1,t2 names none "
            "'flair'",
        ),
        (
            ["--channels", "flair,t2", "--param", "channel_axis=None"],
            "--channels reads scans of several channels",
        ),
        (["--channels", "flair,t2,pd"], "names 3"),
    ],
)
def test_fit_refuses_channels_it_cannot_read(
    per_channel, cohort, tmp_path, capsys, options, message
):
    fit = ["fit", "--method", "flair-threshold", "-o", str(tmp_path / "m.anomseg"), *options]
    scans = cohort["healthy"] if "flair,t2,pd" in options else per_channel["healthy"]
    assert main([*fit, *scans]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "m.anomseg").exists()


def test_the_api_fits_on_one_file_per_channel_as_on_4d_files(cohort, per_channel):
    from anomseg.baselines import FlairThreshold

    files = [
        (p.replace("{channel}", "flair"), p.replace("{channel}", "t2"))
        for p in per_channel["healthy"]
    ]
    split = FlairThreshold(channel_axis=-1).fit(files)
    stacked = FlairThreshold(channel_axis=-1).fit(cohort["healthy"])
    assert split.threshold_ == stacked.threshold_ and split.n_channels_ == 2
    with pytest.raises(ValueError, match="one file per channel, which needs channel_axis=-1"):
        FlairThreshold().fit(files)
