"""An injectable clock, so rule and liveness logic can run a simulated day in milliseconds."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int:
        """Wall time, UTC epoch milliseconds: for timestamps people and other hosts read."""
        ...

    def monotonic(self) -> float:
        """Seconds that never go backwards: for durations and deadlines."""
        ...


class SystemClock:
    """The real clock."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that moves only when a test says so.

    `advance` moves both readings, like real time passing; `set` moves only the wall clock, like
    NTP correcting a gateway that booted without a real-time clock.
    """

    def __init__(self, now_ms: int = 1_767_225_600_000, monotonic_ms: int = 0) -> None:
        # Integer milliseconds inside, so a day of steps adds up exactly.
        self._wall_ms = now_ms
        self._mono_ms = monotonic_ms
        self._watchers: list[asyncio.Event] = []

    def wake_on_change(self, event: asyncio.Event) -> None:
        """Set `event` whenever this clock moves: timers due on it fire without a poke."""
        self._watchers.append(event)

    def _moved(self) -> None:
        for event in self._watchers:
            event.set()

    def now_ms(self) -> int:
        return self._wall_ms

    def monotonic(self) -> float:
        return self._mono_ms / 1000

    def advance(self, ms: int) -> None:
        if ms < 0:
            raise ValueError(f"cannot advance by {ms} ms: time does not go backwards")
        self._wall_ms += ms
        self._mono_ms += ms
        self._moved()

    def set(self, ms: int) -> None:
        self._wall_ms = ms
        self._moved()
