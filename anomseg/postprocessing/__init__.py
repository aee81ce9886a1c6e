"""Post-processing of binary anomaly masks."""

from ._components import binary_closing, binary_opening, remove_small_components

__all__ = ["binary_closing", "binary_opening", "remove_small_components"]
