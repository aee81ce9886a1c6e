"""Normative priors of healthy anatomy and MAP restoration (You et al.).

* :class:`GMVAERestorer` and :class:`VAERestorer` restore each slice towards
  a Gaussian-mixture or plain VAE prior trained on healthy slices; the
  anomaly map is what the restoration removed.
* :class:`VAEReconstructor` is the plain reconstruction baseline.

Restoration runs the "fast" schedule by default (45 steps with momentum) and
the reference code's 500 steps with ``schedule="paper"``
(:data:`RESTORATION_SCHEDULES`); ``tv_weight="auto"`` finds the TV weight by
golden-section search. Any torch module with a differentiable
``negative_elbo`` can be restored with :func:`map_restore`. Importing this
subpackage imports torch.
"""

from ._estimators import (
    DEFAULT_TV_WEIGHTS,
    PUBLISHED_GMVAE,
    RESTORATION_SCHEDULES,
    GMVAERestorer,
    VAEReconstructor,
    VAERestorer,
)
from ._networks import ConvGMVAE, ConvVAE, total_variation
from ._restore import golden_section_argmin, map_restore

__all__ = [
    "DEFAULT_TV_WEIGHTS",
    "PUBLISHED_GMVAE",
    "RESTORATION_SCHEDULES",
    "ConvGMVAE",
    "ConvVAE",
    "GMVAERestorer",
    "VAEReconstructor",
    "VAERestorer",
    "golden_section_argmin",
    "map_restore",
    "total_variation",
]
