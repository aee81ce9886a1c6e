"""Data sets: loaders of real scans, embedded demo data and synthetic lesions.

* Loaders of local copies of public data sets return a
  :class:`sklearn.utils.Bunch` of volumes in canonical (RAS+) orientation,
  with their lesion masks and :class:`anomseg.io.NiftiReference` objects:
  :func:`load_lgg_flair`, :func:`load_mslub`, :func:`load_ixi_t1`.
* :func:`load_demo_mslub` loads a reduced copy of MSLUB embedded in anomseg
  (CC-BY, with attribution), for examples and tests that need no download.
* :func:`apply_brain_masks` restricts full-head scans to their brain masks,
  where every method is meant to work.
* :func:`exclude_lesions` keeps only the lesion-free tissue of delineated
  scans, as healthy calibration data. To fit on the healthy parts of
  patient scans, pass their lesion masks to ``fit(X, exclude=...)`` (see
  :class:`anomseg.utils.LesionExclusion`) instead.
* :func:`extract_slices` cuts volumes into 2D slices, for example the
  lesion-free slices used to train slice-based methods.
* :func:`make_healthy_images` and :func:`add_synthetic_lesions` make toy data
  with exact ground truth.
"""

from ._base import get_demo_path
from ._healthy import apply_brain_masks, exclude_lesions
from ._ixi import load_ixi_t1
from ._lgg import load_lgg_flair
from ._mslub import load_demo_mslub, load_mslub
from ._slices import extract_slices
from ._synthetic import add_synthetic_lesions, make_healthy_images

__all__ = [
    "add_synthetic_lesions",
    "apply_brain_masks",
    "exclude_lesions",
    "extract_slices",
    "get_demo_path",
    "load_demo_mslub",
    "load_ixi_t1",
    "load_lgg_flair",
    "load_mslub",
    "make_healthy_images",
]
