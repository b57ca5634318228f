"""What the body of an `event` or `health` envelope must hold: one shape per event and health type.

The cloud used to store any `event` body and take any `health` body it had no handler for:
posing as a gateway, one could fill the events table with nameless events and a site's health
with anything. Now each type the edge sends has its shape here, and anything else is refused
(`invalid_event`, `invalid_health`, counted and confirmed to the gateway as refused). An event
a device recorded (`body.event`, edge/daemon.py `_recorded_notice`) is further checked against
the device's profile in the cloud's registry, where there is one (cloud/ingest.py).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from cloud.fleet import DIMENSIONS
from shouwang.protocol import _ID_RE, is_int64

Check = Callable[[Any], bool]
# key → (check, required, what it must be): the body of one type, `type` aside.
Shape = dict[str, tuple[Check, bool, str]]
MAX_TEXT = 1000
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}\Z")


def _id(value: Any) -> bool:
    return isinstance(value, str) and _ID_RE.match(value) is not None


def _text(most: int) -> Check:
    return lambda value: isinstance(value, str) and len(value) <= most


def _int(value: Any) -> bool:
    # 64 bits: an `at_ms` is a BIGINT column, and PostgreSQL refuses a larger one.
    return is_int64(value)


def _number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _bool(value: Any) -> bool:
    return isinstance(value, bool)


def _one_of(*choices: str) -> Check:
    return lambda value: value in choices


def _optional(check: Check) -> Check:
    return lambda value: value is None or check(value)


def _counts(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and len(k) <= 64 and _int(v) for k, v in value.items()
    )


def _device_counts(value: Any) -> bool:
    """The gateway's liveness summary: totals, and counts per state of each dimension."""
    return isinstance(value, dict) and all(
        isinstance(k, str) and len(k) <= 64 and (_int(v) or _counts(v)) for k, v in value.items()
    )


def _versions(value: Any) -> bool:
    """[alert id, version] per alert the gateway holds (cloud/downlink.py)."""
    return isinstance(value, list) and all(
        isinstance(p, list) and len(p) == 2 and _id(p[0]) and _int(p[1]) for p in value
    )


def _drops(value: Any) -> bool:
    drop: Shape = {
        "class": (_text(32), True, ""), "items": (_int, True, ""), "rows": (_int, False, ""),
        "bytes": (_int, False, ""), "first_ts": (_int, False, ""), "last_ts": (_int, False, ""),
    }
    return isinstance(value, list) and all(
        isinstance(d, dict) and check_shape(d, drop, "drop") is None for d in value
    )


def _refused_lists(value: Any) -> bool:
    """The cloud's watchlists a gateway could not match (edge/video/face/downlink.py)."""
    return isinstance(value, dict) and len(value) <= 256 and all(
        _id(k) and _text(200)(v) for k, v in value.items()
    )


def _fingerprints(value: Any) -> bool:
    """The cloud's signing keys a gateway trusts (edge/video/face/downlink.py)."""
    return isinstance(value, list) and len(value) <= 64 and all(
        isinstance(v, str) and re.fullmatch(r"[0-9a-f]{16}", v) is not None for v in value
    )


def _json_object(value: Any) -> bool:
    return isinstance(value, dict)


def _tags(value: Any) -> bool:
    return isinstance(value, list) and all(_text(32)(t) for t in value)


HEALTH: dict[str, Shape] = {
    "gateway": {
        "devices": (_device_counts, False, "counts of devices per state"),
        "outbox_depth": (_counts, False, "messages held per class"),
        "outbox_critical": (_bool, False, "a boolean"),
        "edge_broker": (_bool, False, "a boolean"),
        "alerts": (_versions, False, "a list of [alert id, version]"),
        "watchlist": (_int, False, "the watchlist version held, an integer"),
        "watchlist_refused": (_refused_lists, False, "list name → why it was refused"),
        "watchlist_keys": (_fingerprints, False, "a list of key fingerprints (16 hex)"),
    },
    "gateway_offline": {"reason": (_optional(_text(64)), False, "a short text")},
    "device_state": {
        "device": (_id, True, "a device id"),
        "dimension": (_one_of(*DIMENSIONS), True, f"one of {', '.join(DIMENSIONS)}"),
        "old": (_optional(_text(16)), False, "a state name"),
        "new": (_text(16), True, "a state name"),
        "at_ms": (_int, True, "integer ms"),
        "reason": (_optional(_text(200)), False, "a short text"),
    },
    "outbox_drops": {"drops": (_drops, True, "a list of {class, items, rows, bytes, ...}")},
    "config_issue": {
        "device": (_id, True, "a device id"),
        "kind": (_one_of("no_config", "ack_timeout", "version_mismatch"), True,
                 "no_config, ack_timeout or version_mismatch"),
        "detail": (_text(MAX_TEXT), True, "a text"),
    },
    "outbox_damaged": {"kept_as": (_text(256), True, "a file name")},
    "buffer_critical": {
        "critical": (_bool, True, "a boolean"),
        "usage_bytes": (_counts, True, "bytes per class"),
    },
    "disk_full": {
        "full": (_bool, True, "a boolean"),
        "free_bytes": (_int, True, "integer bytes"),
        "reserve_bytes": (_int, True, "integer bytes"),
        "reason": (_text(MAX_TEXT), False, "a text"),
    },
}

# What a rule's notice says of whom (edge/rules/book.py `_who`).
_WHO: Shape = {
    "device": (_id, False, "a device id"),
    "kind": (_optional(_text(64)), False, "a device kind"),
    "resident": (_optional(_id), False, "a resident id"),
    "tags": (_tags, False, "a list of tags"),
    "location": (_optional(_text(512)), False, "a location path"),
}
NOTICES: dict[str, Shape] = {
    "alert_resolved": {
        "alert_id": (_id, True, "an alert id"),
        "alert_type": (_text(64), False, "an alert type"),
        "dedup_key": (_text(200), False, "a dedup key"),
        "subject": (_text(128), False, "a subject"),
        "opened_ms": (_int, False, "integer ms"),
        "repeats": (_int, False, "an integer"),
        "why": (lambda v: v is None or isinstance(v, str | dict), False, "a text or an object"),
        "who": (_json_object, False, "an object"),
    },
}
# A fall cancelled in time, or too late (edge/rules/events.py): `{event}_cancelled` and
# `{event}_cancel_late`, with whom it was about.
_CANCEL = re.compile(r"^[a-z][a-z0-9_]{0,40}_(cancelled|cancel_late)\Z")
_CANCEL_SHAPE: Shape = {
    **_WHO,
    "rule": (_text(64), False, "a rule id"),
    "event": (_text(64), False, "an event name"),
    "event_id": (_id, False, "an envelope id"),
    "cancelled_after_s": (_number, False, "a number"),
    "cancel_window_s": (_number, False, "a number"),
}
# The fields a device's own event may carry, when the cloud has no profile to check them by.
_SCALAR = (str, int, float, bool, type(None))


def check_shape(body: dict[str, Any], shape: Shape, what: str) -> str | None:
    """None when `body` has the shape (`type` aside), else which key is wrong and why."""
    for key, value in body.items():
        if key == "type":
            continue
        spec = shape.get(key)
        if spec is None:
            return f"{what}: unknown key {key[:64]!r}"
        check, _, expected = spec
        if not check(value):
            return f"{what}: body.{key} must be {expected}"
    missing = [k for k, (_, required, _) in shape.items() if required and k not in body]
    return f"{what}: body.{missing[0]} is missing" if missing else None


def check_health_body(body: dict[str, Any]) -> str | None:
    """None when a `health` body is one of the reports a gateway sends, well formed."""
    kind = body.get("type")
    shape = HEALTH.get(kind) if isinstance(kind, str) else None
    if shape is None:
        known = ", ".join(sorted(HEALTH))
        return f"body.type {str(kind)[:64]!r} is not a health report (known: {known})"
    return check_shape(body, shape, str(kind))


def notice_shape(body: dict[str, Any]) -> Shape | None:
    """The shape of a rule's notice (a resolution, a cancelled fall) when `body` is one."""
    kind = body.get("type")
    if not isinstance(kind, str):
        return None
    return NOTICES.get(kind) or (_CANCEL_SHAPE if _CANCEL.match(kind) else None)


def recorded_event(body: dict[str, Any]) -> str | None:
    """The name of the device's own event when `body` is one the gateway passed on as it is
    (edge/daemon.py `_recorded_notice`), else None (a rule's notice names an event too)."""
    name = body.get("event")
    return name if isinstance(name, str) and notice_shape(body) is None else None


def check_event_body(body: dict[str, Any]) -> str | None:
    """None when an `event` body names its event and has that event's shape: a rule's notice
    (a resolution, a cancelled fall), or a device's recorded event (`event`; its fields are
    checked against the device's profile later)."""
    shape = notice_shape(body)
    if shape is not None:
        return check_shape(body, shape, str(body["type"]))
    name, kind = body.get("event"), body.get("type")
    if name is None:
        if isinstance(kind, str):
            return f"body.type {kind[:64]!r} is not an event the cloud knows"
        return "body.event (or for a rule's notice, body.type) is missing"
    if not isinstance(name, str) or not _NAME.match(name):
        return "body.event must be an event name (a-z, 0-9, _)"
    if kind is not None and kind != name:
        return f"body.type {str(kind)[:64]!r} differs from body.event {name!r}"
    for key, value in body.items():
        if not isinstance(value, _SCALAR) or (isinstance(value, str) and len(value) > 256):
            return f"event {name}: body.{key[:64]} must be a number, a short text or a flag"
    return None
