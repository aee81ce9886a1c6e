"""Benchmark of the FLAIR histogram-equalisation baseline (Meissen et al.).

Run from the repository root::

    python benchmarks/bench_flair_baseline.py [--data ../shared/data]

Three data sets, each printed as a metric table plus cost:

* **MSLUB** (3 MS patients, original 1 mm files): the published method's
  figures on these files are AUROC 0.938, AUPRC 0.288 and best Dice 0.382,
  pooled inside the brain. Thresholds are calibrated leave-one-patient-out on
  the lesion-free brain tissue (lesions dilated by 2 voxels excluded) of the
  other two patients: no healthy FLAIR scans are available.
* **Embedded demo data** (the same patients, cropped and 8-bit quantised).
* **LGG FLAIR validation** (20 glioma patients, full head, not
  skull-stripped): foreground from :class:`ForegroundMasker`; thresholds
  calibrated on the tumour-free slices of the validation patients (each
  volume is still equalised as a whole), metrics on all their slices. The
  tumour-free slices lie mostly at the ends of the volumes, which biases this
  "healthy" set.

Cost is seconds per volume and per slice of ``score_samples`` and the peak
memory traced by :mod:`tracemalloc` during scoring.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from pathlib import Path

import numpy as np

from anomseg.baselines import FlairThreshold
from anomseg.datasets import exclude_lesions, load_demo_mslub, load_lgg_flair, load_mslub
from anomseg.metrics import evaluate
from anomseg.preprocessing import ForegroundMasker
from anomseg.utils import check_images

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def timed_scores(model, volumes):
    """Maps of ``volumes``, seconds per volume and peak traced MiB."""
    tracemalloc.start()
    start = time.perf_counter()
    maps = [model.score_samples([v])[0] for v in volumes]
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return maps, seconds / len(volumes), peak / 2**20


def leave_one_out(volumes, masks, max_fpr):
    """Scores and per-patient thresholds calibrated on the other patients'
    lesion-free tissue."""
    maps, thresholds, costs = [], [], []
    for i, volume in enumerate(volumes):
        others = [j for j in range(len(volumes)) if j != i]
        healthy = exclude_lesions(
            [volumes[j] for j in others], [masks[j] for j in others], margin=2
        )
        model = FlairThreshold(max_fpr=max_fpr).fit(healthy)
        (m,), seconds, peak = timed_scores(model, [volume])
        maps.append(m)
        thresholds.append(model.calibration_thresholds_)
        costs.append((seconds, peak))
    return maps, thresholds, np.mean([c[0] for c in costs]), max(c[1] for c in costs)


def report(title, masks, maps, foreground, thresholds, seconds, n_slices, peak, groups=None):
    table = evaluate(masks, maps, foreground=foreground, thresholds=thresholds, groups=groups)
    print(f"\n## {title}\n")
    print(table.to_table())
    print(
        f"\ncost: {seconds:.3f} s per volume, {1000 * seconds / n_slices:.2f} ms per "
        f"axial slice, peak traced memory {peak:.0f} MiB"
    )
    return table


def bench_mslub(path, label):
    data = load_mslub(path) if path is not None else load_demo_mslub()
    maps, thresholds, seconds, peak = leave_one_out(data.images, data.masks, 0.01)
    foreground = check_images(list(data.images)).foreground
    table = report(
        label,
        data.masks,
        maps,
        foreground,
        thresholds,
        seconds,
        data.images[0].shape[-1],
        peak,
    )
    print(
        "published method on the original files: AUROC 0.938, AUPRC 0.288, "
        "best Dice 0.382 (paper, all 30 patients: best Dice 0.374)\n"
        f"measured here: AUROC {table['AUROC', 'pooled']:.3f}, AUPRC "
        f"{table['AUPRC', 'pooled']:.3f}, best Dice {table['Best Dice', 'pooled']:.3f}"
    )


def bench_lgg(path):
    data = load_lgg_flair(path, split="validation")
    masker = ForegroundMasker().fit(data.images)
    heads = masker.transform(data.images)
    healthy = exclude_lesions(heads, data.masks, whole_slices=True)
    model = FlairThreshold(max_fpr=0.05).fit(healthy)
    maps, seconds, peak = timed_scores(model, heads)
    foreground = check_images(heads).foreground
    n_slices = np.mean([v.shape[-1] for v in data.images])
    report(
        f"LGG FLAIR, validation split ({len(data.images)} patients, full head)",
        data.masks,
        maps,
        foreground,
        model.calibration_thresholds_,
        seconds,
        n_slices,
        peak,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="The shared data folder.")
    args = parser.parse_args()
    print("# FLAIR histogram-equalisation baseline (anomseg.baselines.FlairThreshold)")
    if (args.data / "mslub").is_dir():
        bench_mslub(args.data / "mslub", "MSLUB, original files (3 patients, 1 mm MNI)")
    else:
        print(f"\nskipped MSLUB: {args.data / 'mslub'} is absent")
    bench_mslub(None, "Embedded demo data (MSLUB cropped, 8-bit)")
    if (args.data / "lgg_flair").is_dir():
        bench_lgg(args.data / "lgg_flair")
    else:
        print(f"\nskipped LGG: {args.data / 'lgg_flair'} is absent")


if __name__ == "__main__":
    main()
