"""Robustness benchmarks: behaviour under interruption."""
