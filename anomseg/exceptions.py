"""Exceptions and warnings raised by anomseg.

Every exception subclasses a built-in (or scikit-learn's ``NotFittedError``),
so ``except ValueError`` keeps working for code that does not know anomseg.
"""

from sklearn.exceptions import NotFittedError

__all__ = [
    "AnomsegWarning",
    "DataDriftWarning",
    "DiskFullError",
    "NotFittedError",
    "ShapeMismatchError",
    "VersionMismatchWarning",
]


class ShapeMismatchError(ValueError):
    """An image's shape differs from the one an estimator was fitted on."""


class AnomsegWarning(UserWarning):
    """Base class of the warnings anomseg emits."""


class VersionMismatchWarning(AnomsegWarning):
    """A model saved by another anomseg version was loaded."""


class DataDriftWarning(AnomsegWarning):
    """Images to score look unlike the healthy images a model was calibrated
    on (intensity, foreground fraction, shape or voxel size), so its
    calibrated false-positive rate may not hold for them."""


class DiskFullError(OSError):
    """A write failed for want of space (errno ENOSPC): its message names
    the path, the bytes needed and the bytes free, in one line."""

    def __str__(self):
        return str(self.strerror)
