"""Choosing hyper-parameters with scikit-learn's model selection.

:func:`healthy_change_scorer` lets
:class:`~sklearn.model_selection.GridSearchCV` choose the TV weight of the
restorers of :mod:`anomseg.restoration` on healthy images only, with no
lesion masks. Scorers that need ground-truth masks are in
:func:`anomseg.metrics.get_scorer`. Importing this subpackage does not
import torch.
"""

from ._scorers import healthy_change_scorer

__all__ = ["healthy_change_scorer"]
