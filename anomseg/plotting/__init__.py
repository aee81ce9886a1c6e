"""Figures of anomaly maps and masks (needs matplotlib), and a cohort's report."""

from ._figures import (
    lesion_point,
    most_anomalous_slice,
    plot_anomaly_overview,
    plot_orthogonal_views,
    plot_overlay,
    plot_scan_figure,
)
from ._report import write_cohort_report

__all__ = [
    "lesion_point",
    "most_anomalous_slice",
    "plot_anomaly_overview",
    "plot_orthogonal_views",
    "plot_overlay",
    "plot_scan_figure",
    "write_cohort_report",
]
