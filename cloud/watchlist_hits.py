"""How often each watchlist is wrong at each camera: the figure an operator tunes a list's
threshold with (docs/face.md).

Derived from the alerts themselves, nothing kept beside them: a `watchlist_hit` is awaiting
while open and unconfirmed, confirmed once a person said it is the person, and a false match
when it was closed as a false alarm (rejected before confirmation, or found wrong after).
`GET /api/watchlists/false-matches` gives the counts per list and camera within the caller's
scope; `shouwang_watchlist_false_matches_total{list, camera}` counts this worker's since it
started (cloud/lifecycle.py calls `FalseMatches.count`).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import select

from cloud import api
from cloud.access import http as access_http
from cloud.store import alerts, match_of
from shouwang.metrics import Metrics

ROLES = frozenset({"worker", "police", "admin"})  # the people who confirm and tune; not family


class FalseMatches:
    """The metric; one per process."""

    def __init__(self, metrics: Metrics) -> None:
        self.counter = metrics.counter(
            "shouwang_watchlist_false_matches_total",
            "Watchlist matches closed as false (rejected, or marked false after confirmation), "
            "by list and camera, since this worker started; GET /api/watchlists/false-matches "
            "has the totals",
            ["list", "camera"],
        )

    def count(self, list_name: str, camera: str) -> None:
        self.counter.labels(list_name, camera).inc()


async def counts(request: web.Request) -> web.Response:
    who = access_http.principal(request)
    if who.role not in ROLES:
        return api._error(403, f"a {who.role} user may not read false-match counts")
    if request.query:
        param = next(iter(request.query))
        return api._bad(request, param, f"{param}: unknown parameter; this takes none")
    query = (
        select(alerts.c.device, alerts.c.state, alerts.c.body)
        .where(alerts.c.type == "watchlist_hit", who.where())
    )
    by: dict[tuple[str, str], dict[str, Any]] = {}
    async with request.app[api.STORE].engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    # Matches number in the hundreds a month: counted here, not in dialect-specific JSON SQL.
    for device, state, body in rows:
        match = match_of((body or {}).get("detail")) or {}
        key = (str(match.get("list")), str(device))
        row = by.setdefault(key, {"list": key[0], "camera": key[1], "hits": 0,
                                  "confirmed": 0, "false_matches": 0, "awaiting": 0})
        row["hits"] += 1
        if (body or {}).get("confirmed"):
            row["confirmed"] += 1
        if state == "false_alarm":
            row["false_matches"] += 1
        elif state == "open" and not (body or {}).get("confirmed"):
            row["awaiting"] += 1
    return web.json_response({"counts": [by[k] for k in sorted(by)]})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/watchlists/false-matches", counts)
