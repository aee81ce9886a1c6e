"""Files in and out: NIfTI volumes, models and figures.

This is the only module of anomseg that touches nibabel. Volumes are loaded
in the closest canonical (RAS+) orientation, axial slices along the last axis,
together with a :class:`NiftiReference` with which anomaly maps are written
back onto the original grid. Every writer is atomic and refuses to replace an
existing file unless ``overwrite=True``.

Models are saved two ways. :func:`save_model` pickles any estimator or
pipeline with joblib; :func:`load_model` runs code from the file, so use it
on trusted files only. :func:`save_torch_model` writes the torch estimators
as plain data (JSON configuration and a state dict), which
:func:`load_torch_model` reads without running code from the file.
"""

from ._atomic import atomic_write
from ._files import load_model, save_figure, save_model
from ._nifti import NiftiReference, load_nifti, load_niftis, save_nifti
from ._safe import load_torch_model, save_torch_model

__all__ = [
    "NiftiReference",
    "atomic_write",
    "load_model",
    "load_nifti",
    "load_niftis",
    "load_torch_model",
    "save_figure",
    "save_model",
    "save_nifti",
    "save_torch_model",
]
