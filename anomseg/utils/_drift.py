"""What the healthy images of a model looked like, and whether new images
look alike: a calibrated false-positive rate holds only for images like
those it was calibrated on.

:func:`describe_images` summarises a batch in a few plain numbers (saved in
model files, shown by ``anomseg info``); :func:`drift_messages` says, with
the figures, where new images fall outside that summary.
"""

from __future__ import annotations

import numpy as np

__all__ = ["describe_images", "drift_messages"]

#: The intensity percentiles that describe each image's foreground.
_PERCENTILES = (1, 50, 99)


def _image_figures(image, foreground):
    values = image[foreground] if image.ndim == foreground.ndim else image[foreground].ravel()
    figures = {"foreground_fraction": float(foreground.mean())}
    if values.size:
        for q, value in zip(_PERCENTILES, np.percentile(values, _PERCENTILES)):
            figures[f"intensity_p{q}"] = float(value)
    return figures


def describe_images(batch):
    """A summary of the images of ``batch`` (an ImageBatch) in plain data.

    Returns
    -------
    summary : dict
        ``n_images``; ``shape_min`` and ``shape_max``, the smallest and
        largest size along each spatial axis; and, for the foreground
        fraction and the 1st, 50th and 99th percentiles of the foreground
        intensities of each image, the ``[min, max]`` over the images.
    """
    per_image = [_image_figures(im, fg) for im, fg in zip(batch.images, batch.foreground)]
    shapes = np.array([fg.shape for fg in batch.foreground])
    summary = {
        "n_images": len(per_image),
        "shape_min": shapes.min(axis=0).tolist(),
        "shape_max": shapes.max(axis=0).tolist(),
    }
    for key in per_image[0]:
        values = [figures[key] for figures in per_image if key in figures]
        if values:
            summary[key] = [min(values), max(values)]
    return summary


#: The least margin beyond the healthy range, as a fraction of its
#: magnitude: images from one source vary, their foreground fraction most.
_RELATIVE_MARGIN = {"intensity_p50": 0.25, "foreground_fraction": 0.5}


def _outside(value, low, high, key):
    """Whether ``value`` lies well outside ``[low, high]``: by more than the
    range's width and more than a fraction of its magnitude. A smaller
    foreground fraction is no drift (the top slices of a brain); a larger
    one is (a head where a brain was expected)."""
    margin = max(high - low, _RELATIVE_MARGIN[key] * max(abs(low), abs(high)), 1e-6)
    too_low = value < low - margin and key != "foreground_fraction"
    return too_low or value > high + margin


#: The figures a drift check may compare. The median intensity, not the top
#: percentiles, which lesions raise: a scan is not drifted for holding a
#: lesion.
FIGURES = ("intensity_p50", "foreground_fraction", "shape")

#: Sizes beyond this factor of the healthy images' range, along any axis,
#: warn; scans of one protocol differ in their number of slices.
_SHAPE_FACTOR = 3


def drift_messages(reference, batch, figures=FIGURES):
    """Where the images of ``batch`` (an ImageBatch) fall well outside the
    ``reference`` summary of :func:`describe_images`.

    Parameters
    ----------
    reference : dict
        The summary of the healthy images.
    batch : ImageBatch
        The images to score.
    figures : tuple of str, default=FIGURES
        What to compare, among "intensity_p50" (the median foreground
        intensity), "foreground_fraction" (larger only: a head where a brain
        was expected; the top slices of a brain have a smaller one) and
        "shape" (any axis beyond a factor of 3 of the healthy range). A
        method that is blind to some figure leaves it out, such as the
        intensity scale for one that equalises each image.

    Returns
    -------
    messages : list of str
        One sentence per figure, giving how many images are off and their
        values; empty if all look alike.

    Examples
    --------
    >>> import numpy as np
    >>> from anomseg.utils import check_images, describe_images, drift_messages
    >>> healthy = check_images(np.ones((4, 8, 8)) + np.eye(8))
    >>> drift_messages(describe_images(healthy), check_images(np.ones((1, 8, 8)) * 50 + np.eye(8)))
    ['intensity p50 50 in 1 of 1 image(s) (healthy data: 1)']
    """
    per_image = [_image_figures(im, fg) for im, fg in zip(batch.images, batch.foreground)]
    shape_min, shape_max = reference.get("shape_min"), reference.get("shape_max")
    # Volumes scored by a model calibrated on their slices (or the reverse)
    # differ in foreground fraction and shape without any drift.
    same_kind = bool(shape_min) and all(len(shape_min) == fg.ndim for fg in batch.foreground)
    compared = [f for f in figures if same_kind or f == "intensity_p50"]
    messages = []
    for key in compared:
        if key not in reference:
            continue
        low, high = reference[key]
        off = [f[key] for f in per_image if key in f and _outside(f[key], low, high, key)]
        if off:
            messages.append(
                f"{key.replace('_', ' ')} {_span(off)} in {len(off)} of {len(per_image)} "
                f"image(s) (healthy data: {_span([low, high])})"
            )
    if "shape" in compared:
        off = [
            fg.shape
            for fg in batch.foreground
            if any(
                n < a / _SHAPE_FACTOR or n > b * _SHAPE_FACTOR
                for n, a, b in zip(fg.shape, shape_min, shape_max)
            )
        ]
        if off:
            messages.append(
                f"shape {off[0]} in {len(off)} of {len(per_image)} image(s) (healthy data: "
                f"{tuple(shape_min)} to {tuple(shape_max)})"
            )
    return messages


def _span(values):
    low, high = min(values), max(values)
    return f"{low:.4g}" if low == high else f"{low:.4g} to {high:.4g}"
