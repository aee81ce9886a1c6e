"""Input validation and small helpers shared by every estimator."""

from ._validation import (
    ImageBatch,
    check_generator,
    check_images,
    check_in_range,
    check_one_of,
)

__all__ = [
    "ImageBatch",
    "check_generator",
    "check_images",
    "check_in_range",
    "check_one_of",
]
