"""One back-off for every retry loop: exponential, capped, with jitter.

A gateway that lost its broker, a camera that stopped answering, an upload the cloud refused:
each waits, longer after each failure, and starts over after a success. The jitter matters
when many wait for the same thing: a hundred gateways that lost the same broker at the same
moment must not all knock again at the same moment. Each wait is drawn from [d/2, d] ("equal
jitter"), d doubling from `first_s` to `max_s`: never shorter than half the nominal delay (a
peer that is down is not hammered), never longer (recovery is not delayed).

Two ways to use it. A loop that lives as long as its retries keeps the count in the object:
`next()` after each failure, `reset()` after a success. A retry whose count is kept elsewhere
(the notification dispatcher stores the attempt number in the database, so a restart does not
start it over; a poller counts a device's failures in a row) asks `delay(n)`: the same waits
as the n-th `next()`, computed from n alone.
"""

from __future__ import annotations

import math
import random


class Backoff:
    def __init__(self, first_s: float, max_s: float, *, factor: float = 2.0,
                 rng: random.Random | None = None) -> None:
        if not (0 < first_s <= max_s < math.inf) or not (1 <= factor < math.inf):
            raise ValueError(f"back-off needs 0 < first_s <= max_s and factor >= 1, got "
                             f"first_s={first_s}, max_s={max_s}, factor={factor}")
        self.first_s, self.max_s, self.factor = first_s, max_s, factor
        # Doublings after which d is at the cap; bounds the power, so n may be any size.
        ratio = math.log(max_s / first_s, factor) if factor > 1 else 0.0
        self._steps_to_cap = math.ceil(ratio) + 1
        self.failures = 0  # failures since the last reset(), counted by next()
        self._rng = rng or random.Random()

    def nominal(self, n: int) -> float:
        """d for the wait after the n-th failure in a row (n >= 1): `first_s`, doubling, capped."""
        if n < 1:
            raise ValueError(f"back-off counts failures from 1, got {n}")
        return min(self.max_s, self.first_s * self.factor ** min(n - 1, self._steps_to_cap))

    def delay(self, n: int) -> float:
        """The wait after the n-th failure in a row, drawn from [d/2, d]; keeps no state."""
        d = self.nominal(n)
        return self._rng.uniform(d / 2, d)

    def next(self) -> float:
        """The wait before the next try; the one after will be longer (up to `max_s`)."""
        self.failures += 1
        return self.delay(self.failures)

    def reset(self) -> None:
        """It worked: the next failure waits `first_s` again."""
        self.failures = 0
