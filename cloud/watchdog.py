"""The gateway watchdog every cloud worker runs: a silent site gets one `gateway_offline` alert.

When a whole gateway goes down (its box, power or network) nothing at the edge can raise an
alert, so the cloud does. The database is the source of truth, as for escalation: each worker
reads the `sites` table each round and computes the same alert id from the site and the start
of its silence (the cloud's receipt of the last gateway report), so the insert's ON CONFLICT
keeps one alert however many workers run. A site is down when

- its last report was heard more than `gateway_silence_s` ago, or
- an offline notice (the gateway's MQTT will, or its planned stop) arrived after the last
  report and `will_grace_s` passed without a report (a reconnect blip sends one at once).

When a report is heard after the silence began, the alert is resolved by `system:watchdog`.
A site that never reported is not watched.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import Field
from sqlalchemy import select

from cloud.alerts import IllegalTransition
from cloud.rounds import Rounds
from cloud.schema import alerts, sites
from cloud.store import Store
from shouwang.clock import Clock
from shouwang.config import Strict
from shouwang.ids import derived_id
from shouwang.protocol import make_envelope

log = logging.getLogger(__name__)
ALERT_TYPE = "gateway_offline"
ACTOR = "system:watchdog"
GATEWAY_DEVICE = "gateway"  # as the edge names itself in its own envelopes
OPEN_STATES = ("open", "acknowledged", "dispatched")


class WatchdogConfig(Strict):
    enabled: bool = Field(True, description="Run the gateway watchdog loop in this worker")
    gateway_silence_s: float = Field(
        180, gt=0,
        description="A site whose gateway was not heard for this long gets one gateway_offline "
        "alert (the gateway reports every 60 s)",
    )
    will_grace_s: float = Field(
        90, ge=0,
        description="After a gateway's offline notice (MQTT will, planned stop), wait this long "
        "for a report before alerting; above the 60 s report interval, so a stale notice is "
        "disproved by the next report",
    )
    poll_s: float = Field(5, gt=0, le=60, description="How often each worker checks the sites")


def alert_id(site: str, silent_since_ms: int) -> str:
    """The same outage gives every worker the same id."""
    return derived_id(silent_since_ms, site, ALERT_TYPE)


class Watchdog(Rounds):
    name = "gateway watchdog"

    def __init__(
        self, store: Store, clock: Clock, config: WatchdogConfig,
        on_alert: Callable[[dict[str, Any]], None],
        on_change: Callable[[dict[str, Any]], None],
        on_left_open: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(config.poll_s)
        self.store = store
        self.clock = clock
        self.config = config
        self.on_alert = on_alert
        self.on_change = on_change
        self.on_left_open = on_left_open

    async def round(self) -> tuple[int, int]:
        """One pass over every watched site: (alerts this worker raised, alerts it resolved)."""
        now = self.clock.now_ms()
        async with self.store.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(sites.c.id, sites.c.location, sites.c.heard_ms, sites.c.offline_ms,
                           sites.c.offline_reason)
                    .where(sites.c.heard_ms.is_not(None))
                )
            ).mappings().all()
            open_rows = (
                await conn.execute(
                    select(alerts.c.id, alerts.c.site, alerts.c.ts)
                    .where(alerts.c.type == ALERT_TYPE, alerts.c.state.in_(OPEN_STATES))
                )
            ).mappings().all()
        open_by_site: dict[str, list[tuple[str, int]]] = {}
        for a in open_rows:
            open_by_site.setdefault(str(a["site"]), []).append((str(a["id"]), int(a["ts"])))
        down = {
            alert_id(str(site["id"]), int(site["heard_ms"])): (site, reason)
            for site in rows
            if (reason := self._down_reason(site, now)) is not None
        }
        known: set[str] = set()
        if down:
            # Outages already raised (or closed by hand) cost one key lookup, not an insert
            # transaction per site per round (bench/watchdog.py).
            async with self.store.engine.connect() as conn:
                known = set(
                    (await conn.execute(select(alerts.c.id).where(alerts.c.id.in_(down))))
                    .scalars().all()
                )
        raised = resolved = 0
        for new_id, (site, reason) in down.items():
            if new_id not in known:
                raised += await self._raise(site, int(site["heard_ms"]), now, reason)
        for site in rows:
            name, heard = str(site["id"]), int(site["heard_ms"])
            for open_id, since in open_by_site.get(name, []):
                if heard > since:  # heard after this silence began: the gateway is back
                    resolved += await self._resolve(open_id, name, since, heard)
        return raised, resolved

    def _down_reason(self, site: Any, now: int) -> str | None:
        heard, offline = int(site["heard_ms"]), site["offline_ms"]
        # At or after: in the same millisecond the notice counts as the later one (the next
        # periodic report comes before the grace ends and disproves it).
        notice_after_report = offline is not None and offline >= heard
        if notice_after_report and now - offline >= self.config.will_grace_s * 1000:
            return str(site["offline_reason"] or "disconnected")
        if now - heard >= self.config.gateway_silence_s * 1000:
            return "silent"
        return None

    async def _raise(self, site: Any, heard: int, now: int, reason: str) -> int:
        name = str(site["id"])
        body = {
            "type": ALERT_TYPE,
            "severity": "high",
            "subject": f"site:{name}",
            "dedup_key": f"site:{name}|{ALERT_TYPE}",
            "location": site["location"],
            "life_safety": False,
            "detail": {"reason": reason, "last_heard_ms": heard, "detected_ms": now},
        }
        env = make_envelope(
            site=name, device=GATEWAY_DEVICE, kind="alert", body=body, ts=heard,
            id=alert_id(name, heard),
        )
        alert = await self.store.insert_alert(env, actor=ACTOR)
        if alert is None:
            return 0  # another worker (or an earlier round) raised it; or it was closed by hand
        log.warning("site %s: gateway offline (%s), last heard at %s", name, reason, heard)
        self.on_alert(alert)
        return 1

    async def _resolve(self, open_id: str, site: str, since: int, heard: int) -> int:
        note = f"gateway reporting again after {(heard - since) / 1000:.0f} s"
        try:
            alert = await self.store.transition(open_id, "resolved", actor=ACTOR, note=note)
        except IllegalTransition:
            return 0  # another worker resolved it, or a person closed it first
        alert.pop("timeline", None)
        log.info("site %s: gateway back, alert %s resolved", site, open_id)
        self.on_change(alert)
        if self.on_left_open is not None:
            await self.on_left_open(open_id)  # no more escalation stages for it
        return 1
