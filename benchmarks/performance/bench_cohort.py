"""Scoring a cohort: volumes per minute against workers, and peak memory
against cohort size.

Runs ``anomseg predict`` as a user does, on LGG FLAIR volumes
(``lgg_flair`` of ``--data``, 128 x 128 x 20-88), with two models fitted
here on tumour-free data of other patients (their quality is not the point):

* ``flair``: the FLAIR histogram-equalisation baseline, cheap per scan, so
  reading, writing and start-up costs dominate;
* ``vae``: the VAE prior with MAP restoration (45 steps per slice), where
  computing dominates.

Throughput: the same scans, side by side in one run, in this process
(``predict``, torch on every core), on 2 local workers (``--n-jobs 2``, one
thread each) and on a Dask ``LocalCluster`` of 2 worker processes of one
thread (``--dask-scheduler``; the cluster is started before the clock, as
a cluster is a running service). Each figure is the wall time of the
command, start-up included.

Memory: the peak resident memory of ``anomseg predict`` (serial, and its
largest process with ``--n-jobs 2``) on cohorts of 10, 50 and 100 scans
(the FLAIR baseline; 4 for the VAE), each in a fresh process. Cohorts
beyond the 80 patients repeat scans under other names. The memory of
``anomseg fit`` is measured by ``bench_fit_memory.py``.

Run from the repository root (``--json`` writes both tables' rows)::

    python -m benchmarks.performance.bench_cohort          # about 10 minutes on 2 cores
    python -m benchmarks.performance.bench_cohort --vae-scans 4 --flair-scans 12 --sizes 5 10
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from benchmarks._common import anomseg_command, benchmark_parser, data_folder, write_json

#: Prints, in a fresh process, the peak resident memory (MiB) of the largest
#: process of the command it runs (itself and its workers).
_PEAK = (
    "import resource, subprocess, sys\n"
    "status = subprocess.run(sys.argv[1:]).returncode\n"
    "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
    "print(f'PEAK {peak:.1f} {status}')\n"
)


def fit_models(folder, healthy):
    """The two models, fitted on the tumour-free slices' volumes of
    ``healthy`` patients (whole volumes: the FLAIR baseline needs no lesion
    exclusion to be timed, and the VAE learns from every slice)."""
    from anomseg.baselines import FlairThreshold
    from anomseg.io import load_nifti
    from anomseg.preprocessing import ForegroundMasker, IntensityScaler, make_anomaly_pipeline
    from anomseg.restoration import VAERestorer

    images = [load_nifti(path)[0] for path in healthy]
    paths = {}
    flair = make_anomaly_pipeline(ForegroundMasker(), FlairThreshold())
    paths["flair"] = folder / "flair.anomseg"
    flair.fit(images).save(paths["flair"])
    vae = make_anomaly_pipeline(
        ForegroundMasker(),
        IntensityScaler.for_deep_methods(),
        VAERestorer(n_epochs=5, tv_weight=2.4, random_state=0, calibration_fraction=0.1),
    )
    started = time.perf_counter()
    vae.fit(images)
    print(f"fitted the VAE on {len(images)} volumes in {time.perf_counter() - started:.0f} s")
    paths["vae"] = folder / "vae.anomseg"
    vae.save(paths["vae"])
    return paths


def cohort(folder, scans, n):
    """A list file of ``n`` scans: the first ``len(scans)``, then repeats
    under other names (hard links)."""
    listed = []
    for k in range(n):
        source = scans[k % len(scans)]
        if k < len(scans):
            listed.append(source)
            continue
        link = folder / f"repeat{k}_{source.name}"
        if not link.exists():
            os.link(source, link)  # another name: predict refuses a scan given twice
        listed.append(link)
    listing = folder / f"cohort{n}.txt"
    listing.write_text("".join(f"{p}\n" for p in listed))
    return listing


def _check_done(out, n):
    """Every scan was scored by this run (none skipped, none failed)."""
    with open(out / "summary.csv") as f:
        statuses = [row["status"] for row in csv.DictReader(f)]
    if statuses != ["done"] * n:
        raise RuntimeError(f"{out}: expected {n} scans done, got {statuses}")


def timed(command):
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return seconds


def peak(command):
    done = subprocess.run(
        [sys.executable, "-c", _PEAK, *command], capture_output=True, text=True, check=True
    )
    line = [x for x in done.stdout.splitlines() if x.startswith("PEAK")][-1]
    mib, status = line.split()[1:]
    if status != "0":
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return float(mib)


def main(argv=None):
    parser = benchmark_parser(__doc__)
    parser.add_argument("--flair-scans", type=int, default=40)
    parser.add_argument("--vae-scans", type=int, default=8)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--vae-memory-scans", type=int, default=4)
    args = parser.parse_args(argv)
    folder = data_folder(args, "lgg_flair")
    if folder is None:
        return
    scans = sorted(folder.glob("*_flair.nii.gz"))
    split = json.loads((folder / "split.json").read_text())
    train = set(split["train"])
    healthy = [p for p in scans if p.name[: -len("_flair.nii.gz")] in train][:6]
    cohort_scans = [p for p in scans if p not in healthy]
    from distributed import Client, LocalCluster

    results = {"throughput": [], "memory": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        models = fit_models(tmp, healthy)
        with (
            LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            Client(cluster),
        ):
            engines = {
                "this process": [],
                "--n-jobs 2": ["--n-jobs", "2"],
                "Dask, 2 workers": ["--dask-scheduler", cluster.scheduler_address],
            }
            for name, n in (("flair", args.flair_scans), ("vae", args.vae_scans)):
                listing = cohort(tmp, cohort_scans, n)
                slices = sum(nib.load(p).shape[2] for p in listing.read_text().split())
                for k, (engine, options) in enumerate(engines.items()):
                    out = tmp / f"out-{name}-{k}"
                    command = anomseg_command(
                        "predict", models[name], "--list", listing, "-o", out, "--no-progress"
                    )
                    seconds = timed(command + options)
                    _check_done(out, n)
                    results["throughput"].append(
                        {
                            "model": name,
                            "engine": engine,
                            "scans": n,
                            "slices": slices,
                            "seconds": round(seconds, 1),
                            "volumes_per_minute": round(60 * n / seconds, 2),
                        }
                    )
                    print(results["throughput"][-1], flush=True)
        for name in ("flair", "vae"):
            sizes = args.sizes if name == "flair" else [args.vae_memory_scans]
            for n in sizes:
                listing = cohort(tmp, cohort_scans, n)
                row = {"model": name, "scans": n}
                for engine, options in (("serial", []), ("n_jobs 2", ["--n-jobs", "2"])):
                    out = tmp / f"mem-{name}-{n}-{engine.replace(' ', '')}"
                    command = anomseg_command(
                        "predict", models[name], "--list", listing, "-o", out, "--no-progress"
                    )
                    row[f"peak MiB, {engine}"] = round(peak(command + options), 1)
                    _check_done(out, n)
                results["memory"].append(row)
                print(row, flush=True)

    print("\n## Throughput (volumes per minute; 2 cores)\n")
    print("| model | engine | scans | slices | wall s | volumes/min | vs this process |")
    print("|---|---|---|---|---|---|---|")
    for row in results["throughput"]:
        base = next(
            r
            for r in results["throughput"]
            if r["model"] == row["model"] and r["engine"] == "this process"
        )
        ratio = base["seconds"] / row["seconds"]
        print(
            f"| {row['model']} | {row['engine']} | {row['scans']} | {row['slices']} | "
            f"{row['seconds']} | {row['volumes_per_minute']} | {ratio:.2f}x |"
        )
    print("\n## Peak resident memory (MiB) against cohort size\n")
    print("| model | scans | serial | --n-jobs 2 (largest process) |")
    print("|---|---|---|---|")
    for row in results["memory"]:
        print(
            f"| {row['model']} | {row['scans']} | {row['peak MiB, serial']} | "
            f"{row['peak MiB, n_jobs 2']} |"
        )
    flair = [r["peak MiB, serial"] for r in results["memory"] if r["model"] == "flair"]
    print(f"\nflair serial peak: spread {np.ptp(flair):.1f} MiB over {args.sizes} scans")
    write_json(args.json, results)


if __name__ == "__main__":
    main()
