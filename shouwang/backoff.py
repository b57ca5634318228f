"""One back-off for every retry loop: exponential, capped, with jitter.

A gateway that lost its broker, a camera that stopped answering, an upload the cloud refused:
each waits, longer after each failure, and starts over after a success. The jitter matters
when many wait for the same thing: a hundred gateways that lost the same broker at the same
moment must not all knock again at the same moment. Each wait is drawn from [d/2, d] ("equal
jitter"), d doubling from `first_s` to `max_s`: never shorter than half the nominal delay (a
peer that is down is not hammered), never longer (recovery is not delayed).
"""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, first_s: float, max_s: float, *, factor: float = 2.0,
                 rng: random.Random | None = None) -> None:
        if first_s <= 0 or max_s < first_s or factor < 1:
            raise ValueError(f"back-off needs 0 < first_s <= max_s and factor >= 1, got "
                             f"first_s={first_s}, max_s={max_s}, factor={factor}")
        self.first_s, self.max_s, self.factor = first_s, max_s, factor
        self.nominal_s = first_s  # d: the next wait is drawn from [d/2, d]
        self._rng = rng or random.Random()

    def next(self) -> float:
        """The wait before the next try; the one after will be longer (up to `max_s`)."""
        d = self.nominal_s
        self.nominal_s = min(d * self.factor, self.max_s)
        return self._rng.uniform(d / 2, d)

    def reset(self) -> None:
        """It worked: the next failure waits `first_s` again."""
        self.nominal_s = self.first_s
