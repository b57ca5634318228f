"""Web Push (RFC 8030/8291/8292): aes128gcm payloads with http_ece, VAPID, POST with aiohttp.

pywebpush would do the same over `requests`, which blocks; here the only blocking work is a
few microseconds of elliptic-curve maths per message, and the HTTP goes through the process's
one aiohttp session.
"""

from __future__ import annotations

import logging
import os
from urllib.parse import urlsplit

import aiohttp
import http_ece
import orjson
from cryptography.hazmat.primitives.asymmetric import ec

from cloud.notify.message import Message, Outcome, Target, fingerprint
from cloud.notify.registry import Context, Notifier, register
from cloud.notify.tables import delete_subscription, subscriptions_of
from cloud.notify.vapid import VapidKeys, b64url_decode

log = logging.getLogger(__name__)
DELIVERED = frozenset({200, 201, 202})
GONE = frozenset({404, 410})


def origin(endpoint: str) -> str:
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.netloc}"


def encrypt(payload: bytes, p256dh: str, auth: str) -> bytes:
    """RFC 8291 aes128gcm: a fresh sender key per message, its public key in the header."""
    sender = ec.generate_private_key(ec.SECP256R1())
    return bytes(
        http_ece.encrypt(
            payload,
            salt=os.urandom(16),
            private_key=sender,
            dh=b64url_decode(p256dh),
            auth_secret=b64url_decode(auth),
            version="aes128gcm",
        )
    )


@register
class WebPushNotifier(Notifier):
    channel = "webpush"

    def __init__(self, ctx: Context, keys: VapidKeys) -> None:
        self.ctx = ctx
        self.keys = keys
        self.config = ctx.config.webpush

    @classmethod
    async def create(cls, ctx: Context) -> WebPushNotifier | None:
        if not ctx.config.webpush.enabled:
            return None
        keys = await VapidKeys.load_or_create(
            ctx.store, ctx.config.webpush.subject, ctx.clock.now_ms()
        )
        return cls(ctx, keys)

    async def targets(self, recipient: str) -> list[Target]:
        kind, _, ident = recipient.partition(":")
        if kind != "user":  # subscriptions belong to people; a role reaches them via Apprise
            return []
        return [
            Target(
                self.channel,
                key=row["id"],
                shown=f"webpush:{urlsplit(row['endpoint']).hostname}…#{fingerprint(row['id'])}",
                secret=row,
            )
            for row in await subscriptions_of(self.ctx.store, ident)
        ]

    async def send(self, target: Target, message: Message) -> Outcome:
        sub = target.secret
        body = encrypt(orjson.dumps(message.push_payload()), sub["p256dh"], sub["auth"])
        now_s = self.ctx.clock.now_ms() // 1000
        headers = {
            "Authorization": self.keys.authorization(origin(sub["endpoint"]), now_s),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "TTL": str(self.config.ttl_s),
            "Urgency": "high" if message.critical else "normal",
        }
        timeout = aiohttp.ClientTimeout(total=self.config.timeout_s)
        try:
            async with self.ctx.http.post(
                sub["endpoint"], data=body, headers=headers, timeout=timeout
            ) as res:
                status = res.status
                await res.read()
        except (aiohttp.ClientError, TimeoutError) as err:
            return Outcome(False, reason=f"push service unreachable: {type(err).__name__}",
                           transient=True)
        if status in DELIVERED:
            return Outcome(True, status=status)
        if status in GONE:
            return Outcome(False, status=status, reason="subscription expired", gone=True)
        transient = status == 429 or status >= 500
        return Outcome(False, status=status, reason=f"push service answered {status}",
                       transient=transient)

    async def forget(self, target: Target) -> None:
        await delete_subscription(self.ctx.store, target.key)
