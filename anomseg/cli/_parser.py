"""The command line's option types and the options that several commands
share."""

from __future__ import annotations

import argparse
import ast
import contextlib

from ..persistence._registry import METHODS
from ..utils._param_validation import MAX_SMOOTHING


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, pointing to ``--help``, rather than the
    usage block followed by the error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def add_command(commands, name, help_text, func):
    """A subparser of ``commands`` for command ``name``, run by ``func``,
    with the option every command has."""
    sub = commands.add_parser(name, help=help_text, description=help_text)
    sub.set_defaults(func=func)
    sub.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="Do not show progress bars, nor the method's own progress "
        "(training epochs, searches, restoration batches).",
    )
    return sub


def _parse_param(text):
    """``KEY=VALUE`` or ``METHOD:KEY=VALUE`` as ``(method or None, key,
    value)``, the value read as a Python literal if it is one."""
    key, sep, value = text.partition("=")
    method, colon, name = key.rpartition(":")
    if not sep or not name.isidentifier() or (colon and method not in METHODS):
        raise argparse.ArgumentTypeError(
            f"expected KEY=VALUE (or METHOD:KEY=VALUE for one method of an ensemble), "
            f"such as n_bins=128; got {text!r}"
        )
    with contextlib.suppress(ValueError, SyntaxError):  # else a string: device=cuda
        value = ast.literal_eval(value)
    return method or None, name, value


def _int_option(option, least, allow=(), most=None):
    """An argparse type: an int >= ``least`` (and <= ``most``, if given; or
    one of ``allow``), or a usage error naming ``option``."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        outside = value is not None and (value < least or (most is not None and value > most))
        if value is None or (outside and value not in allow):
            also = "".join(f" or {a}" for a in allow)
            bound = f">= {least}" if most is None else f"in [{least}, {most}]"
            raise argparse.ArgumentTypeError(
                f"{option} must be an integer {bound}{also}; got {text!r}"
            )
        return value

    parse.__name__ = option
    return parse


def _sigma(text):
    """``--smoothing``: a standard deviation in (0, MAX_SMOOTHING], or one in
    [0, MAX_SMOOTHING] per axis (the constraint of every estimator's
    ``smoothing``)."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    fits = all(0 <= v <= MAX_SMOOTHING for v in values)
    single = len(values) == 1 and values[0] > 0
    if not (fits and (single or (len(values) in (2, 3) and any(values)))):
        raise argparse.ArgumentTypeError(
            f"--smoothing must be a standard deviation in (0, {MAX_SMOOTHING}] voxels, "
            f"or one in [0, {MAX_SMOOTHING}] per axis such as 2,2,1; got {text!r}"
        )
    return values[0] if single else tuple(values)


def _sigma_text(sigma):
    return ",".join(f"{v:g}" for v in (sigma if isinstance(sigma, tuple) else (sigma,)))


def _non_negative_int(option):
    return _int_option(option, 0)


def _positive_int(option, allow=()):
    return _int_option(option, 1, allow)


_BRAIN_HELP = (
    "'brain', the brain found by the deepbet network (BrainExtractor; "
    "needs pip install 'anomseg[brain]') for 3D scans that are not skull-stripped"
)


def _add_foreground_option(parser):
    parser.add_argument(
        "--foreground",
        choices=("nonzero", "auto", "brain"),
        default="nonzero",
        help="How the brain/head is found: 'nonzero' voxels (skull-stripped "
        "scans, the default), 'auto', a head mask derived from intensity "
        f"for scans that are not skull-stripped, or {_BRAIN_HELP}. Only "
        "foreground voxels are calibrated and evaluated, and the model "
        "applies the same step to the scans it predicts.",
    )


#: The help of the scans that a model reads, for a multi-channel model.
MODEL_SCANS_HELP = (
    "The scans: 3D NIfTI files; for a model fitted with --param channel_axis=-1, 4D "
    "files whose fourth axis holds its channels; for one fitted with --channels, a "
    "path template per scan in which {channel} stands for each channel's name, such "
    "as 'p01_{channel}.nii.gz' (or a 4D file of its channels, in their order)."
)


def _add_scan_arguments(parser, help=None):
    """The scans of a command: paths, and ``--list`` files of paths (read by
    :func:`_scan_paths`)."""
    parser.add_argument("scans", nargs="*", metavar="SCAN.nii.gz", help=help)
    parser.add_argument(
        "--list",
        action="append",
        metavar="FILE",
        help="A text file of scan paths, one per line (relative to the working "
        "folder; blank lines and # comments skipped), for cohorts too large for "
        "a command line; repeatable, and added after SCAN arguments.",
    )
    parser.add_argument(
        "--glob",
        action="append",
        metavar="PATTERN",
        help="Scans matching a pattern, with ** for any folders, such as "
        "'bids/sub-*/anat/*_FLAIR.nii.gz' or 'cohort/**/*.nii.gz' (quote it, so "
        "that the shell does not expand it); repeatable, added after --list, "
        "each pattern's matches in sorted order.",
    )


def _add_budget_option(parser):
    parser.add_argument(
        "--max-voxels",
        type=_positive_int("--max-voxels"),
        default=None,
        metavar="N",
        help="The most voxels a scan or mask may declare in its header, and a scan "
        "may have once resampled to --spacing (or to the model's) (default "
        "2^28 = 268,435,456, 1 GiB as float32, or the environment variable "
        "ANOMSEG_MAX_VOXELS): a larger one is refused before its voxels are read, "
        "or resampled, as a corrupt header would otherwise exhaust memory.",
    )


def _add_model_options(parser):
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default=None,
        help="Where the model's networks run: 'cuda' (a GPU), 'cpu', or 'auto' (a GPU "
        "if torch finds one). By default, where they were trained (the CPU if that was "
        "a GPU and none is here). Models without a network ignore it.",
    )
    parser.add_argument(
        "--foreground",
        choices=("model", "brain"),
        default="model",
        help="How the brain/head is found: as the model was fitted ('model', "
        f"the default), or {_BRAIN_HELP}, first, before the model's own steps "
        "(for a model fitted on skull-stripped scans, for instance). Only "
        "foreground voxels are scored.",
    )
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="Read MODEL even if it is a pickle (written by 'anomseg fit' "
        "before version 0.2, or by save(format='pickle')). Loading a pickle "
        "runs any code it holds: pass this only for files you wrote or whose "
        "source you trust.",
    )
    parser.add_argument(
        "--allow-unchecked",
        action="store_true",
        help="Read MODEL even if it is a safe file of format 1 (written by "
        "anomseg 0.1), which has no checksum, so that a damaged or altered "
        "one cannot be told from a whole one: pass this only for files whose "
        "source you trust, and save the model again to give it a checksum.",
    )
