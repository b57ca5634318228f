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
from cloud.device_health import PLACE, PROBLEMS, WITH_HOMES
from cloud.schema import devices
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







HOUSEHOLD_DEPTH = len(LEVELS)
BUILDING_DEPTH = LEVELS.index("building") + 1


async def building(request: web.Request) -> web.Response:
    """`GET /api/locations/building?path=` one building as 单元 → 楼层 → 户, each household
    with its open alerts (and whether one is critical) and its devices with a problem: the
    duty officer's picture of where to go. Places come from the import and from alerts, both
    within the caller's scope; a building outside it answers as an empty one."""
    for key in request.query:
        if key != "path":
            return api._bad(request, key, f"{key}: unknown parameter; known: path")
    path = request.query.get("path", "").strip("/")
    problem = check_location_prefix(path, "police") if path else "a building's path is needed"
    if problem or len(path.split("/")) != BUILDING_DEPTH:
        return api._bad(request, "path", f"path: {problem or 'not a building (5 segments)'}")
    who = access_http.principal(request)
    if who.role == "family":
        return web.json_response({"error": "a family user has no building view"}, status=403)
    homes: dict[str, dict[str, Any]] = {}

    def home(location: str) -> dict[str, Any] | None:
        parts = location.split("/")
        if len(parts) != HOUSEHOLD_DEPTH:
            return None
        return homes.setdefault(location, {"path": location, "unit": parts[5],
                                           "floor": parts[6], "name": parts[7],
                                           "active": 0, "critical_active": 0,
                                           "device_problems": 0})

    imported = select(places.c.path).where(
        under(places.c.path, path, strictly=True), places.c.level == HOUSEHOLD_DEPTH,
        who.where(location=places.c.path, resident=literal(None)))
    open_alerts = (
        select(alerts.c.location, alerts.c.severity, func.count())
        .where(who.where(), under(alerts.c.location, path, strictly=True),
               alerts.c.state.in_(ACTIVE))
        .group_by(alerts.c.location, alerts.c.severity)
    )
    place = PLACE
    bad = or_(*(devices.c[dim].in_(states) for dim, states in PROBLEMS.values()))
    troubled = (
        select(place, func.count())
        .select_from(WITH_HOMES)
        .where(who.where(location=place, resident=devices.c.resident),
               under(place, path, strictly=True), bad)
        .group_by(place)
    )
    async with request.app[api.STORE].engine.connect() as conn:
        for (location,) in (await conn.execute(imported)).all():
            home(location)
        for location, severity, count in (await conn.execute(open_alerts)).all():
            h = home(location)
            if h is not None:
                h["active"] += count
                h["critical_active"] += count if severity == "critical" else 0
        for location, count in (await conn.execute(troubled)).all():
            h = home(location or "")
            if h is not None:
                h["device_problems"] += count
    units: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for h in homes.values():
        units.setdefault(h["unit"], {}).setdefault(h["floor"], []).append(h)
    return web.json_response({"building": path, "units": [
        {"name": unit, "floors": [
            {"name": floor, "households": sorted(hs, key=lambda h: _natural(h["name"]))}
            for floor, hs in sorted(floors.items(), key=lambda f: _natural(f[0]), reverse=True)
        ]}
        for unit, floors in sorted(units.items(), key=lambda u: _natural(u[0]))
    ]})


def _natural(name: str) -> tuple[int, str]:
    """f2 before f10; 101 before 1001."""
    digits = "".join(ch for ch in name if ch.isdigit())
    return (int(digits) if digits else -1, name)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/locations", locations)
    app.router.add_get("/api/locations/building", building)
