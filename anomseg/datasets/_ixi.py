"""Loader of the IXI T1 healthy-subject data set."""

from __future__ import annotations

from sklearn.utils import Bunch

from ..io import load_nifti
from ._base import check_directory, check_files, find_subjects, select_subjects

__all__ = ["load_ixi_t1"]

_LOADER = "load_ixi_t1"
_SUFFIX = "_T1.nii.gz"


def load_ixi_t1(path, subjects=None):
    """Load T1 scans of healthy adults from the IXI data set.

    The folder holds ``<subject>_T1.nii.gz`` files (2 mm, full head, not
    skull-stripped). They serve to check calibration on unseen healthy
    subjects and to measure throughput at cohort scale. Licence CC BY-SA 3.0.

    Parameters
    ----------
    path : str or path-like
        The ``ixi_t1`` folder.
    subjects : list of str or None, default=None
        Load only these subjects, such as ``["IXI013-HH-1212"]``, in this
        order; None loads all, sorted.

    Returns
    -------
    data : sklearn.utils.Bunch
        With fields

        images : list of ndarray of float32
            T1 volumes in canonical (RAS+) orientation, axial slices along
            the last axis.
        subjects : list of str
            Subject ids.
        references : list of anomseg.io.NiftiReference
            The files' grids.

    Raises
    ------
    FileNotFoundError
        If the folder or a subject's file is missing.

    Examples
    --------
    >>> from anomseg.datasets import load_ixi_t1
    >>> data = load_ixi_t1("../shared/data/ixi_t1")  # doctest: +SKIP
    >>> data.images[0].shape  # doctest: +SKIP
    (90, 120, 120)
    """
    directory = check_directory(path, _LOADER)
    available = find_subjects(directory, _SUFFIX, _LOADER)
    chosen = select_subjects(available, subjects, _LOADER)
    files = [directory / f"{s}{_SUFFIX}" for s in chosen]
    check_files(files, _LOADER)
    loaded = [load_nifti(f) for f in files]
    return Bunch(
        images=[image for image, _ in loaded],
        subjects=chosen,
        references=[reference for _, reference in loaded],
    )
