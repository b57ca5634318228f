"""Garbage-collector settings for the long-running daemons.

A worker holds a few hundred thousand objects from start-up (modules, SQLAlchemy, aiohttp) and
parses batches of thousands of dicts that live until their write commits. With CPython's
defaults a full collection walks the whole start-up heap again and again while a batch is alive:
parsing a telemetry message cost 4.9 µs a reading instead of 1.0 (parse_envelope over
`bench/cloud_ingest.py`'s payloads, with a batch alive).
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 20_000  # allocations between young collections (CPython: 700)


def settle() -> None:
    """Call once the daemon has started: what start-up allocated is never collected again
    (it lives as long as the process), and young objects are collected less often."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
