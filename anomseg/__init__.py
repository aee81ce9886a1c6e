"""anomseg: unsupervised anomaly segmentation for brain MRI.

Estimators learn from healthy scans only and return pixel-wise anomaly maps
(``score_samples``) and binary masks (``predict``) whose threshold was
calibrated on healthy data. Subpackages follow the domain:

* :mod:`anomseg.baselines`: learning-free baselines (:class:`FlairThreshold`);
* :mod:`anomseg.preprocessing` and :mod:`anomseg.postprocessing`;
* :mod:`anomseg.metrics`: AUROC, AUPRC, Dice, calibrated and oracle;
* :mod:`anomseg.io`: NIfTI in and out;
* :mod:`anomseg.datasets`: loaders, embedded data, synthetic lesions.

``import anomseg`` does not import torch.
"""

from ._version import __version__

__all__ = ["__version__"]
