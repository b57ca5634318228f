"""Evidence for people: one blob of an alert (its references are in the alert's detail).

An alert the caller may not read answers exactly like a missing one (the lifecycle's check,
audited as `alert_denied`); a hash that is not this alert's answers 404 too, so a user of one
station cannot fetch another station's snapshot by guessing or copying its hash. Every view is
audited (`evidence_read`): a picture of a resident's home is personal data.

A video element reads a clip in byte ranges (aiohttp's FileResponse answers `Range` with 206,
and `If-None-Match` with 304), often several per playback and more on every seek. One row per
request would bury the audit log, so a view is one row per (user, alert, blob, address) per
`evidence.view_audit_window_s`: the first request of a view writes it, the continuations within
the window do not. Every request still passes the scope check, and `Cache-Control: no-cache`
makes the browser ask again for every later view instead of showing its cached copy unseen.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from sqlalchemy import select

from cloud import api
from cloud.access import audit
from cloud.access import http as access_http
from cloud.access.tables import audit_log
from cloud.access.users import Access
from cloud.alerts import AlertNotFound
from cloud.evidence import EvidenceStore

NO_EVIDENCE = {"error": "no such evidence"}
_ViewKey = tuple[str, str, str, str | None]  # actor, alert, sha256, remote


class ViewAudit:
    """Writes `evidence_read` once per view (see the module doc); the database is the truth,
    so several API workers share the window, and a per-process memory spares it the query for
    each range request."""

    def __init__(self, access: Access, window_ms: int) -> None:
        self.access = access
        self.window_ms = window_ms
        self._recent: dict[_ViewKey, int] = {}  # key -> ts of its last row
        self._lock = asyncio.Lock()  # check-then-write per process: one row for parallel ranges

    async def record(
        self, actor: str, alert_id: str, sha256: str, remote: str | None, detail: dict[str, Any]
    ) -> bool:
        """True when this request began a view (and a row was written)."""
        key = (actor, alert_id, sha256, remote)
        if self._fresh(key):
            return False
        async with self._lock:
            if self._fresh(key):
                return False
            now = self.access.clock.now_ms()
            async with self.access.engine.begin() as conn:
                last = await _last_view(conn, key, now - self.window_ms)
                if last is not None:
                    self._remember(key, last, now)
                    return False
                await audit.record(conn, ts=now, actor=actor, action="evidence_read",
                                   target=alert_id, remote=remote, detail=detail)
            self._remember(key, now, now)
            return True

    def _fresh(self, key: _ViewKey) -> bool:
        last = self._recent.get(key)
        return last is not None and self.access.clock.now_ms() - last < self.window_ms

    def _remember(self, key: _ViewKey, ts: int, now: int) -> None:
        self._recent[key] = ts
        if len(self._recent) > 10_000:  # bounded: forget views whose window has passed
            self._recent = {k: t for k, t in self._recent.items() if now - t < self.window_ms}


async def _last_view(conn: Any, key: _ViewKey, since_ms: int) -> int | None:
    actor, alert_id, sha256, remote = key
    query = select(audit_log.c.ts, audit_log.c.detail).where(
        audit_log.c.action == "evidence_read", audit_log.c.target == alert_id,
        audit_log.c.ts >= since_ms, audit_log.c.actor == actor,
        audit_log.c.remote.is_(None) if remote is None else audit_log.c.remote == remote,
    ).order_by(audit_log.c.ts.desc())
    for ts, detail in (await conn.execute(query)).all():
        if isinstance(detail, dict) and detail.get("sha256") == sha256:
            return int(ts)
    return None


class EvidenceReader:
    def __init__(self, evidence: EvidenceStore, views: ViewAudit) -> None:
        self.evidence = evidence
        self.views = views

    async def blob(self, request: web.Request) -> web.StreamResponse:
        who = access_http.principal(request)
        alert_id = request.match_info["id"]
        try:
            # The lifecycle's own visibility check: one scope rule for every alert route.
            alert = await request.app[api.LIFECYCLE].visible(
                who, alert_id, request.remote, "evidence_read")
        except AlertNotFound:
            return web.json_response(api.NOT_FOUND, status=404)
        sha256 = request.match_info["sha256"]
        items = await self.evidence.for_alert(alert_id, alert["site"])
        item = next((e for e in items if e["sha256"] == sha256), None)
        if item is None or not self.evidence.has(sha256, item["size"]):
            return web.json_response(NO_EVIDENCE, status=404)
        await self.views.record(who.actor, alert_id, sha256, request.remote,
                                {"sha256": sha256})
        return web.FileResponse(
            self.evidence.path(sha256),
            headers={
                "Content-Type": item["content_type"],
                # Personal data: never in a shared cache; and revalidated (a cheap 304) on
                # every view, so each view reaches this handler and its audit.
                "Cache-Control": "private, no-cache",
                "X-Content-Type-Options": "nosniff",
            },
        )


def add_routes(app: web.Application, evidence: EvidenceStore) -> None:
    access = app[access_http.ACCESS]
    window_ms = round(evidence.config.view_audit_window_s * 1000)
    reader = EvidenceReader(evidence, ViewAudit(access, window_ms))
    app.router.add_get("/api/alerts/{id}/evidence/{sha256:[0-9a-f]{64}}", reader.blob)
