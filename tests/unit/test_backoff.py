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


def test_the_nth_wait_is_computed_from_n_alone_the_same_as_the_nth_next() -> None:
    """A retry whose count lives in a database asks for the n-th wait: the same doubling and
    jitter as a loop that counts with next(), with no state to lose in a restart."""
    counted = Backoff(2.0, 300.0, rng=random.Random(5))
    asked = Backoff(2.0, 300.0, rng=random.Random(5))
    assert [counted.next() for _ in range(12)] == [asked.delay(n) for n in range(1, 13)]
    fresh = Backoff(2.0, 300.0)  # another process: the 6th wait is still the 6th
    assert all(32.0 <= fresh.delay(6) <= 64.0 for _ in range(200))
    assert [fresh.nominal(n) for n in (1, 2, 3, 8, 9, 10**6)] == [2, 4, 8, 256, 300, 300]


@pytest.mark.parametrize(("first", "most", "factor"),
                         [(1.0, 8.0, 2.0), (0.2, 5.0, 2.0), (3.0, 3.0, 2.0), (1.0, 60.0, 1.0),
                          (0.01, 1e6, 3.0)])
def test_every_wait_is_within_half_of_its_nominal_and_never_over_the_cap(
    first: float, most: float, factor: float
) -> None:
    b = Backoff(first, most, factor=factor, rng=random.Random(3))
    for n in [*range(1, 200), 10**9]:
        d = b.nominal(n)
        assert first <= d <= most
        assert d == min(most, first * factor ** min(n - 1, 100))
        wait = b.delay(n)
        assert d / 2 <= wait <= d <= most


def test_waits_from_the_nth_spread_many_waiting_for_the_same_thing() -> None:
    """A hundred notifications that failed on their 3rd attempt together: 4th tries spread."""
    waits = [Backoff(2.0, 300.0, rng=random.Random(seed)).delay(3) for seed in range(100)]
    assert all(4.0 <= w <= 8.0 for w in waits)
    assert max(waits) - min(waits) > 2.0
    assert len({round(w, 1) for w in waits}) > 20


def test_counting_from_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="from 1"):
        Backoff(1.0, 2.0).delay(0)
