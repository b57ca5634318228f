"""The open-alert book: one alert per (subject, type), kept in step with the cloud's word on it.

A rule says "raise" or "resolve" as often as it likes; the book turns that into the envelopes a
person sees: the first raise is an alert; a raise at a higher severity is an escalation (an
`alert` envelope with `detail.update = "escalated"` and `detail.supersedes`); any other raise of
an open alert that does not resolve itself is a repeat (`detail.update = "repeated"`: the
button pressed again, a second fall; counted and shown on the alert), while a condition rule
re-asserting its condition is not news; a resolve is an `event` envelope (`alert_resolved`).

The cloud owns an alert's life once it is raised and tells the gateway of every change on
`site/{site}/down/alert` (`follow`): an alert a person resolved or marked false is gone from the
book, so the next press, fall or leak is a new alert. While the cloud has said nothing (it has
not stored the alert yet, or runs without telling), a raise more than the rule's
`repeat_after_s` after the last one is a new alert, as before.

Ids are a pure function of the causing message (or timer): the same message processed again,
after a crash or by a broker's redelivery, yields the same envelope id, and the outbox and the
cloud store it once. A repeat has the id the same message would have as a new alert, so a
message that is a repeat on one pass and a new alert on another is still one alert.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from typing import Any

import orjson

from edge.rules.base import SEVERITY_RANK, Note, Signal, Target
from shouwang.ids import derived_id, id_time_ms
from shouwang.profiles import LIFE_SAFETY_TYPES
from shouwang.records import Alert

log = logging.getLogger(__name__)
CLOSED = frozenset({"resolved", "false_alarm"})
ACTIVE = frozenset({"open", "acknowledged", "dispatched"})
RECENT_CAUSES = 16  # causes remembered per alert, so a redelivered repeat is not counted twice


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
    opened_ms: int  # when it happened
    last_ms: int  # when the latest raise (first, repeat, escalation) happened
    auto_resolve: bool
    repeat_after_ms: int
    repeats: int = 0
    device: str = ""
    # The alert as first sent, so a re-processed cause re-sends exactly the same envelope.
    first: dict[str, Any] = field(default_factory=dict)
    cloud_state: str | None = None  # the cloud's word: open, acknowledged, dispatched
    cloud_version: int = 0
    recent: list[str] = field(default_factory=list)  # causes already folded in


@dataclass(frozen=True, slots=True)
class CloudWord:
    """One change the cloud made to an alert of this site (`site/{site}/down/alert`)."""

    id: str
    dedup_key: str
    state: str
    version: int
    type: str = ""
    subject: str = ""
    severity: str = ""
    device: str = ""
    ts: int = 0
    by: str | None = None  # the role that made the change, for the log


_ENTRY_FIELDS = frozenset(f.name for f in fields(Entry))
_WORD_FIELDS = {f.name: f.type for f in fields(CloudWord)}


def parse_news(payload: bytes) -> list[CloudWord] | None:
    """`{"v": 1, "alerts": [{"id", "dedup_key", "state", "version", ...}]}` → words; None
    when the message is not of that form (an item of the wrong form is skipped)."""
    try:
        data = orjson.loads(payload)
        items = data["alerts"] if isinstance(data, dict) and data.get("v") == 1 else None
    except (orjson.JSONDecodeError, KeyError):
        return None
    if not isinstance(items, list):
        return None
    words = []
    for item in items:
        if not isinstance(item, dict):
            continue
        known = {k: v for k, v in item.items() if k in _WORD_FIELDS}
        if not (
            isinstance(known.get("id"), str) and isinstance(known.get("dedup_key"), str)
            and isinstance(known.get("state"), str) and type(known.get("version")) is int
        ):
            continue
        for name in ("type", "subject", "severity", "device", "by"):
            if not isinstance(known.get(name, ""), str | None):
                known.pop(name)
        if type(known.get("ts", 0)) is not int:
            known.pop("ts")
        words.append(CloudWord(**known))
    return words


class AlertBook:
    def __init__(self, site: str) -> None:
        self.site = site
        self.open: dict[str, Entry] = {}
        self.dirty = False
        self.suppressed = 0  # raises folded into an open alert (repeats)
        self.closed_by_cloud = 0  # alerts a person closed, so the next occurrence is new
        self.latest: dict[str, str] = {}  # dedup key → the newest alert id, open or not

    def apply(
        self, signal: Signal, *, auto_resolve: bool, repeat_after_s: float
    ) -> list[Alert | Notice]:
        key = signal.key
        entry = self.open.get(key)
        window = int(repeat_after_s * 1000)
        if (
            entry is not None
            and not auto_resolve
            and signal.cause != entry.source_id
            and self._new_occurrence(entry, signal, window)
        ):
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
                opened_ms=signal.happened,
                last_ms=signal.happened,
                auto_resolve=auto_resolve,
                repeat_after_ms=window,
                device=alert.device,
                first=_alert_dict(alert),
            )
            self.latest[key] = alert.id
            self.dirty = True
            return [alert]
        if signal.cause == entry.source_id:
            return [Alert(**entry.first)]  # the same cause again: the same envelope
        if signal.cause in entry.recent:
            return []  # a repeat already folded in (a redelivery): counted once
        entry.recent = [*entry.recent[-(RECENT_CAUSES - 1):], signal.cause]
        entry.last_ms = max(entry.last_ms, signal.happened)
        self.dirty = True
        if SEVERITY_RANK[signal.severity] > SEVERITY_RANK[entry.severity]:
            alert = self._alert(signal, update="escalated", first=entry)
            log.info("alert %s escalated %s -> %s", entry.alert_id, entry.severity, alert.severity)
            entry.severity = alert.severity
            return [alert]
        entry.repeats += 1
        self.suppressed += 1
        if auto_resolve:
            return []  # a condition still holding (a rule re-asserting it), not a new occurrence
        log.info("alert %s repeated (%d)", entry.alert_id, entry.repeats)
        return [self._alert(signal, update="repeated", first=entry)]

    def _new_occurrence(self, entry: Entry, signal: Signal, window: int) -> bool:
        """Whether a raise of a non-self-resolving alert starts a new one."""
        if window == 0:
            return True  # every occurrence is its own alert
        if entry.cloud_state in ACTIVE:
            # A person has this case, or escalation is still calling for one: a new press
            # goes to them as a repeat, however long after the last.
            return False
        # Without the cloud's word: a new occurrence long after the last (an SOS next week).
        return signal.happened - entry.last_ms > window

    def follow(self, word: CloudWord, *, adopt: bool) -> str | None:
        """Take the cloud's word on an alert; what changed (for the log), or None.

        A closed alert leaves the book. An active alert the book does not hold (the cloud made
        a repeat of a closed alert into a new one, or this gateway lost its state) is taken in
        when `adopt`, so the next press folds into the case people are working on.
        """
        entry = self.open.get(word.dedup_key)
        if entry is None or entry.alert_id != word.id:
            if word.state in CLOSED or not adopt:
                return None
            if entry is not None and _time_of(entry.alert_id) > _time_of(word.id):
                return None  # the book holds a newer alert for this key: keep it
            self.open[word.dedup_key] = Entry(
                alert_id=word.id, type=word.type, subject=word.subject,
                severity=word.severity if word.severity in SEVERITY_RANK else "info",
                source_id="", opened_ms=word.ts, last_ms=word.ts, auto_resolve=False,
                repeat_after_ms=0, device=word.device, cloud_state=word.state,
                cloud_version=word.version,
            )
            self.dirty = True
            return "adopted"
        if word.version <= entry.cloud_version:
            return None  # old news (a replay)
        self.dirty = True
        if word.state in CLOSED:
            del self.open[word.dedup_key]
            self.closed_by_cloud += 1
            return word.state
        entry.cloud_state, entry.cloud_version = word.state, word.version
        if SEVERITY_RANK.get(word.severity, -1) > SEVERITY_RANK[entry.severity]:
            entry.severity = word.severity
        return word.state

    def alert_for(self, key: str) -> str | None:
        """The alert evidence of `key` (`{subject}|{type}`) belongs to: the open one, else the
        newest (a clip finished after its tamper cleared)."""
        entry = self.open.get(key)
        return entry.alert_id if entry is not None else self.latest.get(key)

    def forget(self, alert_id: str) -> bool:
        """The cloud refused this alert for good: nothing there to fold repeats into."""
        for key, entry in list(self.open.items()):
            if entry.alert_id == alert_id:
                del self.open[key]
                self.dirty = True
                return True
        return False

    def versions(self) -> list[list[Any]]:
        """[alert id, version known] per alert held: what the gateway asks the cloud about."""
        return [[e.alert_id, e.cloud_version] for e in self.open.values()]

    def note(self, note: Note) -> Notice:
        body = {"type": note.type, **_who(note.target), **note.detail}
        nid = derived_id(note.happened, self.site, note.target.device, note.cause, note.type)
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
                last_ms=first.last_ms,
            )
        return Alert(
            id=derived_id(s.happened, *cause_parts),
            site=self.site,
            type=s.alert,
            severity=s.severity,
            device=s.target.device,
            subject=subject,
            dedup_key=s.key,
            ts=s.happened,
            source_id=s.cause,
            life_safety=s.alert in LIFE_SAFETY_TYPES,
            resident=s.target.resident.id if s.target.resident else None,
            location=s.target.location,
            detail=detail,
            raised_ms=s.ts,
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
        # An alert resolves once: its resolution's id comes from the alert's own.
        nid = derived_id(_time_of(entry.alert_id), self.site, entry.alert_id, "resolved")
        return Notice(nid, entry.device or s.target.device, s.ts, body)

    # --- persistence -----------------------------------------------------------------------

    def dump(self) -> list[Entry]:
        # orjson writes dataclasses itself; `asdict` deep-copied every open alert on the event
        # loop, 50 ms with 400 open alerts, ahead of the SOS that had just changed the book.
        return list(self.open.values())

    def load(self, rows: list[dict[str, Any]]) -> None:
        self.open = {}
        for row in rows:
            entry = Entry(**{k: v for k, v in row.items() if k in _ENTRY_FIELDS})
            self.open[f"{entry.subject}|{entry.type}"] = entry


def _who(t: Target) -> dict[str, Any]:
    return {
        "device": t.device,
        "kind": t.kind,
        "resident": t.resident.id if t.resident else None,
        "tags": list(t.resident.tags) if t.resident else [],
        "location": t.location,
    }


def _time_of(alert_id: str) -> int:
    """The time inside a ULID-layout id; 0 for an id of another form (any sender's id)."""
    try:
        return id_time_ms(alert_id)
    except KeyError:
        return 0


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
        "raised_ms": a.raised_ms,
    }
