"""Device health by building: offline, stale, faulty and low-battery devices in your scope.

A device's place is its own location or, for one bound to a resident, the resident's home;
the scope is the alerts' (`Principal.where` on those columns), so a station sees its own
buildings' devices only. Liveness states are the gateway's (docs/liveness.md).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import func, select

from cloud import api
from cloud.access import http as access_http
from cloud.access.scope import check_location_prefix, under
from cloud.schema import devices, residents

BUILDING_DEPTH = 5  # district/street/community/grid/building
PROBLEMS = {  # what each count means: the dimension and its bad states
    "offline": ("transport", ("disconnected",)),
    "stale": ("data", ("stale",)),
    "faulty": ("health", ("faulty",)),
    "low_battery": ("battery", ("low",)),
}
MAX_DEVICES = 5000
# Where a device is: its own place, or its resident's home (select from WITH_HOMES).
PLACE = func.coalesce(devices.c.location, residents.c.location)
WITH_HOMES = devices.outerjoin(residents, residents.c.id == devices.c.resident)


async def device_health(request: web.Request) -> web.Response:
    for key in request.query:
        if key != "location":
            return api._bad(request, key, f"{key}: unknown parameter; known: location")
    who = access_http.principal(request)
    place = PLACE
    query = (
        select(devices.c.site, devices.c.id, devices.c.profile, devices.c.resident,
               place.label("location"), devices.c.transport, devices.c.data,
               devices.c.health, devices.c.battery, devices.c.last_seen_ms)
        .select_from(WITH_HOMES)
        .where(who.where(location=place, resident=devices.c.resident))
        .order_by(place, devices.c.site, devices.c.id)
        .limit(MAX_DEVICES + 1)
    )
    prefix = request.query.get("location", "").strip("/")
    if prefix:
        problem = check_location_prefix(prefix, "police")
        if problem:
            return api._bad(request, "location", f"location: {problem}")
        query = query.where(under(place, prefix))
    async with request.app[api.STORE].engine.connect() as conn:
        rows = [dict(r) for r in (await conn.execute(query)).mappings().all()]
    truncated = len(rows) > MAX_DEVICES
    rows = rows[:MAX_DEVICES]
    buildings: dict[str, dict[str, Any]] = {}
    for d in rows:
        d["problems"] = [name for name, (dim, bad) in PROBLEMS.items() if d[dim] in bad]
        path = "/".join((d["location"] or "").split("/")[:BUILDING_DEPTH]) or None
        b = buildings.setdefault(path or "", {"building": path, "devices": 0,
                                              **dict.fromkeys(PROBLEMS, 0)})
        b["devices"] += 1
        for name in d["problems"]:
            b[name] += 1
    return web.json_response({
        "buildings": sorted(buildings.values(), key=lambda b: b["building"] or ""),
        "devices": [d for d in rows if d["problems"]],
        "truncated": truncated,
    })


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/devices/health", device_health)
