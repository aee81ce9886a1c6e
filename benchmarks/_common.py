"""What every benchmark shares: its command line (``--data``, ``--json``,
``--param KEY=VALUE``), the JSON it writes, its Markdown tables, the peak
memory of the process, and ``anomseg`` run as a user runs it.

The LGG FLAIR protocol of the learned methods is in :mod:`benchmarks._lgg`.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import math
import sys
from pathlib import Path

import numpy as np

#: The shared data folder, ``../shared/data`` beside the repository root.
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


# -- the command line ------------------------------------------------------------------
def benchmark_parser(doc, data=True):
    """An argument parser whose help is the benchmark's docstring ``doc``,
    with ``--json`` (where to write the figures, as every benchmark does)
    and, if ``data``, ``--data`` (the shared data folder)."""
    title, _, rest = doc.partition("\n\n")
    parser = argparse.ArgumentParser(
        description=title, epilog=rest, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    if data:
        parser.add_argument(
            "--data",
            type=Path,
            default=DEFAULT_DATA,
            help=f"The shared data folder (default {DEFAULT_DATA}).",
        )
    parser.add_argument("--json", type=Path, metavar="PATH", help="Also write the figures here.")
    return parser


def parse_param(text):
    """``KEY=VALUE`` as ``(KEY, value)``: the value read as a Python literal
    if it is one (``n_epochs=5``, ``tv_weights=(0.0,1.0)``), else kept as a
    string (``device=cpu``), as ``anomseg fit --param`` reads it."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, such as n_epochs=5; got {text!r}")
    with contextlib.suppress(ValueError, SyntaxError):
        value = ast.literal_eval(value)
    return key, value


def add_param_argument(parser, target, flag="--param"):
    """``flag KEY=VALUE`` (repeatable): a parameter of ``target`` (an
    estimator's name); ``dict(args.param)`` gives them all."""
    parser.add_argument(
        flag,
        action="append",
        default=[],
        type=parse_param,
        metavar="KEY=VALUE",
        help=f"Set a {target} parameter (a Python literal, else a string); repeatable.",
    )


def data_folder(args, name):
    """``args.data / name``, or None after saying that it is absent (a
    benchmark skips what it has no data for)."""
    folder = args.data / name
    if folder.is_dir():
        return folder
    print(f"skipped: {folder} is absent")
    return None


# -- output ------------------------------------------------------------------------------
def _plain(value):
    """``value`` as JSON can hold it: NumPy scalars and arrays as numbers
    and lists, NaN and infinities as null, tuples as lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path, figures):
    """Write ``figures`` (dicts, lists, numbers, NumPy values) to ``path``
    as JSON, if ``path`` is given (``--json``)."""
    if path is not None:
        Path(path).write_text(json.dumps(_plain(figures), indent=1) + "\n")


#: Number formats of the cost columns; others default to ".3f".
COST_FORMATS = {"train s": ".0f", "peak MiB": ".0f"}


def print_table(rows, cols, formats=None):
    """Print ``rows`` (dicts) as a Markdown table of ``cols``: (mean, sd)
    tuples as "mean ± sd", floats with ``formats[col]`` (default ".3f"),
    missing values and None as empty cells."""
    formats = {**COST_FORMATS, **(formats or {})}
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            if isinstance(v, tuple):  # (mean, sd)
                cells.append(f"{v[0]:.3f} ± {v[1]:.3f}")
            elif isinstance(v, float):
                cells.append(format(v, formats.get(c, ".3f")))
            else:
                cells.append("" if v is None else str(v))
        print("| " + " | ".join(cells) + " |")


# -- cost ---------------------------------------------------------------------------------
def reset_peak_memory():
    """Reset the peak resident set size of this process (Linux only)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory_mib():
    """Peak resident set size of this process since the last reset, MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def anomseg_command(*args):
    """The command line of ``anomseg ARGS`` in a fresh process, with the
    anomseg that this process imports."""
    return [sys.executable, "-m", "anomseg", *map(str, args)]
