"""The ``anomseg`` command line: fit, predict, evaluate and demo."""

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

Run 'anomseg COMMAND --help' for the options of a command.
"""


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


def _add_foreground_option(parser):
    parser.add_argument(
        "--foreground",
        choices=("nonzero", "auto"),
        default="nonzero",
        help="How the brain/head is found: 'nonzero' voxels (skull-stripped "
        "scans, the default) or 'auto', a head mask derived from intensity "
        "for scans that are not skull-stripped. Only foreground voxels are "
        "calibrated and evaluated.",
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
    intensity with ``--foreground auto``, then, for the methods that assume
    it (their ``requires_scaled_input`` tag), each scan scaled as
    :meth:`IntensityScaler.for_deep_methods` says."""
    from ..preprocessing import ForegroundMasker, IntensityScaler

    steps = [ForegroundMasker()] if foreground == "auto" else []
    if scale:
        steps.append(IntensityScaler.for_deep_methods())
    return steps


def _load_model(path):
    """The model file's estimator or pipeline, as an AnomalyPipeline (of one
    step for a bare estimator), so that every command treats both alike."""
    from sklearn.pipeline import Pipeline

    from ..base import load_model
    from ..preprocessing import AnomalyPipeline, make_anomaly_pipeline

    model = load_model(path, allow_pickle=True)
    if isinstance(model, Pipeline):
        return model if isinstance(model, AnomalyPipeline) else AnomalyPipeline(model.steps)
    return make_anomaly_pipeline(model)


def cmd_predict(args):
    from ..io import load_nifti, save_nifti

    model = _load_model(args.model)
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
    model = _load_model(args.model)
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
    except (CommandError, ValueError, TypeError, OSError, FloatingPointError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"anomseg {args.command}: error: {message}", file=sys.stderr)
        return 1
    return 0
