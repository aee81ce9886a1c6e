"""Benchmark of the FLAIR histogram-equalisation baseline (Meissen et al.).

Run from the repository root::

    python -m benchmarks.quality.bench_flair_baseline [--json flair.json]

Three data sets, each printed as a metric table plus cost:

* **MSLUB** (3 MS patients, original 1 mm files): the published method's
  figures on these files are AUROC 0.938, AUPRC 0.288 and best Dice 0.382,
  pooled inside the brain. Thresholds are calibrated leave-one-patient-out on
  the lesion-free brain tissue (lesions dilated by 2 voxels excluded) of the
  other two patients: no healthy FLAIR scans are available.
* **Embedded demo data** (the same patients, cropped and 8-bit quantised).
* **LGG FLAIR validation** (20 glioma patients of the ``validation`` split,
  full-head scans), twice on the same patients: inside the **head**
  (:class:`ForegroundMasker`, the image above a small intensity) and inside
  the **brain** (the data set's brain masks, :func:`apply_brain_masks`), the
  region of the learned-method benchmarks (``benchmarks/_lgg.py``). Each volume is
  equalised as a whole over the region's voxels; thresholds are calibrated
  on the tumour-free slices of the validation patients in that region,
  metrics cover all their slices, pooled over the region's voxels and per
  patient. The tumour-free slices lie mostly at the ends of the volumes,
  which biases this "healthy" set. A last line per region pools AUROC,
  AUPRC and best Dice over all 80 patients, the figures of the data
  README (head 0.808 / 0.071 / 0.162, brain 0.893 / 0.544 / 0.561).

Cost is seconds per volume and per slice of ``score_samples`` and the peak
memory traced by :mod:`tracemalloc` during scoring. ``--json`` writes each
table's rows (:meth:`~anomseg.metrics.EvaluationReport.to_records`) and
costs.
"""

from __future__ import annotations

import time
import tracemalloc

import numpy as np

from anomseg.baselines import FlairThreshold
from anomseg.datasets import (
    apply_brain_masks,
    exclude_lesions,
    load_demo_mslub,
    load_lgg_flair,
    load_mslub,
)
from anomseg.metrics import evaluate
from anomseg.preprocessing import ForegroundMasker
from anomseg.utils import check_images
from benchmarks._common import benchmark_parser, write_json


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


def report(title, masks, maps, foreground, thresholds, seconds, n_slices, peak, figures):
    """Print the metric table of ``maps`` and its cost, and add both to
    ``figures`` under ``title``; returns the table."""
    table = evaluate(masks, maps, foreground=foreground, thresholds=thresholds)
    print(f"\n## {title}\n")
    print(table.to_table())
    print(
        f"\ncost: {seconds:.3f} s per volume, {1000 * seconds / n_slices:.2f} ms per "
        f"axial slice, peak traced memory {peak:.0f} MiB"
    )
    figures[title] = {
        "metrics": table.to_records(),
        "s/volume": seconds,
        "ms/slice": 1000 * seconds / n_slices,
        "peak traced MiB": peak,
    }
    return table


def bench_mslub(path, label, figures):
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
        figures,
    )
    print(
        "published method on the original files: AUROC 0.938, AUPRC 0.288, "
        "best Dice 0.382 (paper, all 30 patients: best Dice 0.374)\n"
        f"measured here: AUROC {table['AUROC', 'pooled']:.3f}, AUPRC "
        f"{table['AUPRC', 'pooled']:.3f}, best Dice {table['Best Dice', 'pooled']:.3f}"
    )


def bench_lgg(path, figures):
    data = load_lgg_flair(path)  # all 80 patients; the validation ones are evaluated
    regions = {
        "head": ForegroundMasker().fit_transform(data.images),
        "brain": apply_brain_masks(data.images, data.brain_masks),
    }
    validation = set(data.split["validation"])
    val = [i for i, s in enumerate(data.subjects) if s in validation]
    masks = [data.masks[i] for i in val]
    n_slices = np.mean([data.images[i].shape[-1] for i in val])
    pooled = {}
    for region, volumes in regions.items():
        volumes_val = [volumes[i] for i in val]
        healthy = exclude_lesions(volumes_val, masks, whole_slices=True)
        model = FlairThreshold(max_fpr=0.05).fit(healthy)
        maps, seconds, peak = timed_scores(model, volumes_val)
        report(
            f"LGG FLAIR, validation split ({len(val)} patients), inside the {region}",
            masks,
            maps,
            check_images(volumes_val).foreground,
            model.calibration_thresholds_,
            seconds,
            n_slices,
            peak,
            figures,
        )
        # Equalisation needs no fit: score every patient, no threshold.
        table = evaluate(
            data.masks,
            model.score_samples(volumes),
            foreground=check_images(volumes).foreground,
            per_volume=False,
        )
        pooled[region] = table
    print(f"\n## LGG FLAIR, all {len(data.subjects)} patients, pooled\n")
    print("| region | AUROC | AUPRC | best Dice | data README |")
    print("|---|---|---|---|---|")
    readme = {"head": "0.808 / 0.071 / 0.162", "brain": "0.893 / 0.544 / 0.561"}
    for region, table in pooled.items():
        print(
            f"| {region} | {table['AUROC', 'pooled']:.3f} | {table['AUPRC', 'pooled']:.3f} | "
            f"{table['Best Dice', 'pooled']:.3f} | {readme[region]} |"
        )
        figures[f"LGG FLAIR, all {len(data.subjects)} patients, pooled, inside the {region}"] = {
            "metrics": table.to_records()
        }


def main():
    args = benchmark_parser(__doc__).parse_args()
    print("# FLAIR histogram-equalisation baseline (anomseg.baselines.FlairThreshold)")
    figures = {}
    if (args.data / "mslub").is_dir():
        bench_mslub(args.data / "mslub", "MSLUB, original files (3 patients, 1 mm MNI)", figures)
    else:
        print(f"\nskipped MSLUB: {args.data / 'mslub'} is absent")
    bench_mslub(None, "Embedded demo data (MSLUB cropped, 8-bit)", figures)
    if (args.data / "lgg_flair").is_dir():
        bench_lgg(args.data / "lgg_flair", figures)
    else:
        print(f"\nskipped LGG: {args.data / 'lgg_flair'} is absent")
    write_json(args.json, figures)


if __name__ == "__main__":
    main()
