"""``anomseg fit``: fit a model on healthy scans and save it."""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import sys
import warnings

from .._version import __version__
from ..cohort import voxel_sizes
from ..io._scans import channel_files
from ..persistence._registry import METHODS, PRESETS, method_class
from ..utils._logging import LIBRARY_LOGGER
from ..utils._param_validation import MAX_RADIUS, InvalidParameterError
from ._common import (
    CommandError,
    _as_options,
    _channel_names,
    _check_channels,
    _check_headers,
    _output_file,
)
from ._parser import (
    _add_budget_option,
    _add_foreground_option,
    _int_option,
    _non_negative_int,
    _parse_param,
    _positive_int,
    _sigma,
    _sigma_text,
    add_command,
)

#: The defaults of the options that a preset sets.
_PRESET_OPTIONS = {"ensemble": 1, "smoothing": None, "max_fpr": 0.05}

#: The parameters that options of fit set, by option; any other is a --param.
_FIT_OPTIONS = {
    "max_fpr": "--max-fpr",
    "smoothing": "--smoothing",
    "postprocessing": "--min-size",
    "n_jobs": "--n-jobs",
}


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
    channels = _declare_channels(args)
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
    _checkpoint(args, estimator, output, inputs)
    # --param channel_axis=-1 (or --channels): 4D scans, whose fourth axis
    # holds the channels, or path templates of one file per channel.
    channel_axis = estimator.get_params(deep=False).get("channel_axis")
    scans = [*args.healthy, *args.unlabelled]
    _channel_names({"channels": channels}, scans)
    references = _check_headers(scans, False, channel_axis, channels)
    _check_channels(scans, estimator, channels)
    exclusion = _exclusion(args, references)
    steps = _preprocessing_steps(
        args.foreground, tags.requires_scaled_input, args.spacing, channel_axis
    )
    model = make_anomaly_pipeline(*steps, estimator) if steps else estimator
    # Under torchrun, every process loads the scans and trains on its share
    # (see anomseg.distributed); only rank 0 reports and saves.
    with process_group(estimator.get_params().get("device", "cpu")):
        main = is_main_process()
        if not main:  # rank 0 says the same
            warnings.simplefilter("ignore")
            logging.getLogger(LIBRARY_LOGGER).setLevel(logging.WARNING)
        # Paths, not arrays: the scans are read and preprocessed one at a
        # time into memory-mapped files, so memory does not grow with them.
        healthy = [channel_files(path, channels) for path in args.healthy]
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
            unlabelled = [channel_files(path, channels) for path in args.unlabelled]
            if main:
                print(f"  and {len(unlabelled)} unlabelled scan(s)", file=sys.stderr)
            if exclusion is not None:
                exclusion.masks += [None] * len(unlabelled)
            model.fit(
                healthy + unlabelled,
                [0] * len(healthy) + [-1] * len(unlabelled),
                exclude=exclusion,
            )
        else:
            model.fit(healthy, exclude=exclusion)
    if not main:
        return 0
    sizes = [voxel_sizes(reference) for reference in references[: len(args.healthy)]]
    metadata = {
        "written_by": f"anomseg {__version__} fit "
        + (f"--method {args.preset} = " if getattr(args, "preset", None) else "")
        + " ".join(f"--method {m}" for m in args.method)
        + (f" --ensemble {args.ensemble}" if args.ensemble > 1 else "")
        + (f" --smoothing {_sigma_text(args.smoothing)}" if args.smoothing else "")
        + (f" --spacing {_sigma_text(args.spacing)}" if args.spacing else "")
        + (f" --channels {','.join(channels)}" if channels else "")
        + f" --max-fpr {args.max_fpr:g}",
        "modality": args.modality,
        "n_healthy_scans": len(args.healthy),
        "voxel_size": [[min(axis) for axis in zip(*sizes)], [max(axis) for axis in zip(*sizes)]],
        "foreground": args.foreground,
    }
    if channels:  # predict reads the files of the same channels, in this order
        metadata["channels"] = list(channels)
    if args.spacing is not None:  # predict then warns of no scan's voxel size
        metadata["spacing"] = (
            list(args.spacing) if isinstance(args.spacing, tuple) else [args.spacing] * 3
        )
    if exclusion is not None:
        metadata["excluded"] = _excluded_text(args)
    model.save(output, overwrite=args.overwrite, metadata=metadata)
    print(
        f"saved {output}: threshold {estimator.threshold_:.4g} at healthy "
        f"FPR {estimator.max_fpr:g} (achieved {estimator.calibration_fpr_:.4f} on "
        f"{estimator.n_calibration_pixels_} calibration voxels)"
    )


def _declare_channels(args):
    """The names of ``--channels``, or None: the methods then take
    ``channel_axis=-1``, and flair-threshold thresholds the channel named
    FLAIR unless ``--param flair_channel`` says which."""
    if not args.channels:
        return None
    given = {name: value for _, name, value in args.param}
    if given.get("channel_axis", -1) != -1:
        raise CommandError(
            "--channels reads scans of several channels, which --param channel_axis=-1 "
            f"declares; got --param channel_axis={given['channel_axis']!r}: leave it out."
        )
    if "channel_axis" not in given:
        args.param.append((None, "channel_axis", -1))
    names = [name.lower() for name in args.channels]
    if "flair-threshold" in args.method and "flair_channel" not in given:
        if "flair" not in names:
            raise CommandError(
                "flair-threshold thresholds one FLAIR channel, and --channels "
                f"{','.join(args.channels)} names none 'flair'; name it so, or pass "
                "--param flair-threshold:flair_channel=K (K counted from 0)."
            )
        args.param.append(("flair-threshold", "flair_channel", names.index("flair")))
    return tuple(args.channels)


def _checkpoint(args, estimator, output, inputs):
    """Give ``estimator`` the :class:`~anomseg.callbacks.Checkpoint` of
    ``--checkpoint``: the training's state, written every
    ``--checkpoint-every`` epochs, from which ``--resume`` continues."""
    if args.checkpoint is None:
        if args.resume or args.checkpoint_every is not None:
            raise CommandError("--resume and --checkpoint-every need --checkpoint PATH.")
        return
    from ..callbacks import Checkpoint

    if "callbacks" not in estimator.get_params(deep=False):
        raise CommandError(
            f"--checkpoint is for one learned method; {' and '.join(args.method)} "
            + (
                "make an ensemble, whose members train apart."
                if len(args.method) > 1 or args.ensemble > 1
                else "trains no network."
            )
        )
    if os.path.abspath(args.checkpoint) == os.path.abspath(output):
        raise CommandError("--checkpoint names the model file (-o); give it another name.")
    if os.path.isfile(args.checkpoint) and not (args.resume or args.overwrite):
        raise CommandError(
            f"--checkpoint '{args.checkpoint}' exists; pass --resume to continue its "
            "training, or --overwrite to start afresh."
        )
    path = _output_file(args.checkpoint, "--checkpoint", "the checkpoint", True, inputs)
    params = {
        "callbacks": [Checkpoint(str(path), every=args.checkpoint_every or 1, resume=args.resume)]
    }
    if estimator.get_params(deep=False).get("random_state") is None:
        # A resumed training rebuilds its data split and starting point from it.
        params["random_state"] = 0
    estimator.set_params(**params)


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
    except InvalidParameterError as exc:
        raise CommandError(_as_options(str(exc), _FIT_OPTIONS)) from None
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
    except InvalidParameterError as exc:
        raise CommandError(_as_options(str(exc), _FIT_OPTIONS)) from None
    except TypeError as exc:
        raise CommandError(f"bad --param for {method}: {exc}") from None


def _excluded_text(args):
    """What ``--exclude`` and its options left out, as a model records it."""
    return (
        f"the voxels of {len(args.exclude)} lesion mask(s)"
        + (f" grown by {args.exclude_margin} voxel(s)" if args.exclude_margin else "")
        + (", widened to whole slices" if args.exclude_slices else "")
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


def _preprocessing_steps(foreground, scale, spacing=None, channel_axis=None):
    """The steps ``fit`` puts before the method: a head mask derived from
    intensity with ``--foreground auto``, the brain with ``--foreground
    brain`` (both on the scan's own grid, where they are made to work),
    then each scan resampled to ``--spacing`` if given, then, for the
    methods that assume it (their ``requires_scaled_input`` tag), each scan
    scaled as :meth:`IntensityScaler.for_deep_methods` says; all of them of
    the method's ``channel_axis``."""
    from ..preprocessing import BrainExtractor, ForegroundMasker, IntensityScaler, Resampler

    steps = {"auto": [ForegroundMasker()], "brain": [BrainExtractor()]}.get(foreground, [])
    if spacing is not None:
        steps.append(Resampler(spacing=spacing))
    if scale:
        steps.append(IntensityScaler.for_deep_methods())
    return [step.set_params(channel_axis=channel_axis) for step in steps]


def add_parser(commands):
    """The options of fit, as a subparser of ``commands``."""
    fit = add_command(commands, "fit", "Fit a model on healthy NIfTI scans and save it.", cmd_fit)
    fit.add_argument("healthy", nargs="+", metavar="HEALTHY.nii.gz", help="Healthy scans.")
    _add_method_options(fit)
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
        "--channels",
        type=_channel_list,
        default=None,
        metavar="NAME,NAME,...",
        help="Multi-channel scans (such as FLAIR and T2), one file per channel: give "
        "each scan as a path template in which {channel} stands for the channel's "
        "name, such as 'data/p01_{channel}.nii.gz' with --channels flair,t2 (quote it "
        "for the shell), for data/p01_flair.nii.gz and data/p01_t2.nii.gz, which must "
        "share one grid. The model records the names: predict, evaluate and calibrate "
        "then take templates of the same channels (or 4D files of them in this "
        "order) and name their outputs after the template without {channel} "
        "(p01_mask.nii.gz). A 4D file whose fourth axis holds the channels needs only "
        "--param channel_axis=-1 (--channels implies it). flair-threshold thresholds "
        "the channel named flair, or --param flair_channel=K (default 0 for 4D files).",
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
        "--spacing",
        type=_spacing,
        default=None,
        metavar="MM",
        help="Resample every scan to this voxel size in mm (one value, or one per "
        "axis such as 1,1,2) before the method, in fit and, as the model records "
        "it, in predict, which writes the maps on each scan's own grid. For "
        "scans of several voxel sizes, or a model used at other sites "
        "(default: the scans' own grids).",
    )
    _add_exclusion_options(fit)
    _add_mask_options(fit)
    fit.add_argument("--overwrite", action="store_true", help="Replace MODEL if it exists.")
    _add_budget_option(fit)
    _add_checkpoint_options(fit)


def _channel_list(text):
    """``--channels``: distinct names, separated by commas, that can stand
    in a file's name."""
    names = text.split(",")
    if len(set(names)) < len(names) or not all(
        name and not set(name) & set("/\\{}") for name in names
    ):
        raise argparse.ArgumentTypeError(
            "--channels must be distinct channel names separated by commas, such as "
            f"flair,t2, each one that can stand in a file's name; got {text!r}"
        )
    return names


def _spacing(text):
    """``--spacing``: one voxel size in (0, MAX_SPACING] mm, or one per axis
    (the constraint of :class:`~anomseg.preprocessing.Resampler`'s
    ``spacing``, for 3D scans)."""
    from ..preprocessing._resample import MAX_SPACING

    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) not in (1, 3) or not all(0 < v <= MAX_SPACING for v in values):
        raise argparse.ArgumentTypeError(
            f"--spacing must be a voxel size in (0, {MAX_SPACING}] mm, or 3 of them (one "
            f"per axis) such as 1,1,2; got {text!r}"
        )
    return values[0] if len(values) == 1 else values


def _add_checkpoint_options(fit):
    """A long training that survives an interruption."""
    fit.add_argument(
        "--checkpoint",
        default=None,
        metavar="PATH",
        help="One learned method only: write the state of the training (weights, "
        "optimiser, epoch, history, random states) to PATH as it goes, so that "
        "--resume can continue an interrupted training; the resumed training "
        "gives the model an uninterrupted one would. Fixes random_state to 0 "
        "unless --param random_state=... is given. PATH is refused if it exists, "
        "unless --resume (continue from it) or --overwrite (start afresh).",
    )
    fit.add_argument(
        "--checkpoint-every",
        type=_positive_int("--checkpoint-every"),
        default=None,
        metavar="N",
        help="Write the checkpoint every N epochs, and after the last (default 1).",
    )
    fit.add_argument(
        "--resume",
        action="store_true",
        help="Continue the training that --checkpoint PATH holds (start afresh if "
        "PATH does not exist). The other options must be those of the interrupted "
        "run; a checkpoint of another method, parameters or scans is refused.",
    )


def _add_method_options(fit):
    """What is trained: the method, or an ensemble."""
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


def _add_exclusion_options(parser, used="used neither for training nor for calibration"):
    """``--exclude`` and what it reads besides the masks, for ``parser``
    (fit's, or calibrate's with ``used`` saying what their voxels are not)."""
    parser.add_argument(
        "--exclude",
        nargs="+",
        default=[],
        metavar="MASK.nii.gz",
        help="Lesion masks of 0 and 1, one per healthy scan, in the same order, on "
        f"the scans' grids: use the healthy parts of patient scans. Their voxels are {used}; "
        "each scan is still scored whole, as predict will score it.",
    )
    parser.add_argument(
        "--exclude-margin",
        type=_non_negative_int("--exclude-margin"),
        default=0,
        metavar="VOXELS",
        help="Also exclude the voxels within this many voxels of a lesion (default 0).",
    )
    parser.add_argument(
        "--exclude-slices",
        action="store_true",
        help="Exclude every axial slice that holds a lesion voxel (after the "
        "margin), not just the voxels: the deep methods, which learn from whole "
        "slices, then train on lesion-free slices only.",
    )


def _add_mask_options(fit):
    """The steps between the anomaly map and the mask, calibrated with it."""
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
