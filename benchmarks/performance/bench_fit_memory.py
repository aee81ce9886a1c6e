"""Peak memory of ``anomseg fit`` against the number of healthy scans.

``anomseg fit`` reads the scans one at a time into memory-mapped files
(5 bytes per voxel, in ``TMPDIR``) and trains from them; calibration scores
the held-out scans a chunk at a time and keeps their values in a store that
goes to a file beyond 16 MiB. This measures, each in a fresh process, on 10,
50 and 100 LGG FLAIR volumes (``lgg_flair`` of ``--data``, 128 x 128 x
20-88; beyond the 80 patients, scans repeat under other names):

* the peak resident set (``ru_maxrss``, the kernel's high-water mark), which
  counts the pages of the memory-mapped files that the process has touched:
  clean file pages that the kernel drops first when memory runs short;
* the peak anonymous memory (``RssAnon`` of ``/proc/PID/status``, sampled
  every 10 ms): what the process itself holds, and could not give back.

Methods: ``flair-threshold`` (no training: calibration only), and two tiny
deep ones, ``vae-reconstruction`` (1 epoch, width 8) and ``inpainting``
(200 steps, width 8, windows every 8 pixels), whose quality is not the
point.

Run from the repository root (``--json`` writes the rows)::

    python -m benchmarks.performance.bench_fit_memory      # about 10 minutes on 2 cores
    python -m benchmarks.performance.bench_fit_memory --sizes 5 10 --methods flair-threshold
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from benchmarks._common import anomseg_command, benchmark_parser, data_folder, write_json
from benchmarks.performance.bench_cohort import cohort

#: Runs the command given as arguments and prints, when it ends, its peak
#: resident and anonymous memory (MiB) and its exit status.
_SAMPLER = """
import resource, subprocess, sys, time
process = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
anonymous = 0
while process.poll() is None:
    try:
        with open(f"/proc/{process.pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    anonymous = max(anonymous, int(line.split()[1]))
    except (FileNotFoundError, ProcessLookupError):
        break
    time.sleep(0.01)
error = process.stderr.read().decode()[-2000:]
process.wait()
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(f"PEAK {peak / 1024:.1f} {anonymous / 1024:.1f} {process.returncode}")
if process.returncode:
    print(error, file=sys.stderr)
"""

METHODS = {
    "flair-threshold": [],
    "vae-reconstruction": ["n_epochs=1", "width=8", "random_state=0"],
    "inpainting": ["n_steps=200", "width=8", "stride=8", "random_state=0"],
}


def measure(command):
    """Peak resident and peak anonymous MiB of ``command``, and its seconds."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _SAMPLER, *map(str, command)], capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    line = [x for x in done.stdout.splitlines() if x.startswith("PEAK")][-1]
    resident, anonymous, status = line.split()[1:]
    if status != "0":
        raise RuntimeError(f"{' '.join(map(str, command))} failed:\n{done.stderr}")
    return float(resident), float(anonymous), seconds


def main(argv=None):
    parser = benchmark_parser(__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=list(METHODS))
    args = parser.parse_args(argv)
    folder = data_folder(args, "lgg_flair")
    if folder is None:
        return
    scans = sorted(folder.glob("*_flair.nii.gz"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for method in args.methods:
            for n in args.sizes:
                paths = cohort(tmp, scans, n).read_text().split()
                voxels = sum(_voxels(p) for p in paths)
                command = anomseg_command(
                    "fit", "--method", method, *paths, "-o", tmp / f"{method}{n}.anomseg",
                    "--foreground", "auto", "--no-progress",
                    *(f"--param={param}" for param in METHODS[method]),
                )  # fmt: skip
                resident, anonymous, seconds = measure(command)
                rows.append(
                    {
                        "method": method,
                        "scans": n,
                        "voxels_millions": round(voxels / 1e6, 1),
                        "peak_rss_mib": resident,
                        "peak_anonymous_mib": anonymous,
                        "seconds": round(seconds, 1),
                    }
                )
                print(rows[-1], flush=True)
    print("\n## Peak memory of anomseg fit (MiB; each run in a fresh process)\n")
    print("| method | healthy scans | voxels (M) | peak RSS | peak anonymous | wall s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['method']} | {r['scans']} | {r['voxels_millions']} | {r['peak_rss_mib']} "
            f"| {r['peak_anonymous_mib']} | {r['seconds']} |"
        )
    write_json(args.json, rows)


def _voxels(path):
    return int(np.prod(nib.load(path).header.get_data_shape()[:3]))


if __name__ == "__main__":
    main()
