"""Brain extraction of scans that are not skull-stripped, with deepbet.

deepbet (Fisch et al., 2024, MIT licence) ships its two TorchScript networks
in its wheel, so brain extraction runs offline. Its own entry point reads and
writes files and places the networks on a device of its choice; the steps
are repeated here on arrays, on the device the user asks for.
"""

from __future__ import annotations

import functools
import warnings
from numbers import Integral, Real
from pathlib import Path

import numpy as np
from scipy import ndimage
from sklearn.utils.validation import check_is_fitted

from .._docstrings import fill_doc
from ..io import NiftiReference, from_canonical, to_canonical
from ..utils._param_validation import COMMON_CONSTRAINTS, FITTED_CONSTRAINTS, Interval
from ._base import _BaseImageTransformer, _wrap

__all__ = ["BrainExtractor"]

INSTALL_HINT = "BrainExtractor needs deepbet: pip install 'anomseg[brain]'"

#: The grids of deepbet's networks: the whole volume is resampled to
#: ``_HEAD_SHAPE`` to find the head's bounding box, which is widened by
#: ``_BOX_MARGIN`` of its size on each side and resampled to
#: ``_BRAIN_SHAPE`` for the brain network (deepbet.bet.BrainExtraction).
_HEAD_SHAPE = (128, 128, 128)
_BRAIN_SHAPE = (256, 256, 256)
_BOX_MARGIN = 0.1
#: A plane of the head grid belongs to the head's box when more than this
#: fraction of it is head (deepbet's ``get_bbox``).
_BOX_FRACTION = 0.02
#: Intensity quantiles, over the head grid, that deepbet scales to 0 and 1.
_QUANTILES = (0.005, 0.995)


def _deepbet():
    """deepbet's helpers and fill_voids, or an ImportError naming the extra."""
    try:
        import fill_voids
        from deepbet import utils
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    return utils, fill_voids


@functools.lru_cache(maxsize=2)
def _networks(device):
    """deepbet's head (bounding-box) and brain networks, on ``device``."""
    import torch

    models = Path(_deepbet()[0].DATA_PATH) / "models"
    with warnings.catch_warnings():
        # deepbet ships TorchScript, which torch now deprecates; nothing the
        # user can act on.
        warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", DeprecationWarning)
        head, brain = (
            torch.jit.load(models / name, map_location=device).eval()
            for name in ("bbox_model.pt", "model.pt")
        )
    return head, brain


def _head_box(head, shape):
    """The head's bounding box on a grid of ``shape``, widened as deepbet
    does; ``head`` is the head mask on the coarse grid."""
    scale = np.array(shape) / np.array(head.shape)
    box = []
    for axis, n in enumerate(shape):
        others = tuple(a for a in range(3) if a != axis)
        planes = np.flatnonzero(head.mean(axis=others) > _BOX_FRACTION)
        if planes.size == 0:
            return None
        center = scale[axis] * (planes.max() + 1 + planes.min()) / 2
        size = (1 + 2 * _BOX_MARGIN) * scale[axis] * (planes.max() + 1 - planes.min())
        center, size = np.round(center), np.round(size)
        box.append(slice(max(0, int(center - size / 2)), min(n, int(center + size / 2))))
    return tuple(box)


def _brain_probability(volume, device):
    """deepbet's brain probability on the grid of ``volume`` (RAS+ axes),
    and the box outside which it is 0; the box is None if no head is found."""
    import torch
    import torch.nn.functional as F

    utils, _ = _deepbet()
    head_net, brain_net = _networks(device)
    x = torch.nan_to_num(torch.from_numpy(volume).to(device))

    def resample(t, shape):
        return F.interpolate(t[None, None], shape, mode="nearest-exact")[0, 0]

    coarse = resample(x, _HEAD_SHAPE)
    low, high = (coarse.quantile(q) for q in _QUANTILES)
    with torch.inference_mode():
        head = head_net(utils.normalize(coarse, low, high)[None, None])[0, 1]
        head = (head > 0.5).cpu().numpy()
        if not head.any():
            return None, None
        box = _head_box(_largest_component(head), x.shape)
        if box is None:
            return None, None
        crop = resample(x[box], _BRAIN_SHAPE)
        brain = brain_net(utils.normalize(crop, low, high)[None, None])[0, 1]
        probability = torch.zeros_like(x)
        probability[box] = resample(brain, probability[box].shape)
    return probability.cpu().numpy(), box


def _brain_mask(volume, affine, threshold, margin, device):
    """Brain mask of one volume on its own grid: deepbet's probability above
    ``threshold``, its largest component with voids filled, dilated by
    ``margin`` voxels; None if deepbet finds no brain."""
    _, fill_voids = _deepbet()
    canonical, orientation = to_canonical(volume, affine)
    probability, box = _brain_probability(np.ascontiguousarray(canonical), device)
    if probability is None:
        return None
    mask = probability > threshold
    inside = mask[box]
    if not inside.any():
        return None
    mask[box] = fill_voids.fill(_largest_component(inside))
    if margin:
        mask = ndimage.binary_dilation(mask, iterations=margin)  # face neighbours
    return np.ascontiguousarray(from_canonical(mask, orientation))


def _largest_component(mask):
    """The largest 26-connected component, as deepbet keeps it."""
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    return labels == np.bincount(labels[labels > 0]).argmax()


def _is_matrix(affine):
    try:
        return np.shape(affine) == (4, 4)
    except ValueError:  # a ragged list, such as a list of affines
        return False


@fill_doc
class BrainExtractor(_BaseImageTransformer):
    """Mask everything but the brain in 3D scans that are not skull-stripped.

    Each volume's foreground becomes its brain, found by the deepbet network
    (Fisch et al., 2024 [1]_), whose weights ship in its wheel, so that it
    runs offline. The output is a masked array whose mask is everything but
    the brain; values are unchanged (as float32). Put it first in an
    :class:`AnomalyPipeline`: anomaly maps then come back on the input's
    grid, and calibration and metrics count brain voxels only.

    deepbet's steps are the same as its own command's (a head network on a
    128-cube resampling of the volume finds the head's bounding box, a brain
    network segments that box resampled to a 256-cube, the probability is
    thresholded, restricted to its largest component and its voids filled),
    run on arrays on ``device``. The networks resample, so voxel spacing is
    not used; the orientation is, and comes from ``affine``. Needs the
    optional dependency ``pip install 'anomseg[brain]'``.

    Measured with the defaults on one CPU thread: 6-7 s per volume. The
    masks are those of deepbet's own command (Dice 1.0 on the five LGG and
    three MSLUB volumes compared). On the three skull-stripped MSLUB volumes
    they agree with the non-zero voxels with Dice 0.950-0.976. On the 80
    LGG FLAIR volumes (full head) they hold one component each and at least
    98.9 % of each tumour; where a tumour touches the inner skull some can
    be trimmed, and ``margin`` widens the mask.

    Parameters
    ----------
    affine : None, array-like of shape (4, 4), NiftiReference or list, default=None
        The orientation of the arrays passed to ``transform``: their
        voxel-to-world affine, or the :class:`~anomseg.io.NiftiReference`
        that :func:`~anomseg.io.load_nifti` returned with them (its
        ``canonical_affine`` is used, as those arrays are canonical), or a
        list of either with one entry per volume. None means that axes run
        to the Right, Anterior and Superior (RAS+), as for every array that
        :func:`~anomseg.io.load_nifti` returns; this is correct whenever the
        files' own affines are.
    threshold : float in (0, 1), default=0.5
        Brain probability above which a voxel is brain.
    margin : int >= 0, default=0
        Voxels by which the mask is dilated (face neighbours, one layer per
        voxel of margin), to keep tissue at the edge of the brain.
    device : {"auto", "cpu", "cuda"}, default="auto"
        Where the networks run; "auto" picks CUDA when torch finds it.
    %(channel_axis)s
        With several channels, the brain is found on the first.

    Attributes
    ----------
    device_ : str
        The device resolved from ``device`` in ``fit``.
    %(n_channels_attribute)s

    Notes
    -----
    Scans are 3D volumes: brain extraction needs the whole head, so a stack
    of 2D slices is refused. Extract the brain, then cut the volumes into
    slices (:func:`anomseg.datasets.extract_slices`).

    See Also
    --------
    ForegroundMasker : A head mask from intensity, for full-head use.

    References
    ----------
    .. [1] L. Fisch, S. Zumdick, C. Barkhau et al. "deepbet: Fast brain
       extraction of T1-weighted MRI using Convolutional Neural Networks".
       Computers in Biology and Medicine 179, 2024.

    Examples
    --------
    >>> from anomseg.datasets import load_demo_mslub
    >>> from anomseg.preprocessing import BrainExtractor
    >>> data = load_demo_mslub()  # doctest: +SKIP
    >>> brains = BrainExtractor().fit_transform(data.images)  # doctest: +SKIP
    >>> masks = BrainExtractor().fit(data.images).get_mask(data.images)  # doctest: +SKIP
    """

    #: Learns nothing across scans: fits on NIfTI paths, one scan at a time.
    _per_scan = True

    _fitted_attribute_constraints: dict = {
        **_BaseImageTransformer._fitted_attribute_constraints,
        "device_": FITTED_CONSTRAINTS["device"],
    }

    _parameter_constraints: dict = {
        "affine": [None, "array-like", NiftiReference],
        "threshold": [Interval(Real, 0, 1, closed="neither")],
        "margin": [Interval(Integral, 0, None, closed="left")],
        "device": COMMON_CONSTRAINTS["device"],
        "channel_axis": COMMON_CONSTRAINTS["channel_axis"],
    }

    def __init__(self, affine=None, threshold=0.5, margin=0, device="auto", channel_axis=None):
        self.affine = affine
        self.threshold = threshold
        self.margin = margin
        self.device = device
        self.channel_axis = channel_axis

    def get_mask(self, X):
        """The brain masks of volumes: the foreground that ``transform``
        gives them.

        Parameters
        ----------
        X : array-like of shape (n_volumes, X, Y, Z) or list of ndarray
            3D volumes, as for ``transform``.

        Returns
        -------
        masks : ndarray of bool or list of ndarray of bool
            One mask per volume, True inside the brain: one stacked array for
            an array input, a list otherwise.
        """
        check_is_fitted(self, "n_channels_")
        batch = self._check_input(X, "get_mask")
        return _wrap(self._masks(batch), batch.stacked)

    def _check_params(self):
        self._affines(None)

    def _fit(self, batch):
        _deepbet()
        from .._torch import resolve_device

        self.device_ = resolve_device(self.device, type(self).__name__)

    def _check_input(self, X, method):
        batch = super()._check_input(X, method)
        if batch.spatial_ndim != 3:
            raise ValueError(
                f"X passed to BrainExtractor.{method} must hold 3D volumes, an "
                "array of shape (n_volumes, X, Y, Z) or a list of (X, Y, Z) "
                f"arrays; got 2D images of shape {batch.spatial_shapes[0]}. "
                "Brain extraction needs whole volumes: extract the brain before "
                "cutting volumes into slices (pass one volume as [volume])."
            )
        return batch

    def _affines(self, n_volumes):
        """One validated 4 x 4 affine per volume (a single one if
        ``n_volumes`` is None)."""
        affine = self.affine
        if affine is None:
            entries = [np.eye(4)]
        elif isinstance(affine, NiftiReference) or _is_matrix(affine):
            entries = [affine]
        else:
            entries = list(affine)
            if n_volumes is not None and len(entries) != n_volumes:
                raise ValueError(
                    f"'affine' of BrainExtractor holds {len(entries)} entries but "
                    f"{n_volumes} volume(s) were passed; give one per volume, or "
                    "one for all."
                )
        affines = [self._check_affine(entry) for entry in entries]
        if n_volumes is not None and len(affines) == 1:
            affines = affines * n_volumes
        return affines

    @staticmethod
    def _check_affine(entry):
        if isinstance(entry, NiftiReference):
            return entry.canonical_affine
        try:
            matrix = np.asarray(entry, dtype=float)
        except (TypeError, ValueError):
            matrix = None
        if (
            matrix is None
            or matrix.shape != (4, 4)
            or not np.isfinite(matrix).all()
            or abs(np.linalg.det(matrix[:3, :3])) < 1e-12
        ):
            raise ValueError(
                "'affine' of BrainExtractor must be None, a finite 4 x 4 "
                "voxel-to-world matrix with an invertible 3 x 3 part, a "
                "NiftiReference, or a list of them (one per volume); got "
                f"{entry!r:.80}."
            )
        return matrix

    def _masks(self, batch):
        masks = []
        affines = self._affines(len(batch))
        for i, (image, foreground, affine) in enumerate(
            zip(batch.images, batch.foreground, affines)
        ):
            volume = image[..., 0] if batch.channel_axis is not None else image
            volume = np.where(foreground, volume, np.float32(0))
            mask = _brain_mask(volume, affine, self.threshold, self.margin, self.device_)
            if mask is None:
                raise ValueError(
                    f"BrainExtractor found no brain in X[{i}] (shape {volume.shape}); "
                    "is it a head scan, and does 'affine' give its orientation?"
                )
            masks.append(mask)
        return masks

    def _transform(self, batch):
        return batch.with_images([image.copy() for image in batch.images], self._masks(batch))
