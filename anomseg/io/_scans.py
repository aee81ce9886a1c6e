"""Reading scans: one at a time, checked, or a list of them streamed to disk
for ``fit``.

:func:`read_scan` reads a scan and refuses one that scoring would make
meaningless (non-finite or constant voxels); the cohort functions and the
command line read every scan through it.

``fit`` of an estimator or an :class:`~anomseg.preprocessing.AnomalyPipeline`
also takes a list of NIfTI paths: healthy data that need not fit in memory.
The scans are then read one at a time by :func:`streamed_images`,
preprocessed by the pipeline's steps (each scan on its own, as those steps
do in memory) and appended to two files in a temporary folder (``TMPDIR``):
the voxels as float32 and the foreground as bytes, 5 bytes per voxel. The
method then trains on memory-mapped views of those files, so the operating
system pages in the slices of each mini-batch and the process keeps only
what it uses; the folder is removed when ``fit`` returns. The model is the
one that the same scans, loaded as arrays, would give. The steps are given
as objects with ``fit`` and ``transform`` (and a ``_per_scan`` class
attribute): this module knows no transformer class.

The folder is named ``anomseg-fit-PID-XXXXXXXX``: a ``fit`` killed outright
(SIGKILL, the out-of-memory killer), which cannot remove it, leaves it
behind, and the next ``fit`` on NIfTI paths removes the folders whose
process ``PID`` is no longer alive. A full ``TMPDIR`` stops ``fit`` with a
:class:`~anomseg.exceptions.DiskFullError` that says how much the scans
need.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ..utils import ImageBatch, check_images
from ..utils._exclusion import as_exclusion, check_counted
from ..utils._progress import Progress, advance
from ._atomic import disk_full_error, is_disk_full, pid_alive, writer_pid
from ._nifti import _load_image, _reference, load_nifti, load_nifti_reference, same_grid

__all__ = ["channel_files", "is_file_list", "read_header", "read_scan", "streamed_images"]

#: The start of the name of a fit's scratch folder in TMPDIR.
SCRATCH_PREFIX = "anomseg-fit-"


#: What a path template holds where the name of a channel goes.
CHANNEL_FIELD = "{channel}"


def _is_path(x):
    return isinstance(x, (str, os.PathLike))


def is_file_list(X):
    """Whether ``X`` is a non-empty list or tuple of scans given by file:
    paths, or tuples of paths (one file per channel)."""
    return (
        isinstance(X, (list, tuple))
        and len(X) > 0
        and all(
            _is_path(x) or (isinstance(x, tuple) and len(x) > 0 and all(map(_is_path, x)))
            for x in X
        )
    )


def channel_files(scan, channels):
    """The files of a scan given as a path template: ``scan`` with
    :data:`CHANNEL_FIELD` replaced by each of ``channels`` in turn (such as
    ``p01_{channel}.nii.gz`` and ``("flair", "t2")``), as a tuple; a path
    without it (a 4D file), or no ``channels``, is returned as it is."""
    if not channels or CHANNEL_FIELD not in str(scan):
        return scan
    return tuple(str(scan).replace(CHANNEL_FIELD, name) for name in channels)


def _channel_references(files):
    """The grids of a scan's channel files, which must be one grid."""
    references = [load_nifti_reference(path) for path in files]
    for path, reference in zip(files[1:], references[1:]):
        if not same_grid(references[0], reference):
            raise ValueError(
                f"the channel files '{files[0]}' and '{path}' of one scan are not on one "
                f"grid (shape {references[0].shape} vs {reference.shape}, or another "
                "affine); resample them onto one grid."
            )
    return references


def read_header(scan, channel_axis=None):
    """A scan's grid and number of channels, from its header alone: with
    ``channel_axis=-1``, the length of a 4D file's fourth axis (1 for a 3D
    file), or the number of files of a scan given by a tuple of them (one
    per channel, on one grid); without, 1, and a 4D file of several volumes
    is refused."""
    if isinstance(scan, tuple):
        return _channel_references(scan)[0], len(scan)
    image = _load_image(scan, channels=channel_axis is not None)
    return _reference(scan, image), image.shape[3] if image.ndim == 4 else 1


def read_scan(scan, channel_axis=None):
    """A scan's voxels (closest canonical orientation) and grid, refused if
    scoring it would mean nothing: non-finite or constant voxels. With
    ``channel_axis=-1``, a 4D file's fourth axis holds the channels, which
    the voxels carry last (a 3D file is one channel), or ``scan`` is a tuple
    of files, one 3D volume per channel, on one grid."""
    if isinstance(scan, tuple):
        if channel_axis is None:
            raise ValueError(
                f"{scan} gives a scan as one file per channel, which needs "
                "channel_axis=-1; give the estimator (or the pipeline's first step) "
                "channel_axis=-1."
            )
        _channel_references(scan)  # from the headers, before any voxel
        loaded = [read_scan(path) for path in scan]
        return np.stack([image for image, _ in loaded], axis=-1), loaded[0][1]
    path = scan
    image, reference = load_nifti(path, channels=channel_axis is not None)
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


@contextlib.contextmanager
def streamed_images(paths, transformers=(), *, where, log=None, exclude=None, channel_axis=None):
    """An :class:`ImageBatch` of the preprocessed scans of ``paths``, held
    in memory-mapped files for the duration of the block.

    Parameters
    ----------
    paths : list of str or path-like
        NIfTI scans (3D, or 4D with ``channel_axis=-1``), read in the
        closest canonical orientation, as :func:`read_scan` reads them.
    transformers : sequence of transformers
        Unfitted preprocessing steps that treat each scan on its own (a
        ``_per_scan`` class attribute says so), any objects with ``fit`` and
        ``transform`` of :class:`~anomseg.utils.ImageBatch`; they are fitted
        on the first scan, then transform every scan in turn.
    where : str
        ``Class.method`` for the messages.
    log : callable or None
        Receives a progress line about every 10 seconds, such as the
        function of :func:`anomseg.utils._logging.estimator_log`.
    exclude : list or LesionExclusion or None
        The voxels of each scan to neither train nor calibrate on (see
        :class:`~anomseg.utils.LesionExclusion`): NIfTI masks on the scans'
        grids (or arrays), held in a third file, 1 byte per voxel.
    channel_axis : None or -1, default=None
        With -1, each scan's channels lie on the fourth axis of its file
        (see :func:`read_scan`); every scan needs as many.
    """
    alone = [type(t).__name__ for t in transformers if not getattr(t, "_per_scan", False)]
    if alone:
        raise ValueError(
            f"{where} was given NIfTI paths, which are preprocessed one scan at a "
            f"time, but {', '.join(alone)} learn(s) from all the images together; "
            "load the scans as arrays instead, or use steps that treat each scan "
            "on its own (ForegroundMasker, IntensityScaler, HistogramEqualizer, "
            "BrainExtractor, Resampler)."
        )
    exclusion = as_exclusion(exclude, len(paths), where)
    progress = Progress(log, "reading scans", len(paths), "scans")
    remove_stale_scratch()
    prefix = f"{SCRATCH_PREFIX}{os.getpid()}-"
    with tempfile.TemporaryDirectory(prefix=prefix) as folder, _no_space(paths, exclusion, folder):
        names = ("voxels.f32", "fg.u8", "excluded.u8")
        files = [Path(folder) / name for name in names]
        layout, offset, n_channels = [], 0, None
        with contextlib.ExitStack() as stack:
            voxels, foreground, excluded = (
                stack.enter_context(open(file, "wb")) for file in files
            )
            for k, path in enumerate(paths):
                with progress.part(1):
                    arrays = _preprocessed(path, k, transformers, exclusion, where, channel_axis)
                n_channels = _same_channels(paths, k, arrays[0], n_channels, channel_axis)
                # Slices first on disk, so that each slice is contiguous.
                for array, file in zip(arrays, (voxels, foreground, excluded)):
                    file.write(np.ascontiguousarray(np.moveaxis(array, 2, 0)).tobytes())
                layout.append((offset, arrays[1].shape))
                offset += arrays[1].size
        progress.close()
        dtypes = (np.float32, np.bool_, np.bool_)
        kept = 2 if exclusion is None else 3
        columns = [[] for _ in range(kept)]
        # The voxels hold their channels last, n_channels values per voxel.
        channels = [(n_channels,) if channel_axis is not None else (), (), ()]
        for file, dtype, column, trailing in zip(files, dtypes, columns, channels):
            n = int(np.prod(trailing))
            data = np.memmap(file, dtype, "r", shape=(offset * n,))
            for start, shape in layout:
                volume = data[start * n : (start + int(np.prod(shape))) * n]
                column.append(np.moveaxis(volume.reshape(shape[2], *shape[:2], *trailing), 0, 2))
            del data
        excluded = columns[2] if exclusion is not None else None
        batch = ImageBatch(columns[0], columns[1], False, channel_axis, excluded)
        if exclusion is not None:
            check_counted(batch, where, [str(p) for p in paths])
        started = time.perf_counter()
        yield batch
        if log is not None:
            done = "calibrated" if where.endswith(".calibrate") else "trained"
            log(f"{done} on the scans' files in {time.perf_counter() - started:.0f} s")
        del batch, columns, excluded


def _same_channels(paths, k, image, n_channels, channel_axis):
    """The number of channels of scan ``k``, which must be that of the
    first scan: they share one file of voxels."""
    if channel_axis is None:
        return None
    if n_channels is not None and image.shape[-1] != n_channels:
        raise ValueError(
            f"'{paths[k]}' has {image.shape[-1]} channel(s) but '{paths[0]}' has "
            f"{n_channels}; every scan needs the same channels, in the same order."
        )
    return image.shape[-1]


def _preprocessed(path, k, transformers, exclusion, where, channel_axis):
    """The voxels, foreground (and excluded voxels) of scan ``k`` at
    ``path`` once ``transformers`` are applied (fitted on scan 0), counting
    the reading and each step as an equal share of the scan's progress (a
    brain extraction takes seconds a scan)."""
    share = 1 / (len(transformers) + 1)
    image, reference = read_scan(path, channel_axis)
    voxel_sizes = [reference.canonical_voxel_sizes]
    batch = check_images([image], where=where, voxel_sizes=voxel_sizes, channel_axis=channel_axis)
    if exclusion is not None:  # on the scan's grid; the steps carry it
        batch = batch.with_excluded([exclusion.mask(k, image.shape[:3], reference)])
    advance(share)
    try:
        for transformer in transformers:
            if k == 0:
                transformer.fit(batch)
            batch = transformer.transform(batch)
            advance(share)
    except ValueError as exc:
        if type(exc) is not ValueError:  # a subclass the caller may catch
            raise
        # Its X[0] is this scan: say which.
        raise ValueError(f"'{path}': {exc}") from exc
    arrays = [batch.images[0].astype(np.float32, copy=False), batch.foreground[0]]
    if exclusion is not None:
        arrays.append(batch.excluded[0])
    return arrays


def remove_stale_scratch():
    """Remove the scratch folders in TMPDIR that ``fit`` processes killed
    outright left behind: those of this user whose process is no longer
    alive."""
    root = tempfile.gettempdir()
    try:
        entries = list(os.scandir(root))
    except OSError:
        return
    for entry in entries:
        pid = writer_pid(entry.name, SCRATCH_PREFIX)
        if pid is None or pid == os.getpid() or pid_alive(pid):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False) and entry.stat().st_uid == os.getuid():
                shutil.rmtree(entry.path, ignore_errors=True)


@contextlib.contextmanager
def _no_space(paths, exclusion, folder):
    """A full scratch disk as a DiskFullError naming the folder and the
    bytes the scans need (from their headers: 5 per voxel, 6 with
    exclusion masks)."""
    try:
        yield
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        needed = 0
        extra = 1 if exclusion is None else 2  # the foreground (and exclusion) bytes
        with contextlib.suppress(Exception):  # an estimate: the headers were read already
            needed = sum(_scratch_bytes(path, extra) for path in paths)
        what = (
            f"fit's scratch files in TMPDIR, {4 + extra} bytes per voxel of the scans "
            "and 4 more per further channel"
        )
        raise disk_full_error(folder, needed, what) from None


def _scratch_bytes(path, extra):
    """The bytes of the scratch files of one scan (a path, or a tuple of one
    path per channel), from its headers: 4 per voxel and channel, and
    ``extra`` per voxel."""
    import nibabel as nib

    files = path if isinstance(path, tuple) else (path,)
    shape = nib.load(files[0]).shape
    n_channels = len(files) if len(files) > 1 else int(np.prod(shape[3:], dtype=int))
    return int(np.prod(shape[:3], dtype=np.int64)) * (4 * n_channels + extra)
