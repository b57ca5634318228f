"""End-to-end confirmation: the edge lets go of a message only when the cloud says it has it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from cloud.telemetry import SqlTelemetryStore
from edge.config import EdgeConfig, UplinkConfig
from shouwang.mqtt import MqttClient
from shouwang.protocol import device_topic, make_envelope
from shouwang.services import Mosquitto
from simulators.button import Button
from tests.conftest import (
    BUTTON,
    WEARABLE,
    api_alerts_at_least,
    broker_config,
    cloud_config,
    edge_config,
    eventually,
    life_safety_awaiting_confirmation,
    running_cloud,
    running_edge,
    unique,
)

pytestmark = pytest.mark.integration
READINGS = 50


def fast_resend(config: EdgeConfig, **uplink: Any) -> EdgeConfig:
    return config.model_copy(update={"uplink": UplinkConfig(ack_timeout_s=1.0, **uplink)})


async def publish_readings(broker: Mosquitto, n: int) -> None:
    device = MqttClient(broker_config(broker), client_id=unique("wearable"))
    await device.start()
    await device.wait_connected(10)
    for i in range(n):
        env = make_envelope(site=None, device=WEARABLE, kind="telemetry",
                            body={"heart_rate": 60 + i % 40})
        await device.publish(device_topic(WEARABLE, "telemetry"), env.to_bytes())
    await device.close()


async def _no_telemetry_left(edge: Any) -> bool:
    return (await edge.outbox.depth()).get(3, 0) == 0


async def test_telemetry_a_restarted_broker_lost_is_sent_again(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path
) -> None:
    """Mosquitto 2.0 drops shared subscriptions over a restart: what it PUBACKed to the edge
    for the absent cloud is gone. The edge still holds it, unconfirmed, and sends it again."""
    edge_broker, cloud_broker = make_broker("edge"), make_broker("cloud")
    econf = fast_resend(edge_config(edge_broker, cloud_broker, tmp_path / "edge"))
    cconf = cloud_config(cloud_broker, tmp_path)
    async with running_edge(econf) as edge:
        async with running_cloud(cconf):
            pass  # the cloud's sessions and subscriptions now exist; it goes away cleanly
        cloud_broker.restart()
        await eventually(lambda: edge.cloud_mqtt.connected, timeout=20)
        await publish_readings(edge_broker, READINGS)
        await eventually(lambda: edge.uplink.awaiting > 0)  # the broker took them
        async with running_cloud(cconf) as cloud:
            assert cloud.store is not None
            telemetry = SqlTelemetryStore(cloud.store)
            await eventually(lambda: _count_is(telemetry, econf.site, READINGS), timeout=30)
            await eventually(lambda: _no_telemetry_left(edge), timeout=10)
            assert await telemetry.count(econf.site) == READINGS  # once each
        assert edge.uplink.resent > 0


async def _count_is(telemetry: SqlTelemetryStore, site: str, n: int) -> bool:
    return await telemetry.count(site) == n


async def test_an_sos_leaves_the_edge_only_once_the_cloud_confirms_it(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path
) -> None:
    """The broker's PUBACK alone is not enough: with the cloud away, the alert stays."""
    edge_broker, cloud_broker = make_broker("edge"), make_broker("cloud")
    econf = edge_config(edge_broker, cloud_broker, tmp_path / "edge")
    cconf = cloud_config(cloud_broker, tmp_path)
    async with running_edge(econf) as edge:
        async with running_cloud(cconf):
            pass
        async with Button(broker_config(edge_broker), BUTTON) as button:
            press_id = await button.press()
        await eventually(lambda: life_safety_awaiting_confirmation(edge, 1))  # still held
        async with running_cloud(cconf) as cloud, aiohttp.ClientSession() as http:
            alerts = await eventually(lambda: api_alerts_at_least(http, cloud.http_port, 1))
            assert [a["source_id"] for a in alerts] == [press_id]
            await eventually(lambda: _alerts_waiting(edge, 0))
            assert edge.uplink.confirmed >= 1


async def test_a_message_the_cloud_refuses_for_good_is_counted_and_let_go(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path
) -> None:
    """A refusal is final (sending it again gets the same answer): no endless resend loop."""
    edge_broker, cloud_broker = make_broker("edge"), make_broker("cloud")
    econf = edge_config(edge_broker, cloud_broker, tmp_path / "edge")
    cconf = cloud_config(cloud_broker, tmp_path).model_copy(update={"max_payload_bytes": 256})
    async with running_cloud(cconf), running_edge(econf) as edge:
        async with Button(broker_config(edge_broker), BUTTON) as button:
            await button.press()
        await eventually(lambda: edge.uplink.refused.get("oversize", 0) >= 1)
        await eventually(lambda: _alerts_waiting(edge, 0))
        # Every answer was a refusal (health reports are over 256 bytes too), none resent.
        assert edge.uplink.refused == {"oversize": edge.uplink.confirmed}
        assert edge.uplink.resent == 0


async def _alerts_waiting(edge: Any, n: int) -> bool:
    return (await edge.outbox.depth()).get(0, 0) == n


async def test_an_sos_is_published_though_the_window_is_full_of_unconfirmed_telemetry(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path
) -> None:
    """No cloud confirms anything, and the window allows one unconfirmed message: telemetry
    stops there, but an SOS still goes to the broker at once."""
    edge_broker, cloud_broker = make_broker("edge"), make_broker("cloud")
    econf = edge_config(edge_broker, cloud_broker, tmp_path / "edge").model_copy(
        update={"uplink": UplinkConfig(window=1)}
    )
    tap = MqttClient(broker_config(cloud_broker), client_id=unique("tap"))
    tap.subscribe(f"site/{econf.site}/up/alert", 1)
    await tap.start()
    try:
        await tap.wait_connected(10)
        async with running_edge(econf) as edge:
            await publish_readings(edge_broker, READINGS)
            await eventually(lambda: edge.uplink.awaiting >= 1)
            assert (await edge.outbox.depth()).get(3, 0) > 0  # telemetry held back
            async with Button(broker_config(edge_broker), BUTTON) as button:
                press = await button.press()
            message = await asyncio.wait_for(tap.messages(), 10)
            assert orjson.loads(message.payload)["body"]["source_id"] == press
            await eventually(lambda: edge.uplink.awaiting >= 2)  # the SOS awaits confirmation too
    finally:
        await tap.close()
