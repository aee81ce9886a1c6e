"""Saving and loading whole models: an estimator, an ensemble or a pipeline,
as a record of plain data and its network weights in one of the two file
formats of :mod:`._format`.

The classes are known only by the allow-list of :mod:`._registry` and by
the hooks they define, so that the estimator contract (:mod:`anomseg.base`)
sits above this module and its ``save`` and ``load`` call down into it:

* ``_export_state()`` returns ``(params, attributes, weights)``, and
  ``_import_state(params, attributes, weights, device)`` rebuilds the
  object (the default, for transformers and pipelines, is
  :func:`._state.plain_state` and :func:`._state.plain_import`);
* ``_upgrade_params(params)`` brings the parameters of an older anomseg to
  today's form, ``_check_loaded()`` checks what only the whole model can
  (an ensemble's members);
* ``_check_params_unchanged(where)`` refuses to save a model whose
  parameters changed since it was fitted or calibrated.
"""

from __future__ import annotations

import json
import warnings

from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from .._docstrings import fill_doc
from .._version import __version__
from ..exceptions import VersionMismatchWarning
from ..utils._param_validation import StrOptions, validate_parameter_constraints, validate_params
from ..utils._text import printable
from ._format import (
    check_file,
    decode,
    encode,
    file_kind,
    read_pickle,
    read_safe,
    write_pickle,
    write_safe,
)
from ._registry import safe_classes
from ._state import plain_import, plain_state

__all__ = ["calibration_record", "load_instance", "load_model", "model_info", "save_model"]


def _to_record(model, classes):
    """The plain-data record of a fitted estimator, transformer or pipeline
    (tagged by :func:`encode`), and its weights."""
    name = type(model).__name__
    if classes.get(name) is not type(model):
        raise TypeError(
            f"The safe format holds the estimators, transformers and pipelines "
            f"of anomseg ({', '.join(classes)}); save a {name} with format='pickle'."
        )

    def encoded(mapping, kind):
        return {k: encode(v, f"{kind} '{k}' of {name}", classes) for k, v in mapping.items()}

    if isinstance(model, Pipeline):
        steps, weights = [], {}
        for step_name, step in model.steps:
            record, step_weights = _to_record(step, classes)
            steps.append([step_name, record])
            weights.update({f"{step_name}/{k}": v for k, v in step_weights.items()})
        params, attributes, _ = plain_state(model)
        del params["steps"]
    else:
        export = getattr(model, "_export_state", None)
        params, attributes, weights = export() if export else plain_state(model)
    fitted = {}
    for key, value in list(attributes.items()):
        if _is_fitted_list(value, classes):  # such as an ensemble's estimators_
            fitted[key] = []
            for k, member in enumerate(attributes.pop(key)):
                member_record, member_weights = _to_record(member, classes)
                fitted[key].append(member_record)
                weights.update({f"{key}/{k}/{w}": v for w, v in member_weights.items()})
    record = {
        "estimator": name,
        "params": encoded(params, "parameter"),
        "attributes": encoded(attributes, "attribute"),
    }
    if isinstance(model, Pipeline):
        record["steps"] = steps
    if fitted:
        record["fitted"] = fitted
    return record, weights


def _is_fitted_list(value, classes):
    """Whether a fitted attribute is a list of allow-listed models (an
    ensemble's estimators), which the safe format holds as records of their
    own."""
    return (
        isinstance(value, list)
        and len(value) > 0
        and all(classes.get(type(v).__name__) is type(v) for v in value)
    )


def _from_record(record, weights, classes, device, build=True):
    """The inverse of :func:`_to_record`: the model, rebuilt from the
    allow-listed ``classes`` only, every parameter and fitted attribute
    checked; without ``build``, the networks are neither checked nor built
    (for :func:`model_info`)."""
    name = record["estimator"]
    if not isinstance(name, str) or name not in classes:
        raise ValueError(
            f"it names {printable(repr(name))}; the safe format rebuilds only {', '.join(classes)}"
        )
    cls = classes[name]
    params = decode(record["params"], classes)
    if issubclass(cls, Pipeline) != ("steps" in record):
        raise ValueError(f"its {name} is malformed")
    attributes = decode(record["attributes"], classes)
    if "steps" in record:
        steps = []
        for step_name, step in record["steps"]:
            prefix = f"{step_name}/"
            own = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
            steps.append((step_name, _from_record(step, own, classes, device, build)))
        return plain_import(cls, {"steps": steps, **params}, attributes)
    importer = getattr(cls, "_import_state", None) if build else None
    if importer is not None:
        model = importer(params, attributes, weights, device)
    else:
        upgrade = getattr(cls, "_upgrade_params", None)
        model = plain_import(cls, upgrade(params) if upgrade else params, attributes)
    for key, records in record.get("fitted", {}).items():
        if not (key in cls._fitted_attribute_constraints and isinstance(records, list)):
            raise ValueError(f"its {name} holds a malformed {printable(repr(key))}")
        members = []
        for k, member in enumerate(records):
            prefix = f"{key}/{k}/"
            own = {w[len(prefix) :]: v for w, v in weights.items() if w.startswith(prefix)}
            members.append(_from_record(member, own, classes, device, build))
        setattr(model, key, members)
    check = getattr(model, "_check_loaded", None)
    if check is not None:
        check()
    return model


def _final(model):
    return model[-1] if isinstance(model, Pipeline) else model


def _estimators_in(model):
    """Every estimator of ``model`` that follows the estimator contract (it
    checks its parameters before saving): a pipeline's steps, an ensemble's
    members, the model itself."""
    if isinstance(model, Pipeline):
        for _, step in model.steps:
            yield from _estimators_in(step)
    elif hasattr(model, "_check_params_unchanged"):
        yield model
        for member in getattr(model, "estimators_", None) or ():
            yield from _estimators_in(member)


def calibration_record(model):
    """The calibration of a fitted model, from its own fitted values: its
    ``threshold``, ``max_fpr``, ``achieved_fpr`` and
    ``n_calibration_pixels``, as plain numbers (what ``anomseg calibrate``
    records in a model file's metadata, beside the scans it used)."""
    final = _final(model)
    return {
        "threshold": float(final.threshold_),
        "max_fpr": float(final.max_fpr),
        "achieved_fpr": float(final.calibration_fpr_),
        "n_calibration_pixels": int(final.n_calibration_pixels_),
    }


def _calibration_info(model):
    """What a user reads before trusting a model: its calibration and the
    healthy data behind it."""
    return {
        **calibration_record(model),
        "healthy_data": getattr(_final(model), "healthy_data_", None),
    }


@fill_doc
def save_model(model, path, *, format="safe", overwrite=False, metadata=None):
    """Save a fitted estimator or :class:`~anomseg.preprocessing.AnomalyPipeline`,
    atomically: what their ``save`` methods do.

    Parameters
    ----------
    model : BaseAnomalySegmenter or AnomalyPipeline
        A fitted, calibrated model.
    %(save_parameters)s

    Returns
    -------
    path : pathlib.Path
    """
    where = f"{type(model).__name__}.save"
    validate_parameter_constraints(
        {
            "format": [StrOptions({"safe", "pickle"})],
            "overwrite": ["boolean"],
            "metadata": [None, dict],
        },
        {"format": format, "overwrite": overwrite, "metadata": metadata},
        caller_name=where,
    )
    check_is_fitted(_final(model), "threshold_")
    for estimator in _estimators_in(model):
        estimator._check_params_unchanged(where)
    if format == "pickle":
        if metadata is not None:
            raise ValueError(f"'metadata' of {where} is for format='safe' only.")
        return write_pickle(model, path, overwrite=overwrite)
    classes = safe_classes()
    record, weights = _to_record(model, classes)
    info = {"calibration": _calibration_info(model), "metadata": metadata or {}}
    try:
        info_text = json.dumps(info, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"'metadata' of {where} must hold plain JSON data (dicts of str keys, "
            f"lists, strings, finite numbers, booleans and None): {exc}."
        ) from None
    return write_safe(path, json.dumps(record), info_text, weights, overwrite=overwrite)


@validate_params(
    {
        "device": [None, StrOptions({"auto", "cpu", "cuda"})],
        "allow_pickle": ["boolean"],
        "allow_unchecked": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def load_model(path, *, device=None, allow_pickle=False, allow_unchecked=False):
    """Load a model saved by ``save``: an anomseg estimator, or a pipeline.

    A safe file is read with ``torch.load(..., weights_only=True)``, which
    accepts plain data and tensors only; its checksum is checked, and the
    model is rebuilt from an allow-list of anomseg classes (the registered
    estimators, the preprocessing transformers and
    :class:`~anomseg.preprocessing.AnomalyPipeline`): loading runs no code
    from the file. A pickle runs whatever code it names, so it is loaded
    only with ``allow_pickle=True``.

    Nothing in a safe file is trusted, since whoever alters one can
    recompute its checksum: every parameter is checked against the
    class's ``_parameter_constraints``, every fitted attribute against its
    ``_fitted_attribute_constraints`` and the rules that tie them together
    (a finite ``threshold_``, the one calibrated for ``max_fpr``, within the
    healthy calibration values), and every weight's name, shape and dtype
    against the network that the parameters describe, built first on
    torch's ``meta`` device (no memory), before the network is built for
    real; weights must be finite.

    Safe files of format version 1, which anomseg 0.1 wrote, have no
    checksum, so a damaged or altered one cannot be told from a whole one:
    they load only with ``allow_unchecked=True``. To give such a file a
    checksum, load it so once, from a source you trust, and save it again::

        load_model("old.pt", allow_unchecked=True).save("model.anomseg")

    Parameters
    ----------
    path : str or path-like
        A file written by an estimator's or a pipeline's ``save``.
    device : {"auto", "cpu", "cuda"} or None, default=None
        For safe files of torch estimators: where to put the network;
        ``device_`` is set to it. None uses the device the model was trained
        on, or the CPU, with a warning, if that is CUDA and torch finds none.
        Pickles load on the device they were saved from (or the CPU).
    allow_pickle : bool, default=False
        Whether to load a pickle. Pass True only for files you trust.
    allow_unchecked : bool, default=False
        Whether to load a safe file of format version 1, which has no
        checksum. Pass True only for files you trust.

    Returns
    -------
    model : BaseAnomalySegmenter or AnomalyPipeline
        The fitted model, ready for ``score_samples`` and ``predict``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If ``path`` is a pickle and ``allow_pickle`` is False, is of format
        version 1 and ``allow_unchecked`` is False, is no model file of
        anomseg, does not match its checksum, comes from a newer format
        version, names a class off the allow-list, or holds parameters,
        attributes or weights that do not fit that class (or NaN or
        infinite weights); or if ``device="cuda"`` and torch finds no CUDA
        device.

    Warns
    -----
    VersionMismatchWarning
        If another anomseg version saved the model.
    AnomsegWarning
        If the model was trained on CUDA, which is not available here.

    See Also
    --------
    model_info : What a safe file holds, read without building the model.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from anomseg import load_model
    >>> from anomseg.datasets import make_healthy_images
    >>> from anomseg.restoration import GMVAERestorer
    >>> X = make_healthy_images(n_images=12, shape=(32, 32), random_state=0)
    >>> est = GMVAERestorer(width=4, n_clusters=3, n_epochs=2,
    ...                     n_restoration_steps=5, tv_weight=1.0,
    ...                     device="cpu", random_state=0).fit(X)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = est.save(pathlib.Path(tmp) / "gmvae.anomseg")
    ...     loaded = load_model(path, device="cpu")
    >>> bool((loaded.score_samples(X) == est.score_samples(X)).all())
    True
    """
    path = check_file(path)
    kind = file_kind(path)
    if kind != "safe":
        if not allow_pickle:
            if kind == "unknown":
                raise ValueError(
                    f"'{path}' is not an anomseg model file: it is neither a safe "
                    "file nor a pickle."
                )
            raise ValueError(
                f"'{path}' is a pickle, and loading a pickle runs any code it "
                "names; pass allow_pickle=True only for files you trust, and "
                "share models saved with format='safe'."
            )
        if device is not None:
            raise ValueError(
                f"'device' applies to safe files only; '{path}' is a pickle, which "
                "loads on the device it was saved from (or the CPU)."
            )
        model = read_pickle(path)
        if not (hasattr(_final(model), "score_samples") and hasattr(_final(model), "threshold_")):
            raise ValueError(
                f"'{path}' holds a {type(model).__name__}, not a fitted anomseg model."
            )
        return model
    content = read_safe(path)
    if content["format_version"] == 1 and not allow_unchecked:
        raise ValueError(
            f"'{path}' is a safe file of format version 1 (anomseg 0.1), which has no "
            "checksum, so a damaged or altered one cannot be told from a whole one; "
            "pass allow_unchecked=True only if you trust its source, and save it "
            "again to give it a checksum."
        )
    _warn_if_other_version(content["anomseg_version"])
    return _rebuilt(path, content, device)


def load_instance(cls, path, **kwargs):
    """:func:`load_model`, refused unless the model is a ``cls``: the
    ``load`` class method of the estimators and pipelines."""
    model = load_model(path, **kwargs)
    if not isinstance(model, cls):
        raise TypeError(f"'{path}' holds a {type(model).__name__}, not a {cls.__name__}.")
    return model


def _rebuilt(path, content, device, build=True):
    """The model of a safe file's ``content``, rebuilt and checked; any
    fault named with the file."""
    try:
        return _from_record(content["model"], content["state_dict"], safe_classes(), device, build)
    except (TypeError, ValueError, KeyError, AttributeError, RuntimeError, IndexError) as exc:
        name = content["model"].get("estimator") if isinstance(content["model"], dict) else None
        name = printable(name) if isinstance(name, str) else "model"
        raise ValueError(f"'{path}' does not hold a valid {name}: {exc}") from None


def _warn_if_other_version(version):
    if version != __version__:
        warnings.warn(
            f"[load_model] This model was saved by anomseg {printable(version)} and is "
            f"loaded by {__version__}; results may differ.",
            VersionMismatchWarning,
            stacklevel=3,
        )


def model_info(path):
    """What a safe model file holds, read and checked without building the
    model's networks or running any code from it: for a user to decide
    whether to trust it.

    Every figure comes from the model itself (its final estimator's
    parameters and fitted attributes), checked as :func:`load_model`
    checks them, so none can disagree with what the model computes. Files
    of format version 1 are read too (without ``allow_unchecked``: nothing
    is used), and say that they have no checksum.

    Parameters
    ----------
    path : str or path-like
        A safe file written by ``save``.

    Returns
    -------
    info : dict
        ``anomseg_version`` and ``format_version`` that wrote it;
        ``checksum``, the SHA-256 the file matched (None for format version
        1, which has none);
        ``estimator`` (the final estimator's class) and ``steps`` (the class
        of every step, the estimator last); ``params`` (the estimator's
        parameters); ``calibration`` (``threshold``, ``max_fpr``,
        ``achieved_fpr``, ``n_calibration_pixels`` and ``healthy_data``,
        the summary of the healthy images of :func:`describe_images`);
        ``metadata``, what its writer added (the command line records the
        modality, voxel sizes and number of the healthy scans); and, for an
        ensemble, ``members``: each member's ``name``, ``estimator``, the
        ``params`` that differ from its class's defaults and its own
        ``threshold``. Files of format version 1 carry no metadata, nor
        the summary of the healthy data.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If ``path`` is not a safe model file, does not match its checksum,
        or holds parameters or fitted attributes that do not fit their
        class.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from anomseg import model_info
    >>> from anomseg.baselines import FlairThreshold
    >>> from anomseg.datasets import make_healthy_images
    >>> X = make_healthy_images(n_images=8, shape=(32, 32), random_state=0)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = FlairThreshold(max_fpr=0.01).fit(X).save(pathlib.Path(tmp) / "m.anomseg")
    ...     info = model_info(path)
    >>> info["estimator"], info["calibration"]["max_fpr"]
    ('FlairThreshold', 0.01)
    >>> info["calibration"]["healthy_data"]["n_images"]  # all the healthy images
    8
    """
    path = check_file(path)
    if file_kind(path) != "safe":
        raise ValueError(
            f"'{path}' is not a safe model file; only those can be read without running code."
        )
    content = read_safe(path)
    model = _rebuilt(path, content, None, build=False)
    final = _final(model)
    check_is_fitted(final, "threshold_")
    metadata = content["info"].get("metadata", {})
    if not isinstance(metadata, dict):
        raise ValueError(f"'{path}' holds malformed metadata.")
    info = {
        "anomseg_version": content["anomseg_version"],
        "format_version": content["format_version"],
        "checksum": content.get("checksum"),
        "estimator": type(final).__name__,
        "steps": [type(step).__name__ for step in _steps(model)],
        "params": final.get_params(deep=False),
        "calibration": _calibration_info(model),
        "metadata": metadata,
    }
    if isinstance(getattr(final, "estimators_", None), list):
        info["members"] = _members_info(final)
    return info


def _steps(model):
    return [step for _, step in model.steps] if isinstance(model, Pipeline) else [model]


def _members_info(ensemble):
    """The members of an ensemble as ``model_info`` lists them: name,
    class, the parameters that differ from the class's defaults, and the
    member's own calibrated threshold."""
    out = []
    for (name, _), member in zip(ensemble.estimators, ensemble.estimators_):
        cls = type(member)
        params = member.get_params(deep=False)
        defaults = cls().get_params(deep=False) if cls.__name__ != "AnomalyEnsemble" else {}
        changed = {
            k: v for k, v in params.items() if k not in defaults or repr(defaults[k]) != repr(v)
        }
        out.append(
            {
                "name": name,
                "estimator": cls.__name__,
                "params": changed,
                "threshold": getattr(member, "threshold_", None),
            }
        )
    return out
