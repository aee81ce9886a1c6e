"""BrainExtractor: deepbet's brain masks on real scans, on the input's grid.

deepbet takes about 6 s per volume on one thread; the issue's checks (five
LGG volumes, three MSLUB volumes) run by default, each volume extracted
once per module, about a minute in all. The real data sets are read from
../shared/data and their tests skip when it is absent; the tests that run
deepbet skip where it is not installed (``make test-min``).
"""

import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone

from anomseg.baselines import FlairThreshold
from anomseg.datasets import load_demo_mslub, load_lgg_flair
from anomseg.exceptions import NotFittedError
from anomseg.io import load_nifti
from anomseg.preprocessing import BrainExtractor, make_anomaly_pipeline

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"

#: The five LGG cases checked (TCGA_DU_5855_19951217 is the one whose
#: frontal tumour touches the skull, the hardest for tumour inclusion).
LGG_CASES = [
    "TCGA_DU_5855_19951217",
    "TCGA_CS_4944_20010208",
    "TCGA_CS_5393_19990606",
    "TCGA_DU_6405_19851005",
    "TCGA_DU_7018_19911220",
]
MSLUB_CASES = ["patient07", "patient19", "patient26"]


def _data_dir(name):
    path = DATA / name
    if not path.is_dir():
        pytest.skip(f"real data set '{name}' not found at {path}")
    return path


def _dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def lgg_affine(shape):
    """The true orientation of the arrays that load_lgg_flair returns.

    The files' affine is nominal (diag(2, 2, 1), labelled RAS), so
    load_nifti returns the arrays as they are on disk. Their axes really run
    anterior to posterior (axis 0), right to left (axis 1) and inferior to
    superior (axis 2; shared/data/README.md): axis 0 steps along -y, axis 1
    along -x, axis 2 along +z. Spacing does not matter to deepbet; it is the
    one the shipped masks assumed for the slices (150 mm / n_slices) and
    240 mm / 128 in-plane.
    """
    inplane, slices = 240.0 / 128, 150.0 / shape[2]
    return np.array([[0, -inplane, 0, 0], [-inplane, 0, 0, 0], [0, 0, slices, 0], [0, 0, 0, 1.0]])


@pytest.fixture(scope="module")
def deepbet():
    return pytest.importorskip("deepbet", reason="deepbet not installed (anomseg[brain])")


@pytest.fixture(scope="module")
def lgg_masks(deepbet):
    """Masks of LGG cases, each computed once: case -> (data, mask)."""
    cache = {}

    def get(case):
        if case not in cache:
            data = load_lgg_flair(_data_dir("lgg_flair"), subjects=[case])
            extractor = BrainExtractor(affine=lgg_affine(data.images[0].shape), device="cpu")
            cache[case] = data, extractor.fit(data.images).get_mask(data.images)[0]
        return cache[case]

    return get


@pytest.mark.parametrize("case", LGG_CASES)
def test_lgg_masks_hold_the_tumour_and_match_the_shipped_ones(lgg_masks, case):
    data, mask = lgg_masks(case)
    image, tumour, shipped = data.images[0], data.masks[0], data.brain_masks[0]
    assert mask.dtype == bool and mask.shape == image.shape
    assert mask[tumour].mean() >= 0.97
    # The shipped masks were made by deepbet's own command with this
    # geometry: the same steps on arrays reproduce them (Dice 1.0 measured).
    assert _dice(mask, shipped) >= 0.99


@pytest.mark.parametrize("case", MSLUB_CASES)
def test_mslub_masks_match_the_skull_stripped_brain(deepbet, case):
    image, reference = load_nifti(_data_dir("mslub") / f"{case}_flair.nii.gz")
    mask = BrainExtractor(affine=reference, device="cpu").fit([image]).get_mask([image])[0]
    # Measured: 0.976, 0.9497 and 0.974 for patients 07, 19 and 26, the same
    # masks as deepbet's own command gives (0.9497 is the "0.95" of issue 12).
    assert _dice(mask, image != 0) >= 0.94


@pytest.mark.slow
def test_margin_dilates_the_mask(lgg_masks):
    data, mask = lgg_masks(LGG_CASES[0])
    extractor = BrainExtractor(affine=lgg_affine(mask.shape), margin=2, device="cpu")
    wider = extractor.fit(data.images).get_mask(data.images)[0]
    assert (wider >= mask).all() and wider.sum() > mask.sum()


@pytest.fixture(scope="module")
def demo_pipeline(deepbet):
    """The FLAIR baseline behind BrainExtractor, fitted on the first demo
    volume, and that volume's anomaly map masked outside the brain."""
    image = load_demo_mslub().images[0]
    pipeline = make_anomaly_pipeline(BrainExtractor(device="cpu"), FlairThreshold())
    pipeline.fit([image])
    return image, pipeline, pipeline.masked_score_samples([image])[0]


def test_pipeline_maps_on_the_input_grid(demo_pipeline):
    image, pipeline, anomaly_map = demo_pipeline
    assert isinstance(anomaly_map, np.ma.MaskedArray) and anomaly_map.shape == image.shape
    # The demo volume is skull-stripped: the brain is its non-zero part.
    assert _dice(~anomaly_map.mask, image != 0) >= 0.95
    prediction = pipeline.threshold_maps([anomaly_map.data])[0]
    assert prediction.shape == image.shape and prediction.any()
    assert not prediction[anomaly_map.mask].any()  # nothing outside the brain


def test_oriented_input_gives_the_same_mask(demo_pipeline):
    """The same volume stored with flipped and permuted axes, with an affine
    that says so, gets the same mask, on its own grid; a stacked input gives
    stacked masks."""
    image, _, anomaly_map = demo_pipeline
    flipped = np.ascontiguousarray(np.flip(image, 0).transpose(1, 0, 2))
    affine = np.array([[0, -1.0, 0, 0], [1.0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    extractor = BrainExtractor(affine=affine, device="cpu").fit([flipped])
    masks = extractor.get_mask(flipped[None])
    assert masks.dtype == bool and masks.shape == (1, *flipped.shape)
    expected = np.flip(~anomaly_map.mask, 0).transpose(1, 0, 2)
    assert _dice(masks[0], expected) >= 0.999


def test_volumes_of_the_wrong_layout_are_refused():
    slices = np.zeros((5, 32, 32), dtype=np.float32)
    for method in ("fit", "fit_transform"):
        with pytest.raises(ValueError, match=r"X passed to BrainExtractor.fit must hold 3D"):
            getattr(BrainExtractor(), method)(slices)
    with pytest.raises(ValueError, match=r"got 2D images of shape \(32, 32\)"):
        BrainExtractor().fit([slices[0]])


@pytest.mark.parametrize(
    "params, message",
    [
        ({"threshold": 1.5}, "'threshold' parameter of BrainExtractor must be a float in"),
        ({"threshold": 0}, "'threshold' parameter of BrainExtractor must be a float in"),
        ({"margin": -1}, "'margin' parameter of BrainExtractor must be an int in"),
        ({"margin": 1.5}, "'margin' parameter of BrainExtractor must be an int in"),
        ({"device": "mps"}, "'device' parameter of BrainExtractor must be a str among"),
        ({"affine": "RAS"}, "'affine' parameter of BrainExtractor must be"),
        ({"affine": np.eye(3)}, "'affine' of BrainExtractor must be None, a finite 4 x 4"),
        ({"affine": np.zeros((4, 4))}, "invertible 3 x 3 part"),
        ({"affine": [np.eye(4), np.eye(3)]}, "'affine' of BrainExtractor must be None"),
    ],
)
def test_bad_parameters(params, message):
    volume = np.ones((1, 8, 8, 8), dtype=np.float32)
    with pytest.raises(ValueError, match=message):
        BrainExtractor(**params).fit(volume)


def test_one_affine_per_volume(deepbet):
    volumes = [np.ones((8, 8, 8), dtype=np.float32)] * 2
    extractor = BrainExtractor(affine=[np.eye(4)] * 3, device="cpu").fit(volumes)
    with pytest.raises(ValueError, match="holds 3 entries but 2 volume"):
        extractor.get_mask(volumes)


def test_no_head_is_a_clear_error(deepbet):
    volume = np.zeros((1, 24, 24, 24), dtype=np.float32)
    volume[0, 3, 3, 3] = 1.0
    extractor = BrainExtractor(device="cpu").fit(volume)
    with pytest.raises(ValueError, match=r"found no brain in X\[0\]"):
        extractor.get_mask(volume)


def test_not_fitted():
    with pytest.raises(NotFittedError):
        BrainExtractor().get_mask(np.ones((1, 8, 8, 8)))
    with pytest.raises(NotFittedError):
        BrainExtractor().transform(np.ones((1, 8, 8, 8)))


def test_clone_keeps_parameters():
    extractor = BrainExtractor(affine=np.eye(4), threshold=0.3, margin=2, device="cpu")
    assert clone(extractor).get_params()["margin"] == 2


def test_without_deepbet_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "deepbet", None)
    with pytest.raises(ImportError, match=r"pip install 'anomseg\[brain\]'"):
        BrainExtractor(device="cpu").fit(np.ones((1, 8, 8, 8), dtype=np.float32))
