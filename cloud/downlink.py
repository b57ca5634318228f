"""The cloud's word to each gateway on its alerts: `site/{site}/down/alert`.

The cloud owns an alert's life once it is stored. Every change it makes (stored, acknowledged,
dispatched, resolved, marked false, escalated, repeated) is told to the gateway that raised
it, so the gateway's book of open alerts follows the one truth: a press after a person closed
the case is a new alert at once, and a press while someone has the case goes to them.

Two roads, both idempotent (the gateway keeps the newest `version` per alert):
- live: every worker with the alerts stream follows `alert_transitions` (like the change feed
  of cloud/feed.py) and publishes each change with QoS 1 to the gateway's persistent session;
  a change made in this process wakes it at once;
- replay: each gateway report lists the alerts the gateway holds with the version it knows
  (`alerts`); the cloud answers with whatever is newer (`news_for`). A change lost with a
  broker restart, or made while the gateway was away, reaches it with its next report, and
  the report is how the gateway confirms what it has.

Message: `{"v": 1, "alerts": [{"id", "dedup_key", "state", "version", "type", "subject",
"severity", "device", "ts", "by"}]}`, one per site and round.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from sqlalchemy import func, select

from cloud.rounds import Rounds
from cloud.schema import alert_transitions, alerts
from cloud.store import Store
from shouwang.mqtt import MqttClient, MqttError
from shouwang.protocol import site_down_topic

log = logging.getLogger(__name__)
LOOKBACK = 200  # PostgreSQL hands out `seq` before commit: look back over the last rows
BATCH = 500
MAX_ASKED = 2000  # alerts a gateway may ask about in one report
PUBLISH_TIMEOUT_S = 10.0
_COLUMNS = (
    alerts.c.id, alerts.c.site, alerts.c.dedup_key, alerts.c.state, alerts.c.version,
    alerts.c.type, alerts.c.subject, alerts.c.severity, alerts.c.device, alerts.c.ts,
)


def word(row: Any, by: str | None = None) -> dict[str, Any]:
    """One alert's current state as the gateway reads it."""
    return {
        "id": row.id, "dedup_key": row.dedup_key, "state": row.state, "version": row.version,
        "type": row.type, "subject": row.subject, "severity": row.severity,
        "device": row.device, "ts": row.ts, "by": by,
    }


def message(words: Sequence[dict[str, Any]]) -> bytes:
    return orjson.dumps({"v": 1, "alerts": list(words)})


async def news_for(store: Store, site: str, known: Iterable[Any]) -> list[dict[str, Any]]:
    """What a gateway that holds `known` ([alert id, version] pairs) has not heard yet."""
    versions: dict[str, int] = {}
    for pair in known:
        if (
            isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)
            and isinstance(pair[1], int) and len(versions) < MAX_ASKED
        ):
            versions[pair[0]] = pair[1]
    if not versions:
        return []
    async with store.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(*_COLUMNS).where(alerts.c.id.in_(list(versions)), alerts.c.site == site)
            )
        ).all()
    return [word(r) for r in rows if r.version > versions[r.id]]


class Downlink(Rounds):
    """Publishes every alert change to its site's gateway, as changes are committed."""

    name = "downlink"

    def __init__(self, store: Store, client: MqttClient, poll_s: float) -> None:
        super().__init__(poll_s)
        self.store = store
        self.client = client
        self.last = 0
        self.published = 0
        self._seen: deque[int] = deque(maxlen=LOOKBACK + BATCH)

    async def start_position(self) -> None:
        """Start after what exists: gateways catch up on older changes through their reports."""
        async with self.store.engine.connect() as conn:
            self.last = int(
                (await conn.execute(select(func.max(alert_transitions.c.seq)))).scalar() or 0
            )

    async def round(self) -> int:
        """Publish the changes committed since the last round; the number published."""
        t = alert_transitions.c
        async with self.store.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(t.seq, t.alert_id, t.actor)
                    .where(t.seq > self.last - LOOKBACK)
                    .order_by(t.seq)
                    .limit(BATCH + LOOKBACK)
                )
            ).all()
            fresh = [r for r in rows if r.seq not in self._seen]
            if not fresh:
                return 0
            found = (
                await conn.execute(
                    select(*_COLUMNS).where(alerts.c.id.in_({r.alert_id for r in fresh}))
                )
            ).all()
        current = {row.id: row for row in found}
        by_site: dict[str, dict[str, dict[str, Any]]] = {}
        for r in fresh:
            row = current.get(r.alert_id)
            if row is not None:  # the alert as it is now, once per round
                by_site.setdefault(row.site, {})[row.id] = word(row, r.actor)
        sent: set[str] = set()
        for site, words in by_site.items():
            try:
                await self.client.publish(
                    site_down_topic(site, "alert"), message(list(words.values())), qos=1,
                    timeout=PUBLISH_TIMEOUT_S,
                )
            except MqttError as err:
                # Left unseen: the next round publishes them again. The gateway's next report
                # would also bring them, so a long outage loses nothing either way.
                log.warning("downlink: news of %d alert(s) for site %s not sent: %s",
                            len(words), site, err)
                continue
            sent.add(site)
            self.published += len(words)
        for r in fresh:
            row = current.get(r.alert_id)
            if row is None or row.site in sent:
                self._seen.append(r.seq)
                self.last = max(self.last, r.seq)
        return sum(len(by_site[s]) for s in sent)
