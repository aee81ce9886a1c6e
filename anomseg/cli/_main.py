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
import contextlib
import functools
import logging
import os
import select
import sys
import warnings

from .._version import __version__
from ..utils._logging import LIBRARY_LOGGER
from . import _brain, _calibrate, _demo, _evaluate, _fit, _info, _predict
from ._common import _message, _plain, _say, _voxel_budget
from ._parser import _Parser
from ._signals import _SIGNALS, Terminated, _quiet_finalisers

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
  anomseg calibrate model.anomseg siteB/*.nii.gz -o siteB.anomseg  # at a new site
  anomseg predict model.anomseg scans/*.nii.gz -o results/
  anomseg evaluate model.anomseg scans/*.nii.gz --truth masks/*.nii.gz
  anomseg fit --method flair-threshold --foreground brain heads/*.nii.gz -o m.anomseg
  anomseg brain-extract heads/*.nii.gz -o brains/   # brain masks, as NIfTI

Model files are written in a safe format that runs no code when read.
Outputs appear whole or not at all; a rerun skips scans already done.

Run 'anomseg COMMAND --help' for the options of a command.
"""

#: The commands, in the order of ``anomseg --help``.
_COMMANDS = (_fit, _calibrate, _predict, _evaluate, _info, _brain, _demo)


def build_parser():
    """The parser of the command line: one subparser per command, each
    defined by the command's own module."""
    parser = _Parser(
        prog="anomseg",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"anomseg {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in _COMMANDS:
        command.add_parser(commands)
    return parser


@contextlib.contextmanager
def _messages_on_stderr(progress):
    """The library's messages (see ``anomseg.utils._logging``) on stderr
    while the command runs, one line each: with ``progress``, the methods'
    own progress too, which they log at ``DEBUG`` while their ``verbose``
    is 0, so that neither a model nor stdout is touched; without it, only
    warnings. Undone after, for a caller that runs :func:`main` in its own
    process."""
    library = logging.getLogger(LIBRARY_LOGGER)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = library.level
    library.setLevel(logging.DEBUG if progress else logging.WARNING)
    library.addHandler(handler)
    try:
        yield
    finally:
        library.removeHandler(handler)
        library.setLevel(level)


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
        messages = _messages_on_stderr(getattr(args, "progress", True))
        with _SIGNALS.installed(), warnings.catch_warnings(), budget, messages:
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
