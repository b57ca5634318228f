"""The HTTP API and dashboard routes (aiohttp); the OpenAPI document beside them is openapi.py."""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from cloud import filters, openapi
from cloud.access import audit, clients
from cloud.access import http as access_http
from cloud.access.users import Access
from cloud.alerts import AlertNotFound, IllegalTransition
from cloud.hub import Hub
from cloud.lifecycle import ACTIONS, BadField, Forbidden, Lifecycle
from cloud.store import Store
from shouwang.metrics import Metrics
from shouwang.vocabulary import vocabulary

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboard"
NOT_FOUND = {"error": "no such alert"}  # the same for missing and out-of-scope alerts

STORE: web.AppKey[Store] = web.AppKey("store", Store)
HUB: web.AppKey[Hub] = web.AppKey("hub", Hub)
METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
LIFECYCLE: web.AppKey[Lifecycle] = web.AppKey("lifecycle", Lifecycle)
BAD_REQUESTS: web.AppKey[Any] = web.AppKey("bad_requests")
MQTT_STATE: web.AppKey[Callable[[], bool | None]] = web.AppKey("mqtt_state")


def build_app(
    store: Store,
    hub: Hub,
    metrics: Metrics,
    mqtt_state: Callable[[], bool | None],
    access: Access,
    lifecycle: Lifecycle,
    *,
    metrics_token: str | None = None,
) -> web.Application:
    app = web.Application(client_max_size=openapi.MAX_BODY)
    app[STORE], app[HUB], app[METRICS], app[MQTT_STATE] = store, hub, metrics, mqtt_state
    app[LIFECYCLE] = lifecycle
    app.middlewares.append(json_errors)
    app[BAD_REQUESTS] = metrics.counter(
        "shouwang_api_bad_requests_total", "API requests refused with 400, by parameter",
        ["param"],
    )
    access_http.setup(app, access, metrics)
    app.router.add_get("/", index)
    app.router.add_static("/static", DASHBOARD_DIR, show_index=False)
    app.router.add_get("/api/openapi.json", openapi_document)
    app.router.add_get("/api/vocabulary", alert_vocabulary)
    app.router.add_get("/api/alerts", list_alerts)
    app.router.add_get("/api/alerts/{id}", get_alert)
    app.router.add_get("/api/alerts/{id}/workers", alert_workers)
    app.router.add_get("/api/audit", audit_entries)
    for action in ACTIONS:
        app.router.add_post(f"/api/alerts/{{id}}/{action}", _transition_handler(action))
    app.router.add_post("/api/alerts/{id}/confirm_flat", confirm_flat)
    app.router.add_post("/api/alerts/{id}/note", add_note)
    app.router.add_get("/api/ws", hub.serve)
    from cloud import (  # they build on this module's keys
        device_health,
        export,
        places,
        residents,
        watchlist_hits,
        watchlists,
    )

    export.add_routes(app)
    places.add_routes(app)
    residents.add_routes(app)
    device_health.add_routes(app)
    watchlists.add_routes(app)
    watchlist_hits.add_routes(app)
    app.router.add_get("/metrics", metrics_handler(metrics, metrics_token))
    app.router.add_get("/healthz", health)
    return app


def build_monitor_app(
    hub: Hub, metrics: Metrics, mqtt_state: Callable[[], bool | None], *,
    metrics_token: str | None = None,
) -> web.Application:
    """For a worker without the API: only `/metrics` and `/healthz`, which hold no personal
    data, so an ingest-only worker is watched like any other."""
    app = web.Application(client_max_size=1024)
    app[HUB], app[METRICS], app[MQTT_STATE] = hub, metrics, mqtt_state
    app.router.add_get("/metrics", metrics_handler(metrics, metrics_token))
    app.router.add_get("/healthz", health)
    return app


def metrics_handler(metrics: Metrics, token: str | None) -> Callable[[web.Request], Any]:
    """`/metrics` for the holder of `token` (`metrics_token_file`) or, without one, for a
    client on this host: counts of users, sites and refusals are nobody else's business."""
    expected = f"Bearer {token}".encode() if token else None

    async def handle(request: web.Request) -> web.StreamResponse:
        if expected is not None:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return _error(401, "metrics need the bearer token of metrics_token_file")
        elif not clients.is_loopback_peer(request):
            return _error(403, "metrics answer only this host without a token; set "
                          "metrics_token_file to scrape them from elsewhere")
        return await metrics.handle(request)

    return handle


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Any]
) -> web.StreamResponse:
    """Under /api/, even aiohttp's own refusals (no such route, wrong method) answer JSON."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPException as err:
        if not request.path.startswith("/api/") or err.status < 400:
            raise
        return web.json_response(
            {"error": err.reason.lower()}, status=err.status, headers={
                k: v for k, v in err.headers.items() if k in ("Allow", "Retry-After")}
        )


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _bad(request: web.Request, param: str, message: str) -> web.Response:
    request.app[BAD_REQUESTS].labels(param).inc()
    return _error(400, message)


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(DASHBOARD_DIR / "index.html")


async def alert_vocabulary(request: web.Request) -> web.Response:
    """The one vocabulary of alert types: what every screen names them by."""
    return web.json_response(vocabulary(), headers={"Cache-Control": "max-age=3600"})


async def openapi_document(request: web.Request) -> web.Response:
    return web.json_response(openapi.DOCUMENT)


async def health(request: web.Request) -> web.Response:
    mqtt = request.app[MQTT_STATE]
    return web.json_response(
        {"ok": True, "websocket_clients": request.app[HUB].clients, "broker_connected": mqtt()}
    )


async def list_alerts(request: web.Request) -> web.Response:
    try:
        q = filters.parse(request.query)
    except filters.BadQuery as err:
        return _bad(request, err.param, str(err))
    who = access_http.principal(request)
    alerts = await request.app[STORE].list_alerts(
        limit=q.limit, after=q.after, where=[who.where(), *q.where], order=q.order
    )
    next_cursor = filters.cursor_of(alerts[-1], q.order) if len(alerts) == q.limit else None
    return web.json_response(
        {"alerts": [who.view(a) for a in alerts], "next_cursor": next_cursor}
    )


async def get_alert(request: web.Request) -> web.Response:
    try:
        alert = await request.app[LIFECYCLE].read(
            access_http.principal(request), request.match_info["id"], request.remote
        )
    except AlertNotFound:
        return web.json_response(NOT_FOUND, status=404)
    return web.json_response(alert)


async def alert_workers(request: web.Request) -> web.Response:
    try:
        workers = await request.app[LIFECYCLE].workers(
            access_http.principal(request), request.match_info["id"], request.remote
        )
    except AlertNotFound:
        return web.json_response(NOT_FOUND, status=404)
    except Forbidden as err:
        return _error(403, str(err))
    return web.json_response({"workers": workers})


async def audit_entries(request: web.Request) -> web.Response:
    """The audit log, newest first: admins only."""
    if access_http.principal(request).role != "admin":
        return _error(403, "only admins read the audit log")
    q = request.query
    for key in q:
        if key not in ("action", "target", "limit"):
            return _bad(request, key, f"{key}: unknown parameter; known: action, target, limit")
    raw = q.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= filters.MAX_PAGE:
        return _bad(request, "limit", f"limit: must be between 1 and {filters.MAX_PAGE}")
    entries = await audit.entries(
        request.app[STORE].engine, action=q.get("action"), target=q.get("target"),
        limit=int(raw),
    )
    return web.json_response({"entries": entries})


async def _acted(request: web.Request,
                 act: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]) -> web.Response:
    """A person's action on one alert, and what its refusals mean over HTTP: 404 unseen,
    400 naming the field, 403 not for this role, 409 not for this alert as it is."""
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    try:
        alert = await act(body)
    except AlertNotFound:
        return web.json_response(NOT_FOUND, status=404)
    except BadField as err:
        return _bad(request, err.field, str(err))
    except Forbidden as err:
        return _error(403, str(err))
    except IllegalTransition as err:
        return _error(409, str(err))
    return web.json_response(alert)


def _transition_handler(action: str) -> Callable[[web.Request], Any]:
    async def handler(request: web.Request) -> web.Response:
        return await _acted(request, lambda body: request.app[LIFECYCLE].act(
            access_http.principal(request), request.match_info["id"], action, body,
            request.remote))

    handler.__name__ = f"{action}_alert"
    return handler


async def confirm_flat(request: web.Request) -> web.Response:
    """高空抛物: the flat a thrown object came from, as found after investigation."""
    return await _acted(request, lambda body: request.app[LIFECYCLE].confirm_flat(
        access_http.principal(request), request.match_info["id"], body, request.remote))


async def add_note(request: web.Request) -> web.Response:
    """A note in the alert's timeline, shared with the resident's family or not."""
    return await _acted(request, lambda body: request.app[LIFECYCLE].add_note(
        access_http.principal(request), request.match_info["id"], body, request.remote))


async def _json_body(request: web.Request) -> dict[str, Any] | web.Response:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except UnicodeDecodeError:  # not UTF-8: a 400 that says so, not a 500
        return _bad(request, "body", "request body is not UTF-8 text (JSON must be)")
    except json.JSONDecodeError:
        return _bad(request, "body", "request body is not JSON")
    if not isinstance(body, dict):
        return _bad(request, "body", "request body must be a JSON object")
    return body
