"""Query parameters of `GET /api/alerts`: parsed strictly, each bad one named in a 400."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from multidict import MultiMapping
from sqlalchemy import ColumnElement, or_, select

from cloud.access.scope import check_location_prefix, under
from cloud.alerts import SEVERITY_RANK, STATE_RANK, STATES
from cloud.schema import residents
from cloud.store import alerts
from shouwang.profiles import SEVERITIES

MAX_PAGE = 500
DEFAULT_PAGE = 100
PARAMS = ("state", "type", "severity", "location", "from", "to", "limit", "cursor", "order",
          "q")
MAX_SEARCH = 64
# `time`: newest first. `urgency`: what needs a person first: open, then acknowledged, then
# dispatched, then closed; within each, critical first; then newest first (docs/dashboard.md).
ORDERS = ("time", "urgency")
_TYPE = re.compile(r"^[a-z0-9_]{1,64}\Z")
_CURSOR = re.compile(r"^(\d{1,15})\.([0-9A-Za-z_-]{1,64})\Z")
_URGENCY_CURSOR = re.compile(r"^u([0-9])([0-9])\.(\d{1,15})\.([0-9A-Za-z_-]{1,64})\Z")



class BadQuery(ValueError):
    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param


@dataclass
class AlertQuery:
    limit: int = DEFAULT_PAGE
    order: str = "time"
    # The last alert of the previous page: (ts, id) by time; (state rank, severity rank, ts,
    # id) by urgency.
    after: tuple[int, str] | tuple[int, int, int, str] | None = None
    where: list[ColumnElement[bool]] = field(default_factory=list)


def parse(query: MultiMapping[str]) -> AlertQuery:
    for key in query:
        if key not in PARAMS:
            raise BadQuery(key, f"unknown parameter; known: {', '.join(PARAMS)}")
        if len(query.getall(key)) > 1:
            raise BadQuery(key, "given more than once; list several values with commas")
    q = AlertQuery()
    if "state" in query:
        q.where.append(alerts.c.state.in_(_choices(query, "state", STATES)))
    if "severity" in query:
        q.where.append(alerts.c.severity.in_(_choices(query, "severity", SEVERITIES)))
    if "type" in query:
        types = query["type"].split(",")
        if not all(_TYPE.match(t) for t in types):
            raise BadQuery("type", "alert types are a-z, 0-9 and '_' (comma-separated)")
        q.where.append(alerts.c.type.in_(types))
    if "location" in query:
        prefix = query["location"].rstrip("/")
        problem = check_location_prefix(prefix, "police")
        if problem:
            raise BadQuery("location", problem)
        q.where.append(under(alerts.c.location, prefix))
    start = _int(query, "from")
    end = _int(query, "to")
    if start is not None:
        q.where.append(alerts.c.ts >= start)
    if end is not None:
        q.where.append(alerts.c.ts < end)
    if start is not None and end is not None and start >= end:
        raise BadQuery("to", "must be greater than from")
    limit = _int(query, "limit")
    if limit is not None:
        if not 1 <= limit <= MAX_PAGE:
            raise BadQuery("limit", f"must be between 1 and {MAX_PAGE}")
        q.limit = limit
    if "q" in query:
        q.where.append(search(query["q"]))
    if "order" in query:
        q.order = _choices(query, "order", ORDERS)[0]
    if "cursor" in query:
        q.after = parse_cursor(query["cursor"], q.order)
    return q


def search(text: str) -> ColumnElement[bool]:
    """Find by alert id, device, resident (id or part of the name) or part of the address.
    Every character is itself (no wildcards); the user's scope still applies."""
    text = text.strip()
    if not 1 <= len(text) <= MAX_SEARCH:
        raise BadQuery("q", f"search text is 1 to {MAX_SEARCH} characters")
    named = select(residents.c.id).where(residents.c.name.contains(text, autoescape=True))
    return or_(
        alerts.c.id == text,
        alerts.c.device == text,
        alerts.c.resident == text,
        alerts.c.resident.in_(named),
        alerts.c.location.contains(text, autoescape=True),
    )


def parse_cursor(raw: str, order: str) -> tuple[int, str] | tuple[int, int, int, str]:
    if order == "urgency":
        u = _URGENCY_CURSOR.match(raw)
        if u is None:
            raise BadQuery(
                "cursor", "not a cursor this API returned (next_cursor) for order=urgency"
            )
        return (int(u.group(1)), int(u.group(2)), int(u.group(3)), u.group(4))
    m = _CURSOR.match(raw)
    if m is None:
        raise BadQuery("cursor", "not a cursor this API returned (next_cursor)")
    return (int(m.group(1)), m.group(2))


def sort_key(
    alert: Mapping[str, object], order: str = "time"
) -> tuple[int, str] | tuple[int, int, int, str]:
    """Where `alert` stands in `order`: what `after` takes to page on from it."""
    ts, alert_id = int(str(alert["ts"])), str(alert["id"])
    if order == "urgency":
        state = STATE_RANK[str(alert["state"])]
        severity = SEVERITY_RANK.get(str(alert["severity"]), 9)
        return (state, severity, ts, alert_id)
    return (ts, alert_id)


def cursor_of(alert: Mapping[str, object], order: str = "time") -> str:
    key = sort_key(alert, order)
    if len(key) == 4:
        return f"u{key[0]}{key[1]}.{key[2]}.{key[3]}"
    return f"{key[0]}.{key[1]}"


def _choices(query: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> list[str]:
    values = query[name].split(",")
    for v in values:
        if v not in allowed:
            raise BadQuery(name, f"{v!r} is not one of {', '.join(allowed)}")
    return values


def _int(query: Mapping[str, str], name: str) -> int | None:
    if name not in query:
        return None
    raw = query[name]
    if not re.fullmatch(r"\d{1,15}", raw):
        raise BadQuery(name, "must be a non-negative integer" + (
            " (milliseconds since 1970)" if name in ("from", "to") else ""))
    return int(raw)
