"""Learning-free baselines that every learned method is measured against."""

from ._flair import FlairThreshold

__all__ = ["FlairThreshold"]
