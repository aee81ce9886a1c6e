"""Many float32 values in bounded memory, with exact order statistics.

Calibrating a threshold needs the foreground values of the anomaly maps of
every healthy calibration image: 4 bytes per voxel, which grows with the
cohort. :class:`ValueStore` keeps them in memory up to ``memory_limit``
bytes and appends the rest to a temporary file (``TMPDIR``). Its order
statistics are exact, the very values that ``np.partition`` on all of them
would give, found in two passes over the chunks with a radix selection on
the bits of the floats: the first counts the values per top 16 bits, the
second, within the chosen buckets, per low 16 bits. Memory stays at one
chunk and two tables of 65 536 counts, whatever the number of values.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

__all__ = ["MapStore", "ValueStore"]

_SIGN = np.uint32(0x80000000)
_NAN_KEY = np.uint32(0xFFFFFFFF)
_BUCKETS = 1 << 16


def _keys(values):
    """Unsigned integers in the order of the float32 ``values``: NaN last
    (as ``np.sort`` puts it), and -0.0 equal to 0.0."""
    values = values + np.float32(0.0)  # -0.0 + 0.0 is 0.0
    bits = values.view(np.uint32)
    keys = np.where(bits & _SIGN, ~bits, bits | _SIGN)
    keys[np.isnan(values)] = _NAN_KEY
    return keys


def _value(key):
    """The float32 of a key of :func:`_keys`."""
    key = np.uint32(key)
    bits = key ^ _SIGN if key & _SIGN else ~key
    return np.array([bits], np.uint32).view(np.float32)[0]


class ValueStore:
    """Float32 values appended in chunks, kept in memory up to
    ``memory_limit`` bytes and in a temporary file beyond.

    Use it as a context manager, or call :meth:`close`, so that the file is
    removed.

    Parameters
    ----------
    memory_limit : int, default=2**24
        Bytes of values held in memory before they go to a file.
    chunk_size : int, default=2**22
        Values per chunk read back from the file.
    """

    def __init__(self, memory_limit=2**24, chunk_size=2**22):
        self.memory_limit = memory_limit
        self.chunk_size = chunk_size
        self._held = []
        self._held_bytes = 0
        self._file = None
        self._size = 0

    def __len__(self):
        return self._size

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Drop the values and remove the file, if any."""
        self._held = []
        self._held_bytes = 0
        if self._file is not None:
            self._file.close()
            self._file = None

    @property
    def spilled(self):
        """Whether some values are in the file."""
        return self._file is not None

    def append(self, values):
        """Add ``values`` (any shape; stored as float32)."""
        values = np.asarray(values, dtype=np.float32).ravel()
        if values.size == 0:
            return
        self._size += values.size
        if self._file is None and self._held_bytes + values.nbytes <= self.memory_limit:
            self._held.append(values.copy())
            self._held_bytes += values.nbytes
            return
        if self._file is None:
            # Unnamed where the system allows: nothing is left if we die.
            self._file = tempfile.TemporaryFile(prefix="anomseg-values-")  # noqa: SIM115 (closed by close())
            for held in self._held:
                self._file.write(held.tobytes())
            self._held, self._held_bytes = [], 0
        self._file.write(values.tobytes())

    def chunks(self):
        """The values, in the order appended, as float32 arrays of at most
        ``chunk_size`` values (or as appended, while in memory)."""
        if self._file is None:
            yield from self._held
            return
        self._file.flush()
        self._file.seek(0)
        size = self.chunk_size * 4
        while True:
            data = self._file.read(size)
            if not data:
                break
            yield np.frombuffer(data, dtype=np.float32)
        self._file.seek(0, os.SEEK_END)

    def order_statistics(self, ranks):
        """The values at 0-based ``ranks`` of the ascending order: for each
        rank ``r``, ``np.partition(values, r)[r]``.

        Returns
        -------
        values : list of numpy.float32
        """
        ranks = [int(r) for r in ranks]
        for r in ranks:
            if not 0 <= r < self._size:
                raise IndexError(f"rank {r} is outside [0, {self._size}).")
        high = np.zeros(_BUCKETS, np.int64)
        for chunk in self.chunks():
            high += np.bincount(_keys(chunk) >> 16, minlength=_BUCKETS)
        below = np.concatenate([[0], np.cumsum(high)])
        buckets = [int(np.searchsorted(below, r, side="right")) - 1 for r in ranks]
        low = {b: np.zeros(_BUCKETS, np.int64) for b in set(buckets)}
        for chunk in self.chunks():
            keys = _keys(chunk)
            top = keys >> 16
            for b, counts in low.items():
                counts += np.bincount(keys[top == b] & 0xFFFF, minlength=_BUCKETS)
        out = []
        for r, b in zip(ranks, buckets):
            cumulative = np.cumsum(low[b])
            k = int(np.searchsorted(cumulative, r - below[b], side="right"))
            out.append(_value((b << 16) | k))
        return out

    def count_above(self, threshold):
        """How many values are ``> threshold``."""
        return int(sum(np.count_nonzero(chunk > threshold) for chunk in self.chunks()))

    def extent(self):
        """The smallest and largest value, ignoring NaN (as floats)."""
        low, high = np.inf, -np.inf
        for chunk in self.chunks():
            low = min(low, float(np.nanmin(chunk)))
            high = max(high, float(np.nanmax(chunk)))
        return low, high


class MapStore:
    """Anomaly maps with a boolean mask each (the voxels calibration
    counts), kept in memory up to ``memory_limit`` bytes and in a temporary
    file beyond, to be thresholded again and again: the calibration of
    post-processed masks, whose false positives depend on the maps'
    geometry and not on their values alone.

    Use it as a context manager, or call :meth:`close`.

    Parameters
    ----------
    memory_limit : int, default=2**26
        Bytes held in memory before the maps go to a file.
    """

    def __init__(self, memory_limit=2**26):
        self.memory_limit = memory_limit
        self._held = []
        self._held_bytes = 0
        self._file = None
        self._index = []

    def __len__(self):
        return len(self._held) + len(self._index)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Drop the maps and remove the file, if any."""
        self._held, self._held_bytes, self._index = [], 0, []
        if self._file is not None:
            self._file.close()
            self._file = None

    def append(self, anomaly_map, mask):
        """Add a map (stored as float32) and its mask (as bool)."""
        anomaly_map = np.asarray(anomaly_map, dtype=np.float32)
        mask = np.asarray(mask, dtype=bool)
        size = anomaly_map.nbytes + mask.nbytes
        if self._file is None and self._held_bytes + size <= self.memory_limit:
            self._held.append((anomaly_map.copy(), mask.copy()))
            self._held_bytes += size
            return
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="anomseg-maps-")  # noqa: SIM115 (closed by close())
        self._file.seek(0, os.SEEK_END)
        self._index.append((self._file.tell(), anomaly_map.shape, mask.shape))
        self._file.write(anomaly_map.tobytes())
        self._file.write(np.packbits(mask).tobytes())

    def __iter__(self):
        """Every ``(map, mask)`` pair, in the order appended."""
        yield from self._held
        if self._file is None:
            return
        self._file.flush()
        for offset, map_shape, mask_shape in self._index:
            self._file.seek(offset)
            n = int(np.prod(map_shape))
            anomaly_map = np.frombuffer(self._file.read(4 * n), np.float32).reshape(map_shape)
            m = int(np.prod(mask_shape))
            packed = np.frombuffer(self._file.read(-(-m // 8)), np.uint8)
            yield anomaly_map, np.unpackbits(packed, count=m).astype(bool).reshape(mask_shape)
