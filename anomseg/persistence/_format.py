"""The two model file formats, as files: what is written, and what is read
back, without knowing any estimator.

The models are assembled and rebuilt by :mod:`._models` (``save_model``,
``load_model``); this module only writes and reads files:

* **pickle**: joblib's pickle of any object. Loading a pickle can run any
  code it names: read it only from sources you trust.
* **safe**: a :func:`torch.save` file that holds plain data only, read back
  by ``torch.load(..., weights_only=True)`` (one without weights, by an
  unpickler that resolves no global, so without torch): the format and anomseg
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

import hashlib
import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np

from .._version import __version__
from ..io._atomic import atomic_write
from ..utils._param_validation import validate_parameter_constraints
from ..utils._text import printable

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "check_file",
    "checksum",
    "decode",
    "encode",
    "file_kind",
    "read_pickle",
    "read_safe",
    "write_pickle",
    "write_safe",
]

FORMAT = "anomseg.torch_model"
FORMAT_VERSION = 2
_ZIP_MAGIC = b"PK\x03\x04"
_ARRAY_KINDS = "biuf"  # booleans, integers and floats: exact in JSON
_V1_KEYS = {"anomseg_version", "estimator", "params", "attributes", "state_dict"}
_V2_KEYS = {"anomseg_version", "model", "info", "state_dict", "checksum"}


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
        raise ValueError(f"{printable(repr(name))} is not an estimator of anomseg")
    cls = estimator_classes[name]
    params = decode(params, estimator_classes)
    constraints = getattr(cls, "_parameter_constraints", None)
    if constraints is not None:  # a nested estimator is untrusted input too
        validate_parameter_constraints(constraints, params, caller_name=name)
    return cls(**params)


_DECODERS = {
    "__estimator__": _decode_estimator,
    "__tuple__": lambda items, classes: tuple(decode(v, classes) for v in items),
    "__dict__": lambda pairs, classes: {decode(k, classes): decode(v, classes) for k, v in pairs},
    "__ndarray__": _decode_array,
    "__scalar__": lambda data, classes: _decode_array(data, classes)[()],
}


# -- files ---------------------------------------------------------------------------
def checksum(model, info, state_dict):
    """The SHA-256 of a safe file's content: its ``model`` and ``info`` JSON
    texts and every weight's name, dtype, shape and bytes. It tells a damaged
    or altered file from a whole one; it is no signature, since whoever
    alters a file can recompute it."""
    digest = hashlib.sha256()
    for text in (model, info):
        digest.update(len(text).to_bytes(8, "little") + text.encode())
    if state_dict:  # a learning-free model is checked without importing torch
        import torch
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().cpu().contiguous()
        header = json.dumps([key, str(tensor.dtype), list(tensor.shape)])
        digest.update(header.encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + digest.hexdigest()


def write_safe(path, model, info, state_dict, *, overwrite=False):
    """Write a safe file, atomically: ``model`` (the JSON text of the
    estimator or pipeline), ``info`` (the JSON text of what a user reads
    before trusting it) and ``state_dict`` (name to CPU tensor)."""
    import torch

    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "anomseg_version": __version__,
        "model": model,
        "info": info,
        "state_dict": state_dict,
        "checksum": checksum(model, info, state_dict),
    }
    return atomic_write(path, lambda tmp: torch.save(payload, tmp), overwrite=overwrite)


def read_safe(path):
    """The content of a safe file, its layout and checksum checked: a dict
    of ``anomseg_version``, ``format_version``, ``checksum`` (None for
    format version 1, which has none: the caller decides whether to accept
    that), ``model`` (the estimator's or pipeline's record, still tagged:
    see :func:`decode`), ``info`` and ``state_dict``. Raises ValueError on
    any other file."""
    try:
        payload = _plain_payload(path)
        if payload is None:
            import torch

            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types on foreign files
        # Not torch's message: it suggests weights_only=False, which runs code.
        raise ValueError(
            f"'{path}' is not a safe anomseg model file: "
            f"torch.load(weights_only=True) refused it ({type(exc).__name__})."
        ) from exc
    if not (isinstance(payload, dict) and payload.get("format") == FORMAT):
        raise ValueError(f"'{path}' is not a safe anomseg model file.")
    version = payload.get("format_version")
    if version not in (1, FORMAT_VERSION):
        raise ValueError(
            f"'{path}' has format version {printable(repr(version))}; this anomseg "
            f"reads versions 1 to {FORMAT_VERSION}. Load it with the anomseg version "
            f"that saved it ({printable(payload.get('anomseg_version'))}), or a newer one."
        )
    keys = _V1_KEYS if version == 1 else _V2_KEYS
    missing = keys - payload.keys()
    if missing:
        raise ValueError(f"'{path}' lacks {', '.join(sorted(missing))}.")
    state_dict = payload["state_dict"]
    texts = [payload[k] for k in keys - {"state_dict"}]
    if not (
        all(isinstance(text, str) for text in texts)
        and isinstance(state_dict, dict)
        and all(isinstance(k, str) and _is_tensor(t) for k, t in state_dict.items())
    ):
        raise ValueError(f"'{path}' is not a safe anomseg model file.")
    if version == 1:  # no checksum, and the record spread over three keys
        model = {"estimator": payload["estimator"], "params": payload["params"]}
        model["attributes"] = payload["attributes"]
        content = {"model": _parse(path, model, json.loads), "info": {}, "checksum": None}
    else:
        if payload["checksum"] != checksum(payload["model"], payload["info"], state_dict):
            raise ValueError(
                f"'{path}' does not match its checksum: the file was damaged or "
                "altered after it was written; do not use it."
            )
        content = {
            "model": _parse(path, payload["model"], json.loads),
            "info": _parse(path, payload["info"], json.loads),
            "checksum": payload["checksum"],
        }
    content.update(
        anomseg_version=payload["anomseg_version"],
        format_version=version,
        state_dict=state_dict,
    )
    return content


class _NeedsTorch(Exception):
    """A payload that holds more than plain data: tensors, for torch to read."""


class _PlainUnpickler(pickle.Unpickler):
    """Reads plain data only (dicts, lists, strings, numbers): it resolves no
    global and no storage, so it builds no object and runs no code."""

    def find_class(self, module, name):
        raise _NeedsTorch

    def persistent_load(self, pid):
        raise _NeedsTorch


def _plain_payload(path):
    """The payload of a safe file that holds no tensor (a learning-free
    model's), read without importing torch, which takes seconds, so that
    ``anomseg info`` on such a model starts at once; None for any other
    file, which ``torch.load(weights_only=True)`` then reads or refuses.
    ``torch.save`` writes a zip archive whose one ``<name>/data.pkl`` holds
    the pickle, tensors referring to the archive's other records."""
    try:
        with zipfile.ZipFile(path) as archive:
            [name] = [n for n in archive.namelist() if n.endswith("/data.pkl")]
            data = archive.read(name)
        return _PlainUnpickler(io.BytesIO(data)).load()
    except Exception:  # torch.load then reads it, or says why not
        return None


def _is_tensor(value):
    import torch  # only for a file that holds weights, which torch read

    return isinstance(value, torch.Tensor)


def _parse(path, value, loads):
    try:
        if isinstance(value, dict):
            return {k: loads(v) if k != "estimator" else v for k, v in value.items()}
        return loads(value)
    except ValueError as exc:
        raise ValueError(f"'{path}' holds malformed JSON: {exc}") from None


#: How pickles begin: protocol 2 and later, then the compressions joblib
#: can apply (zlib, gzip, bz2, xz, lzma, lz4).
_PICKLE_MAGICS = (
    b"\x80",
    b"\x78",
    b"\x1f\x8b",
    b"BZh",
    b"\xfd7zXZ",
    b"]\x00\x00",
    b"\x04\x22\x4d\x18",
)


def file_kind(path):
    """What ``path`` holds, told from its first bytes: "safe" (a zip
    archive, as torch writes them; a pickle may hold one inside, so only
    the start tells), "pickle" (or a compressed joblib file), or
    "unknown"."""
    with open(path, "rb") as file:
        start = file.read(8)
    if start.startswith(_ZIP_MAGIC):
        return "safe"
    if start.startswith(_PICKLE_MAGICS):
        return "pickle"
    return "unknown"


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
