"""``anomseg calibrate``: a model's threshold calibrated again on healthy
scans of another site, without training it again; and ``info``, which
shows where each calibration came from (and starts without torch)."""

import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from anomseg import load_model, model_info
from anomseg.baselines import FlairThreshold
from anomseg.cli import main
from anomseg.datasets import make_healthy_images
from anomseg.preprocessing import IntensityScaler, make_anomaly_pipeline

MAX_FPR = 0.05


def _volumes(n, seed):
    slices = make_healthy_images(n_images=6 * n, shape=(32, 32), random_state=seed)
    return [np.moveaxis(slices[6 * i : 6 * (i + 1)], 0, -1) for i in range(n)]


def _site_b(volumes):
    """Another scanner: blurrier, with other intensities. The smoothed rank
    maps of FlairThreshold vary more on it, so its healthy FPR at site A's
    threshold is far above the one calibrated (about 0.18 for 0.05)."""
    return [np.where(v > 0, gaussian_filter(v, (2, 2, 0)) * 1.7 + 0.2, 0) for v in volumes]


def _save(volumes, folder, name):
    paths = []
    for i, volume in enumerate(volumes):
        path = folder / f"{name}{i}.nii.gz"
        nib.save(nib.Nifti1Image(volume.astype(np.float32), np.eye(4)), path)
        paths.append(str(path))
    return paths


@pytest.fixture
def sites(tmp_path):
    return {
        "a": _save(_volumes(4, seed=0), tmp_path, "siteA"),
        "b": _save(_site_b(_volumes(3, seed=1)), tmp_path, "siteB"),
        "b_test": _site_b(_volumes(3, seed=2)),
    }


def run(*args):
    return main([*map(str, args), "--no-progress"])


def _healthy_fpr(model, volumes):
    masks = model.predict([v.astype(np.float32) for v in volumes])
    return np.mean([mask[v > 0].mean() for mask, v in zip(masks, volumes)])


def test_calibrate_at_a_new_site(sites, tmp_path, capsys):
    old, new = tmp_path / "siteA.anomseg", tmp_path / "siteB.anomseg"
    fit = ["fit", "--method", "flair-threshold", "--smoothing", "1.5", *sites["a"], "-o", old]
    assert run(*fit, "--max-fpr", MAX_FPR) == 0
    assert run("calibrate", old, *sites["b"], "-o", new) == 0
    assert f"saved {new}: threshold" in capsys.readouterr().out
    before, after = load_model(old), load_model(new)
    assert _healthy_fpr(before, sites["b_test"]) > 2 * MAX_FPR
    assert MAX_FPR / 2 < _healthy_fpr(after, sites["b_test"]) < 1.5 * MAX_FPR
    assert after.get_params() == before.get_params()  # nothing but the calibration
    assert after.threshold_ != before.threshold_
    # The record of both calibrations, beside the model's own figures.
    first, second = model_info(new)["metadata"]["calibrations"]
    assert first["by"] == "fit" and first["n_scans"] == 4
    assert first["threshold"] == before.threshold_ and "fit --method" in first["command"]
    assert second["by"] == "calibrate" and second["threshold"] == after.threshold_
    assert second["scans"] == [f"siteB{i}.nii.gz" for i in range(3)]
    assert second["n_calibration_pixels"] == after.n_calibration_pixels_
    assert len(second["scans_sha256"]) == 3
    assert run("info", new) == 0
    out = capsys.readouterr().out
    assert "calibrations (2, the last one in use):" in out
    assert f"1. fit: 4 scan(s), {before.n_calibration_pixels_} voxels, max_fpr 0.05" in out
    assert "2. calibrate on " in out and "3 scan(s) (siteB0.nii.gz, siteB1.nii.gz" in out
    assert f"command: anomseg calibrate {old} {sites['b'][0]}" in out


def test_a_new_max_fpr_and_a_second_calibration(sites, tmp_path, capsys):
    old, new, newer = (tmp_path / f"{name}.anomseg" for name in ("a", "b", "c"))
    assert run("fit", "--method", "flair-threshold", *sites["a"], "-o", old) == 0
    assert run("calibrate", old, *sites["b"], "-o", new, "--max-fpr", "0.02") == 0
    assert run("calibrate", new, *sites["b"][:2], "-o", newer) == 0
    model = load_model(newer)
    assert model.max_fpr == 0.02 and model.calibration_fpr_ <= 0.02
    model.predict([sites["b_test"][0].astype(np.float32)])  # consistent: not refused
    history = model_info(newer)["metadata"]["calibrations"]
    assert [step["max_fpr"] for step in history] == [0.05, 0.02, 0.02]
    assert [step["n_scans"] for step in history] == [4, 3, 2]
    capsys.readouterr()
    assert run("info", newer) == 0
    assert "calibrations (3, the last one in use):" in capsys.readouterr().out


def test_the_network_is_not_trained_again(sites, tmp_path):
    old, new = tmp_path / "vae.anomseg", tmp_path / "vae-b.anomseg"
    params = ["width=4", "n_epochs=1", "device=cpu", "random_state=0"]
    options = [arg for param in params for arg in ("--param", param)]
    assert run("fit", "--method", "vae-reconstruction", *sites["a"], "-o", old, *options) == 0
    assert run("calibrate", old, *sites["b"], "-o", new) == 0
    before, after = load_model(old)[-1], load_model(new)[-1]
    weights = before.module_.state_dict()
    assert weights.keys() == after.module_.state_dict().keys()
    for key, value in after.module_.state_dict().items():
        assert value.equal(weights[key]), key
    assert after.threshold_ != before.threshold_


def test_a_pipeline_calibrates_on_paths_as_on_arrays(sites):
    volumes = [np.asanyarray(nib.load(path).dataobj) for path in sites["b"]]
    pipes = [
        make_anomaly_pipeline(IntensityScaler(), FlairThreshold(smoothing=1.0)).fit(
            _volumes(3, seed=0)
        )
        for _ in range(2)
    ]
    scaler = pipes[0][0].get_params(), dict(vars(pipes[0][0]))
    pipes[0].calibrate(sites["b"])
    pipes[1].calibrate(volumes)
    assert pipes[0].threshold_ == pipes[1].threshold_
    assert pipes[0][-1].n_calibration_pixels_ == pipes[1][-1].n_calibration_pixels_
    assert (pipes[0][0].get_params(), vars(pipes[0][0])) == scaler  # steps untouched
    bare = [FlairThreshold().fit(_volumes(3, seed=0)) for _ in range(2)]
    bare[0].calibrate(sites["b"])
    assert bare[0].threshold_ == bare[1].calibrate(volumes).threshold_


def test_calibrate_on_patients_excludes_their_lesions_as_fit_does(sites, tmp_path):
    """--exclude, --exclude-margin and --exclude-slices leave out what they
    leave out in fit, and the record says so."""
    model = tmp_path / "m.anomseg"
    assert run("fit", "--method", "flair-threshold", *sites["a"], "-o", model) == 0
    lesion = np.zeros(nib.load(sites["b"][0]).shape, np.uint8)
    lesion[10:14, 10:14, 2] = 1
    masks = _save([lesion] * 3, tmp_path, "lesion")
    counts = {}
    for name, options, said in [
        ("voxels", [], "the voxels of 3 lesion mask(s)"),
        ("margin", ["--exclude-margin", "2"], "mask(s) grown by 2 voxel(s)"),
        ("slices", ["--exclude-slices"], "mask(s), widened to whole slices"),
    ]:
        out = tmp_path / f"{name}.anomseg"
        assert run("calibrate", model, *sites["b"], "-o", out, "--exclude", *masks, *options) == 0
        counts[name] = load_model(out).n_calibration_pixels_
        record = model_info(out)["metadata"]["calibrations"][-1]
        assert record["excluded"].endswith(said)
        assert record["command"].endswith(" ".join([*masks, *options]))
    foreground = sum(int((nib.load(s).get_fdata() > 0).sum()) for s in sites["b"])
    assert foreground - counts["voxels"] == 3 * 16
    assert counts["slices"] < counts["margin"] < counts["voxels"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["calibrate", "{model}", "-o", "{out}"], "no scans given"),
        (["calibrate", "{model}", "{scan}", "-o", "{model}"], "-o '{model}' is MODEL"),
        (["calibrate", "{missing}", "{scan}", "-o", "{out}"], "MODEL '{missing}' is not a file"),
        (["calibrate", "{model}", "{scan}", "-o", "{scan}"], "is one of the command's input"),
        (["calibrate", "{model}", "{scan}", "-o", "{out}", "--max-fpr", "1.5"], "--max-fpr"),
        (
            ["calibrate", "{model}", "{scan}", "-o", "{out}", "--exclude", "{scan}", "{scan}"],
            "2 --exclude mask(s)",
        ),
    ],
)
def test_errors_are_one_line(sites, tmp_path, capsys, args, message):
    model = tmp_path / "m.anomseg"
    assert run("fit", "--method", "flair-threshold", *sites["a"][:2], "-o", model) == 0
    names = {"model": model, "out": tmp_path / "new.anomseg", "scan": sites["b"][0]}
    names["missing"] = tmp_path / "absent.anomseg"
    capsys.readouterr()
    assert run(*(arg.format(**names) for arg in args)) == 1
    err = capsys.readouterr().err
    assert message.format(**names) in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "new.anomseg").exists()


def test_an_existing_output_is_kept_without_overwrite(sites, tmp_path, capsys):
    model, out = tmp_path / "m.anomseg", tmp_path / "new.anomseg"
    assert run("fit", "--method", "flair-threshold", *sites["a"][:2], "-o", model) == 0
    out.write_bytes(b"mine")
    assert run("calibrate", model, *sites["b"], "-o", out) == 1
    assert "pass --overwrite to replace it" in capsys.readouterr().err
    assert out.read_bytes() == b"mine"
    assert run("calibrate", model, *sites["b"], "-o", out, "--overwrite") == 0
    assert load_model(out).threshold_ != load_model(model).threshold_


def test_info_on_a_torch_free_model_does_not_import_torch(sites, tmp_path):
    model = tmp_path / "m.anomseg"
    assert run("fit", "--method", "flair-threshold", *sites["a"][:2], "-o", model) == 0
    code = (
        "import sys\n"
        "from anomseg.cli import main\n"
        f"assert main(['info', {str(model)!r}]) == 0\n"
        "print('torch' in sys.modules, file=sys.stderr)\n"
    )
    process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "checksum OK" in process.stdout, process.stderr
    assert process.stderr.strip() == "False"


class _Runs:
    """Unpickled, it would write a file: what a safe file must never do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return exec, (f"open({self.path!r}, 'w').close()",)


def test_a_file_read_without_torch_runs_no_code(tmp_path):
    import pickle
    import zipfile

    from anomseg.persistence._format import read_safe

    path, ran = tmp_path / "evil.anomseg", tmp_path / "ran"
    payload = {"format": "anomseg.torch_model", "format_version": 2, "x": _Runs(str(ran))}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/data.pkl", pickle.dumps(payload, protocol=2))
    with pytest.raises(ValueError, match="is not a safe anomseg model file"):
        read_safe(path)
    assert not ran.exists()
