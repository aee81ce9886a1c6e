"""Benchmark of the inpainting localisers (Nguyen et al. 2020; Mavropoulos
2021) against the FLAIR baseline, with the exact and predicted heatmaps
side by side.

Run from the repository root::

    OMP_NUM_THREADS=1 python -m benchmarks.quality.bench_inpainting [--every 4] \
        [--healthy-every 3] [--json inpainting.json]

The protocol is the shared one of ``benchmarks/_lgg.py``, on the LGG FLAIR set at
128 x 128 (``../shared/data/lgg_flair``):

* every volume is restricted to its brain mask (``--region brain``, the
  default) or its head (``--region head``) and scaled by the 90th percentile
  of those voxels (unclipped) as a whole, then cut into axial slices whose
  background is 0;
* training uses the tumour-free slices of the ``train`` patients;
* thresholds are calibrated on the tumour-free slices of the ``validation``
  patients (``calibrate``), every ``--healthy-every``-th;
* metrics cover every ``--every``-th slice of the ``validation`` patients,
  pooled over the region's pixels, and Dice also per patient.

Each heatmap is also multiplied by the FLAIR baseline's equalised intensity
(the intensity prior; the exact one threshold-free, since its heatmaps of
the healthy slices would cost as much again).

One generator is trained (``InpaintingLocalizer``); each predictor reuses it
through :class:`sklearn.frozen.FrozenEstimator`, so the exact and predicted
heatmaps come from the same generator and are timed in the same process, one
after the other, on the same slices. The predictor is trained twice: with
the default perturbed windows and without (``perturbed_fraction=0``, the
paper's plain healthy training). A naive exact localiser, one window
position per forward pass (``inference_batch_size=1``), is timed against
the batched one on the ``--naive-slices`` evaluation slices with the most
pixels of the region.

The figures in the README and the issue notes (which name the region they
were measured in) came from ``--every 4
--healthy-every 3 --param verbose=1 --predictor-param verbose=1`` (default
geometry) and ``--every 4 --healthy-every 3 --naive-slices 0 --param
window_size=16 --param context_size=32``, on one CPU thread.
``--json`` writes the rows, the speeds, the mean heatmap by region and
the training losses.
"""

from __future__ import annotations

import time

import numpy as np
from scipy.ndimage import binary_dilation, binary_erosion
from scipy.stats import pearsonr, spearmanr
from sklearn.frozen import FrozenEstimator

from anomseg.metrics import evaluate
from benchmarks._common import (
    add_param_argument,
    benchmark_parser,
    data_folder,
    peak_memory_mib,
    print_table,
    reset_peak_memory,
    write_json,
)
from benchmarks._lgg import (
    MAX_FPR,
    add_protocol_arguments,
    describe,
    equalised_slices,
    flair_row,
    load_protocol,
    prior_row,
    row,
)


def module_mib(model):
    """Parameters and buffers of a fitted estimator's network, in MiB."""
    tensors = list(model.module_.parameters()) + list(model.module_.buffers())
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def scored_row(name, model, test, extra):
    X, y, groups = test
    reset_peak_memory()
    start = time.perf_counter()
    maps = model.score_samples(X)
    seconds = (time.perf_counter() - start) / len(X)
    peak = peak_memory_mib()
    table = evaluate(
        y,
        maps,
        foreground=~np.ma.getmaskarray(X),
        thresholds=model.calibration_thresholds_,
        groups=groups,
    )
    info = {"peak MiB": peak, "model MiB": module_mib(model), **extra}
    return row(name, table, seconds, info), maps


#: Columns of the inpainting table, and their number formats.
COLUMNS = [
    "method",
    "AUROC",
    "AUPRC",
    "best Dice",
    "Dice@5% pooled",
    "Dice@5% per patient",
    "corr. with exact",
    "s/slice",
    "train s",
    "model MiB",
    "peak MiB",
]
FORMATS = {"model MiB": ".3f", "s/slice": ".4f"}


def region_masks(X, y):
    """Parts of the evaluated region (brain or head) of the evaluation
    slices: tumour interior (eroded 4 px), tumour boundary, the 5 px rim of
    the region's mask, and the rest of the region (4 px or more from any
    tumour)."""
    region = ~np.ma.getmaskarray(X)
    rim_name, rest_name = "rim of the region (5 px)", "rest of the region"
    out = {
        k: np.zeros_like(region)
        for k in ("tumour interior", "tumour boundary", rim_name, rest_name)
    }
    for k, (h, t) in enumerate(zip(region, y)):
        inner = binary_erosion(t, iterations=4)
        rim = h & ~binary_erosion(h, iterations=5)
        out["tumour interior"][k] = inner
        out["tumour boundary"][k] = t & ~inner
        out[rim_name][k] = rim
        out[rest_name][k] = h & ~rim & ~binary_dilation(t, iterations=4)
    return out


def main():
    parser = benchmark_parser(__doc__)
    add_protocol_arguments(parser)
    parser.add_argument(
        "--naive-slices",
        type=int,
        default=2,
        help="Slices scored one window position at a time (0: skip).",
    )
    add_param_argument(parser, "InpaintingLocalizer")
    add_param_argument(parser, "InpaintingLossPredictor", flag="--predictor-param")
    args = parser.parse_args()
    path = data_folder(args, "lgg_flair")
    if path is None:
        return
    from anomseg.inpainting import InpaintingLocalizer, InpaintingLossPredictor

    params = {"random_state": 0, "device": "auto", **dict(args.param)}
    predictor_params = {"random_state": 0, "device": "auto", **dict(args.predictor_param)}
    protocol = load_protocol(path, args.region, args.every, args.healthy_every)
    (X_train, _, groups_train), healthy_val, test, val = (
        protocol[k] for k in ("train", "healthy_val", "test", "val")
    )
    print(f"# Inpainting localisers on {describe(protocol)}\n", flush=True)
    _, flair, _ = flair_row(val, test, args.every)
    flair["model MiB"] = 0.0
    rows = [flair]

    # fit only holds out a token calibration set: thresholds come from calibrate().
    exact = InpaintingLocalizer(**{**params, "calibration_fraction": 0.05})
    exact.fit(X_train, groups=groups_train)
    exact.calibrate(healthy_val)
    print(
        f"generator: window {exact.window_size_} px, stride {exact.stride_} px, context "
        f"{exact.context_size_} px, {exact.n_training_windows_} training windows, "
        f"{exact.training_time_:.0f} s, device {exact.device_}",
        flush=True,
    )
    exact_row, exact_maps = scored_row(
        "InpaintingLocalizer (exact, batched)", exact, test, {"train s": exact.training_time_}
    )
    rows.append(exact_row)
    foreground = ~np.ma.getmaskarray(test[0])
    exact_values = exact_maps[foreground]
    heatmaps = {"exact": exact_maps}
    eq_healthy, eq_test = equalised_slices(val, args.every, args.healthy_every)
    # Threshold-free: the exact heatmaps of the healthy slices would cost
    # as much again.
    prior_rows = [
        prior_row("  exact x equalised FLAIR (threshold-free)", test, exact_maps, eq_test)
    ]

    predictors = []
    for fraction in (predictor_params.pop("perturbed_fraction", 0.5), 0.0):
        predictor = InpaintingLossPredictor(
            FrozenEstimator(exact),
            **{**predictor_params, "perturbed_fraction": fraction, "calibration_fraction": 0.05},
        )
        predictor.fit(X_train, groups=groups_train)
        predictor.calibrate(healthy_val)
        name = f"InpaintingLossPredictor (perturbed {fraction:g})"
        predicted_row, maps = scored_row(
            name, predictor, test, {"train s": predictor.training_time_}
        )
        values = maps[foreground]
        predicted_row["corr. with exact"] = float(pearsonr(exact_values, values)[0])
        predicted_row["spearman"] = float(spearmanr(exact_values, values)[0])
        rows.append(predicted_row)
        predictors.append(predictor)
        heatmaps[name] = maps
        prior_rows.append(
            prior_row(
                f"  predicted (perturbed {fraction:g}) x equalised FLAIR",
                test,
                maps,
                eq_test,
                healthy=(healthy_val, predictor.score_samples(healthy_val), eq_healthy),
            )
        )

    naive = None
    if args.naive_slices:
        # The slices with the most pixels of the region, scored both ways.
        largest = np.argsort(foreground.reshape(len(foreground), -1).sum(1))[-args.naive_slices :]
        naive = {}
        for size in (1, exact.inference_batch_size_):
            exact.set_params(inference_batch_size=size)
            start = time.perf_counter()
            exact.score_samples(test[0][largest])
            naive[size] = (time.perf_counter() - start) / len(largest)
        start = time.perf_counter()
        predictors[0].score_samples(test[0][largest])
        naive["predictor"] = (time.perf_counter() - start) / len(largest)

    print(
        f"\n## Quality and cost (Dice at healthy FPR {MAX_FPR:.0%}; corr.: Pearson over "
        f"{args.region} pixels of the evaluation slices)\n"
    )
    print_table(rows + prior_rows, COLUMNS, FORMATS)
    print("\n## Speed, side by side in this run\n")
    base = rows[1]["s/slice"]
    print("| heatmap | s/slice | speed-up over the batched exact | model MiB |")
    print("|---|---|---|---|")
    for r in rows[1:]:
        print(
            f"| {r['method']}, {len(test[0])} evaluation slices | {r['s/slice']:.4f} | "
            f"{base / r['s/slice']:.1f}x | {r['model MiB']:.3f} |"
        )
    if naive is not None:
        (one, one_s), (many, many_s), (_, fast_s) = naive.items()
        print(
            f"\nOn the {args.naive_slices} evaluation slices with the most {args.region} "
            f"pixels, the exact heatmap took {one_s:.3f} s/slice with {one} window per "
            "forward pass and "
            f"{many_s:.3f} s/slice with {many}: batching is {one_s / many_s:.2f}x faster. "
            f"The predictor took {fast_s:.4f} s/slice there, {many_s / fast_s:.0f}x faster "
            "than the batched exact heatmap."
        )
    for r in rows[2:]:
        print(
            f"\n{r['method']}: Pearson {r['corr. with exact']:.3f}, Spearman {r['spearman']:.3f}"
        )
    print("\n## Mean heatmap value by region of the evaluation slices\n")
    regions = region_masks(*test[:2])
    print("| region | pixels | " + " | ".join(heatmaps) + " |")
    print("|---|---|" + "---|" * len(heatmaps))
    means = {r: {k: m[mask].mean() for k, m in heatmaps.items()} for r, mask in regions.items()}
    for region, mask in regions.items():
        print(
            f"| {region} | {int(mask.sum())} | "
            + " | ".join(f"{v:.4f}" for v in means[region].values())
            + " |"
        )
    print("\n## Generator losses (every 20th of training)\n")
    print("| step | l1_loss | adversarial_loss | discriminator_loss | seconds |")
    print("|---|---|---|---|---|")
    for h in exact.history_:
        print(
            f"| {h['step']} | {h['l1_loss']:.4f} | {h['adversarial_loss']:.4f} | "
            f"{h['discriminator_loss']:.4f} | {h['seconds']:.0f} |"
        )
    for predictor in predictors:
        first, last = predictor.history_[0], predictor.history_[-1]
        print(
            f"\npredictor (perturbed {predictor.perturbed_fraction:g}): loss "
            f"{first['loss']:.4f} (step {first['step']}) -> {last['loss']:.4f} "
            f"(step {last['step']}), loss_scale_ {predictor.loss_scale_:.4f}, receptive "
            f"field {predictor.receptive_field_} px"
        )
    write_json(
        args.json,
        {
            "rows": rows + prior_rows,
            "naive s/slice": naive,
            "mean heatmap by region": means,
            "generator history": exact.history_,
            "predictor histories": [p.history_ for p in predictors],
        },
    )


if __name__ == "__main__":
    main()
