"""Cross-site request forgery: who may change state with a user's cookie.

SameSite=Strict is not enough: a page on the same host and another port (or a sibling
subdomain) is the same *site*, so the browser sends the cookie with its requests. Two rules,
in one middleware after the login check, close that:

- **JSON only.** Every POST, PUT, PATCH and DELETE under `/api/` carries a JSON object with
  `Content-Type: application/json` (`415` otherwise, `400` for a missing body). A form or a
  "simple" cross-origin fetch cannot send that content type without a CORS preflight, which
  this server never grants.
- **Our own origin.** The same requests, and the WebSocket upgrade at `/api/ws`, must come
  from the server's own origin (the `Origin` header's host and port equal the `Host` the
  browser addressed) or from one of `access.allowed_origins`; a `Sec-Fetch-Site` of
  `same-site` or `cross-site` is refused unless the `Origin` is an allowed one (`403`).

A request that carries `Authorization: Bearer` and no session cookie is not checked for
origin: a browser never adds that header to a cross-site request by itself, and a foreign
page cannot know the token, so such a request (a gateway, a script, the CLI) is not forgeable.
A request with neither `Origin` nor `Sec-Fetch-Site` comes from no browser and is not checked
for origin either; it still has to send JSON. Every refusal is counted in
`shouwang_http_refused_total{reason=origin|content_type|body}`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

log = logging.getLogger(__name__)
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
WEBSOCKET = "/api/ws"
SAME = frozenset({"same-origin", "none"})  # Sec-Fetch-Site values of a page's own requests
DEFAULT_PORT = {"http": 80, "https": 443, "ws": 80, "wss": 443}
ALLOWED: web.AppKey[frozenset[str]] = web.AppKey("allowed_origins", frozenset)
REFUSED: web.AppKey[Any] = web.AppKey("http_refused")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def setup(app: web.Application, allowed_origins: list[str], refused: Any, cookie: str) -> None:
    """`refused`: a counter labelled by reason; `cookie`: the session cookie's name."""
    app[ALLOWED] = frozenset(o.rstrip("/").lower() for o in allowed_origins)
    app[REFUSED] = refused

    @web.middleware
    async def same_origin(request: web.Request, handler: Handler) -> web.StreamResponse:
        changes = request.method in STATE_CHANGING
        if not (changes or request.path == WEBSOCKET):
            return await handler(request)
        problem = None if _bearer_only(request, cookie) else _foreign(request)
        if problem is not None:
            return _refuse(request, 403, "origin", f"cross-origin request refused: {problem}")
        if changes and request.path.startswith("/api/"):
            if request.content_type != "application/json":
                return _refuse(request, 415, "content_type",
                               "Content-Type must be application/json")
            if not request.body_exists or request.content_length == 0:
                return _refuse(request, 400, "body", "a JSON object body is required ({} when "
                               "there is nothing to say)")
        return await handler(request)

    app.middlewares.append(same_origin)


def _bearer_only(request: web.Request, cookie: str) -> bool:
    return request.headers.get("Authorization", "").startswith("Bearer ") and (
        cookie not in request.cookies
    )


def _foreign(request: web.Request) -> str | None:
    """Why `request` is not from our own or an allowed origin; None when it is."""
    allowed = request.app[ALLOWED]
    origin = request.headers.get("Origin")
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if origin is not None:
        if origin.rstrip("/").lower() in allowed:
            return None
        if not _same_host(origin, request.host):
            return f"Origin {origin[:200]!r} is not this server's (access.allowed_origins)"
    if fetch_site is not None and fetch_site.lower() not in SAME:
        return f"Sec-Fetch-Site is {fetch_site[:40]!r}"
    return None


def _same_host(origin: str, host: str) -> bool:
    """Whether `origin` names the host and port the browser addressed (`Host`). The scheme is
    not compared: behind a proxy that ends TLS the server sees http for an https page."""
    try:
        o = urlsplit(origin)
        h = urlsplit(f"//{host}")
        if not o.hostname or not h.hostname or o.scheme not in DEFAULT_PORT:
            return False
        default = DEFAULT_PORT[o.scheme]
        return (o.hostname, o.port or default) == (h.hostname, h.port or default)
    except ValueError:  # a port that is not a number
        return False


def _refuse(request: web.Request, status: int, reason: str, message: str) -> web.Response:
    request.app[REFUSED].labels(reason).inc()
    log.debug("refused %s %s: %s", request.method, request.path, message)
    return web.json_response({"error": message}, status=status)
