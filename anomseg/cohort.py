"""Scoring a cohort: thousands of scans, on one process, on the cores of one
machine, or on a Dask cluster.

:func:`predict_cohort` reads, scores and writes one scan at a time, so that
its memory does not grow with the number of scans. Each scan's anomaly map
and mask appear together or not at all, and a rerun skips the scans whose
outputs are complete, so a cohort interrupted for any reason is finished by
running the same call again. A summary file (CSV or JSON, written
atomically) records, per scan, its status, the seconds it took, its lesion
volume in mL and its number of connected components.

Where the scans are scored is an existing engine's business:

* ``n_jobs=N``: N worker processes of joblib's executor (loky) on this
  machine; the model is sent to each worker once, when it starts.
* ``scheduler="tcp://HOST:PORT"`` (or a :class:`distributed.Client`): the
  workers of a Dask cluster, which must see the scans and the output folder
  at the same paths (a shared file system). The model is scattered to every
  worker once; a worker that dies has its scans rescheduled by Dask on the
  others, and a scan that was being written when its worker died leaves no
  partial output.

The command line's ``anomseg predict --n-jobs N`` and ``--dask-scheduler
ADDRESS`` call this function.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

__all__ = ["SUMMARY_FIELDS", "mask_statistics", "predict_cohort", "predict_scan", "read_summary"]

#: The outputs written for each scan, by suffix of its name.
OUTPUT_SUFFIXES = ("_anomaly_map.nii.gz", "_mask.nii.gz")

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
def read_scan(path):
    """A scan's voxels (closest canonical orientation) and grid, refused if
    scoring it would mean nothing: non-finite or constant voxels."""
    from .io import load_nifti

    image, reference = load_nifti(path)
    n_bad = image.size - int(np.count_nonzero(np.isfinite(image)))
    if n_bad:
        raise ValueError(
            f"'{path}' has {n_bad} NaN or infinite voxel(s); anomseg needs finite "
            "intensities: set them to 0 (background) or repair the file."
        )
    if image.min() == image.max():
        raise ValueError(
            f"'{path}' is constant (every voxel is {image.flat[0]:g}, shape "
            f"{image.shape}): there is nothing to segment."
        )
    return image, reference


def voxel_size_warning(path, reference, metadata):
    """A one-line warning if ``reference``'s voxels differ from those of the
    model's healthy scans (``metadata["voxel_size"]``: lowest and highest
    sizes per axis), else None."""
    sizes = (metadata or {}).get("voxel_size")
    if not sizes:
        return None
    zooms = [round(float(z), 6) for z in reference.header.get_zooms()[:3]]
    low, high = sizes
    if any(
        z < a / VOXEL_SIZE_FACTOR or z > b * VOXEL_SIZE_FACTOR for z, a, b in zip(zooms, low, high)
    ):
        return (
            f"'{path}' has voxels of {_mm(zooms)} but the model's healthy scans had "
            f"{_mm(low)} to {_mm(high)}; resample it, or the calibrated "
            "false-positive rate may not hold."
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
        anomaly_map = score([image])[0]
    notes = [voxel_size_warning(path, reference, metadata)]
    notes += [f"'{path}': {_first_line(w.message)}" for w in caught]
    if not np.isfinite(np.ma.getdata(anomaly_map)).all():
        raise ValueError(
            f"'{path}' gave non-finite anomaly scores; its intensities "
            f"(up to {np.abs(image).max():.3g}) are beyond what the model handles."
        )
    return anomaly_map, [note for note in notes if note]


def _first_line(message):
    """A library message without its ``[Class.method]`` prefix."""
    text = str(message).strip().splitlines()[0]
    return text.split("] ", 1)[1] if text.startswith("[") and "] " in text else text


def mask_statistics(mask, reference):
    """The anomalous voxels of a mask, its volume in mL (from the voxel size
    of ``reference``) and its number of connected components (voxels that
    share a face, an edge or a corner are connected)."""
    from scipy import ndimage

    mask = np.asarray(mask, bool)
    voxel_ml = float(np.prod(reference.header.get_zooms()[:3])) / 1000.0
    structure = ndimage.generate_binary_structure(mask.ndim, mask.ndim)
    _, n_components = ndimage.label(mask, structure=structure)
    n = int(mask.sum())
    return {
        "anomalous_voxels": n,
        "lesion_volume_ml": round(n * voxel_ml, 4),
        "n_components": int(n_components),
    }


def complete(targets, reference):
    """Whether every output of a scan exists, as NIfTI on the scan's grid."""
    from .io import load_nifti_reference

    try:
        return all(load_nifti_reference(t).shape == reference.shape for t in targets)
    except (OSError, ValueError):
        return False


def remove_temporaries(targets):
    """Remove the temporary files that an atomic write of ``targets`` left
    behind when its process was killed (SIGKILL, a lost cluster worker),
    which could not clean up."""
    for target in targets:
        target = Path(target)
        for stale in target.parent.glob(f".{target.name}.*"):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()


def predict_scan(model, path, targets, overwrite=False, metadata=None):
    """Score one scan and write its anomaly map and mask (together or not at
    all): the work of one task of :func:`predict_cohort`, in whichever
    process runs it.

    Returns its summary record (:data:`SUMMARY_FIELDS`, with a ``warnings``
    list more). Outputs that are complete already are kept (status
    ``"skipped"``, figures read from the mask); any failure is caught and
    recorded (status ``"failed"`` and the message), so one bad scan does not
    stop a cohort.
    """
    from .io import load_nifti, load_nifti_reference, save_niftis

    started = time.perf_counter()
    record = {"scan": str(path), "anomaly_map": str(targets[0]), "mask": str(targets[1])}
    record["warnings"] = []
    try:
        present = [t for t in targets if os.path.lexists(t)]
        if present and not overwrite:
            reference = load_nifti_reference(path)
            if not complete(targets, reference):
                # Not written by anomseg, whose outputs appear together.
                raise FileExistsError(
                    f"'{present[0]}' exists, but the outputs of '{path}' are incomplete "
                    "(missing, or not NIfTI on its grid); pass overwrite=True to redo them."
                )
            mask, _ = load_nifti(targets[1])
            record.update(status="skipped", **mask_statistics(mask > 0, reference))
            return record
        image, reference = read_scan(path)
        anomaly_map, record["warnings"] = score_scan(model, path, image, reference, metadata)
        mask = model.threshold_maps([anomaly_map])[0]  # predict, scoring once
        Path(targets[0]).parent.mkdir(parents=True, exist_ok=True)
        remove_temporaries(targets)
        save_niftis(
            [(anomaly_map, reference, targets[0]), (mask, reference, targets[1])],
            overwrite=overwrite,
        )
        record.update(status="done", **mask_statistics(mask, reference))
    except Exception as exc:  # one bad scan does not stop the cohort
        record.update(status="failed", message=_error_line(exc, path))
    finally:
        record["seconds"] = round(time.perf_counter() - started, 3)
    return record


def _error_line(exc, path):
    text = _first_line(exc) if str(exc).strip() else type(exc).__name__
    if not isinstance(exc, (ValueError, TypeError, OSError)):
        text = f"unexpected {type(exc).__name__}: {text}"
    if str(path) not in text:
        text = f"'{path}': {text}"
    return text


# -- planning ----------------------------------------------------------------------
def stem(path):
    """A scan's file name without ``.nii.gz`` or ``.nii``."""
    name = Path(path).name
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


def check_scans(scans):
    """Every scan's header, read before any work, without keeping it: a
    missing, foreign, 2D or 4D file, or one given twice, raises at once."""
    from .io import load_nifti_reference

    seen = set()
    for path in scans:
        key = os.path.realpath(path)
        if key in seen:
            raise ValueError(f"'{path}' is given twice.")
        seen.add(key)
        load_nifti_reference(path)


# -- the summary ---------------------------------------------------------------------
#: How summaries are encoded: UTF-8, with a file name that is not (decoded by
#: Python with surrogate escapes) written back as its own bytes, so that any
#: name a file system holds is written, and read back, as it is.
_TEXT = {"encoding": "utf-8", "errors": "surrogateescape"}


def _summary_format(path):
    suffix = Path(path).suffix.lower()
    if suffix not in (".csv", ".json"):
        raise ValueError(
            f"The 'summary' file must end in .csv or .json; got '{path}'. Pass "
            "summary=None to write none."
        )
    return suffix[1:]


def _is_summary(path):
    """Whether an existing file is a summary that anomseg wrote (which a
    rerun may replace), rather than a user's file."""
    try:
        text = Path(path).read_text(**_TEXT)
    except (OSError, UnicodeDecodeError):
        return False
    if _summary_format(path) == "csv":
        return text.splitlines()[:1] == [",".join(SUMMARY_FIELDS)]
    try:
        rows = json.loads(text)
    except ValueError:
        return False
    return isinstance(rows, list) and all(
        isinstance(r, dict) and set(r) == set(SUMMARY_FIELDS) for r in rows
    )


def read_summary(path):
    """The rows of a summary that anomseg wrote, by scan, with their figures
    as numbers; an empty dict if there is none."""
    path = Path(path)
    if not path.is_file() or not _is_summary(path):
        return {}
    if _summary_format(path) == "json":
        rows = json.loads(path.read_text(**_TEXT))
    else:
        rows = list(csv.DictReader(io.StringIO(path.read_text(**_TEXT))))
        for row in rows:
            for key, kind in _NUMBERS.items():
                row[key] = kind(row[key]) if row[key] != "" else ""
    return {row["scan"]: row for row in rows}


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
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, **_TEXT), overwrite=True)


# -- engines -----------------------------------------------------------------------
_WORKER_MODEL = None


def _start_worker(model, n_threads):
    """Initialiser of a local worker process: keep the model, use
    ``n_threads`` threads, and make SIGTERM clean up as SIGINT does."""
    import signal

    global _WORKER_MODEL
    _WORKER_MODEL = model
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n_threads)
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def _predict_in_worker(path, targets, overwrite, metadata):
    return predict_scan(_WORKER_MODEL, path, targets, overwrite, metadata)


def _predict_task(path, targets, model, overwrite, metadata):
    return predict_scan(model, path, targets, overwrite, metadata)


def _run_serial(model, planned, overwrite, metadata):
    for path, targets in planned:
        yield predict_scan(model, path, targets, overwrite, metadata)


def _run_local(model, planned, overwrite, metadata, n_jobs):
    """The scans on ``n_jobs`` loky processes, at most two per worker in
    flight, so that memory does not grow with the cohort."""
    from concurrent.futures import FIRST_COMPLETED, wait

    from joblib.externals.loky import get_reusable_executor

    n_threads = max(1, (os.cpu_count() or 1) // n_jobs)
    executor = get_reusable_executor(
        max_workers=n_jobs, initializer=_start_worker, initargs=(model, n_threads), reuse=False
    )
    pending, items = set(), iter(planned)
    try:
        while True:
            for path, targets in items:
                future = executor.submit(_predict_in_worker, path, targets, overwrite, metadata)
                pending.add(future)
                if len(pending) >= 2 * n_jobs:
                    break
            if not pending:
                return
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
    finally:
        if pending:  # interrupted: stop the workers, then sweep what they left
            for future in pending:
                future.cancel()
            executor.shutdown(wait=True, kill_workers=True)
            for _, targets in planned:
                remove_temporaries(targets)
        else:  # release the workers and their models, and loky's shared executor
            executor.shutdown(wait=True)


def _run_dask(model, planned, overwrite, metadata, scheduler):
    """The scans as tasks of a Dask cluster; the model is scattered to the
    workers once, and each finished task is released at once."""
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise ImportError(
            "scheduler= needs Dask's distributed scheduler: pip install 'dask[distributed]'."
        ) from None
    client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
    try:
        shared = client.scatter(model, broadcast=True, hash=False)
        futures = client.map(
            _predict_task,
            [path for path, _ in planned],
            [targets for _, targets in planned],
            overwrite=overwrite,
            metadata=metadata,
            model=shared,
            pure=False,
        )
        by_key = {future.key: item for future, item in zip(futures, planned)}
        for future in as_completed(futures):
            try:
                record = future.result()
            except Exception as exc:  # the cluster gave up (KilledWorker...)
                path, targets = by_key[future.key]
                record = {
                    "scan": path,
                    "anomaly_map": str(targets[0]),
                    "mask": str(targets[1]),
                    "status": "failed",
                    "message": _error_line(exc, path),
                    "warnings": [],
                }
            future.release()
            yield record
    finally:
        if client is not scheduler:
            client.close()


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
):
    """Write the anomaly map and mask of every scan of a cohort, one scan at
    a time, on this process, on ``n_jobs`` local processes or on a Dask
    cluster.

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
        Local worker processes (joblib's loky executor); None or 1 scores
        in this process, -1 uses every core. Each worker gets an equal share
        of the cores as torch threads.
    scheduler : str, distributed.Client or None, default=None
        A Dask scheduler's address (``"tcp://HOST:PORT"``) or client; the
        scans are then scored by its workers, and ``n_jobs`` must be None.
    keep_tree : bool, default=False
        Mirror the scans' folders (relative to their common folder) under
        ``output_dir``, for scans that share a file name.
    overwrite : bool, default=False
        Redo and replace complete outputs too. Without it, scans whose
        outputs are complete are skipped, and an output that exists without
        its partner (not written by anomseg) fails that scan.
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

    Returns
    -------
    records : list of dict
        One per scan, in the order of ``scans``: the :data:`SUMMARY_FIELDS`
        (``status`` is ``"done"``, ``"skipped"`` or ``"failed"``) and
        ``warnings``, a list of one-line warnings.

    Examples
    --------
    >>> from anomseg import load_model                       # doctest: +SKIP
    >>> from anomseg.cohort import predict_cohort            # doctest: +SKIP
    >>> model = load_model("model.anomseg")                  # doctest: +SKIP
    >>> records = predict_cohort(model, scans, "results/", n_jobs=4)  # doctest: +SKIP
    >>> records = predict_cohort(                            # doctest: +SKIP
    ...     model, scans, "results/", scheduler="tcp://10.0.0.1:8786")
    """
    from tqdm.auto import tqdm

    if not hasattr(model, "threshold_maps"):
        raise TypeError(
            "The 'model' of predict_cohort must be a fitted anomseg estimator or "
            f"AnomalyPipeline; got {type(model).__name__}."
        )
    if n_jobs is not None and scheduler is not None:
        raise ValueError(
            "Pass either 'n_jobs' (local processes) or 'scheduler' (a Dask cluster), "
            f"not both; got n_jobs={n_jobs!r} and scheduler={scheduler!r}."
        )
    if n_jobs is not None and (
        isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs == 0 or n_jobs < -1
    ):
        raise ValueError(f"'n_jobs' must be None, -1 or a positive int; got {n_jobs!r}.")
    if n_jobs == -1:
        n_jobs = os.cpu_count() or 1
    if isinstance(scans, (str, os.PathLike)):
        raise TypeError(
            f"'scans' must be a list of paths; got the single path {str(scans)!r}: "
            "wrap it in a list."
        )
    scans = [str(s) for s in scans]
    output = Path(output_dir)
    if output.exists() and not output.is_dir():
        raise ValueError(f"The 'output_dir' '{output}' is a file; give a folder.")
    summary_path = None
    if summary is not None:
        summary_path = output / summary
        _summary_format(summary_path)
        if summary_path.exists() and not _is_summary(summary_path):
            raise FileExistsError(
                f"The 'summary' file '{summary_path}' exists and is not a summary "
                "written by anomseg; it is left alone: choose another name."
            )
    check_scans(scans)
    planned = plan_outputs(scans, output, OUTPUT_SUFFIXES, keep_tree)
    output.mkdir(parents=True, exist_ok=True)
    order = {path: k for k, (path, _) in enumerate(planned)}

    if scheduler is not None:
        results = _run_dask(model, planned, overwrite, metadata, scheduler)
    elif n_jobs is None or n_jobs == 1 or len(planned) <= 1:
        results = _run_serial(model, planned, overwrite, metadata)
    else:
        results = _run_local(model, planned, overwrite, metadata, n_jobs)

    # A scan skipped by a rerun keeps the row of the run that scored it.
    before = read_summary(summary_path) if summary_path is not None else {}
    records, rows = [None] * len(planned), [None] * len(planned)
    last_write = time.monotonic()
    bar = tqdm(total=len(planned), desc="predict", unit="scan", disable=not progress,
               leave=False, file=sys.stderr)  # fmt: skip
    try:
        for record in results:
            k = order[record["scan"]]
            records[k] = rows[k] = record
            earlier = before.get(record["scan"])
            if record["status"] == "skipped" and earlier and earlier["status"] == "done":
                rows[k] = earlier if earlier["mask"] == record["mask"] else record
            bar.update()
            if callback is not None:
                callback(record)
            if summary_path is not None and time.monotonic() - last_write > SUMMARY_INTERVAL:
                write_summary(summary_path, [r for r in rows if r is not None])
                last_write = time.monotonic()
    finally:
        bar.close()
        results.close()
        if summary_path is not None:
            write_summary(summary_path, [r for r in rows if r is not None])
    return records
