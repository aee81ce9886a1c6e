"""Post-processing of binary anomaly masks: functions, and the same as
scikit-learn transformers."""

from ._components import binary_closing, binary_opening, remove_small_components
from ._transformers import ConnectedComponentFilter, MorphologicalFilter

__all__ = [
    "ConnectedComponentFilter",
    "MorphologicalFilter",
    "binary_closing",
    "binary_opening",
    "remove_small_components",
]
