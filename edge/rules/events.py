"""Alerts raised by a device event: SOS debounce, a fall's cancel window, alarm and clear events."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import Field, model_validator

from edge.rules.base import DeviceState, Note, Output, Rule, RuleParams, Target, register
from shouwang.profiles import Severity
from shouwang.records import Event


class EventAlertParams(RuleParams):
    event: str = Field(description="Device event that raises the alert")
    cancel_event: str | None = Field(
        None, description="Event that cancels it within cancel_window_s (e.g. fall_cancelled)"
    )
    cancel_window_s: float = Field(
        0,
        ge=0,
        le=120,
        description="Wait this long for cancel_event before alerting; cancelled in time, the "
        "event is recorded, not alerted (0: alert at once)",
    )
    clear_event: str | None = Field(
        None, description="Event that resolves the alert (e.g. alarm_cleared)"
    )
    min_clear_s: float = Field(
        0,
        ge=0,
        description="After clear_event, the alert resolves only if the event does not recur "
        "within this long (a flapping alarm stays one alert)",
    )
    severity_field: str | None = Field(
        None, description="Event data field that picks the severity through severity_map"
    )
    severity_map: dict[str, Severity] = Field(
        default_factory=dict, description="Value of severity_field → severity"
    )

    @model_validator(mode="after")
    def _pairs(self) -> EventAlertParams:
        if self.cancel_window_s and not self.cancel_event:
            raise ValueError("cancel_window_s needs cancel_event")
        if bool(self.severity_field) != bool(self.severity_map):
            raise ValueError("severity_field and severity_map go together")
        return self


@dataclass(slots=True)
class _Pending:
    deadline: int
    event_id: str
    ts: int  # when the gateway saw it (the cancel window counts from here)
    data: dict[str, Any]
    event_ts: int = 0  # the event's own time: when it happened, part of the alert's id


@register
class EventAlert(Rule):
    """An event raises an alert, after a cancel window if it has one."""

    type_key = "event_alert"
    Params = EventAlertParams
    summary = "A device event raises the alert (cancel window, clear event, severity by data)"
    params: EventAlertParams

    def __init__(
        self, params: RuleParams, targets: list[Target], states: Mapping[str, DeviceState]
    ) -> None:
        super().__init__(params, targets, states)
        assert isinstance(params, EventAlertParams)
        names = {params.event, params.cancel_event, params.clear_event}
        self.events = frozenset(n for n in names if n)
        self.auto_resolve = params.clear_event is not None
        self.pending: dict[str, _Pending] = {}
        self.clearing: dict[str, int] = {}  # device → when clear_event came

    def on_event(self, target: Target, event: Event, now: int) -> Output:
        p = self.params
        if event.name == p.event:
            self.clearing.pop(target.device, None)
            if p.cancel_window_s > 0:
                if target.device not in self.pending:
                    deadline = now + int(p.cancel_window_s * 1000)
                    self.pending[target.device] = _Pending(
                        deadline, event.id, now, event.data, event.ts
                    )
                return []
            return [self._raise(target, event.id, now, event.data, event.ts)]
        if event.name == p.cancel_event:
            pending = self.pending.pop(target.device, None)
            if pending is None:
                # Too late (or nothing to cancel): the alert stands, a person should check.
                return [Note(f"{p.event}_cancel_late", target, now, event.id, {"rule": self.id})]
            after_s = (now - pending.ts) / 1000
            detail = {
                "rule": self.id,
                "event": p.event,
                "event_id": pending.event_id,
                "cancelled_after_s": after_s,
                "cancel_window_s": p.cancel_window_s,
            }
            return [Note(f"{p.event}_cancelled", target, now, event.id, detail)]
        if event.name == p.clear_event:
            if p.min_clear_s <= 0:
                return [self._resolve(target, event.id, now)]
            self.clearing.setdefault(target.device, now)
        return []

    def tick(self, now: int) -> Output:
        out: Output = []
        for device, pending in list(self.pending.items()):
            if now >= pending.deadline:
                del self.pending[device]
                out.append(
                    self._raise(
                        self.targets[device], pending.event_id, now, pending.data,
                        pending.event_ts or pending.ts,
                    )
                )
        for device, since in list(self.clearing.items()):
            if now - since >= self.params.min_clear_s * 1000:
                del self.clearing[device]
                out.append(self._resolve(self.targets[device], f"timer:{since}", now, since))
        return out

    def next_deadline(self) -> int | None:
        due = [p.deadline for p in self.pending.values()]
        due += [s + int(self.params.min_clear_s * 1000) for s in self.clearing.values()]
        return min(due, default=None)

    def _raise(
        self, target: Target, cause: str, now: int, data: Mapping[str, Any], at: int
    ) -> Any:
        p = self.params
        severity = p.severity
        if p.severity_field is not None:
            severity = p.severity_map.get(str(data.get(p.severity_field)), p.severity)
        why: dict[str, Any] = {"event": p.event, "data": dict(data)}
        if p.cancel_window_s:
            why["cancel_window_s"] = p.cancel_window_s
        return self.signal(
            "raise",
            target,
            now,
            cause,
            severity=severity,
            summary=f"{target.kind} reported {p.event}",
            why=why,
            evidence=[cause],
            at=at,
        )

    def _resolve(self, target: Target, cause: str, now: int, at: int | None = None) -> Any:
        return self.signal(
            "resolve", target, now, cause, why={"event": self.params.clear_event}, at=at
        )

    def dump_state(self) -> Any:
        # A fall waiting out its window must survive a restart, or it would never alert.
        return {
            d: [p.deadline, p.event_id, p.ts, p.data, p.event_ts] for d, p in self.pending.items()
        }

    def load_state(self, data: Any) -> None:
        for device, saved in dict(data or {}).items():
            if device in self.targets:
                self.pending[device] = _Pending(*saved)
