"""The cloud broker goes away under telemetry load with SOS presses interleaved."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from cloud.telemetry import SqlTelemetryStore
from edge.config import DeviceBinding, EdgeConfig, OutboxConfig, UplinkConfig
from shouwang.mqtt import MqttClient
from shouwang.services import Mosquitto
from simulators.button import Button
from tests.conftest import (
    BUTTON,
    api_alerts_at_least,
    broker_args,
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
ROOT = Path(__file__).resolve().parents[2]
# The store-and-forward issue's acceptance figures, as they are.
LOAD_DEVICES = 100
RATE = 2000  # telemetry messages a second
OUTAGE_S = 60
SOS = 100


def outage_config(edge_broker: Mosquitto, cloud_broker: Mosquitto, data_dir: Path) -> EdgeConfig:
    # Each press is a numbered SOS here: the debounce would fold them (docs/rules.md).
    base = every_press_alerts(edge_config(edge_broker, cloud_broker, data_dir), data_dir.parent)
    loads = [DeviceBinding(id=f"wear-load-{i:04d}", profile="wearable") for i in range(LOAD_DEVICES)]
    return base.model_copy(
        update={
            "devices": [*base.devices, *loads],
            # About 40,000 readings fit: 120,000 in a 60 s outage must lose some, the oldest.
            "outbox": OutboxConfig(telemetry_mib=5),
            "uplink": UplinkConfig(rate_msgs_s=50, burst=20),
        }
    )


async def test_outage_delivers_every_sos_first_and_accounts_for_every_lost_reading(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path
) -> None:
    edge_broker, cloud_broker = make_broker("edge"), make_broker("cloud")
    config = outage_config(edge_broker, cloud_broker, tmp_path / "edge")
    async with (
        running_cloud(cloud_config(cloud_broker, tmp_path)) as cloud,
        running_edge(config) as edge,
        aiohttp.ClientSession() as http,
    ):
        # An observer with a persistent session sees the order the cloud broker got things in.
        observer = MqttClient(broker_config(cloud_broker), client_id=unique("observer"), persistent=True)
        observer.subscribe(f"site/{config.site}/up/#", 1)
        await observer.start()
        await observer.wait_connected(10)

        load = await asyncio.to_thread(
            subprocess.Popen,
            [sys.executable, "-m", "simulators.load", *broker_args(edge_broker),
             "--rate", str(RATE), "--devices", str(LOAD_DEVICES), "--seconds", str(OUTAGE_S + 4)],
            cwd=ROOT, stdout=subprocess.DEVNULL,
        )
        presses: list[str] = []
        topics: list[str] = []
        try:
            await asyncio.sleep(1.0)
            cloud_broker.stop()
            async with Button(broker_config(edge_broker), BUTTON) as button:
                for _ in range(SOS):
                    presses.append(await button.press())
                    await asyncio.sleep(OUTAGE_S / SOS)
            await eventually(lambda: _depth_is(edge, 0, SOS))  # every SOS is waiting
            await asyncio.to_thread(load.wait, 30)
            sent = load.returncode
            assert sent == 0
            observer.drain(1_000_000)  # what it saw before the outage does not count
            cloud_broker.start()

            alerts = await eventually(lambda: api_alerts_at_least(http, cloud.http_port, SOS), timeout=30)
            assert sorted(a["source_id"] for a in alerts) == sorted(presses)
            await eventually(lambda: _outbox_drained(edge), timeout=60)
            topics = await _collect(observer)
        finally:
            await observer.close()
            if load.poll() is None:
                load.kill()
                await asyncio.to_thread(load.wait)

        # What the cloud broker received after it came back: the SOS backlog before any of the
        # telemetry backlog. (A health message paho had in flight when the broker went away
        # may be retransmitted first: that is the session's resend, not the backlog's order.)
        kinds = [t.rsplit("/", 1)[1] for t in topics]
        first_telemetry = kinds.index("telemetry")
        alerts_at = [i for i, k in enumerate(kinds) if k == "alert"]
        assert len(alerts_at) >= SOS
        assert alerts_at[SOS - 1] < first_telemetry, kinds[: SOS + 5]
        assert kinds[: alerts_at[0]].count("telemetry") == 0

        # Every reading the edge accepted is either stored in the cloud or reported as dropped.
        accepted = edge.metrics.messages_in.labels("edge", "telemetry")._value.get()
        accepted += edge.edge_mqtt.dropped_incoming
        assert cloud.store is not None
        stored = await SqlTelemetryStore(cloud.store).count(config.site)
        dropped = await eventually(lambda: _reported(cloud, config.site), timeout=30)
        assert dropped.get("telemetry", 0) > 0, "the quota was meant to force a loss"
        assert stored + dropped["telemetry"] == accepted
        assert set(dropped) == {"telemetry"}


async def _depth_is(edge: object, priority: int, n: int) -> bool:
    return bool((await edge.outbox.depth()).get(priority, 0) == n)  # type: ignore[attr-defined]


async def _outbox_drained(edge: object) -> bool:
    outbox = edge.outbox  # type: ignore[attr-defined]
    return await outbox.depth() == {} and await outbox.drops() == []


async def _reported(cloud: object, site: str) -> dict[str, int]:
    return await cloud.store.dropped_items(site)  # type: ignore[attr-defined, no-any-return]


async def _collect(client: MqttClient) -> list[str]:
    topics = []
    while True:
        try:
            message = await asyncio.wait_for(client.messages(), 2.0)
        except TimeoutError:
            return topics
        topics.append(message.topic)
