"""Files in and out: NIfTI volumes, figures and atomic writes.

This is the only module of anomseg that touches nibabel. Volumes are loaded
in the closest canonical (RAS+) orientation, axial slices along the last axis,
together with a :class:`NiftiReference` with which anomaly maps are written
back onto the original grid; :func:`to_canonical` and :func:`from_canonical`
do the same for arrays with an affine. Every writer is atomic and refuses to replace an
existing file unless ``overwrite=True``. The scans that ``fit`` on paths
and :mod:`anomseg.cohort` read go through here too, checked, one at a time.

Models are saved by their own ``save`` method and loaded by
:func:`anomseg.load_model`; ``save_model``, ``load_model``,
``save_torch_model`` and ``load_torch_model`` remain here, deprecated, until
anomseg 0.3.
"""

from ._atomic import atomic_write, atomic_write_all
from ._files import load_model, load_torch_model, save_figure, save_model, save_torch_model
from ._nifti import (
    NiftiReference,
    from_canonical,
    load_mask,
    load_nifti,
    load_nifti_reference,
    load_niftis,
    same_grid,
    save_nifti,
    save_niftis,
    to_canonical,
)

__all__ = [
    "NiftiReference",
    "atomic_write",
    "atomic_write_all",
    "from_canonical",
    "load_mask",
    "load_model",
    "load_nifti",
    "load_nifti_reference",
    "load_niftis",
    "load_torch_model",
    "same_grid",
    "save_figure",
    "save_model",
    "save_nifti",
    "save_niftis",
    "save_torch_model",
    "to_canonical",
]
