"""A cohort's report: one HTML page with the summary table and each scan's
figure."""

from __future__ import annotations

import html
import os
from pathlib import Path

from ..io import atomic_write
from ..io._outputs import OutputRecord, folder_lock

__all__ = ["write_cohort_report"]

#: What the folder's record of outputs names as the maker of the report.
_IDENTITY = "anomseg report"

#: The columns that hold the paths of a scan's outputs, shown as links.
_LINKS = ("anomaly_map", "mask")

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; vertical-align: top; }
th { background: #eee; }
tr.failed td { background: #fde8e8; }
img { width: 360px; }
"""


def write_cohort_report(records, output_dir, *, columns, name="report.html", title=None):
    """Write one HTML page for a cohort: a table with a row per scan and
    its figure (``record["figure"]``) as a thumbnail linking to it.

    The page is an output of the folder like the scans' maps: written
    atomically, under the folder's lock, and listed in its record of
    outputs (``anomseg-outputs.json``); a file of that name that anomseg
    did not write is left alone.

    Parameters
    ----------
    records : list of dict
        One per scan, as :func:`anomseg.cohort.predict_cohort` returns them.
    output_dir : str or path-like
        The output folder; links are relative to it, so that the folder can
        be moved or copied whole.
    columns : sequence of str
        The keys of each record shown, in order (the summary's columns,
        :data:`anomseg.cohort.SUMMARY_FIELDS`).
    name : str, default="report.html"
        The page's file name in ``output_dir``.
    title : str or None, default=None
        The page's heading.

    Returns
    -------
    path : pathlib.Path

    Raises
    ------
    FileExistsError
        If a file of that name exists that anomseg did not write.
    """
    output = Path(output_dir)
    path = output / name
    data = _page(records, output, columns, title or "anomseg report").encode("utf-8")
    with folder_lock(output, "report"):
        record = OutputRecord(output)
        if os.path.lexists(path) and record.owner(path) is None:
            raise FileExistsError(
                f"'{path}' exists and anomseg did not write it (it is not in "
                f"'{record.path.name}'), so it is left alone: move it away or choose "
                "another output folder."
            )
        record.mark_pending([path], "the cohort", _IDENTITY)
        record.save()
        atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), overwrite=True, size=len(data))
        record.mark_written([path], "the cohort", _IDENTITY)
        record.save()
    return path


def _page(records, output, columns, title):
    head = "".join(f"<th>{html.escape(c.replace('_', ' '))}</th>" for c in columns)
    rows = []
    for record in records:
        cells = [_cell(record, column, output) for column in columns]
        figure = record.get("figure")
        if figure and os.path.isfile(figure):
            link = html.escape(_relative(figure, output), quote=True)
            cells.append(f'<td><a href="{link}"><img src="{link}" alt="figure"></a></td>')
        else:
            cells.append("<td></td>")
        status = html.escape(str(record.get("status", "")), quote=True)
        rows.append(f'<tr class="{status}">' + "".join(cells) + "</tr>")
    counts = {}
    for record in records:
        counts[record.get("status")] = counts.get(record.get("status"), 0) + 1
    tally = ", ".join(f"{n} {status}" for status, n in counts.items())
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>\n"
        f"<h1>{html.escape(title)}</h1>\n<p>{len(records)} scan(s): {html.escape(tally)}. "
        "Each figure outlines the predicted mask (orange-red) and, where given, the "
        "ground truth (cyan) over the scan.</p>\n"
        f"<table>\n<tr>{head}<th>figure</th></tr>\n" + "\n".join(rows) + "\n</table>\n"
        "</body></html>\n"
    )


def _cell(record, column, output):
    value = record.get(column, "")
    text = html.escape(str(value))
    if column in _LINKS and value and os.path.isfile(value):
        link = html.escape(_relative(value, output), quote=True)
        return f'<td><a href="{link}">{html.escape(Path(value).name)}</a></td>'
    return f"<td>{text}</td>"


def _relative(path, output):
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(output))).as_posix()
