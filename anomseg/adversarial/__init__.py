"""Adversarial selective cutting (ASC-Net, Dey and Hong 2021).

* :class:`ASCNetSegmenter` learns, from reference images of normal anatomy
  and an unlabelled input set, to cut each image into a part the reference
  explains and a part it does not; the anomaly is thresholded on the
  recombined image.
* :func:`histogram_peak_threshold` is the paper's threshold rule.

Importing this subpackage imports torch.
"""

from ._estimators import ASCNetSegmenter
from ._histogram import histogram_peak_threshold
from ._networks import ASCNetModule, CutDiscriminator, soft_dice

__all__ = [
    "ASCNetModule",
    "ASCNetSegmenter",
    "CutDiscriminator",
    "histogram_peak_threshold",
    "soft_dice",
]
