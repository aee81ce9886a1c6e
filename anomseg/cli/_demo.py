"""``anomseg demo``: the FLAIR baseline on the embedded MS data, end to end."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..io._outputs import OutputRecord, folder_lock
from ._parser import add_command

__all__ = ["leave_one_out_maps", "run_demo"]

#: The demo's mask threshold. MS lesions fill 0.1-4 % of these brains, so a
#: 5 % false-positive rate would flood the mask; 1 % is the useful operating
#: point here (the table also reports 5 % and 10 %).
DEMO_MAX_FPR = 0.01

#: What the folder's record of outputs names as the maker of the demo's.
_IDENTITY = "anomseg demo"


def leave_one_out_maps(images, masks, estimator, progress=False):
    """Anomaly maps and per-patient thresholds: each patient's threshold is
    calibrated on the lesion-free tissue of the *other* patients only."""
    from sklearn.base import clone
    from tqdm.auto import tqdm

    from ..utils import LesionExclusion

    maps, thresholds = [], []
    bar = tqdm(images, desc="leave-one-out", unit="patient", disable=not progress, leave=False)
    for i, image in enumerate(bar):
        others = [j for j in range(len(images)) if j != i]
        lesions = LesionExclusion([masks[j] for j in others], margin=2)
        model = clone(estimator).fit([images[j] for j in others], exclude=lesions)
        maps.append(model.score_samples([image])[0])
        thresholds.append(model.calibration_thresholds_)
    return maps, thresholds


def run_demo(output_dir, *, overwrite=False, progress=True):
    """Run the FLAIR baseline on the embedded data and report.

    Fits :class:`~anomseg.baselines.FlairThreshold` with leave-one-patient-out
    calibration on the three embedded MSLUB patients, prints the metric
    table, and writes per-patient NIfTI maps and masks plus ``demo.png``
    (per patient: its FLAIR, its map with the threshold's contour, and the
    mask and ground truth outlined over the FLAIR; the method, the threshold
    and Dice in the titles) into ``output_dir``.
    """
    from ..datasets import load_demo_mslub

    data = load_demo_mslub()
    subjects = list(data.subjects)
    targets = [output_dir / "demo.png"]
    for subject in subjects:
        targets += [
            output_dir / f"{subject}_anomaly_map.nii.gz",
            output_dir / f"{subject}_mask.nii.gz",
        ]
    if output_dir.exists() and not output_dir.is_dir():
        raise FileExistsError(f"'{output_dir}' is a file; give a folder for the demo's outputs.")
    output_dir.mkdir(parents=True, exist_ok=True)
    with folder_lock(output_dir, "demo"):
        record = OutputRecord(output_dir)
        replace = _check_targets(targets, record, overwrite)
        record.mark_pending(targets, "the embedded MSLUB patients", _IDENTITY)
        record.save()
        try:
            report = _run(output_dir, data, subjects, replace, progress)
        except BaseException:
            record.forget_missing(targets)
            record.save()
            raise
        record.mark_written(targets, "the embedded MSLUB patients", _IDENTITY)
        record.save()
    return report


def _check_targets(targets, record, overwrite):
    """Whether to replace the outputs in the way, refusing before any work
    a file anomseg did not write (as the folder's record of outputs says),
    even with ``overwrite``, and the demo's own complete outputs without
    it; those a killed demo left (still pending) are replaced."""
    from ..cohort import foreign_output_message

    present = [t for t in targets if os.path.lexists(t)]
    owners = [record.owner(t) for t in present]
    for target, owner in zip(present, owners):
        if owner is None:
            raise FileExistsError(foreign_output_message(target, record))
    if present and not overwrite and all(o["state"] == "written" for o in owners):
        raise FileExistsError(
            f"'{present[0]}' exists; pass --overwrite to replace the demo outputs."
        )
    return bool(present)


def _run(output_dir, data, subjects, overwrite, progress):
    """Score, report and write the demo's outputs."""
    from ..baselines import FlairThreshold
    from ..io import save_figure, save_niftis
    from ..metrics import dice_score, evaluate
    from ..plotting import plot_anomaly_overview
    from ..utils import check_images

    print(
        f"anomseg demo: FLAIR histogram-equalisation baseline (Meissen et al. 2021)\n"
        f"data: {len(subjects)} MS patients of MSLUB (Lesjak et al. 2017, CC-BY), "
        "embedded in anomseg.\n"
        "healthy calibration: for each patient, the lesion-free brain tissue of "
        f"the other two patients, mask threshold at healthy FPR {DEMO_MAX_FPR:g}.\n"
    )
    estimator = FlairThreshold(max_fpr=DEMO_MAX_FPR)
    maps, thresholds = leave_one_out_maps(data.images, data.masks, estimator, progress=progress)
    foreground = check_images(list(data.images)).foreground
    report = evaluate(data.masks, maps, foreground=foreground, thresholds=thresholds)
    print(report.to_table())

    predicted = [m > t[DEMO_MAX_FPR] for m, t in zip(maps, thresholds)]
    for subject, anomaly_map, mask, reference in zip(subjects, maps, predicted, data.references):
        save_niftis(  # a map and its mask appear together or not at all
            [
                (anomaly_map, reference, output_dir / f"{subject}_anomaly_map.nii.gz"),
                (mask, reference, output_dir / f"{subject}_mask.nii.gz"),
            ],
            overwrite=overwrite,
        )

    cuts = [t[DEMO_MAX_FPR] for t in thresholds]
    figure = plot_anomaly_overview(
        [np.ma.getdata(im) for im in data.images],
        maps,
        predicted,
        data.masks,
        titles=[
            f"{subject}\nDice {dice_score(truth, mask):.3f}, threshold {cut:.3g}"
            for subject, truth, mask, cut in zip(subjects, data.masks, predicted, cuts)
        ],
        threshold=cuts,
        outlines=True,
    )
    figure.suptitle(
        f"{type(estimator).__name__} (Meissen et al. 2021), mask at healthy FPR "
        f"{DEMO_MAX_FPR:g}\n(each patient's threshold calibrated on the other two)"
    )
    figure.tight_layout()
    save_figure(figure, output_dir / "demo.png", overwrite=overwrite)
    print(f"\nwrote {output_dir / 'demo.png'} and NIfTI maps and masks to {output_dir}/")
    return report


def cmd_demo(args):
    run_demo(Path(args.output), overwrite=args.overwrite, progress=args.progress)


def add_parser(commands):
    """The command's options, as a subparser of ``commands``."""
    demo = add_command(
        commands,
        "demo",
        "Run the FLAIR baseline on the embedded MS data (3 patients, "
        "CC-BY): print the metric table and write a figure and NIfTI maps.",
        cmd_demo,
    )
    demo.add_argument(
        "-o",
        "--output",
        default="anomseg_demo_output",
        metavar="OUTDIR",
        help="Output folder (default: ./anomseg_demo_output).",
    )
    demo.add_argument("--overwrite", action="store_true", help="Replace existing outputs.")
