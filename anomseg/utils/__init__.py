"""Input validation and small helpers shared by every estimator."""

from ._discovery import all_estimators
from ._drift import describe_images, drift_messages
from ._exclusion import LesionExclusion
from ._validation import (
    ImageBatch,
    check_generator,
    check_images,
    check_maps,
)

__all__ = [
    "ImageBatch",
    "LesionExclusion",
    "all_estimators",
    "check_generator",
    "check_images",
    "check_maps",
    "describe_images",
    "drift_messages",
]
