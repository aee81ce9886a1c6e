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

Fitted attributes are declared the same way, in ``_fitted_attribute_constraints``,
and checked by :func:`validate_fitted_attributes` when a model file is
loaded: a model file is untrusted input, and every value it holds must be one
that ``fit`` could have produced. Their constraints add :class:`Finite` (a
number that is neither NaN nor infinite), :class:`ArrayOf`, :class:`ListOf`,
:class:`DictOf` and :class:`Record` (containers of bounded size whose items
satisfy constraints of their own) and :class:`Name` (a short identifier, so
that no control character read from a file reaches a terminal).
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import (
    HasMethods,
    InvalidParameterError,
    Options,
    StrOptions,
    make_constraint,
    validate_parameter_constraints,
    validate_params,
)
from sklearn.utils._param_validation import Interval as _Interval

from ._text import printable

__all__ = [
    "COMMON_CONSTRAINTS",
    "FITTED_CONSTRAINTS",
    "MAX_SIDE",
    "ArrayOf",
    "DictOf",
    "Finite",
    "HasMethods",
    "Interval",
    "InvalidParameterError",
    "ListOf",
    "Name",
    "NumberSequence",
    "Options",
    "Record",
    "SequenceOf",
    "StrOptions",
    "satisfies",
    "validate_fitted_attributes",
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
#: The widest Gaussian smoothing of maps, in voxels: a standard deviation of
#: 64 spreads a voxel over the whole of a brain at 1 mm; a wider one only
#: costs time (a sigma of 10^6 ran for minutes on a 32 x 32 x 8 scan).
MAX_SMOOTHING = 64

#: The largest radius of a morphological filter, in voxels: a ball of 50
#: spans a brain at 2 mm; a radius of 10^5 asked for 171 PiB of memory.
MAX_RADIUS = 50

#: The most histogram bins: one per level of 16-bit intensities.
MAX_BINS = 2**16

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
    "inference_batch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
    "verbose": [Interval(Integral, 0, None, closed="left")],
    "smoothing": [
        None,
        Interval(Real, 0, MAX_SMOOTHING, closed="right"),
        NumberSequence(Interval(Real, 0, MAX_SMOOTHING, closed="both")),
    ],
    "postprocessing": [
        None,
        SequenceOf(
            HasMethods(["fit", "transform"]),
            "mask filters (such as ConnectedComponentFilter, MorphologicalFilter)",
        ),
    ],
}


# -- fitted attributes --------------------------------------------------------------
#: The most items a container of fitted state holds (a history of a million
#: epochs, a million quantiles): more is no model anomseg wrote.
MAX_ITEMS = 10**6


#: The largest side of an image, and number of channels, that a model file
#: may declare: more is no scan, and would size buffers at scoring time.
MAX_SIDE = 2**15
MAX_CHANNELS = 1024


def satisfies(constraints, value):
    """Whether ``value`` satisfies any of ``constraints`` (a list, as in
    ``_parameter_constraints``)."""
    return any(make_constraint(c).is_satisfied_by(value) for c in constraints)


def _describe(constraints):
    texts = [str(make_constraint(c)) for c in constraints]
    return texts[0] if len(texts) == 1 else ", ".join(texts[:-1]) + " or " + texts[-1]


class Finite(Interval):
    """An :class:`Interval` of real numbers that are also finite: neither
    NaN nor infinite, whatever the bounds (``Interval(Real, None, None)``
    accepts both)."""

    def __init__(self, left=None, right=None, *, closed="both"):
        super().__init__(Real, left, right, closed=closed)

    def is_satisfied_by(self, val):
        return super().is_satisfied_by(val) and bool(np.isfinite(val))

    def __str__(self):
        text = super().__str__()
        if self.left is None and self.right is None:
            return "a finite float"
        return text.replace("a float", "a finite float")


class _Container(Options):
    """Base of the container constraints: a subclass of ``Options`` only
    because scikit-learn accepts no other constraint classes (see
    :class:`NumberSequence`)."""

    def __init__(self):
        super(Options, self).__init__()


class Name(_Container):
    """A short string of letters, digits, ``_``, ``-`` and ``.``: a key of
    fitted state, never text with control characters or a paragraph."""

    def is_satisfied_by(self, val):
        return (
            isinstance(val, str)
            and 0 < len(val) <= 64
            and all(c.isascii() and (c.isalnum() or c in "_-.") for c in val)
        )

    def __str__(self):
        return "a name of at most 64 letters, digits, '_', '-' or '.'"


class ArrayOf(_Container):
    """A NumPy array of one of the dtype ``kinds`` (``"f"`` floats, ``"iu"``
    integers, ``"b"`` booleans), of ``ndim`` dimensions, with finite values
    and at most ``max_size`` elements."""

    def __init__(self, kinds, ndim, *, max_size=MAX_ITEMS):
        super().__init__()
        self.kinds, self.ndim, self.max_size = kinds, ndim, max_size

    def is_satisfied_by(self, val):
        if not isinstance(val, np.ndarray) or val.dtype.kind not in self.kinds:
            return False
        if val.ndim != self.ndim or val.size > self.max_size:
            return False
        return val.dtype.kind != "f" or bool(np.isfinite(val).all())

    def __str__(self):
        kinds = {"f": "float", "i": "integer", "u": "integer", "b": "boolean"}
        kind = "/".join(sorted({kinds[k] for k in self.kinds}))
        return f"a {self.ndim}D array of finite {kind} values (at most {self.max_size} of them)"


class ListOf(_Container):
    """A ``kind`` (list or tuple) of at most ``max_length`` items (exactly
    ``length``, if given) that each satisfy one of ``item``'s constraints."""

    def __init__(self, item, *, max_length=MAX_ITEMS, length=None, kind=list):
        super().__init__()
        self.item, self.max_length, self.length = item, max_length, length
        self.kind = kind

    def is_satisfied_by(self, val):
        if not isinstance(val, self.kind):
            return False
        if len(val) > self.max_length or self.length not in (None, len(val)):
            return False
        return all(satisfies(self.item, v) for v in val)

    def __str__(self):
        kind = self.kind.__name__
        size = f"of {self.length}" if self.length is not None else f"of at most {self.max_length}"
        return f"a {kind} {size} items, each {_describe(self.item)}"


class DictOf(_Container):
    """A dict of at most ``max_length`` items whose keys satisfy one of
    ``key``'s constraints and values one of ``value``'s."""

    def __init__(self, key, value, *, max_length=MAX_ITEMS):
        super().__init__()
        self.key, self.value, self.max_length = key, value, max_length

    def is_satisfied_by(self, val):
        if not isinstance(val, dict) or len(val) > self.max_length:
            return False
        return all(satisfies(self.key, k) and satisfies(self.value, v) for k, v in val.items())

    def __str__(self):
        return (
            f"a dict of at most {self.max_length} items, keys {_describe(self.key)} "
            f"and values {_describe(self.value)}"
        )


class Record(_Container):
    """A dict of exactly the keys of ``fields``, each value satisfying one
    of the constraints that ``fields`` gives it."""

    def __init__(self, fields):
        super().__init__()
        self.fields = fields

    def is_satisfied_by(self, val):
        if not isinstance(val, dict) or set(val) != set(self.fields):
            return False
        return all(satisfies(self.fields[k], v) for k, v in val.items())

    def __str__(self):
        return "a dict of " + ", ".join(f"'{k}' ({_describe(c)})" for k, c in self.fields.items())


def validate_fitted_attributes(constraints, attributes, owner):
    """Check fitted ``attributes`` (name to value, as read from a model
    file) against ``constraints`` (a class's ``_fitted_attribute_constraints``).

    Raises
    ------
    ValueError
        Naming the first attribute that is not declared, or whose value
        satisfies none of its constraints, what it must be and what it is.
    """
    for key, value in attributes.items():
        if key not in constraints:
            raise ValueError(f"{printable(repr(key))} is not a fitted attribute of {owner}")
        if not satisfies(constraints[key], value):
            shown = repr(value)
            if len(shown) > 80:
                shown = shown[:77] + "..."
            raise ValueError(
                f"the fitted attribute '{key}' of {owner} must be "
                f"{_describe(constraints[key])}; got {printable(shown)}"
            )


#: What the fitted attributes shared by many estimators and transformers
#: accept.
FITTED_CONSTRAINTS = {
    "n_channels": [Interval(Integral, 1, MAX_CHANNELS, closed="both")],
    # an image's spatial shape, 2D or 3D
    "shape": [ListOf([Interval(Integral, 1, MAX_SIDE, closed="both")], max_length=3, kind=tuple)],
    # a training history: one record per epoch, of named finite numbers
    "history": [ListOf([DictOf([Name()], [Finite()], max_length=64)])],
    "device": [StrOptions({"cpu", "cuda"})],
}
