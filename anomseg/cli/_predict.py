"""``anomseg predict``: write an anomaly map and a mask per scan."""

from __future__ import annotations

from ..cohort import ENGINES
from ._common import (
    CommandError,
    _channel_names,
    _check_channels,
    _given_folder,
    _load_model,
    _output_folder,
    _pair_truths,
    _reporter,
    _say,
    _say_summary,
    _scan_paths,
)
from ._parser import (
    MODEL_SCANS_HELP,
    _add_budget_option,
    _add_model_options,
    _add_scan_arguments,
    _positive_int,
    add_command,
)

#: The cohort's page of figures, in the output folder, with --figures.
REPORT_NAME = "report.html"


def cmd_predict(args):
    from ..cohort import cap_jobs, check_summary, own_outputs, predict_cohort, usable_cores

    _given_folder(args.output)
    check_summary(args.output, args.summary)  # before the output folder is made
    own = own_outputs(args.output, args.summary)
    args.scans = _scan_paths(args, own)
    truths = _truths(args, own)
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
        if args.engine == "overlapped":
            raise CommandError(
                "--engine overlapped runs the scans on this machine, --dask-scheduler on "
                "the cluster's workers: give one or the other."
            )
        _check_dask()
    model, metadata = _load_model(
        args.model,
        args.foreground,
        args.trust_pickle,
        allow_unchecked=args.allow_unchecked,
        device=args.device,
    )
    _check_channels(args.scans, model, _channel_names(metadata, args.scans))
    model_id = _model_identity(args.model, args.foreground)
    output = _output_folder(args.output)
    counts = {"done": 0, "skipped": 0, "failed": 0}
    records = predict_cohort(
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
        callback=_reporter("predict", counts, _predicted),
        model_id=model_id,
        figures=args.figures,
        truths=truths,
        engine=args.engine,
    )
    _say_summary("predict", counts, len(args.scans), args.summary and output / args.summary)
    if args.figures:
        from ..cohort import SUMMARY_FIELDS
        from ..plotting import write_cohort_report

        report = write_cohort_report(
            records, output, columns=SUMMARY_FIELDS, title=f"anomseg predict: {args.model}"
        )
        print(f"wrote {report}")
    return 1 if counts["failed"] else 0


def _truths(args, own):
    """The ``--truth`` masks by scan (paired as ``evaluate`` pairs them), for
    the figures; the report page in the way, if anomseg did not write it,
    refused before any work."""
    import os

    if args.truth and not args.figures:
        raise CommandError("--truth outlines the truth in the figures: add --figures.")
    if args.figures:
        report = os.path.join(args.output, REPORT_NAME)
        if os.path.lexists(report) and os.path.realpath(report) not in own:
            raise CommandError(
                f"'{report}' exists and anomseg did not write it; it is left alone: move "
                "it away or choose another output folder."
            )
        _check_matplotlib()
    if not args.truth:
        return None
    if len(args.truth) != len(args.scans):
        raise CommandError(
            f"got {len(args.scans)} scan(s) but {len(args.truth)} --truth mask(s); give "
            "one mask per scan, in the same order."
        )
    return dict(zip(args.scans, _pair_truths(args.scans, args.truth, "predict")))


def _check_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CommandError("--figures needs matplotlib: pip install matplotlib.") from None


def _predicted(record):
    return (
        f"{record['scan']}: {record['anomalous_voxels']} anomalous voxels "
        f"({record['lesion_volume_ml']:.3g} mL, {record['n_components']} "
        f"component(s)) -> {record['mask']}"
    )


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


def add_parser(commands):
    """The command's options, as a subparser of ``commands``."""
    predict = add_command(
        commands,
        "predict",
        "Write an anomaly map and a mask (NIfTI, on each scan's grid) per scan. "
        "Both appear together or not at all; scans whose outputs are complete "
        "are skipped, so an interrupted run can be rerun. A scan that fails "
        "does not stop the others: the failures are reported at the end, and "
        "the exit status is 1.",
        cmd_predict,
    )
    predict.add_argument("model", metavar="MODEL", help="A model written by 'anomseg fit'.")
    _add_scan_arguments(predict, MODEL_SCANS_HELP)
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
    predict.add_argument(
        "--figures",
        action="store_true",
        help="Also write OUTDIR/SCAN_figure.png per scan (the mask, and any --truth, "
        "outlined over the scan at the axial slices of most lesion and in orthogonal "
        "views, titled with the method, its threshold and the lesion volume) and "
        "OUTDIR/report.html, the summary table with every figure. Needs matplotlib.",
    )
    predict.add_argument(
        "--truth",
        nargs="+",
        default=[],
        metavar="MASK",
        help="With --figures: the truth masks to outline too, one per scan, paired "
        "with the scans by file name (as 'evaluate' pairs them) or in the order given.",
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
        type=_positive_int("--n-jobs", allow=(-1,)),
        metavar="N",
        help="Score N scans at once: this process and N-1 worker processes of "
        "this machine (joblib); -1 for one per core. The workers start only when "
        "the scans left would take this process over 5 s, so it is never slower "
        "than serial; each process then uses an equal share of the cores. With "
        "--engine overlapped: N threads read scans and N others write outputs.",
    )
    predict.add_argument(
        "--engine",
        choices=ENGINES,
        default="auto",
        help="How this machine runs the scans. processes: one scan at a time per "
        "process (see --n-jobs). overlapped: threads read and write files while this "
        "process scores, several scans per batch of the network, with one copy of the "
        "model. auto (default): overlapped for a network on a GPU, and for a model "
        "without one (the FLAIR baseline) with --n-jobs above 1; processes otherwise "
        "(a network on CPUs measured faster so).",
    )
    where.add_argument(
        "--dask-scheduler",
        metavar="ADDRESS",
        help="Score the scans on the workers of a Dask cluster, such as "
        "tcp://10.0.0.1:8786 (started with 'dask scheduler' and 'dask worker'); "
        "they must see the scans and OUTDIR at the same paths. Needs pip install "
        "'anomseg[cluster]'.",
    )
