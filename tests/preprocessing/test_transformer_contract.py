"""Checks shared by every pre-processing transformer: the scikit-learn
transformer contract, layouts, masked outputs and bad parameters."""

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.pipeline import Pipeline

from anomseg.exceptions import NotFittedError, ShapeMismatchError
from anomseg.preprocessing import (
    ForegroundCropper,
    ForegroundMasker,
    HistogramEqualizer,
    HistogramMatcher,
    IntensityScaler,
    Resizer,
)

TRANSFORMERS = [
    ForegroundMasker(),
    IntensityScaler(lower_percentile=1, upper_percentile=99),
    HistogramMatcher(n_quantiles=16),
    HistogramEqualizer(n_bins=32),
    ForegroundCropper(margin=1),
    ForegroundCropper(mode="fixed", size=(20, 12)),
    Resizer((8, 12)),
]
IDS = [f"{type(t).__name__}-{i}" for i, t in enumerate(TRANSFORMERS)]


def make_images(n=3, shape=(16, 16), seed=0, channels=None):
    """Bright squares of noise on a zero background."""
    rng = np.random.default_rng(seed)
    full = (n, *shape) + ((channels,) if channels else ())
    images = np.zeros(full)
    images[:, 3:13, 4:12] = rng.uniform(10, 100, size=(n, 10, 8, *full[3:]))
    return images


@pytest.mark.parametrize("transformer", TRANSFORMERS, ids=IDS)
class TestTransformerContract:
    def test_stack_in_masked_stack_out(self, transformer):
        X = make_images()
        out = clone(transformer).fit(X).transform(X)
        assert isinstance(out, np.ma.MaskedArray)
        assert out.dtype == np.float32 and len(out) == len(X)
        # Every transformer here keeps some foreground and masks some
        # background; the masked pixels are the complement of it.
        assert 0 < out.mask.mean() < 1

    def test_list_in_list_out(self, transformer):
        X = make_images()
        out = clone(transformer).fit(X).transform(list(X))
        assert isinstance(out, list) and len(out) == 3
        stacked = clone(transformer).fit(X).transform(X)
        for a, b in zip(out, stacked):
            assert isinstance(a, np.ma.MaskedArray)
            np.testing.assert_array_equal(a.mask, b.mask)
            np.testing.assert_array_equal(a.filled(0), b.filled(0))

    def test_input_not_modified(self, transformer):
        X = make_images().astype(np.float32)
        copy = X.copy()
        out = clone(transformer).fit(X).transform(X)
        out[...] = -1  # the output must not share memory with X either
        np.testing.assert_array_equal(X, copy)

    def test_clone_pickle_params(self, transformer):
        X = make_images()
        fitted = clone(transformer).fit(X)
        restored = pickle.loads(pickle.dumps(fitted))
        np.testing.assert_array_equal(
            restored.transform(X).filled(0), fitted.transform(X).filled(0)
        )
        assert clone(transformer).get_params() == transformer.get_params()
        assert not hasattr(clone(fitted), "n_channels_")

    def test_not_fitted(self, transformer):
        with pytest.raises(NotFittedError):
            clone(transformer).transform(make_images())

    def test_in_pipeline(self, transformer):
        X = make_images()
        pipe = Pipeline([("step", clone(transformer)), ("scale", IntensityScaler())])
        out = pipe.fit(X).transform(X)
        # The foreground survives into the next step and is scaled there.
        assert np.isclose(out[0].min(), 0) and np.isclose(out[0].max(), 1)

    def test_channels(self, transformer):
        X = make_images(channels=2)
        est = clone(transformer).set_params(channel_axis=-1).fit(X)
        out = est.transform(X)
        assert out.shape[-1] == 2 and est.n_channels_ == 2
        with pytest.raises(ShapeMismatchError, match="2"):
            est.transform(make_images(channels=3))


@pytest.mark.parametrize(
    "transformer, param",
    [
        (ForegroundMasker(threshold="otsu"), "threshold"),
        (ForegroundMasker(threshold=np.nan), "threshold"),
        (ForegroundMasker(fill_holes="yes"), "fill_holes"),
        (IntensityScaler(lower_percentile=-1), "lower_percentile"),
        (IntensityScaler(lower_percentile=50, upper_percentile=50), "upper_percentile"),
        (IntensityScaler(upper_percentile=101), "upper_percentile"),
        (HistogramMatcher(n_quantiles=1), "n_quantiles"),
        (HistogramMatcher(n_quantiles=2.5), "n_quantiles"),
        (HistogramEqualizer(n_bins=0), "n_bins"),
        (ForegroundCropper(mode="center"), "mode"),
        (ForegroundCropper(margin=-1), "margin"),
        (ForegroundCropper(mode="fixed"), "size"),
        (ForegroundCropper(mode="fixed", size=(4, 4, 4)), "size"),
        (ForegroundCropper(mode="fixed", size=0), "size"),
        (Resizer((8,)), "shape"),
        (Resizer((8, -2)), "shape"),
        (Resizer("big"), "shape"),
    ],
)
def test_bad_parameters_name_themselves(transformer, param):
    name = type(transformer).__name__
    with pytest.raises(ValueError, match=f"'{param}' parameter of {name} must"):
        transformer.fit(make_images())


def test_bad_input_is_reported_with_the_caller():
    with pytest.raises(ValueError, match="IntensityScaler.fit"):
        IntensityScaler().fit(np.zeros((4, 4)))


@pytest.mark.parametrize("transformer", TRANSFORMERS, ids=IDS)
def test_every_parameter_has_a_constraint(transformer):
    assert set(transformer._parameter_constraints) == set(transformer.get_params(deep=False))
