"""Every GPU check of the throughput work, as one script for one lease of a
GPU machine (under 9 minutes on one H100 or H200).

Run from the repository root of a machine with a GPU::

    python -m benchmarks.performance.gpu_checks --out gpu-checks

and ``--tiny`` anywhere (on a CPU too) to try the script itself in a few
minutes: the same steps with one epoch and the smallest cohorts, whose
figures mean nothing (on 2 CPU cores: 5 minutes, 3 of them restoring with
the paper's schedule).

The steps, each a command in a fresh process, its output in ``OUT/STEP.log``
and its figures in ``OUT/STEP.json``; a step that fails or outlasts its
time limit is said, and the others still run:

1. ``tests``: the tests of the cohort engines, of mixed precision and of
   the inference batch, with ``device="auto"`` (CUDA there).
2. ``throughput``: :mod:`benchmarks.performance.bench_throughput` on CUDA:
   ``anomseg predict`` of a tiny DAE over 120 LGG-size and 3 full-size
   scans, ``--engine processes`` and ``overlapped`` at ``--n-jobs 1`` and
   8 (scans and slices per second, host and GPU memory, GPU utilisation),
   and the network's share of the GPU's peak, in float32 and bfloat16.
3. ``quality``: :mod:`benchmarks.quality.bench_user_lgg`, the denoising
   autoencoder fitted and evaluated through the command line on LGG
   (seed 0), three ways: the defaults (float32, batch 16, learning rate
   1e-3), ``precision=bfloat16`` (training and scoring), and batch 64 with
   the learning rate scaled by 4 (4e-3). Fit seconds and AUROC, AUPRC,
   best Dice and calibrated Dice of each, to hold the bfloat16 and
   large-batch runs against float32.
4. ``restoration``: :mod:`benchmarks.performance.bench_restoration_speed`
   on the embedded MSLUB data: a VAE prior trained on the GPU, the fast
   schedule's milliseconds per slice and the FLOP rate of one step at
   realistic batches.

The machine needs anomseg's dependencies; where it has no package index,
carry wheels (nibabel, for one) and install them first.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._common import benchmark_parser, write_json

#: Each step's limit, in seconds: 530 in all, inside one command of a lease
#: (at most 600 s) and its 15 minutes with the machine's start.
LIMITS = {"tests": 60, "throughput": 150, "quality": 200, "restoration": 120}

#: The quality runs: tag and the extra arguments of anomseg fit.
QUALITY_RUNS = {
    "fp32": (),
    "bf16": ("--param", "precision=bfloat16"),
    "batch64": ("--param", "batch_size=64", "--param", "learning_rate=0.004"),
}

TESTS = [
    "tests/test_cohort_overlapped.py",
    "tests/test_inference_batch.py",
    "tests/test_precision.py",
    "tests/test_cohort.py",
]


def steps(out, data, tiny):
    """The commands of each step, by step name (a step may run several)."""
    python = [sys.executable, "-m"]
    device = "auto" if tiny else "cuda"
    throughput = [
        *python, "benchmarks.performance.bench_throughput", "--data", str(data),
        "--device", device, "--engines", "processes,overlapped",
        "--json", str(out / "throughput.json"),
    ]  # fmt: skip
    throughput += ["--quick"] if tiny else ["--scans", "120", "--full-scans", "3", "--n-jobs", "8"]
    quality = []
    for tag, fit_args in QUALITY_RUNS.items():
        if tiny:
            fit_args = (*fit_args, "--param", "n_epochs=1")
        command = [
            *python, "benchmarks.quality.bench_user_lgg", "--data", str(data),
            "--configs", "dae", "--seeds", "0", "--workdir", str(out / "lgg"),
            f"--tag=-{tag}", "--json", str(out / f"quality-{tag}.json"),
        ]  # fmt: skip
        quality.append(command + [f"--fit-arg={arg}" for arg in fit_args])
    restoration = [
        *python, "benchmarks.performance.bench_restoration_speed", "--data", str(data),
        "--kind", "vae", "--sets", "mslub", "--models", str(out / "priors"),
        "--json", str(out / "restoration.json"),
    ]  # fmt: skip
    if tiny:
        restoration += ["--param", "n_epochs=1"]
    return {
        "tests": [[*python, "pytest", "-q", "-x", "-p", "no:cacheprovider", *TESTS]],
        "throughput": [throughput],
        "quality": quality,
        "restoration": [restoration],
    }


def run_step(name, commands, out, limit):
    """Run a step's commands one after the other within ``limit`` seconds in
    all, their output in ``OUT/NAME.log``; its outcome in one line."""
    log = out / f"{name}.log"
    started = time.monotonic()
    with log.open("w") as file:
        for command in commands:
            left = limit - (time.monotonic() - started)
            file.write(f"$ {' '.join(command)}\n")
            file.flush()
            try:
                done = subprocess.run(
                    command, stdout=file, stderr=subprocess.STDOUT, timeout=max(left, 1)
                )
            except subprocess.TimeoutExpired:
                return f"{name}: stopped at its limit of {limit} s (see {log})"
            if done.returncode:
                return f"{name}: failed with status {done.returncode} (see {log})"
    return f"{name}: done in {time.monotonic() - started:.0f} s"


def main(argv=None):
    parser = benchmark_parser(__doc__)
    parser.add_argument("--out", type=Path, default=Path("gpu-checks"), help="Output folder.")
    parser.add_argument("--tiny", action="store_true", help="Try the script: tiny settings.")
    parser.add_argument(
        "--steps", nargs="+", choices=list(LIMITS), default=list(LIMITS), help="Steps to run."
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    commands = steps(args.out.resolve(), args.data, args.tiny)
    outcomes = [run_step(name, commands[name], args.out, LIMITS[name]) for name in args.steps]
    for line in outcomes:
        print(line)
    (args.out / "outcomes.json").write_text(json.dumps(outcomes, indent=1) + "\n")
    write_json(args.json, {"outcomes": outcomes})
    for name in ("throughput", "quality", "restoration"):
        log = args.out / f"{name}.log"
        if name in args.steps and log.exists():
            print(f"\n# {name}\n")
            text = log.read_text()
            print(text[text.find("\n|") :] if "\n|" in text else text[-3000:])
    return 0 if all(o.endswith("s") and "done" in o for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
