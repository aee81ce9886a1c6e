"""DenoisingAESegmenter: what its training and maps must do (the shared
contract is checked in tests/test_common.py)."""

import copy
import itertools

import numpy as np
import pytest
import torch

from anomseg.datasets import add_synthetic_lesions, make_healthy_images
from anomseg.denoising import DenoisingAESegmenter, DenoisingUNet
from anomseg.denoising._networks import coarse_noise

PARAMS = {
    "width": 8,
    "depth": 3,
    "noise_resolution": 8,
    "noise_std": 0.2,
    "n_epochs": 15,
    "batch_size": 8,
    "learning_rate": 3e-3,
    "validation_fraction": 0.1,
    "calibration_fraction": 0.25,
    "device": "cpu",
}


@pytest.fixture(scope="module")
def data():
    healthy = make_healthy_images(n_images=48, shape=(32, 32), random_state=0)
    test = make_healthy_images(n_images=12, shape=(32, 32), random_state=1)
    lesioned, masks = add_synthetic_lesions(test, radius=(3, 5), contrast=0.6, random_state=2)
    return healthy, test, np.asarray(lesioned), np.asarray(masks)


@pytest.fixture(scope="module")
def fitted(data):
    return DenoisingAESegmenter(**PARAMS, random_state=0).fit(data[0])


def test_unet_keeps_the_shape_and_rejects_nothing_divisible():
    net = DenoisingUNet(in_channels=2, width=4, depth=3)
    x = torch.rand(3, 2, 24, 40)
    assert net(x).shape == x.shape


def test_coarse_noise_is_smooth_and_scaled():
    g = torch.Generator().manual_seed(0)
    noise = coarse_noise((64, 1, 64, 64), resolution=8, std=0.2, generator=g)
    assert noise.shape == (64, 1, 64, 64)
    # The grid values are N(0, 0.2); bilinear interpolation only shrinks them.
    assert 0.1 < float(noise.std()) < 0.2
    # Neighbouring pixels are strongly correlated (one grid cell spans 9 px).
    a, b = noise[..., :-1].flatten(), noise[..., 1:].flatten()
    assert float(torch.corrcoef(torch.stack([a, b]))[0, 1]) > 0.95


def test_training_lowers_the_denoising_loss(fitted):
    history = fitted.history_
    assert history[0]["epoch"] == 1 and len(history) == fitted.n_epochs_
    # 0.06-0.13 of the first over 4 seeds.
    assert min(r["validation_loss"] for r in history) < 0.5 * history[0]["validation_loss"]
    # The learning rate follows a cosine from learning_rate down to 0.
    rates = [r["learning_rate"] for r in history]
    assert rates[0] == pytest.approx(PARAMS["learning_rate"])
    assert all(a >= b for a, b in itertools.pairwise(rates))


def test_denoising_beats_the_noisy_input(fitted, data):
    """On unseen healthy images with fresh noise, the denoised images are
    closer to the clean ones than the noisy inputs are."""
    _, test, _, _ = data
    g = torch.Generator().manual_seed(5)
    noise = coarse_noise((len(test), 1, 32, 32), 8, 0.2, g)[:, 0].numpy()
    fg = test > 0
    noisy = test + noise * fg
    denoised = fitted.denoise(noisy)
    before = np.mean((noisy - test)[fg] ** 2)
    after = np.mean((denoised - test)[fg] ** 2)
    assert after < 0.75 * before  # 0.35-0.50 over 4 seeds at 1 thread


def test_maps_find_bright_lesions(fitted, data):
    _, test, lesioned, masks = data
    maps = fitted.score_samples(lesioned)
    fg = lesioned > 0
    inside, outside = maps[masks & fg].mean(), maps[~masks & fg].mean()
    assert inside > 3 * outside  # 6.8-9.9 over 4 seeds
    # Healthy pixels of the unseen healthy images are flagged at about max_fpr.
    healthy_fpr = fitted.predict(test)[test > 0].mean()
    assert healthy_fpr < 3 * fitted.max_fpr


def test_positive_residual_ignores_dark_changes(fitted, data):
    _, test, _, masks = data
    darker = np.where(masks, test * 0.3, test)
    model = copy.deepcopy(fitted).set_params(residual="positive")
    positive = model.score_samples(darker)
    absolute = model.set_params(residual="absolute").score_samples(darker)
    assert np.all(positive <= absolute + 1e-6)
    assert positive[masks].mean() < 0.5 * absolute[masks].mean()


def test_map_is_zero_near_the_background_and_median_filtered(fitted, data):
    _, _, lesioned, _ = data
    maps = copy.deepcopy(fitted).set_params(edge_margin=3).score_samples(lesioned[:2])
    from scipy import ndimage

    for image, m in zip(lesioned[:2], maps):
        rim = (image > 0) & ~ndimage.binary_erosion(image > 0, iterations=3)
        assert np.all(m[rim] == 0) and np.all(m[image == 0] == 0)


def test_odd_sizes_are_padded(fitted):
    X = make_healthy_images(n_images=2, shape=(30, 27), random_state=3)
    assert fitted.score_samples(X).shape == (2, 30, 27)


def test_validation_fraction_needs_images():
    X = make_healthy_images(n_images=4, shape=(16, 16), random_state=0)
    est = DenoisingAESegmenter(validation_fraction=0.01, n_epochs=1, depth=2, width=2)
    with pytest.raises(ValueError, match="'validation_fraction'"):
        est.fit(X, calibrate=False)


def test_intensity_prior_weights_the_map_by_the_equalised_intensity(fitted, data):
    from skimage.exposure import equalize_hist

    _, healthy, lesioned, _ = data
    model = copy.deepcopy(fitted)
    plain = model.score_samples(lesioned[:3])
    plain_threshold = model.calibrate(healthy).threshold_
    model.set_params(intensity_prior=True)
    weighted = model.score_samples(lesioned[:3])
    for image, p, w in zip(lesioned[:3], plain, weighted):
        eq = equalize_hist(image, nbins=256, mask=image > 0)
        np.testing.assert_allclose(w, p * eq, rtol=1e-5, atol=1e-7)
    # Calibration sees the weighted maps too: equalised values are below 1.
    assert model.calibrate(healthy).threshold_ < plain_threshold


# -- cropping to the foreground ----------------------------------------------------
def test_windows_hold_the_grown_foreground_in_multiples_of_32():
    from anomseg.denoising._estimators import _window

    rng = np.random.default_rng(0)
    for _ in range(50):
        shape = tuple(int(n) for n in rng.integers(20, 140, size=2))
        fg = np.zeros(shape, bool)
        r0, c0 = (int(rng.integers(0, n - 4)) for n in shape)
        fg[r0 : r0 + int(rng.integers(1, 30)), c0 : c0 + int(rng.integers(1, 30))] = True
        margin = int(rng.integers(0, 10))
        rows, cols = _window(fg, margin)
        for window, axis, size in ((rows, 0, shape[0]), (cols, 1, shape[1])):
            where = np.flatnonzero(fg.any(axis=1 - axis))
            assert window.start >= 0 and window.stop <= size
            assert window.start <= max(where[0] - margin, 0)
            assert window.stop >= min(where[-1] + 1 + margin, size)
            length = window.stop - window.start
            assert length % 32 == 0 or length == size
    assert _window(np.zeros((8, 8), bool), 2) is None


def test_crops_score_like_whole_slices_where_they_matter(data):
    """Cropped and whole-slice networks are trained alike and score the same
    slices: both find the lesions, and their maps are 0 outside the
    foreground; slices of other sizes are scored too."""
    healthy, _, lesioned, masks = data
    for crop_margin in (8, None):
        est = DenoisingAESegmenter(**{**PARAMS, "n_epochs": 6}, crop_margin=crop_margin)
        maps = est.set_params(random_state=0).fit(healthy).score_samples(lesioned)
        assert not maps[lesioned == 0].any()
        assert maps[masks].mean() > 2 * maps[~masks & (lesioned != 0)].mean()
    bigger = np.pad(lesioned[:2], ((0, 0), (8, 24), (0, 16)))
    assert est.score_samples(list(bigger))[0].shape == bigger[0].shape


def test_models_saved_before_cropping_load_as_whole_slice_networks(fitted):
    import pickle

    state = fitted.__getstate__()
    del state["crop_margin"]
    old = DenoisingAESegmenter.__new__(DenoisingAESegmenter)
    with pytest.warns(Warning):  # the version stamp is gone too
        old.__setstate__({k: v for k, v in state.items() if k != "_anomseg_version"})
    assert old.crop_margin is None
    assert pickle.loads(pickle.dumps(fitted)).crop_margin == fitted.crop_margin
