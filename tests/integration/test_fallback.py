"""Uplink down for long: SOS goes to the on-site alarm and an Apprise webhook, once each."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from edge.config import OutboxConfig
from edge.fallback import LOCAL_ALARM_TOPIC, FallbackConfig
from shouwang.mqtt import MqttClient
from shouwang.services import Mosquitto
from simulators.button import Button
from tests.conftest import (
    BUTTON,
    broker_config,
    cloud_config,
    edge_config,
    eventually,
    every_press_alerts,
    running_cloud,
    running_edge,
    unique,
)

pytestmark = pytest.mark.integration


async def test_long_outage_announces_sos_locally_once_and_the_cloud_still_gets_it(
    make_broker: Callable[[str], Mosquitto],
    tmp_path: Path,
    webhook: tuple[int, list[dict[str, Any]]],
) -> None:
    port, received = webhook
    urls = tmp_path / "apprise.urls"
    urls.write_text(f"# the duty room's SMS gateway\njson://127.0.0.1:{port}/notify\n")
    edge_broker, cloud_broker = make_broker("edge"), make_broker("cloud")
    base = every_press_alerts(edge_config(edge_broker, cloud_broker, tmp_path / "edge"), tmp_path)
    config = base.model_copy(
        update={"fallback": FallbackConfig(after_s=1.0, apprise_urls_file=urls)}
    )
    async with running_cloud(cloud_config(cloud_broker, tmp_path)) as cloud, running_edge(config) as edge:
        siren = MqttClient(broker_config(edge_broker), client_id=unique("siren"))
        siren.subscribe(LOCAL_ALARM_TOPIC, 1)
        await siren.start()
        await siren.wait_connected(10)
        try:
            await eventually(lambda: edge.cloud_mqtt.connected)
            cloud_broker.stop()
            async with Button(broker_config(edge_broker), BUTTON) as button:
                first = await button.press()  # before the fallback delay has passed
                alarm = orjson.loads((await asyncio.wait_for(siren.messages(), 10)).payload)
                assert alarm["body"]["source_id"] == first
                assert alarm["body"]["type"] == "sos"
                second = await button.press()  # while fallback is active: announced at once
                alarm = orjson.loads((await asyncio.wait_for(siren.messages(), 10)).payload)
                assert alarm["body"]["source_id"] == second
            await eventually(lambda: len(received) == 2)
            assert "[紧急] 一键求助 · SOS" in received[0]["title"]
            assert "act locally" in received[0]["message"]
            # Each alert once, however often the watcher sweeps the outbox.
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(siren.messages(), 2.5)
            assert len(received) == 2

            cloud_broker.start()
            assert cloud.store is not None
            alerts = await eventually(lambda: _two(cloud.store), timeout=30)
            assert sorted(a["source_id"] for a in alerts) == sorted([first, second])
        finally:
            await siren.close()


async def _two(store: Any) -> list[dict[str, Any]] | None:
    alerts = await store.list_alerts()
    return alerts if len(alerts) == 2 else None


async def test_life_safety_over_quota_is_an_on_site_alarm(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path
) -> None:
    edge_broker, cloud_broker = make_broker("edge"), make_broker("cloud")
    base = every_press_alerts(edge_config(edge_broker, cloud_broker, tmp_path / "edge"), tmp_path)
    # Room for about one SOS: the second one makes the life-safety backlog critical.
    config = base.model_copy(update={"outbox": OutboxConfig(life_safety_mib=0.0008)})
    async with running_edge(config) as edge:
        siren = MqttClient(broker_config(edge_broker), client_id=unique("siren"))
        siren.subscribe(LOCAL_ALARM_TOPIC, 1)
        await siren.start()
        await siren.wait_connected(10)
        try:
            cloud_broker.stop()
            async with Button(broker_config(edge_broker), BUTTON) as button:
                await button.press()
                await button.press()
            alarm = orjson.loads((await asyncio.wait_for(siren.messages(), 10)).payload)
            assert alarm["body"]["type"] == "buffer_critical"
            assert alarm["body"]["critical"] is True
            assert alarm["body"]["usage_bytes"]["life_safety"] > 0.0008 * 1024 * 1024
            assert edge.outbox.critical
            with pytest.raises(TimeoutError):  # once, not once per alert
                await asyncio.wait_for(siren.messages(), 1.0)
        finally:
            await siren.close()


async def test_an_sos_the_cloud_does_not_confirm_is_announced_though_the_broker_is_up(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path
) -> None:
    """The broker takes the alert, but no cloud worker is there to store it: a cloud crash,
    a broken deploy. A PUBACK is not a person being told; the siren is."""
    edge_broker, cloud_broker = make_broker("edge"), make_broker("cloud")
    base = edge_config(edge_broker, cloud_broker, tmp_path / "edge")
    config = base.model_copy(update={"fallback": FallbackConfig(after_s=1.0)})
    async with running_edge(config) as edge:
        siren = MqttClient(broker_config(edge_broker), client_id=unique("siren"))
        siren.subscribe(LOCAL_ALARM_TOPIC, 1)
        await siren.start()
        await siren.wait_connected(10)
        try:
            await eventually(lambda: edge.cloud_mqtt.connected)
            async with Button(broker_config(edge_broker), BUTTON) as button:
                press = await button.press()
            alarm = orjson.loads((await asyncio.wait_for(siren.messages(), 10)).payload)
            assert alarm["body"]["source_id"] == press
            assert alarm["fallback"] == "not confirmed by the cloud within 1 s"
            assert edge.cloud_mqtt.connected  # the uplink never went down
            with pytest.raises(TimeoutError):  # once
                await asyncio.wait_for(siren.messages(), 2.0)
        finally:
            await siren.close()


async def test_a_confirmed_sos_is_not_announced_on_site(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path
) -> None:
    edge_broker, cloud_broker = make_broker("edge"), make_broker("cloud")
    base = edge_config(edge_broker, cloud_broker, tmp_path / "edge")
    config = base.model_copy(update={"fallback": FallbackConfig(after_s=1.0)})
    async with (
        running_cloud(cloud_config(cloud_broker, tmp_path)),
        running_edge(config) as edge,
    ):
        siren = MqttClient(broker_config(edge_broker), client_id=unique("siren"))
        siren.subscribe(LOCAL_ALARM_TOPIC, 1)
        await siren.start()
        await siren.wait_connected(10)
        try:
            async with Button(broker_config(edge_broker), BUTTON) as button:
                await button.press()
            await eventually(lambda: _no_life_safety(edge))
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(siren.messages(), 2.0)
            assert edge.fallback.announced == set()
        finally:
            await siren.close()


async def _no_life_safety(edge: Any) -> bool:
    return (await edge.outbox.depth()).get(0, 0) == 0
