"""Scoring a cohort: thousands of scans, on one process, on the cores of one
machine, or on a Dask cluster.

:func:`predict_cohort` reads, scores and writes one scan at a time, so that
its memory does not grow with the number of scans. Each scan's anomaly map
and mask appear together or not at all, and a rerun skips the scans whose
outputs are complete, so a cohort interrupted for any reason is finished by
running the same call again. A summary file (CSV or JSON, written
atomically) records, per scan, its status, the seconds it took, its lesion
volume in mL and its number of connected components.

A run never writes over a file it did not write, and survives being killed
outright (SIGKILL, a power loss), not only interrupted:

* The output folder holds anomseg's record of its outputs,
  ``anomseg-outputs.json`` (see :class:`~anomseg.io._outputs.OutputRecord`):
  every output a run may write is listed before any is written, with the
  identity of the model. A file at an output's path that the record does
  not list is someone else's (the user's truth mask, say), and is left
  alone, even with ``overwrite=True``: that scan fails with a message
  naming the file.
* A rerun finds the half pair of a run killed between the map and the mask
  (listed as that run's), and redoes it without ``overwrite``; it removes
  the temporary files that dead runs left (named with their process id, see
  :mod:`anomseg.io._atomic`).
* A rerun with another model refuses (outputs of another model are not
  "complete"), or, with ``overwrite=True``, redoes them.
* The folder is locked for the run: a second run on it refuses at once.

Where the scans are scored is an existing engine's business:

* ``n_jobs=N``: this process and N - 1 worker processes of joblib's
  executor (loky) on this machine, started only when the work left repays
  their start (``PARALLEL_AFTER_SECONDS``); the model is sent to each worker
  once, when it starts.
* ``engine="overlapped"`` (what ``"auto"`` picks for a model on a GPU):
  one copy of the model scores in this process, several scans per batch of
  its network, while ``n_jobs`` threads read scans ahead and ``n_jobs``
  others write outputs, through bounded queues.
* ``scheduler="tcp://HOST:PORT"`` (or a :class:`distributed.Client`): the
  workers of a Dask cluster, which must see the scans and the output folder
  at the same paths (a shared file system). The model is scattered to every
  worker once; a worker that dies has its scans rescheduled by Dask on the
  others, and a scan that was being written when its worker died leaves no
  partial output.

The command line's ``anomseg predict --n-jobs N``, ``--engine`` and
``--dask-scheduler ADDRESS`` call this function.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import os
import re
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np

from .exceptions import AnomsegWarning, DiskFullError
from .io._atomic import disk_full_error, is_disk_full, remove_stale_temporaries
from .io._outputs import MANIFEST_NAME, OutputRecord, folder_lock
from .io._scans import CHANNEL_FIELD, channel_files, read_header, read_scan
from .utils import check_images
from .utils._text import first_line, printable

__all__ = [
    "SUMMARY_FIELDS",
    "ScanTask",
    "cap_jobs",
    "check_summary",
    "earlier_outputs",
    "mask_statistics",
    "own_outputs",
    "predict_cohort",
    "predict_scan",
    "read_summary",
    "run_cohort",
    "run_scan",
    "usable_cores",
]

#: The outputs written for each scan, by suffix of its name.
OUTPUT_SUFFIXES = ("_anomaly_map.nii.gz", "_mask.nii.gz")

#: The suffix of a scan's figure, with ``figures=True``.
FIGURE_SUFFIX = "_figure.png"

#: The columns of the summary, in order.
SUMMARY_FIELDS = (
    "scan",
    "status",
    "seconds",
    "anomalous_voxels",
    "lesion_volume_ml",
    "n_components",
    "anomaly_map",
    "mask",
    "message",
)

#: Voxel sizes beyond this factor of the healthy scans' range warn.
VOXEL_SIZE_FACTOR = 1.5

#: Seconds between two writes of the summary during a long run.
SUMMARY_INTERVAL = 60.0


# -- one scan ----------------------------------------------------------------------
def voxel_sizes(reference):
    """The voxel size of a scan along its three axes, in mm, as the header
    says it, rounded to 6 digits: the header stores float32, in which 1.2
    would read 1.2000000476837158."""
    return [round(float(z), 6) for z in reference.header.get_zooms()[:3]]


def channel_axis(model):
    """The channel axis of the scans that ``model`` (an estimator or a
    pipeline) takes: that of its first step."""
    first = model.steps[0][1] if hasattr(model, "steps") else model
    return getattr(first, "channel_axis", None)


def voxel_size_warning(path, reference, metadata):
    """A one-line warning if ``reference``'s voxels differ from those of the
    model's healthy scans (``metadata["voxel_size"]``: lowest and highest
    sizes per axis), else None."""
    sizes = (metadata or {}).get("voxel_size")
    if not sizes:
        return None
    zooms = voxel_sizes(reference)
    low, high = sizes
    if any(
        z < a / VOXEL_SIZE_FACTOR or z > b * VOXEL_SIZE_FACTOR for z, a, b in zip(zooms, low, high)
    ):
        # A model that resamples (fit --spacing) sees every scan on its grid.
        if metadata.get("spacing"):
            return None
        return (
            f"'{path}' has voxels of {_mm(zooms)} but the model's healthy scans had "
            f"{_mm(low)} to {_mm(high)}; resample it (fit --spacing), or the "
            "calibrated false-positive rate may not hold."
        )
    return None


def _mm(sizes):
    return " x ".join(f"{s:.3g}" for s in sizes) + " mm"


def score_scan(model, path, image, reference, metadata=None, masked=False):
    """The anomaly map of one scan and the warnings it raised, one line each
    (those of the model and a voxel-size mismatch with its healthy scans).

    Non-finite scores raise a ValueError that names the scan."""
    score = model.masked_score_samples if masked else model.score_samples
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # The batch carries the scan's voxel size, for a model that resamples.
        voxel_sizes = [reference.canonical_voxel_sizes]
        batch = check_images([image], voxel_sizes=voxel_sizes, channel_axis=channel_axis(model))
        anomaly_map = score(batch)[0]
    notes = [voxel_size_warning(path, reference, metadata)]
    notes += [f"'{printable(path)}': {first_line(w.message, path)}" for w in caught]
    if not np.isfinite(np.ma.getdata(anomaly_map)).all():
        raise ValueError(
            f"'{path}' gave non-finite anomaly scores; its intensities "
            f"(up to {np.abs(image).max():.3g}) are beyond what the model handles."
        )
    return anomaly_map, [note for note in notes if note]


def mask_statistics(mask, reference):
    """The anomalous voxels of a mask, its volume in mL (from the voxel size
    of ``reference``) and its number of connected components (voxels that
    share a face, an edge or a corner are connected)."""
    from scipy import ndimage

    mask = np.asarray(mask, bool)
    voxel_ml = _voxel_ml(reference)
    structure = ndimage.generate_binary_structure(mask.ndim, mask.ndim)
    _, n_components = ndimage.label(mask, structure=structure)
    n = int(mask.sum())
    return {
        "anomalous_voxels": n,
        "lesion_volume_ml": round(n * voxel_ml, 4),
        "n_components": int(n_components),
    }


def _voxel_ml(reference):
    return float(np.prod(reference.header.get_zooms()[:3])) / 1000.0


def complete(targets, reference):
    """Whether every output of a scan exists: the NIfTI ones on the scan's
    grid, the others (a figure) not empty."""
    from .io import load_nifti_reference

    try:
        return all(
            load_nifti_reference(t).shape == reference.shape
            if str(t).endswith((".nii", ".nii.gz"))
            else os.path.getsize(t) > 0
            for t in targets
        )
    except (OSError, ValueError):
        return False


def remove_temporaries(folder):
    """Remove the temporary files that atomic writes into ``folder`` left
    behind when their process was killed (SIGKILL, a lost cluster worker),
    which could not clean up: those named with the id of a process no
    longer alive, and those of anomseg 0.2 (``.NAME.XXXXXXXX.nii.gz`` beside
    an output ``NAME``), which only a run holding the folder's lock removes."""
    remove_stale_temporaries(folder)
    with contextlib.suppress(OSError):
        for name in os.listdir(folder):
            if _OLD_TEMPORARY.fullmatch(name):
                with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                    os.unlink(os.path.join(folder, name))


_OLD_TEMPORARY = re.compile(
    r"\..+(_anomaly_map|_mask)\.nii(\.gz)?\.[a-z0-9_]{1,16}(\.nii(\.gz)?)?"
)


class ScanTask:
    """What a run over a cohort does to each scan: :func:`run_cohort` plans
    the outputs, keeps the record of them, skips the scans whose outputs are
    complete and records the failures; the task writes one scan's outputs.

    A subclass defines :meth:`write` and, if the record of a skipped scan
    should hold figures, :meth:`figures`; its class attributes name its
    outputs. It must pickle to run on worker processes (``n_jobs``, a Dask
    cluster).

    Attributes
    ----------
    command : str
        What a second run on the same folder is told is writing there.
    suffixes : tuple of str
        The outputs of a scan, by the suffix of their name.
    fields : tuple of str
        The keys of the outputs' paths in a scan's record, one per suffix.
    changed : str
        What differs when the folder holds outputs of another task: "other
        options than these".
    channel_axis : None or -1
        With -1, the channels of each scan lie on the fourth axis of its
        file (see :func:`~anomseg.io._scans.read_scan`).
    channels : tuple of str or None
        With ``channel_axis=-1``, the names of the channels, which a scan
        given as a path template holds in its files' names (see
        :func:`~anomseg.io._scans.channel_files`).
    """

    command = "run"
    suffixes = ()
    fields = ()
    changed = "other options than these"
    channel_axis = None
    channels = None

    def write(self, path, targets, replace):
        """Write the outputs of scan ``path`` to ``targets`` (replacing the
        files there with ``replace``), together or not at all.

        Returns
        -------
        figures : dict
            What the scan's record holds besides its paths, status and
            seconds, such as ``warnings``, a list of one-line warnings.
        """
        raise NotImplementedError

    def figures(self, targets, reference):
        """What the record of a scan whose outputs ``targets`` are complete
        already holds; ``reference`` is the scan's grid."""
        return {}

    def identity(self):
        """The identity recorded beside the outputs, so that a rerun with
        another task notices: the hash of the task (:func:`model_identity`)."""
        return model_identity(self)


#: Held while a figure is made or drawn: matplotlib's fonts and caches are
#: shared by its figures and not safe to use from two threads at once (the
#: overlapped engine's writers).
_MATPLOTLIB = threading.Lock()


class _Scan:
    """A scan between the stages of :class:`_Prediction`: read and prepared
    (a :class:`~anomseg.base.PreparedImages`), then scored (``map``, in the
    geometry the final estimator scores)."""

    __slots__ = ("image", "map", "notes", "path", "prepared", "reference")

    def __init__(self, path, image, reference, prepared, notes):
        self.path, self.image, self.reference = path, image, reference
        self.prepared, self.notes, self.map = prepared, notes, None


class _Prediction(ScanTask):
    """A model's anomaly map and mask of each scan: the task of
    :func:`predict_cohort`."""

    command = "predict"
    suffixes = OUTPUT_SUFFIXES
    fields = ("anomaly_map", "mask")
    changed = "another model than this one"

    def __init__(self, model, metadata=None, figures=False, truths=None):
        self.model = model
        self.metadata = metadata
        self.channel_axis = channel_axis(model)
        self.channels = (metadata or {}).get("channels")
        self.truths = {str(scan): truth for scan, truth in (truths or {}).items()}
        if figures:
            self.suffixes = (*OUTPUT_SUFFIXES, FIGURE_SUFFIX)
            self.fields = (*self.fields, "figure")

    def write(self, path, targets, replace):
        scan = self.prepare(path)
        self.score([scan])
        return self.finish(scan, targets, replace)

    # The stages of write, which the overlapped engine runs on other threads
    # (prepare and finish) than the scoring (score, on the model's device).
    def prepare(self, path):
        """Read scan ``path`` and bring it to what the model's final
        estimator scores (its ``prepare_scoring``: a pipeline's transforms,
        the checks of ``score_samples``, with their warnings, which are this
        scan's)."""
        image, reference = read_scan(channel_files(path, self.channels), self.channel_axis)
        # The batch carries the scan's voxel size, for a model that resamples.
        voxel_sizes = [reference.canonical_voxel_sizes]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            batch = check_images([image], voxel_sizes=voxel_sizes, channel_axis=self.channel_axis)
            prepared = self.model.prepare_scoring(batch)
        notes = [voxel_size_warning(path, reference, self.metadata)]
        notes += [f"'{printable(path)}': {first_line(w.message, path)}" for w in caught]
        return _Scan(path, image, reference, prepared, [n for n in notes if n])

    def score(self, scans):
        """Score ``scans`` (of :meth:`prepare`) together, in one batch of the
        final estimator (its ``score_prepared``), setting each one's
        ``map``; a warning of that batch is each scan's."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            maps = self.model.score_prepared([scan.prepared for scan in scans])
        for scan, scan_maps in zip(scans, maps):
            scan.map = scan_maps
            scan.notes += [
                f"'{printable(scan.path)}': {first_line(w.message, scan.path)}" for w in caught
            ]

    def finish(self, scan, targets, replace):
        """The map of a scored scan on its own grid, its mask and figures,
        written to ``targets``."""
        from .io import save_figure, save_niftis

        anomaly_map = scan.prepared.map_back(scan.map)[0]
        path, image, reference = scan.path, scan.image, scan.reference
        if not np.isfinite(np.ma.getdata(anomaly_map)).all():
            raise ValueError(
                f"'{path}' gave non-finite anomaly scores; its intensities "
                f"(up to {np.abs(image).max():.3g}) are beyond what the model handles."
            )
        mask = self.model.threshold_maps([anomaly_map])[0]  # predict, scoring once
        statistics = mask_statistics(mask, reference)
        # the figure first: a scan whose truth is off its grid writes nothing
        figure = None
        if targets[2:]:
            with _MATPLOTLIB:
                figure = self._figure(path, image, mask, reference, statistics)
        try:
            save_niftis(
                [(anomaly_map, reference, targets[0]), (mask, reference, targets[1])],
                overwrite=replace,
            )
            if figure is not None:  # a rerun redoes a scan killed before its figure
                with _MATPLOTLIB:  # drawn when saved
                    save_figure(figure, targets[2], overwrite=replace)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            needed = np.asarray(anomaly_map).nbytes + np.asarray(mask).size
            what = "a scan's map and mask, before compression"
            raise disk_full_error(targets[0], needed, what) from None
        return {**statistics, "warnings": scan.notes}

    @property
    def final(self):
        """The model's final estimator (the model, if not a pipeline)."""
        return self.model[-1] if hasattr(self.model, "steps") else self.model

    def slices(self, scan):
        """What a prepared ``scan`` counts in a batch across scans: the 2D
        slices that a network scoring slices receives, or 1 for a model
        without batches (which gains nothing from them)."""
        if getattr(self.final, "inference_batch_size_", None) is None:
            return 1
        return scan.prepared.n_slices

    def _figure(self, path, image, mask, reference, statistics):
        """The scan's figure (:func:`~anomseg.plotting.plot_scan_figure`),
        drawn without pyplot on Agg's canvas, titled with the scan, the
        method, its threshold, the lesion volume and, with a truth, Dice."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        from .io import load_nifti, same_grid
        from .plotting import plot_scan_figure

        truth = self.truths.get(str(path))
        if truth is not None:
            truth, truth_reference = load_nifti(truth)
            if not same_grid(reference, truth_reference):
                raise ValueError(
                    f"the truth mask '{self.truths[str(path)]}' is not on the grid of "
                    f"'{path}' (shape {truth_reference.shape} vs {reference.shape}, or "
                    "another affine); resample it onto the scan."
                )
            truth = truth > 0
        final = self.final
        fpr = getattr(final, "max_fpr", None)
        title = (
            f"{stem(path)}\n{type(final).__name__}, threshold {final.threshold_:.4g}"
            + (f" (healthy FPR {fpr:g})" if fpr is not None else "")
            + f"; lesion {statistics['lesion_volume_ml']:.3g} mL "
            f"in {statistics['n_components']} component(s)"
        )
        if truth is not None:
            overlap = 2 * np.count_nonzero(mask & truth)
            dice = overlap / max(np.count_nonzero(mask) + np.count_nonzero(truth), 1)
            title += f", truth {truth.sum() * _voxel_ml(reference):.3g} mL, Dice {dice:.3f}"
        figure = Figure()
        FigureCanvasAgg(figure)
        if self.channel_axis is not None:
            image = image[..., _anatomy_channel(final, self.channels)]
        return plot_scan_figure(
            image, mask, truth, voxel_size=voxel_sizes(reference), title=title, figure=figure
        )

    def figures(self, targets, reference):
        from .io import load_nifti

        mask, _ = load_nifti(targets[1])
        return mask_statistics(mask > 0, reference)

    def identity(self):
        return model_identity(self.model)


def _anatomy_channel(final, names):
    """The channel a figure draws the scan from: the one named FLAIR, else
    the FLAIR channel of a method that reads one, else the first."""
    lowered = [str(name).lower() for name in names or ()]
    if "flair" in lowered:
        return lowered.index("flair")
    return getattr(final, "flair_channel", 0)


def predict_scan(model, path, targets, overwrite=False, metadata=None, redo_partial=False):
    """Score one scan and write its anomaly map and mask (together or not at
    all): the work of one task of :func:`predict_cohort`, in whichever
    process runs it.

    Returns its summary record (:data:`SUMMARY_FIELDS`, with a ``warnings``
    list more). Outputs that are complete already are kept (status
    ``"skipped"``, figures read from the mask) unless ``overwrite``; see
    :func:`run_scan`.
    """
    task = _Prediction(model, metadata)
    return run_scan(task, path, targets, overwrite=overwrite, redo_partial=redo_partial)


def run_scan(task, path, targets, overwrite=False, redo_partial=False):
    """Run ``task`` (a :class:`ScanTask`) on one scan, writing its outputs
    ``targets``, in whichever process runs it.

    Returns its record: the scan, the outputs' paths (by ``task.fields``),
    ``status``, ``seconds``, ``warnings`` and what :meth:`ScanTask.write`
    returns. Outputs that are complete already are kept (status
    ``"skipped"``, figures from :meth:`ScanTask.figures`) unless
    ``overwrite``; an incomplete set (some missing, or not NIfTI on the
    scan's grid) is redone with ``redo_partial`` (the caller knows that
    anomseg wrote it), else it fails. Any failure is caught and recorded
    (status ``"failed"`` and the message), so one bad scan does not stop a
    cohort; but a full disk, which would fail every scan, raises a
    :class:`~anomseg.exceptions.DiskFullError`.
    """
    started = time.perf_counter()
    record, replace = _begin(task, path, targets, overwrite, redo_partial)
    if "status" not in record:
        with _recorded(record, path):
            record.update(task.write(path, targets, replace), status="done")
    record["seconds"] = round(time.perf_counter() - started, 3)
    return record


def _begin(task, path, targets, overwrite, redo_partial):
    """The record of a scan about to run, and whether its outputs replace
    files there: the record is whole already (status ``"skipped"`` or
    ``"failed"``) when there is nothing to write (see :func:`run_scan`)."""
    from .io import load_nifti_reference

    record = {"scan": str(path), **_paths(task, targets), "warnings": []}
    with _recorded(record, path):
        present = [t for t in targets if os.path.lexists(t)]
        if present and not overwrite:
            reference = load_nifti_reference(path)
            if complete(targets, reference):
                record.update(status="skipped", **task.figures(targets, reference))
                return record, False
            if not redo_partial:
                raise FileExistsError(
                    f"'{present[0]}' exists, but the outputs of '{path}' are incomplete "
                    "(missing, or not NIfTI on its grid); pass overwrite=True to redo them."
                )
        Path(targets[0]).parent.mkdir(parents=True, exist_ok=True)
    return record, overwrite or bool(present)


@contextlib.contextmanager
def _recorded(record, path):
    """Record in ``record`` the failure of the work inside (status
    ``"failed"`` and its message), so one bad scan does not stop a cohort;
    a full disk, which would fail every scan, goes on up."""
    try:
        yield
    except DiskFullError:
        raise  # every scan after it would fail alike: stop the cohort
    except Exception as exc:  # one bad scan does not stop the cohort
        record.update(status="failed", message=_error_line(exc, path))


def _paths(task, targets):
    return {field: str(target) for field, target in zip(task.fields, targets)}


def _error_line(exc, path):
    text = first_line(exc, path) if str(exc).strip() else type(exc).__name__
    if not isinstance(exc, (ValueError, TypeError, OSError)):
        text = f"unexpected {type(exc).__name__}: {text}"
    if printable(path) not in text:
        text = f"'{printable(path)}': {text}"
    return text


# -- planning ----------------------------------------------------------------------
def stem(path):
    """A scan's file name without ``.nii.gz`` or ``.nii`` (and, for a path
    template of one file per channel, without its ``{channel}`` field and
    a separator beside it: ``p01_{channel}.nii.gz`` gives ``p01``)."""
    field = re.escape(CHANNEL_FIELD)
    name = re.sub(rf"[_\-.]{field}|{field}[_\-.]?", "", Path(path).name)
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def plan_outputs(scans, output, suffixes=OUTPUT_SUFFIXES, keep_tree=False):
    """The output files of each scan, named after it (under the scan's folder
    relative to the scans' common folder with ``keep_tree``), as a list of
    ``(scan, [targets])``; two scans that would write the same file, or an
    output that would replace one of the scans, raise a ValueError before
    any work."""
    output = Path(output)
    folders = [Path(os.path.realpath(path)).parent for path in scans]
    root = Path(os.path.commonpath(folders)) if keep_tree and folders else None
    inputs = {os.path.realpath(path): path for path in scans}
    planned, writers = [], {}
    for path, folder in zip(scans, folders):
        where = output / folder.relative_to(root) if keep_tree else output
        targets = [where / f"{stem(path)}{suffix}" for suffix in suffixes]
        for target in targets:
            if os.path.realpath(target) in inputs:
                raise ValueError(
                    f"'{path}' would write '{target}', which is one of the scans; "
                    "write the outputs to another folder (overwrite never replaces "
                    "a scan)."
                )
            if target in writers:
                raise ValueError(
                    f"'{writers[target]}' and '{path}' would both write '{target}'; "
                    "mirror the scans' folders under the output folder (keep_tree, "
                    "--keep-tree), or rename one."
                )
            writers[target] = path
        planned.append((str(path), targets))
    return planned


def file_identity(path):
    """What tells two paths to one file apart from two files: the device
    and inode (which a hard link shares), else the real path."""
    try:
        stat = os.stat(path)
    except OSError:
        return os.path.realpath(path)
    return (stat.st_dev, stat.st_ino)


def check_scans(scans, channel_axis=None, channels=None):
    """Every scan's header, read before any work, without keeping it: a
    missing, foreign, 2D or 4D file (without ``channel_axis``), or one
    given twice, raises at once; a very large one warns (see
    :func:`warn_large_scans`). A path template is read as the files of its
    ``channels``."""

    seen = {}
    references = []
    for path in scans:
        key = file_identity(path)
        if key in seen:
            also = f" (as '{seen[key]}' too)" if str(seen[key]) != str(path) else ""
            raise ValueError(f"'{path}' is given twice{also}.")
        seen[key] = path
        references.append(read_header(channel_files(path, channels), channel_axis)[0])
    warn_large_scans(scans, references)


#: Scans with more voxels than this warn before any work: 2^26, about nine
#: times a brain at 1 mm (182 x 218 x 182), where scoring takes gigabytes
#: and minutes. Such a grid is more often an unintended resolution (or a
#: header that declares more than the file holds: a 512^3 volume of zeros
#: compresses to half a megabyte) than a scan that needs it.
LARGE_SCAN_VOXELS = 2**26


def warn_large_scans(paths, references):
    """One warning, before any work, naming the scans whose grid holds more
    than :data:`LARGE_SCAN_VOXELS` voxels (the largest first)."""
    large = [
        (int(np.prod(ref.shape)), path, ref.shape)
        for path, ref in zip(paths, references)
        if np.prod(ref.shape) > LARGE_SCAN_VOXELS
    ]
    if not large:
        return
    n_voxels, path, shape = max(large, key=lambda item: item[0])
    others = f" (and {len(large) - 1} other scan(s) of more than {LARGE_SCAN_VOXELS:,})"
    warnings.warn(
        f"'{path}' holds {' x '.join(map(str, shape))} voxels ({n_voxels / 1e6:.0f} "
        f"million, {n_voxels / (182 * 218 * 182):.0f} times a brain at 1 mm)"
        f"{others if len(large) > 1 else ''}: scoring it takes gigabytes of memory and "
        "minutes; resample it if that resolution is not intended.",
        AnomsegWarning,
        stacklevel=3,
    )


# -- the summary ---------------------------------------------------------------------
#: How summaries are encoded: UTF-8, with a file name that is not (decoded by
#: Python with surrogate escapes) written back as its own bytes, so that any
#: name a file system holds is written, and read back, as it is.
_TEXT = {"encoding": "utf-8", "errors": "surrogateescape"}


def _summary_format(path):
    suffix = Path(path).suffix.lower()
    if suffix not in (".csv", ".json"):
        raise ValueError(
            f"The 'summary' file must end in .csv or .json; got '{path}'; pass "
            "summary=None to write none."
        )
    return suffix[1:]


def _is_summary(path):
    """Whether an existing file is a summary that anomseg wrote (which a
    rerun may replace), rather than a user's file."""
    return _summary_rows(path) is not None


def _summary_rows(path):
    """The rows of a file that is a summary anomseg wrote (a CSV file that
    starts with its header, a JSON list of which some row, or none, has its
    fields), as read, whether or not each can be parsed; None for any other
    file. A spreadsheet's byte-order mark is allowed."""
    try:
        text = Path(path).read_text(**_TEXT).removeprefix("\ufeff")
    except (OSError, UnicodeDecodeError):
        return None
    if _summary_format(path) == "csv":
        if text.splitlines()[:1] != [",".join(SUMMARY_FIELDS)]:
            return None
        return list(csv.DictReader(io.StringIO(text)))
    try:
        rows = json.loads(text)
    except ValueError:
        return None
    ours = isinstance(rows, list) and (
        not rows or any(isinstance(r, dict) and set(r) == set(SUMMARY_FIELDS) for r in rows)
    )
    return rows if ours else None


def _parsed_row(row):
    """A summary row with its figures as numbers, or None if it is not one
    (a line a user added, a row cut short)."""
    if not isinstance(row, dict) or set(row) != set(SUMMARY_FIELDS):
        return None
    if not isinstance(row["scan"], str) or any(v is None for v in row.values()):
        return None
    try:
        figures = {k: kind(row[k]) if row[k] != "" else "" for k, kind in _NUMBERS.items()}
    except (TypeError, ValueError, OverflowError):
        return None
    return {**row, **figures}


def read_summary(path):
    """The rows of a summary that anomseg wrote, by scan, with their figures
    as numbers; an empty dict if there is none. Rows that cannot be parsed
    (a note a user added, a row cut short) are skipped: a rerun rewrites
    the summary whole, without them."""
    rows = _summary_rows(path) if Path(path).is_file() else None
    parsed = [_parsed_row(row) for row in rows or []]
    return {row["scan"]: row for row in parsed if row is not None}


_NUMBERS = {
    "seconds": float,
    "anomalous_voxels": int,
    "lesion_volume_ml": float,
    "n_components": int,
}


def write_summary(path, records):
    """Write the summary rows (in the scans' order) atomically to a CSV or
    JSON file, replacing a summary written before (unless it holds the
    same)."""
    from .io import atomic_write

    rows = [{key: record.get(key, "") for key in SUMMARY_FIELDS} for record in records]
    if _summary_format(path) == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, SUMMARY_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text = buffer.getvalue()
    else:
        text = json.dumps(rows, indent=1) + "\n"
    with contextlib.suppress(OSError, UnicodeDecodeError):
        if Path(path).read_text(**_TEXT) == text:
            return Path(path)
    data = text.encode(**_TEXT)
    return atomic_write(
        path, lambda tmp: Path(tmp).write_bytes(data), overwrite=True, size=len(data)
    )


# -- engines -----------------------------------------------------------------------
_WORKER_TASK = None


def _start_worker(task, n_threads):
    """Initialiser of a local worker process: keep the task (and its model),
    use ``n_threads`` threads, and make SIGTERM clean up as SIGINT does."""
    import signal

    global _WORKER_TASK
    _WORKER_TASK = task
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n_threads)
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def _run_in_worker(path, targets, options):
    return run_scan(_WORKER_TASK, path, targets, **options)


def _run_on_cluster(path, targets, options, task):
    return run_scan(task, path, targets, **options)


def _run_serial(task, tasks):
    for path, targets, options in tasks:
        yield run_scan(task, path, targets, **options)


#: The seconds that the scans left would take this process, at its pace so
#: far, beyond which ``n_jobs`` starts its workers. Starting one costs one to
#: two seconds of a core (an interpreter, anomseg's imports, the model), which
#: shorter work does not repay: on 2 cores, 20 scans of the FLAIR baseline
#: (a second in all) took 2.2 times as long on 2 workers as serially.
PARALLEL_AFTER_SECONDS = 5.0


def _run_local(task, tasks, n_jobs):
    """The scans on this process and, once the work left is worth their
    start (``PARALLEL_AFTER_SECONDS``), on ``n_jobs - 1`` loky processes
    too, each scan taken by whichever is free first.

    This process scores from the start, at the serial pace, and keeps
    scoring while the workers start: a worker takes a scan only once it is
    ready, one at a time, so a short cohort is done as fast as serially and
    the last scans never wait in a busy worker's queue. Once the workers
    start, every process uses an equal share of the cores as torch threads.
    """
    import queue
    import threading
    from concurrent.futures import Future

    from joblib.externals.loky import get_reusable_executor

    n_threads = max(1, usable_cores() // n_jobs)
    items, lock, stopped = iter(tasks), threading.Lock(), threading.Event()
    finished = queue.SimpleQueue()  # the workers' futures, as they finish
    sent = [0]  # scans given to the workers
    executor = None

    def take(for_worker):
        with lock:
            item = None if stopped.is_set() else next(items, None)
            sent[0] += for_worker and item is not None
            return item

    def feed(future):
        """A worker's callback: hand on its scan's future (or its failure to
        start), and give it the next scan."""
        if future.cancelled():
            return
        if not future.ping or future.exception() is not None:
            finished.put(future)
        item = take(for_worker=True)
        if item is not None:
            try:
                _submit(executor, feed, _run_in_worker, *item)
            except Exception as exc:  # a broken pool: said in this scan's place
                failed = Future()
                failed.set_exception(exc)
                finished.put(failed)

    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    done = seconds = received = 0
    try:
        while (item := take(for_worker=False)) is not None:
            record = run_scan(task, item[0], item[1], **item[2])
            yield record
            done, seconds = done + 1, seconds + record["seconds"]
            left = len(tasks) - done - sent[0]
            if executor is None and seconds / done * left > PARALLEL_AFTER_SECONDS:
                executor = get_reusable_executor(
                    max_workers=n_jobs - 1,
                    initializer=_start_worker,
                    initargs=(task, n_threads),
                    reuse=False,
                )
                for _ in range(n_jobs - 1):  # each worker asks for a scan once ready
                    _submit(executor, feed, _worker_ready, ping=True)
                if torch is not None:
                    torch.set_num_threads(n_threads)
            with contextlib.suppress(queue.Empty):
                while True:
                    record = finished.get_nowait().result()
                    received += 1
                    yield record
        while received < sent[0]:
            record = finished.get().result()
            received += 1
            yield record
    finally:
        stopped.set()
        if torch is not None:
            torch.set_num_threads(threads)
        if executor is not None:
            # Workers starting or idle have nothing to finish; one stopped in
            # the middle of a scan (interrupted) leaves temporaries, swept.
            executor.shutdown(wait=True, kill_workers=True)
            if received < sent[0]:
                for folder in {targets[0].parent for _, targets, _ in tasks}:
                    remove_stale_temporaries(folder)


#: The slices that the overlapped engine gathers, at most, into one batch
#: of the network across scans, when the final estimator's
#: ``inference_batch_size_`` is smaller (a scan deeper than this is scored
#: alone).
OVERLAP_BATCH_SLICES = 512


def _run_overlapped(task, tasks, n_jobs):
    """The scans read and transformed on ``n_jobs`` threads, scored on this
    thread in batches across scans, and written on ``n_jobs`` other threads:
    the one process that owns the model's device keeps it busy while others
    read and write files. A model without a network is scored on the writer
    threads, in parallel.

    Queues are bounded (at most ``2 * n_jobs`` scans read ahead of the
    batch being scored, and ``2 * n_jobs`` waiting to be written), so memory
    does not grow with the cohort. Reading (zlib, numpy) and writing (zlib)
    release the GIL for most of their time; the network's kernels run on
    the device, or on torch's own threads.
    """
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    n_jobs = max(1, n_jobs or 1)
    items = iter(tasks)
    readers = ThreadPoolExecutor(n_jobs, thread_name_prefix="anomseg-read")
    writers = ThreadPoolExecutor(n_jobs, thread_name_prefix="anomseg-write")
    reading, writing = deque(), deque()
    budget = max(getattr(task.final, "inference_batch_size_", None) or 1, OVERLAP_BATCH_SLICES)
    # A model without a network gains nothing from batches, and is scored on
    # the writers, in parallel, rather than on this thread.
    batched = bool(_network_devices(task.final))

    def read(item):
        path, targets, options = item
        started = time.perf_counter()
        record, replace = _begin(task, path, targets, **options)
        scan = None
        if "status" not in record:
            with _recorded(record, path):
                scan = task.prepare(path)
        return record, scan, targets, replace, started

    def write(record, scan, targets, replace, started):
        with _recorded(record, scan.path):
            if scan.map is None:  # not batched, or its batch failed: scored alone
                task.score([scan])
            record.update(task.finish(scan, targets, replace), status="done")
        return _timed(record, started)

    def fill():
        while len(reading) < 2 * n_jobs and (item := next(items, None)) is not None:
            reading.append(readers.submit(read, item))

    try:
        fill()
        while reading:
            # The next scan in order, and those read already behind it that
            # fit in one batch of the network.
            group = [reading.popleft().result()]
            slices = task.slices(group[0][1]) if group[0][1] is not None else 0
            while reading and reading[0].done() and group[0][1] is not None:
                ready = reading[0].result()
                if ready[1] is not None and slices + task.slices(ready[1]) > budget:
                    break
                group.append(reading.popleft().result())
                slices += task.slices(ready[1]) if ready[1] is not None else 0
            fill()
            scans = [g for g in group if g[1] is not None]
            if scans and batched:
                with contextlib.suppress(Exception):  # then each alone, in write
                    task.score([g[1] for g in scans])
            for record, scan, targets, replace, started in group:
                if scan is None:  # skipped, or failed to read
                    yield _timed(record, started)
                    continue
                writing.append(writers.submit(write, record, scan, targets, replace, started))
            while writing and (writing[0].done() or len(writing) > 2 * n_jobs):
                yield writing.popleft().result()
        while writing:
            yield writing.popleft().result()
    finally:
        for future in itertools.chain(reading, writing):
            future.cancel()
        readers.shutdown(wait=True, cancel_futures=True)
        writers.shutdown(wait=True, cancel_futures=True)  # writes are whole or absent


def _timed(record, started):
    record["seconds"] = round(time.perf_counter() - started, 3)
    return record


def _submit(executor, callback, function, *args, ping=False):
    future = executor.submit(function, *args)
    future.ping = ping
    future.add_done_callback(callback)


def _worker_ready():
    """A worker's first task: it runs once the worker has started."""


def _run_dask(task, tasks, scheduler):
    """The scans as tasks of a Dask cluster; the task (and its model) is
    scattered to the workers once, and each finished task is released at once."""
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise ImportError(
            "scheduler= needs Dask's distributed scheduler: pip install 'dask[distributed]'."
        ) from None
    client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
    try:
        shared = client.scatter(task, broadcast=True, hash=False)
        futures = client.map(
            _run_on_cluster,
            [path for path, _, _ in tasks],
            [targets for _, targets, _ in tasks],
            [options for _, _, options in tasks],
            task=shared,
            pure=False,
        )
        by_key = {future.key: item for future, item in zip(futures, tasks)}
        for future in as_completed(futures):
            try:
                record = future.result()
            except DiskFullError:
                raise
            except Exception as exc:  # the cluster gave up (KilledWorker...)
                path, targets, _ = by_key[future.key]
                record = _failed(task, path, targets, _error_line(exc, path))
            future.release()
            yield record
    finally:
        if client is not scheduler:
            client.close()


def _failed(task, path, targets, message):
    return {
        "scan": str(path),
        **_paths(task, targets),
        "status": "failed",
        "message": message,
        "seconds": 0.0,
        "warnings": [],
    }


def usable_cores():
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def cap_jobs(n_jobs, n_scans):
    """The worker processes that ``n_jobs`` gives for ``n_scans`` scans:
    at most one per scan and one per core (-1: one per core), at least 1.

    More would only cost: each worker starts an interpreter and receives the
    model, and workers beyond the cores share them (3 scans on 64 workers
    took 30 times as long as on one).
    """
    cores = usable_cores()
    wanted = cores if n_jobs == -1 else n_jobs
    return max(1, min(wanted, n_scans, cores))


def model_identity(model):
    """A model's identity for the record of its outputs: the hash of its
    content (:func:`joblib.hash`), or None where it cannot be hashed."""
    import joblib

    try:
        return "joblib:" + joblib.hash(model)
    except Exception:  # an object that does not pickle: no identity, no check
        return None


# -- what to do with each scan ------------------------------------------------------
def foreign_output_message(target, record):
    """Why ``target``, in the way of an output, is left alone: anomseg's
    ``record`` does not list it."""
    return (
        f"'{target}' exists and anomseg did not write it (it is not in "
        f"'{record.path.name}', the record of anomseg's outputs there), so it is left "
        "alone, even with overwrite=True: move it away or choose another output folder."
    )


def _plan_tasks(task, planned, record, task_id, overwrite):
    """Each scan's work ``(path, targets, options)`` for :func:`run_scan`,
    or its failed record if an output in the way is not anomseg's; the
    outputs that the work may write are marked pending in ``record``.

    Raises a ValueError, before any work, if outputs of another model (or
    task) are in the way and ``overwrite`` is False."""
    from .io import load_nifti_reference

    tasks, refused, changed = [], [], []
    for path, targets in planned:
        present = [t for t in targets if os.path.lexists(t)]
        owners = [record.owner(t) for t in present]
        foreign = [t for t, owner in zip(present, owners) if owner is None]
        if foreign:
            whole = len(present) == len(targets) and complete(targets, load_nifti_reference(path))
            if overwrite or not whole:
                message = foreign_output_message(foreign[0], record)
                refused.append(_failed(task, path, targets, message))
            else:  # complete: kept, as written by anomseg before it kept a record
                tasks.append((path, targets, {"overwrite": False}))
            continue
        other = [
            t
            for t, owner in zip(present, owners)
            if None not in (task_id, owner.get("model")) and owner["model"] != task_id
        ]
        if other and not overwrite:
            changed.append(other[0])
            continue
        redo = overwrite or bool(other)
        if (
            redo
            or len(present) < len(targets)
            or not all(o.get("state") == "written" for o in owners)
        ):
            record.mark_pending(targets, path, task_id)
        tasks.append((path, targets, {"overwrite": redo, "redo_partial": True}))
    if changed:
        more = f" (and the outputs of {len(changed) - 1} more scan(s))" if len(changed) > 1 else ""
        raise ValueError(
            f"'{changed[0]}'{more} was written with {task.changed}, as "
            f"'{record.path}' records; pass overwrite=True to redo them, or choose "
            "another output folder."
        )
    return tasks, refused


def _update_record(record, tasks, records, task_id, final):
    """Mark the outputs of the scans done (or found complete) as written;
    at the end, drop the pending outputs that never appeared."""
    for (path, targets, _), result in zip(tasks, records):
        status = result and result["status"]
        ours = all(record.owner(t) is not None for t in targets)
        if status == "done" or (status == "skipped" and ours):
            with contextlib.suppress(OSError):  # removed meanwhile
                record.mark_written(targets, path, task_id)
        if final:
            record.forget_missing(targets)


def own_outputs(output_dir, summary="summary.csv"):
    """The files of ``output_dir`` that a run of :func:`predict_cohort`
    wrote there (as its record says) and the record and summary themselves,
    as real paths, to leave out of the scans of a rerun that matches the
    folder (``--glob 'cohort/**/*.nii.gz' -o cohort/results``)."""
    output = Path(output_dir)
    files = [output / MANIFEST_NAME]
    if summary is not None:
        files.append(output / summary)
    if output.is_dir():
        with contextlib.suppress(OSError, ValueError):
            files += OutputRecord(output).files()
    return {os.path.realpath(f) for f in files}


def earlier_outputs(paths):
    """The files among ``paths`` that a run of anomseg wrote as its outputs,
    in any folder: those that a record of outputs (``anomseg-outputs.json``)
    in the file's folder or a folder above lists, the records themselves
    and the summaries anomseg wrote in a folder that has one. Each record is
    read once.

    Used to leave the results of earlier runs out of the scans matched by a
    pattern (``--glob 'cohort/**/*.nii.gz' -o cohort/run2`` after
    ``-o cohort/run1``).

    Returns
    -------
    found : set of str
        The paths, as given, of the files that are anomseg's outputs.
    """
    listed = {}  # folder -> the real paths its record lists, or None

    def record_of(folder):
        if folder not in listed:
            listed[folder] = None
            if os.path.isfile(os.path.join(folder, MANIFEST_NAME)):
                with contextlib.suppress(OSError, ValueError):
                    files = OutputRecord(folder).files()
                    listed[folder] = {os.path.realpath(f) for f in files}
        return listed[folder]

    found = set()
    for path in paths:
        real, own = os.path.realpath(path), os.path.dirname(os.path.abspath(path))
        if os.path.basename(path) == MANIFEST_NAME and record_of(own) is not None:
            found.add(path)
            continue
        folder, parent = None, own
        while parent != folder:
            folder, parent = parent, os.path.dirname(parent)
            files = record_of(folder)
            if files is not None and (real in files or _written_summary(path)):
                found.add(path)
                break
    return found


def _written_summary(path):
    return Path(path).suffix.lower() in (".csv", ".json") and _is_summary(path)


def check_summary(output_dir, summary):
    """The path of a run's summary, ``output_dir / summary``, checked before
    any work: a name ending in .csv or .json, other than the record of
    outputs, and no file that anomseg did not write; None for no summary.

    Raises
    ------
    ValueError
        If the name is not one a summary may have.
    FileExistsError
        If a file of that name exists that is not a summary anomseg wrote.
    """
    if summary is None:
        return None
    output = Path(output_dir)
    summary_path = output / summary
    _summary_format(summary_path)
    if os.path.normpath(summary_path) == os.path.normpath(output / MANIFEST_NAME):
        raise ValueError(
            f"The 'summary' file cannot be '{MANIFEST_NAME}', anomseg's record of "
            "its outputs; choose another name."
        )
    if summary_path.exists() and not _is_summary(summary_path):
        raise FileExistsError(
            f"The 'summary' file '{summary_path}' exists and is not a summary "
            "written by anomseg; it is left alone: choose another name."
        )
    return summary_path


# -- the cohort ---------------------------------------------------------------------
def predict_cohort(
    model,
    scans,
    output_dir,
    *,
    n_jobs=None,
    scheduler=None,
    keep_tree=False,
    overwrite=False,
    summary="summary.csv",
    metadata=None,
    progress=False,
    callback=None,
    model_id=None,
    figures=False,
    truths=None,
    engine="auto",
):
    """Write the anomaly map and mask of every scan of a cohort, one scan at
    a time, on this process, on ``n_jobs`` local processes or on a Dask
    cluster, never over a file that anomseg did not write (see the module's
    notes).

    Parameters
    ----------
    model : estimator or AnomalyPipeline
        A fitted model, as :func:`anomseg.load_model` returns it. It scores
        whole scans (3D arrays in the canonical orientation), so it should
        hold its preprocessing (an :class:`~anomseg.preprocessing.AnomalyPipeline`).
    scans : list of str or path-like
        The NIfTI scans. Every header is read before any work.
    output_dir : str or path-like
        Folder of the outputs, created if need be: ``SCAN.nii.gz`` gives
        ``SCAN_anomaly_map.nii.gz`` and ``SCAN_mask.nii.gz``.
    n_jobs : int or None, default=None
        Scans scored at once on this machine: this process and ``n_jobs - 1``
        worker processes (joblib's loky executor); None or 1 scores in this
        process only, -1 uses every core. At most one per scan and per core
        (see :func:`cap_jobs`). The workers start only once the scans left
        would take this process more than ``PARALLEL_AFTER_SECONDS``, so
        a short cohort is not slower than serially; each process then gets
        an equal share of the cores as torch threads.
    scheduler : str, distributed.Client or None, default=None
        A Dask scheduler's address (``"tcp://HOST:PORT"``) or client; the
        scans are then scored by its workers, and ``n_jobs`` must be None.
    keep_tree : bool, default=False
        Mirror the scans' folders (relative to their common folder) under
        ``output_dir``, for scans that share a file name.
    overwrite : bool, default=False
        Redo and replace complete outputs too, and those of another model.
        Without it, scans whose outputs are complete are skipped, a half pair
        that a killed run of anomseg left is redone, and outputs of another
        model (by ``model_id``) refuse the run before any work. Either way,
        an output file that anomseg did not write (not in the folder's
        ``anomseg-outputs.json``) is never replaced: that scan fails.
    summary : str, path-like or None, default="summary.csv"
        The summary file: a name ending in ``.csv`` or ``.json``, relative to
        ``output_dir`` unless absolute; None writes none. It is written
        atomically at the end, every minute of a long run and when the run
        is interrupted, and replaced by a rerun, where a scan skipped keeps
        the row of the run that scored it; a file of that name that anomseg
        did not write is never replaced.
    metadata : dict or None, default=None
        What the model file's writer stored (:func:`anomseg.model_info`'s
        ``"metadata"``); its ``voxel_size`` warns of scans unlike the
        healthy ones.
    progress : bool, default=False
        Show a progress bar of the scans on stderr.
    callback : callable or None, default=None
        ``callback(record)`` for each scan as it finishes (in the order they
        finish), such as to print a line.
    model_id : str or None, default=None
        The identity of the model, recorded beside its outputs so that a
        rerun with another model notices (the command line passes the model
        file's SHA-256); None hashes the model with :func:`joblib.hash`.
    figures : bool, default=False
        Also write each scan's figure, ``SCAN_figure.png``: its mask (and
        truth) outlined over it, at the axial slices of most lesion and in
        orthogonal views, titled with the method, its threshold and the
        lesion volume (:func:`anomseg.plotting.plot_scan_figure`). Needs
        matplotlib. It is an output as the map and mask are: written
        atomically, in the folder's record, skipped when complete.
    truths : dict or None, default=None
        Truth masks (on each scan's grid) outlined in the figures, by scan
        path as given in ``scans``.
    engine : {"auto", "processes", "overlapped"}, default="auto"
        How this machine runs the scans (``scheduler`` aside):

        - ``"processes"``: one scan at a time in this process and, with
          ``n_jobs``, in worker processes too, each with its own copy of
          the model.
        - ``"overlapped"``: ``n_jobs`` threads read and transform scans
          while this process's thread scores them, several scans in one
          batch of the network (up to ``OVERLAP_BATCH_SLICES`` slices),
          and ``n_jobs`` other threads write the outputs; one copy of the
          model, on its device. The outputs are those of ``"processes"``.
        - ``"auto"``: ``"overlapped"`` when the model runs a network on a
          GPU (a worker process each would start CUDA and load the model,
          and the GPU would wait on files), or runs none and ``n_jobs`` is
          above 1 (reading and writing files is then most of the work);
          ``"processes"`` otherwise: for a network on CPUs it measured
          faster, and used less memory (see the scale page of the docs).

    Returns
    -------
    records : list of dict
        One per scan, in the order of ``scans``: the :data:`SUMMARY_FIELDS`
        (``status`` is ``"done"``, ``"skipped"`` or ``"failed"``) and
        ``warnings``, a list of one-line warnings.

    Raises
    ------
    BlockingIOError
        If another run holds the output folder's lock.
    ValueError
        If the folder holds outputs of another model and ``overwrite`` is
        False (or another bad argument).
    DiskFullError
        If the disk of the outputs is full; the outputs of the scan being
        written are absent, and no temporary file is left.

    Examples
    --------
    >>> from anomseg import load_model
    >>> from anomseg.cohort import predict_cohort            # doctest: +SKIP
    >>> model = load_model("model.anomseg")                  # doctest: +SKIP
    >>> records = predict_cohort(model, scans, "results/", n_jobs=4)  # doctest: +SKIP
    >>> records = predict_cohort(                            # doctest: +SKIP
    ...     model, scans, "results/", scheduler="tcp://10.0.0.1:8786")
    """
    if not hasattr(model, "threshold_maps"):
        raise TypeError(
            "The 'model' of predict_cohort must be a fitted anomseg estimator or "
            f"AnomalyPipeline; got {type(model).__name__}."
        )
    return run_cohort(
        _Prediction(model, metadata, figures, truths),
        scans,
        output_dir,
        n_jobs=n_jobs,
        scheduler=scheduler,
        keep_tree=keep_tree,
        overwrite=overwrite,
        summary=summary,
        progress=progress,
        callback=callback,
        task_id=model_id,
        engine=engine,
    )


def run_cohort(
    task,
    scans,
    output_dir,
    *,
    n_jobs=None,
    scheduler=None,
    keep_tree=False,
    overwrite=False,
    summary=None,
    progress=False,
    callback=None,
    task_id=None,
    engine="auto",
):
    """Run ``task`` (a :class:`ScanTask`) on every scan of a cohort, as
    :func:`predict_cohort` does for a model's maps and masks: the outputs
    planned and checked before any work, the folder locked, a record of
    outputs kept, complete outputs skipped, a failed scan recorded while the
    others go on.

    The parameters are :func:`predict_cohort`'s; ``summary`` is None by
    default, and a summary has the columns of :data:`SUMMARY_FIELDS` (those
    the task's records lack are left empty). ``task_id`` defaults to
    ``task.identity()``. ``engine="overlapped"`` needs a task that scores
    in stages (``prepare``, ``score``, ``finish``, as the predictions do).

    Returns
    -------
    records : list of dict
        One per scan, in the order of ``scans`` (see :func:`run_scan`).
    """
    if n_jobs is not None and scheduler is not None:
        raise ValueError(
            "Pass either 'n_jobs' (local processes) or 'scheduler' (a Dask cluster), "
            f"not both; got n_jobs={n_jobs!r} and scheduler={scheduler!r}."
        )
    if n_jobs is not None and (
        isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs == 0 or n_jobs < -1
    ):
        raise ValueError(f"'n_jobs' must be None, -1 or a positive int; got {n_jobs!r}.")
    engine = _check_engine(engine, task, scheduler, n_jobs)
    if isinstance(scans, (str, os.PathLike)):
        raise TypeError(
            f"'scans' must be a list of paths; got the single path {str(scans)!r}: "
            "wrap it in a list."
        )
    if not str(output_dir):
        raise ValueError(
            "The 'output_dir' is an empty string; give a folder ('.' for the working folder)."
        )
    scans = [str(s) for s in scans]
    output = Path(output_dir)
    if output.exists() and not output.is_dir():
        raise ValueError(f"The 'output_dir' '{output}' is a file; give a folder.")
    summary_path = check_summary(output, summary)
    check_scans(scans, task.channel_axis, task.channels)
    planned = plan_outputs(scans, output, task.suffixes, keep_tree)
    if n_jobs is not None:
        n_jobs = cap_jobs(n_jobs, len(planned))
    if task_id is None:
        task_id = task.identity()
    output.mkdir(parents=True, exist_ok=True)
    with folder_lock(output, task.command):
        record = OutputRecord(output)
        for folder in {output} | {targets[0].parent for _, targets in planned}:
            remove_temporaries(folder)
        tasks, refused = _plan_tasks(task, planned, record, task_id, overwrite)
        record.save()
        return _run_tasks(
            task, tasks, refused, planned, record, task_id,
            n_jobs, scheduler, engine, summary_path, progress, callback,
        )  # fmt: skip


#: The engines of a run on this machine (see :func:`predict_cohort`).
ENGINES = ("auto", "processes", "overlapped")


def _check_engine(engine, task, scheduler, n_jobs=None):
    """The engine that runs ``task``: ``engine`` checked, "auto" resolved
    (see :func:`predict_cohort`)."""
    if not isinstance(engine, str) or engine not in ENGINES:
        raise ValueError(f"'engine' must be one of {', '.join(ENGINES)}; got {engine!r}.")
    staged = all(hasattr(task, stage) for stage in ("prepare", "score", "finish", "final"))
    if engine == "overlapped" and not staged:
        raise ValueError(
            f"engine='overlapped' needs a task that scores in stages; {type(task).__name__} "
            "writes each scan in one step: use engine='processes'."
        )
    if engine == "overlapped" and scheduler is not None:
        raise ValueError(
            "engine='overlapped' runs on this machine; a Dask 'scheduler' runs the scans "
            "on its workers: pass one or the other."
        )
    if engine == "auto":
        engine = "processes"
        if staged and scheduler is None:
            devices = _network_devices(task.final)
            on_gpu = any(device.startswith("cuda") for device in devices)
            if on_gpu or (not devices and n_jobs not in (None, 1)):
                engine = "overlapped"
    return engine


def _network_devices(estimator):
    """The devices of the networks that ``estimator`` (or an ensemble's
    members) runs, as ``"cpu"`` or ``"cuda[:N]"``; empty without one."""
    members = [estimator, *getattr(estimator, "estimators_", [])]
    return {str(m.device_) for m in members if hasattr(m, "device_")}


def _run_tasks(
    task, tasks, refused, planned, outputs, task_id,
    n_jobs, scheduler, engine, summary_path, progress, callback,
):  # fmt: skip
    """Score the tasks on the engine chosen, keeping the summary and the
    record of outputs up to date; the records in the scans' order."""
    from tqdm.auto import tqdm

    order = {path: k for k, (path, _) in enumerate(planned)}
    if scheduler is not None:
        results = _run_dask(task, tasks, scheduler)
    elif engine == "overlapped":
        results = _run_overlapped(task, tasks, n_jobs)
    elif n_jobs is None or n_jobs == 1 or len(tasks) <= 1:
        results = _run_serial(task, tasks)
    else:
        results = _run_local(task, tasks, n_jobs)

    # A scan skipped by a rerun keeps the row of the run that scored it.
    before = read_summary(summary_path) if summary_path is not None else {}
    records, rows = [None] * len(planned), [None] * len(planned)
    task_of = {path: k for k, (path, _, _) in enumerate(tasks)}
    results_of_tasks = [None] * len(tasks)
    last_write = time.monotonic()
    failing = False
    bar = tqdm(total=len(planned), desc=task.command, unit="scan", disable=not progress,
               leave=False, file=sys.stderr)  # fmt: skip
    try:
        for record in itertools.chain(refused, results):
            k = order[record["scan"]]
            records[k] = rows[k] = record
            if record["scan"] in task_of:
                results_of_tasks[task_of[record["scan"]]] = record
            earlier = before.get(record["scan"])
            if record["status"] == "skipped" and earlier and earlier["status"] == "done":
                same = all(earlier.get(f) == record[f] for f in task.fields)
                rows[k] = earlier if same else record
            bar.update()
            if callback is not None:
                callback(record)
            if time.monotonic() - last_write > SUMMARY_INTERVAL:
                _save(summary_path, rows, outputs, tasks, results_of_tasks, task_id, False)
                last_write = time.monotonic()
    except BaseException:
        failing = True
        raise
    finally:
        bar.close()
        results.close()
        try:
            _save(summary_path, rows, outputs, tasks, results_of_tasks, task_id, True)
        except OSError:
            if not failing:  # a full disk says so once, for the scan it failed on
                raise
    return records


def _save(summary_path, rows, outputs, tasks, results, task_id, final):
    """Write the record of outputs, then the summary (unless there is no
    row to write, nor a summary to replace: a run stopped before its first
    scan, by a full disk say, leaves no file)."""
    _update_record(outputs, tasks, results, task_id, final)
    outputs.save()
    rows = [r for r in rows if r is not None]
    if summary_path is not None and (rows or summary_path.exists()):
        write_summary(summary_path, rows)
