"""SIGINT and SIGTERM while a command runs: raised as exceptions, so that
the cleanup code of every output runs."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as an exception so that cleanup code runs as it does
    for SIGINT."""


class _Signals:
    """SIGINT and SIGTERM, raised as exceptions where the program is, and
    remembered: Python swallows an exception raised inside a finaliser
    (``__del__``, during garbage collection), so the scan loop checks
    between scans too, and ``sys.unraisablehook`` keeps such a swallowed
    interrupt from printing a traceback."""

    def __init__(self):
        self.received = None

    def handle(self, signum, frame):
        self.received = signum
        raise self.exception()

    def exception(self):
        return Terminated() if self.received == signal.SIGTERM else KeyboardInterrupt()

    def check(self):
        """Raise the signal received, if any, that nothing has acted on."""
        if self.received is not None:
            raise self.exception()

    @contextlib.contextmanager
    def installed(self):
        """Handle SIGINT and SIGTERM while the block runs (main thread only)."""
        self.received = None
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        # A signal ignored by whoever started us (SIGINT in background jobs)
        # stays ignored, as Python itself does.
        signals = [
            signum
            for signum in (signal.SIGINT, signal.SIGTERM)
            if signal.getsignal(signum) != signal.SIG_IGN
        ]
        previous = {signum: signal.signal(signum, self.handle) for signum in signals}
        hook = sys.unraisablehook

        def unraisable(record):
            if not isinstance(record.exc_value, KeyboardInterrupt):
                hook(record)

        sys.unraisablehook = unraisable
        try:
            yield
        finally:
            sys.unraisablehook = hook
            for signum, handler in previous.items():
                signal.signal(signum, handler)


_SIGNALS = _Signals()


def _quiet_finalisers():
    """After an interrupt, let finalisers fail without a traceback.

    The signal can land inside a library's ``__init__`` (nibabel's
    ``OrderedSet``, for one), leaving an object half-built whose ``__del__``
    then fails as the interpreter exits; Python would print that as
    "Exception ignored in ...", with a traceback, under the one line that
    says the run was interrupted."""
    sys.unraisablehook = lambda record: None
