"""Text read from files, made safe to print."""

from __future__ import annotations

__all__ = ["printable"]


def printable(text):
    """``text`` with every character that is not printable (control
    characters such as the escape of ANSI sequences, newlines, tabs,
    invisible format characters) written as its Python escape, so that a
    string read from a file can neither redraw a terminal nor forge a line
    of output.

    Examples
    --------
    >>> printable("FLAIR\\n\\x1b[31m")
    'FLAIR\\\\n\\\\x1b[31m'
    """
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
