"""NIfTI in and out: the only place where anomseg touches nibabel.

Arrays handed to the rest of the package are always in the closest canonical
(RAS+) orientation, so axes are (x, y, z) and axial slices run along the last
axis whatever the scanner wrote. A :class:`NiftiReference` remembers the
original grid, and :func:`save_nifti` writes maps back onto it, so that a map
saved for ``scan.nii.gz`` overlays that scan in any viewer.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform
from nibabel.spatialimages import HeaderDataError

from ..exceptions import AnomsegWarning
from ._atomic import atomic_write_all

__all__ = [
    "NiftiReference",
    "from_canonical",
    "load_mask",
    "load_nifti",
    "load_nifti_reference",
    "load_niftis",
    "same_grid",
    "save_nifti",
    "save_niftis",
    "to_canonical",
]

_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_IDENTITY_ORNT = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)
_INTEGER_DTYPES = (np.uint8, np.int16, np.uint16, np.int32)

#: The largest volume read without ``max_voxels`` (or ``ANOMSEG_MAX_VOXELS``):
#: 2^28 voxels, 1 GiB as float32. In-vivo brain MRI stays far below it (a
#: 7 T scan at 0.5 mm isotropic, 480 x 480 x 360, is 83 million voxels, and
#: 512^3 is half the budget), while a corrupt or crafted header declaring
#: billions of voxels would exhaust memory before a word could be said.
DEFAULT_MAX_VOXELS = 2**28

#: The environment variable that sets the voxel budget (``--max-voxels``
#: sets it for the command line and the processes it starts).
MAX_VOXELS_VARIABLE = "ANOMSEG_MAX_VOXELS"


@dataclass(frozen=True, eq=False)
class NiftiReference:
    """Where an array loaded by :func:`load_nifti` came from.

    Holds what :func:`save_nifti` needs to write an array of the canonical
    grid back onto the original file's exact grid. It is small and picklable.

    Parameters
    ----------
    path : str
        The file that was loaded.
    affine : ndarray of shape (4, 4)
        The original voxel-to-world affine.
    shape : tuple of int
        The original spatial shape (a singleton fourth axis is dropped).
    header : nibabel.nifti1.Nifti1Header
        The original header, reused when saving so that the qform, sform
        and their codes, units and description are kept.
    orientation : ndarray of shape (3, 2)
        The nibabel orientation transform from the original axes to the
        canonical (RAS+) axes.

    See Also
    --------
    load_nifti : Creates references.
    save_nifti : Uses them.
    """

    path: str
    affine: np.ndarray
    shape: tuple
    header: object
    orientation: np.ndarray

    @property
    def canonical_shape(self):
        """Spatial shape of the arrays returned by :func:`load_nifti`."""
        order = self.orientation[:, 0].astype(int)
        canonical = [0, 0, 0]
        for axis, new_axis in enumerate(order):
            canonical[new_axis] = self.shape[axis]
        return tuple(canonical)

    @property
    def canonical_voxel_sizes(self):
        """Voxel size (mm, rounded to 6 digits: the header stores float32)
        along each axis of the arrays returned by :func:`load_nifti`: the
        header's, in the order of :attr:`canonical_shape`."""
        zooms = self.header.get_zooms()[:3]
        sizes = [0.0, 0.0, 0.0]
        for axis, new_axis in enumerate(self.orientation[:, 0].astype(int)):
            sizes[new_axis] = round(float(zooms[axis]), 6)
        return tuple(sizes)

    @property
    def canonical_affine(self):
        """Voxel-to-world affine of the canonical arrays."""
        return self.affine @ inv_ornt_aff(self.orientation, self.shape)

    def __repr__(self):
        return (
            f"NiftiReference(path={self.path!r}, shape={self.shape}, "
            f"axcodes={''.join(nib.aff2axcodes(self.affine))})"
        )


def voxel_budget(max_voxels=None):
    """The most voxels a volume may declare to be read: ``max_voxels``, or
    else the environment variable ``ANOMSEG_MAX_VOXELS``, or else
    :data:`DEFAULT_MAX_VOXELS`."""
    where = "'max_voxels'"
    if max_voxels is None:
        max_voxels = os.environ.get(MAX_VOXELS_VARIABLE) or DEFAULT_MAX_VOXELS
        where = MAX_VOXELS_VARIABLE
    try:
        budget = int(max_voxels)
    except (TypeError, ValueError):
        budget = 0
    if budget < 1 or isinstance(max_voxels, bool):
        raise ValueError(f"{where} must be a positive number of voxels; got {max_voxels!r}.")
    return budget


def _check_path(path):
    """A path that can be read as a NIfTI file: an existing regular file."""
    if path.is_dir():
        raise IsADirectoryError(
            f"'{path}' is a folder, not a NIfTI file; give the .nii or .nii.gz file of a scan."
        )
    if not path.exists():
        raise FileNotFoundError(f"No NIfTI file at '{path}'.")
    if not path.is_file():
        raise ValueError(
            f"'{path}' is not a regular file (a pipe, socket or device); anomseg reads "
            "NIfTI files stored on disk: save it to a file first."
        )


def _check_header(path, image, max_voxels):
    """A header whose grid is usable, checked before any voxel is read:
    no empty axis, a volume within the voxel budget, and an affine that
    gives an orientation."""
    shape = tuple(int(n) for n in image.shape)
    size = " x ".join(map(str, shape))
    if 0 in shape:
        raise ValueError(
            f"'{path}' has a corrupt NIfTI header: it declares {size} voxels, an axis "
            "of none (dim[1:4] must be positive); repair or re-export the file."
        )
    n_voxels = math.prod(shape)
    budget = voxel_budget(max_voxels)
    if n_voxels > budget:
        raise ValueError(
            f"'{path}' declares {size} voxels ({n_voxels:,}), which would take "
            f"{_bytes(4 * n_voxels)} as float32, beyond the budget of {budget:,} "
            f"voxels; if the scan is that large, raise it with {MAX_VOXELS_VARIABLE}=N "
            "(--max-voxels N on the command line, max_voxels=N in the API), else its "
            "header is corrupt."
        )
    zooms = np.asarray(image.header.get_zooms()[:3], dtype=float)
    if not (np.isfinite(zooms).all() and (zooms > 0).all()):
        raise ValueError(
            f"'{path}' has a corrupt NIfTI header: its voxel sizes (pixdim) are "
            f"{' x '.join(f'{z:g}' for z in zooms)}, not positive numbers; repair the "
            "header or re-export the file."
        )
    affine = np.asarray(image.affine, dtype=float)
    if not np.isfinite(affine).all():
        raise ValueError(
            f"'{path}' has a corrupt NIfTI header: its voxel-to-world affine (sform "
            "or qform) holds NaN or infinite values; repair the header (such as with "
            "fslorient) or re-export the file."
        )
    singular = np.linalg.svd(affine[:3, :3], compute_uv=False)
    if singular[-1] <= 1e-8 * max(singular[0], 1e-300):
        raise ValueError(
            f"'{path}' has a corrupt NIfTI header: its voxel-to-world affine (sform "
            "or qform) is singular (zero voxel sizes or a zero sform), so it gives "
            "no orientation; repair the header or re-export the file."
        )


def _bytes(n):
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.3g} {unit}" if unit != "bytes" else f"{n} bytes"
        n /= 1000


#: The header repairs warned of already by this process, by file and note.
_REPAIRS_SAID = set()


@contextlib.contextmanager
def _nibabel_notes():
    """Collect what nibabel logs of a header it reads (the repairs it makes,
    such as "pixdim[1,2,3] should be non-zero; setting 0 dims to 1"), which
    it would print raw, without the file's name, to stderr."""
    logger = logging.getLogger("nibabel.global")
    notes = []

    class Collect(logging.Handler):
        def emit(self, record):
            notes.append(record.getMessage())

    # nibabel gives this logger a stderr handler of its own: set it aside.
    handlers, propagate = logger.handlers[:], logger.propagate
    logger.handlers = [Collect(level=logging.WARNING)]
    logger.propagate = False
    try:
        yield notes
    finally:
        logger.handlers = handlers
        logger.propagate = propagate


def _load_image(path, max_voxels=None, channels=False):
    """The image of ``path``, its header checked: a 3D volume (or a 4D one
    whose last axis has length 1), or, with ``channels``, a 3D or 4D one
    whose fourth axis holds the channels."""
    path = Path(path)
    _check_path(path)
    with _nibabel_notes() as notes:
        try:
            image = nib.load(path)
        except HeaderDataError as exc:
            raise ValueError(
                f"'{path}' has a corrupt NIfTI header: {exc}; repair or re-export the file."
            ) from None
        except (ImageFileError, OSError, EOFError, ValueError) as exc:
            raise ValueError(f"Could not read '{path}' as a NIfTI image: {exc}") from None
    for note in dict.fromkeys(notes):
        if (str(path), note) in _REPAIRS_SAID:
            continue  # its header is read again later (the voxels after the check)
        _REPAIRS_SAID.add((str(path), note))
        warnings.warn(
            f"'{path}' has a NIfTI header that nibabel repaired on reading: {note}.",
            AnomsegWarning,
            stacklevel=3,
        )
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ValueError(f"'{path}' is a {type(image).__name__}, not a NIfTI image.")
    if channels:
        if image.ndim not in (3, 4):
            raise ValueError(
                f"'{path}' has shape {image.shape}; expected a 3D volume, or a 4D one "
                "whose fourth axis holds the channels."
            )
    elif image.ndim == 4 and image.shape[3] == 1:
        image = image.slicer[..., 0]
    elif image.ndim == 4:
        raise ValueError(
            f"'{path}' has shape {image.shape}: {image.shape[3]} volumes on its fourth "
            "axis; expected a 3D volume. If they are channels (such as FLAIR and T2), "
            "give the model channel_axis=-1."
        )
    elif image.ndim != 3:
        raise ValueError(
            f"'{path}' has shape {image.shape}; expected a 3D volume "
            "(a 4D image with a singleton last axis is accepted)."
        )
    _check_header(path, image, max_voxels)
    return image


def load_nifti_reference(path, *, max_voxels=None):
    """The grid of a NIfTI file, read from its header alone (no voxels).

    Parameters
    ----------
    path : str or path-like
        A ``.nii`` or ``.nii.gz`` file holding a 3D volume.
    max_voxels : int or None, default=None
        The most voxels the file may declare, checked from its header before
        any voxel is read; None: the environment variable
        ``ANOMSEG_MAX_VOXELS``, or else :data:`DEFAULT_MAX_VOXELS` (2^28).

    Returns
    -------
    reference : NiftiReference
        What :func:`load_nifti` returns with the voxels; its ``header``
        gives the voxel size (``header.get_zooms()``).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    IsADirectoryError
        If ``path`` is a folder.
    ValueError
        If the file is not a regular file (a pipe, a device), not a NIfTI
        image, not a 3D volume, declares more than ``max_voxels`` voxels, or
        its header is corrupt (an empty axis, an affine that is not finite
        or is singular).
    """
    return _reference(path, _load_image(path, max_voxels))


def _reference(path, image):
    """The grid of ``image``: its spatial part, channels left out, so that
    maps are written as 3D volumes."""
    header = image.header.copy()
    header.set_data_shape(image.shape[:3])
    return NiftiReference(
        path=str(path),
        affine=image.affine.copy(),
        shape=tuple(int(n) for n in image.shape[:3]),
        header=header,
        orientation=nib.io_orientation(image.affine),
    )


def load_nifti(path, *, dtype=np.float32, max_voxels=None, channels=False):
    """Load a 3D NIfTI image in the closest canonical (RAS+) orientation.

    Parameters
    ----------
    path : str or path-like
        A ``.nii`` or ``.nii.gz`` file holding a 3D volume, or a 4D one whose
        last axis has length 1 (it is dropped).
    dtype : dtype, default=numpy.float32
        Dtype of the returned array. The header's scaling (``scl_slope``,
        ``scl_inter``) is applied first; ``bool`` gives the non-zero voxels.
    max_voxels : int or None, default=None
        The most voxels the file may declare (see
        :func:`load_nifti_reference`).
    channels : bool, default=False
        Read a multi-channel scan: a 4D file whose fourth axis holds the
        channels (such as FLAIR and T2), or a 3D one as one channel.

    Returns
    -------
    data : ndarray of shape (X, Y, Z), or (X, Y, Z, C) with ``channels``
        The volume, reoriented with :func:`nibabel.as_closest_canonical`:
        axes run to the Right, Anterior and Superior, so axial slices are
        ``data[:, :, k]``.
    reference : NiftiReference
        The original spatial grid (channels left out), for
        :func:`save_nifti`.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    IsADirectoryError
        If ``path`` is a folder.
    ValueError
        If the file is not a regular file, not a NIfTI image, not a 3D
        volume, declares more than ``max_voxels`` voxels, has a corrupt
        header (see :func:`load_nifti_reference`), holds complex values or
        values beyond the float32 range (with the default ``dtype``), or its
        voxels cannot be read (a truncated or corrupt file).

    See Also
    --------
    save_nifti : Writes an array back onto the original grid.
    load_niftis : Loads several files.

    Examples
    --------
    >>> import numpy as np
    >>> from anomseg.io import load_nifti, save_nifti
    >>> from anomseg.datasets import get_demo_path
    >>> flair, ref = load_nifti(get_demo_path("patient07_flair.nii.gz"))
    >>> flair.shape, flair.dtype
    ((132, 165, 127), dtype('float32'))
    >>> ref.canonical_shape == flair.shape
    True
    """
    image = _load_image(path, max_voxels, channels)
    if np.issubdtype(image.get_data_dtype(), np.complexfloating):
        raise ValueError(
            f"'{path}' holds complex values ({image.get_data_dtype()}); anomseg "
            "reads real-valued scans: save their magnitude."
        )
    try:  # reorienting may read the voxels already
        data = np.asanyarray(nib.as_closest_canonical(image).dataobj)
    except (OSError, EOFError, ValueError, zlib.error) as exc:  # truncated or corrupt
        message = f"'{path}' is truncated or corrupt: its voxels could not be read ({exc})."
        raise ValueError(message) from None
    if channels and data.ndim == 3:
        data = data[..., np.newaxis]
    if np.dtype(dtype) == bool:
        return data != 0, _reference(path, image)
    _check_range(path, data, np.dtype(dtype))
    return data.astype(dtype, copy=False), _reference(path, image)


def _check_range(path, data, dtype):
    """Refuse finite values that ``dtype`` (a float type) cannot hold, which
    the cast would turn into infinities."""
    if not (np.issubdtype(dtype, np.floating) and data.dtype.itemsize > dtype.itemsize):
        return
    limit = float(np.finfo(dtype).max)
    with np.errstate(invalid="ignore"):
        beyond = np.abs(data) > limit
    beyond &= np.isfinite(data)
    n = int(np.count_nonzero(beyond))
    if n:
        largest = float(np.abs(data[beyond]).max())
        raise ValueError(
            f"'{path}' holds {n} value(s) beyond the {dtype} range that anomseg "
            f"computes in (up to {largest:.3g}; {dtype} stops at {limit:.3g}); "
            "rescale the scan (its intensities only matter relative to each other)."
        )


def same_grid(reference, other):
    """Whether two files' voxels lie on the same grid: the same canonical
    shape and affine (to 1e-3 mm)."""
    return reference.canonical_shape == other.canonical_shape and np.allclose(
        reference.canonical_affine, other.canonical_affine, atol=1e-3
    )


def load_mask(path, reference=None, *, what="mask", max_voxels=None):
    """Load a binary mask (0 and 1 only), such as a ground truth or a
    lesion delineation, in the closest canonical orientation.

    Parameters
    ----------
    path : str or path-like
        A NIfTI file of 0 (outside) and 1 (inside) voxels, of any numeric
        type.
    reference : NiftiReference or None, default=None
        The scan the mask belongs to; the mask must lie on its grid.
    what : str, default="mask"
        What the mask is, for the messages (such as ``"--truth mask"``).
    max_voxels : int or None, default=None
        The most voxels the file may declare, checked from its header before
        any voxel is read; None: the environment variable
        ``ANOMSEG_MAX_VOXELS``, or else :data:`DEFAULT_MAX_VOXELS` (2^28).

    Returns
    -------
    mask : ndarray of bool, shape (X, Y, Z)
    reference : NiftiReference
        The mask's own grid.

    Raises
    ------
    ValueError
        If the file holds other values than 0 and 1, or does not lie on the
        grid of ``reference``.

    Examples
    --------
    >>> from anomseg.io import load_mask, load_nifti
    >>> from anomseg.datasets import get_demo_path
    >>> _, scan = load_nifti(get_demo_path("patient07_flair.nii.gz"))
    >>> mask, _ = load_mask(get_demo_path("patient07_mask.nii.gz"), scan)
    >>> mask.dtype, mask.shape == scan.canonical_shape
    (dtype('bool'), True)
    """
    if reference is not None:
        own = load_nifti_reference(path, max_voxels=max_voxels)
        if not same_grid(reference, own):
            raise ValueError(
                f"{what} '{path}' is not on the grid of '{reference.path}' (shape "
                f"{own.shape} vs {reference.shape}, or another affine); resample it "
                "onto the scan."
            )
    data, own = load_nifti(path, dtype=np.float32, max_voxels=max_voxels)
    values = np.unique(data)
    if not np.isin(values, (0, 1)).all():
        shown = ", ".join(f"{v:g}" for v in values[:5]) + (", ..." if values.size > 5 else "")
        raise ValueError(
            f"{what} '{path}' is not binary: it holds {values.size} values ({shown}); "
            "give masks of 0 (outside) and 1 (inside)."
        )
    return data > 0, own


def load_niftis(paths, *, dtype=np.float32, max_voxels=None):
    """Load several NIfTI images with :func:`load_nifti`.

    Parameters
    ----------
    paths : iterable of str or path-like
        The files.
    dtype : dtype, default=numpy.float32
        Dtype of the returned arrays.
    max_voxels : int or None, default=None
        The most voxels the file may declare, checked from its header before
        any voxel is read; None: the environment variable
        ``ANOMSEG_MAX_VOXELS``, or else :data:`DEFAULT_MAX_VOXELS` (2^28).

    Returns
    -------
    data : list of ndarray
        The volumes in canonical orientation; their shapes may differ.
    references : list of NiftiReference
        One reference per file.

    Examples
    --------
    >>> from anomseg.io import load_niftis
    >>> from anomseg.datasets import get_demo_path
    >>> volumes, refs = load_niftis(
    ...     [get_demo_path(f"patient07_{m}.nii.gz") for m in ("flair", "t2")]
    ... )
    >>> len(volumes), volumes[1].shape
    (2, (132, 165, 127))
    """
    loaded = [load_nifti(path, dtype=dtype, max_voxels=max_voxels) for path in paths]
    return [d for d, _ in loaded], [r for _, r in loaded]


def to_canonical(data, affine):
    """Reorient an array to the closest canonical (RAS+) orientation.

    The array-level counterpart of :func:`load_nifti`, for arrays whose
    geometry is known by an affine rather than a file: axes are permuted and
    flipped, never resampled. Only the orientation of ``affine`` is used.

    Parameters
    ----------
    data : ndarray of shape (X, Y, Z, ...)
        A volume; axes after the third (channels) are carried along.
    affine : ndarray of shape (4, 4)
        Voxel-to-world affine of ``data``.

    Returns
    -------
    canonical : ndarray
        A view of ``data`` whose first three axes run to the Right, Anterior
        and Superior.
    orientation : ndarray of shape (3, 2)
        The nibabel orientation transform from the axes of ``data`` to the
        canonical ones; :func:`from_canonical` undoes it.

    Raises
    ------
    ValueError
        If ``affine`` is not a finite 4 x 4 matrix with an invertible 3 x 3
        part.

    Examples
    --------
    >>> import numpy as np
    >>> from anomseg.io import from_canonical, to_canonical
    >>> volume = np.arange(24).reshape(2, 3, 4)
    >>> lps = np.diag([-1.0, -1.0, 1.0, 1.0])  # axes run Left, Posterior, Superior
    >>> ras, orientation = to_canonical(volume, lps)
    >>> int(ras[0, 0, 0]) == int(volume[-1, -1, 0])
    True
    >>> bool((from_canonical(ras, orientation) == volume).all())
    True
    """
    affine = np.asarray(affine, dtype=float)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise ValueError(f"affine must be a finite 4 x 4 matrix; got shape {affine.shape}.")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise ValueError("affine has a singular 3 x 3 part; it gives no orientation.")
    orientation = io_orientation(affine)
    return apply_orientation(data, orientation), orientation


def from_canonical(data, orientation):
    """Undo :func:`to_canonical`: put a canonical array back on the original
    axes.

    Parameters
    ----------
    data : ndarray of shape (X, Y, Z, ...)
        An array on the canonical grid.
    orientation : ndarray of shape (3, 2)
        As returned by :func:`to_canonical`.

    Returns
    -------
    original : ndarray
        A view of ``data`` on the original axes.
    """
    return apply_orientation(data, ornt_transform(_IDENTITY_ORNT, orientation))


def _storage_dtype(data):
    if data.dtype == bool:
        return np.uint8
    if np.issubdtype(data.dtype, np.floating):
        return np.float32
    if data.dtype in _INTEGER_DTYPES:
        return data.dtype
    if np.issubdtype(data.dtype, np.integer):
        info = np.iinfo(np.int32)
        if data.size and (data.min() < info.min or data.max() > info.max):
            raise ValueError(
                f"Integer data ranging over [{data.min()}, {data.max()}] does "
                "not fit the int32 NIfTI storage type."
            )
        return np.int32
    raise TypeError(
        f"Cannot save data of dtype {data.dtype} as NIfTI; pass booleans, integers or floats."
    )


def _to_original_image(data, reference):
    data = np.ma.getdata(data)
    data = np.asarray(data)
    if data.shape != reference.canonical_shape:
        raise ValueError(
            f"data has shape {data.shape} but the canonical grid of "
            f"'{reference.path}' has shape {reference.canonical_shape}; "
            "save_nifti writes arrays returned on that grid by load_nifti."
        )
    dtype = _storage_dtype(data)
    original = np.ascontiguousarray(from_canonical(data, reference.orientation).astype(dtype))
    header = reference.header.copy()
    header.set_data_shape(original.shape)
    header.set_data_dtype(dtype)
    image = nib.Nifti1Image(original, reference.affine, header=header)
    # Store values as they are: no scaling inherited from the source file.
    image.header.set_slope_inter(1.0, 0.0)
    return image


def save_nifti(data, reference, path, *, overwrite=False):
    """Write a canonical-grid array onto the original grid of a NIfTI file.

    The array is reoriented back, so the saved file has exactly the shape
    and affine of the file that ``reference`` came from and overlays it in
    any viewer. The write is atomic: the image is written to a temporary file
    in the target's directory and then linked (or, with ``overwrite=True``,
    renamed) into place, so an interrupted run never leaves a half-written
    target.

    Parameters
    ----------
    data : ndarray of shape reference.canonical_shape
        Booleans (stored as uint8), floats (stored as float32) or integers.
        A masked array is saved without its mask.
    reference : NiftiReference
        From :func:`load_nifti`.
    path : str or path-like
        Target, ending in ``.nii`` or ``.nii.gz``. Its directory must exist.
    overwrite : bool, default=False
        Whether to replace an existing file. Without it, an existing target
        raises, even one created by another process during the write.

    Returns
    -------
    path : pathlib.Path
        The written file.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    FileNotFoundError
        If the directory of ``path`` does not exist.
    ValueError
        If ``data`` does not have the canonical shape of ``reference``, or
        ``path`` is not a NIfTI file name.

    See Also
    --------
    load_nifti : Returns the array and its reference.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from anomseg.io import load_nifti, save_nifti
    >>> from anomseg.datasets import get_demo_path
    >>> flair, ref = load_nifti(get_demo_path("patient07_flair.nii.gz"))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     out = save_nifti(flair > 200, ref, pathlib.Path(tmp) / "map.nii.gz")
    ...     mask, ref_out = load_nifti(out, dtype=bool)
    ...     bool((mask == (flair > 200)).all()), ref_out.shape == ref.shape
    (True, True)
    """
    return save_niftis([(data, reference, path)], overwrite=overwrite)[0]


def save_niftis(items, *, overwrite=False):
    """Write several arrays as NIfTI files, as one: all of them or none.

    What :func:`save_nifti` does for each, except that the files appear
    together: each is written to a temporary file first, and they are moved
    into place only when all are complete (see
    :func:`~anomseg.io.atomic_write_all`), so an anomaly map never appears
    without its mask, even when the run is interrupted.

    Parameters
    ----------
    items : list of (data, reference, path)
        As the arguments of :func:`save_nifti`.
    overwrite : bool, default=False
        Whether to replace existing files.

    Returns
    -------
    paths : list of pathlib.Path

    Raises
    ------
    FileExistsError
        If a target exists and ``overwrite`` is False; nothing is written.
    FileNotFoundError
        If the directory of a target does not exist.
    ValueError
        If an array does not have the canonical shape of its reference, or a
        path is not a NIfTI file name.
    """
    writes = []
    for data, reference, path in items:
        path = Path(path)
        if not path.name.endswith(_NIFTI_SUFFIXES):
            raise ValueError(f"'{path}' must end in .nii or .nii.gz to be saved as NIfTI.")
        image = _to_original_image(data, reference)
        suffix = ".nii.gz" if path.name.endswith(".nii.gz") else ".nii"
        writes.append((path, functools.partial(nib.save, image), suffix))
    return atomic_write_all(writes, overwrite=overwrite)
