"""Evidence for people: one blob of an alert (its references are in the alert's detail).

An alert the caller may not read answers exactly like a missing one (the lifecycle's check,
audited as `alert_denied`); a hash that is not this alert's answers 404 too, so a user of one
station cannot fetch another station's snapshot by guessing or copying its hash. Every blob
served is audited (`evidence_read`): a picture of a resident's home is personal data.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from cloud import api
from cloud.access import http as access_http
from cloud.alerts import AlertNotFound
from cloud.evidence import EvidenceStore

NO_EVIDENCE = {"error": "no such evidence"}


class EvidenceReader:
    def __init__(self, evidence: EvidenceStore) -> None:
        self.evidence = evidence

    async def _items(self, request: web.Request, action: str) -> list[dict[str, Any]] | None:
        lifecycle = request.app[api.LIFECYCLE]
        try:
            # The lifecycle's own visibility check: one scope rule for every alert route.
            await lifecycle._visible(
                access_http.principal(request), request.match_info["id"], request.remote, action
            )
        except AlertNotFound:
            return None
        return await self.evidence.for_alert(request.match_info["id"])

    async def blob(self, request: web.Request) -> web.StreamResponse:
        items = await self._items(request, "evidence_read")
        if items is None:
            return web.json_response(api.NOT_FOUND, status=404)
        sha256 = request.match_info["sha256"]
        item = next((e for e in items if e["sha256"] == sha256), None)
        if item is None or not self.evidence.has(sha256, item["size"]):
            return web.json_response(NO_EVIDENCE, status=404)
        who = access_http.principal(request)
        await request.app[access_http.ACCESS].audit(
            who.actor, "evidence_read", request.match_info["id"], request.remote,
            {"sha256": sha256},
        )
        return web.FileResponse(
            self.evidence.path(sha256),
            headers={
                "Content-Type": item["content_type"],
                # Personal data: never in a shared cache; a blob under its hash never changes.
                "Cache-Control": "private, max-age=86400, immutable",
                "X-Content-Type-Options": "nosniff",
            },
        )


def add_routes(app: web.Application, evidence: EvidenceStore) -> None:
    reader = EvidenceReader(evidence)
    app.router.add_get("/api/alerts/{id}/evidence/{sha256:[0-9a-f]{64}}", reader.blob)
