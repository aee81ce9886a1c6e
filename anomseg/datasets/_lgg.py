"""Loader of the LGG FLAIR data set (Buda et al., 2019)."""

from __future__ import annotations

import json

from sklearn.utils import Bunch

from ..io import load_nifti
from ..utils._param_validation import StrOptions, validate_parameter_constraints
from ._base import check_directory, check_files, find_subjects, select_subjects

__all__ = ["load_lgg_flair"]

_LOADER = "load_lgg_flair"


def load_lgg_flair(path, split=None, subjects=None):
    """Load the LGG FLAIR glioma data set (80 patients, tumour and brain masks).

    The folder holds ``<case>_flair.nii.gz``, ``<case>_mask.nii.gz`` and
    ``<case>_brainmask.nii.gz`` (128 x 128 x n_slices, axial slices along the
    last axis) and ``split.json`` with the development split: 60 ``train`` and
    20 ``validation`` patients. Images are full head, not skull-stripped. The
    published methods all work inside the brain: mask the images with
    ``brain_masks`` (see :func:`apply_brain_masks`) before fitting, and
    evaluate inside them.

    The brain masks were made with deepbet (Fisch et al., 2024); in the top
    one or two slices of some thick-slice volumes they still hold some skull.
    The files' affines are nominal (2 x 2 x 1 mm, labelled RAS) and their
    orientation labels are not the true ones: on disk, axis 0 runs anterior
    to posterior and axis 1 right to left.

    The data set has no licence text; it is read from a local folder only and
    never shipped with anomseg.

    Parameters
    ----------
    path : str or path-like
        The ``lgg_flair`` folder.
    split : {None, "train", "validation"}, default=None
        Load only the patients of this part of ``split.json``; None loads all.
    subjects : list of str or None, default=None
        Load only these cases (in this order), such as
        ``["TCGA_CS_4941_19960909"]``; they must belong to ``split`` if it is
        given.

    Returns
    -------
    data : sklearn.utils.Bunch
        With fields

        images : list of ndarray of float32, shape (128, 128, n_slices)
            FLAIR volumes in canonical (RAS+) orientation.
        masks : list of ndarray of bool
            Tumour masks on the same grids.
        brain_masks : list of ndarray of bool
            Brain masks on the same grids.
        subjects : list of str
            Case ids, sorted unless ``subjects`` gave an order.
        references : list of anomseg.io.NiftiReference
            The FLAIR files' grids, to save maps with
            :func:`anomseg.io.save_nifti`.
        split : dict of str to list of str
            The content of ``split.json``.

    Raises
    ------
    FileNotFoundError
        If the folder, ``split.json`` or a case's files are missing.

    See Also
    --------
    extract_slices : Turns the volumes into 2D slices, such as the
        tumour-free slices used for training.

    References
    ----------
    .. [1] M. Buda, A. Saha, M. A. Mazurowski. "Association of genomic
       subtypes of lower-grade gliomas with shape features automatically
       extracted by a deep learning algorithm". Computers in Biology and
       Medicine 109, 2019.

    Examples
    --------
    >>> from anomseg.datasets import (load_lgg_flair, extract_slices,
    ...                               apply_brain_masks)
    >>> data = load_lgg_flair("../shared/data/lgg_flair",
    ...                       split="train")  # doctest: +SKIP
    >>> brains = apply_brain_masks(data.images, data.brain_masks)  # doctest: +SKIP
    >>> healthy = extract_slices(brains, data.masks, lesion_free=True,
    ...                          groups=data.subjects)  # doctest: +SKIP
    """
    directory = check_directory(path, _LOADER)
    split_file = directory / "split.json"
    check_files([split_file], _LOADER)
    with open(split_file) as f:
        split_dict = json.load(f)
    if split is None:
        available = find_subjects(directory, "_flair.nii.gz", _LOADER)
    else:
        validate_parameter_constraints(
            {"split": [StrOptions(set(split_dict))]}, {"split": split}, caller_name=_LOADER
        )
        available = sorted(split_dict[split])
    chosen = select_subjects(available, subjects, _LOADER)
    flair_files = [directory / f"{s}_flair.nii.gz" for s in chosen]
    mask_files = [directory / f"{s}_mask.nii.gz" for s in chosen]
    brain_files = [directory / f"{s}_brainmask.nii.gz" for s in chosen]
    check_files(flair_files + mask_files + brain_files, _LOADER)

    images, masks, brain_masks, references = [], [], [], []
    for flair_file, mask_file, brain_file in zip(flair_files, mask_files, brain_files):
        image, reference = load_nifti(flair_file)
        images.append(image)
        masks.append(load_nifti(mask_file, dtype=bool)[0])
        brain_masks.append(load_nifti(brain_file, dtype=bool)[0])
        references.append(reference)
    return Bunch(
        images=images,
        masks=masks,
        brain_masks=brain_masks,
        subjects=chosen,
        references=references,
        split=split_dict,
    )
