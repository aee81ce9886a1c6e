"""What the commands share: one-line messages, the scans given, the output
files and folders, the model file."""

from __future__ import annotations

import contextlib
import glob
import os
import re
import sys
import warnings
from pathlib import Path

from ..cohort import (
    earlier_outputs,
    file_identity,
    read_scan,
    score_scan,
    stem,
    warn_large_scans,
)
from ..exceptions import AnomsegWarning
from ..io._atomic import remove_stale_temporaries
from ..io._scans import CHANNEL_FIELD, channel_files, read_header
from ..utils._text import first_line, printable
from ._signals import _SIGNALS

#: A volume to fit steps that learn nothing from images on.
_TINY_VOLUME = [[[1.0]]]


class CommandError(Exception):
    """A user error, reported in one line without a traceback."""


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


def _say(command, kind, message):
    print(f"anomseg {command}: {kind}: {message}", file=sys.stderr)


def _message(exc, path=None):
    """One line for the user: the exception's first line in the command
    line's words, naming ``path`` unless the message already does."""
    text = _plain(exc, path) if str(exc).strip() else type(exc).__name__
    if not isinstance(exc, (CommandError, ValueError, TypeError, OSError)):
        text = f"unexpected {type(exc).__name__}: {text} (ANOMSEG_DEBUG=1 shows the traceback)"
    if path is not None and printable(path) not in text:
        text = f"'{printable(path)}': {text}"
    return text


def _plain(message, path=None):
    """A library message as the command line says it: its first line,
    without the ``[Class.method]`` prefix (and ``path`` escaped, see
    :func:`~anomseg.utils._text.first_line`), with its options for the
    API's arguments."""
    text = first_line(message, path)
    return (
        text.replace("pass overwrite=True", "pass --overwrite")
        .replace("pass summary=None", "pass --no-summary")
        .replace("The 'summary' file", "--summary")
        .replace("overwrite=True", "--overwrite")
        .replace("'exclude'", "--exclude")
        .replace("give the model channel_axis=-1", "fit the model with --param channel_axis=-1")
    )


def _as_options(text, options=None):
    """An error of the library's parameter constraints in the command line's
    words: "The 'margin' parameter of BrainExtractor" becomes "--margin";
    with ``options`` (the options that set parameters, by parameter), a
    parameter that no option sets becomes "--param NAME of CLASS"."""

    def option(match):
        name, owner = match.groups()
        if options is None:
            return "--" + name.replace("_", "-")
        return options.get(name, f"--param {name} of {owner}")

    return re.sub(r"The '(\w+)' parameter of (\w+)", option, first_line(text))


def _check_headers(paths, unique=True, channel_axis=None, channels=None):
    """Every scan's grid, read from its header, before any work: a missing,
    foreign, 2D or 4D file (4D is for ``channel_axis=-1``; or, with
    ``unique``, one given twice) stops the command at once. A path template
    is read as the files of its ``channels``, which must share one grid."""
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
    references = [read_header(channel_files(p, channels), channel_axis)[0] for p in paths]
    warn_large_scans(paths, references)
    return references


def _channel_names(metadata, paths):
    """The channel names that the model's file records (those of ``fit
    --channels``), or None; a scan given as a path template needs them."""
    channels = metadata.get("channels")
    templates = [path for path in paths if CHANNEL_FIELD in str(path)]
    if templates and not channels:
        raise CommandError(
            f"'{templates[0]}' is a path template of one file per channel, but the model "
            "records no channel names; fit it with --channels NAME,NAME,... to read such "
            "scans."
        )
    return channels


def _check_channels(paths, model=None, channels=None):
    """With a multi-channel model (or, at ``fit``, an estimator of
    ``channel_axis=-1``), every scan's number of channels, from its header
    before any work: that of the fitted model, or at ``fit`` that of the
    first scan. A path template is read as the files of its ``channels``."""
    from ..cohort import channel_axis

    if channel_axis(model) is None:
        return
    expected = getattr(model[-1] if hasattr(model, "steps") else model, "n_channels_", None)
    said = f"the model was fitted on scans of {expected}"
    if expected is None and channels:  # at fit
        expected, said = len(channels), f"--channels names {len(channels)}"
    first = None
    for path in paths:
        n_channels = read_header(channel_files(path, channels), -1)[1]
        if expected is not None and n_channels != expected:
            raise CommandError(
                f"'{path}' has {n_channels} channel(s) (the fourth axis of its file), but "
                f"{said}; give scans of the model's channels, in the same order."
            )
        first = first or (path, n_channels)
        if n_channels != first[1]:
            raise CommandError(
                f"'{path}' has {n_channels} channel(s) (the fourth axis of its file) but "
                f"'{first[0]}' has {first[1]}; with --param channel_axis=-1 every scan needs "
                "the same channels, in the same order."
            )


def _load_scans(paths, progress, description="loading", channel_axis=None, channels=None):
    paths = [channel_files(path, channels) for path in paths]
    loaded = [read_scan(path, channel_axis) for path in _progress(paths, description, progress)]
    return [image for image, _ in loaded], [reference for _, reference in loaded]


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


def _load_model(
    path,
    foreground="model",
    trust_pickle=False,
    command="predict",
    allow_unchecked=False,
    device=None,
):
    """The model file's estimator or pipeline, as an AnomalyPipeline (of one
    step for a bare estimator), so that every command treats both alike,
    and the metadata its writer stored; with ``foreground="brain"``, a
    BrainExtractor goes first unless the model starts with one. ``device``
    (``--device``) places its networks; None, where they were trained."""
    from sklearn.pipeline import Pipeline

    from ..cohort import channel_axis
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
    if kind == "pickle" and device is not None:
        raise CommandError(
            f"--device applies to safe model files; '{path}' is a pickle, which loads on "
            "the device it was saved from (or the CPU). Refit the model to get a safe file."
        )
    if kind == "safe":
        try:
            model = load_model(path, allow_unchecked=allow_unchecked, device=device)
        except ValueError as exc:
            if "torch finds no CUDA device" in str(exc):
                raise CommandError(
                    "--device cuda, but torch finds no CUDA device here; use --device auto or cpu."
                ) from None
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
        extractor = BrainExtractor(channel_axis=channel_axis(model)).fit([_TINY_VOLUME])
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


def _reporter(command, counts, line):
    """The ``callback`` of :func:`~anomseg.cohort.run_cohort` for a command:
    it counts each scan's status, says its warnings and failure in one line
    each, prints ``line(record)`` for each scan done, and raises the signal
    received meanwhile."""

    def report(record):
        counts[record["status"]] += 1
        for note in record["warnings"]:
            _say(command, "warning", _plain(note))
        if record["status"] == "failed":
            _say(command, "error", _plain(record["message"]))
        elif record["status"] == "done":
            print(line(record), flush=True)
        _SIGNALS.check()

    return report


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


def _pair_truths(scans, truths, command):
    """The truth masks in the order of the scans: by file name when the
    names pair one to one (``a.nii.gz`` with ``a_seg.nii.gz``), saying so
    if that is not the order given; else in the order given, saying so if
    the names do not look paired; ``command`` is the command that says so."""
    if len(scans) < 2:
        return list(truths)
    scan_keys, truth_keys = [_name_key(s) for s in scans], [_name_key(t) for t in truths]
    if len(set(scan_keys)) == len(scans) and sorted(scan_keys) == sorted(truth_keys):
        by_key = dict(zip(truth_keys, truths))
        paired = [by_key[key] for key in scan_keys]
        if paired != list(truths):
            _say(
                command,
                "warning",
                "--truth masks paired with the scans by file name, not in the order "
                f"given: {_pairs(scans, paired)}.",
            )
        return paired
    if not all(key in Path(t).name.lower() for key, t in zip(scan_keys, truths)):
        _say(
            command,
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
