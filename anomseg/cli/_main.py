"""The ``anomseg`` command line: fit, predict, evaluate, info, brain-extract
and demo.

What a user of the command line can rely on:

* **Model files run no code.** ``fit`` writes the safe format, and
  ``predict``, ``evaluate`` and ``info`` read it; a pickle is read only with
  ``--trust-pickle``, with a warning, and a safe file of format 1 (anomseg
  0.1, no checksum) only with ``--allow-unchecked``. Every value a model
  file holds is checked before use, and ``info`` escapes what it prints.
* **Outputs are whole or absent.** Each scan's map and mask are written to
  temporary files, flushed to disk and moved into place together; SIGINT
  and SIGTERM (``kill``, ``timeout``, job schedulers) remove the temporary
  files of the scan in progress, and the scans already finished stay. A run
  killed outright (SIGKILL, a power loss) may leave temporary files, named
  with its process id, and a map without its mask: the next run removes the
  former and redoes the latter, without ``--overwrite`` (the output folder's
  ``anomseg-outputs.json`` records what anomseg wrote there); the next
  ``fit`` removes the scratch folders of a killed ``fit``.
* **A user's file is never replaced.** ``predict`` writes over no file that
  its record of outputs does not list, even with ``--overwrite``; the
  outputs it listed and its summary are left out of ``--glob`` and
  ``--list``; a rerun with another model refuses, or redoes the scans with
  ``--overwrite``; two runs on one output folder do not mix: the second
  refuses at once. A full disk stops the run with one line naming the path
  and the bytes needed, leaving no partial output.
* **Inputs are checked before any work**: every scan's header, the output
  names (clashes), the model file. A scan that fails while it is scored
  (unreadable voxels, say) does not stop the others: ``predict`` finishes
  every good scan, reporting each bad one in one line, and exits with
  status 1. Rerun it to retry them: scans whose outputs are complete are
  skipped.
* **Every error is one line** naming the file or option and what is wrong;
  ``ANOMSEG_DEBUG=1`` shows the traceback of unexpected ones. Warnings are
  one line too, such as a scan that looks unlike the model's healthy data.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import difflib
import functools
import glob
import os
import re
import select
import signal
import sys
import threading
import warnings
from pathlib import Path

from .._version import __version__
from ..cohort import (
    complete,
    earlier_outputs,
    file_identity,
    plan_outputs,
    read_scan,
    score_scan,
    stem,
    warn_large_scans,
)
from ..exceptions import AnomsegWarning
from ..io._atomic import remove_stale_temporaries
from ..persistence._registry import METHODS, PRESETS, method_class
from ..utils._param_validation import MAX_RADIUS, MAX_SMOOTHING
from ..utils._text import printable

__all__ = ["main"]

DESCRIPTION = """\
Unsupervised anomaly segmentation of brain MRI.

Train a model on healthy scans only, then get a voxel-wise anomaly map and a
binary lesion mask for new scans. The mask threshold is calibrated on healthy
data at a chosen false-positive rate.

  anomseg demo                                 # try it on the embedded data
  anomseg fit --method flair-threshold healthy/*.nii.gz -o model.anomseg
  anomseg fit --method ascnet healthy/*.nii.gz --unlabelled scans/*.nii.gz -o m.anomseg
  anomseg fit --method inpainting-predictor healthy/*.nii.gz -o fast.anomseg
  anomseg info model.anomseg                   # what a model file holds
  anomseg predict model.anomseg scans/*.nii.gz -o results/
  anomseg evaluate model.anomseg scans/*.nii.gz --truth masks/*.nii.gz
  anomseg fit --method flair-threshold --foreground brain heads/*.nii.gz -o m.anomseg
  anomseg brain-extract heads/*.nii.gz -o brains/   # brain masks, as NIfTI

Model files are written in a safe format that runs no code when read.
Outputs appear whole or not at all; a rerun skips scans already done.

Run 'anomseg COMMAND --help' for the options of a command.
"""


#: A volume to fit steps that learn nothing from images on.
_TINY_VOLUME = [[[1.0]]]


class CommandError(Exception):
    """A user error, reported in one line without a traceback."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as an exception so that cleanup code runs as it does
    for SIGINT."""


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, pointing to ``--help``, rather than the
    usage block followed by the error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


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


def _progress(iterable, description, enabled, total=None):
    from tqdm.auto import tqdm

    return tqdm(
        iterable,
        desc=description,
        total=total,
        disable=not enabled,
        unit="scan",
        leave=False,
        file=sys.stderr,
    )


@contextlib.contextmanager
def _reporting(estimator, enabled):
    """With progress on, the method reports its own long work (training
    epochs, the TV weight search, restoration batches, with the time left)
    on stderr, through its ``verbose``; its ``verbose`` is restored after,
    so the saved model does not print."""
    params = estimator.get_params(deep=False)
    if not enabled or "verbose" not in params or params["verbose"]:
        yield
        return
    estimator.set_params(verbose=1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        estimator.set_params(verbose=params["verbose"])


def _say(command, kind, message):
    print(f"anomseg {command}: {kind}: {message}", file=sys.stderr)


# -- scans -----------------------------------------------------------------------
def _check_headers(paths, unique=True):
    """Every scan's grid, read from its header, before any work: a missing,
    foreign, 2D or 4D file (or, with ``unique``, one given twice) stops the
    command at once."""
    from ..io import load_nifti_reference

    seen = {}
    for path in paths:
        key = file_identity(path)
        if key in seen:
            also = f" (as '{seen[key]}' too)" if str(seen[key]) != str(path) else ""
            if unique:
                raise CommandError(f"'{path}' is given twice{also}.")
            warnings.warn(
                f"'{path}' is given twice{also}: it counts twice.", AnomsegWarning, stacklevel=2
            )
        seen.setdefault(key, path)
    references = [load_nifti_reference(path) for path in paths]
    warn_large_scans(paths, references)
    return references


def _load_scans(paths, progress, description="loading"):
    loaded = [read_scan(path) for path in _progress(paths, description, progress)]
    return [image for image, _ in loaded], [reference for _, reference in loaded]


def _voxel_sizes(references):
    # zooms are float32: 1.2 would read 1.2000000476837158
    return [[round(float(z), 6) for z in ref.header.get_zooms()[:3]] for ref in references]


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


def _add_scan_arguments(parser):
    """The scans of a command: paths, and ``--list`` files of paths (read by
    :func:`_scan_paths`)."""
    parser.add_argument("scans", nargs="*", metavar="SCAN.nii.gz")
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
        help="The most voxels a scan or mask may declare in its header (default "
        "2^28 = 268,435,456, 1 GiB as float32, or the environment variable "
        "ANOMSEG_MAX_VOXELS): a larger one is refused before its voxels are read, "
        "as a corrupt header would otherwise exhaust memory.",
    )


@contextlib.contextmanager
def _voxel_budget(max_voxels):
    """``--max-voxels`` as ``ANOMSEG_MAX_VOXELS`` while the command runs, so
    that every reader, and the worker processes it starts, see it."""
    from ..io._nifti import MAX_VOXELS_VARIABLE

    if max_voxels is None:
        yield
        return
    previous = os.environ.get(MAX_VOXELS_VARIABLE)
    os.environ[MAX_VOXELS_VARIABLE] = str(max_voxels)
    try:
        yield
    finally:
        if previous is None:
            del os.environ[MAX_VOXELS_VARIABLE]
        else:
            os.environ[MAX_VOXELS_VARIABLE] = previous


def _add_model_options(parser):
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


def _given_folder(output):
    """Refuse ``-o ''``, which would write into the working folder; remove
    the temporary files that killed runs left in the folder (first, so that
    a run that refuses leaves none either)."""
    if not output:
        raise CommandError("-o is empty; give the output folder ('-o .' for the working folder).")
    remove_stale_temporaries(output)


def _output_folder(output):
    """``output`` as an existing folder, created if need be."""
    _given_folder(output)
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise CommandError(f"output folder '{output}' is a file.")
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CommandError(
            f"cannot create the output folder '{output}': {exc.strerror}."
        ) from None
    return output


# -- models ----------------------------------------------------------------------
#: The defaults of the options that a preset sets.
_PRESET_OPTIONS = {"ensemble": 1, "smoothing": None, "max_fpr": 0.05}


def _apply_preset(args):
    """A ``--method`` that names a preset becomes its methods and options;
    options given on the command line win. Then the options' defaults."""
    presets = [m for m in args.method if m in PRESETS]
    if presets and len(args.method) > 1:
        raise CommandError(f"--method {presets[0]} is a preset of several methods; give it alone.")
    if presets:
        preset = PRESETS[presets[0]]
        args.preset = presets[0]
        args.method = list(preset.methods)
        for option in _PRESET_OPTIONS:
            if getattr(args, option) is None:
                setattr(args, option, getattr(preset, option))
    for option, default in _PRESET_OPTIONS.items():
        if getattr(args, option) is None:
            setattr(args, option, default)


def _fit_estimator(args):
    """The estimator that ``fit`` trains: the one method's, or, with
    several ``--method`` or ``--ensemble N``, an AnomalyEnsemble of them
    (N seeds of each method that has a random_state). ``--param KEY=VALUE``
    goes to every member (and to the ensemble) that has KEY,
    ``METHOD:KEY=VALUE`` to that method's members only."""
    from ..ensemble import AnomalyEnsemble
    from ..ensemble._ensemble import seed_members

    _apply_preset(args)  # done already by cmd_fit; idempotent
    _check_params_once(args.param)
    if len(set(args.method)) < len(args.method):
        raise CommandError(
            "give each --method once; --ensemble N trains N seeds of each learned method."
        )
    for method, name, _ in args.param:
        if method is not None and method not in args.method:
            raise CommandError(
                f"--param {method}:{name}=... names a method not given by --method."
            )
    shared = {"max_fpr": args.max_fpr}
    own = {"postprocessing": _postprocessing(args), "smoothing": args.smoothing}
    single = len(args.method) == 1 and args.ensemble == 1
    if single:
        if args.n_jobs not in (None, 1):
            raise CommandError(
                "--n-jobs trains the members of an ensemble at once; give several "
                "--method or --ensemble N."
            )
        params = {name: value for _, name, value in args.param}
        return _estimator(args.method[0], {**params, **shared, **own})
    ensemble_params = set(AnomalyEnsemble([]).get_params(deep=False)) - {"estimators"}
    used, members = set(), []
    for stream, method in enumerate(args.method):
        names = set(method_class(method)().get_params(deep=False))
        params = {}
        for target, name, value in args.param:
            if target in (None, method) and name.split("__")[0] in names:
                params[name] = value
                used.add((target, name))
        member = _estimator(method, {**params, **shared})
        label = method.replace("-", "_")
        if args.ensemble > 1 and "random_state" in names:
            members += seed_members(member, args.ensemble, member.random_state, label, stream)
        else:
            members.append((label, member))
    ensemble = {name: value for target, name, value in args.param if name in ensemble_params}
    used |= {(target, name) for target, name, _ in args.param if name in ensemble_params}
    unused = [(t, n) for t, n, _ in args.param if (t, n) not in used]
    if unused:
        target, name = unused[0]
        valid = ensemble_params.union(
            *(method_class(m)().get_params(deep=False) for m in args.method if target in (None, m))
        )
        raise CommandError(
            f"--param {f'{target}:{name}' if target else name}: no method given (nor "
            f"the ensemble) has such a parameter{_closest(name, valid)}"
        )
    try:
        return AnomalyEnsemble(
            members, n_jobs=args.n_jobs, **{**ensemble, **shared, **own}
        ).check_params()
    except TypeError as exc:
        raise CommandError(f"bad --param for the ensemble: {exc}") from None


def _check_params_once(params):
    """Refuse a ``--param`` given twice, which would otherwise have the last
    one win without a word."""
    seen = {}
    for target, name, value in params:
        if (target, name) in seen:
            label = f"{target}:{name}" if target else name
            raise CommandError(
                f"--param {label} is given twice ({label}={seen[target, name]!r}, then "
                f"{label}={value!r}); give each parameter once."
            )
        seen[target, name] = value


def _closest(name, valid):
    """The end of a message about an unknown parameter ``name``: the
    closest of the ``valid`` names, and all of them."""
    close = difflib.get_close_matches(name, sorted(valid), n=1)
    hint = f"; did you mean {close[0]}?" if close else "."
    return f"{hint} Valid names: {', '.join(sorted(valid))}."


def _check_names(method, params, prefix=""):
    """Refuse parameters that ``method``'s estimator does not have, naming
    the closest valid one (rather than Python's TypeError)."""
    valid = set(method_class(method)().get_params(deep=False))
    valid |= {f"{name}__..." for name in METHODS[method].nested}
    for key in params:
        if key not in valid:
            raise CommandError(
                f"--param {prefix}{key}: {method} has no such parameter"
                f"{_closest(prefix + key, {prefix + v for v in valid})}"
            )


def _estimator(method, params):
    """The estimator of ``method`` with ``params`` (``NAME__KEY`` ones go to
    the nested estimators the registry names), its parameters checked."""
    nested = {}
    for name, nested_method in METHODS[method].nested.items():
        prefix = f"{name}__"
        own = {k[len(prefix) :]: params.pop(k) for k in list(params) if k.startswith(prefix)}
        _check_names(nested_method, own, prefix)
        try:
            nested[name] = method_class(nested_method)(**own).check_params()
        except TypeError as exc:
            raise CommandError(f"bad --param {prefix}... for {method}: {exc}") from None
    _check_names(method, params)
    try:
        return method_class(method)(**params, **nested).check_params()
    except TypeError as exc:
        raise CommandError(f"bad --param for {method}: {exc}") from None


def _load_model(
    path, foreground="model", trust_pickle=False, command="predict", allow_unchecked=False
):
    """The model file's estimator or pipeline, as an AnomalyPipeline (of one
    step for a bare estimator), so that every command treats both alike,
    and the metadata its writer stored; with ``foreground="brain"``, a
    BrainExtractor goes first unless the model starts with one."""
    from sklearn.pipeline import Pipeline

    from ..persistence import load_model, model_info
    from ..persistence._format import check_file, file_kind
    from ..preprocessing import AnomalyPipeline, BrainExtractor

    path = check_file(path)
    kind = file_kind(path)
    if kind == "pickle" and not trust_pickle:
        raise CommandError(
            f"'{path}' is a pickle, and loading a pickle runs any code it holds; "
            "pass --trust-pickle only if you wrote it or trust its source, or "
            "refit the model (anomseg fit writes safe files)."
        )
    if kind == "safe":
        try:
            model = load_model(path, allow_unchecked=allow_unchecked)
        except ValueError as exc:
            if "allow_unchecked=True" not in str(exc):
                raise
            raise CommandError(
                f"'{path}' is a safe file of format 1 (anomseg 0.1), which has no "
                "checksum, so a damaged or altered one cannot be told from a whole "
                "one; pass --allow-unchecked only if you trust its source."
            ) from None
        info = model_info(path)
        if info["checksum"] is None:
            _say(command, "warning", f"'{path}' has no checksum (format 1); read as asked.")
        metadata = info["metadata"]
    elif kind == "pickle":
        _say(command, "warning", f"loading the pickle '{path}', which may run any code it holds.")
        model, metadata = load_model(path, allow_pickle=True), {}
    else:
        raise CommandError(f"'{path}' is not an anomseg model file (neither safe nor a pickle).")
    bare = not isinstance(model, Pipeline)
    steps = [(type(model).__name__.lower(), model)] if bare else model.steps
    if foreground == "brain" and not isinstance(steps[0][1], BrainExtractor):
        # Fitting it only validates its parameters: it learns nothing.
        extractor = BrainExtractor().fit([_TINY_VOLUME])
        steps = [("brainextractor", extractor), *steps]
    if isinstance(model, AnomalyPipeline) and len(steps) == len(model.steps):
        return model, metadata
    return AnomalyPipeline(steps), metadata


def _scored(model, path, image, reference, metadata, command, masked=False):
    """The anomaly map of one scan (masked outside the voxels scored, with
    ``masked``), with its warnings said in one line each."""
    anomaly_map, notes = score_scan(model, path, image, reference, metadata, masked=masked)
    for note in notes:
        _say(command, "warning", _plain(note))
    return anomaly_map


def _plain(message):
    """A library message as the command line says it: without the
    ``[Class.method]`` prefix, and with its options for the API's
    arguments."""
    text = re.sub(r"^\[[^\]]*\] ", "", str(message).strip().splitlines()[0])
    return (
        text.replace("pass overwrite=True", "pass --overwrite")
        .replace("pass summary=None", "pass --no-summary")
        .replace("The 'summary' file", "--summary")
        .replace("overwrite=True", "--overwrite")
        .replace("'exclude'", "--exclude")
    )


def _as_options(text):
    """A parameter error in the command line's words: "The 'margin'
    parameter of BrainExtractor" becomes "--margin"."""
    return re.sub(
        r"The '(\w+)' parameter of \w+", lambda m: "--" + m.group(1).replace("_", "-"), text
    )


# -- commands ------------------------------------------------------------------
def cmd_fit(args):
    from sklearn.utils import get_tags

    from ..distributed import is_main_process, process_group
    from ..preprocessing import make_anomaly_pipeline

    for _, name, _ in args.param:
        for own, option in (
            ("max_fpr", "--max-fpr"),
            ("postprocessing", "--min-size"),
            ("smoothing", "--smoothing"),
        ):
            if name == own:
                raise CommandError(f"set {name} with {option}, not --param.")
    _apply_preset(args)
    if not 0 < args.max_fpr < 1:  # NaN too
        message = f"--max-fpr must be a false-positive rate in (0, 1); got {args.max_fpr}."
        raise CommandError(message)
    estimator = _fit_estimator(args)
    methods = " and ".join(args.method)
    tags = get_tags(estimator).anomaly_tags
    if args.unlabelled and not tags.learns_from_unlabelled:
        takers = [
            m for m in METHODS if get_tags(method_class(m)()).anomaly_tags.learns_from_unlabelled
        ]
        raise CommandError(
            f"--unlabelled is for {', '.join(takers)}; {methods} learn(s) from healthy scans only."
        )
    inputs = [*args.healthy, *args.unlabelled, *(args.exclude or [])]
    output = _output_file(args.output, "-o", "the model file", args.overwrite, inputs)
    references = _check_headers([*args.healthy, *args.unlabelled], unique=False)
    exclusion = _exclusion(args, references)
    steps = _preprocessing_steps(args.foreground, tags.requires_scaled_input)
    model = make_anomaly_pipeline(*steps, estimator) if steps else estimator
    # Under torchrun, every process loads the scans and trains on its share
    # (see anomseg.distributed); only rank 0 reports and saves.
    with process_group(estimator.get_params().get("device", "cpu")):
        main = is_main_process()
        if not main:
            warnings.simplefilter("ignore")  # rank 0 says the same
        progress = args.progress and main
        # Paths, not arrays: the scans are read and preprocessed one at a
        # time into memory-mapped files, so memory does not grow with them.
        healthy = list(args.healthy)
        if main:
            what = (
                methods
                if len(getattr(estimator, "estimators", [])) < 2
                else (f"an ensemble of {len(estimator.estimators)} ({methods})")
            )
            print(f"fitting {what} on {len(healthy)} healthy scan(s)...", file=sys.stderr)
        if tags.learns_from_unlabelled and args.unlabelled:
            # Marked by y rather than passed apart, so that the preprocessing
            # steps of the pipeline transform them too.
            unlabelled = list(args.unlabelled)
            if main:
                print(f"  and {len(unlabelled)} unlabelled scan(s)", file=sys.stderr)
            if exclusion is not None:
                exclusion.masks += [None] * len(unlabelled)
            with _reporting(estimator, progress):
                model.fit(
                    healthy + unlabelled,
                    [0] * len(healthy) + [-1] * len(unlabelled),
                    exclude=exclusion,
                )
        else:
            with _reporting(estimator, progress):
                model.fit(healthy, exclude=exclusion)
    if not main:
        return 0
    sizes = _voxel_sizes(references[: len(args.healthy)])
    metadata = {
        "written_by": f"anomseg {__version__} fit "
        + (f"--method {args.preset} = " if getattr(args, "preset", None) else "")
        + " ".join(f"--method {m}" for m in args.method)
        + (f" --ensemble {args.ensemble}" if args.ensemble > 1 else "")
        + (f" --smoothing {_sigma_text(args.smoothing)}" if args.smoothing else "")
        + f" --max-fpr {args.max_fpr:g}",
        "modality": args.modality,
        "n_healthy_scans": len(args.healthy),
        "voxel_size": [[min(axis) for axis in zip(*sizes)], [max(axis) for axis in zip(*sizes)]],
        "foreground": args.foreground,
    }
    if exclusion is not None:
        metadata["excluded"] = (
            f"the voxels of {len(args.exclude)} lesion mask(s)"
            + (f" grown by {args.exclude_margin} voxel(s)" if args.exclude_margin else "")
            + (", widened to whole slices" if args.exclude_slices else "")
        )
    model.save(output, overwrite=args.overwrite, metadata=metadata)
    print(
        f"saved {output}: threshold {estimator.threshold_:.4g} at healthy "
        f"FPR {estimator.max_fpr:g} (achieved {estimator.calibration_fpr_:.4f} on "
        f"{estimator.n_calibration_pixels_} calibration voxels)"
    )


def _exclusion(args, references):
    """The LesionExclusion of ``--exclude`` (one mask per healthy scan, on
    its grid, checked from the headers before any work), or None."""
    from ..io import load_mask, load_nifti_reference, same_grid
    from ..utils import LesionExclusion

    if not args.exclude:
        if args.exclude_margin or args.exclude_slices:
            raise CommandError("--exclude-margin and --exclude-slices need --exclude masks.")
        return None
    if len(args.exclude) != len(args.healthy):
        raise CommandError(
            f"got {len(args.healthy)} healthy scan(s) but {len(args.exclude)} --exclude "
            "mask(s); give one mask per healthy scan, in the same order."
        )
    for scan, mask, reference in zip(args.healthy, args.exclude, references):
        if not same_grid(reference, load_nifti_reference(mask)):
            raise CommandError(
                f"--exclude mask '{mask}' is not on the grid of scan '{scan}' (shape "
                f"{load_nifti_reference(mask).shape} vs {reference.shape}, or another "
                "affine); give the masks in the order of the scans."
            )
    for mask in args.exclude:  # their voxels too, before any work
        try:
            load_mask(mask, what="--exclude mask")
        except ValueError as exc:
            raise CommandError(str(exc)) from None
    return LesionExclusion(
        list(args.exclude), margin=args.exclude_margin, whole_slices=args.exclude_slices
    )


def _postprocessing(args):
    """The mask filters of ``--opening``, ``--closing`` and ``--min-size``,
    in that order, or None."""
    from ..postprocessing import ConnectedComponentFilter, MorphologicalFilter

    steps = []
    if args.opening:
        steps.append(MorphologicalFilter("opening", args.opening))
    if args.closing:
        steps.append(MorphologicalFilter("closing", args.closing))
    if args.min_size > 1:
        steps.append(ConnectedComponentFilter(min_size=args.min_size))
    return steps or None


def _preprocessing_steps(foreground, scale):
    """The steps ``fit`` puts before the method: a head mask derived from
    intensity with ``--foreground auto``, the brain with ``--foreground
    brain``, then, for the methods that assume
    it (their ``requires_scaled_input`` tag), each scan scaled as
    :meth:`IntensityScaler.for_deep_methods` says."""
    from ..preprocessing import BrainExtractor, ForegroundMasker, IntensityScaler

    steps = {"auto": [ForegroundMasker()], "brain": [BrainExtractor()]}.get(foreground, [])
    if scale:
        steps.append(IntensityScaler.for_deep_methods())
    return steps


def _each_scan(command, planned, references, args, work, identity):
    """Run ``work(path, targets)`` on every scan that has no complete
    outputs yet, printing the line it returns; a scan that fails is
    reported in one line, and the others go on. Returns the exit status:
    1 if any scan failed.

    As :func:`~anomseg.cohort.predict_cohort` does, it holds the output
    folder's lock and keeps its record of outputs: a file anomseg did not
    write is never replaced (even with ``--overwrite``), an output left by a
    killed run is redone, and outputs made with other options
    (``identity``) are redone with ``--overwrite`` or refused."""
    from ..cohort import foreign_output_message
    from ..io._outputs import OutputRecord, folder_lock

    counts = {"done": 0, "skipped": 0, "failed": 0}
    items = list(zip(planned, references))
    output = Path(args.output)

    def failed(message):
        counts["failed"] += 1
        _say(command, "error", message)

    with folder_lock(output, command):
        record = OutputRecord(output)
        for (path, targets), reference in _progress(items, command, args.progress):
            _SIGNALS.check()
            present = [t for t in targets if os.path.lexists(t)]
            owners = [record.owner(t) for t in present]
            if None in owners:
                foreign = present[owners.index(None)]
                if args.overwrite or not complete(targets, reference):
                    failed(_plain(foreign_output_message(foreign, record)))
                else:  # complete: written before anomseg kept a record
                    counts["skipped"] += 1
                continue
            other = [o for o in owners if o.get("model") != identity]
            written = all(o.get("state") == "written" for o in owners)
            if present and not args.overwrite:
                if other:
                    failed(
                        f"'{present[0]}' was made with other options than these, as "
                        f"'{record.path}' records; pass --overwrite to redo it."
                    )
                    continue
                if written and len(present) == len(targets) and complete(targets, reference):
                    counts["skipped"] += 1
                    continue
            # ours but half-written by a killed run, or to be redone
            record.mark_pending(targets, path, identity)
            record.save()
            try:
                targets[0].parent.mkdir(parents=True, exist_ok=True)
                line = work(path, targets, bool(present))
            except Exception as exc:  # one bad scan does not stop the cohort
                failed(_message(exc, path))
                record.forget_missing(targets)
                record.save()
                continue
            record.mark_written(targets, path, identity)
            record.save()
            counts["done"] += 1
            print(line)
    _say_summary(command, counts, len(items))
    return 1 if counts["failed"] else 0


def _scan_paths(args, leave_out=frozenset()):
    """The scans given as arguments, then those listed in each ``--list``
    file (one path per line, relative to the working folder; blank lines
    and lines starting with # are skipped), then those matching each
    ``--glob`` pattern, for cohorts too large for a command line; the
    listed and matched files that anomseg wrote (whose real path is in
    ``leave_out``, the output folder's own, or that a record of outputs in
    their folder or one above lists: an earlier run's, wherever it wrote)
    are left out, saying so once."""
    sources = [("--list", listing, _listed(listing)) for listing in args.list or []]
    for pattern in getattr(args, "glob", None) or []:
        matches = sorted(glob.glob(pattern, recursive=True))
        sources.append(("--glob", pattern, [m for m in matches if os.path.isfile(m)]))
    outputs = earlier_outputs({path for _, _, paths in sources for path in paths})
    scans, left = list(args.scans), []
    for option, source, paths in sources:
        kept = []
        for path in paths:
            ours = path in outputs or os.path.realpath(path) in leave_out
            (left if ours else kept).append(path)
        if option == "--glob" and not kept:
            but = " but the outputs of an earlier run" if paths else ""
            raise CommandError(f"--glob '{source}' matches no file{but}.")
        scans += kept
    if not scans:
        raise CommandError(
            "no scans given: pass SCAN.nii.gz paths, --list FILE or --glob PATTERN."
        )
    if left:
        _say(
            args.command,
            "note",
            f"left out {len(left)} file(s) of --list/--glob that anomseg wrote (the "
            f"outputs, records and summaries of its runs), such as '{left[0]}'.",
        )
    return scans


def _listed(listing):
    """The paths that a ``--list`` file names."""
    path = Path(listing)
    if not path.is_file():
        raise CommandError(f"--list '{listing}' is not a file; give a text file of scan paths.")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CommandError(f"--list '{listing}' could not be read ({exc}).") from exc
    if b"\0" in data:  # no name holds one: a binary file (a scan, say)
        raise CommandError(
            f"--list '{listing}' could not be read as text (it holds NUL bytes); "
            "give a text file of scan paths, one per line."
        )
    # Any name a file system holds: one that is not UTF-8 comes back as
    # its own bytes (surrogate escapes), as --glob gives it.
    lines = data.decode("utf-8", errors="surrogateescape").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _model_identity(path, foreground):
    """The identity of the model that ``predict`` applies: the SHA-256 of
    its file, and the option that adds a step to it."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}" + (
        " --foreground brain" if foreground == "brain" else ""
    )


def cmd_predict(args):
    from ..cohort import cap_jobs, check_summary, own_outputs, predict_cohort, usable_cores

    _given_folder(args.output)
    check_summary(args.output, args.summary)  # before the output folder is made
    args.scans = _scan_paths(args, own_outputs(args.output, args.summary))
    if args.n_jobs is not None and args.n_jobs < 1 and args.n_jobs != -1:
        raise CommandError(
            f"--n-jobs must be a positive number or -1 (every core); got {args.n_jobs}."
        )
    if args.n_jobs is not None and args.n_jobs > 1:
        n_jobs = cap_jobs(args.n_jobs, len(args.scans))
        if n_jobs < args.n_jobs:
            _say(
                "predict",
                "note",
                f"--n-jobs {args.n_jobs} capped to {n_jobs} ({len(args.scans)} scan(s), "
                f"{usable_cores()} core(s)).",
            )
    if args.dask_scheduler is not None:
        _check_dask()
    model, metadata = _load_model(
        args.model, args.foreground, args.trust_pickle, allow_unchecked=args.allow_unchecked
    )
    model_id = _model_identity(args.model, args.foreground)
    output = _output_folder(args.output)
    counts = {"done": 0, "skipped": 0, "failed": 0}
    stdout = sys.stdout  # the method's progress goes to stderr meanwhile

    def report(record):
        counts[record["status"]] += 1
        for note in record["warnings"]:
            _say("predict", "warning", _plain(note))
        if record["status"] == "failed":
            _say("predict", "error", _plain(record["message"]))
        elif record["status"] == "done":
            print(
                f"{record['scan']}: {record['anomalous_voxels']} anomalous voxels "
                f"({record['lesion_volume_ml']:.3g} mL, {record['n_components']} "
                f"component(s)) -> {record['mask']}",
                file=stdout,
                flush=True,
            )
        _SIGNALS.check()

    # The method reports its own progress only where it runs: in this process.
    here = args.n_jobs in (None, 1) and args.dask_scheduler is None
    with _reporting(model[-1], args.progress and here):
        predict_cohort(
            model,
            args.scans,
            output,
            n_jobs=args.n_jobs,
            scheduler=args.dask_scheduler,
            keep_tree=args.keep_tree,
            overwrite=args.overwrite,
            summary=args.summary,
            metadata=metadata,
            progress=args.progress,
            callback=report,
            model_id=model_id,
        )
    _say_summary("predict", counts, len(args.scans), args.summary and output / args.summary)
    return 1 if counts["failed"] else 0


def _check_dask():
    """``--dask-scheduler`` needs Dask's distributed scheduler, an optional
    dependency: say how to install it before any work."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise CommandError(
            "--dask-scheduler needs Dask's distributed scheduler, which is not "
            "installed: pip install 'anomseg[cluster]'."
        ) from None


def _say_summary(command, counts, n_scans, summary=None):
    """The counts of a run over several scans (or with some skipped), and
    where its summary file is."""
    if n_scans > 1 or counts["skipped"]:
        line = ", ".join(f"{n} {what}" for what, n in counts.items())
        if counts["skipped"]:
            line += " (skipped: their outputs were complete already)"
        if summary:
            line += f"; per scan in {summary}"
        _say(command, "summary", line)


def cmd_evaluate(args):
    from ..io import same_grid
    from ..metrics import evaluate

    if len(args.scans) != len(args.truth):
        raise CommandError(
            f"got {len(args.scans)} scan(s) but {len(args.truth)} --truth "
            "mask(s); give one mask per scan, in the same order."
        )
    args.truth = _pair_truths(args.scans, args.truth)
    references = _check_headers(args.scans, unique=False)
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
    output = _report_path(args)
    model, metadata = _load_model(
        args.model, args.foreground, args.trust_pickle, "evaluate", args.allow_unchecked
    )
    images, _ = _load_scans(args.scans, args.progress)
    truths = [_read_truth(path) for path in args.truth]
    # masked outside the voxels the model scored (and calibrated on)
    maps = []
    for path, image, reference in zip(
        args.scans, _progress(images, "scoring", args.progress), references
    ):
        with _reporting(model[-1], args.progress):
            maps.append(_scored(model, path, image, reference, metadata, "evaluate", masked=True))
    final = model[-1]
    report = evaluate(
        truths,
        maps,
        thresholds=final.calibration_thresholds_,
        postprocess=final.postprocess_mask,  # Dice of the masks predict writes
        names=[f"--truth '{truth}' (of '{scan}')" for scan, truth in zip(args.scans, args.truth)],
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


#: Words that end the file names of masks (``a_seg.nii.gz``) or of scans
#: (``a_flair.nii.gz``), dropped to pair a scan with its truth mask by name.
_NAME_WORDS = (
    "seg|segmentation|mask|masks|truth|groundtruth|gt|label|labels|lesion|lesions|roi"
    "|manual|annotation|wmh|flair|t1|t1w|t2|t2w|t1ce|t1c|t1gd|pd|dwi|scan|image|img|brain"
)


def _name_key(path):
    """A file name without its suffix and the words that say it is a mask
    or a modality: what a scan and its truth mask have in common."""
    key = stem(path).lower()
    while True:
        shorter = re.sub(rf"[_\-.](?:{_NAME_WORDS})$", "", key)
        if shorter == key or not shorter:
            return key
        key = shorter


def _pair_truths(scans, truths):
    """The truth masks in the order of the scans: by file name when the
    names pair one to one (``a.nii.gz`` with ``a_seg.nii.gz``), saying so
    if that is not the order given; else in the order given, saying so if
    the names do not look paired."""
    if len(scans) < 2:
        return list(truths)
    scan_keys, truth_keys = [_name_key(s) for s in scans], [_name_key(t) for t in truths]
    if len(set(scan_keys)) == len(scans) and sorted(scan_keys) == sorted(truth_keys):
        by_key = dict(zip(truth_keys, truths))
        paired = [by_key[key] for key in scan_keys]
        if paired != list(truths):
            _say(
                "evaluate",
                "warning",
                "--truth masks paired with the scans by file name, not in the order "
                f"given: {_pairs(scans, paired)}.",
            )
        return paired
    if not all(key in Path(t).name.lower() for key, t in zip(scan_keys, truths)):
        _say(
            "evaluate",
            "warning",
            "the --truth file names do not pair with the scans' by name; paired in "
            f"the order given: {_pairs(scans, truths)}.",
        )
    return list(truths)


def _pairs(scans, truths, shown=3):
    pairs = [f"'{s}' with '{t}'" for s, t in zip(scans, truths)]
    return ", ".join(pairs[:shown]) + (
        f" and {len(pairs) - shown} more" if len(pairs) > shown else ""
    )


def _report_path(args):
    """The ``--output`` file of evaluate, checked before any work."""
    if args.output is None:
        return None
    if Path(args.output).suffix.lower() not in (".json", ".csv"):
        raise CommandError(f"--output '{args.output}' must end in .json or .csv.")
    inputs = [args.model, *args.scans, *args.truth]
    return _output_file(args.output, "--output", "the file", args.overwrite, inputs)


def _output_file(path, option, what, overwrite, inputs=()):
    """``path`` as a file a command may write, checked before any work:
    never one of the command's ``inputs`` nor anything but a regular file,
    even with ``--overwrite``. The temporary files that killed runs left in
    its folder are removed first, so that a run that refuses leaves none
    either (a ``fit`` killed after linking its model left one)."""
    if not str(path):
        raise CommandError(f"{option} is empty; give {what}'s path.")
    output = Path(path)
    if output.is_dir():
        raise CommandError(f"{option} '{output}' is a folder; give {what} to write.")
    if not output.parent.is_dir():
        raise CommandError(f"cannot write '{output}': folder '{output.parent}' does not exist.")
    remove_stale_temporaries(output.parent)
    if os.path.lexists(output):
        if any(_same_file(output, path) for path in inputs):
            raise CommandError(
                f"{option} '{output}' is one of the command's input files; give {what} "
                "another name (--overwrite never replaces an input)."
            )
        if not output.is_file():
            raise CommandError(
                f"{option} '{output}' exists and is not a regular file; give {what} "
                "another name (--overwrite replaces only files)."
            )
        if not overwrite:
            raise CommandError(f"'{output}' exists; pass --overwrite to replace it.")
    return output


def _same_file(a, b):
    """Whether paths ``a`` and ``b`` name the same existing file."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


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


def _read_truth(path):
    """A ground-truth mask, which must hold 0 and 1 only."""
    from ..io import load_mask

    try:
        return load_mask(path)[0]
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def cmd_info(args):
    from ..persistence import model_info
    from ..persistence._format import check_file, file_kind

    def say(line):  # text from the file never reaches the terminal raw
        print(printable(line))

    path = check_file(args.model)
    if file_kind(path) == "pickle":
        raise CommandError(
            f"'{path}' is a pickle, which cannot be read without running the code it "
            "holds; only safe files can be inspected."
        )
    info = model_info(path)  # the model's own values, checked as on load
    calibration = info["calibration"]
    if info["checksum"] is None:
        say(
            f"{path}: a safe anomseg model file with no checksum (format 1): a damaged "
            "or altered file cannot be told from a whole one; predict and evaluate "
            "read it only with --allow-unchecked"
        )
    else:
        say(f"{path}: a safe anomseg model file (format {info['format_version']}, checksum OK)")
    say(f"  written by anomseg {info['anomseg_version']}")
    say(f"  steps: {' -> '.join(info['steps'])}")
    for key, value in sorted(info["params"].items()):
        if key == "estimators" and "members" in info:
            continue
        say(f"  {info['estimator']}.{key} = {value!r}")
    for member in info.get("members", []):
        changed = ", ".join(f"{k}={v!r}" for k, v in sorted(member["params"].items()))
        say(
            f"  member {member['name']}: {member['estimator']}({changed}), "
            f"own threshold {_figure(member['threshold'])}"
        )
    healthy = calibration.pop("healthy_data", None) or {}
    for key, value in calibration.items():
        say(f"  calibration {key}: {_figure(value)}")
    for key, value in healthy.items():  # as the final estimator saw them
        say(f"  healthy data {key.replace('_', ' ')}: {_figure(value)}")
    for key, value in info["metadata"].items():
        say(f"  {key.replace('_', ' ')}: {_figure(value)}")


def _figure(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return " to ".join(map(_figure, value)) if len(value) == 2 else str(value)
    return str(value)


def cmd_brain_extract(args):
    from ..cohort import own_outputs
    from ..io import save_nifti
    from ..preprocessing import BrainExtractor

    params = {"threshold": args.threshold, "margin": args.margin, "device": args.device}
    try:  # the options, once, before any scan: fitting learns nothing here
        BrainExtractor(**params).fit([_TINY_VOLUME])
    except (ValueError, TypeError, ImportError) as exc:
        raise CommandError(_as_options(_plain(exc))) from None
    _given_folder(args.output)
    args.scans = _scan_paths(args, own_outputs(args.output, None))
    references = _check_headers(args.scans)
    output = _output_folder(args.output)
    planned = plan_outputs(args.scans, output, ("_brainmask.nii.gz",), keep_tree=False)

    def extract(path, targets, replace):
        image, reference = read_scan(path)
        extractor = BrainExtractor(affine=reference, **params).fit([image])
        mask = extractor.get_mask([image])[0]
        save_nifti(mask, reference, targets[0], overwrite=replace)
        return f"{path}: brain {mask.mean():.1%} of the volume -> {targets[0]}"

    identity = f"deepbet threshold={args.threshold!r} margin={args.margin!r}"
    return _each_scan("brain-extract", planned, references, args, extract, identity)


def cmd_demo(args):
    from ._demo import run_demo

    run_demo(Path(args.output), overwrite=args.overwrite, progress=args.progress)


# -- parser --------------------------------------------------------------------
def build_parser():
    parser = _Parser(
        prog="anomseg",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"anomseg {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name, help_text, func):
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

    fit = add("fit", "Fit a model on healthy NIfTI scans and save it.", cmd_fit)
    fit.add_argument("healthy", nargs="+", metavar="HEALTHY.nii.gz", help="Healthy scans.")
    fit.add_argument(
        "--method",
        choices=sorted(METHODS) + sorted(PRESETS),
        required=True,
        action="append",
        help="The method (repeat it for an ensemble of several): "
        + "; ".join(f"{name}, {method.summary}" for name, method in METHODS.items())
        + "; or a preset: "
        + "; ".join(f"{name}, {preset.summary}" for name, preset in PRESETS.items())
        + ". The deep methods are 2D: each scan's foreground is scaled "
        "linearly so that its minimum is 0 and its 90th percentile 1 "
        "(brighter voxels, such as lesions, stay above 1), then the volume "
        "is cut into slices along its last (axial) axis. Several --method "
        "make an ensemble (see --ensemble).",
    )
    fit.add_argument(
        "--ensemble",
        type=_positive_int("--ensemble"),
        default=None,
        metavar="N",
        help="Train N seeds of each learned method and combine them, with any "
        "other --method, into one ensemble (anomseg.ensemble.AnomalyEnsemble): "
        "each member's map becomes its healthy tail probability, their -log10 "
        "are averaged, and the ensemble's threshold is calibrated like any "
        "model's. Costs N times the training; removes most of the luck of a seed.",
    )
    fit.add_argument(
        "--n-jobs",
        type=_positive_int("--n-jobs", allow=(-1,)),
        default=None,
        metavar="N",
        help="Ensembles only: train N members at once in worker processes that "
        "share the cores (-1: one per core); each holds its own network.",
    )
    fit.add_argument(
        "--unlabelled",
        nargs="+",
        default=[],
        metavar="SCAN.nii.gz",
        help="ascnet only: scans that hold lesions, from which the network "
        "learns what the healthy scans do not explain: typically the scans to "
        "segment. The more of their slices hold lesions, the better (on LGG, "
        "AUPRC 0.507 with the scans to segment, 0.160 with whole training "
        "scans); without them it trains on the healthy scans alone.",
    )
    fit.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="MODEL",
        help="Model file to write, in the safe format (plain data, weights and "
        "a checksum; reading it runs no code); .anomseg by convention.",
    )
    fit.add_argument(
        "--max-fpr",
        type=float,
        default=None,
        help="Largest voxel false-positive rate on healthy data that the "
        "mask threshold allows (default 0.05; 0.02 for --method recommended).",
    )
    fit.add_argument(
        "--modality",
        default=None,
        help="The healthy scans' modality, such as FLAIR, recorded in the model "
        "file for its users ('anomseg info').",
    )
    fit.add_argument(
        "--param",
        type=_parse_param,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Set a parameter of the method, e.g. --param n_bins=128 "
        "(repeatable). VALUE is read as a Python literal, such as "
        "'step_sizes=(0.01, 0.005)', or else as a string, such as device=cpu. "
        "For inpainting-predictor, inpainter__KEY=VALUE sets a parameter of "
        "the inpainting model it learns from, e.g. inpainter__n_steps=500. In "
        "an ensemble, KEY=VALUE goes to every member that has KEY (and to the "
        "ensemble: random_state also seeds the members' seeds), and "
        "METHOD:KEY=VALUE to one method's members, e.g. denoising-ae:width=16.",
    )
    _add_foreground_option(fit)
    fit.add_argument(
        "--exclude",
        nargs="+",
        default=[],
        metavar="MASK.nii.gz",
        help="Lesion masks of 0 and 1, one per healthy scan, in the same order, on "
        "the scans' grids: fit on the healthy parts of patient scans. Their voxels "
        "are used neither for training nor for calibration; each scan is still "
        "scored whole, as predict will score it.",
    )
    fit.add_argument(
        "--exclude-margin",
        type=_non_negative_int("--exclude-margin"),
        default=0,
        metavar="VOXELS",
        help="Also exclude the voxels within this many voxels of a lesion (default 0).",
    )
    fit.add_argument(
        "--exclude-slices",
        action="store_true",
        help="Exclude every axial slice that holds a lesion voxel (after the "
        "margin), not just the voxels: the deep methods, which learn from whole "
        "slices, then train on lesion-free slices only.",
    )
    fit.add_argument(
        "--smoothing",
        type=_sigma,
        default=None,
        metavar="SIGMA",
        help="Smooth every anomaly map with a Gaussian of this standard deviation "
        "in voxels inside the brain (one value, or one per axis such as 2,2,1), "
        "before calibration: lesions are blobs and false positives specks. Applies "
        "to the ensemble's map for an ensemble.",
    )
    fit.add_argument(
        "--min-size",
        type=_non_negative_int("--min-size"),
        default=0,
        metavar="VOXELS",
        help="Remove from every mask the connected lesions (26-connected in 3D) "
        "smaller than this many voxels (default 0: none). The threshold is "
        "calibrated on the filtered masks, so --max-fpr holds for what predict writes.",
    )
    fit.add_argument(
        "--opening",
        type=_int_option("--opening", 0, most=MAX_RADIUS),
        default=0,
        metavar="RADIUS",
        help="Open every mask with a ball of this radius in voxels first (removes "
        "thin specks; default 0: none); calibrated like --min-size.",
    )
    fit.add_argument(
        "--closing",
        type=_int_option("--closing", 0, most=MAX_RADIUS),
        default=0,
        metavar="RADIUS",
        help="Then close every mask with a ball of this radius (fills small gaps; "
        "default 0: none); calibrated like --min-size.",
    )
    fit.add_argument("--overwrite", action="store_true", help="Replace MODEL if it exists.")
    _add_budget_option(fit)

    predict = add(
        "predict",
        "Write an anomaly map and a mask (NIfTI, on each scan's grid) per scan. "
        "Both appear together or not at all; scans whose outputs are complete "
        "are skipped, so an interrupted run can be rerun. A scan that fails "
        "does not stop the others: the failures are reported at the end, and "
        "the exit status is 1.",
        cmd_predict,
    )
    predict.add_argument("model", metavar="MODEL", help="A model written by 'anomseg fit'.")
    _add_scan_arguments(predict)
    predict.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUTDIR",
        help="Output folder; SCAN.nii.gz gives OUTDIR/SCAN_anomaly_map.nii.gz "
        "and OUTDIR/SCAN_mask.nii.gz.",
    )
    predict.add_argument(
        "--keep-tree",
        action="store_true",
        help="Mirror the scans' folders (relative to their common folder) under "
        "OUTDIR, for scans that share a file name.",
    )
    _add_model_options(predict)
    predict.add_argument(
        "--overwrite", action="store_true", help="Redo and replace complete outputs too."
    )
    _add_budget_option(predict)
    summary = predict.add_mutually_exclusive_group()
    summary.add_argument(
        "--summary",
        default="summary.csv",
        metavar="FILE",
        help="The per-scan summary (status, seconds, lesion volume in mL, "
        "connected components), CSV or JSON by its suffix, relative to OUTDIR "
        "(default: summary.csv); written atomically, and rewritten by a rerun.",
    )
    summary.add_argument(
        "--no-summary",
        dest="summary",
        action="store_const",
        const=None,
        help="Write no summary file.",
    )
    where = predict.add_mutually_exclusive_group()
    where.add_argument(
        "--n-jobs",
        type=int,
        metavar="N",
        help="Score N scans at once in worker processes of this machine "
        "(joblib); -1 for one per core. Each worker uses an equal share of the "
        "cores.",
    )
    where.add_argument(
        "--dask-scheduler",
        metavar="ADDRESS",
        help="Score the scans on the workers of a Dask cluster, such as "
        "tcp://10.0.0.1:8786 (started with 'dask scheduler' and 'dask worker'); "
        "they must see the scans and OUTDIR at the same paths. Needs pip install "
        "'anomseg[cluster]'.",
    )

    evaluate = add(
        "evaluate",
        "Print the metric table of a model against ground-truth masks.",
        cmd_evaluate,
    )
    evaluate.add_argument("model", metavar="MODEL")
    evaluate.add_argument("scans", nargs="+", metavar="SCAN.nii.gz")
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
        help="Also write the figures to FILE: .json (pooled and per-volume rows, "
        "and every scan's own figures) or .csv (a row per scan, then the pooled "
        "and per-volume rows); written atomically.",
    )
    evaluate.add_argument(
        "--overwrite", action="store_true", help="Replace the --output file if it exists."
    )
    _add_model_options(evaluate)
    _add_budget_option(evaluate)

    info = add(
        "info",
        "Show what a model file holds (its steps, parameters, calibration and "
        "healthy data) after checking its checksum, without running code from it.",
        cmd_info,
    )
    info.add_argument("model", metavar="MODEL")

    brain = add(
        "brain-extract",
        "Write the brain mask of each 3D scan that is not skull-stripped "
        "(NIfTI, uint8, on the scan's grid), found by the deepbet network; "
        "needs pip install 'anomseg[brain]'.",
        cmd_brain_extract,
    )
    _add_scan_arguments(brain)
    brain.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUTDIR",
        help="Output folder; SCAN.nii.gz gives OUTDIR/SCAN_brainmask.nii.gz.",
    )
    brain.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="Brain probability above which a voxel is brain (default 0.5).",
    )
    brain.add_argument(
        "--margin",
        type=int,
        default=0,
        help="Voxels by which each mask is dilated (default 0).",
    )
    brain.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="Where the network runs (default: CUDA if available).",
    )
    brain.add_argument("--overwrite", action="store_true", help="Replace existing masks.")
    _add_budget_option(brain)

    demo = add(
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
    return parser


def _message(exc, path=None):
    """One line for the user: the exception's first line in the command
    line's words, naming ``path`` unless the message already does."""
    message = str(exc)
    if path is not None and not str(path).isprintable():  # a newline in a name
        message = message.replace(str(path), printable(str(path)))
    text = _plain(message) if message.strip() else type(exc).__name__
    if not isinstance(exc, (CommandError, ValueError, TypeError, OSError)):
        text = f"unexpected {type(exc).__name__}: {text} (ANOMSEG_DEBUG=1 shows the traceback)"
    if path is not None and printable(path) not in text:
        text = f"'{printable(path)}': {text}"
    return text


class _Signals:
    """SIGINT and SIGTERM, raised as exceptions where the program is, and
    remembered: Python swallows an exception raised inside a finaliser
    (``__del__``, during garbage collection), so the scan loop checks
    between scans too, and ``sys.unraisablehook`` keeps such a swallowed
    interrupt from printing a traceback."""

    def __init__(self):
        self.received = None

    def handle(self, signum, frame):
        self.received = signum
        raise self.exception()

    def exception(self):
        return Terminated() if self.received == signal.SIGTERM else KeyboardInterrupt()

    def check(self):
        """Raise the signal received, if any, that nothing has acted on."""
        if self.received is not None:
            raise self.exception()

    @contextlib.contextmanager
    def installed(self):
        """Handle SIGINT and SIGTERM while the block runs (main thread only)."""
        self.received = None
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        # A signal ignored by whoever started us (SIGINT in background jobs)
        # stays ignored, as Python itself does.
        signals = [
            signum
            for signum in (signal.SIGINT, signal.SIGTERM)
            if signal.getsignal(signum) != signal.SIG_IGN
        ]
        previous = {signum: signal.signal(signum, self.handle) for signum in signals}
        hook = sys.unraisablehook

        def unraisable(record):
            if not isinstance(record.exc_value, KeyboardInterrupt):
                hook(record)

        sys.unraisablehook = unraisable
        try:
            yield
        finally:
            sys.unraisablehook = hook
            for signum, handler in previous.items():
                signal.signal(signum, handler)


_SIGNALS = _Signals()


def _quiet_finalisers():
    """After an interrupt, let finalisers fail without a traceback.

    The signal can land inside a library's ``__init__`` (nibabel's
    ``OrderedSet``, for one), leaving an object half-built whose ``__del__``
    then fails as the interpreter exits; Python would print that as
    "Exception ignored in ...", with a traceback, under the one line that
    says the run was interrupted."""
    sys.unraisablehook = lambda record: None


def _show_warning(command, message, category, filename, lineno, file=None, line=None):
    _say(command, "warning", _plain(message))


def _faithful_stdout():
    """Print file names as the file system holds them: a name that is not
    UTF-8 (decoded by Python with surrogate escapes) is written back as its
    own bytes, as ``ls`` and ``find`` do, rather than failing the run."""
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None and getattr(sys.stdout, "errors", None) == "strict":
        with contextlib.suppress(ValueError, OSError):
            reconfigure(errors="surrogateescape")


def _parse(argv):
    """The parsed command line, where ``--`` ends the options as Unix
    commands do, so that scans named like options (``-x.nii.gz``) can be
    given: argparse (before Python 3.12.7) leaves the arguments after ``--``
    unparsed once SCAN.nii.gz arguments were matched, empty, before it."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if "--" not in argv:
        return parser.parse_args(argv)
    args, extra = parser.parse_known_args(argv)
    if extra and "--" in argv and isinstance(getattr(args, "scans", None), list):
        after = argv[argv.index("--") + 1 :]
        rest = extra[1:] if extra[0] == "--" else extra
        if rest and rest == after[len(after) - len(rest) :]:
            args.scans += rest
            extra = []
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv=None):
    """Run the command line; returns the exit status."""
    args = _parse(argv)
    _faithful_stdout()
    try:
        budget = _voxel_budget(getattr(args, "max_voxels", None))
        with _SIGNALS.installed(), warnings.catch_warnings(), budget:
            warnings.showwarning = functools.partial(_show_warning, args.command)
            status = args.func(args) or 0
            _SIGNALS.check()  # one that a finaliser swallowed
            sys.stdout.flush()  # a closed pipe is noticed here, not at exit
            return status
    except Terminated:
        _say(args.command, "error", "terminated (SIGTERM); no output is left half-written")
        _quiet_finalisers()
        return 143
    except KeyboardInterrupt:
        _say(args.command, "error", "interrupted; no output is left half-written")
        _quiet_finalisers()
        return 130
    except Exception as exc:
        if isinstance(exc, BrokenPipeError) and _stdout_closed():
            return _reader_gone()
        if os.environ.get("ANOMSEG_DEBUG"):
            raise
        _say(args.command, "error", _message(exc))
        return 1


def _stdout_closed():
    """Whether the reader of stdout has gone (``anomseg info M | head``),
    rather than another pipe broken (a worker's), which is an error to
    report; where it cannot be told, it is taken to be stdout."""
    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
    except (AttributeError, OSError, ValueError):
        return True
    poller.register(fd, select.POLLOUT)
    return any(event & (select.POLLERR | select.POLLHUP) for _, event in poller.poll(0))


def _reader_gone():
    """End quietly, as Unix tools do when the reader of their output has
    gone, with status 141 (128 + SIGPIPE: what a shell reports for ``cat``
    or ``grep`` in the same place, as 130 and 143 are for SIGINT and
    SIGTERM; 1 would read as a failed run). What is left in stdout's buffer
    goes to the null device, so that Python's flush at exit does not fail
    again (the Python documentation's recipe, "Note on SIGPIPE")."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return 141
