from numbers import Integral, Real

import numpy as np
import pytest

from anomseg.utils import check_generator, check_images, check_maps
from anomseg.utils._param_validation import (
    COMMON_CONSTRAINTS,
    Interval,
    InvalidParameterError,
    NumberSequence,
    validate_parameter_constraints,
)


def test_layouts_and_foreground():
    stack = np.zeros((2, 4, 4), np.int16)
    stack[:, 1:3, 1:3] = 7
    batch = check_images(stack)
    assert batch.stacked and len(batch) == 2 and batch.common_shape == (4, 4)
    assert batch.images[0].dtype == np.float32
    assert batch.foreground[0].sum() == 4  # non-zero pixels
    volumes = [np.ones((3, 4, 5)), np.ones((2, 2, 2))]
    batch = check_images(volumes)
    assert not batch.stacked and batch.common_shape is None and batch.spatial_ndim == 3
    assert isinstance(batch.wrap(batch.images), list)


def test_masked_arrays_give_the_foreground_and_may_hide_nan():
    data = np.full((1, 3, 3), np.nan)
    data[0, 1, 1] = 0.0  # a zero inside the foreground stays foreground
    masked = np.ma.MaskedArray(data, mask=np.isnan(data))
    batch = check_images(masked)
    assert batch.foreground[0].sum() == 1 and batch.foreground[0][1, 1]
    assert np.isfinite(batch.images[0]).all()
    # a NaN that is not masked is an error
    masked.mask[0, 0, 0] = False
    with pytest.raises(ValueError, match="NaN"):
        check_images(masked)


def test_channels():
    images = np.zeros((2, 4, 4, 2))
    images[0, 0, 0, 1] = 1.0
    batch = check_images(images, channel_axis=-1)
    assert batch.foreground[0].shape == (4, 4) and batch.foreground[0].sum() == 1
    with pytest.raises(ValueError, match="dimensions"):
        check_images(images[..., None], channel_axis=None)
    with pytest.raises(ValueError, match="mixes samples with"):
        check_images([np.ones((4, 4, 2)), np.ones((4, 4, 3))], channel_axis=-1)
    with pytest.raises(ValueError, match="'channel_axis'"):
        check_images(images, channel_axis=0)


def test_messages_name_the_caller():
    with pytest.raises(ValueError, match=r"X\[0\] passed to Model.fit is empty"):
        check_images([np.ones((0, 3))], where="Model.fit")


def _check(constraints, value):
    validate_parameter_constraints({"p": constraints}, {"p": value}, caller_name="M")


def test_constraints_name_the_parameter_and_refuse_booleans():
    _check(COMMON_CONSTRAINTS["max_fpr"], 0.5)
    for bad in (0, 1, 1.5, True, np.True_, "0.5", float("nan")):
        with pytest.raises(
            InvalidParameterError, match=r"'p' parameter of M must be a float in the range \(0"
        ):
            _check(COMMON_CONSTRAINTS["max_fpr"], bad)
    with pytest.raises(ValueError, match=r"an int in the range \[2, inf\). Got 2.0 instead"):
        _check([Interval(Integral, 2, None, closed="left")], 2.0)
    with pytest.raises(TypeError, match="Got True instead"):  # also a TypeError
        _check([Interval(Integral, 2, None, closed="left")], True)


@pytest.mark.parametrize(
    "value, ok",
    [
        ((1.0, 2.0), True),
        (np.array([1, 2]), True),
        ((1.0,), False),
        ((1.0, 2.0, 3.0), False),
        ((1.0, 0.0), False),
        ("ab", False),
        (5.0, False),
        ([[1.0, 2.0]], False),
        ([], False),
    ],
)
def test_number_sequence(value, ok):
    pair = [NumberSequence(Interval(Real, 0, None, closed="neither"), length=2)]
    if ok:
        _check(pair, value)
    else:
        with pytest.raises(InvalidParameterError, match=r"must be a pair of floats in the range"):
            _check(pair, value)


def test_generators_are_independent_and_seeded():
    assert check_generator(3).random() == check_generator(3).random()
    with pytest.raises(ValueError, match="random_state"):
        check_generator("seed")


def test_check_maps():
    maps, stacked = check_maps(np.zeros((2, 3, 3)), "f")
    assert stacked and len(maps) == 2
    with pytest.raises(TypeError, match="boolean or real"):
        check_maps([np.zeros((3, 3), complex)], "f")
