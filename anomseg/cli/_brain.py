"""``anomseg brain-extract``: the brain mask of each scan, by deepbet."""

from __future__ import annotations

from ..cohort import ScanTask, own_outputs, read_scan, run_cohort
from ._common import (
    _TINY_VOLUME,
    CommandError,
    _as_options,
    _given_folder,
    _output_folder,
    _reporter,
    _say_summary,
    _scan_paths,
)
from ._parser import _add_budget_option, _add_scan_arguments, add_command


class _BrainMasks(ScanTask):
    """The brain mask of each scan, by deepbet (:class:`BrainExtractor`)."""

    command = "brain-extract"
    suffixes = ("_brainmask.nii.gz",)
    fields = ("brain_mask",)

    def __init__(self, params):
        self.params = params

    def write(self, path, targets, replace):
        from ..io import save_nifti
        from ..preprocessing import BrainExtractor

        image, reference = read_scan(path)
        extractor = BrainExtractor(affine=reference, **self.params).fit([image])
        mask = extractor.get_mask([image])[0]
        save_nifti(mask, reference, targets[0], overwrite=replace)
        return {"brain_fraction": float(mask.mean())}

    def identity(self):
        return f"deepbet threshold={self.params['threshold']!r} margin={self.params['margin']!r}"


def cmd_brain_extract(args):
    from ..preprocessing import BrainExtractor

    params = {"threshold": args.threshold, "margin": args.margin, "device": args.device}
    try:  # the options, once, before any scan: fitting learns nothing here
        BrainExtractor(**params).fit([_TINY_VOLUME])
    except (ValueError, TypeError, ImportError) as exc:
        raise CommandError(_as_options(exc)) from None
    _given_folder(args.output)
    args.scans = _scan_paths(args, own_outputs(args.output, None))
    counts = {"done": 0, "skipped": 0, "failed": 0}
    run_cohort(
        _BrainMasks(params),
        args.scans,
        _output_folder(args.output),
        overwrite=args.overwrite,
        progress=args.progress,
        callback=_reporter("brain-extract", counts, _extracted),
    )
    _say_summary("brain-extract", counts, len(args.scans))
    return 1 if counts["failed"] else 0


def _extracted(record):
    fraction, mask = record["brain_fraction"], record["brain_mask"]
    return f"{record['scan']}: brain {fraction:.1%} of the volume -> {mask}"


def add_parser(commands):
    """The command's options, as a subparser of ``commands``."""
    brain = add_command(
        commands,
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
