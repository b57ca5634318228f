"""The alert lifecycle: states, legal transitions, and the checks on an incoming alert body."""

from __future__ import annotations

from typing import Any

from shouwang.profiles import SEVERITIES

STATES = ("open", "acknowledged", "dispatched", "resolved", "false_alarm")
# Urgency: what needs a person first. Open before acknowledged before dispatched before
# closed; critical before high before ... (the board's order, `order=urgency`).
STATE_RANK = {"open": 0, "acknowledged": 1, "dispatched": 2, "resolved": 3, "false_alarm": 3}
SEVERITY_RANK = {s: n for n, s in enumerate(SEVERITIES)}
TRANSITIONS: dict[str, frozenset[str]] = {
    "open": frozenset({"acknowledged", "resolved", "false_alarm"}),
    "acknowledged": frozenset({"dispatched", "resolved", "false_alarm"}),
    "dispatched": frozenset({"resolved", "false_alarm"}),
    "resolved": frozenset(),
    "false_alarm": frozenset(),
}


class IllegalTransition(Exception):
    def __init__(self, alert_id: str, current: str, target: str) -> None:
        super().__init__(f"alert {alert_id} is {current}; it cannot become {target}")
        self.current = current
        self.target = target


class AlertNotFound(Exception):
    pass


def check_alert_body(body: dict[str, Any]) -> str | None:
    """None when the body of an `alert` envelope is well formed, else why not."""
    for key in ("type", "severity", "subject", "dedup_key"):
        if not isinstance(body.get(key), str) or not body[key]:
            return f"body.{key} must be a non-empty string"
    if body["severity"] not in SEVERITIES:
        return f"body.severity {body['severity']!r} is not one of {', '.join(SEVERITIES)}"
    for key in ("resident", "location"):
        if body.get(key) is not None and not isinstance(body[key], str):
            return f"body.{key} must be a string or null"
    if not isinstance(body.get("life_safety", False), bool):
        return "body.life_safety must be a boolean"
    return None
