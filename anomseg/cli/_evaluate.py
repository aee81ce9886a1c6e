"""``anomseg evaluate``: the metric table of a model against truth masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._common import (
    CommandError,
    _channel_names,
    _check_channels,
    _check_headers,
    _load_model,
    _load_scans,
    _output_file,
    _pair_truths,
    _progress,
    _say,
    _scored,
)
from ._parser import MODEL_SCANS_HELP, _add_budget_option, _add_model_options, add_command


def cmd_evaluate(args):
    from ..cohort import channel_axis
    from ..io import same_grid
    from ..metrics import evaluate

    if len(args.scans) != len(args.truth):
        raise CommandError(
            f"got {len(args.scans)} scan(s) but {len(args.truth)} --truth "
            "mask(s); give one mask per scan, in the same order."
        )
    args.truth = _pair_truths(args.scans, args.truth, "evaluate")
    output = _report_path(args)
    # The model first: its channel axis says how to read the scans' headers.
    model, metadata = _load_model(
        args.model,
        args.foreground,
        args.trust_pickle,
        "evaluate",
        args.allow_unchecked,
        args.device,
    )
    channels = _channel_names(metadata, args.scans)
    references = _check_headers(args.scans, False, channel_axis(model), channels)
    _check_channels(args.scans, model, channels)
    truth_references = _check_headers(args.truth, unique=False)
    for scan, truth, reference, truth_reference in zip(
        args.scans, args.truth, references, truth_references
    ):
        if not same_grid(reference, truth_reference):
            raise CommandError(
                f"mask '{truth}' is not on the grid of scan '{scan}' (shape "
                f"{truth_reference.shape} vs {reference.shape}, or another affine); "
                "resample it onto the scan."
            )
    images, _ = _load_scans(args.scans, args.progress, "loading", channel_axis(model), channels)
    truths = [_read_truth(path) for path in args.truth]
    # masked outside the voxels the model scored (and calibrated on)
    maps = []
    for path, image, reference in zip(
        args.scans, _progress(images, "scoring", args.progress), references
    ):
        maps.append(_scored(model, path, image, reference, metadata, "evaluate", masked=True))
    final = model[-1]
    report = evaluate(
        truths,
        maps,
        thresholds=final.calibration_thresholds_,
        postprocess=final.postprocess_mask,  # Dice of the masks predict writes
        names=[f"--truth '{truth}' (of '{scan}')" for scan, truth in zip(args.scans, args.truth)],
        lesion_fpr=float(final.max_fpr),  # lesion-wise figures of the masks predict writes
        voxel_volume=[_voxel_volume(reference) for reference in references],
    )
    for scan, truth, mask in zip(args.scans, args.truth, truths):
        if not mask.any():  # a healthy control, or the wrong file
            _say(
                "evaluate",
                "warning",
                f"--truth '{truth}' (of '{scan}') holds no lesion voxel: it counts in the "
                "pooled rows only, as healthy voxels, and not in the per-volume rows.",
            )
    print(f"{len(images)} scan(s), foreground voxels only; model {args.model}")
    print(report.to_table())
    if output is not None:
        _write_report(output, report, args, overwrite=args.overwrite)
        print(f"wrote {output}")


def _report_path(args):
    """The ``--output`` file of evaluate, checked before any work."""
    if args.output is None:
        return None
    if Path(args.output).suffix.lower() not in (".json", ".csv"):
        raise CommandError(f"--output '{args.output}' must end in .json or .csv.")
    inputs = [args.model, *args.scans, *args.truth]
    return _output_file(args.output, "--output", "the file", args.overwrite, inputs)


def _write_report(path, report, args, overwrite):
    """The report as JSON (``pooled`` and ``per_volume`` rows, and one
    record per scan) or CSV (one row per scan, then the pooled and the mean
    rows), written atomically."""
    import csv
    import io
    import json

    from ..io import atomic_write

    scans = [
        {"scan": str(scan), "truth": str(truth), **record}
        for scan, truth, record in zip(args.scans, args.truth, report.volume_records())
    ]
    if path.suffix.lower() == ".json":
        content = {
            "model": str(args.model),
            "pooled": [r for r in report.to_records() if r["aggregation"] == "pooled"],
            "per_volume": [r for r in report.to_records() if r["aggregation"] == "per-volume"],
            "scans": scans,
        }
        text = json.dumps(content, indent=1, allow_nan=True) + "\n"
    else:
        names = [
            f"{r.metric} [{r.threshold}]" for r in report.results if r.aggregation == "pooled"
        ]
        rows = [*scans]
        for aggregation in ("pooled", "per-volume"):
            values = {
                f"{r.metric} [{r.threshold}]": r.value
                for r in report.results
                if r.aggregation == aggregation
            }
            rows.append({"scan": aggregation, **values})
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, ["scan", "truth", "volume", "has_lesion", *names])
        writer.writeheader()
        writer.writerows(rows)
        text = buffer.getvalue()
    atomic_write(path, lambda tmp: Path(tmp).write_text(text), overwrite=overwrite)


#: Millimetres per unit of a NIfTI header's ``xyzt_units`` (unknown: mm).
_MM_PER_UNIT = {"meter": 1000.0, "micron": 0.001}


def _voxel_volume(reference):
    """The volume of a scan's voxel in mL, from its header's voxel sizes."""
    header = reference.header
    mm = _MM_PER_UNIT.get(header.get_xyzt_units()[0], 1.0)
    return float(np.prod(np.asarray(header.get_zooms()[:3], dtype=float) * mm)) / 1000


def _read_truth(path):
    """A ground-truth mask, which must hold 0 and 1 only."""
    from ..io import load_mask

    try:
        return load_mask(path)[0]
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def add_parser(commands):
    """The command's options, as a subparser of ``commands``."""
    evaluate = add_command(
        commands,
        "evaluate",
        "Print the metric table of a model against ground-truth masks.",
        cmd_evaluate,
    )
    evaluate.add_argument("model", metavar="MODEL")
    evaluate.add_argument("scans", nargs="+", metavar="SCAN.nii.gz", help=MODEL_SCANS_HELP)
    evaluate.add_argument(
        "--truth",
        nargs="+",
        required=True,
        metavar="MASK.nii.gz",
        help="Ground-truth masks of 0 and 1, one per scan, in the same order, "
        "on the scans' grids.",
    )
    evaluate.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="Also write the figures, lesion-wise ones included, to FILE: .json "
        "(pooled and per-volume rows, and every scan's own figures) or .csv (a row "
        "per scan, then the pooled and per-volume rows); written atomically.",
    )
    evaluate.add_argument(
        "--overwrite", action="store_true", help="Replace the --output file if it exists."
    )
    _add_model_options(evaluate)
    _add_budget_option(evaluate)
