"""Data-parallel training on 2 CPU processes (gloo, on loopback), started by
``torchrun`` as a user would start it: through the API
(``tests/distributed_worker.py``) and through the command line."""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from anomseg._registry import method_class
from anomseg.base import load_model
from anomseg.datasets import make_healthy_images

ROOT = Path(__file__).parents[1]
WORKER = Path(__file__).with_name("distributed_worker.py")
SHAPE = [32, 32]
VAE = {
    "width": 4,
    "n_epochs": 3,
    "batch_size": 4,  # per process: a global batch of 8
    "validation_fraction": 0.0,
    "tv_weights": [0.5, 1.0, 2.0],
    "max_tv_images": 4,
    "device": "cpu",
}
SEEDS = (0, 1)


def torchrun(*args, timeout=300):
    """Run ``torchrun --standalone --nproc-per-node 2 ARGS`` on one thread
    per process, with this checkout of anomseg first on the path."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return subprocess.run(
        [*command, "--nproc-per-node", "2", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def fit_on_two_processes(folder, fits):
    """Fit each of ``fits`` (name: spec of the worker) on 2 processes; the
    summary of each process and rank 0's model, by name."""
    spec = folder / "spec.json"
    spec.write_text(json.dumps({"out": str(folder), "fits": fits}))
    done = torchrun(WORKER, spec)
    assert done.returncode == 0, done.stdout + done.stderr
    out = {}
    for name in fits:
        ranks = []
        for r in (0, 1):
            with open(folder / f"rank{r}_{name}.pkl", "rb") as f:
                ranks.append(pickle.load(f))
        out[name] = ranks, folder / f"{name}.anomseg"
    assert sorted(p.name for p in folder.glob("*.anomseg")) == sorted(f"{n}.anomseg" for n in fits)
    return out


def assert_processes_agree(ranks):
    """Both processes trained together and ended with the same model."""
    first, second = ranks
    assert first["world_size"] == second["world_size"] == 2
    assert first["history"] == second["history"]
    assert first["weights"].keys() == second["weights"].keys()
    for key, value in first["weights"].items():
        np.testing.assert_array_equal(value, second["weights"][key], err_msg=key)
    assert first["threshold"] == second["threshold"]
    assert first["attributes"] == second["attributes"]


def vae_data(seed):
    return {"n_images": 40, "shape": SHAPE, "random_state": seed}


@pytest.fixture(scope="module")
def vae_runs(tmp_path_factory):
    fits = {
        f"vae{seed}": {
            "method": "vae",
            "params": {**VAE, "random_state": seed},
            "data": vae_data(seed),
        }
        for seed in SEEDS
    }
    return fit_on_two_processes(tmp_path_factory.mktemp("vae"), fits)


@pytest.mark.parametrize("seed", SEEDS)
def test_two_processes_train_like_one_with_the_global_batch(vae_runs, seed):
    """A 2-process VAE (4 slices per process and update) follows the loss
    curve of a 1-process VAE with batch 8, from the same initial weights.

    The processes train on other mini-batches than the one process, so the
    curves agree statistically, not exactly: on 40 slices of 32 x 32, width
    4, the per-epoch train losses differed by at most 0.07 % over 4 seeds
    (measured), and the test allows 2 %. The 2-process model's maps
    correlate with the 1-process model's (measured r >= 0.988; allowed
    > 0.95) and its threshold is within 10 % of it (measured at most 1.4 %).
    """
    ranks, model_path = vae_runs[f"vae{seed}"]
    assert_processes_agree(ranks)
    X = make_healthy_images(**vae_data(seed))
    one = method_class("vae")(**{**VAE, "batch_size": 8, "random_state": seed}).fit(X)
    two = [record["train_loss"] for record in ranks[0]["history"]]
    reference = [record["train_loss"] for record in one.history_]
    assert len(two) == len(reference) == VAE["n_epochs"]
    np.testing.assert_allclose(two, reference, rtol=0.02)

    model = load_model(model_path)
    X_test = make_healthy_images(n_images=3, shape=SHAPE, random_state=100 + seed)
    maps, expected = model.score_samples(X_test), one.score_samples(X_test)
    assert maps.shape == expected.shape == X_test.shape
    assert np.corrcoef(maps.ravel(), expected.ravel())[0, 1] > 0.95
    assert model.threshold_ == ranks[0]["threshold"]
    assert model.threshold_ == pytest.approx(one.threshold_, rel=0.1)
