"""The cloud's Ed25519 key that signs evidence packages: made on first start, kept in the database.

In the database, not a file, for the reason the VAPID keys are (cloud/notify/vapid.py): every
API worker, on any machine, must sign with the same key, and the database settles the race of
several workers starting together (one row per purpose; the first insert wins, everyone reads
it back). A backup of the database therefore holds the private key: docs/evidence.md says so.
"""

from __future__ import annotations

import logging

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import BigInteger, Column, String, Table, Text, select

from cloud.schema import metadata
from cloud.store import Store
from shouwang.evidence_package import public_key_info, public_key_pem

log = logging.getLogger(__name__)
PURPOSE = "evidence"

signing_keys = Table(
    "signing_keys",
    metadata,
    Column("purpose", String(32), primary_key=True),  # one key per purpose: "evidence"
    Column("algorithm", String(16), nullable=False),  # "Ed25519"
    Column("private_pem", Text, nullable=False),  # PKCS#8, unencrypted (see the module doc)
    Column("public_key", String(64), nullable=False),  # raw 32 bytes, base64
    Column("created_ms", BigInteger, nullable=False),
)


class EvidenceKey:
    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private = private_key
        self.public_key = private_key.public_key()
        self.info = public_key_info(self.public_key)
        self.pem = public_key_pem(self.public_key)

    def sign(self, data: bytes) -> bytes:
        return self._private.sign(data)

    @classmethod
    async def load_or_create(cls, store: Store, now_ms: int) -> EvidenceKey:
        pem = await _read(store)
        if pem is None:
            key = Ed25519PrivateKey.generate()
            stmt = store.insert(signing_keys).values(
                purpose=PURPOSE, algorithm="Ed25519",
                private_pem=key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ).decode(),
                public_key=public_key_info(key.public_key())["public_key"], created_ms=now_ms,
            ).on_conflict_do_nothing(index_elements=["purpose"])
            async with store.engine.begin() as conn:
                created = (await conn.execute(stmt)).rowcount == 1
            pem = await _read(store)
            assert pem is not None
            if created:
                log.info("evidence signing key generated: %s",
                         public_key_info(key.public_key())["fingerprint"])
        private = serialization.load_pem_private_key(pem.encode(), password=None)
        if not isinstance(private, Ed25519PrivateKey):
            raise ValueError("signing_keys: the evidence key in the database is not Ed25519")
        return cls(private)

    async def handle_public_key(self, request: web.Request) -> web.Response:
        """Public, no login: whoever checks a package needs the key, not an account."""
        form = request.query.get("format", "json")
        if form == "pem":
            return web.Response(text=self.pem, content_type="application/x-pem-file")
        if form != "json":
            return web.json_response({"error": "format: json or pem"}, status=400)
        return web.json_response({**self.info, "pem": self.pem})


async def _read(store: Store) -> str | None:
    async with store.engine.connect() as conn:
        value = (
            await conn.execute(
                select(signing_keys.c.private_pem).where(signing_keys.c.purpose == PURPOSE)
            )
        ).scalar_one_or_none()
    return None if value is None else str(value)
