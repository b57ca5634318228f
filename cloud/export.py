"""`GET /api/alerts.csv`: the filtered alert list as a spreadsheet, for a shift report.

The same filters and scope as `GET /api/alerts` (`cloud/filters.py`), newest first, at most
`MAX_ROWS`; names in the reader's language (`lang=zh|en`) and times in their time zone
(`tz`, an IANA name the dashboard sends). Each export is audited with its filters and row
count: a list of residents' emergencies leaving the system is itself worth a record. Cells
that a spreadsheet would run as a formula (`= + - @`) are quoted with a leading `'`.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import zoneinfo
from typing import Any

from aiohttp import web
from multidict import MultiDict
from sqlalchemy import select

from cloud import api, filters
from cloud.access import http as access_http
from cloud.schema import residents
from shouwang.explain import explain
from shouwang.vocabulary import SEVERITY_NAMES, alert_types

MAX_ROWS = 10_000
COLUMNS = ("id", "time", "type", "severity", "state", "resident", "location", "device",
           "handled_by", "times", "why", "ts_ms")
# State names (severities and types come from the one vocabulary, shouwang/vocabulary.py).
STATE_NAMES = {
    "zh": {"open": "待处理", "acknowledged": "已确认", "dispatched": "已派单",
           "resolved": "已办结", "false_alarm": "误报"},
    "en": {"open": "open", "acknowledged": "acknowledged", "dispatched": "dispatched",
           "resolved": "resolved", "false_alarm": "false alarm"},
}


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


async def export_alerts(request: web.Request) -> web.Response:
    # The list's own filters; `lang` and `tz` are the export's.
    query = MultiDict((k, v) for k, v in request.query.items() if k not in ("lang", "tz"))
    try:
        q = filters.parse(query)
    except filters.BadQuery as err:
        return api._bad(request, err.param, str(err))
    lang = request.query.get("lang", "zh")
    if lang not in STATE_NAMES:
        return api._bad(request, "lang", "lang: zh or en")
    try:
        zone = zoneinfo.ZoneInfo(request.query.get("tz", "UTC"))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return api._bad(request, "tz", "tz: an IANA time zone name such as Asia/Shanghai")
    who = access_http.principal(request)
    store = request.app[api.STORE]
    rows: list[dict[str, Any]] = []
    after = q.after
    while len(rows) < MAX_ROWS:
        page = await store.list_alerts(limit=min(500, MAX_ROWS - len(rows)), after=after,
                                       where=[who.where(), *q.where], order=q.order)
        rows += [who.view(a) for a in page]
        if len(page) < 500:
            break
        after = filters.sort_key(page[-1], q.order)
    names = await _names(store, {a["resident"] for a in rows if a.get("resident")})
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    types = alert_types()
    for a in rows:
        known = types.get(a["type"])
        writer.writerow([_cell(v) for v in (
            a["id"], dt.datetime.fromtimestamp(a["ts"] / 1000, zone).isoformat(timespec="seconds"),
            getattr(known, lang) if known else a["type"],
            getattr(SEVERITY_NAMES[a["severity"]], lang), STATE_NAMES[lang].get(a["state"]),
            names.get(a.get("resident") or "", a.get("resident")),
            a.get("location"), a["device"], a.get("ack_name") or a.get("ack_by"),
            (a.get("repeats") or 0) + 1,
            explain(a, lang), a["ts"],
        )])
    await request.app[access_http.ACCESS].audit(
        who.actor, "alerts_exported", None, request.remote,
        {"filters": dict(query.items()), "rows": len(rows), "truncated": len(rows) >= MAX_ROWS})
    # A BOM so that spreadsheet programs read the Chinese as UTF-8.
    return web.Response(
        body=("\ufeff" + out.getvalue()).encode(), content_type="text/csv", charset="utf-8",
        headers={"Content-Disposition": 'attachment; filename="shouwang-alerts.csv"',
                 "Cache-Control": "no-store"})


async def _names(store: Any, ids: set[str]) -> dict[str, str]:
    if not ids:
        return {}
    async with store.engine.connect() as conn:
        found = (await conn.execute(
            select(residents.c.id, residents.c.name).where(residents.c.id.in_(sorted(ids)))
        )).all()
    return {i: n for i, n in found}


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/alerts.csv", export_alerts)
