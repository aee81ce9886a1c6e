"""Figures of anomaly maps: input, map, predicted mask and ground truth."""

from __future__ import annotations

import numpy as np

__all__ = [
    "lesion_point",
    "most_anomalous_slice",
    "plot_anomaly_overview",
    "plot_orthogonal_views",
    "plot_overlay",
    "plot_scan_figure",
]


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
    outlines=False,
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
    threshold : float, sequence of float or None, default=None
        If given, drawn as a green contour on the anomaly map (green, which
        neither the colour map nor the outlines use); one per sample for maps
        thresholded apart.
    outlines : bool, default=False
        Draw the predicted mask and the ground truth as outlines over the
        input, in one column, "mask and truth" (see :func:`plot_overlay`, which
        gives the legend), instead of a column each.

    Returns
    -------
    figure : matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    n = len(images)
    thresholds = [threshold] * n if threshold is None or np.ndim(threshold) == 0 else threshold
    if len(thresholds) != n:
        raise ValueError(
            f"'threshold' must be one float or one per sample ({n}); got {len(thresholds)}."
        )
    columns = ["input", "anomaly map"]
    if outlines:
        columns.append("mask and truth")
    else:
        columns += ["predicted mask"] + (["ground truth"] if truths is not None else [])
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
        panels = [_slice(p, index, axis) for p in panels]
        if outlines:
            plot_overlay(panels[0], *panels[2:], ax=axes[row, 2], legend=row == 0)
            panels = panels[:2]
        for col, (panel, title) in enumerate(zip(map(np.rot90, panels), columns)):
            ax = axes[row, col]
            cmap = {"input": "gray", "anomaly map": "inferno"}.get(title, "gray")
            shown = ax.imshow(panel, cmap=cmap, interpolation="nearest")
            if title == "anomaly map":
                figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
                if thresholds[row] is not None:
                    ax.contour(
                        panel > thresholds[row], levels=[0.5], colors="lime", linewidths=0.6
                    )
            ax.set_xticks([])
            ax.set_yticks([])
        label = titles[row] if titles is not None else f"sample {row}"
        if index is not None:
            label += f"\nslice {index}"
        axes[row, 0].set_ylabel(label)
    for ax, title in zip(axes[0], columns):
        ax.set_title(title)
    figure.tight_layout()
    return figure


#: The colours of the outlines: the predicted mask and the ground truth,
#: apart for most colour vision and on grey.
MASK_COLOUR = "orangered"
TRUTH_COLOUR = "cyan"

#: The anatomical views, by the axis of a canonical (RAS+) volume that each
#: cuts across, and the names of its coordinates.
_VIEWS = (("sagittal", "x"), ("coronal", "y"), ("axial", "z"))


def plot_overlay(
    image,
    mask=None,
    truth=None,
    *,
    ax=None,
    aspect=1.0,
    legend=True,
    labels=("predicted mask", "ground truth"),
):
    """Draw a 2D image in grey with the mask and the truth as coloured
    outlines over it.

    The image is turned a quarter turn counter-clockwise, the display
    orientation of slices of canonical (RAS+) volumes, with the patient's
    left on the left (neurological convention). Each outline runs along the
    pixel edges between the pixels inside the mask and those outside (a
    contour at 0.5, cutting the corners diagonally), so that it hides none
    of the image it outlines; a mask touching the image's border is closed
    along the border.

    Parameters
    ----------
    image : ndarray of shape (n_rows, n_columns)
        The slice to draw, shown between its 0.5th and 99.5th percentiles.
    mask, truth : ndarray of shape (n_rows, n_columns) or None, default=None
        The predicted mask (outlined in :data:`MASK_COLOUR`) and the ground
        truth (in :data:`TRUTH_COLOUR`); an empty one draws no outline.
    ax : matplotlib.axes.Axes or None, default=None
        Where to draw; by default a new figure's.
    aspect : float, default=1.0
        Height over width of a pixel as drawn (the voxel sizes of the
        slice's vertical and horizontal axes, for an undistorted brain).
    legend : bool, default=True
        Add a legend naming the outlines given.
    labels : pair of str, default=("predicted mask", "ground truth")
        The legend's names of the mask and the truth.

    Returns
    -------
    ax : matplotlib.axes.Axes
    """
    from matplotlib.lines import Line2D

    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"'image' must be a 2D slice; got an array of shape {image.shape}.")
    if ax is None:
        import matplotlib.pyplot as plt

        ax = plt.figure().add_subplot()
    shown = np.rot90(image)
    low, high = np.percentile(shown, [0.5, 99.5]) if shown.size else (0, 1)
    ax.imshow(
        shown, cmap="gray", vmin=low, vmax=max(high, low + 1e-6), interpolation="nearest",
        aspect=aspect,
    )  # fmt: skip
    handles = []
    for outlined, colour, label, name in zip(
        (mask, truth), (MASK_COLOUR, TRUTH_COLOUR), labels, ("mask", "truth")
    ):
        if outlined is None:
            continue
        outlined = np.asarray(outlined, dtype=bool)
        if outlined.shape != image.shape:
            raise ValueError(
                f"'{name}' must have the shape of 'image', {image.shape}; got {outlined.shape}."
            )
        handles.append(Line2D([], [], color=colour, linewidth=1.5, label=label))
        if outlined.any():
            _outline(ax, np.rot90(outlined), colour)
    ax.set_xticks([])
    ax.set_yticks([])
    if legend and handles:
        ax.legend(handles=handles, loc="lower right", fontsize="small", framealpha=0.6)
    return ax


def _outline(ax, mask, colour):
    """The pixel edges around ``mask`` (as drawn: rows down, columns
    across), padded with a ring of background so that the outline closes
    along the image's border."""
    padded = np.pad(mask.astype(np.float32), 1)
    rows, columns = np.arange(-1, mask.shape[0] + 1), np.arange(-1, mask.shape[1] + 1)
    ax.contour(columns, rows, padded, levels=[0.5], colors=[colour], linewidths=1.2)


def lesion_point(*masks, shape=None):
    """The voxel through which views of a volume show the most lesion: on
    each axis, the slice holding the most voxels of any of ``masks``; the
    centre of ``shape`` (or of the masks) when they are all empty."""
    given = [np.asarray(m, dtype=bool) for m in masks if m is not None]
    if shape is None:
        shape = given[0].shape
    union = np.zeros(shape, bool)
    for m in given:
        union |= m
    if not union.any():
        return tuple(n // 2 for n in shape)
    return tuple(most_anomalous_slice(union, axis) for axis in range(len(shape)))


def plot_orthogonal_views(
    image, mask=None, truth=None, *, point=None, voxel_size=None, axes=None, legend=True
):
    """Sagittal, coronal and axial slices of a volume through one point,
    with the mask and the truth outlined (see :func:`plot_overlay`).

    Parameters
    ----------
    image : ndarray of shape (X, Y, Z)
        A volume in the canonical (RAS+) orientation, as
        :func:`anomseg.io.load_nifti` reads it.
    mask, truth : ndarray of shape (X, Y, Z) or None, default=None
        The predicted mask and the ground truth.
    point : tuple of 3 int or None, default=None
        The voxel the three slices go through; by default the one of most
        lesion (:func:`lesion_point`: on each axis, the slice with the most
        voxels of the mask or the truth), else the volume's centre.
    voxel_size : tuple of 3 float or None, default=None
        The voxel's size in mm along each axis, so that anisotropic voxels
        draw an undistorted brain; by default isotropic.
    axes : sequence of 3 matplotlib.axes.Axes or None, default=None
        Where to draw; by default a new figure's row of three.
    legend : bool, default=True
        Add a legend (on the axial view) naming the outlines given.

    Returns
    -------
    figure : matplotlib.figure.Figure
        The figure of the views, titled "sagittal (x = i)", "coronal
        (y = j)" and "axial (z = k)".
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"'image' must be a 3D volume; got an array of shape {image.shape}.")
    if point is None:
        point = lesion_point(mask, truth, shape=image.shape)
    if len(point) != 3 or not all(0 <= int(p) < n for p, n in zip(point, image.shape)):
        raise ValueError(f"'point' must be a voxel of the volume {image.shape}; got {point!r}.")
    voxel_size = (1.0, 1.0, 1.0) if voxel_size is None else tuple(map(float, voxel_size))
    if axes is None:
        import matplotlib.pyplot as plt

        _, axes = plt.subplots(1, 3, figsize=(10, 3.6), layout="constrained")
    for axis, (ax, (view, coordinate)) in enumerate(zip(axes, _VIEWS)):
        index = int(point[axis])
        across = [a for a in range(3) if a != axis]  # drawn across, then up
        plot_overlay(
            np.take(image, index, axis=axis),
            None if mask is None else np.take(mask, index, axis=axis),
            None if truth is None else np.take(truth, index, axis=axis),
            ax=ax,
            aspect=voxel_size[across[1]] / voxel_size[across[0]],
            legend=legend and axis == 2,
        )
        ax.set_title(f"{view} ({coordinate} = {index})")
    return axes[0].figure


def plot_scan_figure(
    image, mask, truth=None, *, voxel_size=None, title=None, n_slices=3, figure=None
):
    """One scan's mask (and truth) outlined over it: on top, the axial
    slices with the most lesion; below, orthogonal views through the voxel
    of most lesion (:func:`plot_orthogonal_views`).

    Parameters
    ----------
    image : ndarray of shape (X, Y, Z)
        The scan, in the canonical (RAS+) orientation.
    mask : ndarray of shape (X, Y, Z)
        The predicted mask.
    truth : ndarray of shape (X, Y, Z) or None, default=None
        The ground truth.
    voxel_size : tuple of 3 float or None, default=None
        The voxel's size in mm along each axis; by default isotropic.
    title : str or None, default=None
        The figure's title, such as the scan, the method and its threshold.
    n_slices : int, default=3
        The axial slices shown on top: those holding the most voxels of the
        mask or the truth, in order, or, where no slice holds any, slices
        evenly spaced through the scan's non-zero voxels.
    figure : matplotlib.figure.Figure or None, default=None
        An empty figure to draw in, such as one made without pyplot (which
        keeps every figure it makes until closed); by default a new one of
        pyplot's.

    Returns
    -------
    figure : matplotlib.figure.Figure
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"'image' must be a 3D volume; got an array of shape {image.shape}.")
    if isinstance(n_slices, bool) or not isinstance(n_slices, int) or n_slices < 1:
        raise ValueError(f"'n_slices' must be a positive int; got {n_slices!r}.")
    voxel_size = (1.0, 1.0, 1.0) if voxel_size is None else tuple(map(float, voxel_size))
    lesion = np.asarray(mask, dtype=bool) | (False if truth is None else np.asarray(truth, bool))
    per_slice = lesion.sum(axis=(0, 1))
    slices = sorted(
        np.argsort(-per_slice, kind="stable")[: min(n_slices, int(np.count_nonzero(per_slice)))]
    )
    if not slices:
        nonzero = np.flatnonzero(np.abs(image).sum(axis=(0, 1)))
        low, high = (nonzero[0], nonzero[-1]) if nonzero.size else (0, image.shape[2] - 1)
        slices = sorted(set(np.linspace(low, high, n_slices + 2)[1:-1].round().astype(int)))
    columns = max(len(slices), 3)
    if figure is None:
        import matplotlib.pyplot as plt

        figure = plt.figure()
    figure.set_size_inches(3.4 * columns, 7.6)
    figure.set_layout_engine("constrained")
    top, bottom = figure.subfigures(2, 1)
    for ax, index in zip(top.subplots(1, columns, squeeze=False)[0], slices + [None] * columns):
        if index is None:  # fewer slices with lesion than columns
            ax.set_axis_off()
            continue
        plot_overlay(
            image[..., index],
            np.asarray(mask)[..., index],
            None if truth is None else np.asarray(truth)[..., index],
            ax=ax,
            aspect=voxel_size[1] / voxel_size[0],
            legend=False,
        )
        ax.set_title(f"axial (z = {index}): {int(per_slice[index])} voxels outlined")
        _zoom(ax, image, 2)
    views = bottom.subplots(1, columns, squeeze=False)[0]
    for ax in views[3:]:
        ax.set_axis_off()
    plot_orthogonal_views(image, mask, truth, voxel_size=voxel_size, axes=views[:3])
    for axis, ax in enumerate(views[:3]):
        _zoom(ax, image, axis)
    if title is not None:
        figure.suptitle(title)
    return figure


def _zoom(ax, image, axis, margin=3):
    """Limit a view across ``axis`` (drawn as :func:`plot_overlay` draws it)
    to the scan's non-zero voxels and a margin, so that the background of a
    skull-stripped scan does not shrink its brain; the data drawn, and the
    coordinates in the titles, are the whole slice's."""
    across, up = (a for a in range(3) if a != axis)
    nonzero = np.nonzero(np.abs(image).sum(axis=axis))
    if not nonzero[0].size:
        return
    (a0, a1), (b0, b1) = [(int(i.min()), int(i.max())) for i in nonzero]
    top = image.shape[up] - 1  # rows run down from the highest index of ``up``
    ax.set_xlim(max(a0 - margin, 0) - 0.5, min(a1 + margin, image.shape[across] - 1) + 0.5)
    ax.set_ylim(top - max(b0 - margin, 0) + 0.5, top - min(b1 + margin, top) - 0.5)
