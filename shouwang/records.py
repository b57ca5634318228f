"""The canonical records every adapter converts into: Reading, Event, Alert."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Reading:
    """Validated telemetry from one device at one instant."""

    id: str
    device: str
    ts: int
    values: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Event:
    """Something a device reported happening (a press, a fall, a removal)."""

    id: str
    device: str
    ts: int
    name: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Alert:
    """Something a person must act on. `id` is derived from its cause, so it is idempotent.

    `ts` is when it happened (the causing message's time, or when a timed condition began);
    `raised_ms` when the rules raised it (a fall after its cancel window, a threshold after its
    minimum duration). An update of an alert already raised (escalated, repeated) names it in
    `detail.supersedes`.
    """

    id: str
    site: str
    type: str
    severity: str
    device: str
    subject: str
    dedup_key: str
    ts: int
    source_id: str
    life_safety: bool
    resident: str | None = None
    location: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    raised_ms: int | None = None

    def body(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "severity": self.severity,
            "subject": self.subject,
            "dedup_key": self.dedup_key,
            "source_id": self.source_id,
            "life_safety": self.life_safety,
            "resident": self.resident,
            "location": self.location,
            "detail": self.detail,
            "raised_ms": self.raised_ms,
        }
