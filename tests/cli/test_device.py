"""``--device`` of predict, evaluate and calibrate: where a model's networks
run, whatever device they were trained on."""

import nibabel as nib
import numpy as np
import pytest
import torch

from anomseg.cli import main
from anomseg.datasets import make_healthy_images

TINY = ["width=4", "n_epochs=1", "device=cpu", "random_state=0"]


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    folder = tmp_path_factory.mktemp("device")
    slices = make_healthy_images(n_images=12, shape=(32, 32), random_state=0)
    paths = []
    for i in range(2):
        path = folder / f"s{i}.nii.gz"
        volume = np.moveaxis(slices[6 * i : 6 * (i + 1)], 0, -1).astype(np.float32)
        nib.save(nib.Nifti1Image(volume, np.eye(4)), path)
        paths.append(str(path))
    model = folder / "vae.anomseg"
    options = [arg for param in TINY for arg in ("--param", param)]
    assert main(["fit", "--method", "vae-reconstruction", *paths, "-o", str(model),
                 *options, "--no-progress"]) == 0  # fmt: skip
    return paths, model


def run(*args):
    return main([*map(str, args), "--no-progress"])


@pytest.mark.parametrize("command", ["predict", "evaluate", "calibrate"])
def test_every_command_that_loads_a_model_takes_device(command, scans, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert "--device {auto,cpu,cuda}" in capsys.readouterr().out


def test_predict_on_the_device_asked_gives_the_maps_of_the_model(scans, tmp_path):
    paths, model = scans
    assert run("predict", model, *paths, "-o", tmp_path / "default") == 0
    assert run("predict", model, *paths, "-o", tmp_path / "auto", "--device", "auto") == 0
    for name in ("s0", "s1"):
        maps = [
            np.asarray(nib.load(tmp_path / out / f"{name}_anomaly_map.nii.gz").dataobj)
            for out in ("default", "auto")
        ]
        if torch.cuda.is_available():  # another device: close, not equal
            np.testing.assert_allclose(maps[0], maps[1], atol=1e-4)
        else:
            np.testing.assert_array_equal(maps[0], maps[1])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_refused_in_one_line(scans, tmp_path, capsys):
    paths, model = scans
    assert run("predict", model, *paths, "-o", tmp_path / "out", "--device", "cuda") == 1
    err = capsys.readouterr().err
    assert "--device cuda, but torch finds no CUDA device" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_pickle_is_refused_a_device(scans, tmp_path, capsys):
    from anomseg import load_model

    paths, model = scans
    pickled = tmp_path / "vae.pkl"
    load_model(model).save(pickled, format="pickle")
    args = ["predict", pickled, *paths, "-o", tmp_path / "out", "--trust-pickle"]
    assert run(*args, "--device", "cpu") == 1
    assert "--device applies to safe model files" in capsys.readouterr().err
