"""The edge killed with SIGKILL again and again while buttons are pressed loses no SOS."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
import yaml

from shouwang.mqtt import MqttClient, MqttError
from shouwang.protocol import device_topic, make_envelope
from shouwang.services import Mosquitto, free_port
from tests.conftest import (
    BUTTON,
    api_alerts,
    api_alerts_at_least,
    broker_config,
    cloud_config,
    edge_config,
    eventually,
    every_press_alerts,
    running_cloud,
    unique,
)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
KILLS = 6


def spawn_edge(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "shouwang", "edge", "run", "--config", str(config)],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
        )


async def press_until(stop: asyncio.Event, broker: Mosquitto, accepted: list[str]) -> None:
    """Press every ~10 ms; an id counts as accepted once the edge broker acknowledged it."""
    device = MqttClient(broker_config(broker), client_id=unique("crash-button"))
    await device.start()
    await device.wait_connected(10)
    try:
        while not stop.is_set():
            env = make_envelope(site=None, device=BUTTON, kind="event", body={"event": "press"})
            try:
                await device.publish(device_topic(BUTTON, "event"), env.to_bytes(), timeout=5)
                accepted.append(env.id)
            except MqttError:
                pass  # not accepted: the device would retry with a new press
            await asyncio.sleep(0.01)
    finally:
        await device.close()


async def test_kill_9_loop_loses_and_duplicates_nothing(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path
) -> None:
    edge_broker, cloud_broker = make_broker("edge"), make_broker("cloud")
    econf = every_press_alerts(edge_config(edge_broker, cloud_broker, tmp_path / "edge"), tmp_path)
    raw = econf.model_dump(mode="json")
    raw["http"]["port"] = health_port = free_port()
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(raw))
    accepted: list[str] = []
    stop = asyncio.Event()
    rng = random.Random(7)
    async with running_cloud(cloud_config(cloud_broker, tmp_path)) as cloud, aiohttp.ClientSession() as http:
        # An installed gateway: its edge has run once, so its broker session exists before
        # any device is trusted. (Before that first start, nothing is kept for it.)
        edge: subprocess.Popen[bytes] | None = await asyncio.to_thread(
            spawn_edge, path, tmp_path / "edge.log"
        )
        await eventually(lambda: _edge_subscribed(http, health_port))
        edge.terminate()
        await asyncio.to_thread(edge.wait)
        presser = asyncio.create_task(press_until(stop, edge_broker, accepted))
        try:
            for _ in range(KILLS):
                edge = await asyncio.to_thread(spawn_edge, path, tmp_path / "edge.log")
                # Killed at a random point: during start-up, mid-stream, mid-uplink.
                await asyncio.sleep(rng.uniform(0.3, 1.5))
                os.kill(edge.pid, signal.SIGKILL)
                await asyncio.to_thread(edge.wait)
            stop.set()
            await presser
            edge = await asyncio.to_thread(spawn_edge, path, tmp_path / "edge.log")
            assert len(accepted) > 100
            try:
                stored = await eventually(
                    lambda: _all_stored(http, cloud.http_port, len(accepted)), timeout=60
                )
            except AssertionError:
                have = {a["source_id"] for a in await api_alerts(http, cloud.http_port)}
                missing = [i for i, a in enumerate(accepted) if a not in have]
                raise AssertionError(
                    f"{len(missing)} of {len(accepted)} accepted presses missing, at {missing[:20]}"
                ) from None
        finally:
            stop.set()
            if edge is not None and edge.poll() is None:
                edge.terminate()
                await asyncio.to_thread(edge.wait)
    assert sorted(stored) == sorted(accepted)  # every accepted press, each exactly once


async def _edge_subscribed(http: aiohttp.ClientSession, port: int) -> bool:
    try:
        async with http.get(f"http://127.0.0.1:{port}/healthz") as res:
            return bool((await res.json())["edge_broker"])
    except aiohttp.ClientError:
        return False


async def _all_stored(http: aiohttp.ClientSession, port: int | None, n: int) -> list[str] | None:
    alerts = await api_alerts_at_least(http, port, n)
    return None if alerts is None else [a["source_id"] for a in alerts]
