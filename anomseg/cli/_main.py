"""The ``anomseg`` command line: fit, predict, evaluate, brain-extract and demo."""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

from .._registry import METHODS, method_class
from .._version import __version__

__all__ = ["main"]

DESCRIPTION = """\
Unsupervised anomaly segmentation of brain MRI.

Train a model on healthy scans only, then get a voxel-wise anomaly map and a
binary lesion mask for new scans. The mask threshold is calibrated on healthy
data at a chosen false-positive rate.

  anomseg demo                                 # try it on the embedded data
  anomseg fit --method flair-threshold healthy/*.nii.gz -o model.joblib
  anomseg fit --method ascnet healthy/*.nii.gz --unlabelled scans/*.nii.gz -o m.joblib
  anomseg fit --method inpainting-predictor healthy/*.nii.gz -o fast.joblib
  anomseg predict model.joblib scans/*.nii.gz -o results/
  anomseg evaluate model.joblib scans/*.nii.gz --truth masks/*.nii.gz
  anomseg fit --method flair-threshold --foreground brain heads/*.nii.gz -o m.joblib
  anomseg brain-extract heads/*.nii.gz -o brains/   # brain masks, as NIfTI

Run 'anomseg COMMAND --help' for the options of a command.
"""


#: A volume to fit steps that learn nothing from images on.
_TINY_VOLUME = [[[1.0]]]


class CommandError(Exception):
    """A user error, reported in one line without a traceback."""


def _parse_param(text):
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, such as n_bins=128; got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value  # a plain string such as device=cuda


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


def _load_scans(paths, progress, description="loading"):
    from ..io import load_niftis

    return load_niftis(_progress(paths, description, progress))


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


def _add_model_foreground_option(parser):
    parser.add_argument(
        "--foreground",
        choices=("model", "brain"),
        default="model",
        help="How the brain/head is found: as the model was fitted ('model', "
        f"the default), or {_BRAIN_HELP}, first, before the model's own steps "
        "(for a model fitted on skull-stripped scans, for instance). Only "
        "foreground voxels are scored.",
    )


def _stem(path):
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


# -- commands ------------------------------------------------------------------
def _estimator(method, params):
    """The estimator of ``method`` with ``params`` (``NAME__KEY`` ones go to
    the nested estimators the registry names), its parameters checked."""
    nested = {}
    for name, nested_method in METHODS[method].nested.items():
        prefix = f"{name}__"
        own = {k[len(prefix) :]: params.pop(k) for k in list(params) if k.startswith(prefix)}
        try:
            nested[name] = method_class(nested_method)(**own).check_params()
        except TypeError as exc:
            raise CommandError(f"bad --param {prefix}... for {method}: {exc}") from None
    try:
        return method_class(method)(**params, **nested).check_params()
    except TypeError as exc:
        raise CommandError(f"bad --param for {method}: {exc}") from None


def cmd_fit(args):
    from sklearn.utils import get_tags

    from ..preprocessing import make_anomaly_pipeline

    estimator = _estimator(args.method, {**dict(args.param), "max_fpr": args.max_fpr})
    tags = get_tags(estimator).anomaly_tags
    if args.unlabelled and not tags.learns_from_unlabelled:
        takers = [
            m for m in METHODS if get_tags(method_class(m)()).anomaly_tags.learns_from_unlabelled
        ]
        raise CommandError(
            f"--unlabelled is for {', '.join(takers)}; {args.method} learns from "
            "healthy scans only."
        )
    steps = _preprocessing_steps(args.foreground, tags.requires_scaled_input)
    model = make_anomaly_pipeline(*steps, estimator) if steps else estimator
    images, _ = _load_scans(args.healthy, args.progress)
    print(f"fitting {args.method} on {len(images)} healthy scan(s)...", file=sys.stderr)
    if tags.learns_from_unlabelled and args.unlabelled:
        # Marked by y rather than passed apart, so that the preprocessing
        # steps of the pipeline transform them too.
        unlabelled, _ = _load_scans(args.unlabelled, args.progress, "loading unlabelled")
        print(f"  and {len(unlabelled)} unlabelled scan(s)", file=sys.stderr)
        model.fit(images + unlabelled, [0] * len(images) + [-1] * len(unlabelled))
    else:
        model.fit(images)
    model.save(args.output, format="pickle", overwrite=args.overwrite)
    print(
        f"saved {args.output}: threshold {estimator.threshold_:.4g} at healthy "
        f"FPR {estimator.max_fpr:g} (achieved {estimator.calibration_fpr_:.4f} on "
        f"{estimator.n_calibration_pixels_} calibration voxels)"
    )


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


def _load_model(path, foreground="model"):
    """The model file's estimator or pipeline, as an AnomalyPipeline (of one
    step for a bare estimator), so that every command treats both alike;
    with ``foreground="brain"``, a BrainExtractor goes first unless the
    model starts with one."""
    from sklearn.pipeline import Pipeline

    from ..base import load_model
    from ..preprocessing import AnomalyPipeline, BrainExtractor

    model = load_model(path, allow_pickle=True)
    steps = model.steps if isinstance(model, Pipeline) else [(type(model).__name__.lower(), model)]
    if foreground == "brain" and not isinstance(steps[0][1], BrainExtractor):
        # Fitting it only validates its parameters: it learns nothing.
        extractor = BrainExtractor().fit([_TINY_VOLUME])
        steps = [("brainextractor", extractor), *steps]
    if isinstance(model, AnomalyPipeline) and len(steps) == len(model.steps):
        return model
    return AnomalyPipeline(steps)


def cmd_predict(args):
    from ..io import load_nifti, save_nifti

    model = _load_model(args.model, args.foreground)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    planned = [
        (path, output / f"{_stem(path)}_anomaly_map.nii.gz", output / f"{_stem(path)}_mask.nii.gz")
        for path in args.scans
    ]
    if not args.overwrite:  # fail before any work rather than half-way
        for _, *targets in planned:
            for target in targets:
                if target.exists():
                    raise CommandError(f"'{target}' exists; pass --overwrite to replace it.")
    for path, map_path, mask_path in _progress(planned, "predicting", args.progress):
        image, reference = load_nifti(path)
        anomaly_map = model.score_samples([image])[0]
        mask = model.threshold_maps([anomaly_map])[0]  # predict, scoring once
        save_nifti(anomaly_map, reference, map_path, overwrite=args.overwrite)
        save_nifti(mask, reference, mask_path, overwrite=args.overwrite)
        print(f"{path}: {int(mask.sum())} anomalous voxels -> {mask_path}")


def cmd_evaluate(args):
    from ..metrics import evaluate

    if len(args.scans) != len(args.truth):
        raise CommandError(
            f"got {len(args.scans)} scan(s) but {len(args.truth)} --truth "
            "mask(s); give one mask per scan, in the same order."
        )
    model = _load_model(args.model, args.foreground)
    images, _ = _load_scans(args.scans, args.progress)
    truths, _ = _load_scans(args.truth, args.progress, "loading masks")
    for scan, truth, image, mask in zip(args.scans, args.truth, images, truths):
        if image.shape != mask.shape:
            raise CommandError(
                f"mask '{truth}' has shape {mask.shape} but scan '{scan}' has {image.shape}."
            )
    # masked outside the voxels the model scored (and calibrated on)
    maps = [
        model.masked_score_samples([image])[0]
        for image in _progress(images, "scoring", args.progress)
    ]
    report = evaluate([t > 0 for t in truths], maps, thresholds=model[-1].calibration_thresholds_)
    print(f"{len(images)} scan(s), foreground voxels only; model {args.model}")
    print(report.to_table())


def cmd_brain_extract(args):
    from ..io import load_nifti, save_nifti
    from ..preprocessing import BrainExtractor

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    planned = [(path, output / f"{_stem(path)}_brainmask.nii.gz") for path in args.scans]
    if not args.overwrite:  # fail before any work rather than half-way
        for _, target in planned:
            if target.exists():
                raise CommandError(f"'{target}' exists; pass --overwrite to replace it.")
    params = {"threshold": args.threshold, "margin": args.margin, "device": args.device}
    for path, mask_path in _progress(planned, "extracting", args.progress):
        image, reference = load_nifti(path)
        extractor = BrainExtractor(affine=reference, **params).fit([image])
        mask = extractor.get_mask([image])[0]
        save_nifti(mask, reference, mask_path, overwrite=args.overwrite)
        print(f"{path}: brain {mask.mean():.1%} of the volume -> {mask_path}")


def cmd_demo(args):
    from ._demo import run_demo

    run_demo(Path(args.output), overwrite=args.overwrite, progress=args.progress)


# -- parser --------------------------------------------------------------------
def build_parser():
    parser = argparse.ArgumentParser(
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
            help="Do not show progress bars.",
        )
        return sub

    fit = add("fit", "Fit a model on healthy NIfTI scans and save it.", cmd_fit)
    fit.add_argument("healthy", nargs="+", metavar="HEALTHY.nii.gz", help="Healthy scans.")
    fit.add_argument(
        "--method",
        choices=sorted(METHODS),
        required=True,
        help="The method: "
        + "; ".join(f"{name}, {method.summary}" for name, method in METHODS.items())
        + ". The deep methods are 2D: each scan's foreground is scaled "
        "linearly so that its minimum is 0 and its 90th percentile 1 "
        "(brighter voxels, such as lesions, stay above 1), then the volume "
        "is cut into slices along its last (axial) axis.",
    )
    fit.add_argument(
        "--unlabelled",
        nargs="+",
        default=[],
        metavar="SCAN.nii.gz",
        help="ascnet only: scans that may hold lesions, from which the "
        "network learns what the healthy scans do not explain (typically "
        "the scans to segment). Without them it trains on the healthy scans "
        "alone, which works less well.",
    )
    fit.add_argument(
        "-o", "--output", required=True, metavar="MODEL", help="Model file to write (.joblib)."
    )
    fit.add_argument(
        "--max-fpr",
        type=float,
        default=0.05,
        help="Largest voxel false-positive rate on healthy data that the "
        "mask threshold allows (default 0.05).",
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
        "the inpainting model it learns from, e.g. inpainter__n_steps=500.",
    )
    _add_foreground_option(fit)
    fit.add_argument("--overwrite", action="store_true", help="Replace MODEL if it exists.")

    predict = add(
        "predict",
        "Write an anomaly map and a mask (NIfTI, on each scan's grid) per scan.",
        cmd_predict,
    )
    predict.add_argument("model", metavar="MODEL", help="A model written by 'anomseg fit'.")
    predict.add_argument("scans", nargs="+", metavar="SCAN.nii.gz")
    predict.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="Output folder.")
    _add_model_foreground_option(predict)
    predict.add_argument("--overwrite", action="store_true", help="Replace existing outputs.")

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
        help="Ground-truth masks, one per scan, in the same order.",
    )
    _add_model_foreground_option(evaluate)

    brain = add(
        "brain-extract",
        "Write the brain mask of each 3D scan that is not skull-stripped "
        "(NIfTI, uint8, on the scan's grid), found by the deepbet network; "
        "needs pip install 'anomseg[brain]'.",
        cmd_brain_extract,
    )
    brain.add_argument("scans", nargs="+", metavar="SCAN.nii.gz")
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


def main(argv=None):
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except KeyboardInterrupt:
        print("anomseg: interrupted", file=sys.stderr)
        return 130
    except (CommandError, ValueError, TypeError, OSError, FloatingPointError, ImportError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"anomseg {args.command}: error: {message}", file=sys.stderr)
        return 1
    return 0
