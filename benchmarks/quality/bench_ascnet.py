"""Benchmark of ASC-Net (Dey and Hong 2021) against the FLAIR baseline.

Run from the repository root::

    OMP_NUM_THREADS=1 python -m benchmarks.quality.bench_ascnet [--json ascnet.json]

The protocol is the shared one of ``benchmarks/_lgg.py``, on the LGG FLAIR set at
128 x 128 (``../shared/data/lgg_flair``):

* every volume is restricted to its brain mask (``--region brain``, the
  default) or its head (``--region head``) and scaled by the 90th percentile
  of those voxels (unclipped) as a whole, then cut into axial slices whose
  background is 0;
* the **reference** set is the tumour-free slices of the ``train`` patients,
  the **unlabelled input** set the other slices of the ``train`` patients
  (``--reference-only`` trains without it);
* the FPR threshold is calibrated on the tumour-free slices of the
  ``validation`` patients (``calibrate``), the histogram-peak threshold on
  the maps of the unlabelled training slices (in ``fit``);
* metrics cover all slices of the ``validation`` patients, pooled over the
  region's pixels, and Dice also per patient.

The figures quoted in the README and the issue notes came from the default
parameters (``--param verbose=1 --save ascnet.pt`` printed the losses
and kept the model), all 662 evaluation slices, on one CPU thread; they
name the region they were measured in.

One trained network gives every ASC-Net row: the reconstruction ``I_ro``
thresholded at the healthy FPR or by the histogram-peak rule, each without
and with the 2D post-processing (opening then closing, radius
``--radius``), and the wild cut ``I_wc`` at the healthy FPR; and each map
times the FLAIR baseline's equalised intensity (the intensity prior),
calibrated on the same healthy slices. ``--json`` writes the rows and the
losses per cycle.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from anomseg.metrics import evaluate
from anomseg.postprocessing import MorphologicalFilter
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
)


def dice_rows(y, masks, groups):
    """Pooled Dice and the mean and sd of per-patient Dice of masks."""

    def dice(t, p):
        total = t.sum() + p.sum()
        return 2 * np.logical_and(t, p).sum() / total if total else 1.0

    # Patients whose evaluated slices hold no tumour (with --every) have no
    # Dice to speak of, rather than a perfect one.
    per_patient = [
        dice(y[groups == g], masks[groups == g]) for g in np.unique(groups) if y[groups == g].any()
    ]
    return dice(y, masks), (float(np.mean(per_patient)), float(np.std(per_patient)))


def ascnet_rows(params, reference, unlabelled, healthy_val, test, radius, prior, model=None):
    from anomseg.adversarial import ASCNetSegmenter

    X_ref, _, groups_ref = reference
    X_test, y_test, groups_test = test
    foreground = ~np.ma.getmaskarray(X_test)
    # The FPR threshold is calibrated on the validation patients' healthy
    # slices by calibrate(); fit only holds out a token calibration set.
    if model is None:
        model = ASCNetSegmenter(**{**params, "calibration_fraction": 0.05})
        model.fit(X_ref, groups=groups_ref, X_unlabelled=unlabelled)
    model.calibrate(healthy_val)
    rows = []
    for anomaly_map in ("reconstruction", "wild-cut"):
        model.set_params(anomaly_map=anomaly_map)
        if anomaly_map == "wild-cut":
            model.calibrate(healthy_val)
        reset_peak_memory()
        start = time.perf_counter()
        maps = model.score_samples(X_test)
        seconds = (time.perf_counter() - start) / len(X_test)
        peak = peak_memory_mib()
        table = evaluate(y_test, maps, foreground=foreground)
        rules = [("FPR 5%", model.fpr_threshold_)]
        if anomaly_map == "reconstruction":
            rules.append(("histogram peak", model.histogram_threshold_))
        for rule, threshold in rules:
            for r in (0, radius) if anomaly_map == "reconstruction" else (0,):
                masks = maps > threshold
                if r:  # ASC-Net's post-processing: 2D opening, then closing
                    masks = MorphologicalFilter("opening-closing", radius=r).fit_transform(masks)
                pooled, per_patient = dice_rows(y_test, masks & foreground, groups_test)
                rows.append(
                    {
                        "method": f"ASC-Net {anomaly_map}, {rule}"
                        + (f", open/close r={r}" if r else ""),
                        "AUROC": table["AUROC", "pooled"],
                        "AUPRC": table["AUPRC", "pooled"],
                        "best Dice": table["Best Dice", "pooled"],
                        "threshold": threshold,
                        "Dice pooled": pooled,
                        "Dice per patient": per_patient,
                        "s/slice": seconds,
                        "train s": model.training_time_,
                        "peak MiB": peak,
                    }
                )
        eq_healthy, eq_test = prior
        rows.append(
            prior_row(
                f"ASC-Net {anomaly_map} x equalised FLAIR, FPR 5%",
                test,
                maps,
                eq_test,
                healthy=(healthy_val, model.score_samples(healthy_val), eq_healthy),
                extra={"s/slice": seconds, "train s": model.training_time_},
            )
        )
        rows[-1]["Dice pooled"] = rows[-1].pop("Dice@5% pooled")
        rows[-1]["Dice per patient"] = rows[-1].pop("Dice@5% per patient")
        model.set_params(opening_radius=0, closing_radius=0)
    return rows, model


#: Columns of the ASC-Net table.
COLUMNS = [
    "method",
    "AUROC",
    "AUPRC",
    "best Dice",
    "threshold",
    "Dice pooled",
    "Dice per patient",
    "s/slice",
    "train s",
    "peak MiB",
]


def main():
    parser = benchmark_parser(__doc__)
    add_protocol_arguments(parser, healthy_every=False)
    parser.add_argument(
        "--reference-only", action="store_true", help="Train without the unlabelled input set."
    )
    parser.add_argument(
        "--radius",
        type=int,
        default=1,
        help="Radius of the opening and closing of the post-processed rows.",
    )
    parser.add_argument("--no-flair", action="store_true", help="Leave out the FLAIR row.")
    add_param_argument(parser, "ASCNetSegmenter")
    parser.add_argument("--save", type=Path, help="Write the trained model here (safe format).")
    parser.add_argument("--load", type=Path, help="Evaluate a model saved by --save instead.")
    args = parser.parse_args()
    path = data_folder(args, "lgg_flair")
    if path is None:
        return
    params = {"random_state": 0, "device": "auto", **dict(args.param)}
    protocol = load_protocol(path, args.region, args.every)
    reference, healthy_val, test, val = (
        protocol[k] for k in ("train", "healthy_val", "test", "val")
    )
    # The unlabelled input: the training patients' slices with tumour.
    every_train = protocol["train_all"]
    has_tumour = every_train[1].reshape(len(every_train[1]), -1).any(axis=1)
    unlabelled = None if args.reference_only else every_train[0][has_tumour]
    n_unlabelled = 0 if unlabelled is None else len(unlabelled)
    print(
        f"# ASC-Net on {describe(protocol)}; {n_unlabelled} unlabelled slices of the train "
        "patients\n",
        flush=True,
    )
    rows = []
    if not args.no_flair:
        _, flair, flair_maps = flair_row(val, test, args.every)
        flair["Dice pooled"] = flair.pop("Dice@5% pooled")
        flair["Dice per patient"] = flair.pop("Dice@5% per patient")
        rows.append(flair)
        # The same post-processing as ASC-Net's, for a fair comparison.
        masks = MorphologicalFilter("opening-closing", radius=args.radius).fit_transform(
            flair_maps > flair["threshold"]
        )
        pooled, per_patient = dice_rows(test[1], masks & ~np.ma.getmaskarray(test[0]), test[2])
        rows.append(
            {
                **flair,
                "method": f"FLAIR baseline, open/close r={args.radius}",
                "Dice pooled": pooled,
                "Dice per patient": per_patient,
            }
        )
    prior = equalised_slices(val, args.every)
    from anomseg import load_model

    ascnet, model = ascnet_rows(
        params,
        reference,
        unlabelled,
        healthy_val,
        test,
        args.radius,
        prior,
        model=load_model(args.load) if args.load else None,
    )
    rows += ascnet
    if args.save and not args.load:
        model.save(args.save)
    print(
        f"trained {model.n_unlabelled_} unlabelled + {model.n_reference_} reference "
        f"slices, {len(model.history_)} cycles, {model.training_time_:.0f} s, "
        f"device {model.device_}; histogram peaks at "
        + ", ".join(f"{p:.3f}" for p in model.histogram_["peaks"])
    )
    print(f"\n## Quality and cost (FLAIR: Dice at healthy FPR {MAX_FPR:.0%})\n")
    print_table(rows, COLUMNS)
    print("\n## Losses per cycle\n")
    keys = [
        "discriminator_loss",
        "discriminator_accuracy",
        "fence_loss",
        "disjoint_loss",
        "reconstruction_loss",
    ]
    print("| stage | cycle | " + " | ".join(keys) + " |")
    print("|" + "---|" * (len(keys) + 2))
    for h in model.history_:
        print(f"| {h['stage']} | {h['epoch']} | " + " | ".join(f"{h[k]:.4f}" for k in keys) + " |")
    write_json(args.json, {"rows": rows, "history": model.history_})


if __name__ == "__main__":
    main()
