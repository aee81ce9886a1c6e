"""The benchmarks' shared command line and their layout, without running
any benchmark: each runs as ``python -m benchmarks.KIND.NAME`` from the
repository root (where the test suite runs), says so in its docstring, and
takes ``--json``."""

import argparse
import importlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("quality", "performance", "robustness", "data")
SCRIPTS = sorted(
    f"benchmarks.{path.parent.name}.{path.stem}"
    for kind in KINDS
    for path in (ROOT / "benchmarks" / kind).glob("*.py")
    if not path.name.startswith("_")
)


def test_every_benchmark_is_in_a_folder_of_its_kind():
    assert len(SCRIPTS) >= 13
    loose = [p.name for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_")]
    assert loose == []


@pytest.mark.parametrize("name", SCRIPTS)
def test_benchmark_runs_as_a_module_and_takes_json(name, monkeypatch, capsys):
    module = importlib.import_module(name)
    assert f"python -m {name}" in module.__doc__, "its docstring should say how to run it"
    monkeypatch.setattr("sys.argv", [name, "--help"])
    with pytest.raises(SystemExit) as exit_:
        module.main()
    assert exit_.value.code == 0
    assert "--json PATH" in capsys.readouterr().out


@pytest.mark.parametrize(
    "text, expected",
    [
        ("n_epochs=5", ("n_epochs", 5)),
        ("tv_weights=(0.0,1.0)", ("tv_weights", (0.0, 1.0))),
        ("crop_margin=None", ("crop_margin", None)),
        ("device=cpu", ("device", "cpu")),
        ("schedule='paper'", ("schedule", "paper")),
        ("note=a=b", ("note", "a=b")),
    ],
)
def test_parse_param_reads_literals_else_strings(text, expected):
    from benchmarks._common import parse_param

    assert parse_param(text) == expected


@pytest.mark.parametrize("text", ["n_epochs", "=5", "n-epochs=5", "1x=5"])
def test_parse_param_refuses_what_is_not_key_value(text):
    from benchmarks._common import parse_param

    with pytest.raises(argparse.ArgumentTypeError, match="expected KEY=VALUE"):
        parse_param(text)


def test_param_arguments_collect_into_a_dict():
    from benchmarks._common import add_param_argument, benchmark_parser

    parser = benchmark_parser("Title.\n\nBody.", data=False)
    add_param_argument(parser, "DenoisingAESegmenter")
    args = parser.parse_args(["--param", "width=4", "--param", "device=cpu"])
    assert dict(args.param) == {"width": 4, "device": "cpu"}
    with pytest.raises(SystemExit):
        parser.parse_args(["--param", "width"])


def test_write_json_holds_numpy_values_and_nan(tmp_path):
    from benchmarks._common import write_json

    path = tmp_path / "figures.json"
    write_json(path, {"AUROC": np.float32(0.5), "sd": (1.0, math.nan), 3: np.arange(2)})
    assert json.loads(path.read_text()) == {"AUROC": 0.5, "sd": [1.0, None], "3": [0, 1]}
    write_json(None, {"nothing": "written"})  # no --json: nothing to do


def test_fit_score_times_covers_every_public_estimator():
    from anomseg.datasets import make_healthy_images
    from anomseg.utils import all_estimators
    from benchmarks.performance.bench_fit_score_times import estimators

    Y = make_healthy_images(n_images=2, shape=(16, 16), random_state=0)
    assert set(estimators(Y)) == {name for name, _ in all_estimators()}


def test_throughput_counts_the_flops_of_a_forward_pass_and_its_share_of_the_peak():
    import torch

    from benchmarks.performance.bench_throughput import (
        GpuSampler,
        forward_cost,
        matmul_rate,
        peak_fraction,
    )

    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 3, padding=1)
    )
    flops, seconds = forward_cost(net, torch.rand(2, 1, 16, 16))
    assert flops == 2 * 16 * 16 * (4 * 9 + 4 * 9)  # per slice: a multiply-add is 2 FLOPs
    assert seconds > 0
    peak = matmul_rate(128, min_seconds=0.01)
    assert 0 < peak_fraction(flops, seconds, peak) <= 1
    with GpuSampler(active=False) as sampler:
        pass
    assert sampler.figures() == {"GPU util %": "n/a", "GPU MiB": "n/a"}


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_throughput_network_row_runs_the_saved_network_in_its_precision(precision, tmp_path):
    from anomseg.datasets import make_healthy_images
    from anomseg.denoising import DenoisingAESegmenter
    from benchmarks.performance.bench_throughput import network_figures

    images = make_healthy_images(n_images=8, shape=(16, 16), random_state=0)
    model = DenoisingAESegmenter(
        width=2, depth=2, n_epochs=1, batch_size=4, inference_batch_size=4, device="cpu",
        validation_fraction=0,
        calibration_fraction=0.5, random_state=0, precision=precision,
    )  # fmt: skip
    model.fit(images).save(tmp_path / "dae.anomseg")
    row = network_figures(tmp_path / "dae.anomseg", "cpu", (13, 15), 64, min_seconds=0.01)
    assert row["input"] == "1x14x16"  # padded to the U-Net's multiple, 2
    assert (row["batch"], row["precision"]) == (4, precision)
    assert row["MFLOP/slice"] > 0 and 0 < row["of peak"] <= 1


def test_gpu_checks_run_every_step_and_say_which_failed(tmp_path, monkeypatch):
    """The GPU script's steps: the quality runs carry their own settings,
    --tiny shrinks every step, and a step that fails or outlasts its limit
    is said while the others run."""
    import sys

    from benchmarks.performance import gpu_checks

    steps = gpu_checks.steps(tmp_path, tmp_path / "data", tiny=False)
    assert list(steps) == list(gpu_checks.LIMITS)
    assert sum(gpu_checks.LIMITS.values()) <= 540  # one command of a lease
    quality = [" ".join(c) for c in steps["quality"]]
    assert len(quality) == 3 and "precision=bfloat16" in quality[1]
    assert "batch_size=64" in quality[2] and "learning_rate=0.004" in quality[2]
    assert "--device cuda" in " ".join(steps["throughput"][0])
    tiny = gpu_checks.steps(tmp_path, tmp_path / "data", tiny=True)
    assert all("n_epochs=1" in " ".join(c) for c in tiny["quality"])
    assert "--quick" in tiny["throughput"][0]

    ok = [sys.executable, "-c", "print('fine')"]
    failing = [sys.executable, "-c", "raise SystemExit(3)"]
    slow = [sys.executable, "-c", "import time; time.sleep(30)"]
    assert gpu_checks.run_step("a", [ok, ok], tmp_path, 30).startswith("a: done")
    assert "fine" in (tmp_path / "a.log").read_text()
    assert "failed with status 3" in gpu_checks.run_step("b", [ok, failing, ok], tmp_path, 30)
    assert "stopped at its limit of 1 s" in gpu_checks.run_step("c", [slow], tmp_path, 1)
