"""Where the library's messages go: :mod:`logging`, never ``print``.

Each module logs through its own logger, ``logging.getLogger(__name__)``,
under the ``anomseg`` logger. An estimator's progress messages go through
:func:`estimator_log`: its ``verbose`` sets their level,

- ``verbose=0``: ``DEBUG``, hidden unless a user or the command line asks
  for them (``logging.getLogger("anomseg").setLevel(logging.DEBUG)``);
- ``verbose>=1``: ``INFO``, shown.

The ``anomseg`` logger lets ``INFO`` through. When neither the application
(a handler on the root logger) nor the command line (a handler on the
``anomseg`` logger) has said where messages go, a fallback handler writes
them to ``sys.stderr`` as ``[Class] message``, so that ``verbose=1`` in a
script or a notebook shows progress, as scikit-learn's does, without
printing to stdout. Once an application configures logging, the fallback
steps aside and the messages reach the application's handlers only.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["LIBRARY_LOGGER", "estimator_log"]

LIBRARY_LOGGER = "anomseg"


class _FallbackHandler(logging.Handler):
    """Write to the current ``sys.stderr`` while nobody else handles the
    ``anomseg`` messages (no handler on the root logger, none but this one
    on the ``anomseg`` logger)."""

    def emit(self, record):
        library = logging.getLogger(LIBRARY_LOGGER)
        others = [h for h in library.handlers if h is not self]
        if others or (library.propagate and logging.getLogger().handlers):
            return
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # logging must never break a run
            self.handleError(record)


def _install():
    library = logging.getLogger(LIBRARY_LOGGER)
    if not any(isinstance(h, _FallbackHandler) for h in library.handlers):
        handler = _FallbackHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        library.addHandler(handler)
    if library.level == logging.NOTSET:
        library.setLevel(logging.INFO)


_install()


def estimator_log(estimator, logger):
    """The function through which ``estimator`` reports progress.

    Parameters
    ----------
    estimator : object
        Its ``verbose`` attribute (0 when absent) sets the level: ``INFO``
        when it is at least 1, else ``DEBUG``.
    logger : logging.Logger
        The logger of the module that reports.

    Returns
    -------
    log : callable
        ``log(message)`` logs ``"[Class] message"``.
    """
    level = logging.INFO if getattr(estimator, "verbose", 0) else logging.DEBUG
    prefix = f"[{type(estimator).__name__}] "

    def log(message):
        logger.log(level, "%s%s", prefix, message)

    return log
