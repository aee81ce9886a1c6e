"""Square windows in 2D slices: their default size, which of them lie in
the foreground, patches around them, and heatmaps of per-window losses.

A window is named by its top-left corner ``(top, left)``; its patch of
size ``S`` is centred on it, starting ``(S - window) // 2`` pixels above
and left of the window. Images are zero-padded so that every patch fits.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

__all__ = [
    "default_window_size",
    "foreground_fractions",
    "gather_patches",
    "heatmap",
    "sample_windows",
    "window_candidates",
    "window_grid",
    "window_mask",
]

#: Window side and stride of the papers at 256 x 256 pixels.
REFERENCE_SIDE, REFERENCE_WINDOW, REFERENCE_STRIDE = 256, 16, 4


def default_window_size(shape):
    """16 px at 256 x 256, scaled with the side ``sqrt(H * W)``, at least 2."""
    side = float(np.sqrt(shape[0] * shape[1]))
    return max(2, round(REFERENCE_WINDOW * side / REFERENCE_SIDE))


def default_stride(window):
    """4 px for a 16 px window, scaled alike, at least 1."""
    return max(1, round(window * REFERENCE_STRIDE / REFERENCE_WINDOW))


def foreground_fractions(foreground, window):
    """Fraction of foreground pixels in every ``window`` x ``window`` window
    of a 2D mask, (H - window + 1, W - window + 1), indexed by the top-left
    corner; empty if the mask is smaller than the window."""
    fg = np.asarray(foreground, dtype=np.float64)
    h, w = fg.shape
    if h < window or w < window:
        return np.zeros((0, 0))
    summed = np.zeros((h + 1, w + 1))
    summed[1:, 1:] = fg.cumsum(0).cumsum(1)
    area = (
        summed[window:, window:]
        - summed[:-window, window:]
        - summed[window:, :-window]
        + summed[:-window, :-window]
    )
    return area / window**2


def window_grid(foreground, window, stride, min_foreground):
    """The windows evaluated in one slice: corners ``0, stride, 2 stride,
    ...`` along each axis, on the slice zero-padded at the bottom and right
    until the grid reaches its edge.

    Returns
    -------
    valid : ndarray of bool (n_rows, n_columns)
        Whether each window has at least ``min_foreground`` of foreground.
    padded_shape : tuple of int
        The padded slice shape the grid covers exactly.
    """
    h, w = foreground.shape
    padded = tuple(max(n, window) + (-(max(n, window) - window)) % stride for n in (h, w))
    fg = np.zeros(padded, dtype=bool)
    fg[:h, :w] = foreground
    fractions = foreground_fractions(fg, window)[::stride, ::stride]
    return fractions >= min_foreground - 1e-9, padded


def sample_windows(candidates, n, rng):
    """Draw ``n`` windows uniformly, with replacement, among ``candidates``
    (the result of :func:`window_candidates`): every window of every slice
    with enough foreground is equally likely.

    Returns
    -------
    slices, tops, lefts : ndarray of int64 (n,)
    """
    return candidates.take(rng.integers(candidates.size, size=n))


class WindowCandidates:
    """The windows of the training slices with enough foreground, in slice
    then row-major order, held as one packed bit per window position (an
    eighth of a byte, where listing them would take 12 bytes each)."""

    def __init__(self, masks):
        self.shapes, self.bits, counts = [], [], []
        for mask in masks:  # packed one at a time: masks may be a generator
            self.shapes.append(mask.shape)
            self.bits.append(np.packbits(mask, axis=None))
            counts.append(int(np.count_nonzero(mask)))
        self.starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        self.size = int(self.starts[-1])

    def take(self, picked):
        """Slice, top and left (int64 arrays) of the windows at the
        positions ``picked`` of the ordered list."""
        picked = np.asarray(picked, np.int64)
        slices = np.searchsorted(self.starts, picked, side="right") - 1
        tops, lefts = np.empty_like(picked), np.empty_like(picked)
        for s in np.unique(slices):
            shape = self.shapes[s]
            mask = np.unpackbits(self.bits[s], count=shape[0] * shape[1]).view(bool)
            where = slices == s
            position = np.flatnonzero(mask)[picked[where] - self.starts[s]]
            tops[where], lefts[where] = np.divmod(position, shape[1])
        return slices, tops, lefts


def window_candidates(foregrounds, window, min_foreground):
    """Every window with at least ``min_foreground`` of foreground, as a
    :class:`WindowCandidates` (``size`` of them); raises if there is none."""
    candidates = WindowCandidates(
        foreground_fractions(fg, window) >= min_foreground - 1e-9 for fg in foregrounds
    )
    if candidates.size == 0:
        raise ValueError(
            f"No {window} x {window} window of the training slices has "
            f"{min_foreground:.0%} of foreground pixels; lower "
            "'min_foreground' or 'window_size', or check the foreground masks."
        )
    return candidates


def gather_patches(padded, slices, tops, lefts, size, window, margin):
    """Patches (n, C, size, size) of the tensor ``padded`` (N, C, H', W'),
    the slices zero-padded by ``margin`` on every side, each centred on the
    window at (``tops``, ``lefts``) of the unpadded slice ``slices``."""
    device = padded.device
    offset = margin - (size - window) // 2
    span = torch.arange(size, device=device)
    rows = torch.as_tensor(tops, device=device)[:, None] + offset + span
    cols = torch.as_tensor(lefts, device=device)[:, None] + offset + span
    index = torch.as_tensor(slices, device=device)[:, None, None]
    patches = padded[index, :, rows[:, :, None], cols[:, None, :]]
    return patches.permute(0, 3, 1, 2)


def window_mask(size, window, device):
    """The (1, 1, size, size) mask of the window centred in a patch."""
    mask = torch.zeros(1, 1, size, size, device=device)
    start = (size - window) // 2
    mask[..., start : start + window, start : start + window] = 1
    return mask


def heatmap(losses, valid, window, stride, shape):
    """A pixel heatmap (H, W) of per-window losses: each pixel gets the mean
    loss of the evaluated windows that cover it, 0 where none does.

    Parameters
    ----------
    losses : ndarray (n_rows, n_columns)
        Loss of each window of the grid of :func:`window_grid`; ignored
        where ``valid`` is False.
    valid : ndarray of bool (n_rows, n_columns)
    window, stride : int
    shape : tuple of int (H, W)
        The slice shape, to crop the padded grid back to.
    """
    valid = torch.from_numpy(np.asarray(valid, dtype=np.float64))[None, None]
    values = torch.from_numpy(np.where(valid[0, 0].numpy() > 0, losses, 0.0))[None, None]
    ones = torch.ones(1, 1, window, window, dtype=torch.float64)
    # Sums of losses, not a network: exact in float64 whatever the precision.
    with torch.autocast("cpu", enabled=False):
        total = F.conv_transpose2d(values, ones, stride=stride)[0, 0]
        count = F.conv_transpose2d(valid, ones, stride=stride)[0, 0]
    out = torch.where(count > 0, total / count.clamp(min=1), 0.0)
    return out[: shape[0], : shape[1]].numpy().astype(np.float32)


def perturb_windows(x, foreground, tops, lefts, window, margin, rng, max_amplitude=1.0):
    """Add a Gaussian blob of random sign, amplitude, width and position to
    the foreground of one window per slice, in place.

    Parameters
    ----------
    x : tensor (n, C, H', W')
        Slices zero-padded by ``margin``, one per window.
    foreground : tensor (n, 1, H', W')
    tops, lefts : ndarray of int (n,)
        The windows, in unpadded coordinates.
    window, margin : int
    rng : numpy.random.Generator
    max_amplitude : float
        Amplitudes are uniform in ``[0.2, 1] * max_amplitude``; intensities
        stay non-negative.
    """
    n, device = x.shape[0], x.device

    def uniform(low, high):
        return torch.as_tensor(rng.uniform(low, high, size=n), dtype=x.dtype, device=device)

    sign = torch.as_tensor(rng.choice([-1.0, 1.0], size=n), dtype=x.dtype, device=device)
    amplitude = sign * uniform(0.2, 1.0) * max_amplitude
    sigma = uniform(0.2, 0.6) * window
    centre_y, centre_x = uniform(0, window), uniform(0, window)
    span = torch.arange(window, dtype=x.dtype, device=device) + 0.5
    dy = (span[None, :] - centre_y[:, None]) ** 2
    dx = (span[None, :] - centre_x[:, None]) ** 2
    blob = torch.exp(-(dy[:, :, None] + dx[:, None, :]) / (2 * sigma[:, None, None] ** 2))
    blob = amplitude[:, None, None] * blob  # (n, w, w)
    rows = (
        torch.as_tensor(tops, device=device)[:, None]
        + margin
        + torch.arange(window, device=device)
    )
    cols = (
        torch.as_tensor(lefts, device=device)[:, None]
        + margin
        + torch.arange(window, device=device)
    )
    index = (
        torch.arange(n, device=device)[:, None, None],
        slice(None),
        rows[:, :, None],
        cols[:, None, :],
    )
    region = x[index]  # (n, w, w, C)
    inside = foreground[index]
    x[index] = (region + blob[..., None] * inside).clamp(min=0)
