"""Shouwang (守望): what the edge gateway and the cloud aggregator share."""

__version__ = "0.1.0"
