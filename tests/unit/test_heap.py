"""The daemons' collector settings: start-up objects frozen, young collections rarer."""

from __future__ import annotations

import gc

from shouwang import heap


def test_settle_freezes_the_start_up_heap_and_raises_the_young_threshold() -> None:
    before = gc.get_threshold()
    try:
        heap.settle()
        assert gc.get_freeze_count() > 1000  # this test process's modules, at least
        assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, *before[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
