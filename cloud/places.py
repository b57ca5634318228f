"""Navigation district → street → community → grid → building → … → household.

`GET /api/locations?prefix=` answers the next level below `prefix` with alert counts, built
from the imported places (`locations`) and the location paths of the alerts the caller may
see, both through their scope's SQL condition, so a station never learns that another
station's buildings exist. The places above a user's scope (the district of a station) are
listed too, or there would be no way down to it; a family navigates by its residents' alerts.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import func, literal, or_, select

from cloud import api
from cloud.access import http as access_http
from cloud.access.scope import check_location_prefix, under
from cloud.schema import locations as places
from cloud.store import alerts

ACTIVE = ("open", "acknowledged", "dispatched")
# The names of the levels of a location path (docs/dashboard.md).
LEVELS = ("district", "street", "community", "grid", "building", "unit", "floor", "household")


async def locations(request: web.Request) -> web.Response:
    for key in request.query:
        if key != "prefix":
            return api._bad(request, key, f"{key}: unknown parameter; known: prefix")
    prefix = request.query.get("prefix", "").strip("/")
    who = access_http.principal(request)
    query = (
        select(alerts.c.location, alerts.c.state, alerts.c.severity, func.count())
        .where(who.where(), alerts.c.location.is_not(None))
        .group_by(alerts.c.location, alerts.c.state, alerts.c.severity)
    )
    if prefix:
        problem = check_location_prefix(prefix, "police")
        if problem:
            return api._bad(request, "prefix", f"prefix: {problem}")
        query = query.where(under(alerts.c.location, prefix, strictly=True))
    async with request.app[api.STORE].engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    depth = len(prefix.split("/")) if prefix else 0
    known = (
        select(places.c.path, places.c.name, places.c.label)
        .where(places.c.parent == prefix if prefix else places.c.parent.is_(None))
    )
    if who.role == "family":
        known = known.where(literal(False))
    elif who.role != "admin":
        above = {"/".join(p.split("/")[:i]) for p in who.locations
                 for i in range(1, len(p.split("/")))}
        known = known.where(or_(who.where(location=places.c.path, resident=literal(None)),
                                places.c.path.in_(above)))
    async with request.app[api.STORE].engine.connect() as conn:
        imported = (await conn.execute(known)).all()
    children: dict[str, dict[str, Any]] = {
        path: {"path": path, "name": name, "label": label, "alerts": 0, "active": 0,
               "critical_active": 0}
        for path, name, label in imported
    }
    for location, state, severity, count in rows:
        name = location.split("/")[depth] if len(location.split("/")) > depth else None
        if not name:
            continue
        path = f"{prefix}/{name}" if prefix else name
        child = children.setdefault(path, {"path": path, "name": name, "label": None,
                                           "alerts": 0, "active": 0, "critical_active": 0})
        child["alerts"] += count
        if state in ACTIVE:
            child["active"] += count
            if severity == "critical":
                child["critical_active"] += count
    return web.json_response({
        "prefix": prefix,
        "level": LEVELS[depth] if depth < len(LEVELS) else None,
        "children": sorted(children.values(), key=lambda c: c["name"]),
    })


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/locations", locations)



