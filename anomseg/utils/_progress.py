"""Progress messages of long work, with the time left (torch-free).

A piece of work that knows how much it has to do counts it with a
:class:`Progress`. Work done inside a larger piece that it does not know of
(the batches of one scoring call inside a calibration over many scans)
counts its share with :func:`advance`, which reaches the innermost
:meth:`Progress.part` that is running, if any, and costs nothing otherwise.
"""

from __future__ import annotations

import contextlib
import contextvars
import time

__all__ = ["PROGRESS_INTERVAL", "Progress", "advance"]

#: Seconds between two progress messages of a long piece of work (read at
#: each count, so that tests may set it to 0).
PROGRESS_INTERVAL = 10.0

#: The innermost running part: ``[progress, units, units counted so far]``.
_PART = contextvars.ContextVar("anomseg_progress_part", default=None)


class Progress:
    """Progress messages of a long piece of work, with the time left.

    ``update(n)`` counts ``n`` more units done; a message goes to ``log``
    when :data:`PROGRESS_INTERVAL` seconds have passed since the last one,
    or at once when the work is expected to last longer than that (so that
    the time left is known early, not only after the interval), and
    ``close()`` reports the total time if any message was given. With
    ``log=None`` nothing is printed (and nothing is timed but the start).

    Parameters
    ----------
    log : callable or None
        Receives each message.
    stage, unit : str
        What the work is and what it counts, for the messages.
    total : int or float
        The units to do.
    more : int, default=0
        How many more pieces of work like this one follow (the epochs after
        this one): the messages then give the time left for all of them too,
        named ``whole``.
    whole : str, default="all"
        What this piece and the ``more`` ones make together.
    """

    def __init__(self, log, stage, total, unit, *, more=0, whole="all"):
        self.log, self.stage, self.total, self.unit = log, stage, total, unit
        self.more, self.whole = more, whole
        self.done = 0.0
        self.started = self.last = time.perf_counter()
        self.reported = False

    def update(self, n=1):
        self.done += n
        if self.log is None or n < 1e-9:  # (nothing new: a part whose work counted it all)
            return
        now = time.perf_counter()
        elapsed = now - self.started
        # (A tolerance, since fractions of a unit may be counted.)
        if self.done <= 0 or self.done >= self.total - 1e-6:
            return
        duration = elapsed / self.done * self.total  # of this piece, expected
        due = now - self.last >= PROGRESS_INTERVAL
        if due or (not self.reported and duration >= PROGRESS_INTERVAL):
            left = duration - elapsed
            # Fractions of a unit may be counted (a scan's batches of slices).
            whole = abs(self.done - round(self.done)) < 1e-6
            done = f"{self.done:.0f}" if whole else f"{self.done:.{1 if self.done >= 0.1 else 2}f}"
            message = (
                f"{self.stage}: {done}/{self.total} {self.unit}, "
                f"{elapsed:.0f} s, about {left:.0f} s left"
            )
            if self.more:
                message += f" ({left + self.more * duration:.0f} s for {self.whole})"
            self.log(message)
            self.last, self.reported = now, True

    def close(self):
        if self.log is not None and self.reported:
            elapsed = time.perf_counter() - self.started
            self.log(f"{self.stage}: {self.total} {self.unit} in {elapsed:.0f} s")

    @contextlib.contextmanager
    def part(self, n):
        """Count ``n`` units when the block ends; the work inside may count
        its share of them before, with :func:`advance`."""
        share = [self, n, 0.0]
        token = _PART.set(share)
        try:
            yield
        finally:
            _PART.reset(token)
        self.update(n - share[2])


def advance(fraction):
    """Count ``fraction`` (of 1) of the innermost running
    :meth:`Progress.part` as done, if one is running (never more than the
    part in all)."""
    share = _PART.get()
    if share is None:
        return
    progress, n, counted = share
    step = min(fraction * n, n - counted)
    share[2] += step
    progress.update(step)
