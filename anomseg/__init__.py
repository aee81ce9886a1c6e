"""anomseg: unsupervised anomaly segmentation for brain MRI.

Estimators learn from healthy scans only and return pixel-wise anomaly maps
(``score_samples``) and binary masks (``predict``) whose threshold was
calibrated on healthy data. Subpackages follow the domain:

* :mod:`anomseg.baselines`: learning-free baselines (:class:`FlairThreshold`);
* :mod:`anomseg.preprocessing` and :mod:`anomseg.postprocessing`;
* :mod:`anomseg.metrics`: AUROC, AUPRC, Dice, calibrated and oracle;
* :mod:`anomseg.io`: NIfTI in and out;
* :mod:`anomseg.datasets`: loaders, embedded data, synthetic lesions.

What a user calls daily is here too: :func:`load_model`,
:func:`save_model` and :func:`model_info` (from :mod:`anomseg.persistence`).

``import anomseg`` does not import torch, nor scikit-learn: those names are
imported when first used.
"""

from ._version import __version__

__all__ = ["__version__", "load_model", "model_info", "save_model"]

#: The names of ``__all__`` imported on first use (PEP 562), by module.
_LAZY = {"load_model": "persistence", "model_info": "persistence", "save_model": "persistence"}


def __getattr__(name):
    if name in _LAZY:
        # By name, on first use: the persistence layer sits above this
        # namespace (tools/import_graph.py), and import anomseg stays light.
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # once
        return value
    raise AttributeError(f"module 'anomseg' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *__all__})
