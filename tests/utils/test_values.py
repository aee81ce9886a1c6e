"""ValueStore: exact order statistics of many values in bounded memory."""

import numpy as np
import pytest

from anomseg.adversarial import histogram_peak_threshold
from anomseg.adversarial._histogram import peak_threshold, stored_histogram
from anomseg.metrics import threshold_at_fpr
from anomseg.metrics._pixel import fpr_rank
from anomseg.utils._values import ValueStore


def _filled(chunks, **kwargs):
    store = ValueStore(**kwargs)
    for chunk in chunks:
        store.append(chunk)
    return store


def _awkward_values(seed):
    """Ties, negatives, zeros of both signs, infinities and tiny numbers."""
    rng = np.random.default_rng(seed)
    values = np.concatenate(
        [
            rng.normal(0, 1, 5000),
            rng.integers(-3, 4, 3000),  # many ties
            [0.0, -0.0, np.inf, -np.inf, 1e-40, -1e-40, 3.4e38],
            rng.exponential(1e-3, 2000),
        ]
    ).astype(np.float32)
    return rng.permutation(values)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("memory_limit", [2**26, 1000])  # in memory; spilled
def test_order_statistics_are_those_of_a_partial_sort(seed, memory_limit):
    values = _awkward_values(seed)
    with _filled(np.array_split(values, 7), memory_limit=memory_limit, chunk_size=999) as store:
        assert store.spilled == (memory_limit == 1000)
        assert len(store) == values.size
        rng = np.random.default_rng(seed)
        ranks = [0, values.size - 1, *rng.integers(0, values.size, 40)]
        found = store.order_statistics(ranks)
    expected = np.sort(values)[ranks]
    # -0.0 and 0.0 are one value, as np.partition sees them.
    np.testing.assert_array_equal(np.asarray(found, np.float32), expected)
    assert all(isinstance(v, np.float32) for v in found)


def test_nan_sorts_last_as_in_numpy():
    values = np.array([2.0, np.nan, -1.0, np.nan, 0.5], np.float32)
    with _filled([values]) as store:
        found = store.order_statistics(range(5))
    np.testing.assert_array_equal(found, np.sort(values))


@pytest.mark.parametrize("rate", [0.01, 0.05, 0.1, 0.29, 0.5])
def test_thresholds_equal_threshold_at_fpr_when_spilled(rate):
    values = _awkward_values(3)[:-8]  # no infinities: a realistic map
    with _filled(np.array_split(values, 5), memory_limit=4000, chunk_size=1234) as store:
        assert store.spilled
        (threshold,) = store.order_statistics([fpr_rank(len(store), rate)])
        above = store.count_above(float(threshold))
    assert float(threshold) == threshold_at_fpr(values, rate)
    assert above == np.count_nonzero(values > threshold)
    assert above <= rate * values.size


def test_the_file_is_removed_and_the_values_dropped_on_close():
    store = _filled([np.arange(100, dtype=np.float32)], memory_limit=16)
    assert store.spilled
    handle = store._file
    store.close()
    assert handle.closed and not store.spilled
    assert list(store.chunks()) == []


def test_ranks_out_of_range_are_refused():
    with _filled([np.ones(3, np.float32)]) as store, pytest.raises(IndexError, match="rank 3"):
        store.order_statistics([3])


def test_an_empty_append_changes_nothing():
    with _filled([np.array([], np.float32), np.array([1.0], np.float32)]) as store:
        assert len(store) == 1 and store.order_statistics([0]) == [1.0]


@pytest.mark.parametrize("memory_limit", [2**26, 4000])
def test_a_stored_histogram_gives_the_histogram_peak_threshold(memory_limit):
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0.3, 0.03, 20000), rng.normal(0.9, 0.02, 600)])
    values = rng.permutation(values.astype(np.float32))
    expected, histogram = histogram_peak_threshold(values, return_histogram=True)
    with _filled(np.array_split(values, 9), memory_limit=memory_limit, chunk_size=777) as store:
        counts, edges, extent = stored_histogram(store, 256)
    found, found_histogram = peak_threshold(counts, edges, extent, return_histogram=True)
    assert 0.4 < found < 0.85
    assert found == expected
    np.testing.assert_array_equal(found_histogram["counts"], histogram["counts"])
    np.testing.assert_array_equal(found_histogram["edges"], histogram["edges"])


def test_a_stored_histogram_refuses_non_finite_values():
    store = _filled([np.array([0.0, np.nan], np.float32)])
    with store, pytest.raises(ValueError, match="finite"):
        stored_histogram(store, 16)
