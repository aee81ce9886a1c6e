"""The user's protocol on LGG FLAIR: what ``anomseg fit`` and ``anomseg
evaluate`` give, run exactly as a user runs them.

The data are prepared as a user with skull-stripped scans and lesion masks
would have them: each LGG FLAIR volume multiplied by its brain mask (the
data set's deepbet masks), written with its own header, and its tumour mask
beside it (``--workdir``, made once). Then, for each configuration and
seed, two commands, each in a fresh process:

* ``anomseg fit --method M TRAIN/*_flair.nii.gz --exclude TRAIN/*_mask.nii.gz
  ... -o MODEL`` on the 60 ``train`` patients, with the default
  preprocessing of the command line (nonzero foreground, each scan scaled
  for the deep methods) and the configuration's exclusion and options. The
  threshold is calibrated inside ``fit`` on held-out training patients;
  the validation patients are never seen before evaluation.
* ``anomseg evaluate MODEL VAL/*_flair.nii.gz --truth VAL/*_mask.nii.gz -o
  report.json`` on the 20 ``validation`` patients.

The table gives, per configuration, the mean over seeds and the worst seed
(of AUPRC) of: AUROC, AUPRC and best Dice pooled over the brain voxels of
the 20 patients, Dice at the thresholds calibrated at healthy FPR 1, 5 and
10 % (per scan, mean over the 20; these are the masks ``predict`` writes,
post-processed where the configuration says so), the seconds of ``fit``,
the seconds per slice of ``evaluate`` (reading, scoring and metrics of the
20 scans, 662 slices), and the peak resident memory of ``fit``.

Run from the repository root (on 2 cores, the FLAIR baseline takes a
minute, one denoising autoencoder about 15 to 25)::

    python -m benchmarks.quality.bench_user_lgg --configs flair dae --seeds 0 1 2
    python -m benchmarks.quality.bench_user_lgg --list          # the configurations

``--json FILE`` writes every run's figures; a rerun with the same
``--workdir`` reuses the models and reports already made (``--refit``
redoes them).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np

from benchmarks._common import anomseg_command, benchmark_parser, data_folder, write_json

SPLIT_DIRS = {"train": "train", "validation": "validation"}

#: Exclusion of the lesions of the training patients, as the user passes it.
SLICES = ("--exclude-slices",)
VOXELS = ("--exclude-margin", "2")

#: name: (description, seeded, arguments of anomseg fit after the scans).
CONFIGS = {
    "flair": ("FLAIR baseline (Meissen et al.)", False, ("--method", "flair-threshold", *VOXELS)),
    "flair-smoothed": (
        "FLAIR baseline, smoothed (2, 2, 1)",
        False,
        ("--method", "flair-threshold", *VOXELS, "--smoothing", "2,2,1"),
    ),
    "flair-slices": (
        "FLAIR baseline, calibrated on lesion-free slices",
        False,
        ("--method", "flair-threshold", *SLICES),
    ),
    "dae": ("denoising AE (defaults)", True, ("--method", "denoising-ae", *SLICES)),
    "recommended": (
        "recommended: 3 DAE seeds + FLAIR, smoothed, FPR 2 %",
        True,
        ("--method", "recommended", *SLICES, "--n-jobs", "2"),
    ),
    "recommended-min200": (
        "recommended, components < 200 voxels removed",
        True,
        ("--method", "recommended", *SLICES, "--n-jobs", "2", "--min-size", "200"),
    ),
    "dae-whole": (
        "denoising AE, whole slices",
        True,
        ("--method", "denoising-ae", *SLICES, "--param", "crop_margin=None"),
    ),
    "dae-prior": (
        "denoising AE x equalised FLAIR",
        True,
        ("--method", "denoising-ae", *SLICES, "--param", "intensity_prior=True"),
    ),
    "gmvae": ("GMVAE restoration", True, ("--method", "gmvae", *SLICES)),
    "vae": ("VAE restoration", True, ("--method", "vae", *SLICES)),
    "vae-reconstruction": (
        "VAE reconstruction",
        True,
        ("--method", "vae-reconstruction", *SLICES),
    ),
    "ascnet": ("ASC-Net, healthy data only", True, ("--method", "ascnet", *SLICES)),
    "ascnet-train": (
        "ASC-Net, unlabelled: the training scans, whole",
        True,
        ("--method", "ascnet", *SLICES, "--unlabelled", "{train}"),
    ),
    "ascnet-evaluated": (
        "ASC-Net, unlabelled: the evaluated scans",
        True,
        ("--method", "ascnet", *SLICES, "--unlabelled", "{validation}"),
    ),
    "inpainting-predictor": (
        "inpainting predictor",
        True,
        ("--method", "inpainting-predictor", *SLICES),
    ),
    "inpainting": ("inpainting, exact", True, ("--method", "inpainting", *SLICES)),
}


# -- data ---------------------------------------------------------------------------
def prepare(data, workdir):
    """Skull-stripped LGG volumes and their tumour masks, as NIfTI files in
    ``workdir/train`` and ``workdir/validation``; returns the sorted
    ``(scans, masks)`` of each split."""
    import nibabel as nib

    source = data / "lgg_flair"
    split = json.loads((source / "split.json").read_text())
    out = {}
    for name, folder in SPLIT_DIRS.items():
        target = workdir / folder
        target.mkdir(parents=True, exist_ok=True)
        scans, masks = [], []
        for case in sorted(split[name]):
            scan, mask = target / f"{case}_flair.nii.gz", target / f"{case}_mask.nii.gz"
            if not (scan.exists() and mask.exists()):
                flair = nib.load(source / f"{case}_flair.nii.gz")
                brain = np.asarray(nib.load(source / f"{case}_brainmask.nii.gz").dataobj) > 0
                stripped = np.where(brain, np.asarray(flair.dataobj), 0).astype(np.uint8)
                _save(nib.Nifti1Image(stripped, flair.affine, flair.header), scan)
                tumour = nib.load(source / f"{case}_mask.nii.gz")
                _save(
                    nib.Nifti1Image(np.asarray(tumour.dataobj), tumour.affine, tumour.header), mask
                )
            scans.append(scan)
            masks.append(mask)
        out[name] = (scans, masks)
    return out


def _save(image, path):
    tmp = path.with_name(f".{path.name}.tmp.nii.gz")
    image.to_filename(tmp)
    os.replace(tmp, path)


# -- running the command line --------------------------------------------------------
def run(command, log):
    """Run ``python -m anomseg COMMAND`` in a fresh process; returns its wall
    seconds and peak resident memory (MiB). Its output goes to ``log``."""
    argv = anomseg_command(*command)
    started = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        tail = Path(log).read_text().splitlines()[-5:]
        raise RuntimeError(f"{' '.join(map(str, command[:3]))} failed:\n" + "\n".join(tail))
    return seconds, usage.ru_maxrss / 1024


def fit_and_evaluate(name, seed, files, workdir, refit=False, extra=(), cached=False):
    """The figures of one configuration and seed (cached in ``workdir``).

    With ``cached``, only a cached run's figures, or None.
    """
    description, seeded, arguments = CONFIGS[name]
    tag = f"{name}-seed{seed}" if seeded else name
    folder = workdir / "runs" / tag
    record_file = folder / "record.json"
    if record_file.exists() and not refit:
        return json.loads(record_file.read_text())
    if cached:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    scans, masks = files["train"]
    model = folder / "model.anomseg"
    arguments = _expanded([*arguments, *extra], files)
    if seeded:
        arguments += ["--param", f"random_state={seed}"]
    fit = ["fit", *scans, "--exclude", *masks, *arguments, "-o", model, "--overwrite"]
    fit_seconds, fit_peak = run([*fit, "--no-progress"], folder / "fit.log")
    scans, masks = files["validation"]
    report = folder / "report.json"
    evaluate = ["evaluate", model, *scans, "--truth", *masks, "-o", report, "--overwrite"]
    evaluate_seconds, _ = run([*evaluate, "--no-progress"], folder / "evaluate.log")
    n_slices = sum(_n_slices(scan) for scan in scans)
    record = {
        "config": name,
        "description": description,
        "seed": seed if seeded else None,
        "fit": " ".join(
            ["anomseg fit TRAIN... --exclude MASKS...", *CONFIGS[name][2], *map(str, extra)]
        ),
        "fit_seconds": fit_seconds,
        "fit_peak_mib": fit_peak,
        "evaluate_seconds_per_slice": evaluate_seconds / n_slices,
        **_figures(json.loads(report.read_text())),
    }
    record_file.write_text(json.dumps(record, indent=1))
    return record


def _expanded(arguments, files):
    """``{train}`` and ``{validation}`` in ``arguments`` as the scans of
    that split (for ``--unlabelled``)."""
    out = []
    for argument in arguments:
        name = str(argument).strip("{}")
        is_split = str(argument).startswith("{") and name in files
        out += list(files[name][0]) if is_split else [argument]
    return out


def _n_slices(path):
    import nibabel as nib

    return nib.load(path).shape[2]


def _figures(report):
    """AUROC, AUPRC and best Dice pooled; Dice per scan at each rate."""
    out = {}
    for row in report["pooled"]:
        if row["metric"] in ("AUROC", "AUPRC", "Best Dice"):
            out[row["metric"]] = row["value"]
    for row in report["per_volume"]:
        if row["metric"] == "Dice" and "calibrated" in row["threshold"]:
            rate = row["threshold"].rsplit(" ", 1)[-1]
            out[f"Dice@{rate}"] = row["value"]
    return out


# -- table -----------------------------------------------------------------------------
COLUMNS = ["AUROC", "AUPRC", "Best Dice", "Dice@1%", "Dice@2%", "Dice@5%", "Dice@10%"]


def table(records):
    """Mean over seeds, the worst seed's AUPRC, and the costs, per
    configuration, in the order run."""
    names = list(dict.fromkeys(r["config"] for r in records))
    header = [
        "configuration",
        "seeds",
        *COLUMNS,
        "worst AUPRC",
        "AUPRC spread",
        "fit s",
        "evaluate s/slice",
        "fit peak MiB",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in names:
        runs = [r for r in records if r["config"] == name]
        auprc = [r["AUPRC"] for r in runs]
        # the description of today's configuration, which a cached run predates
        description = CONFIGS.get(name, (runs[0]["description"],))[0]
        cells = [description, str(len(runs))]
        cells += [_cell([r.get(c, np.nan) for r in runs]) for c in COLUMNS]
        cells += [f"{min(auprc):.3f}", f"{max(auprc) - min(auprc):.3f}"]
        cells += [f"{np.mean([r['fit_seconds'] for r in runs]):.0f}"]
        cells += [f"{np.mean([r['evaluate_seconds_per_slice'] for r in runs]):.3f}"]
        cells += [f"{max(r['fit_peak_mib'] for r in runs):.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(values):
    mean = np.mean(values)
    return "" if np.isnan(mean) else f"{mean:.3f}"


def main():
    parser = benchmark_parser(__doc__)
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("/tmp/anomseg-user-lgg"),
        help="Where the user's files, models and reports go (reused by reruns).",
    )
    parser.add_argument("--configs", nargs="+", default=["flair", "dae"], choices=sorted(CONFIGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--fit-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="An extra argument of every anomseg fit (repeatable), e.g. --fit-arg=--min-size "
        "--fit-arg=20; the runs go to separate folders only if --tag is given too.",
    )
    parser.add_argument("--tag", default="", help="Suffix of the configurations' names.")
    parser.add_argument("--refit", action="store_true", help="Redo cached runs.")
    parser.add_argument(
        "--cached",
        action="store_true",
        help="Run nothing: the table of the runs of --configs and --seeds already in --workdir.",
    )
    parser.add_argument("--list", action="store_true", help="List the configurations.")
    args = parser.parse_args()
    if args.list:
        for name, (description, _seeded, arguments) in CONFIGS.items():
            print(f"{name}: {description}; anomseg fit ... {' '.join(arguments)}")
        return
    if data_folder(args, "lgg_flair") is None:
        return
    files = prepare(args.data, args.workdir)
    print(
        f"# The user's protocol on LGG FLAIR: fit on {len(files['train'][0])} training "
        f"patients (their tumours excluded), evaluate on {len(files['validation'][0])} "
        "validation patients, inside the brain\n",
        flush=True,
    )
    records = []
    for name in args.configs:
        if args.tag:
            # The table names a tagged run by its tag and extra arguments.
            description, seeded, arguments = CONFIGS[name]
            extra = " ".join(args.fit_arg)
            description += f", {args.tag.lstrip('-')}" + (f": {extra}" if extra else "")
            CONFIGS[f"{name}{args.tag}"] = (description, seeded, arguments)
            name = f"{name}{args.tag}"
        seeds = args.seeds if CONFIGS[name][1] else [None]
        for seed in seeds:
            record = fit_and_evaluate(
                name, seed, files, args.workdir, args.refit, args.fit_arg, args.cached
            )
            if record is None:
                continue
            records.append(record)
            print(
                f"{name} seed {seed}: AUPRC {record['AUPRC']:.3f}, best Dice "
                f"{record['Best Dice']:.3f}, Dice@5% {record.get('Dice@5%', np.nan):.3f}, "
                f"fit {record['fit_seconds']:.0f} s",
                flush=True,
            )
    print()
    print(table(records))
    write_json(args.json, records)


if __name__ == "__main__":
    main()
