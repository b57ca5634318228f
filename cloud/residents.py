"""Residents for the people who look after them: who, where, tags, devices, vitals charts.

Least data (docs/access.md): a resident's record and vital signs go to their family, the
community workers of their grid and admins, never to police, who see the welfare alert but
not a heart-rate history. A resident outside the caller's scope answers like a missing one.
Every read is audited (`resident_read`, `vitals_read`): names and vitals are personal data.
"""

from __future__ import annotations

import re
import time
from typing import Any

from aiohttp import web
from sqlalchemy import select

from cloud import api
from cloud.access import http as access_http
from cloud.access.scope import Principal
from cloud.schema import devices, locations, residents
from cloud.telemetry import BadQuery, TelemetryStore

# The cloud's telemetry store: set by whoever builds the app (`app[TELEMETRY] = ...`).
TELEMETRY: web.AppKey[TelemetryStore] = web.AppKey("telemetry")
RESIDENT_ROLES = frozenset({"family", "worker", "admin"})
NO_RESIDENT = {"error": "no such resident"}
MAX_POINTS = 2000  # per series: a chart on a screen never needs more
DEFAULT_SPAN_MS = 24 * 3600 * 1000
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}\Z")
DEVICE_COLUMNS = ("site", "id", "profile", "transport", "data", "health", "battery",
                  "last_seen_ms")


class ResidentRefused(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


async def _resident(request: web.Request, action: str) -> tuple[Principal, dict[str, Any]]:
    who = access_http.principal(request)
    if who.role not in RESIDENT_ROLES:
        raise ResidentRefused(web.json_response(
            {"error": f"a {who.role} user does not see residents' records"}, status=403))
    resident_id = request.match_info["id"]
    async with request.app[api.STORE].engine.connect() as conn:
        row = (await conn.execute(
            select(residents).where(residents.c.id == resident_id))).mappings().first()
        bound = [] if row is None else [dict(d) for d in (await conn.execute(
            select(*(devices.c[c] for c in DEVICE_COLUMNS))
            .where(devices.c.resident == resident_id)
            .order_by(devices.c.site, devices.c.id))).mappings().all()]
        office = (await _offices(conn, [row["location"]])) if row is not None else {}
    access = request.app[access_http.ACCESS]
    # The scope check the alerts use: family by resident id, workers by the household's grid.
    if row is None or not who.allows({"resident": row["id"], "location": row["location"]}):
        if row is not None:
            await access.audit(who.actor, "resident_denied", resident_id, request.remote,
                               {"action": action})
        raise ResidentRefused(web.json_response(NO_RESIDENT, status=404))
    return who, {**_person(row, who.role), "office": office.get(row["location"]),
                 "devices": bound}


async def _offices(conn: Any, homes: list[str | None]) -> dict[str, dict[str, str]]:
    """The number to call for each home: its nearest place (itself, its building, its
    community, …) imported with a `phone`, as {phone, place}. One read for every home."""
    paths = {"/".join(parts[:n]) for h in homes if h
             for parts in [h.split("/")] for n in range(1, len(parts) + 1)}
    if not paths:
        return {}
    rows = (await conn.execute(
        select(locations.c.path, locations.c.name, locations.c.label, locations.c.phone)
        .where(locations.c.path.in_(sorted(paths)), locations.c.phone.is_not(None)))).all()
    found = {r.path: {"phone": r.phone, "place": r.label or r.name} for r in rows}
    out: dict[str, dict[str, str]] = {}
    for home in {h for h in homes if h}:
        parts = home.split("/")
        for n in range(len(parts), 0, -1):  # the nearest place that has a number
            if "/".join(parts[:n]) in found:
                out[home] = found["/".join(parts[:n])]
                break
    return out


def _person(row: Any, role: str) -> dict[str, Any]:
    """What `role` sees of a resident (docs/access.md): police what a responding officer
    needs (name, tags, household, the resident's phone and the first contact to call);
    family, workers and admins also the age and every emergency contact."""
    contacts = list(row["contacts"] or [])
    out = {"id": row["id"], "name": row["name"], "location": row["location"],
           "tags": list(row["tags"] or []), "phone": row["phone"]}
    if role == "police":
        return {**out, "contacts": contacts[:1]}
    year = row["birth_year"]
    age = time.gmtime().tm_year - year if isinstance(year, int) else None
    return {**out, "age": age, "contacts": contacts}


MAX_PEOPLE = 100  # one board page of residents


async def list_people(request: web.Request) -> web.Response:
    """`GET /api/residents?ids=a,b`: the people on the user's board, as their role may see
    them; ids out of scope or unknown are left out (indistinguishable). Audited once."""
    who = access_http.principal(request)
    raw = request.query.get("ids", "")
    ids = sorted({i for i in raw.split(",") if i})
    if not ids or len(ids) > MAX_PEOPLE or not all(_ID.match(i) for i in ids):
        return web.json_response(
            {"error": f"ids: 1 to {MAX_PEOPLE} resident ids, comma-separated"}, status=400)
    async with request.app[api.STORE].engine.connect() as conn:
        rows = [r for r in (await conn.execute(
            select(residents).where(residents.c.id.in_(ids)))).mappings().all()
            if who.allows({"resident": r["id"], "location": r["location"]})]
        offices = await _offices(conn, [r["location"] for r in rows])
    shown = [{**_person(r, who.role), "office": offices.get(r["location"])} for r in rows]
    if shown:
        await request.app[access_http.ACCESS].audit(
            who.actor, "residents_listed", ",".join(p["id"] for p in shown)[:200], request.remote,
            {"count": len(shown)})
    return web.json_response({"residents": shown})


async def get_resident(request: web.Request) -> web.Response:
    try:
        who, resident = await _resident(request, "read")
    except ResidentRefused as refused:
        return refused.response
    await request.app[access_http.ACCESS].audit(who.actor, "resident_read", resident["id"],
                                                request.remote)
    return web.json_response(resident)


def _int(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not re.fullmatch(r"\d{1,15}", raw):
        raise BadQuery(f"{name}: must be a non-negative integer")
    return int(raw)


async def get_vitals(request: web.Request) -> web.Response:
    for key in request.query:
        if key not in ("field", "from", "to", "step"):
            return api._bad(request, key, f"{key}: unknown parameter; known: field, from, to, step")
    field = request.query.get("field", "")
    if not _FIELD.match(field):
        return api._bad(request, "field", "field: a reading field such as heart_rate")
    now = request.app[access_http.ACCESS].clock.now_ms()
    try:
        end = _int(request, "to", now)
        start = _int(request, "from", end - DEFAULT_SPAN_MS)
        if start >= end:
            raise BadQuery("to: must be greater than from")
        step = _int(request, "step", max(1, -(-(end - start) // (MAX_POINTS * 1000))))
        if step < 1 or (end - start) // (step * 1000) > MAX_POINTS:
            raise BadQuery(f"step: at most {MAX_POINTS} points; use a larger step")
    except BadQuery as err:
        param = str(err).split(":", 1)[0]
        return api._bad(request, param, str(err))
    try:
        who, resident = await _resident(request, "vitals")
    except ResidentRefused as refused:
        return refused.response
    # Points sit at multiples of the step, each the average of the step before it: end on
    # the step after `to`, or the newest readings (those a carer looks for) would be left out.
    end = -(-end // (step * 1000)) * step * 1000
    telemetry = request.app.get(TELEMETRY)
    if telemetry is None:
        return web.json_response(
            {"error": "this server has no telemetry store for the API"}, status=503)
    series = []
    for d in resident["devices"]:
        points = await telemetry.query_range(d["site"], d["id"], field, start, end, step)
        if points:
            series.append({"site": d["site"], "device": d["id"], "points": points})
    await request.app[access_http.ACCESS].audit(
        who.actor, "vitals_read", resident["id"], request.remote, {"field": field})
    return web.json_response({"resident": resident["id"], "field": field, "from": start,
                              "to": end, "step": step, "series": series})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/residents", list_people)
    app.router.add_get("/api/residents/{id}", get_resident)
    app.router.add_get("/api/residents/{id}/vitals", get_vitals)
