"""Interrupt ``anomseg predict`` at random moments and inspect what it left.

Each run scores a cohort of synthetic scans (192 x 192 x 96, large enough
that scoring and writing one takes a good fraction of a second) and gets
SIGTERM (what ``kill``, ``timeout`` and job schedulers send) or SIGINT in the
middle of the cohort: after a random number of scans are done, at a random
moment within the next scan's scoring and writing. The output
folder is then inspected: temporary files left behind, maps without their
mask (or masks without their map), and files that do not load as NIfTI.

Run from the repository root::

    python -m benchmarks.robustness.interrupt_predict --runs 20 [--json interrupt.json]
    python -m benchmarks.robustness.interrupt_predict --runs 20 --pythonpath ../old-checkout

``--pythonpath`` runs another anomseg (an older checkout, say) for a
before/after comparison; its own ``anomseg fit`` writes the model.
``--json`` writes the timings and the counts per signal.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from benchmarks._common import anomseg_command, benchmark_parser, write_json

SHAPE = (192, 192, 96)
#: The checkout that this script belongs to.
ROOT = Path(__file__).resolve().parents[2]


def make_cohort(root, n_scans):
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij"))
    inside = (grid**2).sum(axis=0) < 0.8
    paths = []
    for i in range(n_scans):
        data = np.where(inside, rng.normal(100, 10, SHAPE), 0).astype(np.float32)
        path = root / f"sub-{i:02d}.nii.gz"
        nib.save(nib.Nifti1Image(data, np.eye(4)), path)
        paths.append(str(path))
    return paths


def environment(pythonpath):
    """The environment of the anomseg commands, which import anomseg from
    ``pythonpath`` (or this checkout): they run in a temporary folder."""
    return {**os.environ, "PYTHONPATH": str(Path(pythonpath or ROOT).resolve())}


def start(predict, out, env):
    """``anomseg predict`` writing to ``out``, with SIGINT handled as in a
    terminal even when this script runs in the background (where shells
    start children with SIGINT ignored)."""
    process = subprocess.Popen(
        [*predict, str(out)],
        env=env,
        cwd=out.parent,  # python -m would import anomseg from the working folder first
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    process.started = time.perf_counter()
    return process


def wait_for_outputs(out, process, count):
    """Wait until ``out`` holds ``count`` output files (or the process
    ends); returns the seconds since the process started."""
    while process.poll() is None:
        if out.exists() and sum(not p.name.startswith(".") for p in out.iterdir()) >= count:
            break
        time.sleep(0.005)
    return time.perf_counter() - process.started


def inspect(folder):
    """Counts of what ``folder`` holds: complete pairs, temporary files,
    lone maps or masks, and NIfTI files that do not load (the summary table
    that ``predict`` writes beside them is not one)."""
    state = {"pairs": 0, "temporary": 0, "lone": 0, "unreadable": 0}
    if not folder.exists():
        return state
    names = {p.name for p in folder.iterdir()}
    for path in folder.iterdir():
        if path.name.startswith("."):
            state["temporary"] += 1
            continue
        if not path.name.endswith(".nii.gz"):
            continue
        try:
            np.asarray(nib.load(path).dataobj)
        except Exception:
            state["unreadable"] += 1
        if path.name.endswith("_anomaly_map.nii.gz"):
            partner = path.name.replace("_anomaly_map.nii.gz", "_mask.nii.gz")
            state["pairs" if partner in names else "lone"] += 1
        elif (
            path.name.endswith("_mask.nii.gz")
            and path.name.replace("_mask.nii.gz", "_anomaly_map.nii.gz") not in names
        ):
            state["lone"] += 1
    return state


def main(argv=None):
    parser = benchmark_parser(__doc__, data=False)
    parser.add_argument("--runs", type=int, default=20, help="Runs per signal (default 20).")
    parser.add_argument("--scans", type=int, default=8, help="Scans per run (default 8).")
    parser.add_argument("--pythonpath", help="Import anomseg from here (an older checkout).")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    command, env = anomseg_command(), environment(args.pythonpath)
    draw = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        scans = make_cohort(root, args.scans)
        model = root / "model.anomseg"
        fit = [*command, "fit", "--method", "flair-threshold", *scans[:2], "-o", str(model)]
        subprocess.run([*fit, "--no-progress"], env=env, cwd=root, check=True, capture_output=True)
        predict = [*command, "predict", str(model), *scans, "--no-progress", "-o"]
        reference = start(predict, root / "full", env)
        first = wait_for_outputs(root / "full", reference, 2)
        last = wait_for_outputs(root / "full", reference, 2 * args.scans)
        reference.communicate()
        per_scan = (last - first) / (args.scans - 1)
        print(
            f"anomseg from {args.pythonpath or 'this checkout'}: the first scan's outputs "
            f"appear after {first:.1f} s, then one scan's every {per_scan:.2f} s; each "
            "signal comes after the outputs of k scans appeared (k drawn from 1 to "
            f"{args.scans - 1}) plus a moment drawn uniformly within one scan's time"
        )
        figures = {"first scan s": first, "s per scan": per_scan, "signals": {}}
        print(
            "| signal | runs | stopped mid-run | whole | temporary files | lone map or mask "
            "| unreadable |"
        )
        print("|---|---|---|---|---|---|---|")
        for signum in (signal.SIGTERM, signal.SIGINT):
            totals = {"mid": 0, "whole": 0, "temporary": 0, "lone": 0, "unreadable": 0}
            for run in range(args.runs):
                out = root / f"{signum.name}-{run}"
                process = start(predict, out, env)
                wait_for_outputs(out, process, 2 * draw.randint(1, args.scans - 1))
                time.sleep(draw.uniform(0, per_scan))
                process.send_signal(signum)
                process.communicate()
                state = inspect(out)
                totals["mid"] += state["pairs"] < args.scans
                totals["whole"] += not (state["temporary"] or state["lone"] or state["unreadable"])
                for key in ("temporary", "lone", "unreadable"):
                    totals[key] += state[key] > 0
            print(
                f"| {signum.name} | {args.runs} | {totals['mid']} | {totals['whole']} | "
                f"{totals['temporary']} | {totals['lone']} | {totals['unreadable']} |"
            )
            figures["signals"][signum.name] = {"runs": args.runs, **totals}
    write_json(args.json, figures)


if __name__ == "__main__":
    main()
