"""Figures of anomaly maps and masks (needs matplotlib)."""

from ._figures import most_anomalous_slice, plot_anomaly_overview

__all__ = ["most_anomalous_slice", "plot_anomaly_overview"]
