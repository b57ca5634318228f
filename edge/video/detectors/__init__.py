"""Detectors by registry: each module here may define plugins; `registry.discover` loads them."""
