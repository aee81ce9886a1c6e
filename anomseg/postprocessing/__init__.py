"""Post-processing of anomaly maps and masks: functions, and the mask
filters as scikit-learn transformers (an estimator's ``postprocessing``).

:func:`smooth_map` is what an estimator's ``smoothing`` applies to its maps.
"""

from ..utils._smoothing import smooth_map
from ._components import binary_closing, binary_opening, remove_small_components
from ._transformers import ConnectedComponentFilter, MorphologicalFilter

__all__ = [
    "ConnectedComponentFilter",
    "MorphologicalFilter",
    "binary_closing",
    "binary_opening",
    "remove_small_components",
    "smooth_map",
]
