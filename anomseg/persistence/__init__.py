"""Model files: saving a fitted model, and loading it back safely.

:func:`save_model` writes an estimator, an ensemble or an
:class:`~anomseg.preprocessing.AnomalyPipeline` (what their ``save``
methods do), :func:`load_model` reads it back, and :func:`model_info` says
what a file holds without building its networks or running any code from
it. The three are importable from :mod:`anomseg` itself.

Two formats (see :ref:`persistence`):

* **safe** (the default): plain data and CPU tensors, read with
  ``torch.load(..., weights_only=True)``, checked against a SHA-256
  checksum, and rebuilt only from an allow-list of anomseg classes, every
  parameter, fitted attribute and weight checked against what its class
  declares. Files that older anomseg versions wrote are brought to today's
  form as they load.
* **pickle**: joblib's pickle of any object, loaded only with
  ``allow_pickle=True``, since it runs whatever code it names.
"""

from ._models import load_model, model_info, save_model

__all__ = ["load_model", "model_info", "save_model"]
