"""Evidence (snapshots, clips) kept on the gateway and uploaded to the cloud over HTTP.

A producer (a camera worker, a rule) hands the bytes to `EvidenceSpool.add`: they are written
to `data_dir/evidence/{sha256}` (temporary file, fsync, rename: a crash leaves the old state or
the new, never half a file) and an `evidence` envelope naming the hash goes into the outbox's
bulk class in the same step. When the uplink reaches that row it first uploads the bytes
(`PUT {url}/ingest/evidence/{sha256}`, the site's token as a bearer credential); the cloud hashes
what it received and refuses a mismatch. Only then is the envelope published, and once the
cloud confirms it the row and the file go. An upload that fails leaves the row where it is, to
be tried again after a back-off; nothing is deleted on the edge before the cloud has both.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from pydantic import Field, HttpUrl

from edge.outbox import NewRow, Outbox, Priority
from shouwang.backoff import Backoff
from shouwang.config import ConfigError, Strict
from shouwang.protocol import make_envelope, site_up_topic

log = logging.getLogger(__name__)
MAX_EVIDENCE_BYTES = 64 * 1024 * 1024
CONTENT_TYPES = ("image/jpeg", "image/png", "video/mp4")


class EvidenceConfig(Strict):
    url: HttpUrl = Field(description="The cloud's HTTP base URL, e.g. https://cloud.example:8080")
    token_file: Path = Field(
        description="File holding this site's upload token (never in the YAML: it is a secret)"
    )
    timeout_s: float = Field(60.0, gt=0, description="One upload may take this long")
    retry_max_s: float = Field(
        300.0, gt=0, description="Back-off cap between failed uploads (doubling from 1 s)"
    )

    def token(self) -> str:
        try:
            return self.token_file.read_text().strip()
        except OSError as err:
            raise ConfigError(
                f"evidence.token_file {self.token_file}: cannot read: {err.strerror}"
            ) from err


class UploadFailed(Exception):
    """The cloud did not take the bytes; `permanent` when sending them again cannot help."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class EvidenceSpool:
    """Evidence files on the gateway's disk, and their uploads."""

    def __init__(self, site: str, directory: Path, outbox: Outbox) -> None:
        self.site = site
        self.directory = directory
        self.outbox = outbox
        self.topic = site_up_topic(site, "evidence")
        self.refused = 0  # evidence not kept: a full disk, a failed write

    def path(self, sha256: str) -> Path:
        return self.directory / sha256

    async def add(
        self,
        data: bytes,
        *,
        content_type: str,
        device: str,
        ts: int,
        alert: str | None = None,
        now_ms: int,
        envelope_id: str | None = None,
        kind: str | None = None,
    ) -> str | None:
        """Keep `data` and queue it for the cloud; returns its SHA-256 (hex). `envelope_id`
        (derived from what asked for it) makes a second add of the same evidence a no-op;
        `kind` says what it is (cloud/evidence.py KINDS: snapshot, marked, launch, clip, ...).

        None when it could not be kept: the disk is full (evidence is bulk, the first class
        a full disk sheds, and a clip must not take the room held for life-safety) or a write
        failed. That is logged and counted in `refused`, never raised: a camera worker
        goes on."""
        if content_type not in CONTENT_TYPES:
            raise ValueError(f"content_type {content_type!r} is not one of {CONTENT_TYPES}")
        if not 0 < len(data) <= MAX_EVIDENCE_BYTES:
            raise ValueError(f"evidence of {len(data)} bytes is empty or over the limit")
        digest = hashlib.sha256(data).hexdigest()
        if self.outbox.disk.full:
            self._refuse(digest, device, "the disk is full")
            return None
        try:
            await asyncio.to_thread(self._write, digest, data)
        except OSError as err:
            self.outbox.disk.write_failed(err)
            self._refuse(digest, device, f"not written: {err}")
            return None
        body = {
            "sha256": digest,
            "size": len(data),
            "content_type": content_type,
            "alert": alert,
            "captured_ts": ts,
        }
        if kind is not None:
            body["kind"] = kind
        envelope = make_envelope(
            site=self.site, device=device, kind="evidence", body=body, ts=ts, id=envelope_id
        )
        try:
            await self.outbox.put_many(
                [NewRow(envelope.id, Priority.BULK, self.topic, envelope.to_bytes(), 1, ts, ts)],
                now_ms,
            )
        except sqlite3.Error as err:
            # No row names the file now: it goes (unless an earlier row still needs it; and if
            # even that cannot be read, the sweep at the next start takes it).
            with contextlib.suppress(sqlite3.Error):
                await self.forget([digest])
            self._refuse(digest, device, f"not queued: {err}")
            return None
        return digest

    def _refuse(self, digest: str, device: str, why: str) -> None:
        self.refused += 1
        log.error("evidence %s from %s not kept: %s", digest, device, why)

    def _write(self, digest: str, data: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.path(digest)
        if final.exists():
            return  # content-addressed: the same bytes are already kept
        partial = final.with_suffix(".partial")
        try:
            with partial.open("wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError:
            partial.unlink(missing_ok=True)  # what it took goes back to the disk
            raise
        partial.rename(final)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives power loss
        finally:
            os.close(dir_fd)

    async def forget(self, digests: list[str]) -> None:
        """The cloud confirmed evidence envelopes: their files go, unless a row still needs one."""
        for digest in digests:
            if not await self.outbox.mentions(Priority.BULK, digest.encode()):
                await asyncio.to_thread(self.path(digest).unlink, True)

    async def sweep(self) -> int:
        """At start: delete kept files no outbox row names (confirmed before a restart)."""
        names = await asyncio.to_thread(
            lambda: [p.name for p in self.directory.glob("*")] if self.directory.exists() else []
        )
        removed = 0
        for name in names:
            if name.endswith(".partial") or not await self.outbox.mentions(
                Priority.BULK, name.encode()
            ):
                await asyncio.to_thread(self.path(name).unlink, True)
                removed += 1
        return removed


class EvidenceUploader:
    """Uploads evidence bytes before their envelope is published; one HTTP session."""

    def __init__(self, config: EvidenceConfig, spool: EvidenceSpool) -> None:
        self.config = config
        self.spool = spool
        self.uploaded = 0
        self.failures = 0
        self._token = config.token()
        self._session: aiohttp.ClientSession | None = None
        self._retry_at = 0.0
        self._backoff = Backoff(1.0, max(1.0, self.config.retry_max_s))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def ready(self) -> bool:
        """False while backing off after a failed upload."""
        return time.monotonic() >= self._retry_at

    @property
    def retry_at(self) -> float:
        """Monotonic second from which the next upload may be tried."""
        return self._retry_at

    async def upload(self, payload: bytes) -> None:
        """Upload the bytes an evidence envelope names; raises UploadFailed."""
        body: dict[str, Any] = orjson.loads(payload)["body"]
        digest = body["sha256"]
        try:
            data = await asyncio.to_thread(self.spool.path(digest).read_bytes)
        except FileNotFoundError as err:
            raise UploadFailed(f"evidence {digest} is not on disk", permanent=True) from err
        if hashlib.sha256(data).hexdigest() != digest:
            raise UploadFailed(f"evidence {digest} on disk does not match its hash", True)
        if self._session is None:
            self._session = aiohttp.ClientSession()
        url = f"{str(self.config.url).rstrip('/')}/ingest/evidence/{digest}"
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Content-Type": body["content_type"],
            "X-Shouwang-Site": self.spool.site,
        }
        try:
            async with self._session.put(
                url,
                data=data,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.config.timeout_s),
            ) as res:
                if res.status in (200, 201):
                    self.uploaded += 1
                    self._backoff.reset()
                    return
                detail = (await res.text())[:200]
                self._failed()
                # Malformed, too large, wrong type: the same bytes get the same answer. A wrong
                # token (401/403) is an installer's fix, a hash mismatch (422) damage in
                # transit: both are worth trying again.
                permanent = res.status in (400, 413, 415)
                raise UploadFailed(f"cloud answered {res.status}: {detail}", permanent)
        except (aiohttp.ClientError, TimeoutError) as err:
            self._failed()
            raise UploadFailed(f"upload of {digest} failed: {err!r}") from err

    def _failed(self) -> None:
        self.failures += 1
        self._retry_at = time.monotonic() + self._backoff.next()
