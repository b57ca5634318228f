"""Evidence packages: `GET /api/alerts/{id}/package`, a signed zip of an alert's clips,
snapshots, record and timeline, for a case file (format: shouwang/evidence_package.py and
docs/evidence.md).

The zip is built in a worker thread into an unnamed temporary file beside the blobs, then sent
in chunks read off the loop: clips are up to 64 MiB each and the event loop serves alerts. Each
blob is hashed as it is copied; one whose bytes no longer match their hash (a disk fault) or
that is gone is left out and named in the manifest's `unavailable` list, never packed as if it
were the evidence. The export is audited (`evidence_package`) with the manifest's SHA-256, so
the log names the very package that left.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from aiohttp import web

from cloud import api
from cloud.access import http as access_http
from cloud.alerts import AlertNotFound
from cloud.evidence import EvidenceStore
from cloud.evidence_key import EvidenceKey
from cloud.lifecycle import Forbidden
from shouwang.evidence_package import (
    ALERT,
    CHUNK,
    FORMAT,
    KINDS,
    MANIFEST,
    SIGNATURE,
    TIMELINE,
    evidence_kind,
    member_name,
)

log = logging.getLogger(__name__)
# Keys of the detail that go to timeline.json; the rest of the detail is alert.json.
TIMELINE_KEYS = ("timeline", "notifications", "deliveries")


@dataclass(frozen=True)
class Blob:
    sha256: str
    size: int
    content_type: str
    device: str
    captured_ts: int
    path: Path
    kind: str | None = None  # cloud/evidence.py KINDS; None from gateways that do not say


@dataclass
class Built:
    size: int
    manifest_sha256: str
    files: int
    unavailable: list[dict[str, Any]] = field(default_factory=list)


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True) + "\n").encode()


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def _info(name: str, exported_ms: int, compress: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=time.gmtime(exported_ms // 1000)[:6])
    info.compress_type = compress
    info.external_attr = 0o644 << 16
    return info


def _copy(zf: zipfile.ZipFile, name: str, blob: Blob, exported_ms: int) -> str | None:
    """Copy a blob into the zip, hashing it; None when it is intact, else why not."""
    try:
        src = blob.path.open("rb")
    except FileNotFoundError:
        return "missing"
    digest, size = hashlib.sha256(), 0
    # Clips and JPEGs are compressed already: stored, so a reader can also seek in them.
    with src, zf.open(_info(name, exported_ms, zipfile.ZIP_STORED), "w") as dst:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            dst.write(chunk)
    return None if (digest.hexdigest(), size) == (blob.sha256, blob.size) else "damaged"


def build(
    out: IO[bytes], *, header: dict[str, Any], alert_json: bytes, timeline_json: bytes,
    blobs: list[Blob], key: EvidenceKey, exported_ms: int,
) -> Built:
    """Write the package to `out` (blocking: run it in a thread)."""
    left_out: dict[str, str] = {}
    while True:
        out.seek(0)
        out.truncate()
        found = _write(out, header, alert_json, timeline_json, blobs, key, exported_ms,
                       left_out)
        if isinstance(found, Built):
            return found
        # A damaged blob was found after its bytes went in: build again without it (rare).
        left_out.update(found)


def _write(
    out: IO[bytes], header: dict[str, Any], alert_json: bytes, timeline_json: bytes,
    blobs: list[Blob], key: EvidenceKey, exported_ms: int, left_out: dict[str, str],
) -> Built | dict[str, str]:
    files: list[dict[str, Any]] = []
    unavailable: list[dict[str, Any]] = []
    newly: dict[str, str] = {}
    with zipfile.ZipFile(out, "w", allowZip64=True) as zf:
        for name, kind, data in ((ALERT, "alert", alert_json),
                                 (TIMELINE, "timeline", timeline_json)):
            zf.writestr(_info(name, exported_ms, zipfile.ZIP_DEFLATED), data)
            files.append({"name": name, "kind": kind, "content_type": "application/json",
                          "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)})
        for blob in blobs:
            kind = evidence_kind(blob.kind, blob.content_type)
            about = {"kind": kind, "description": KINDS[kind],
                     "content_type": blob.content_type, "device": blob.device,
                     "captured_ts": blob.captured_ts}
            reason = left_out.get(blob.sha256)
            name = member_name(blob.sha256, blob.content_type, blob.kind)
            if reason is None:
                reason = _copy(zf, name, blob, exported_ms)
                if reason == "damaged":
                    newly[blob.sha256] = reason
            if reason is not None:
                log.error("evidence %s of alert %s is %s: left out of the package",
                          blob.sha256, header["alert"], reason)
                unavailable.append({"sha256": blob.sha256, "size": blob.size,
                                    "reason": reason, **about})
                continue
            files.append({"name": name, "sha256": blob.sha256, "size": blob.size, **about})
        if newly:
            return newly
        manifest = _json_bytes({
            "format": FORMAT, **header, "exported_ms": exported_ms,
            "exported_at": _iso(exported_ms), "signing_key": key.info, "files": files,
            "unavailable": unavailable,
        })
        zf.writestr(_info(MANIFEST, exported_ms, zipfile.ZIP_DEFLATED), manifest)
        zf.writestr(_info(SIGNATURE, exported_ms, zipfile.ZIP_STORED), key.sign(manifest))
    out.flush()
    return Built(out.tell(), hashlib.sha256(manifest).hexdigest(), len(files), unavailable)


def _temporary(directory: Path) -> IO[bytes]:
    return tempfile.TemporaryFile("w+b", dir=directory)


class Packager:
    def __init__(self, evidence: EvidenceStore, key: EvidenceKey) -> None:
        self.evidence = evidence
        self.key = key
        self._builds = asyncio.Semaphore(evidence.config.package_builds)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        who = access_http.principal(request)
        alert_id = request.match_info["id"]
        try:
            alert = await request.app[api.LIFECYCLE].for_export(who, alert_id, request.remote)
        except AlertNotFound:
            return web.json_response(api.NOT_FOUND, status=404)
        except Forbidden as err:
            return web.json_response({"error": str(err)}, status=403)
        access = request.app[access_http.ACCESS]
        blobs = [Blob(e["sha256"], e["size"], e["content_type"], e["device"], e["captured_ts"],
                      self.evidence.path(e["sha256"]), e.get("kind"))
                 for e in alert.get("evidence") or []]
        header = {
            "alert": alert["id"], "site": alert["site"],
            "exported_by": {"username": who.username, "role": who.role,
                            "display_name": who.display_name},
        }
        alert_json = _json_bytes({k: v for k, v in alert.items() if k not in TIMELINE_KEYS})
        timeline_json = _json_bytes({k: alert.get(k) or [] for k in TIMELINE_KEYS})
        await asyncio.to_thread(self.evidence.directory.mkdir, parents=True, exist_ok=True)
        # Unnamed (O_TMPFILE where the file system has it): nothing is left behind by a crash.
        f = await asyncio.to_thread(_temporary, self.evidence.directory)
        try:
            async with self._builds:
                built = await asyncio.to_thread(
                    build, f, header=header, alert_json=alert_json,
                    timeline_json=timeline_json, blobs=blobs, key=self.key,
                    exported_ms=access.clock.now_ms(),
                )
            await access.audit(who.actor, "evidence_package", alert_id, request.remote, {
                "manifest_sha256": built.manifest_sha256, "files": built.files,
                "bytes": built.size, "unavailable": len(built.unavailable)})
            log.info("evidence package of alert %s exported by %s (%d bytes)", alert_id,
                     who.username, built.size)
            response = web.StreamResponse(headers={
                "Content-Type": "application/zip",
                "Content-Disposition": f'attachment; filename="shouwang-evidence-'
                                       f'{re.sub(r"[^A-Za-z0-9._-]", "_", alert_id)}.zip"',
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
            })
            response.content_length = built.size
            await response.prepare(request)
            await asyncio.to_thread(f.seek, 0)
            while chunk := await asyncio.to_thread(f.read, CHUNK):
                await response.write(chunk)
            await response.write_eof()
            return response
        finally:
            await asyncio.to_thread(f.close)


def add_routes(app: web.Application, evidence: EvidenceStore, key: EvidenceKey) -> None:
    packager = Packager(evidence, key)
    app.router.add_get("/api/alerts/{id}/package", packager.handle)
    app.router.add_get("/api/evidence/public-key", key.handle_public_key)
