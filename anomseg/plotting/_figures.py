"""Figures of anomaly maps: input, map, predicted mask and ground truth."""

from __future__ import annotations

import numpy as np

__all__ = ["most_anomalous_slice", "plot_anomaly_overview"]


def most_anomalous_slice(volume_mask, axis=-1):
    """Index of the slice along ``axis`` holding the most ``True`` pixels."""
    volume_mask = np.asarray(volume_mask, dtype=bool)
    other = tuple(a for a in range(volume_mask.ndim) if a != axis % volume_mask.ndim)
    return int(np.argmax(volume_mask.sum(axis=other)))


def _slice(array, index, axis):
    array = np.asarray(array)
    return array if array.ndim == 2 else np.take(array, index, axis=axis)


def plot_anomaly_overview(
    images,
    maps,
    masks,
    truths=None,
    *,
    titles=None,
    slice_indices=None,
    axis=-1,
    threshold=None,
):
    """Plot, per sample, the input, its anomaly map, the predicted mask and
    (optionally) the ground truth, one row per sample.

    Parameters
    ----------
    images, maps, masks : sequence of ndarray
        2D images or 3D volumes; volumes are shown at one slice.
    truths : sequence of ndarray or None, default=None
        Ground-truth masks, shown in a fourth column.
    titles : sequence of str or None, default=None
        Row labels, such as subject ids.
    slice_indices : sequence of int or None, default=None
        Slice shown for each volume along ``axis``; by default the slice with
        the largest ground-truth (else predicted) area.
    axis : int, default=-1
        Slicing axis of volumes (the axial axis of canonical NIfTI arrays).
    threshold : float or None, default=None
        If given, drawn as a contour on the anomaly map.

    Returns
    -------
    figure : matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    n = len(images)
    columns = ["input", "anomaly map", "predicted mask"]
    if truths is not None:
        columns.append("ground truth")
    figure, axes = plt.subplots(n, len(columns), figsize=(3 * len(columns), 3 * n), squeeze=False)
    for row in range(n):
        reference = truths[row] if truths is not None else masks[row]
        if slice_indices is not None:
            index = slice_indices[row]
        elif np.ndim(images[row]) == 3:
            index = most_anomalous_slice(reference, axis)
        else:
            index = None
        panels = [images[row], maps[row], masks[row]]
        if truths is not None:
            panels.append(truths[row])
        panels = [np.rot90(_slice(p, index, axis)) for p in panels]
        for col, (panel, title) in enumerate(zip(panels, columns)):
            ax = axes[row, col]
            cmap = {"input": "gray", "anomaly map": "inferno"}.get(title, "gray")
            shown = ax.imshow(panel, cmap=cmap, interpolation="nearest")
            if title == "anomaly map":
                figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
                if threshold is not None:
                    ax.contour(panel > threshold, levels=[0.5], colors="cyan", linewidths=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title)
        label = titles[row] if titles is not None else f"sample {row}"
        if index is not None:
            label += f"\nslice {index}"
        axes[row, 0].set_ylabel(label)
    figure.tight_layout()
    return figure
