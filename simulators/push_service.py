"""A local Web Push service that checks what a real one checks (tests and benchmarks).

It verifies the VAPID header independently of py_vapid (ES256 with `cryptography`, `aud`,
`exp`), decrypts the aes128gcm body with `http_ece` using the subscription's private key and
auth secret, and can be told to answer 410 or 500 for a subscription.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import http_ece
from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from shouwang.clock import Clock
from shouwang.services import free_port


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class BrowserSubscription:
    """What a browser keeps: its ECDH key pair and auth secret (RFC 8291)."""

    id: str
    endpoint: str
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes

    def to_json(self) -> dict[str, Any]:
        public = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": self.endpoint,
            "expirationTime": None,
            "keys": {"p256dh": b64url(public), "auth": b64url(self.auth)},
        }


@dataclass
class Push:
    subscription: str
    payload: dict[str, Any]
    headers: dict[str, str]


@dataclass
class PushService:
    clock: Clock
    port: int = field(default_factory=free_port)
    expected_key: str | None = None  # the cloud's VAPID public key, once known
    subscriptions: dict[str, BrowserSubscription] = field(default_factory=dict)
    received: list[Push] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # why each refused request was refused
    answers: dict[str, list[int]] = field(default_factory=dict)  # forced statuses, in order
    requests: int = 0

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def subscribe(self) -> BrowserSubscription:
        sub_id = b64url(os.urandom(9))
        sub = BrowserSubscription(
            sub_id,
            f"{self.origin}/push/{sub_id}",
            ec.generate_private_key(ec.SECP256R1()),
            os.urandom(16),
        )
        self.subscriptions[sub_id] = sub
        return sub

    def of(self, sub: BrowserSubscription) -> list[Push]:
        return [p for p in self.received if p.subscription == sub.id]

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        sub = self.subscriptions.get(request.match_info["id"])
        if sub is None:
            return self._refuse(404, "unknown subscription")
        problem = self._check_vapid(request.headers.get("Authorization", ""))
        if problem:
            return self._refuse(403, problem)
        if request.headers.get("Content-Encoding") != "aes128gcm":
            return self._refuse(400, "Content-Encoding must be aes128gcm")
        if "TTL" not in request.headers:
            return self._refuse(400, "TTL header missing")
        body = await request.read()
        if len(body) > 4096:
            return self._refuse(413, "payload over 4096 bytes")
        forced = self.answers.get(sub.id)
        if forced:
            return web.Response(status=forced.pop(0))
        try:
            plain = http_ece.decrypt(
                body, private_key=sub.private_key, auth_secret=sub.auth, version="aes128gcm"
            )
        except http_ece.ECEException as err:
            return self._refuse(400, f"cannot decrypt: {err.message}")
        self.received.append(Push(sub.id, json.loads(plain), dict(request.headers)))
        return web.Response(status=201)

    def _refuse(self, status: int, why: str) -> web.Response:
        self.refused.append(why)
        return web.Response(status=status, text=why)

    def _check_vapid(self, header: str) -> str | None:
        scheme, _, params = header.partition(" ")
        if scheme.lower() != "vapid":
            return "Authorization scheme is not vapid"
        parts = dict(p.strip().split("=", 1) for p in params.split(",") if "=" in p)
        token, key = parts.get("t"), parts.get("k")
        if not token or not key:
            return "vapid t= or k= missing"
        if self.expected_key is not None and key != self.expected_key:
            return "k is not the application server key the subscription was made with"
        try:
            head_b64, claims_b64, sig_b64 = token.split(".")
            header_json = json.loads(unb64url(head_b64))
            claims = json.loads(unb64url(claims_b64))
            sig = unb64url(sig_b64)
            public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(key))
        except ValueError as err:
            return f"malformed JWT or key: {err}"
        if header_json.get("alg") != "ES256" or len(sig) != 64:
            return "JWT is not ES256"
        der = encode_dss_signature(int.from_bytes(sig[:32]), int.from_bytes(sig[32:]))
        try:
            public.verify(der, f"{head_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return "JWT signature does not verify"
        if claims.get("aud") != self.origin:
            return f"aud {claims.get('aud')!r} is not {self.origin}"
        now_s = self.clock.now_ms() // 1000
        exp = claims.get("exp")
        if not isinstance(exp, int) or not now_s < exp <= now_s + 24 * 3600:
            return f"exp {exp!r} not within the next 24 h"
        if not str(claims.get("sub", "")).startswith(("mailto:", "https://")):
            return "sub is not a contact"
        return None


@contextlib.asynccontextmanager
async def running_push_service(clock: Clock) -> AsyncIterator[PushService]:
    service = PushService(clock)
    app = web.Application()
    app.router.add_post("/push/{id}", service.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", service.port).start()
    try:
        yield service
    finally:
        await runner.cleanup()
