"""Per-recipient token buckets with bounded state, on the injected clock."""

from __future__ import annotations

from collections import OrderedDict

from cloud.notify.config import RateLimitConfig
from shouwang.clock import Clock


class RateLimiter:
    """`burst` sends back to back, then `per_hour` per hour, per recipient.

    At most `max_recipients` buckets are kept; the least recently used is forgotten first,
    which can only make the limiter more lenient for that recipient, never silence them.
    """

    def __init__(self, config: RateLimitConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self._rate = config.per_hour / 3600.0
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def allow(self, recipient: str) -> bool:
        """Take one token if there is one."""
        now = self.clock.monotonic()
        tokens, at = self._buckets.pop(recipient, (float(self.config.burst), now))
        tokens = min(float(self.config.burst), tokens + (now - at) * self._rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[recipient] = (tokens, now)
        while len(self._buckets) > self.config.max_recipients:
            self._buckets.popitem(last=False)
        return allowed

    def __len__(self) -> int:
        return len(self._buckets)
