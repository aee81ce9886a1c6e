"""Throughput of ``anomseg predict`` on a cohort, end to end, and the
network's share of the hardware's peak.

Run from the repository root::

    python -m benchmarks.performance.bench_throughput --quick      # under a minute on CPU
    python -m benchmarks.performance.bench_throughput --json throughput.json
    python -m benchmarks.performance.bench_throughput --device cuda --scans 120 \\
      --model /tmp/anomseg-user-lgg/runs/dae-seed0/model.anomseg

What it measures, in this order:

1. **Fit.** Without ``--model``: a tiny denoising autoencoder, ``anomseg fit
   --method denoising-ae --param n_epochs=1`` on the first ``--fit-scans``
   LGG scans, so that the benchmark runs anywhere. Its fit seconds are the
   command's wall time, start-up included; its maps are not the point.
2. **Predict.** ``anomseg predict MODEL --list FILE -o OUTDIR --no-progress``
   in a fresh process, as a user runs it, with each ``--engine`` of
   ``--engines`` (processes, overlapped) at ``--n-jobs 1`` and
   ``--n-jobs N`` (speed-ups against the first row), on a cohort of
   LGG-size scans (``lgg_flair`` of ``--data``, 128 x 128 x 20-88, other
   than the fitted ones, repeated under other names up to ``--scans``) and
   on full-size ones (``mslub``, 182 x 218 x 182; none with ``--quick``
   unless ``--full-scans``): wall seconds (start-up, reading and writing
   included), scans and slices per second, the peak resident memory of the
   largest process (the command's own or a worker's, from ``wait4``), and on CUDA
   the most device memory in use (``nvidia-smi``, CUDA contexts included)
   and the GPU utilisation, mean and most, sampled every 100 ms by
   ``nvidia-smi`` ("n/a" without it).
3. **Network.** In this process, the loaded model's network on one batch of
   its inference batch size, at the LGG slice size padded as the estimator
   pads (the estimator crops slices to the foreground first, so its real
   inputs are smaller): FLOPs per slice (``torch.utils.flop_counter``), the
   forward pass's milliseconds per slice (no gradient, in the model's
   precision), its peak device memory (``torch.cuda.max_memory_allocated``),
   and its rate as a fraction of the hardware's peak: that of a dense
   ``--matmul-size`` square matmul timed here on the same threads, in
   float32, and on CUDA in bfloat16 too (the fraction is against the peak
   of the precision the network runs in).

``anomseg predict`` runs with ``--device`` as given here (resolved), so a
model trained anywhere scores on the device measured; ``--device cpu`` also
hides CUDA from the commands (``CUDA_VISIBLE_DEVICES=``). A model without a
network (the FLAIR baseline, an ensemble) gets no network table.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks._common import (
    anomseg_command,
    benchmark_parser,
    data_folder,
    print_table,
    write_json,
)
from benchmarks.performance.bench_cohort import _check_done, cohort


# -- the network's share of the peak ---------------------------------------------------
def synchronize(device):
    """Wait for the work queued on ``device``, so that a clock read after it
    counts that work."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(size, device="cpu", dtype=torch.float32, min_seconds=0.5):
    """FLOP/s of a dense ``size`` x ``size`` matmul on ``device`` in
    ``dtype``, repeated for at least ``min_seconds`` after one warm-up."""
    generator = torch.Generator(device).manual_seed(0)
    a, b = (
        torch.randn(size, size, generator=generator, device=device).to(dtype) for _ in range(2)
    )
    a @ b
    synchronize(device)
    repeats, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < min_seconds or repeats == 0:
        a @ b
        synchronize(device)
        repeats += 1
    return 2 * size**3 * repeats / elapsed


def forward_cost(module, x, context=contextlib.nullcontext, repeats=3):
    """FLOPs and seconds per slice of ``module(x)`` without gradient, in
    ``context`` (autocast, for one). The FLOP count runs first and warms the
    module up."""
    with torch.no_grad(), context():
        with FlopCounterMode(display=False) as counter:
            module(x)
        synchronize(x.device)
        start = time.perf_counter()
        for _ in range(repeats):
            module(x)
        synchronize(x.device)
    seconds = (time.perf_counter() - start) / repeats
    return counter.get_total_flops() / len(x), seconds / len(x)


def peak_fraction(flops, seconds, peak):
    """The rate ``flops / seconds`` as a fraction of ``peak`` FLOP/s."""
    return flops / seconds / peak


def network_estimator(model):
    """The estimator of ``model`` (an estimator or a pipeline) that holds a
    network, ``module_``, or None (the FLAIR baseline, an ensemble)."""
    steps = [model, *getattr(model, "named_steps", {}).values()]
    return next((step for step in steps if hasattr(step, "module_")), None)


def network_figures(path, device, shape, matmul_size, min_seconds):
    """The network table's row for the model at ``path`` on ``device`` and
    slices of ``shape``, or None if it has no network."""
    from anomseg import load_model

    estimator = network_estimator(load_model(path, device=device))
    if estimator is None:
        return None
    module = estimator.module_
    conv = next(m for m in module.modules() if isinstance(m, torch.nn.Conv2d))
    multiple = 2 ** (getattr(estimator, "depth", 1) - 1)
    padded = tuple(-(-n // multiple) * multiple for n in shape)
    batch = estimator.inference_batch_size_
    x = torch.rand(batch, conv.in_channels, *padded, device=device)
    peaks = {"float32": matmul_rate(matmul_size, device, torch.float32, min_seconds)}
    if torch.device(device).type == "cuda":
        peaks["bfloat16"] = matmul_rate(matmul_size, device, torch.bfloat16, min_seconds)
        torch.cuda.reset_peak_memory_stats(device)
    # the estimator's own autocast context, so that the precision is predict's
    context = getattr(estimator, "_autocast", contextlib.nullcontext)
    flops, seconds = forward_cost(module, x, context)
    kind = torch.device(device).type
    with context():
        dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None
    dtype = str(dtype or torch.float32).removeprefix("torch.")
    peak = peaks.get(dtype, peaks["float32"])
    row = {
        "device": device,
        "threads": torch.get_num_threads(),
        "precision": dtype,
        "batch": batch,
        "input": "x".join(map(str, (conv.in_channels, *padded))),
        "MFLOP/slice": flops / 1e6,
        "ms/slice": 1000 * seconds,
        "GFLOP/s": flops / seconds / 1e9,
        **{f"peak GFLOP/s {k}": v / 1e9 for k, v in peaks.items()},
        "of peak": peak_fraction(flops, seconds, peak),
    }
    if torch.device(device).type == "cuda":
        row["device MiB"] = torch.cuda.max_memory_allocated(device) / 2**20
    return row


# -- the commands -------------------------------------------------------------------------
class GpuSampler:
    """GPU 0's utilisation (%) and memory in use (MiB), sampled by
    ``nvidia-smi`` every 100 ms inside a ``with`` block; nothing where
    ``nvidia-smi`` is absent or ``active`` is false."""

    def __init__(self, active=True):
        self.active = active and shutil.which("nvidia-smi") is not None
        self.samples = []

    def __enter__(self):
        if self.active:
            query = "--query-gpu=utilization.gpu,memory.used"
            self._process = subprocess.Popen(
                ["nvidia-smi", "-i", "0", query, "--format=csv,noheader,nounits", "-lms", "100"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            self._thread = threading.Thread(target=self._read, daemon=True)
            self._thread.start()
        return self

    def _read(self):
        for line in self._process.stdout:
            with contextlib.suppress(ValueError):
                self.samples.append(tuple(map(float, line.split(",")[:2])))

    def __exit__(self, *exc):
        if self.active:
            self._process.terminate()
            self._process.wait()
            self._thread.join()

    def figures(self):
        if not self.samples:
            return {"GPU util %": "n/a", "GPU MiB": "n/a"}
        util, memory = np.array(self.samples).T
        return {"GPU util %": f"{util.mean():.0f} (max {util.max():.0f})", "GPU MiB": memory.max()}


def run(command, env, gpu):
    """Run ``command``: its wall seconds, and the peak resident MiB of its
    largest process (``wait4`` reports the most of the child and the
    descendants it waited for), with ``gpu``'s samples if CUDA is used."""
    with GpuSampler(gpu) as sampler:
        start = time.perf_counter()
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        stderr = process.stderr.read()
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f"{' '.join(map(str, command))} failed:\n{stderr[-2000:].decode()}")
    return seconds, {"peak host MiB": usage.ru_maxrss / 1024, **sampler.figures()}


def predict_rows(name, model, listing, out, runs, env, device):
    """One row per ``(engine, n_jobs)`` of ``runs`` (the first is the
    reference of the speed-ups) for the cohort of ``listing``."""
    scans = listing.read_text().split()
    slices = sum(nib.load(p).shape[2] for p in scans)
    rows = []
    for engine, jobs in runs:
        folder = out / f"{name}-{engine}-{jobs}"
        command = anomseg_command(
            "predict", model, "--list", listing, "-o", folder, "--no-progress",
            "--n-jobs", jobs, "--device", device, "--engine", engine,
        )  # fmt: skip
        seconds, figures = run(command, env, device == "cuda")
        _check_done(folder, len(scans))
        rows.append(
            {
                "cohort": name,
                "scans": len(scans),
                "slices": slices,
                "engine": engine,
                "n-jobs": jobs,
                "wall s": seconds,
                "scans/s": len(scans) / seconds,
                "slices/s": slices / seconds,
                "speed-up": rows[0]["wall s"] / seconds if rows else 1.0,
                **figures,
            }
        )
        print(rows[-1], flush=True)
    return rows


#: The sizes of a run, and of a ``--quick`` one; an option given wins.
DEFAULTS = {"scans": 40, "full_scans": 3, "fit_scans": 3, "matmul_size": 4096}
QUICK = {"scans": 3, "full_scans": 0, "fit_scans": 2, "matmul_size": 2048}


def main(argv=None):
    parser = benchmark_parser(__doc__)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--model", type=Path, help="A model file (default: fit a tiny DAE).")
    parser.add_argument("--scans", type=int, help="LGG-size scans to predict (40; quick 3).")
    parser.add_argument("--full-scans", type=int, help="Full-size scans to predict (3; quick 0).")
    parser.add_argument("--fit-scans", type=int, help="LGG scans the tiny DAE sees (3; quick 2).")
    parser.add_argument("--n-jobs", type=int, default=os.cpu_count(), help="The N of --n-jobs N.")
    parser.add_argument(
        "--engines",
        default="processes,overlapped",
        help="anomseg predict's --engine values to time, each at --n-jobs 1 and N "
        "(default: processes,overlapped).",
    )
    parser.add_argument("--matmul-size", type=int, help="The peak's matmul (4096; quick 2048).")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="The quick defaults: under a minute on 2 cores (--full-scans 1 adds 40 s).",
    )
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    engines = args.engines.split(",")
    if not set(engines) <= {"auto", "processes", "overlapped"}:
        parser.error(f"--engines takes auto, processes, overlapped; got {args.engines!r}")
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch finds no CUDA device")
    env = {**os.environ, **({"CUDA_VISIBLE_DEVICES": ""} if device == "cpu" else {})}
    lgg = data_folder(args, "lgg_flair")
    if lgg is None:
        return
    lgg_scans = sorted(lgg.glob("*_flair.nii.gz"))
    full_folder = args.data / "mslub"
    full_scans = sorted(full_folder.glob("patient*_flair.nii.gz"))[: args.full_scans]

    figures = {"device": device, "predict": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = args.model
        if model is None:
            fitted, lgg_scans = lgg_scans[: args.fit_scans], lgg_scans[args.fit_scans :]
            model = tmp / "tiny-dae.anomseg"
            command = anomseg_command(
                "fit", "--method", "denoising-ae", "--param", "n_epochs=1", "--no-progress",
                "-o", model, *fitted,
            )  # fmt: skip
            figures["fit s"], _ = run(command, env, gpu=False)
            print(f"fitted the tiny DAE on {len(fitted)} scans: {figures['fit s']:.1f} s")
        n_jobs = sorted({1, args.n_jobs})
        runs = [(engine, jobs) for engine in engines for jobs in n_jobs]
        for name, scans, n in (
            ("LGG-size", lgg_scans, args.scans),
            ("full-size", full_scans, len(full_scans)),
        ):
            if not scans:
                print(f"skipped the {name} cohort: no scans")
                continue
            folder = tmp / name
            folder.mkdir()
            listing = cohort(folder, scans, n)
            figures["predict"] += predict_rows(name, model, listing, tmp, runs, env, device)
        slice_shape = nib.load(lgg_scans[0]).shape[:2]
        min_seconds = 0.2 if args.quick else 1.0
        figures["network"] = network_figures(
            model, device, slice_shape, args.matmul_size, min_seconds
        )

    print(f"\n## anomseg predict, end to end ({device}, {os.cpu_count()} cores)\n")
    if "fit s" in figures:
        print(
            f"fit of the tiny DAE (n_epochs=1, {args.fit_scans} scans): {figures['fit s']:.1f} s\n"
        )
    print_table(
        figures["predict"],
        ["cohort", "scans", "slices", "engine", "n-jobs", "wall s", "speed-up", "scans/s",
         "slices/s", "peak host MiB", "GPU MiB", "GPU util %"],
        {"wall s": ".1f", "speed-up": ".2f", "slices/s": ".0f", "peak host MiB": ".0f",
         "GPU MiB": ".0f"},
    )  # fmt: skip
    row = figures["network"]
    if row is not None:
        print(f"\n## The network, one batch ({device}, {row['threads']} threads)\n")
        cols = ["precision", "batch", "input", "MFLOP/slice", "ms/slice", "GFLOP/s"]
        cols += [c for c in row if c.startswith("peak GFLOP/s")] + ["of peak"]
        cols += ["device MiB"] if "device MiB" in row else []
        print_table(
            [row], cols, {"MFLOP/slice": ".1f", "GFLOP/s": ".1f", "device MiB": ".0f"}
            | {c: ".0f" for c in cols if c.startswith("peak GFLOP/s")}
            | {"of peak": ".1%"},
        )  # fmt: skip
    write_json(args.json, figures)


if __name__ == "__main__":
    main()
