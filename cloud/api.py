"""The HTTP API and dashboard routes (aiohttp)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from cloud.alerts import STATES, AlertNotFound, IllegalTransition
from cloud.hub import Hub
from cloud.store import Store
from shouwang.metrics import Metrics

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboard"
MAX_PAGE = 500

STORE: web.AppKey[Store] = web.AppKey("store", Store)
HUB: web.AppKey[Hub] = web.AppKey("hub", Hub)
METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
MQTT_STATE: web.AppKey[Callable[[], bool | None]] = web.AppKey("mqtt_state")


def build_app(
    store: Store, hub: Hub, metrics: Metrics, mqtt_state: Callable[[], bool | None]
) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    app[STORE], app[HUB], app[METRICS], app[MQTT_STATE] = store, hub, metrics, mqtt_state
    app.router.add_get("/", index)
    app.router.add_static("/static", DASHBOARD_DIR, show_index=False)
    app.router.add_get("/api/alerts", list_alerts)
    app.router.add_get("/api/alerts/{id}", get_alert)
    app.router.add_post("/api/alerts/{id}/ack", ack_alert)
    app.router.add_get("/api/ws", hub.serve)
    app.router.add_get("/metrics", metrics.handle)
    app.router.add_get("/healthz", health)
    return app


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(DASHBOARD_DIR / "index.html")


async def health(request: web.Request) -> web.Response:
    mqtt = request.app[MQTT_STATE]
    return web.json_response(
        {"ok": True, "websocket_clients": request.app[HUB].clients, "broker_connected": mqtt()}
    )


async def list_alerts(request: web.Request) -> web.Response:
    q = request.query
    state = q.get("state")
    if state is not None and state not in STATES:
        return _error(400, f"state must be one of {', '.join(STATES)}")
    try:
        limit = int(q.get("limit", "100"))
        before = int(q["before"]) if "before" in q else None
    except ValueError:
        return _error(400, "limit and before must be integers")
    if not 1 <= limit <= MAX_PAGE:
        return _error(400, f"limit must be between 1 and {MAX_PAGE}")
    alerts = await request.app[STORE].list_alerts(state=state, limit=limit, before_ts=before)
    next_before = alerts[-1]["ts"] if len(alerts) == limit else None
    return web.json_response({"alerts": alerts, "next_before": next_before})


async def get_alert(request: web.Request) -> web.Response:
    try:
        return web.json_response(await request.app[STORE].get_alert(request.match_info["id"]))
    except AlertNotFound:
        return _error(404, "no such alert")


async def ack_alert(request: web.Request) -> web.Response:
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    note = body.get("note")
    if note is not None and (not isinstance(note, str) or len(note) > 2000):
        return _error(400, "note must be a string of at most 2000 characters")
    # Until login lands (cloud issue), the actor is whoever the request says, marked unverified.
    claimed = body.get("actor")
    actor = claimed if isinstance(claimed, str) else "anonymous"
    try:
        alert = await request.app[STORE].transition(
            request.match_info["id"], "acknowledged", actor=f"unverified:{actor[:64]}", note=note
        )
    except AlertNotFound:
        return _error(404, "no such alert")
    except IllegalTransition as err:
        return _error(409, str(err))
    request.app[HUB].broadcast({"type": "alert_updated", "alert": _summary(alert)})
    return web.json_response(alert)


async def _json_body(request: web.Request) -> dict[str, Any] | web.Response:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except json.JSONDecodeError:
        return _error(400, "request body is not JSON")
    if not isinstance(body, dict):
        return _error(400, "request body must be a JSON object")
    return body


def _summary(alert: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in alert.items() if k != "timeline"}
