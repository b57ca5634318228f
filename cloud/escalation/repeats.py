"""A repeat of a case someone has: the button pressed again reaches the responders on it.

Escalation stops once a responder acknowledges. If the elder then presses again (panicking,
or worse off), the press is folded into the case (counted, on every board) and the people on
the case are told again: whoever acknowledged it and the worker it was dispatched to. At most
once per `repeat_notify_s` per alert, so a button held down does not flood a phone. Each
message is a row of `notifications` (stage `repeat-N`) like an escalation stage's, so it shows
in the alert's detail and a second worker never sends it twice.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy import func, select

from cloud.access.scope import Principal
from cloud.access.tables import assignments, notifications, users
from cloud.access.users import Access
from cloud.escalation.scheduler import Notifier
from cloud.escalation.timers import Timers

log = logging.getLogger(__name__)
ON_A_CASE = frozenset({"acknowledged", "dispatched"})


class RepeatNotifier:
    def __init__(
        self, timers: Timers, access: Access, notifier: Notifier, every_s: float,
        notify_timeout_s: float,
    ) -> None:
        self.timers = timers
        self.access = access
        self.notifier = notifier
        self.every_ms = round(every_s * 1000)
        self.notify_timeout_s = notify_timeout_s

    async def repeated(self, alert: dict[str, Any]) -> int:
        """`alert` (as stored, after the repeat) was repeated; the number of people told."""
        if alert["state"] not in ON_A_CASE:
            return 0  # still open: the escalation is calling people anyway
        now = self.timers.clock.now_ms()
        if await self._last_told(alert["id"]) > now - self.every_ms:
            return 0
        stage = f"repeat-{alert['repeats']}"
        view_of = {k: v for k, v in alert.items() if k != "timeline"}
        told = 0
        for person in await self._on_the_case(alert):
            if not person.allows(alert):
                continue  # moved out of this jurisdiction since
            if not await self.timers.begin_notification(alert["id"], stage, person.user_id):
                continue
            error: str | None = None
            try:
                async with asyncio.timeout(self.notify_timeout_s):
                    await self.notifier.notify(person.username, person.view(view_of), stage)
            except Exception as err:  # recorded in the detail, never fatal to ingest
                error = f"{type(err).__name__}: {err}"[:500]
                log.warning("repeat of alert %s: telling %s failed: %s", alert["id"],
                            person.username, error)
            await self.timers.end_notification(alert["id"], stage, person.user_id, error)
            told += 1
        log.info("repeat %s of alert %s: %d responder(s) told", alert["repeats"], alert["id"],
                 told)
        return told

    async def _last_told(self, alert_id: str) -> int:
        n = notifications.c
        async with self.timers.engine.connect() as conn:
            last = (
                await conn.execute(
                    select(func.max(n.ts)).where(
                        n.alert_id == alert_id, n.stage.like("repeat-%")
                    )
                )
            ).scalar()
        return int(last or 0)

    async def _on_the_case(self, alert: dict[str, Any]) -> list[Principal]:
        """Who acknowledged it and who it was dispatched to, each once."""
        names: list[str] = []
        if alert.get("ack_by"):
            names.append(alert["ack_by"])
        async with self.timers.engine.connect() as conn:
            dispatched = (
                await conn.execute(
                    select(users.c.username)
                    .join(assignments, assignments.c.user_id == users.c.id)
                    .where(assignments.c.alert_id == alert["id"])
                    .order_by(assignments.c.seq.desc())
                )
            ).scalars().first()
        if dispatched and dispatched not in names:
            names.append(dispatched)
        found = [await self.access.user(name) for name in names]
        return [p for p in found if p is not None]
