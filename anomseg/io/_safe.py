"""A file format for the torch estimators that runs no code when loaded.

:func:`save_model` writes a pickle, and unpickling a file can run any code
it names. The files of :func:`save_torch_model` hold plain data only, read
by ``torch.load(..., weights_only=True)``: strings, numbers, and the
network's weights as CPU tensors. Parameters and fitted attributes are JSON
strings; the JSON has no native tuple, non-string key or array, so these
are written as one-key objects tagged ``__tuple__``, ``__dict__`` (a list of
key-value pairs), ``__ndarray__`` and ``__scalar__`` (dtype, shape, values).
A parameter that is itself an (unfitted) anomseg torch estimator, such as
the ``inpainter`` of :class:`~anomseg.inpainting.InpaintingLossPredictor`,
is written as ``__estimator__`` (class name, parameters); only the classes
of the allow-list are rebuilt. A fitted one wrapped in a
:class:`~sklearn.frozen.FrozenEstimator` cannot be saved this way.
JSON floats are written with Python's shortest round-tripping ``repr``, so
every number comes back bit for bit.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from .._version import __version__
from ..exceptions import AnomsegWarning, VersionMismatchWarning
from ._atomic import atomic_write

__all__ = ["load_torch_model", "save_torch_model"]

_FORMAT = "anomseg.torch_model"
_FORMAT_VERSION = 1
_ARRAY_KINDS = "biuf"  # booleans, integers and floats: exact in JSON


# -- plain data <-> JSON ---------------------------------------------------------
def _encode(value, what):
    """``value`` as JSON-compatible data, with tuples, non-string keys and
    NumPy values tagged so that :func:`_decode` restores them exactly."""
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
        return [_encode(v, what) for v in value]
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, what) for v in value]}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and not _is_tagged(value):
            return {k: _encode(v, what) for k, v in value.items()}
        return {"__dict__": [[_encode(k, what), _encode(v, what)] for k, v in value.items()]}
    name = type(value).__name__
    if _torch_estimators().get(name) is type(value):  # a parameter such as 'inpainter'
        params = value.get_params(deep=False)
        return {"__estimator__": [name, {k: _encode(v, what) for k, v in params.items()}]}
    raise TypeError(
        f"Cannot save {what} of type {type(value).__name__}; the safe format "
        "holds None, booleans, numbers, strings, lists, tuples, dicts, "
        "numeric NumPy arrays and the parameters of anomseg's torch estimators."
    )


def _is_tagged(obj):
    return len(obj) == 1 and next(iter(obj)) in _DECODERS


def _decode(value):
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        if _is_tagged(value):
            [(tag, data)] = value.items()
            return _DECODERS[tag](data)
        return {k: _decode(v) for k, v in value.items()}
    return value


def _decode_array(data):
    dtype = np.dtype(data["dtype"])
    if dtype.kind not in _ARRAY_KINDS:
        raise ValueError(f"unsupported array dtype {dtype}")
    return np.array(data["values"], dtype=dtype).reshape(data["shape"])


def _decode_estimator(data):
    name, params = data
    cls = _torch_estimators().get(name)
    if cls is None:
        raise ValueError(f"{name!r} is not a torch estimator of anomseg")
    return cls(**{k: _decode(v) for k, v in params.items()})


_DECODERS = {
    "__estimator__": _decode_estimator,
    "__tuple__": lambda items: tuple(_decode(v) for v in items),
    "__dict__": lambda pairs: {_decode(k): _decode(v) for k, v in pairs},
    "__ndarray__": _decode_array,
    "__scalar__": lambda data: _decode_array(data)[()],
}


# -- what may be saved -------------------------------------------------------------
def _torch_estimators():
    """Class name to class of the public estimators that own a torch module
    (imports the subpackages, hence torch)."""
    from ..utils import all_estimators

    return {name: cls for name, cls in all_estimators() if hasattr(cls, "_build_module")}


def _is_fitted_attribute(name):
    # Dunder names such as __dict__ also end in "_": never set them.
    return name.endswith("_") and not name.startswith("__") and name != "module_"


def save_torch_model(estimator, path, *, overwrite=False):
    """Save a fitted torch estimator in a format that runs no code when loaded.

    The file, written with :func:`torch.save`, holds plain data only: the
    format version, the anomseg version, the estimator's class name, its
    parameters (``get_params()``) and fitted attributes as JSON, and the
    network's ``state_dict`` as CPU tensors. :func:`load_torch_model` reads
    it with ``torch.load(..., weights_only=True)``, so, unlike the pickles
    of :func:`save_model`, a file from an untrusted source can be loaded
    safely. The write is atomic, and an existing file is only replaced with
    ``overwrite=True``.

    Parameters
    ----------
    estimator : GMVAERestorer, VAERestorer, VAEReconstructor or ASCNetSegmenter
        A fitted torch estimator of :mod:`anomseg.restoration` or
        :mod:`anomseg.adversarial`. Pipelines
        are not supported: save their final estimator.
    path : str or path-like
        Target file, conventionally ``*.pt``. Its directory must exist.
    overwrite : bool, default=False
        Whether to replace an existing file.

    Returns
    -------
    path : pathlib.Path
        The written file.

    Raises
    ------
    TypeError
        If ``estimator`` is not a torch estimator of anomseg, or a parameter
        or fitted attribute is not plain data (such as a ``random_state``
        that is a :class:`numpy.random.Generator`).
    NotFittedError
        If ``estimator`` is not fitted.
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    FileNotFoundError
        If the directory of ``path`` does not exist.

    See Also
    --------
    load_torch_model : Reads the file.
    save_model : Saves any estimator or pipeline, as a pickle.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from anomseg.datasets import make_healthy_images
    >>> from anomseg.io import load_torch_model, save_torch_model
    >>> from anomseg.restoration import VAEReconstructor
    >>> X = make_healthy_images(n_images=12, shape=(32, 32), random_state=0)
    >>> est = VAEReconstructor(width=4, n_epochs=2, device="cpu",
    ...                        random_state=0).fit(X)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = save_torch_model(est, pathlib.Path(tmp) / "model.pt")
    ...     loaded = load_torch_model(path)
    >>> bool((loaded.score_samples(X) == est.score_samples(X)).all())
    True
    """
    import torch
    from sklearn.utils.validation import check_is_fitted

    name = type(estimator).__name__
    allowed = _torch_estimators()
    if allowed.get(name) is not type(estimator):
        raise TypeError(
            f"save_torch_model saves the torch estimators of anomseg "
            f"({', '.join(allowed)}); got a {name}. Save other estimators and "
            "pipelines with save_model, as a pickle."
        )
    check_is_fitted(estimator, ["module_", "threshold_"])
    params = {
        key: _encode(value, f"parameter '{key}' of {name}")
        for key, value in estimator.get_params(deep=False).items()
    }
    attributes = {
        key: _encode(value, f"attribute '{key}' of {name}")
        for key, value in vars(estimator).items()
        if _is_fitted_attribute(key)
    }
    payload = {
        "format": _FORMAT,
        "format_version": _FORMAT_VERSION,
        "anomseg_version": __version__,
        "estimator": name,
        "params": json.dumps(params),
        "attributes": json.dumps(attributes),
        "state_dict": {
            key: tensor.detach().cpu() for key, tensor in estimator.module_.state_dict().items()
        },
    }
    return atomic_write(path, lambda tmp: torch.save(payload, tmp), overwrite=overwrite)


def load_torch_model(path, *, device=None):
    """Load a torch estimator saved by :func:`save_torch_model`.

    The file is read with ``torch.load(..., weights_only=True)``, which
    accepts plain data and tensors only, and the estimator is rebuilt from
    an allow-list of anomseg classes: loading runs no code from the file,
    unlike :func:`load_model`, whose pickles should only be loaded from
    sources you trust. The network is rebuilt from the estimator's
    parameters, receives the saved weights, and is put in evaluation mode
    with gradients disabled, as after ``fit``.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`save_torch_model`.
    device : {"cpu", "cuda", "auto"} or None, default=None
        Where to put the network; ``device_`` is set to it. None uses the
        device the model was trained on, or the CPU, with a warning, if that
        is CUDA and torch finds none.

    Returns
    -------
    estimator : GMVAERestorer, VAERestorer or VAEReconstructor
        The fitted estimator, ready for ``score_samples`` and ``predict``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If ``path`` is not a file written by :func:`save_torch_model`, names
        a class outside the allow-list, or holds parameters, attributes or
        weights that do not fit that class; or if ``device="cuda"`` and
        torch finds no CUDA device.

    Warns
    -----
    VersionMismatchWarning
        If another anomseg version saved the model.
    AnomsegWarning
        If the model was trained on CUDA, which is not available here.

    See Also
    --------
    save_torch_model : Writes the file.
    load_model : Loads the pickles of :func:`save_model` (trusted files only).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from anomseg.datasets import make_healthy_images
    >>> from anomseg.io import load_torch_model, save_torch_model
    >>> from anomseg.restoration import GMVAERestorer
    >>> X = make_healthy_images(n_images=12, shape=(32, 32), random_state=0)
    >>> est = GMVAERestorer(width=4, n_clusters=3, n_epochs=2,
    ...                     n_restoration_steps=5, tv_weight=1.0,
    ...                     device="cpu", random_state=0).fit(X)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = save_torch_model(est, pathlib.Path(tmp) / "gmvae.pt")
    ...     loaded = load_torch_model(path, device="cpu")
    >>> loaded.threshold_ == est.threshold_, loaded.device_
    (True, 'cpu')
    """
    import torch

    from ..utils._param_validation import StrOptions, validate_parameter_constraints

    validate_parameter_constraints(
        {"device": [None, StrOptions({"auto", "cpu", "cuda"})]},
        {"device": device},
        caller_name="load_torch_model",
    )
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No model file at '{path}'.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types on foreign files
        # Not torch's message: it suggests weights_only=False, which runs code.
        raise ValueError(
            f"'{path}' is not a file written by save_torch_model: "
            f"torch.load(weights_only=True) refused it ({type(exc).__name__})."
        ) from exc
    cls = _check_payload(payload, path)
    version = payload["anomseg_version"]
    if version != __version__:
        warnings.warn(
            f"[load_torch_model] This model was saved by anomseg {version} and "
            f"is loaded by {__version__}; results may differ.",
            VersionMismatchWarning,
            stacklevel=2,
        )
    try:
        estimator = cls(**_decode(json.loads(payload["params"])))
        estimator._validate_params()
        attributes = _decode(json.loads(payload["attributes"]))
        for key, value in attributes.items():
            if not _is_fitted_attribute(key):
                raise ValueError(f"'{key}' is not a fitted attribute")
            setattr(estimator, key, value)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise ValueError(f"'{path}' does not hold a valid {cls.__name__}: {exc}") from None
    estimator.device_ = _target_device(device, getattr(estimator, "device_", "cpu"))
    try:  # the network is sized by n_channels_ and the parameters, set above
        estimator._install_module(estimator._build_module(), payload["state_dict"])
    except (TypeError, ValueError, KeyError, AttributeError, RuntimeError) as exc:
        raise ValueError(f"'{path}' does not hold a valid {cls.__name__}: {exc}") from None
    return estimator


def _check_payload(payload, path):
    """The estimator class of a loaded file, after checking its layout."""
    import torch

    if not (isinstance(payload, dict) and payload.get("format") == _FORMAT):
        raise ValueError(f"'{path}' is not a file written by save_torch_model.")
    if payload.get("format_version") != _FORMAT_VERSION:
        raise ValueError(
            f"'{path}' has format version {payload.get('format_version')!r}; "
            f"this anomseg reads version {_FORMAT_VERSION}. Load it with the "
            f"anomseg version that saved it ({payload.get('anomseg_version')})."
        )
    expected = {"anomseg_version", "estimator", "params", "attributes", "state_dict"}
    missing = expected - payload.keys()
    if missing:
        raise ValueError(f"'{path}' lacks {', '.join(sorted(missing))}.")
    state_dict = payload["state_dict"]
    if not (
        isinstance(payload["params"], str)
        and isinstance(payload["attributes"], str)
        and isinstance(state_dict, dict)
        and all(isinstance(t, torch.Tensor) for t in state_dict.values())
    ):
        raise ValueError(f"'{path}' is not a file written by save_torch_model.")
    allowed = _torch_estimators()
    name = payload["estimator"]
    if not isinstance(name, str) or name not in allowed:
        raise ValueError(
            f"'{path}' holds a {name!r}; load_torch_model only builds {', '.join(allowed)}."
        )
    return allowed[name]


def _target_device(device, saved):
    import torch

    from .._torch import resolve_device

    if device is None and saved == "cuda" and not torch.cuda.is_available():
        warnings.warn(
            "[load_torch_model] The model was trained on CUDA, which is not "
            "available here; it is loaded on the CPU.",
            AnomsegWarning,
            stacklevel=3,
        )
        return "cpu"
    return resolve_device(saved if device is None else device, "load_torch_model")
