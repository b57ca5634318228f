"""A condition that must hold for a while before it counts, and stay gone a while to clear."""

from __future__ import annotations

from typing import Literal

Change = Literal["raise", "clear"]


class Debounce:
    """Raised once after `raise_after_ms` of the condition, cleared once after `clear_after_ms`
    without it, on the stream's timestamps.

    A frame whose condition cannot be judged (None: say, sharpness while the lens is covered)
    changes nothing: it neither extends nor breaks a run.
    """

    def __init__(self, raise_after_ms: int, clear_after_ms: int) -> None:
        self.raise_after_ms = raise_after_ms
        self.clear_after_ms = clear_after_ms
        self.active = False
        self.since_ms: int | None = None  # first frame of the current run against `active`

    def update(self, condition: bool | None, t_ms: int) -> Change | None:
        if condition is None:
            return None
        if condition == self.active:
            self.since_ms = None
            return None
        if self.since_ms is None:
            self.since_ms = t_ms
        wait = self.clear_after_ms if self.active else self.raise_after_ms
        if t_ms - self.since_ms < wait:
            return None
        self.active = not self.active
        self.since_ms = None
        return "raise" if self.active else "clear"

    @property
    def pending(self) -> bool:
        """A run toward a change is under way."""
        return self.since_ms is not None
