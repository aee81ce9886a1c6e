"""Sliding-window inpainting heatmaps (Nguyen et al. 2020) and the
reconstruction-loss predictor that makes them fast (Mavropoulos 2021).

* :class:`InpaintingLocalizer` slides a masked window over each slice and
  maps how badly a generator trained on healthy anatomy fills it in.
* :class:`InpaintingLossPredictor` predicts that loss with a small CNN, in
  one convolutional pass per slice, without the generator.

Importing this subpackage imports torch.
"""

from ._estimators import InpaintingLocalizer, InpaintingLossPredictor
from ._networks import InpaintingGenerator, LossPredictorNet, WindowDiscriminator

__all__ = [
    "InpaintingGenerator",
    "InpaintingLocalizer",
    "InpaintingLossPredictor",
    "LossPredictorNet",
    "WindowDiscriminator",
]
