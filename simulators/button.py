"""Simulated one-touch emergency button (一键通): presses and hourly heartbeats over MQTT."""

from __future__ import annotations

import asyncio
import logging

from shouwang.config import BrokerConfig
from shouwang.mqtt import MqttClient
from shouwang.protocol import device_topic, make_envelope

log = logging.getLogger(__name__)


class Button:
    def __init__(self, broker: BrokerConfig, device_id: str) -> None:
        self.device_id = device_id
        self.client = MqttClient(broker, client_id=f"sim-{device_id}")

    async def __aenter__(self) -> Button:
        await self.client.start()
        await self.client.wait_connected(timeout=10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()

    async def press(self, event: str = "press") -> str:
        """Press once; returns the envelope id once the edge broker has acknowledged it."""
        env = make_envelope(site=None, device=self.device_id, kind="event", body={"event": event})
        await self.client.publish(device_topic(self.device_id, "event"), env.to_bytes(), qos=1)
        log.info("button pressed", extra={"device": self.device_id, "id": env.id})
        return env.id

    async def heartbeat(self, battery: int) -> str:
        env = make_envelope(
            site=None, device=self.device_id, kind="telemetry", body={"battery": battery}
        )
        await self.client.publish(device_topic(self.device_id, "telemetry"), env.to_bytes(), qos=1)
        return env.id


async def run(
    broker: BrokerConfig, device_id: str, every_s: float | None, count: int | None
) -> None:
    """Press once, `count` times, or forever every `every_s` seconds."""
    async with Button(broker, device_id) as button:
        pressed = 0
        while True:
            msg_id = await button.press()
            pressed += 1
            print(f"pressed {device_id} ({msg_id})", flush=True)
            if every_s is None or (count is not None and pressed >= count):
                return
            await asyncio.sleep(every_s)
