import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.pipeline import Pipeline

from anomseg.postprocessing import ConnectedComponentFilter, MorphologicalFilter


def blobs(ndim):
    """One 20-pixel and one 3-pixel component, far apart."""
    mask = np.zeros((12,) * ndim, bool)
    if ndim == 2:
        mask[1:5, 1:6] = True  # 20
        mask[9, 8:11] = True  # 3
    else:
        mask[1:3, 1:3, 1:6] = True  # 20
        mask[9, 9, 8:11] = True  # 3
    return mask


@pytest.mark.parametrize("ndim", [2, 3])
def test_cc_filter_removes_small_keeps_large(ndim):
    mask = blobs(ndim)
    out = ConnectedComponentFilter(min_size=10).fit_transform(mask[None])
    assert out.dtype == bool and out.shape == (1, *mask.shape)
    assert out.sum() == 20
    assert not out[0][tuple(np.argwhere(mask)[-1])]  # a pixel of the small one


def test_cc_filter_connectivity():
    mask = np.zeros((6, 6), bool)
    mask[1, 1] = mask[2, 2] = mask[3, 3] = True  # diagonal chain of 3
    full = ConnectedComponentFilter(min_size=3).fit_transform([mask])[0]
    faces = ConnectedComponentFilter(min_size=3, connectivity=1).fit_transform([mask])[0]
    assert full.sum() == 3 and faces.sum() == 0


def test_opening_removes_a_single_pixel():
    mask = np.zeros((1, 9, 9), bool)
    mask[0, 1:6, 1:6] = True
    mask[0, 7, 7] = True
    out = MorphologicalFilter("opening").fit_transform(mask)
    assert not out[0, 7, 7] and out[0, 3, 3]


@pytest.mark.parametrize("ndim", [2, 3])
def test_closing_fills_a_one_pixel_gap(ndim):
    mask = np.zeros((9,) * ndim, bool)
    mask[(slice(2, 7),) * ndim] = True
    mask[(slice(4, 5),) * ndim] = False
    out = MorphologicalFilter("closing").fit_transform([mask])
    assert isinstance(out, list) and out[0][(4,) * ndim]
    assert (out[0] != mask).sum() == 1  # nothing else changes


def test_opening_closing_chains_both():
    mask = np.zeros((1, 11, 11), bool)
    mask[0, 2:8, 2:8] = True
    mask[0, 4, 4] = False
    mask[0, 10, 10] = True
    out = MorphologicalFilter("opening-closing").fit_transform(mask)
    assert not out[0, 10, 10] and out[0, 4, 4]


def test_input_unchanged_stateless_and_picklable():
    mask = blobs(2)[None]
    copy = mask.copy()
    for est in (ConnectedComponentFilter(), MorphologicalFilter(radius=2)):
        out = est.transform(mask)  # no fit needed
        out[...] = True
        np.testing.assert_array_equal(mask, copy)
        restored = pickle.loads(pickle.dumps(clone(est)))
        assert restored.get_params() == est.get_params()


def test_in_a_pipeline():
    pipe = Pipeline([("open", MorphologicalFilter()), ("cc", ConnectedComponentFilter(5))])
    mask = blobs(2)[None]
    assert pipe.fit_transform(mask).sum() == 20 - 4  # opening rounds 4 corners off


@pytest.mark.parametrize(
    "est, param",
    [
        (ConnectedComponentFilter(min_size=0), "min_size"),
        (ConnectedComponentFilter(min_size=2.5), "min_size"),
        (ConnectedComponentFilter(connectivity=4), "connectivity"),
        (MorphologicalFilter(operation="dilation"), "operation"),
        (MorphologicalFilter(radius=-1), "radius"),
    ],
)
def test_bad_parameters(est, param):
    with pytest.raises(ValueError, match=f"'{param}' parameter of {type(est).__name__} must"):
        est.fit(blobs(2)[None])


def test_connectivity_above_the_mask_dimension():
    with pytest.raises(ValueError, match="'connectivity'.*2D"):
        ConnectedComponentFilter(connectivity=3).transform(blobs(2)[None])


def test_bad_masks():
    with pytest.raises(ValueError, match="3 or 4 dimensions"):
        ConnectedComponentFilter().transform(np.zeros((4, 4), bool))
    with pytest.raises(TypeError, match="boolean or real"):
        ConnectedComponentFilter().transform([np.zeros((4, 4), complex)])


@pytest.mark.parametrize("est", [ConnectedComponentFilter(), MorphologicalFilter()])
def test_every_parameter_has_a_constraint(est):
    assert set(est._parameter_constraints) == set(est.get_params(deep=False))
