"""``anomseg calibrate``: calibrate a model's threshold again, on healthy
scans of another site, without training it again."""

from __future__ import annotations

import datetime
import hashlib
import os
import shlex
import sys

from .._version import __version__
from ..io._scans import channel_files
from ..utils._param_validation import InvalidParameterError
from ._common import (
    CommandError,
    _as_options,
    _channel_names,
    _check_channels,
    _check_headers,
    _load_model,
    _output_file,
    _scan_paths,
)
from ._fit import _add_exclusion_options, _excluded_text, _exclusion
from ._parser import (
    MODEL_SCANS_HELP,
    _add_budget_option,
    _add_model_options,
    _add_scan_arguments,
    add_command,
)


def cmd_calibrate(args):
    from ..cohort import channel_axis
    from ..persistence._models import calibration_record

    scans = _scan_paths(args)
    if not os.path.isfile(args.model):
        raise CommandError(f"MODEL '{args.model}' is not a file; give a model file to calibrate.")
    if os.path.lexists(args.output) and os.path.samefile(args.output, args.model):
        raise CommandError(
            f"-o '{args.output}' is MODEL; write the calibrated model to another file "
            "(the model file is never replaced)."
        )
    inputs = [args.model, *scans, *(args.exclude or [])]
    output = _output_file(args.output, "-o", "the calibrated model", args.overwrite, inputs)
    model, metadata = _load_model(
        args.model,
        args.foreground,
        args.trust_pickle,
        "calibrate",
        args.allow_unchecked,
        args.device,
    )
    channels = _channel_names(metadata, scans)
    references = _check_headers(scans, True, channel_axis(model), channels)
    _check_channels(scans, model, channels)
    args.healthy = scans  # the names _exclusion reads, as fit's options
    exclusion = _exclusion(args, references)
    final = model[-1]
    history = list(metadata.get("calibrations") or [_fit_record(final, metadata)])
    if args.max_fpr is not None:  # calibrate() records it as the new one
        try:
            final.set_params(max_fpr=args.max_fpr).check_params()
        except InvalidParameterError as exc:
            raise CommandError(_as_options(str(exc), {"max_fpr": "--max-fpr"})) from None
    print(f"calibrating on {len(scans)} healthy scan(s)...", file=sys.stderr)
    model.calibrate([channel_files(scan, channels) for scan in scans], exclude=exclusion)
    record = {
        "by": "calibrate",
        "command": _command_line(args, scans),
        "anomseg_version": __version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "n_scans": len(scans),
        "scans": [os.path.basename(scan) for scan in scans],
        "scans_sha256": [_digest(channel_files(scan, channels)) for scan in scans],
        **calibration_record(model),
    }
    if exclusion is not None:
        record["excluded"] = _excluded_text(args)
    metadata = {**metadata, "calibrations": [*history, record]}
    saved = final if len(model.steps) == 1 else model
    saved.save(output, overwrite=args.overwrite, metadata=metadata)
    print(
        f"saved {output}: threshold {final.threshold_:.4g} at healthy FPR "
        f"{final.max_fpr:g} (achieved {final.calibration_fpr_:.4f} on "
        f"{final.n_calibration_pixels_} calibration voxels of {len(scans)} scan(s)); "
        f"it was {history[-1]['threshold']:.4g} at FPR {history[-1]['max_fpr']:g}"
    )


def _fit_record(final, metadata):
    """The calibration that ``fit`` made, for a model calibrated for the
    first time since: its values from the model itself, the rest from what
    ``fit`` recorded."""
    from ..persistence._models import calibration_record

    record = {"by": "fit", "command": metadata.get("written_by")}
    record["n_scans"] = metadata.get("n_healthy_scans")
    return {**record, **calibration_record(final)}


def _command_line(args, scans):
    """The command as a user would type it again, scans listed."""
    words = ["anomseg", "calibrate", args.model, *scans, "-o", args.output]
    if args.max_fpr is not None:
        words += ["--max-fpr", f"{args.max_fpr:g}"]
    if args.exclude:
        words += ["--exclude", *args.exclude]
    if args.exclude_margin:
        words += ["--exclude-margin", str(args.exclude_margin)]
    if args.exclude_slices:
        words.append("--exclude-slices")
    if args.foreground != "model":
        words += ["--foreground", args.foreground]
    return shlex.join(map(str, words))


def _digest(scan):
    """The SHA-256 of a scan's file, or of its channel files in turn."""
    digest = hashlib.sha256()
    for path in scan if isinstance(scan, tuple) else [scan]:
        with open(path, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def add_parser(commands):
    """The command's options, as a subparser of ``commands``."""
    calibrate = add_command(
        commands,
        "calibrate",
        "Calibrate a model's threshold again on healthy scans of a new site (another "
        "scanner or protocol), without training it again, and write the result to a "
        "new model file; 'anomseg info' shows the calibrations it has had.",
        cmd_calibrate,
    )
    calibrate.add_argument("model", metavar="MODEL", help="A model written by 'anomseg fit'.")
    _add_scan_arguments(calibrate, MODEL_SCANS_HELP)
    calibrate.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="NEW.anomseg",
        help="The calibrated model file to write (never MODEL itself).",
    )
    calibrate.add_argument(
        "--max-fpr",
        type=float,
        default=None,
        metavar="RATE",
        help="The healthy false-positive rate to calibrate at, in (0, 1) (default: the model's).",
    )
    _add_exclusion_options(calibrate, used="not calibrated on")
    _add_model_options(calibrate)
    calibrate.add_argument("--overwrite", action="store_true", help="Replace an existing -o file.")
    _add_budget_option(calibrate)
