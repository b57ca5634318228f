"""The uplink: drains the outbox to the cloud broker, deleting a row only after its PUBACK.

Life-safety rows go first and are never rate-limited. Everything else passes a token bucket,
so draining a long backlog after an outage cannot crowd out live alerts or flood the cloud.
The drop ledger (what quotas evicted) is reported as a `health` message and settled only
once the broker acknowledged the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson

from edge.config import UplinkConfig
from edge.outbox import Drops, Outbox, Priority, Row
from shouwang.ids import derived_id
from shouwang.mqtt import MqttClient, MqttError
from shouwang.protocol import make_envelope, now_ms, site_up_topic

log = logging.getLogger(__name__)
GATEWAY_DEVICE = "gateway"
# A merged telemetry message stays well under the cloud's payload limit (256 KiB by default).
MERGE_READINGS = 1000
MERGE_BYTES = 192 * 1024


@dataclass(frozen=True, slots=True)
class _Group:
    """Outbox rows that travel as one MQTT message and are deleted on its PUBACK."""

    ids: list[str]
    topic: str
    payload: bytes


class TokenBucket:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self._at = time.monotonic()

    def take(self, want: int) -> int:
        """Take up to `want` tokens now; returns how many were granted."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self._at) * self.rate)
        self._at = now
        granted = min(want, int(self.tokens))
        self.tokens -= granted
        return granted

    def wait_s(self) -> float:
        return max(0.0, (1 - self.tokens) / self.rate)


class Uplink:
    def __init__(self, outbox: Outbox, client: MqttClient, config: UplinkConfig, site: str) -> None:
        self.outbox = outbox
        self.client = client
        self.config = config
        self.site = site
        self.sent = 0
        self.bucket = TokenBucket(config.rate_msgs_s, config.burst)
        self._wake = asyncio.Event()

    def notify(self) -> None:
        """Something was put in the outbox: publish without waiting for the next round."""
        self._wake.set()

    def connection_changed(self, up: bool) -> None:
        if up:
            self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.client.connected:
                urgent = await self.outbox.next_batch(
                    self.config.batch, priorities=[Priority.LIFE_SAFETY]
                )
                if urgent:
                    await self._publish_groups([_Group([r.id], r.topic, r.payload) for r in urgent])
                    continue
                await self._report_drops()  # after life-safety, before the rest
                if self.bucket.take(1) == 0:
                    # Out of tokens: wait for a refill, but wake at once for a new alert.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.bucket.wait_s()):
                            await self._wake.wait()
                    self._wake.clear()
                    continue
                rows = await self.outbox.next_batch(self.config.batch)
                if not rows:
                    self.bucket.tokens += 1  # unused: give it back
                    break
                groups = self._group(rows)
                # One token a message: a merged telemetry message is one however many rows.
                groups = groups[: 1 + self.bucket.take(len(groups) - 1)]
                await self._publish_groups(groups)

    def _group(self, rows: list[Row]) -> list[_Group]:
        """One group per row, except that runs of telemetry rows merge into compact messages."""
        groups: list[_Group] = []
        readings: list[Any] = []
        ids: list[str] = []
        size = 0
        topic = ""

        def flush() -> None:
            nonlocal readings, ids, size
            if len(ids) == 1:
                groups.append(_Group(ids, topic, single))
            elif ids:
                last = max(r["ts"] for r in readings)
                envelope = make_envelope(
                    site=self.site,
                    device=GATEWAY_DEVICE,
                    kind="telemetry",
                    body={"readings": readings},
                    ts=last,
                    id=derived_id(last, self.site, "merged", *ids),
                )
                groups.append(_Group(ids, topic, envelope.to_bytes()))
            readings, ids, size = [], [], 0

        single = b""
        for row in rows:
            if row.priority != Priority.TELEMETRY:
                flush()
                groups.append(_Group([row.id], row.topic, row.payload))
                continue
            batch = orjson.loads(row.payload)["body"]["readings"]
            if ids and (
                len(readings) + len(batch) > MERGE_READINGS or size + len(row.payload) > MERGE_BYTES
            ):
                flush()
            topic, single = row.topic, row.payload
            readings += batch
            ids.append(row.id)
            size += len(row.payload)
        flush()
        return groups

    async def _publish_groups(self, groups: list[_Group]) -> None:
        results = await asyncio.gather(
            *(
                self.client.publish(
                    g.topic, g.payload, qos=1, timeout=self.config.publish_timeout_s
                )
                for g in groups
            ),
            return_exceptions=True,
        )
        acked = [i for g, res in zip(groups, results, strict=True) if res is None for i in g.ids]
        if acked:
            await self.outbox.delete(acked)
            self.sent += len(acked)
        failures = [res for res in results if isinstance(res, BaseException)]
        if failures:
            unexpected = [f for f in failures if not isinstance(f, MqttError)]
            if unexpected:
                raise unexpected[0]
            log.warning(
                "uplink: %d of %d publishes unacknowledged (%s); retrying",
                len(failures),
                len(groups),
                failures[0],
            )
            await asyncio.sleep(self.config.retry_delay_s)

    async def _report_drops(self) -> None:
        drops = await self.outbox.drops()
        if not drops:
            return
        body = {"type": "outbox_drops", "drops": [_drop_dict(d) for d in drops]}
        key = [f"{d.priority}:{d.items}:{d.rows}:{d.first_ts}:{d.last_ts}" for d in drops]
        # Same ledger, same id: a report resent after a crash is stored once by the cloud.
        envelope = make_envelope(
            site=self.site,
            device=GATEWAY_DEVICE,
            kind="health",
            body=body,
            id=derived_id(min(d.first_ts for d in drops), self.site, "drops", *key),
            ts=now_ms(),
        )
        try:
            await self.client.publish(
                site_up_topic(self.site, "health"),
                envelope.to_bytes(),
                qos=1,
                timeout=self.config.publish_timeout_s,
            )
        except MqttError as err:
            log.warning("uplink: drop report not acknowledged (%s); will retry", err)
            return
        await self.outbox.settle_drops(drops)
        log.warning(
            "reported outbox drops to the cloud: %s",
            ", ".join(f"{Priority(d.priority).name.lower()} {d.items}" for d in drops),
        )


def _drop_dict(d: Drops) -> dict[str, int | str]:
    return {
        "class": Priority(d.priority).name.lower(),
        "items": d.items,
        "rows": d.rows,
        "bytes": d.bytes,
        "first_ts": d.first_ts,
        "last_ts": d.last_ts,
    }
