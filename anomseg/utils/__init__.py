"""Input validation and small helpers shared by every estimator."""

from ._discovery import all_estimators
from ._validation import (
    ImageBatch,
    check_generator,
    check_images,
    check_in_range,
    check_maps,
    check_one_of,
)

__all__ = [
    "ImageBatch",
    "all_estimators",
    "check_generator",
    "check_images",
    "check_in_range",
    "check_maps",
    "check_one_of",
]
