"""An object's state as plain data and back, and the migrations of the state
that older anomseg versions saved.

Both formats go through here: the safe format records what
:func:`plain_state` returns and rebuilds with :func:`plain_import`; a pickle
restores ``__dict__`` and then runs :func:`upgrade_state`. Neither knows an
estimator class: they read what a class declares (``_parameter_constraints``,
``_fitted_attribute_constraints``) and call the checks it defines
(``_check_params``, ``_check_fitted_state``), so that the contract of
:mod:`anomseg.base`, above, can use them for its own state hooks.
"""

from __future__ import annotations

from ..utils._param_validation import validate_fitted_attributes, validate_parameter_constraints
from ..utils._text import printable

__all__ = ["is_fitted_attribute", "plain_import", "plain_state", "upgrade_state"]


def is_fitted_attribute(name):
    """Whether the attribute ``name`` is fitted state: it ends in ``_``."""
    # Dunder names such as __dict__ also end in "_": never set them.
    return name.endswith("_") and not name.startswith("__") and name != "module_"


def upgrade_state(state):
    """Fitted attributes saved by an older anomseg, in today's form: since
    0.2 every record of a ``history_`` starts with its ``epoch`` (ASC-Net's
    ``cycle``; the record's position for the inpainting models)."""
    for key, value in state.items():
        if key.endswith("history_") and isinstance(value, list):
            state[key] = [
                record
                if "epoch" in record
                else {"epoch": record.get("cycle", epoch)}
                | {k: v for k, v in record.items() if k != "cycle"}
                for epoch, record in enumerate(value, start=1)
            ]
    return state


def plain_state(obj):
    """The parameters and fitted attributes of ``obj``, and no weights."""
    attributes = {k: v for k, v in vars(obj).items() if is_fitted_attribute(k)}
    return obj.get_params(deep=False), attributes, {}


def plain_import(cls, params, attributes):
    """An instance of ``cls`` with ``params`` and ``attributes``, both
    validated against what the class declares (``_parameter_constraints``
    and ``_check_params``; ``_fitted_attribute_constraints`` and
    ``_check_fitted_state``)."""
    constraints = getattr(cls, "_parameter_constraints", None)
    if constraints is not None:
        validate_parameter_constraints(constraints, params, caller_name=cls.__name__)
    estimator = cls(**params)
    check_params = getattr(estimator, "_check_params", None)
    if check_params is not None:
        check_params()
    attributes = upgrade_state(attributes)
    validate_fitted_attributes(cls._fitted_attribute_constraints, attributes, cls.__name__)
    for key, value in attributes.items():
        if not is_fitted_attribute(key):
            raise ValueError(f"{printable(repr(key))} is not a fitted attribute")
        setattr(estimator, key, value)
    check_state = getattr(estimator, "_check_fitted_state", None)
    if check_state is not None:
        check_state()
    return estimator
