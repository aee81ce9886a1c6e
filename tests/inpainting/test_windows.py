"""Window geometry, foreground sampling, patches and heatmaps, against
brute-force computations."""

import numpy as np
import pytest
import torch

from anomseg.inpainting._windows import (
    default_stride,
    default_window_size,
    foreground_fractions,
    gather_patches,
    heatmap,
    perturb_windows,
    sample_windows,
    window_candidates,
    window_grid,
)


def disk_mask(shape, centre, radius):
    yy, xx = np.indices(shape)
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


@pytest.mark.parametrize(
    "shape, window, stride",
    [
        ((256, 256), 16, 4),
        ((128, 128), 8, 2),
        ((512, 512), 32, 8),
        ((32, 32), 2, 1),
        ((8, 8), 2, 1),
    ],
)
def test_default_window_scales_with_image_size(shape, window, stride):
    assert default_window_size(shape) == window
    assert default_stride(window) == stride


def test_foreground_fractions_match_brute_force():
    rng = np.random.default_rng(0)
    fg = rng.random((11, 9)) < 0.6
    window = 3
    fractions = foreground_fractions(fg, window)
    assert fractions.shape == (9, 7)
    for t in range(9):
        for left in range(7):
            assert fractions[t, left] == pytest.approx(fg[t : t + 3, left : left + 3].mean())
    assert foreground_fractions(fg[:2], window).size == 0


@pytest.mark.parametrize("min_foreground", [1.0, 0.5])
def test_sampled_windows_stay_in_the_foreground(min_foreground):
    foregrounds = [
        disk_mask((40, 40), (20, 20), 12),
        disk_mask((30, 36), (10, 25), 7),
        np.zeros((30, 30), bool),
    ]
    window = 6
    candidates = window_candidates(foregrounds, window, min_foreground)
    slices, tops, lefts = sample_windows(candidates, 2000, np.random.default_rng(0))
    assert set(np.unique(slices)) == {0, 1}  # never the empty slice
    fractions = np.array(
        [
            foregrounds[s][t : t + window, c : c + window].mean()
            for s, t, c in zip(slices, tops, lefts)
        ]
    )
    assert (fractions >= min_foreground).all()
    if min_foreground < 1:  # windows on the rim are drawn too
        assert (fractions < 1).any()
    # every candidate window is a qualifying one, and all of them are listed
    expected = sum(
        (foreground_fractions(fg, window) >= min_foreground).sum() for fg in foregrounds
    )
    assert candidates.size == expected


def test_no_qualifying_window_is_an_error():
    with pytest.raises(ValueError, match="min_foreground"):
        window_candidates([np.zeros((20, 20), bool)], 4, 0.5)


def test_window_grid_covers_the_slice_and_skips_background():
    fg = np.zeros((13, 10), bool)
    fg[2:9, 3:8] = True
    valid, padded = window_grid(fg, window=4, stride=3, min_foreground=0.5)
    assert padded == (13, 10)  # (13 - 4) and (10 - 4) are multiples of 3
    assert valid.shape == (4, 3)
    for r in range(4):
        for c in range(3):
            frac = fg[3 * r : 3 * r + 4, 3 * c : 3 * c + 4].mean()
            assert valid[r, c] == (frac >= 0.5)
    valid, padded = window_grid(fg, window=4, stride=4, min_foreground=0.5)
    assert padded == (16, 12)  # padded until the grid reaches the edge


def test_patches_are_centred_on_their_window():
    rng = np.random.default_rng(1)
    images = rng.random((2, 1, 12, 15)).astype(np.float32)
    margin, size, window = 6, 8, 4
    padded = torch.nn.functional.pad(torch.from_numpy(images), (margin,) * 4)
    patches = gather_patches(
        padded, np.array([1, 0]), np.array([0, 5]), np.array([11, 3]), size, window, margin
    )
    reference = np.pad(images, ((0, 0), (0, 0), (margin, margin), (margin, margin)))
    offset = margin - (size - window) // 2  # 2 pixels of context on each side
    np.testing.assert_array_equal(
        patches[0].numpy(),
        reference[1, :, offset : offset + size, 11 + offset : 11 + offset + size],
    )
    np.testing.assert_array_equal(
        patches[1].numpy(),
        reference[0, :, 5 + offset : 5 + offset + size, 3 + offset : 3 + offset + size],
    )
    # the window sits in the middle of its patch
    np.testing.assert_array_equal(patches[1, :, 2:6, 2:6].numpy(), images[0, :, 5:9, 3:7])


def test_heatmap_is_the_mean_loss_of_covering_windows():
    rng = np.random.default_rng(2)
    losses = rng.random((3, 4))
    valid = rng.random((3, 4)) < 0.7
    window, stride, shape = 3, 2, (7, 9)
    out = heatmap(losses, valid, window, stride, shape)
    expected = np.zeros(shape)
    for y in range(shape[0]):
        for x in range(shape[1]):
            covering = [
                losses[r, c]
                for r in range(3)
                for c in range(4)
                if valid[r, c]
                and stride * r <= y < stride * r + window
                and stride * c <= x < stride * c + window
            ]
            expected[y, x] = np.mean(covering) if covering else 0.0
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert out.dtype == np.float32


def test_perturbation_stays_in_the_window_foreground():
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.random((6, 2, 20, 20)).astype(np.float32))
    fg = torch.from_numpy(rng.random((6, 1, 20, 20)) < 0.8).float()
    before = x.clone()
    tops, lefts = rng.integers(0, 8, 6), rng.integers(0, 8, 6)
    perturb_windows(x, fg, tops, lefts, window=5, margin=4, rng=rng)
    changed = (x != before).any(dim=1, keepdim=True)
    inside = torch.zeros_like(fg, dtype=torch.bool)
    for k in range(6):
        inside[k, :, tops[k] + 4 : tops[k] + 9, lefts[k] + 4 : lefts[k] + 9] = True
    assert changed.any()
    assert not (changed & ~(inside & (fg > 0))).any()
    assert (x >= 0).all()


def test_packed_candidates_draw_the_windows_a_full_listing_would():
    rng = np.random.default_rng(3)
    foregrounds = [rng.random((h, w)) < 0.7 for h, w in [(20, 17), (9, 30), (3, 3), (25, 25)]]
    window, min_foreground = 4, 0.6
    listed = [
        (i, t, c)
        for i, fg in enumerate(foregrounds)
        for t, c in zip(*np.nonzero(foreground_fractions(fg, window) >= min_foreground))
    ]
    candidates = window_candidates(foregrounds, window, min_foreground)
    assert candidates.size == len(listed)
    drawn = sample_windows(candidates, 500, np.random.default_rng(7))
    picked = np.random.default_rng(7).integers(len(listed), size=500)
    expected = np.array(listed)[picked].T
    for got, want in zip(drawn, expected):
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, want)
