"""``anomseg fit --checkpoint PATH [--resume]``: a long training survives an
interruption, and the resumed training gives the model an uninterrupted one
would (the library's side is tested in ``tests/test_callbacks.py``)."""

import pytest
import torch

from anomseg import load_model
from anomseg.callbacks import read_checkpoint
from anomseg.cli import main

from .bad_inputs import volume, write

#: A tiny VAE restorer, as --param values; a VAE may resume to more epochs.
TINY_VAE = [
    "width=2",
    "validation_fraction=0",
    "device=cpu",
    "tv_weights=[0.0]",
    "max_tv_images=2",
]


@pytest.fixture(scope="module")
def healthy(tmp_path_factory):
    root = tmp_path_factory.mktemp("healthy")
    return [write(root / f"h{i}.nii.gz", volume(seed=i)) for i in range(3)]


def fit(healthy, output, n_epochs, *options):
    params = [*TINY_VAE, f"n_epochs={n_epochs}"]
    args = [arg for param in params for arg in ("--param", param)]
    argv = ["fit", "--method", "vae", *healthy, "-o", output, *args, *options]
    return main([str(arg) for arg in argv])


def weights(path):
    return load_model(path)[-1].module_.state_dict()  # after the intensity scaler


def test_a_resumed_training_gives_the_uninterrupted_model(healthy, tmp_path, capsys):
    checkpoint = tmp_path / "vae.ckpt"
    assert fit(healthy, tmp_path / "first.anomseg", 2, "--checkpoint", checkpoint) == 0
    assert read_checkpoint(checkpoint)["epoch"] == 2
    resumed = tmp_path / "resumed.anomseg"
    assert fit(healthy, resumed, 3, "--checkpoint", checkpoint, "--resume") == 0
    assert "resumed from" in capsys.readouterr().err
    # --checkpoint fixes random_state to 0, so the straight run gives it too.
    straight = tmp_path / "straight.anomseg"
    assert fit(healthy, straight, 3, "--param", "random_state=0") == 0
    a, b = weights(resumed), weights(straight)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[key], b[key]) for key in a)
    first = weights(tmp_path / "first.anomseg")
    assert not all(torch.equal(a[key], first[key]) for key in a)


def test_an_existing_checkpoint_is_kept_without_resume_or_overwrite(healthy, tmp_path, capsys):
    checkpoint = tmp_path / "vae.ckpt"
    checkpoint.write_bytes(b"a user's file")
    assert fit(healthy, tmp_path / "m.anomseg", 1, "--checkpoint", checkpoint) == 1
    assert "pass --resume" in capsys.readouterr().err
    assert checkpoint.read_bytes() == b"a user's file"
    assert not (tmp_path / "m.anomseg").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--method", "flair-threshold", "--checkpoint", "c.ckpt"], "trains no network"),
        (["--method", "vae", "--resume"], "need --checkpoint"),
        (["--method", "vae", "--checkpoint", "m.anomseg"], "names the model file"),
    ],
)
def test_checkpoint_options_are_checked_before_any_work(
    healthy, tmp_path, capsys, monkeypatch, argv, message
):
    monkeypatch.chdir(tmp_path)
    assert main(["fit", *healthy, "-o", "m.anomseg", *argv]) == 1
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []
