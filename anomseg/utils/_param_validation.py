"""Declarative parameter constraints, in scikit-learn's style.

Every estimator and transformer lists in ``_parameter_constraints`` what each
parameter of ``__init__`` accepts, and ``fit`` calls scikit-learn's
``_validate_params``. Public functions are decorated with
:func:`validate_params`. A bad value raises
:class:`~sklearn.utils._param_validation.InvalidParameterError` (a
``ValueError`` and a ``TypeError``) that names the parameter, its owner, what
is allowed and what was received::

    The 'max_fpr' parameter of FlairThreshold must be a float in the range
    (0.0, 1.0). Got 1.5 instead.

The constraint classes are scikit-learn's, with two additions: an
:class:`Interval` that refuses booleans (``True`` is not a width of 1: nothing
is silently coerced) and :class:`NumberSequence` for a sequence of numbers,
such as a grid of TV weights or a pair of step sizes.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import (
    HasMethods,
    InvalidParameterError,
    Options,
    StrOptions,
    validate_parameter_constraints,
    validate_params,
)
from sklearn.utils._param_validation import Interval as _Interval

__all__ = [
    "COMMON_CONSTRAINTS",
    "HasMethods",
    "Interval",
    "InvalidParameterError",
    "NumberSequence",
    "Options",
    "SequenceOf",
    "StrOptions",
    "validate_parameter_constraints",
    "validate_params",
]


class Interval(_Interval):
    """scikit-learn's ``Interval``, except that booleans are not numbers."""

    def is_satisfied_by(self, val):
        if isinstance(val, (bool, np.bool_)):
            return False
        return super().is_satisfied_by(val)


class NumberSequence(Options):
    """A non-empty 1D sequence (list, tuple or array) of numbers that each
    satisfy ``interval``, of exactly ``length`` items if given.

    A subclass of ``Options`` only because scikit-learn accepts no other
    constraint classes; it shares nothing else with it.
    """

    def __init__(self, interval, length=None):
        super(Options, self).__init__()  # the base constraint's: hidden=False
        self.interval = interval
        self.length = length

    def is_satisfied_by(self, val):
        if isinstance(val, (str, bytes, dict)) or np.ndim(val) != 1:
            return False
        items = list(val)
        if not items or (self.length is not None and len(items) != self.length):
            return False
        return all(self.interval.is_satisfied_by(v) for v in items)

    def __str__(self):
        element = str(self.interval).removeprefix("a ").removeprefix("an ")
        kind = "a pair" if self.length == 2 else "a non-empty sequence"
        if self.length not in (None, 2):
            kind = f"a sequence of {self.length}"
        return f"{kind} of {element.replace('float', 'floats').replace('int ', 'ints ')}"


class SequenceOf(Options):
    """A non-empty list or tuple whose items each satisfy ``constraint``
    (such as a :class:`HasMethods`), like a list of post-processing steps.

    A subclass of ``Options`` for the reason :class:`NumberSequence` is.
    """

    def __init__(self, constraint, description):
        super(Options, self).__init__()
        self.constraint = constraint
        self.description = description

    def is_satisfied_by(self, val):
        if not isinstance(val, (list, tuple)) or not val:
            return False
        return all(self.constraint.is_satisfied_by(v) for v in val)

    def __str__(self):
        return f"a non-empty list of {self.description}"


#: What the parameters shared by many estimators accept.
COMMON_CONSTRAINTS = {
    "max_fpr": [Interval(Real, 0, 1, closed="neither")],
    "calibration_fraction": [Interval(Real, 0, 1, closed="neither")],
    "random_state": [
        None,
        Interval(Integral, 0, None, closed="left"),
        np.random.Generator,
        np.random.RandomState,
    ],
    "channel_axis": [None, Options(Integral, {-1})],
    "device": [StrOptions({"auto", "cpu", "cuda"})],
    "inference_batch_size": [Interval(Integral, 1, None, closed="left")],
    "verbose": [Interval(Integral, 0, None, closed="left")],
    "smoothing": [
        None,
        Interval(Real, 0, None, closed="neither"),
        NumberSequence(Interval(Real, 0, None, closed="left")),
    ],
    "postprocessing": [
        None,
        SequenceOf(
            HasMethods(["fit", "transform"]),
            "mask filters (such as ConnectedComponentFilter, MorphologicalFilter)",
        ),
    ],
}
