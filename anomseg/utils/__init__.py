"""Input validation and small helpers shared by every estimator."""

from ._discovery import all_estimators
from ._validation import (
    ImageBatch,
    check_generator,
    check_images,
    check_maps,
)

__all__ = [
    "ImageBatch",
    "all_estimators",
    "check_generator",
    "check_images",
    "check_maps",
]
