"""The alert lifecycle: states, legal transitions, and the checks on an incoming alert body."""

from __future__ import annotations

from typing import Any

from cloud.schema import alerts
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

# Alert types a person confirms before anyone acts on them (cloud/lifecycle.py `confirm` and
# `reject`): a face match may be the wrong person (docs/face.md).
CONFIRMED_TYPES = frozenset({"watchlist_hit"})


class IllegalTransition(Exception):
    def __init__(self, alert_id: str, current: str, target: str) -> None:
        super().__init__(f"alert {alert_id} is {current}; it cannot become {target}")
        self.current = current
        self.target = target


class AlertNotFound(Exception):
    pass


_LENGTHS = {k: int(alerts.c[k].type.length) for k in  # type: ignore[attr-defined]
            ("type", "subject", "dedup_key", "resident", "location")}


def check_alert_body(body: dict[str, Any]) -> str | None:
    """None when the body of an `alert` envelope is well formed, else why not."""
    for key in ("type", "severity", "subject", "dedup_key"):
        if not isinstance(body.get(key), str) or not body[key]:
            return f"body.{key} must be a non-empty string"
    if body["severity"] not in SEVERITIES:
        return f"body.severity {body['severity'][:64]!r} is not one of {', '.join(SEVERITIES)}"
    for key in ("resident", "location"):
        if body.get(key) is not None and not isinstance(body[key], str):
            return f"body.{key} must be a string or null"
    # Each is a column of the alert's row: PostgreSQL refuses a longer one, and the store
    # would retry that write for ever.
    for key, most in _LENGTHS.items():
        if isinstance(body.get(key), str) and len(body[key]) > most:
            return f"body.{key} must be at most {most} characters"
    if not isinstance(body.get("life_safety", False), bool):
        return "body.life_safety must be a boolean"
    return None


def placed(
    body: dict[str, Any], resident: str | None, location: str | None
) -> tuple[dict[str, Any], bool]:
    """An alert body with its resident and location as the cloud's registry has them, and
    whether the gateway had named others (then kept under `claimed`, for a person to see).
    The rules' `detail.who` follows, so no view shows the gateway's word for the registry's;
    a resident's tags go with a resident the registry does not confirm."""
    said = {"resident": body.get("resident"), "location": body.get("location")}
    out = {**body, "resident": resident, "location": location}
    differed = any(v is not None and v != out[k] for k, v in said.items())
    if differed:
        out["claimed"] = said
    detail = body.get("detail")
    who = detail.get("who") if isinstance(detail, dict) else None
    if isinstance(detail, dict) and isinstance(who, dict):
        fixed = {**who, "resident": resident, "location": location}
        if who.get("resident") != resident:
            fixed.pop("tags", None)
        out["detail"] = {**detail, "who": fixed}
    return out, differed
