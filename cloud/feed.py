"""Changes made by other cloud workers, read from the database and fanned out here.

Every stored alert and every transition is a row of `alert_transitions` (ordered by `seq`).
Each API worker reads the rows after the last it saw every `feed_poll_s` and hands the
alerts to its hub; the hub drops what it already sent (this worker's own ingest and
transitions go out at once, without waiting for the feed).

PostgreSQL hands out `seq` before commit, so a transaction can become visible after one with
a higher `seq`: each read looks back over the last LOOKBACK rows and skips those seen.
"""

from __future__ import annotations

import logging
from collections import deque

from sqlalchemy import func, select

from cloud.device_health import PLACE, WITH_HOMES
from cloud.hub import Hub
from cloud.rounds import Rounds
from cloud.schema import devices
from cloud.store import Store, _public, alert_transitions, alerts, with_people

log = logging.getLogger(__name__)
LOOKBACK = 200
BATCH = 1000


# Device liveness changes: rows whose `changed_ms` (the cloud's clock at the write) is newer
# than the last seen, looking back this far for writes that committed late.
DEVICE_LOOKBACK_MS = 5_000


class ChangeFeed(Rounds):
    name = "change feed"

    def __init__(self, store: Store, hub: Hub, poll_s: float) -> None:
        super().__init__(poll_s)
        self.store = store
        self.hub = hub
        self.last = 0
        self._seen: deque[int] = deque(maxlen=LOOKBACK + BATCH)
        self.devices_last = 0
        self._devices_seen: dict[tuple[str, str, int], None] = {}

    async def start_position(self) -> None:
        """Start after what exists: a client gets the past from its snapshot."""
        async with self.store.engine.connect() as conn:
            self.last = int(
                (await conn.execute(select(func.max(alert_transitions.c.seq)))).scalar() or 0
            )
            self.devices_last = int(
                (await conn.execute(select(func.max(devices.c.changed_ms)))).scalar() or 0
            )

    async def round(self) -> int:
        """Alert changes, then device changes; how many were handed to the hub."""
        return await self.poll() + await self.poll_devices()

    async def poll(self) -> int:
        """One read; the number of changes handed to the hub."""
        t = alert_transitions.c
        async with self.store.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(t.seq, t.alert_id, t.from_state)
                    .where(t.seq > self.last - LOOKBACK)
                    .order_by(t.seq)
                    .limit(BATCH + LOOKBACK)
                )
            ).all()
            fresh = [r for r in rows if r.seq not in self._seen]
            if not fresh:
                return 0
            ids = {r.alert_id for r in fresh}
            found = (
                await conn.execute(select(alerts).where(alerts.c.id.in_(ids)))
            ).mappings().all()
            people = await with_people(conn, [_public(dict(row)) for row in found])
        current = {alert["id"]: alert for alert in people}
        for r in fresh:
            self._seen.append(r.seq)
            self.last = max(self.last, r.seq)
            alert = current.get(r.alert_id)
            if alert is not None:
                # By what the alert is now, not by the row: an alert opened and acknowledged
                # between two polls is an update (no new-alert sound for a handled alert).
                new = r.from_state is None and alert["state"] == "open"
                kind = "alert" if new else "alert_updated"
                self.hub.broadcast({"type": kind, "alert": alert})
        return len(fresh)

    async def poll_devices(self) -> int:
        """Device liveness changes since the last read, each to the dashboards whose scope
        holds the device (its place, or its resident's home); the Devices tab refreshes."""
        since = self.devices_last - DEVICE_LOOKBACK_MS
        async with self.store.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(devices.c.site, devices.c.id, devices.c.resident,
                           PLACE.label("location"), devices.c.changed_ms, devices.c.transport,
                           devices.c.data, devices.c.health, devices.c.battery)
                    .select_from(WITH_HOMES)
                    .where(devices.c.changed_ms > since)
                    .order_by(devices.c.changed_ms)
                    .limit(BATCH)
                )
            ).mappings().all()
        fresh = [r for r in rows if (r["site"], r["id"], r["changed_ms"]) not in self._devices_seen]
        for r in fresh:
            self._devices_seen[(r["site"], r["id"], r["changed_ms"])] = None
            self.devices_last = max(self.devices_last, r["changed_ms"])
            self.hub.broadcast_device(dict(r))
        # Forget what is older than the look-back: it can no longer come back.
        for key in [k for k in self._devices_seen if k[2] < self.devices_last - DEVICE_LOOKBACK_MS]:
            del self._devices_seen[key]
        return len(fresh)
