"""Text read from files, made safe to print, and the library's messages
said in one line."""

from __future__ import annotations

import re

__all__ = ["first_line", "printable"]

#: The ``[Class.method] `` that starts the library's warnings and errors.
_PREFIX = re.compile(r"^\[[^\]]*\] ")


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


def first_line(message, path=None):
    """The first line of a library message, without its ``[Class.method]``
    prefix: how one line of a report (a summary row, the command line) says
    it. The name of ``path`` is written with its control characters
    escaped first, so that a file name holding a newline does not cut the
    line.

    Examples
    --------
    >>> first_line("[FlairThreshold.fit] The maps are constant.\\nMore.")
    'The maps are constant.'
    """
    text = str(message).strip()
    if path is not None and not str(path).isprintable():
        text = text.replace(str(path), printable(str(path)))
    return _PREFIX.sub("", text.splitlines()[0] if text else text)
