"""The cloud's VAPID key pair: made on first start, kept in the database, signs push JWTs."""

from __future__ import annotations

import base64
import logging

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02
from sqlalchemy import select

from cloud.notify.tables import vapid_keys
from cloud.store import Store

log = logging.getLogger(__name__)
JWT_LIFETIME_S = 12 * 3600  # push services refuse more than 24 h


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def public_bytes(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


class VapidKeys:
    def __init__(self, private_key: ec.EllipticCurvePrivateKey, subject: str) -> None:
        self._vapid = Vapid02(private_key)
        self.subject = subject
        self.public_key = b64url(public_bytes(private_key.public_key()))

    def authorization(self, audience: str, now_s: int) -> str:
        """The `Authorization: vapid t=…,k=…` header for one push service origin."""
        claims = {"aud": audience, "exp": now_s + JWT_LIFETIME_S, "sub": self.subject}
        return str(self._vapid.sign(claims)["Authorization"])

    @classmethod
    async def load_or_create(cls, store: Store, subject: str, now_ms: int) -> VapidKeys:
        """One key pair per deployment; the database settles a race between workers."""
        row = await _read(store)
        if row is None:
            key = ec.generate_private_key(ec.SECP256R1())
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode()
            stmt = store.insert(vapid_keys).values(
                id=1, private_pem=pem, public_key=b64url(public_bytes(key.public_key())),
                created_ms=now_ms,
            ).on_conflict_do_nothing(index_elements=["id"])
            async with store.engine.begin() as conn:
                created = (await conn.execute(stmt)).rowcount == 1
            if created:
                log.info("VAPID key pair generated")
            row = await _read(store)
            assert row is not None
        private = serialization.load_pem_private_key(row.encode(), password=None)
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        return cls(private, subject)


async def _read(store: Store) -> str | None:
    async with store.engine.connect() as conn:
        value = (
            await conn.execute(select(vapid_keys.c.private_pem).where(vapid_keys.c.id == 1))
        ).scalar_one_or_none()
    return None if value is None else str(value)
