"""The open-alert book: one alert per (subject, type), escalated or resolved by later envelopes.

A rule says "raise" or "resolve" as often as it likes; the book turns that into the envelopes a
person sees: the first raise is an alert, a raise at a higher severity is an escalation (a new
`alert` envelope with `detail.update = "escalated"` and `detail.supersedes`), a resolve is an
`event` envelope (`alert_resolved`). Ids are derived from the cause, so re-processing the same
message or timer yields the same envelope and the outbox and the cloud store it once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from edge.rules.base import SEVERITY_RANK, Note, Signal, Target
from shouwang.ids import derived_id
from shouwang.profiles import LIFE_SAFETY_TYPES
from shouwang.records import Alert

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Notice:
    """A site-level `event` envelope the rules send: a resolution, a cancelled fall."""

    id: str
    device: str
    ts: int
    body: dict[str, Any]


@dataclass(slots=True)
class Entry:
    alert_id: str
    type: str
    subject: str
    severity: str
    source_id: str
    opened_ms: int
    last_ms: int
    auto_resolve: bool
    repeat_after_ms: int
    repeats: int = 0
    device: str = ""
    # The alert as first sent, so a re-processed cause re-sends exactly the same envelope.
    first: dict[str, Any] = field(default_factory=dict)


class AlertBook:
    def __init__(self, site: str) -> None:
        self.site = site
        self.open: dict[str, Entry] = {}
        self.dirty = False
        self.suppressed = 0  # raises folded into an open alert

    def apply(
        self, signal: Signal, *, auto_resolve: bool, repeat_after_s: float
    ) -> list[Alert | Notice]:
        key = signal.key
        entry = self.open.get(key)
        if entry is not None and not entry.auto_resolve and signal.cause != entry.source_id:
            window = entry.repeat_after_ms
            if window == 0 or signal.ts - entry.last_ms > window:
                # A new occurrence long after the last (an SOS next week), or no debounce.
                del self.open[key]
                entry = None
        if signal.action == "resolve":
            if entry is None:
                return []
            del self.open[key]
            self.dirty = True
            log.info("alert %s resolved (%s)", entry.alert_id, signal.rule)
            return [self._resolved(entry, signal)]
        if entry is None:
            alert = self._alert(signal, update=None, first=None)
            self.open[key] = Entry(
                alert_id=alert.id,
                type=alert.type,
                subject=alert.subject,
                severity=alert.severity,
                source_id=signal.cause,
                opened_ms=signal.ts,
                last_ms=signal.ts,
                auto_resolve=auto_resolve,
                repeat_after_ms=int(repeat_after_s * 1000),
                device=alert.device,
                first=_alert_dict(alert),
            )
            self.dirty = True
            return [alert]
        if signal.cause == entry.source_id:
            return [Alert(**entry.first)]  # the same cause again: the same envelope
        entry.last_ms = max(entry.last_ms, signal.ts)
        self.dirty = True
        if SEVERITY_RANK[signal.severity] > SEVERITY_RANK[entry.severity]:
            alert = self._alert(signal, update="escalated", first=entry)
            log.info("alert %s escalated %s -> %s", entry.alert_id, entry.severity, alert.severity)
            entry.severity = alert.severity
            return [alert]
        entry.repeats += 1
        self.suppressed += 1
        return []

    def note(self, note: Note) -> Notice:
        body = {"type": note.type, **_who(note.target), **note.detail}
        nid = derived_id(note.ts, self.site, note.target.device, note.cause, note.type)
        return Notice(nid, note.target.device, note.ts, body)

    def _alert(self, s: Signal, *, update: str | None, first: Entry | None) -> Alert:
        subject = s.subject or s.target.subject
        cause_parts = (self.site, s.rule, s.key, s.cause, s.severity)
        detail: dict[str, Any] = {
            "who": _who(s.target),
            "what": s.summary or s.alert,
            "why": s.why,
            "evidence": s.evidence,
        }
        if first is not None:
            detail.update(
                update=update,
                supersedes=first.alert_id,
                alert_id=first.alert_id,
                previous_severity=first.severity,
                repeats=first.repeats,
            )
        return Alert(
            id=derived_id(s.ts, *cause_parts),
            site=self.site,
            type=s.alert,
            severity=s.severity,
            device=s.target.device,
            subject=subject,
            dedup_key=s.key,
            ts=s.ts,
            source_id=s.cause,
            life_safety=s.alert in LIFE_SAFETY_TYPES,
            resident=s.target.resident.id if s.target.resident else None,
            location=s.target.location,
            detail=detail,
        )

    def _resolved(self, entry: Entry, s: Signal) -> Notice:
        body = {
            "type": "alert_resolved",
            "alert_id": entry.alert_id,
            "alert_type": entry.type,
            "dedup_key": s.key,
            "subject": entry.subject,
            "opened_ms": entry.opened_ms,
            "repeats": entry.repeats,
            "why": s.why,
            "who": _who(s.target),
        }
        nid = derived_id(s.ts, self.site, entry.alert_id, "resolved")
        return Notice(nid, entry.device or s.target.device, s.ts, body)

    # --- persistence -----------------------------------------------------------------------

    def dump(self) -> list[Entry]:
        # orjson writes dataclasses itself; `asdict` deep-copied every open alert on the event
        # loop, 50 ms with 400 open alerts, ahead of the SOS that had just changed the book.
        return list(self.open.values())

    def load(self, rows: list[dict[str, Any]]) -> None:
        self.open = {}
        for row in rows:
            entry = Entry(**row)
            self.open[f"{entry.subject}|{entry.type}"] = entry


def _who(t: Target) -> dict[str, Any]:
    return {
        "device": t.device,
        "kind": t.kind,
        "resident": t.resident.id if t.resident else None,
        "tags": list(t.resident.tags) if t.resident else [],
        "location": t.location,
    }


def _alert_dict(a: Alert) -> dict[str, Any]:
    return {
        "id": a.id,
        "site": a.site,
        "type": a.type,
        "severity": a.severity,
        "device": a.device,
        "subject": a.subject,
        "dedup_key": a.dedup_key,
        "ts": a.ts,
        "source_id": a.source_id,
        "life_safety": a.life_safety,
        "resident": a.resident,
        "location": a.location,
        "detail": a.detail,
    }
