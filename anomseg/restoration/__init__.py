"""Normative priors of healthy anatomy and MAP restoration (You et al.).

* :class:`GMVAERestorer` and :class:`VAERestorer` restore each slice towards
  a Gaussian-mixture or plain VAE prior trained on healthy slices; the
  anomaly map is what the restoration removed.
* :class:`VAEReconstructor` is the plain reconstruction baseline.

Any torch module with a differentiable ``negative_elbo`` can be restored
with :func:`map_restore`. Importing this subpackage imports torch.
"""

from ._estimators import (
    DEFAULT_TV_WEIGHTS,
    PUBLISHED_GMVAE,
    GMVAERestorer,
    VAEReconstructor,
    VAERestorer,
)
from ._networks import ConvGMVAE, ConvVAE, total_variation
from ._restore import map_restore

__all__ = [
    "DEFAULT_TV_WEIGHTS",
    "PUBLISHED_GMVAE",
    "ConvGMVAE",
    "ConvVAE",
    "GMVAERestorer",
    "VAEReconstructor",
    "VAERestorer",
    "map_restore",
    "total_variation",
]
