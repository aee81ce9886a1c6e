"""Pre-processing of brain MRI before anomaly segmentation.

* Foreground: :class:`BrainExtractor` masks everything but the brain of 3D
  scans that are not skull-stripped, with the deepbet network (optional
  dependency, ``pip install 'anomseg[brain]'``); :class:`ForegroundMasker`
  (and :func:`foreground_mask`) masks their background, keeping the head.
* Intensity, per sample and channel, inside the foreground:
  :class:`IntensityScaler`, :class:`HistogramMatcher`,
  :class:`HistogramEqualizer`.
* Geometry, with an exact inverse for anomaly maps:
  :class:`ForegroundCropper`, :class:`Resizer`, and :class:`Resampler` (to a
  voxel spacing, with each scan's own grid to map back to).
* :class:`AnomalyPipeline` (:func:`make_anomaly_pipeline`) chains them with
  an estimator and returns maps in the input's geometry.

Every transformer returns :class:`numpy.ma.MaskedArray` outputs whose mask
is the background, so the foreground travels through a pipeline.
"""

from ._brain import BrainExtractor
from ._foreground import ForegroundMasker, foreground_mask
from ._geometry import ForegroundCropper, Resizer
from ._intensity import HistogramEqualizer, HistogramMatcher, IntensityScaler
from ._pipeline import AnomalyPipeline, make_anomaly_pipeline
from ._resample import Resampler

__all__ = [
    "AnomalyPipeline",
    "BrainExtractor",
    "ForegroundCropper",
    "ForegroundMasker",
    "HistogramEqualizer",
    "HistogramMatcher",
    "IntensityScaler",
    "Resampler",
    "Resizer",
    "foreground_mask",
    "make_anomaly_pipeline",
]
