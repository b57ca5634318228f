"""Buttons pressed while the gateway is killed with SIGKILL: one alert per press (finding 4).

Many elders press at once (every 10 ms a different button) while the edge daemon is killed
at random points, mid-stream and mid-uplink, and restarted. Every press the gateway's broker
accepted must become exactly one SOS in the cloud: none lost, none doubled. Before alert ids
were a pure function of the device message, a press stored, then redelivered after the
crash, came back under a new id: 12 of 3,000 buttons had two alerts. The full 3,000-button
run is `bench/crash_presses.py`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from edge.config import DeviceBinding
from shouwang.services import Mosquitto, free_port
from simulators.crash import EdgeKiller, buttons, press_in_turn
from tests.conftest import (
    LOCATION,
    api_alerts,
    broker_config,
    cloud_config,
    edge_config,
    eventually,
    running_cloud,
)

pytestmark = pytest.mark.integration
BUTTONS = 300
KILLS = 3


async def test_presses_through_kill_9s_are_one_alert_each(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path
) -> None:
    edge_broker, cloud_broker = make_broker("edge"), make_broker("cloud")
    devices = buttons(BUTTONS)
    econf = edge_config(edge_broker, cloud_broker, tmp_path / "edge").model_copy(update={
        "devices": [DeviceBinding(id=d, profile="emergency_button", resident=f"r-{d}",
                                  location=LOCATION) for d in devices],
    })
    raw = econf.model_dump(mode="json")
    raw["http"]["port"] = free_port()
    config = tmp_path / "edge.yaml"
    config.write_text(yaml.safe_dump(raw))
    killer = EdgeKiller(config, tmp_path / "edge.log", seed=12)
    accepted: dict[str, str] = {}
    async with running_cloud(cloud_config(cloud_broker, tmp_path)) as cloud, \
            aiohttp.ClientSession() as http:
        # An installed gateway: its broker session exists before the first press.
        await killer.start()
        await eventually(lambda: _subscribed(http, raw["http"]["port"]), timeout=30)
        try:
            presses = asyncio.create_task(
                press_in_turn(broker_config(edge_broker), devices, 0.01, accepted)
            )
            await killer.kill_now_and_then(KILLS, 0.3, 1.2)
            await presses
            assert len(accepted) > BUTTONS * 0.9
            stored = await eventually(
                lambda: _at_least(http, cloud.http_port, len(accepted)), timeout=120
            )
        finally:
            await killer.stop()
    per_device = Counter(a["device"] for a in stored if a["type"] == "sos")
    doubled = {d: n for d, n in per_device.items() if n > 1}
    assert doubled == {}, f"{len(doubled)} buttons got more than one alert"
    assert {a["source_id"] for a in stored} == set(accepted.values())
    assert killer.kills == KILLS


async def _subscribed(http: aiohttp.ClientSession, port: int) -> bool:
    try:
        async with http.get(f"http://127.0.0.1:{port}/healthz") as res:
            return bool((await res.json())["edge_broker"])
    except aiohttp.ClientError:
        return False


async def _at_least(
    http: aiohttp.ClientSession, port: int | None, n: int
) -> list[dict[str, Any]] | None:
    alerts = await api_alerts(http, port)
    return alerts if len(alerts) >= n else None
