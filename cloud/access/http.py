"""Logins over HTTP: the middleware that puts a `Principal` on every API request, and the
login, logout and who-am-I routes.

A session travels as an HttpOnly, SameSite=Strict cookie (the dashboard) or as
`Authorization: Bearer <token>` (API clients). Without one, every `/api/` route but the
login, the OpenAPI document and the evidence public key answers 401.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from cloud.access import clients, origin
from cloud.access.scope import Principal
from cloud.access.users import Access, LoginRefused
from cloud.hub import PRINCIPAL
from cloud.hub import SESSION_TOKEN as TOKEN
from shouwang.metrics import Metrics

log = logging.getLogger(__name__)
COOKIE = "shouwang_session"
# The evidence public key too: whoever checks a package needs the key, not an account.
PUBLIC = frozenset(
    {"/api/login", "/api/openapi.json", "/api/evidence/public-key", "/api/vocabulary"}
)
ACCESS: web.AppKey[Access] = web.AppKey("access", Access)
LOGINS: web.AppKey[Any] = web.AppKey("logins")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def setup(app: web.Application, access: Access, metrics: Metrics) -> None:
    app[ACCESS] = access
    clients.setup(app, clients.networks(access.config.trusted_proxies))  # before the rest
    app[LOGINS] = metrics.counter(
        "shouwang_logins_total", "Login attempts, by outcome", ["outcome"]
    )
    app.middlewares.append(authenticate)
    # After the login check, so that without a session every route still answers 401 alike.
    origin.setup(app, access.config.allowed_origins, metrics.counter(
        "shouwang_http_refused_total",
        "Requests refused as cross-origin or not JSON (docs/security.md), by reason",
        ["reason"],
    ), COOKIE)
    app.router.add_post("/api/login", login)
    app.router.add_post("/api/logout", logout)
    app.router.add_get("/api/me", me)


def principal(request: web.Request) -> Principal:
    p: Principal = request[PRINCIPAL]
    return p


def _token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[len("Bearer "):].strip() or None
    return request.cookies.get(COOKIE) or None


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/api/") or request.path in PUBLIC:
        return await handler(request)
    token = _token(request)
    found = await request.app[ACCESS].authenticate(token) if token else None
    if found is None:
        return web.json_response({"error": "login required"}, status=401)
    request[PRINCIPAL] = found
    request[TOKEN] = token or ""
    return await handler(request)


async def login(request: web.Request) -> web.Response:
    counter = request.app[LOGINS]
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not all(
        isinstance(body.get(k), str) and 0 < len(body[k]) <= 256 for k in ("username", "password")
    ):
        counter.labels("bad_request").inc()
        return web.json_response(
            {"error": "body must be JSON with string username and password"}, status=400
        )
    access = request.app[ACCESS]
    try:
        session = await access.login(body["username"], body["password"], request.remote)
    except LoginRefused as err:
        if err.throttled:
            counter.labels("throttled").inc()
            log.warning("login throttled for a user name or address (see the audit log)")
            return web.json_response(
                {"error": str(err)}, status=429,
                headers={"Retry-After": str(err.retry_after_s)},
            )
        counter.labels("failed").inc()
        return web.json_response({"error": str(err)}, status=401)
    counter.labels("succeeded").inc()
    response = web.json_response(
        {"user": _me(session.principal), "token": session.token, "expires_ms": session.expires_ms}
    )
    secure = access.config.cookie_secure
    if secure == "auto":  # a browser keeps no Secure cookie from http://, except on loopback
        secure = not clients.plain_http_on_loopback(request)
    response.set_cookie(
        COOKIE, session.token, max_age=access.config.session_ttl_s, httponly=True,
        samesite="Strict", secure=secure, path="/",
    )
    return response


async def logout(request: web.Request) -> web.Response:
    await request.app[ACCESS].logout(request[TOKEN], principal(request), request.remote)
    response = web.json_response({"ok": True})
    response.del_cookie(COOKIE, path="/")
    return response


async def me(request: web.Request) -> web.Response:
    return web.json_response(_me(principal(request)))


def _me(p: Principal) -> dict[str, Any]:
    return {
        "username": p.username, "role": p.role, "display_name": p.display_name,
        "locations": list(p.locations), "residents": list(p.residents),
    }
