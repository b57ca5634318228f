"""The uplink: drains the outbox to the cloud broker, deleting a row only after its PUBACK."""

from __future__ import annotations

import asyncio
import logging

from edge.config import UplinkConfig
from edge.outbox import Outbox
from shouwang.mqtt import MqttClient, MqttError

log = logging.getLogger(__name__)


class Uplink:
    def __init__(self, outbox: Outbox, client: MqttClient, config: UplinkConfig) -> None:
        self.outbox = outbox
        self.client = client
        self.config = config
        self.sent = 0
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
                rows = await self.outbox.next_batch(self.config.batch)
                if not rows:
                    break
                results = await asyncio.gather(
                    *(
                        self.client.publish(
                            r.topic, r.payload, qos=1, timeout=self.config.publish_timeout_s
                        )
                        for r in rows
                    ),
                    return_exceptions=True,
                )
                acked = [r.id for r, res in zip(rows, results, strict=True) if res is None]
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
                        len(rows),
                        failures[0],
                    )
                    await asyncio.sleep(self.config.retry_delay_s)
