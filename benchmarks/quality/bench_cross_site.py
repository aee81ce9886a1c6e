"""Cross-site: models trained on LGG FLAIR, as a user trains them, used at
another site, on the MSLUB multiple-sclerosis patients.

The two sites differ in everything: scanner and protocol, voxel size (LGG
2 x 2 x 1 mm nominal, 128 x 128 axial slices; MSLUB 1 mm isotropic, 182 x
218 x 182, registered to MNI space), intensities (LGG uint8, MSLUB
N4-corrected floats) and disease (gliomas, MS lesions). Every step is an
``anomseg`` command, each in a fresh process:

1. ``anomseg fit`` on the 60 LGG ``train`` patients, the user's protocol of
   :mod:`benchmarks.quality.bench_user_lgg` (same data preparation and
   options; the threshold calibrated inside ``fit`` on held-out LGG
   patients). Each configuration is trained twice: as is, and with
   ``--spacing 2,2,1``, which records a ``Resampler`` in the model: LGG
   scans are already on that grid, and every scan scored later is
   resampled to it, its maps brought back to its own grid.
2. ``anomseg evaluate MODEL MSLUB...`` on the 3 MSLUB patients, with the
   threshold calibrated at the training site.
3. For each MSLUB patient, ``anomseg calibrate MODEL OTHER... --exclude
   OTHER_MASKS... --exclude-margin 2 -o NEW`` on the lesion-free brain of
   the *other two* patients (never the evaluated one), then ``anomseg
   evaluate NEW PATIENT``.

The table gives, per configuration, the mean over seeds of AUROC, AUPRC and
best Dice pooled over the brain voxels of the 3 patients (threshold-free, or
with the oracle threshold: re-calibration cannot change them), and at the
thresholds calibrated at healthy FPR 1 and 5 % the Dice and the FPR reached
on the patient's own lesion-free brain (mean over the 3 patients; the FPR
tells whether the calibration holds), first with the LGG calibration, then
with the MSLUB one; and the seconds per scan of ``evaluate`` at the new
site. Three patients are few:
read the differences between rows, not the third decimal.

Run from the repository root (on 2 cores, the FLAIR baseline takes a few
minutes, each denoising autoencoder about 10)::

    python -m benchmarks.quality.bench_cross_site --configs flair dae --seeds 0 1 2

A rerun with the same ``--workdir`` reuses the models and reports already
made, and the models that :mod:`benchmarks.quality.bench_user_lgg` trained
there with the same command (``--refit`` redoes them all); ``--json FILE``
writes every run's figures.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from benchmarks._common import benchmark_parser, data_folder, write_json
from benchmarks.quality import bench_user_lgg
from benchmarks.quality.bench_user_lgg import prepare, run

#: The grid of the LGG scans, to which ``--spacing`` resamples every scan.
SPACING = ("--spacing", "2,2,1")

#: Lesion-free tissue of patients, as calibration data: their lesions and
#: 2 voxels around them left out.
MARGIN = ("--exclude-margin", "2")

#: name: the configuration of bench_user_lgg trained, and whether resampled.
CONFIGS = {
    "flair": ("flair", False),
    "flair-spacing": ("flair", True),
    "dae": ("dae", False),
    "dae-spacing": ("dae", True),
}

RATES = ("1%", "5%")


def mslub_files(data):
    """The sorted MSLUB ``(flairs, masks)``."""
    folder = data / "mslub"
    flairs = sorted(folder.glob("patient*_flair.nii.gz"))
    return flairs, [Path(str(f).replace("_flair", "_mask")) for f in flairs]


def fit(name, seed, files, workdir, refit):
    """The model of one configuration and seed, trained on LGG by ``anomseg
    fit`` (cached in ``workdir``); returns its folder."""
    base, resampled = CONFIGS[name]
    _, seeded, arguments = bench_user_lgg.CONFIGS[base]
    tag = f"{base}-seed{seed}" if seeded else base
    folder = workdir / "cross-site" / (f"{name}-seed{seed}" if seeded else name)
    model = folder / "model.anomseg"
    if model.exists() and not refit:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    trained = workdir / "runs" / tag / "model.anomseg"
    if not resampled and trained.exists() and not refit:
        # bench_user_lgg's model of the same command: the same model.
        shutil.copyfile(trained, model)
        return folder
    scans, masks = files["train"]
    arguments = [*arguments, *(SPACING if resampled else ())]
    if seeded:
        arguments += ["--param", f"random_state={seed}"]
    command = ["fit", *scans, "--exclude", *masks, *arguments, "-o", model, "--overwrite"]
    seconds, _ = run([*command, "--no-progress"], folder / "fit.log")
    (folder / "fit.json").write_text(json.dumps({"seconds": seconds}))
    return folder


def evaluate(folder, flairs, masks, refit):
    """The figures at the training site's calibration, then at each
    patient's calibration on the other patients (the commands' outputs are
    reused when present, unless ``refit``)."""
    model = folder / "model.anomseg"
    report = folder / "mslub-report.json"
    command = ["evaluate", model, *flairs, "--truth", *masks, "-o", report, "--overwrite"]
    seconds = _run_once(command, report, refit)
    record = {"evaluate_seconds_per_scan": seconds / len(flairs)}
    record.update(_figures(json.loads(report.read_text())))
    recalibrated = []
    for i, (flair, mask) in enumerate(zip(flairs, masks)):
        others = [j for j in range(len(flairs)) if j != i]
        new = folder / f"mslub-calibrated-{i}.anomseg"
        command = ["calibrate", model, *(flairs[j] for j in others), "--exclude"]
        command += [*(masks[j] for j in others), *MARGIN, "-o", new, "--overwrite"]
        _run_once(command, new, refit)
        report = folder / f"mslub-report-{i}.json"
        command = ["evaluate", new, flair, "--truth", mask, "-o", report, "--overwrite"]
        _run_once(command, report, refit)
        recalibrated.append(_figures(json.loads(report.read_text())))
    for key in [f"{metric}@{rate}" for rate in RATES for metric in ("Dice", "FPR")]:
        record[f"MSLUB {key}"] = float(np.mean([r[key] for r in recalibrated]))
    return record


def _run_once(command, output, refit):
    """Run ``anomseg COMMAND`` unless its ``output`` exists (and not
    ``refit``); returns its wall seconds, then or when it was run."""
    seconds_file = output.with_name(f"{output.name}.seconds")
    if refit or not (output.exists() and seconds_file.exists()):
        seconds, _ = run([*command, "--no-progress"], output.with_name(f"{output.name}.log"))
        seconds_file.write_text(repr(seconds))
    return float(seconds_file.read_text())


def _figures(report):
    """Those of :func:`bench_user_lgg._figures`, and the false-positive rate
    reached on the lesion-free brain at each calibrated threshold (per
    scan, mean over the scans)."""
    out = bench_user_lgg._figures(report)
    for row in report["per_volume"]:
        if row["metric"] == "FPR" and "calibrated" in row["threshold"]:
            out[f"FPR@{row['threshold'].rsplit(' ', 1)[-1]}"] = row["value"]
    return out


CALIBRATED = [f"{metric}@{rate}" for rate in RATES for metric in ("Dice", "FPR")]
COLUMNS = ["AUROC", "AUPRC", "Best Dice", *CALIBRATED, *(f"MSLUB {c}" for c in CALIBRATED)]


def table(records):
    """Mean over seeds (and the spread of AUPRC) per configuration."""
    header = ["model (trained on LGG)", "resampled", "seeds", "AUROC", "AUPRC", "best Dice"]
    header += [f"{c}, LGG calibration" for c in CALIBRATED]
    header += [f"{c}, MSLUB calibration" for c in CALIBRATED]
    header += ["AUPRC spread", "evaluate s/scan"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in dict.fromkeys(r["config"] for r in records):
        runs = [r for r in records if r["config"] == name]
        base, resampled = CONFIGS[name]
        cells = [bench_user_lgg.CONFIGS[base][0], "2 x 2 x 1 mm" if resampled else "no"]
        cells += [str(len(runs))]
        cells += [f"{np.mean([r[c] for r in runs]):.3f}" for c in COLUMNS]
        auprc = [r["AUPRC"] for r in runs]
        cells += [f"{max(auprc) - min(auprc):.3f}"]
        cells += [f"{np.mean([r['evaluate_seconds_per_scan'] for r in runs]):.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = benchmark_parser(__doc__)
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("/tmp/anomseg-user-lgg"),
        help="Where the LGG files (as bench_user_lgg prepares them), the models and the "
        "reports go (reused by reruns).",
    )
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--refit", action="store_true", help="Redo cached runs.")
    args = parser.parse_args()
    if data_folder(args, "lgg_flair") is None or data_folder(args, "mslub") is None:
        return
    files = prepare(args.data, args.workdir)
    flairs, masks = mslub_files(args.data)
    print(
        f"# Cross-site: trained on {len(files['train'][0])} LGG patients, evaluated on "
        f"{len(flairs)} MSLUB patients inside the brain\n",
        flush=True,
    )
    records = []
    for name in args.configs:
        seeded = bench_user_lgg.CONFIGS[CONFIGS[name][0]][1]
        for seed in args.seeds if seeded else [None]:
            folder = fit(name, seed, files, args.workdir, args.refit)
            record = {"config": name, "seed": seed}
            record.update(evaluate(folder, flairs, masks, args.refit))
            records.append(record)
            print(
                f"{name} seed {seed}: AUPRC {record['AUPRC']:.3f}; at FPR 5 %, Dice "
                f"{record['Dice@5%']:.3f} and FPR {record['FPR@5%']:.3f} (LGG calibration), "
                f"{record['MSLUB Dice@5%']:.3f} and {record['MSLUB FPR@5%']:.3f} (MSLUB)",
                flush=True,
            )
    print()
    print(table(records))
    write_json(args.json, records)


if __name__ == "__main__":
    main()
