"""Evidence in the cloud: content-addressed uploads from gateways, verified by their hash.

A gateway uploads the bytes with `PUT /ingest/evidence/{sha256}` (its site token as a bearer
credential), then publishes an `evidence` envelope naming the hash and the alert it belongs
to. The upload is hashed as it arrives and refused when the hash differs; a blob this site
already uploaded is answered 200 without being read again, so retries are free of side effects.
Blobs are written to a temporary file, fsynced and renamed, so a crash never leaves half a file
under a hash.

A blob is shared by hash, but not across sites: each site's upload is recorded
(`evidence_uploads`), and an `evidence` envelope may name only a blob its own site uploaded. A
site that sends a blob another site holds must send all of its bytes, which are hashed as any
upload: knowing a hash is not having the picture.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from aiohttp import web
from pydantic import Field
from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    exists,
    select,
)

from cloud.schema import metadata
from cloud.store import Store
from shouwang.config import ConfigError, Strict
from shouwang.protocol import _ID_RE, Envelope, is_int64

if TYPE_CHECKING:
    from cloud.evidence_key import EvidenceKey
    from shouwang.metrics import Metrics

log = logging.getLogger(__name__)
CONTENT_TYPES = ("image/jpeg", "image/png", "video/mp4")
MAX_BYTES = 64 * 1024 * 1024
_SHA256 = re.compile(r"^[0-9a-f]{64}\Z")
# What a piece of evidence is, as the camera worker names it (docs/video.md): the snapshot as
# seen, the snapshot with a thrown object's track and candidate windows drawn, the launch area
# enlarged, the clip as the camera sent it, the clip with the track drawn, a face crop.
KINDS = ("snapshot", "marked", "launch", "clip", "marked_clip", "crop")

evidence = Table(
    "evidence",
    metadata,
    Column("id", String(64), primary_key=True),  # the envelope id
    Column("site", String(64), nullable=False),
    Column("device", String(64), nullable=False),
    Column("sha256", String(64), nullable=False, index=True),
    Column("size", Integer, nullable=False),
    Column("content_type", String(32), nullable=False),
    Column("alert_id", String(64), index=True),
    Column("captured_ts", BigInteger, nullable=False),
    Column("received_ms", BigInteger, nullable=False),
    # Revision 0012: what it is (KINDS); null from gateways that do not say.
    Column("kind", String(16)),
)

# Revision 0009: which site uploaded which blob (its bytes, hashed here).
evidence_uploads = Table(
    "evidence_uploads",
    metadata,
    Column("site", String(64), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size", Integer, nullable=False),
    Column("uploaded_ms", BigInteger, nullable=False),
    PrimaryKeyConstraint("site", "sha256"),
)


class EvidenceConfig(Strict):
    dir: Path = Field(Path("var/cloud/evidence"), description="Where uploaded blobs are kept")
    site_tokens_file: Path | None = Field(
        None,
        description="YAML mapping each site id to the SHA-256 (hex) of its upload token; "
        "without it, uploads are refused",
    )
    view_audit_window_s: float = Field(
        300, gt=0, le=86400,
        description="Views of one blob by one user from one address within this many seconds "
        "are one `evidence_read` row (a video's range requests, a re-opened detail); every "
        "view is recorded at least once per window",
    )
    package_builds: int = Field(
        2, ge=1, le=16,
        description="Evidence packages one API process builds at once (each is written to a "
        "temporary file beside the blobs, up to the size of its clips); more requests wait",
    )

    def token_hashes(self) -> dict[str, str]:
        if self.site_tokens_file is None:
            return {}
        try:
            data = yaml.safe_load(self.site_tokens_file.read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"evidence.site_tokens_file {self.site_tokens_file}: {err}") from err
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and _SHA256.match(v) for k, v in data.items()
        ):
            raise ConfigError(
                f"evidence.site_tokens_file {self.site_tokens_file}: expected a mapping of "
                "site id to a 64-character SHA-256 hex digest of its token"
            )
        return dict(data)


class SiteTokens:
    """The sites' upload token hashes, followed as `shouwang cloud provision` rewrites them.

    `provision --site ID` (a new site), `--rotate` and `--revoke` take effect at the next
    upload, without restarting the cloud: each upload stats the file (microseconds) and reads it
    again when it changed (the provisioning writes it to a new file and renames it, so a
    change shows as another inode, size or time). A file written within `RACY_S` of its reading
    could change again without its time changing on a coarse clock, so until it is older than
    that it is read at every upload (git's "racily clean" rule). A file that cannot be read or
    parsed any more refuses every token until it is mended: a revocation must never be undone
    by a broken file.
    """

    RACY_S = 2.0

    def __init__(self, config: EvidenceConfig, metrics: Metrics | None = None) -> None:
        self.config = config
        self.path = config.site_tokens_file
        self._hashes = config.token_hashes()  # a broken file at start stops start-up
        self._seen = self._signature()
        self._racy = self._is_racy(self._seen)
        self._failed: tuple[int, int, int, int] | None = None
        self._reloads = self._count = None
        if metrics is not None:
            self._reloads = metrics.counter(
                "shouwang_evidence_token_reloads",
                "Times the site tokens file was read again after a change, by result",
                ["result"])
            self._count = metrics.gauge(
                "shouwang_evidence_site_tokens", "Sites with an evidence upload token now")
            self._count.set(len(self._hashes))

    def hashes(self) -> dict[str, str]:
        """Site -> SHA-256 of its token, as the file says now."""
        if self.path is None:
            return self._hashes
        signature = self._signature()
        if signature != self._seen or self._racy:
            self._reload(signature)
        return self._hashes

    def _reload(self, signature: tuple[int, int, int, int] | None) -> None:
        try:
            hashes = self.config.token_hashes()
        except ConfigError as err:
            self._hashes = {}
            if signature != self._failed:  # once per broken version, not once per upload
                log.error("%s; every evidence upload is refused until it is mended", err)
                self._failed = signature
            self._mark("failed")
        else:
            changed = hashes != self._hashes
            self._hashes, self._failed = hashes, None
            if changed:
                log.info("evidence site tokens re-read from %s: %d sites", self.path,
                         len(hashes))
                self._mark("ok")
        self._seen, self._racy = signature, self._is_racy(signature)

    def _mark(self, result: str) -> None:
        if self._reloads is not None and self._count is not None:
            self._reloads.labels(result).inc()
            self._count.set(len(self._hashes))

    def _signature(self) -> tuple[int, int, int, int] | None:
        if self.path is None:
            return None
        try:
            st = self.path.stat()
        except OSError:
            return None  # gone: read (and refuse) until it is back
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def _is_racy(self, signature: tuple[int, int, int, int] | None) -> bool:
        if signature is None:
            return self.path is not None
        return time.time_ns() - max(signature[2], signature[3]) < self.RACY_S * 1e9


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_evidence_body(body: dict[str, Any]) -> str | None:
    """None when an `evidence` envelope's body is well formed, else why not."""
    if not isinstance(body.get("sha256"), str) or not _SHA256.match(body["sha256"]):
        return "body.sha256 must be 64 lowercase hex digits"
    if type(body.get("size")) is not int or not 0 < body["size"] <= MAX_BYTES:
        return f"body.size must be an integer between 1 and {MAX_BYTES}"
    if body.get("content_type") not in CONTENT_TYPES:
        return f"body.content_type must be one of {', '.join(CONTENT_TYPES)}"
    alert = body.get("alert")
    if alert is not None and not (isinstance(alert, str) and _ID_RE.match(alert)):
        return "body.alert must be an alert id or null"
    if not is_int64(body.get("captured_ts")):
        return "body.captured_ts must be integer milliseconds (64 bits)"
    if body.get("kind") is not None and body["kind"] not in KINDS:
        return f"body.kind must be one of {', '.join(KINDS)}, or absent"
    return None


class EvidenceStore:
    """Blobs on disk by hash, and their metadata rows in the SQL store."""

    def __init__(self, config: EvidenceConfig, store: Store,
                 metrics: Metrics | None = None) -> None:
        self.config = config
        self.store = store
        self.directory = config.dir
        self.tokens = SiteTokens(config, metrics)

    def path(self, sha256: str) -> Path:
        return self.directory / sha256[:2] / sha256

    def has(self, sha256: str, size: int) -> bool:
        try:
            return self.path(sha256).stat().st_size == size
        except FileNotFoundError:
            return False

    async def uploaded(self, site: str, sha256: str, size: int) -> bool:
        """Whether `site` uploaded this blob (and it is here, whole)."""
        if not self.has(sha256, size):
            return False
        async with self.store.engine.connect() as conn:
            return bool((await conn.execute(select(exists().where(
                evidence_uploads.c.site == site, evidence_uploads.c.sha256 == sha256,
            )))).scalar_one())

    async def _record_upload(self, site: str, sha256: str, size: int) -> None:
        stmt = (
            self.store.insert(evidence_uploads)
            .values(site=site, sha256=sha256, size=size, uploaded_ms=_now_ms())
            .on_conflict_do_nothing(index_elements=["site", "sha256"])
        )
        async with self.store.engine.begin() as conn:
            await conn.execute(stmt)

    def site_for(self, authorization: str | None) -> str | None:
        """The site whose token this is, or None; constant-time per comparison."""
        if not authorization or not authorization.startswith("Bearer "):
            return None
        presented = hash_token(authorization[len("Bearer ") :].strip())
        for site, expected in self.tokens.hashes().items():
            if hmac.compare_digest(presented, expected):
                return site
        return None

    async def insert(self, env: Envelope, received_ms: int) -> bool:
        """Record an evidence envelope once; False for a redelivery."""
        body = env.body
        stmt = (
            self.store.insert(evidence)
            .values(
                id=env.id,
                site=env.site,
                device=env.device,
                sha256=body["sha256"],
                size=body["size"],
                content_type=body["content_type"],
                alert_id=body.get("alert"),
                captured_ts=body["captured_ts"],
                received_ms=received_ms,
                kind=body.get("kind"),
            )
            .on_conflict_do_nothing(index_elements=["id"])
        )
        async with self.store.engine.begin() as conn:
            return bool((await conn.execute(stmt)).rowcount == 1)

    async def for_alert(self, alert_id: str, site: str | None = None) -> list[dict[str, Any]]:
        return await evidence_for_alert(self.store, alert_id, site)

    # --- HTTP ------------------------------------------------------------------------------

    async def handle_put(self, request: web.Request) -> web.Response:
        site = self.site_for(request.headers.get("Authorization"))
        if site is None:
            return web.json_response({"error": "a valid site token is required"}, status=401)
        claimed = request.headers.get("X-Shouwang-Site")
        if claimed is not None and claimed != site:
            return web.json_response({"error": "the token is not this site's"}, status=403)
        sha256 = request.match_info["sha256"]
        if not _SHA256.match(sha256):
            return web.json_response({"error": "the path must end in a SHA-256 hex"}, status=400)
        if request.content_type not in CONTENT_TYPES:
            return web.json_response(
                {"error": f"Content-Type must be one of {', '.join(CONTENT_TYPES)}"}, status=415
            )
        length = request.content_length
        if length is not None and length > MAX_BYTES:
            return web.json_response({"error": f"over {MAX_BYTES} bytes"}, status=413)
        if length is not None and await self.uploaded(site, sha256, length):
            return web.json_response({"sha256": sha256, "stored": False}, status=200)
        final = self.path(sha256)
        partial = final.with_name(f"{sha256}.{os.getpid()}.{id(request)}.partial")
        await asyncio.to_thread(final.parent.mkdir, parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        try:
            # Chunks go to the page cache (microseconds); the fsync runs off the loop.
            with partial.open("wb") as f:
                async for chunk in request.content.iter_chunked(256 * 1024):
                    size += len(chunk)
                    if size > MAX_BYTES:
                        return web.json_response({"error": f"over {MAX_BYTES} bytes"}, status=413)
                    digest.update(chunk)
                    f.write(chunk)
                await asyncio.to_thread(_sync, f)
            if digest.hexdigest() != sha256:
                log.warning("evidence upload from site %s does not match its hash", site)
                return web.json_response(
                    {"error": "the bytes do not match the SHA-256 in the path"}, status=422
                )
            await asyncio.to_thread(partial.replace, final)
        finally:
            await asyncio.to_thread(partial.unlink, True)
        # After the bytes are in place: a crash in between is mended by the gateway's retry.
        await self._record_upload(site, sha256, size)
        log.info("evidence stored", extra={"site": site, "sha256": sha256, "size": size})
        return web.json_response({"sha256": sha256, "stored": True}, status=201)


async def evidence_for_alert(
    store: Store, alert_id: str, site: str | None = None
) -> list[dict[str, Any]]:
    """The evidence an alert has, oldest first: references (hash, type), never the bytes.

    With `site` (the alert's), only what that site's gateway sent: a gateway naming another
    site's alert id must not put its pictures into that alert, nor those of its people into
    another station's view."""
    query = select(evidence).where(evidence.c.alert_id == alert_id)
    if site is not None:
        query = query.where(evidence.c.site == site)
    # Envelope ids sort by time: items captured in the same millisecond keep their order.
    query = query.order_by(evidence.c.captured_ts, evidence.c.received_ms, evidence.c.id)
    async with store.engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    seen: set[str] = set()
    out = []
    for r in rows:
        if r["sha256"] not in seen:  # one blob named twice (two envelopes) is one item
            seen.add(r["sha256"])
            out.append({k: r[k] for k in ("sha256", "size", "content_type", "captured_ts",
                                          "device", "kind")})
    return out


def _now_ms() -> int:
    return int(time.time() * 1000)


def _sync(f: Any) -> None:
    f.flush()
    os.fsync(f.fileno())


def add_routes(app: web.Application, evidence_store: EvidenceStore, key: EvidenceKey) -> None:
    # They build on the API's routes and keys.
    from cloud import evidence_package, evidence_read

    app.router.add_put("/ingest/evidence/{sha256}", evidence_store.handle_put)
    evidence_read.add_routes(app, evidence_store)
    evidence_package.add_routes(app, evidence_store, key)
