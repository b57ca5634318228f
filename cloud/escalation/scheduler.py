"""The escalation loop every cloud worker runs, and the `Notifier` it tells people through.

Each round plans new alerts, then fires the due stages this worker wins (timers.py). A stage
tells every enabled user of its roles who has the alert in scope, each through the notifier
with the alert in that user's view; each outcome is a row in `notifications`, shown in the
alert's detail.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from cloud.access.users import Access
from cloud.alerts import AlertNotFound
from cloud.escalation.timers import Timers
from cloud.notify.dispatcher import Dispatcher
from cloud.rounds import Rounds
from cloud.store import Store

log = logging.getLogger(__name__)


class Notifier(Protocol):
    async def notify(self, user_id: str, alert: dict[str, Any], stage: str) -> None:
        """Deliver or raise; `user_id` is the user name, `alert` already in their view."""
        ...


class LogNotifier:
    """Until a delivery channel is configured: a log line per notification (ids only)."""

    async def notify(self, user_id: str, alert: dict[str, Any], stage: str) -> None:
        log.info("escalation %s: would notify %s of alert %s", stage, user_id, alert["id"])


class NotDelivered(Exception):
    """No channel took the notification on its first try (retries may still follow)."""


class DispatchNotifier:
    """Escalation through the notifiers (Web Push, Apprise): `user:<name>` is the recipient.

    The dispatcher records every try on every channel and retries transient failures itself;
    here a stage's outcome is `failed` only when nothing took it on the first try.
    """

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher

    async def notify(self, user_id: str, alert: dict[str, Any], stage: str) -> None:
        rows = await self.dispatcher.notify(f"user:{user_id}", alert, stage)
        if not any(r["result"] != "failed" for r in rows):
            reasons = sorted({str(r.get("reason")) for r in rows})
            raise NotDelivered("; ".join(reasons) or "no channel answered")


class Scheduler(Rounds):
    name = "escalation"

    def __init__(
        self, timers: Timers, store: Store, access: Access, notifier: Notifier,
        poll_s: float, notify_timeout_s: float,
    ) -> None:
        super().__init__(poll_s)  # woken when a new alert is stored: planned and fired now
        self.timers = timers
        self.store = store
        self.access = access
        self.notifier = notifier
        self.notify_timeout_s = notify_timeout_s

    async def round(self) -> int:
        """One pass; the number of stages this worker fired."""
        await self.timers.plan_pending()
        fired = 0
        for alert_id, stage, roles in await self.timers.due():
            if await self.timers.claim(alert_id, stage):
                await self._fire(alert_id, stage, roles)
                fired += 1
        return fired

    async def _fire(self, alert_id: str, stage: str, roles: list[str]) -> None:
        try:
            alert = await self.store.get_alert(alert_id)
        except AlertNotFound:
            return
        alert.pop("timeline", None)
        recipients = [p for role in roles for p in await self.access.users_for(alert, role)]
        if not recipients:
            log.warning("escalation %s of alert %s: nobody of %s covers it", stage, alert_id,
                        roles)
            await self.access.audit(f"worker:{self.timers.worker}", "escalation_unrouted",
                                    alert_id, detail={"stage": stage, "roles": roles})
        sends = []
        for p in recipients:
            if await self.timers.begin_notification(alert_id, stage, p.user_id):
                sends.append(self._send(alert_id, stage, p.user_id, p.username, p.view(alert)))
        await asyncio.gather(*sends)
        await self.timers.finish(alert_id, stage)
        log.info("escalation %s of alert %s: %d notified", stage, alert_id, len(sends))

    async def _send(
        self, alert_id: str, stage: str, user_id: int, username: str, view: dict[str, Any]
    ) -> None:
        error: str | None = None
        try:
            async with asyncio.timeout(self.notify_timeout_s):
                await self.notifier.notify(username, view, stage)
        except Exception as err:  # a notifier's failure is recorded, never fatal to the loop
            error = f"{type(err).__name__}: {err}"[:500]
            log.warning("escalation %s of alert %s: notifying user %s failed: %s", stage,
                        alert_id, username, error)
        await self.timers.end_notification(alert_id, stage, user_id, error)
