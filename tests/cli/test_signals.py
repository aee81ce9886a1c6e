"""SIGTERM (what ``kill``, ``timeout`` and job schedulers send) and SIGINT
in the middle of ``anomseg predict`` leave every scan's outputs whole or
absent, never a temporary file or a map without its mask, and a rerun
finishes the cohort, skipping the scans already done."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from .bad_inputs import outputs_whole, write

N_SCANS = 6


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Scans large enough (128 x 128 x 40) that scoring and writing each
    takes a good fraction of a second, and a model for them."""
    from anomseg.baselines import FlairThreshold

    root = tmp_path_factory.mktemp("cohort")
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in (128, 128, 40)], indexing="ij"))
    inside = (grid**2).sum(axis=0) < 0.8
    scans = []
    for i in range(N_SCANS):
        data = np.where(inside, rng.normal(100, 10, inside.shape), 0).astype(np.float32)
        scans.append(write(root / f"sub-{i:02d}.nii.gz", data))
    model = FlairThreshold().fit([data, data * 1.01])
    return scans, str(model.save(root / "model.anomseg"))


def _predict(cohort, out):
    scans, model = cohort
    command = [sys.executable, "-m", "anomseg", "predict", model, *scans, "-o", str(out)]
    return subprocess.Popen(
        [*command, "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # SIGINT as in a terminal, even where CI starts this with it ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_for_first_output(out, process, timeout=120):
    start = time.monotonic()
    while time.monotonic() - start < timeout and process.poll() is None:
        if out.exists() and list(out.glob("*_mask.nii.gz")):
            return
        time.sleep(0.02)
    raise AssertionError("no output appeared before the run ended")


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_interrupted_predict_leaves_whole_outputs_and_resumes(cohort, tmp_path, signum, status):
    out = tmp_path / "out"
    process = _predict(cohort, out)
    _wait_for_first_output(out, process)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == status, stderr
    assert "Traceback" not in stderr
    assert len([line for line in stderr.splitlines() if "error" in line]) == 1
    done = len(list(out.glob("*_mask.nii.gz")))
    assert 1 <= done < N_SCANS  # interrupted mid-run
    assert outputs_whole(tmp_path, {})  # no temporary file, no map without its mask

    rerun = _predict(cohort, out)
    _, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr
    assert f"{N_SCANS - done} done, {done} skipped, 0 failed" in stderr
    assert len(list(out.glob("*_anomaly_map.nii.gz"))) == N_SCANS
    assert outputs_whole(tmp_path, {})


def test_an_interrupt_swallowed_by_a_finaliser_still_stops_the_run(capsys):
    """Python swallows an exception raised in ``__del__`` (as nibabel's
    finalisers run during garbage collection): the signal is remembered and
    acted on at the next check, without a traceback."""
    from anomseg.cli._signals import _SIGNALS, Terminated

    class Finalised:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)  # handled inside __del__

    with _SIGNALS.installed():
        Finalised()  # collected at once
        with pytest.raises(Terminated):
            _SIGNALS.check()
    assert capsys.readouterr().err == ""
    with _SIGNALS.installed():
        _SIGNALS.check()  # a new run starts clean


def test_an_interrupt_inside_a_constructor_exits_without_a_traceback(tmp_path):
    """A signal that lands in an ``__init__`` leaves a half-built object whose
    ``__del__`` fails at exit (as nibabel's ``OrderedSet`` did in
    ``anomseg predict``): the run still ends with one line and status 130."""
    script = tmp_path / "interrupted.py"
    script.write_text(
        "import os, signal, sys\n"
        "from anomseg.cli import _main\n"
        "kept = []\n"
        "class HalfBuilt:\n"
        "    def __init__(self):\n"
        "        kept.append(self)\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "        self.items = {}\n"
        "    def __del__(self):\n"
        "        self.items.clear()\n"
        "parser = _main.build_parser()\n"
        "parse = parser.parse_args\n"
        "def parse_args(argv=None):\n"
        "    args = parse(argv)\n"
        "    args.func = lambda args: HalfBuilt()\n"
        "    return args\n"
        "parser.parse_args = parse_args\n"
        "_main.build_parser = lambda: parser\n"
        "sys.exit(_main.main(['info', 'model.anomseg']))\n"
    )
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "anomseg info: error: interrupted; no output is left half-written"
    ]
