"""Denoising autoencoders (Kascenas et al., 2022).

* :class:`DenoisingAESegmenter` trains a U-Net on healthy slices to remove
  coarse, spatially correlated noise; the anomaly map is the residual
  between a slice and its denoised version, in one forward pass.

Importing this subpackage imports torch.
"""

from ._estimators import DenoisingAESegmenter
from ._networks import DenoisingUNet

__all__ = ["DenoisingAESegmenter", "DenoisingUNet"]
