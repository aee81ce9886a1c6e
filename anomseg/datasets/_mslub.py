"""Loaders of the MSLUB multiple-sclerosis data set (Lesjak et al., 2017),
from a local folder or from the reduced copy embedded in anomseg."""

from __future__ import annotations

import numpy as np
from sklearn.utils import Bunch

from ..io import load_nifti
from ._base import (
    check_directory,
    check_files,
    find_subjects,
    get_demo_path,
    select_subjects,
)

__all__ = ["load_demo_mslub", "load_mslub"]

_MODALITIES = ("flair", "t2", "t1")
_DEMO_MODALITIES = ("flair", "t2")


def _check_modalities(modalities, allowed, loader):
    if isinstance(modalities, str):
        modalities = (modalities,)
    modalities = tuple(modalities)
    bad = [m for m in modalities if m not in allowed]
    if bad or not modalities or len(set(modalities)) != len(modalities):
        raise ValueError(
            f"'modalities' of {loader} must be a non-empty sequence of "
            f"distinct values among {', '.join(map(repr, allowed))}; "
            f"got {modalities!r}."
        )
    return modalities


def _load_directory(directory, modalities, subjects, loader):
    """Read ``<subject>_{modality,mask}.nii.gz``; brain = FLAIR > 0."""
    available = find_subjects(directory, "_flair.nii.gz", loader)
    chosen = select_subjects(available, subjects, loader)
    names = sorted({"flair", "mask", *modalities})
    check_files([directory / f"{s}_{n}.nii.gz" for s in chosen for n in names], loader)
    images, masks, references = [], [], []
    for subject in chosen:
        flair, reference = load_nifti(directory / f"{subject}_flair.nii.gz")
        channels = [
            flair if m == "flair" else load_nifti(directory / f"{subject}_{m}.nii.gz")[0]
            for m in modalities
        ]
        # FLAIR > 0, not != 0: N4 and resampling left a few thousand
        # negative voxels inside the brain, and the reference figures of
        # the baseline use the brain mask FLAIR > 0.
        background = flair <= 0
        if len(channels) == 1:
            image = channels[0]
        else:
            image = np.stack(channels, axis=-1)
            background = np.broadcast_to(background[..., None], image.shape)
        images.append(np.ma.MaskedArray(image, mask=background.copy()))
        masks.append(load_nifti(directory / f"{subject}_mask.nii.gz", dtype=bool)[0])
        references.append(reference)
    return Bunch(
        images=images,
        masks=masks,
        subjects=chosen,
        references=references,
        modalities=list(modalities),
    )


_RETURNS = """\
data : sklearn.utils.Bunch
        With fields

        images : list of numpy.ma.MaskedArray of float32
            One volume per subject in canonical (RAS+) orientation, shape
            (X, Y, Z) for one modality or (X, Y, Z, n_modalities) for
            several (stack them with ``channel_axis=-1``). The mask is the
            background, FLAIR <= 0, for every channel.
        masks : list of ndarray of bool
            Lesion masks, shape (X, Y, Z).
        subjects : list of str
            Subject ids.
        references : list of anomseg.io.NiftiReference
            The grids of the FLAIR files, to save maps with
            :func:`anomseg.io.save_nifti`.
        modalities : list of str
            The modalities, in channel order."""


def load_mslub(path, modalities=("flair",), subjects=None):
    """Load MSLUB multiple-sclerosis scans with their lesion masks.

    The folder holds ``<subject>_{flair,t2,t1,mask}.nii.gz``: skull-stripped,
    N4-corrected scans registered to MNI space (1 mm, 182 x 218 x 182), with
    the consensus lesion masks. The brain is FLAIR > 0: this is the mask
    behind the reference figures of the FLAIR baseline (AUROC 0.938, AUPRC
    0.288, best Dice 0.382 pooled over the three patients).

    Parameters
    ----------
    path : str or path-like
        The ``mslub`` folder.
    modalities : sequence of {"flair", "t2", "t1"}, default=("flair",)
        Modalities to load, in channel order.
    subjects : list of str or None, default=None
        Load only these subjects, such as ``["patient07"]``, in this order;
        None loads all, sorted.

    Returns
    -------
    {returns}

    Raises
    ------
    FileNotFoundError
        If the folder or a subject's files are missing.

    See Also
    --------
    load_demo_mslub : A reduced copy embedded in anomseg.

    References
    ----------
    .. [1] Z. Lesjak, F. Pernus, B. Likar, Z. Spiclin. "A Novel Public MR
       Image Dataset of Multiple Sclerosis Patients With Lesion
       Segmentations Based on Multi-rater Consensus". Neuroinformatics 16,
       2018. doi:10.1007/s12021-017-9348-7

    Examples
    --------
    >>> from anomseg.datasets import load_mslub
    >>> data = load_mslub("../shared/data/mslub",
    ...                   modalities=("flair", "t2"))  # doctest: +SKIP
    >>> data.images[0].shape  # doctest: +SKIP
    (182, 218, 182, 2)
    """
    loader = "load_mslub"
    modalities = _check_modalities(modalities, _MODALITIES, loader)
    return _load_directory(check_directory(path, loader), modalities, subjects, loader)


def load_demo_mslub(modalities=("flair",)):
    """Load the MSLUB demo data embedded in anomseg (3 patients, ~6 MB).

    A reduced copy of :func:`load_mslub`'s data for examples and tests,
    shipped under the CC-BY licence with its attribution (see
    ``description``): FLAIR and T2 of patient07, patient19 and patient26 and
    their lesion masks, in canonical orientation, cropped to the union of the
    brain bounding boxes (132 x 165 x 127 voxels; the affine keeps MNI
    coordinates), and quantised to uint8: 0 outside the brain, 1 to 255
    inside, 255 being the 99.9th percentile of the brain of each volume and
    modality. The FLAIR baseline gives AUROC 0.938, AUPRC 0.293 and best
    Dice 0.390 on it (0.938, 0.288, 0.382 on the original data).

    Parameters
    ----------
    modalities : sequence of {"flair", "t2"}, default=("flair",)
        Modalities to load, in channel order.

    Returns
    -------
    {returns}
        description : str
            Source, licence and the changes made to the original data.

    See Also
    --------
    load_mslub : The original data from a local folder.
    get_demo_path : Path of the embedded files.

    Examples
    --------
    >>> from anomseg.datasets import load_demo_mslub
    >>> data = load_demo_mslub(modalities=("flair", "t2"))
    >>> data.subjects
    ['patient07', 'patient19', 'patient26']
    >>> data.images[0].shape, data.images[0].dtype
    ((132, 165, 127, 2), dtype('float32'))
    >>> int(data.masks[0].sum())
    1300
    """
    loader = "load_demo_mslub"
    modalities = _check_modalities(modalities, _DEMO_MODALITIES, loader)
    data = _load_directory(get_demo_path(), modalities, None, loader)
    data.description = get_demo_path("ATTRIBUTION.md").read_text()
    return data


# The two loaders return the same fields: write them once.
for _loader in (load_mslub, load_demo_mslub):
    _loader.__doc__ = _loader.__doc__.replace("{returns}", _RETURNS)
del _loader
