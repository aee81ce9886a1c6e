"""The two model file formats, as files: what is written, and what is read
back, without knowing any estimator.

The estimators assemble and rebuild themselves (``save``, ``load`` and
:func:`anomseg.base.load_model`); this module only writes and reads files:

* **pickle**: joblib's pickle of any object. Loading a pickle can run any
  code it names: read it only from sources you trust.
* **safe**: a :func:`torch.save` file that holds plain data only, read back
  by ``torch.load(..., weights_only=True)``: the format and anomseg
  versions, the estimator's class name, its parameters and fitted
  attributes as JSON, and its network's weights as CPU tensors. JSON has no
  tuple, non-string key or array, so these are written as one-key objects
  tagged ``__tuple__``, ``__dict__`` (a list of key-value pairs),
  ``__ndarray__`` and ``__scalar__`` (dtype, shape, values); a parameter
  that is itself an unfitted estimator (such as the ``inpainter`` of
  :class:`~anomseg.inpainting.InpaintingLossPredictor`) is tagged
  ``__estimator__`` (class name, parameters) and rebuilt only from an
  allow-list. Floats are written with Python's shortest round-tripping
  ``repr``, so every number comes back bit for bit.

Every write is atomic and refuses to replace a file unless asked to.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .io._atomic import atomic_write

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "check_file",
    "decode",
    "encode",
    "is_pickle_file",
    "read_pickle",
    "read_safe",
    "write_pickle",
    "write_safe",
]

FORMAT = "anomseg.torch_model"
FORMAT_VERSION = 1
_ZIP_MAGIC = b"PK\x03\x04"
_ARRAY_KINDS = "biuf"  # booleans, integers and floats: exact in JSON
_PAYLOAD_KEYS = {"anomseg_version", "estimator", "params", "attributes", "state_dict"}


# -- plain data <-> JSON ---------------------------------------------------------
def encode(value, what, estimator_classes):
    """``value`` as JSON-compatible data, with tuples, non-string keys,
    NumPy values and the estimators of ``estimator_classes`` (class name to
    class) tagged so that :func:`decode` restores them exactly."""
    if isinstance(value, (np.ndarray, np.generic)):  # np.float64 is a float
        array = np.asarray(value)
        if array.dtype.kind not in _ARRAY_KINDS:
            raise TypeError(
                f"Cannot save {what}: arrays of dtype {array.dtype} are not "
                "supported, only booleans, integers and floats."
            )
        shape, values = list(array.shape), array.ravel().tolist()
        data = {"dtype": array.dtype.str, "shape": shape, "values": values}
        return {"__scalar__" if isinstance(value, np.generic) else "__ndarray__": data}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [encode(v, what, estimator_classes) for v in value]
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v, what, estimator_classes) for v in value]}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and not _is_tagged(value):
            return {k: encode(v, what, estimator_classes) for k, v in value.items()}
        return {
            "__dict__": [
                [encode(k, what, estimator_classes), encode(v, what, estimator_classes)]
                for k, v in value.items()
            ]
        }
    name = type(value).__name__
    if estimator_classes.get(name) is type(value):  # a parameter such as 'inpainter'
        params = value.get_params(deep=False)
        encoded = {k: encode(v, what, estimator_classes) for k, v in params.items()}
        return {"__estimator__": [name, encoded]}
    raise TypeError(
        f"Cannot save {what} of type {name} in the safe format, which holds "
        "None, booleans, numbers, strings, lists, tuples, dicts, numeric NumPy "
        "arrays and unfitted anomseg estimators; save with format='pickle'."
    )


def _is_tagged(obj):
    return len(obj) == 1 and next(iter(obj)) in _DECODERS


def decode(value, estimator_classes):
    """The inverse of :func:`encode`."""
    if isinstance(value, list):
        return [decode(v, estimator_classes) for v in value]
    if isinstance(value, dict):
        if _is_tagged(value):
            [(tag, data)] = value.items()
            return _DECODERS[tag](data, estimator_classes)
        return {k: decode(v, estimator_classes) for k, v in value.items()}
    return value


def _decode_array(data, _):
    dtype = np.dtype(data["dtype"])
    if dtype.kind not in _ARRAY_KINDS:
        raise ValueError(f"unsupported array dtype {dtype}")
    return np.array(data["values"], dtype=dtype).reshape(data["shape"])


def _decode_estimator(data, estimator_classes):
    name, params = data
    if name not in estimator_classes:
        raise ValueError(f"{name!r} is not an estimator of anomseg")
    return estimator_classes[name](**decode(params, estimator_classes))


_DECODERS = {
    "__estimator__": _decode_estimator,
    "__tuple__": lambda items, classes: tuple(decode(v, classes) for v in items),
    "__dict__": lambda pairs, classes: {decode(k, classes): decode(v, classes) for k, v in pairs},
    "__ndarray__": _decode_array,
    "__scalar__": lambda data, classes: _decode_array(data, classes)[()],
}


# -- files ---------------------------------------------------------------------------
def write_safe(path, payload, *, overwrite=False):
    """Write ``payload`` (the keys of a safe file but the format's own) as a
    safe file, atomically."""
    import torch

    from ._version import __version__

    full = {"format": FORMAT, "format_version": FORMAT_VERSION, "anomseg_version": __version__}
    full.update(payload)
    return atomic_write(path, lambda tmp: torch.save(full, tmp), overwrite=overwrite)


def read_safe(path):
    """The payload of a safe file, its layout checked; raises ValueError on
    any other file."""
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types on foreign files
        # Not torch's message: it suggests weights_only=False, which runs code.
        raise ValueError(
            f"'{path}' is not a safe anomseg model file: "
            f"torch.load(weights_only=True) refused it ({type(exc).__name__})."
        ) from exc
    if not (isinstance(payload, dict) and payload.get("format") == FORMAT):
        raise ValueError(f"'{path}' is not a safe anomseg model file.")
    if payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"'{path}' has format version {payload.get('format_version')!r}; "
            f"this anomseg reads version {FORMAT_VERSION}. Load it with the "
            f"anomseg version that saved it ({payload.get('anomseg_version')})."
        )
    missing = _PAYLOAD_KEYS - payload.keys()
    if missing:
        raise ValueError(f"'{path}' lacks {', '.join(sorted(missing))}.")
    state_dict = payload["state_dict"]
    if not (
        isinstance(payload["params"], str)
        and isinstance(payload["attributes"], str)
        and isinstance(payload["estimator"], str)
        and isinstance(state_dict, dict)
        and all(isinstance(t, torch.Tensor) for t in state_dict.values())
    ):
        raise ValueError(f"'{path}' is not a safe anomseg model file.")
    return payload


def is_pickle_file(path):
    """Whether ``path`` is not a safe file: a pickle, or something else that
    unpickling will refuse. Safe files are zip archives (as torch writes
    them), which start with a zip entry; a pickle may hold one inside, so
    only the first bytes tell."""
    with open(path, "rb") as file:
        return file.read(4) != _ZIP_MAGIC


def write_pickle(obj, path, *, overwrite=False):
    """Pickle ``obj`` with joblib, atomically."""
    import joblib

    return atomic_write(path, lambda tmp: joblib.dump(obj, tmp), overwrite=overwrite)


def read_pickle(path):
    """Unpickle ``path`` with joblib (runs code from the file: trusted files
    only); raises ValueError on a file that is no pickle."""
    import joblib

    try:
        return joblib.load(path)
    except Exception as exc:  # pickle raises many types on foreign files
        raise ValueError(f"'{path}' is not a model file written by anomseg: {exc}") from None


def check_file(path):
    """``path`` as a Path to an existing file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No model file at '{path}'.")
    return path
