"""NIfTI input and output.

This is the only module of anomseg that touches nibabel. Volumes are loaded
in the closest canonical (RAS+) orientation, axial slices along the last axis,
together with a :class:`NiftiReference` with which anomaly maps are written
back onto the original grid.
"""

from ._nifti import NiftiReference, load_nifti, load_niftis, save_nifti

__all__ = ["NiftiReference", "load_nifti", "load_niftis", "save_nifti"]
