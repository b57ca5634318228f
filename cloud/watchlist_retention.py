"""A watchlist's data in the cloud is deleted when its retention has passed, each deletion
audited (issue 16; the face rules ask for the shortest retention, docs/privacy.md): a match's
evidence at its list's retention, and the cloud's own copy of an enrolment at its `until`.

An enrolment (its row of `watchlist_people`: ids, consent, the sealed descriptors and reference
photo) is deleted once `until_ms` has passed, by one `DELETE ... WHERE id AND until_ms <= now`
in a transaction that also records the change (the site's watchlist version moves, so each
gateway of the entry's scope is sent its list without the person: cloud/watchlist_downlink.py)
and one audit row `watchlist_expire` by `system:retention` (list:person; the id, consent
reference, scope, until and the list's days). Only the worker whose delete removed the row
writes them.

Every worker with alert duties runs the round, like the gateway watchdog; the database keeps
it to one deletion: an evidence row is deleted by one `DELETE ... WHERE id`, and only the
worker whose delete removed it writes the audit row (`evidence_deleted`, by
`system:retention`: the alert, the blob's hash and type, the list and its retention). The
blob itself goes when no other evidence row names it (a picture shared with another alert
stays for that one). The alert stays: the case record, with ids and a score, no face.

The retention of a list is the gateway's definition (edge/video/face/store.py
`DEFAULT_LISTS`: missing_elder 30 days, police 90), or for a community's own list its
`retention_days` in cloud.yaml `watchlists.lists`; a list the cloud does not know gets
`unknown_list_days`. Counted from when the cloud stored the alert (`received_ms`), on
the injected clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from pydantic import Field
from sqlalchemy import delete, exists, select

from cloud.access import audit
from cloud.evidence import EvidenceStore, evidence, evidence_uploads
from cloud.rounds import Rounds
from cloud.schema import alerts
from cloud.store import Store, match_of
from cloud.watchlist_store import expire, watchlist_people
from edge.video.face.store import DEFAULT_LISTS
from shouwang.clock import Clock
from shouwang.config import Strict

log = logging.getLogger(__name__)
ACTOR = "system:retention"
DAY_MS = 86_400_000
BATCH = 500


class RetentionConfig(Strict):
    enabled: bool = Field(True, description="Run the watchlist evidence retention in this worker")
    poll_s: float = Field(3600, gt=0, le=86400, description="How often each worker looks")
    unknown_list_days: int = Field(
        30, ge=1, le=3650,
        description="Retention of the evidence of a list the cloud has no definition of (a "
        "community's own list): the shortest of the built-in lists by default",
    )


class EvidenceRetention(Rounds):
    name = "watchlist retention"

    def __init__(
        self, store: Store, evidence_store: EvidenceStore, clock: Clock, config: RetentionConfig,
        on_expired: Callable[[], None] = lambda: None, lists: dict[str, int] | None = None,
    ) -> None:
        super().__init__(config.poll_s)
        self.store = store
        self.evidence = evidence_store
        self.clock = clock
        self.config = config
        self.on_expired = on_expired  # enrolments expired: the gateways' lists changed
        self.lists = lists or {}  # the communities' own lists (cloud.yaml): their days

    def days(self, list_name: str | None) -> int:
        policy = DEFAULT_LISTS.get(list_name or "")
        if policy is not None:
            return policy.retention_days
        return self.lists.get(list_name or "", self.config.unknown_list_days)

    async def round(self) -> int:
        """Delete what is due; the number of evidence items and enrolments this worker
        deleted."""
        return await self.evidence_round() + await self.enrolments_round()

    async def enrolments_round(self) -> int:
        """Delete the cloud's enrolments whose `until` has passed; the number deleted."""
        now = self.clock.now_ms()
        async with self.store.engine.connect() as conn:
            rows = (await conn.execute(
                select(watchlist_people.c.id, watchlist_people.c.list,
                       watchlist_people.c.person, watchlist_people.c.scope,
                       watchlist_people.c.consent, watchlist_people.c.entered_ms,
                       watchlist_people.c.until_ms)
                .where(watchlist_people.c.until_ms <= now)
                .order_by(watchlist_people.c.until_ms).limit(BATCH))).mappings().all()
        deleted = 0
        for row in rows:
            days = round((row["until_ms"] - row["entered_ms"]) / DAY_MS)
            if await expire(self.store, row, now_ms=now, retention_days=days):
                deleted += 1
                log.info("watchlist enrolment %s (person %s, list %s) expired and was deleted",
                         row["id"], row["person"], row["list"])
        if deleted:
            self.on_expired()
        return deleted

    async def evidence_round(self) -> int:
        """Delete the match evidence that is due; the number of items this worker deleted."""
        now = self.clock.now_ms()
        shortest = min([self.config.unknown_list_days, *self.lists.values(),
                        *(p.retention_days for p in DEFAULT_LISTS.values())])
        query = (
            select(evidence.c.id, evidence.c.sha256, evidence.c.content_type, alerts.c.id,
                   alerts.c.received_ms, alerts.c.body)
            .join(alerts, alerts.c.id == evidence.c.alert_id)
            .where(alerts.c.type == "watchlist_hit",
                   alerts.c.received_ms <= now - shortest * DAY_MS)
            .order_by(alerts.c.received_ms)
            .limit(BATCH)
        )
        async with self.store.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        deleted = 0
        for row_id, sha256, content_type, alert_id, received_ms, body in rows:
            list_name = (match_of((body or {}).get("detail")) or {}).get("list")
            days = self.days(list_name)
            if received_ms + days * DAY_MS > now:
                continue
            if await self._delete(row_id, sha256, alert_id, now, {
                "sha256": sha256, "content_type": content_type, "list": list_name,
                "retention_days": days,
            }):
                deleted += 1
        if deleted:
            log.info("watchlist retention: %d evidence items deleted", deleted)
        return deleted

    async def _delete(
        self, row_id: str, sha256: str, alert_id: str, now: int, detail: dict[str, Any]
    ) -> bool:
        async with self.store.engine.begin() as conn:
            gone = await conn.execute(delete(evidence).where(evidence.c.id == row_id))
            if gone.rowcount != 1:
                return False  # another worker deleted it first (and audited it)
            await audit.record(conn, ts=now, actor=ACTOR, action="evidence_deleted",
                               target=alert_id, detail=detail)
            named = (await conn.execute(
                select(exists().where(evidence.c.sha256 == sha256)))).scalar_one()
            if not named:
                await conn.execute(
                    delete(evidence_uploads).where(evidence_uploads.c.sha256 == sha256))
        if not named:
            # After the commit: a crash in between leaves a file nothing names, never a row
            # that names no file.
            await asyncio.to_thread(self.evidence.path(sha256).unlink, True)
        return True
