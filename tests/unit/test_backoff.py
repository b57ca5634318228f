"""The one back-off: doubling, capped, jittered within [d/2, d], reset by a success."""

from __future__ import annotations

import random

import pytest

from shouwang.backoff import Backoff


def test_waits_double_up_to_the_cap_each_jittered_within_half_of_it() -> None:
    b = Backoff(1.0, 8.0, rng=random.Random(1))
    waits = [b.next() for _ in range(6)]
    for wait, nominal in zip(waits, [1, 2, 4, 8, 8, 8], strict=True):
        assert nominal / 2 <= wait <= nominal
    b.reset()
    assert 0.5 <= b.next() <= 1.0


def test_many_waiting_for_the_same_thing_do_not_come_back_in_step() -> None:
    """A hundred gateways that lost the same broker at once: their third tries spread over
    seconds, not one instant."""
    third = []
    for seed in range(100):
        b = Backoff(1.0, 60.0, rng=random.Random(seed))
        third.append(sum(b.next() for _ in range(3)))
    assert max(third) - min(third) > 1.5
    assert len({round(t, 1) for t in third}) > 20  # spread over the range, not a few instants


@pytest.mark.parametrize(("first", "most", "factor"), [(0, 1, 2), (2, 1, 2), (1, 2, 0.5)])
def test_a_back_off_that_makes_no_sense_is_refused(first: float, most: float,
                                                   factor: float) -> None:
    with pytest.raises(ValueError, match="back-off needs"):
        Backoff(first, most, factor=factor)
