"""HTTP routes: the VAPID public key, push subscriptions, and the family page's PWA files."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec

from cloud.notify.dispatcher import Dispatcher
from cloud.notify.plugins.webpush import WebPushNotifier
from cloud.notify.tables import delete_subscription, save_subscription
from cloud.notify.vapid import b64url_decode

log = logging.getLogger(__name__)
FAMILY_DIR = Path(__file__).resolve().parents[1] / "dashboard" / "family"
CurrentUser = Callable[[web.Request], Awaitable[str | None]]
MAX_ENDPOINT = 2048


def subscription_id(endpoint: str) -> str:
    return hashlib.sha256(endpoint.encode()).hexdigest()[:32]


def push_routes(app: web.Application, current_user: CurrentUser, dispatcher: Dispatcher) -> None:
    """`GET /api/push/vapid-public-key`, `POST` and `DELETE /api/push/subscriptions`.

    `current_user` returns the logged-in user's id or None; login is not this module's job.
    """

    def webpush() -> WebPushNotifier | None:
        notifier = dispatcher.notifiers.get("webpush")
        return notifier if isinstance(notifier, WebPushNotifier) else None

    async def public_key(request: web.Request) -> web.Response:
        push = webpush()
        if push is None:
            return _error(404, "web push is not enabled")
        return web.json_response({"public_key": push.keys.public_key})

    async def subscribe(request: web.Request) -> web.Response:
        user = await current_user(request)
        if user is None:
            return _error(401, "log in first")
        push = webpush()
        if push is None:
            return _error(404, "web push is not enabled")
        body = await _json_object(request)
        if isinstance(body, web.Response):
            return body
        problem = check_subscription(body, allow_http=push.config.allow_http_endpoints,
                                     hosts=push.config.endpoint_hosts)
        if problem:
            return _error(400, problem)
        endpoint = body["endpoint"]
        sub_id = subscription_id(endpoint)
        await save_subscription(dispatcher.store, {
            "id": sub_id,
            "user_id": user,
            "endpoint": endpoint,
            "p256dh": body["keys"]["p256dh"],
            "auth": body["keys"]["auth"],
            "created_ms": dispatcher.clock.now_ms(),
        })
        log.info("push subscription %s saved for user %s", sub_id, user)
        return web.json_response({"id": sub_id}, status=201)

    async def unsubscribe(request: web.Request) -> web.Response:
        user = await current_user(request)
        if user is None:
            return _error(401, "log in first")
        body = await _json_object(request)
        if isinstance(body, web.Response):
            return body
        endpoint = body.get("endpoint")
        if not isinstance(endpoint, str):
            return _error(400, "endpoint must be a string")
        if not await delete_subscription(dispatcher.store, subscription_id(endpoint), user):
            return _error(404, "no such subscription for this user")
        return web.Response(status=204)

    app.router.add_get("/api/push/vapid-public-key", public_key)
    app.router.add_post("/api/push/subscriptions", subscribe)
    app.router.add_delete("/api/push/subscriptions", unsubscribe)


def family_routes(app: web.Application) -> None:
    """The family page and its PWA files under `/family/` (the service worker's scope)."""

    async def page(request: web.Request) -> web.FileResponse:
        return web.FileResponse(FAMILY_DIR / "index.html")

    async def worker(request: web.Request) -> web.FileResponse:
        # Served from /family/ so its scope covers the page; never cached stale.
        return web.FileResponse(
            FAMILY_DIR / "sw.js",
            headers={"Content-Type": "text/javascript", "Cache-Control": "no-cache"},
        )

    async def manifest(request: web.Request) -> web.FileResponse:
        return web.FileResponse(
            FAMILY_DIR / "manifest.json", headers={"Content-Type": "application/manifest+json"}
        )

    app.router.add_get("/family/", page)
    app.router.add_get("/family/sw.js", worker)
    app.router.add_get("/family/manifest.json", manifest)
    app.router.add_static("/family/static", FAMILY_DIR, show_index=False)


def check_subscription(
    body: dict[str, Any], *, allow_http: bool, hosts: tuple[str, ...] = ()
) -> str | None:
    """None when `body` is a browser's PushSubscription.toJSON() we can deliver to."""
    endpoint = body.get("endpoint")
    if not isinstance(endpoint, str) or not 0 < len(endpoint) <= MAX_ENDPOINT:
        return f"endpoint must be a URL of at most {MAX_ENDPOINT} characters"
    parts = urlsplit(endpoint)
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes or not parts.hostname:
        return "endpoint must be an https URL"
    if hosts and not any(
        parts.hostname == h or (h.startswith(".") and parts.hostname.endswith(h)) for h in hosts
    ):
        return f"endpoint host {parts.hostname} is not a known push service"
    keys = body.get("keys")
    if not isinstance(keys, dict):
        return "keys must be an object with p256dh and auth"
    try:
        p256dh = b64url_decode(str(keys.get("p256dh", "")))
        auth = b64url_decode(str(keys.get("auth", "")))
    except ValueError:
        return "keys.p256dh and keys.auth must be base64url"
    try:
        if len(p256dh) != 65:
            raise ValueError("not an uncompressed point")
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), p256dh)
    except ValueError:
        return "keys.p256dh must be an uncompressed P-256 public key"
    if len(auth) != 16:
        return "keys.auth must be 16 bytes"
    return None


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _json_object(request: web.Request) -> dict[str, Any] | web.Response:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _error(400, "request body is not JSON")
    if not isinstance(body, dict):
        return _error(400, "request body must be a JSON object")
    return body
