"""Ensembles: several estimators trained on the same healthy data, their
maps combined on one calibrated scale (each member's healthy tail
probabilities), with a threshold calibrated on held-out healthy data like
any estimator's.

* :class:`AnomalyEnsemble` combines any anomseg estimators (mixed methods).
* :func:`make_seed_ensemble` builds one of a single estimator trained from
  several seeds.
* :func:`make_recommended_ensemble` builds the recommended default for FLAIR
  (``anomseg fit --method recommended``).
"""

from ._ensemble import AnomalyEnsemble, make_recommended_ensemble, make_seed_ensemble

__all__ = ["AnomalyEnsemble", "make_recommended_ensemble", "make_seed_ensemble"]
