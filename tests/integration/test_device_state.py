"""Liveness and firmware configs through real Mosquitto: announce, config, ack, last will."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from shouwang.mqtt import MqttClient
from shouwang.protocol import device_topic, make_envelope
from shouwang.services import Mosquitto
from tests.conftest import (
    WEARABLE,
    broker_config,
    cloud_config,
    edge_config,
    eventually,
    running_cloud,
    running_edge,
    unique,
)

pytestmark = pytest.mark.integration


def status(body: dict[str, Any]) -> bytes:
    return make_envelope(site=None, device=WEARABLE, kind="status", body=body).to_bytes()


async def test_wearable_gets_its_config_and_its_last_will_is_one_transition(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path
) -> None:
    edge_broker, cloud_broker = make_broker("edge"), make_broker("cloud")
    config = edge_config(edge_broker, cloud_broker, tmp_path / "edge")
    async with (
        running_cloud(cloud_config(cloud_broker, tmp_path)),
        running_edge(config) as edge,
    ):
        health = MqttClient(broker_config(cloud_broker), client_id=unique("health"))
        health.subscribe(f"site/{config.site}/up/health", 1)
        await health.start()
        await health.wait_connected(10)
        will = (device_topic(WEARABLE, "status"), status({"state": "offline"}))
        watch = MqttClient(
            broker_config(edge_broker).model_copy(update={"keepalive_s": 5}), client_id=unique("watch"),
            will=will,
        )
        watch.subscribe(device_topic(WEARABLE, "config"), 1)
        await watch.start()
        await watch.wait_connected(10)
        try:
            await watch.publish(
                device_topic(WEARABLE, "status"),
                status({"state": "online", "model": "SW-W1", "firmware": "2.3.1"}),
                retain=True,
            )
            pushed = await asyncio.wait_for(watch.messages(), 10)
            assert pushed.topic == device_topic(WEARABLE, "config")
            body = orjson.loads(pushed.payload)
            assert body["config_version"] == 3
            assert body["settings"]["fall_cancel_window_s"] == 30
            await watch.publish(device_topic(WEARABLE, "status"), status({"config_version": 3}))
            await eventually(lambda: edge.firmware.snapshot()[WEARABLE]["state"] == "applied")
            await watch.publish(
                device_topic(WEARABLE, "telemetry"),
                make_envelope(site=None, device=WEARABLE, kind="telemetry",
                              body={"heart_rate": 72, "battery": 80}).to_bytes(),
            )
            await eventually(lambda: edge.liveness.snapshot()[WEARABLE]["data"] == "fresh")
            assert edge.liveness.snapshot()[WEARABLE]["transport"] == "connected"
        finally:
            watch._client.socket().close()  # an unclean drop: the broker publishes the will
            await watch.close()
        await eventually(
            lambda: edge.liveness.snapshot()[WEARABLE]["transport"] == "disconnected", timeout=20
        )
        seen: list[dict[str, Any]] = []

        async def transport_changes() -> list[tuple[str, str]]:
            seen.extend(orjson.loads(m.payload)["body"] for m in health.drain(1000))
            return [(b["old"], b["new"]) for b in seen
                    if b.get("type") == "device_state" and b["dimension"] == "transport"]

        changes = await eventually(
            lambda: _when_len(transport_changes(), 2), timeout=20
        )
        assert changes == [("unknown", "connected"), ("connected", "disconnected")]
        await health.close()


async def _when_len(coro: Any, n: int) -> Any:
    value = await coro
    return value if len(value) >= n else None
