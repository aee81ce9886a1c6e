"""Progress messages of long work, with the time left (torch-free)."""

from __future__ import annotations

import time

__all__ = ["PROGRESS_INTERVAL", "Progress"]

#: Seconds between two progress messages of a long piece of work.
PROGRESS_INTERVAL = 10.0


class Progress:
    """Progress messages of a long piece of work, with the time left.

    ``update(n)`` counts ``n`` more units done; a message goes to ``log``
    when :data:`PROGRESS_INTERVAL` seconds have passed since the last one,
    and ``close()`` reports the total time if any message was given. With
    ``log=None`` nothing is printed (and nothing is timed but the start).
    """

    def __init__(self, log, stage, total, unit):
        self.log, self.stage, self.total, self.unit = log, stage, total, unit
        self.done = 0.0
        self.started = self.last = time.perf_counter()
        self.reported = False

    def update(self, n=1):
        self.done += n
        if self.log is None:
            return
        now = time.perf_counter()
        # (A tolerance, since fractions of a unit may be counted.)
        if now - self.last >= PROGRESS_INTERVAL and self.done < self.total - 1e-6:
            elapsed = now - self.started
            left = elapsed / self.done * (self.total - self.done)
            self.log(
                f"{self.stage}: {self.done:.0f}/{self.total} {self.unit}, "
                f"{elapsed:.0f} s, about {left:.0f} s left"
            )
            self.last, self.reported = now, True

    def close(self):
        if self.log is not None and self.reported:
            elapsed = time.perf_counter() - self.started
            self.log(f"{self.stage}: {self.total} {self.unit} in {elapsed:.0f} s")
