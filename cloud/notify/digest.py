"""Digests: non-critical alerts collected per recipient and sent as one message per window."""

from __future__ import annotations

from dataclasses import dataclass, field

from cloud.notify.config import DigestConfig
from cloud.notify.message import AlertSummary, Message
from shouwang.clock import Clock


@dataclass
class Pending:
    recipient: str
    opened: float  # monotonic second of the first alert
    alerts: list[AlertSummary] = field(default_factory=list)


class Digests:
    """Bounded: `max_pending` alerts per recipient, `max_recipients` open digests.

    A full digest, or the oldest one when too many recipients have one open, is handed back
    to be sent early rather than dropped: nothing collected is lost.
    """

    def __init__(self, config: DigestConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self._open: dict[str, Pending] = {}  # insertion order = opening order

    def add(self, recipient: str, alert: AlertSummary) -> list[Pending]:
        """Collect `alert`; returns digests that must go out now to stay within the bounds."""
        due: list[Pending] = []
        pending = self._open.get(recipient)
        if pending is None:
            if len(self._open) >= self.config.max_recipients:
                oldest = next(iter(self._open))
                due.append(self._open.pop(oldest))
            pending = self._open[recipient] = Pending(recipient, self.clock.monotonic())
        if all(a.id != alert.id for a in pending.alerts):
            pending.alerts.append(alert)
        if len(pending.alerts) >= self.config.max_pending:
            due.append(self._open.pop(recipient))
        return due

    def due(self) -> list[Pending]:
        """Digests whose window has passed, removed from the open set."""
        now = self.clock.monotonic()
        ready = [p for p in self._open.values() if now - p.opened >= self.config.window_s]
        for p in ready:
            del self._open[p.recipient]
        return ready

    def drain(self) -> list[Pending]:
        """Everything still open (at shutdown)."""
        ready = list(self._open.values())
        self._open.clear()
        return ready

    def next_due(self) -> float | None:
        if not self._open:
            return None
        return min(p.opened for p in self._open.values()) + self.config.window_s

    def __len__(self) -> int:
        return len(self._open)

    def message(self, pending: Pending, public_url: str) -> Message:
        alerts = pending.alerts
        listed = alerts[: self.config.max_listed]
        more = len(alerts) - len(listed)
        minutes = max(1, round(self.config.window_s / 60))
        lines = [a.line() for a in listed]
        if more:
            lines.append(f"… and {more} more")
        return Message(
            title=f"Shouwang: {len(alerts)} alert{'s' if len(alerts) != 1 else ''} "
            f"in the last {minutes} min",
            body="\n".join(lines),
            url=f"{public_url.rstrip('/')}/",
            critical=False,
            alerts=tuple(listed),
            digest=True,
            more=more,
        )
