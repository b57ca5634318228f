"""A button press travels device → edge broker → edge → cloud broker → cloud → WebSocket."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from shouwang.mqtt import MqttClient
from shouwang.protocol import device_topic, make_envelope
from shouwang.services import Mosquitto, free_port, wait_port
from simulators.button import Button
from tests.conftest import (
    BUTTON,
    api_alerts,
    api_alerts_at_least,
    auth,
    broker_config,
    cloud_config,
    edge_config,
    ensure_test_admin_in,
    eventually,
    life_safety_awaiting_confirmation,
    running_cloud,
    running_edge,
    unique,
)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


async def next_alert_message(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await ws.receive_json(timeout=10)
    assert msg["type"] == "alert", msg
    return dict(msg["alert"])


async def test_press_becomes_exactly_one_alert_on_the_websocket(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path
) -> None:
    edge_broker, cloud_broker = make_broker("edge"), make_broker("cloud")
    econf = edge_config(edge_broker, cloud_broker, tmp_path / "edge")
    async with (
        running_cloud(cloud_config(cloud_broker, tmp_path)) as cloud,
        running_edge(econf) as edge,
        aiohttp.ClientSession() as http,
        http.ws_connect(
            f"http://127.0.0.1:{cloud.http_port}/api/ws", headers=await auth(http, cloud.http_port)
        ) as ws,
    ):
        assert await ws.receive_json(timeout=5) == {"type": "snapshot", "alerts": []}
        async with Button(broker_config(edge_broker), BUTTON) as button:
            press_id = await button.press()
        alert = await next_alert_message(ws)
        assert alert["source_id"] == press_id
        assert (alert["type"], alert["severity"], alert["state"]) == ("sos", "critical", "open")
        assert (alert["site"], alert["device"], alert["resident"]) == (econf.site, BUTTON, "r-1")
        assert alert["life_safety"] is True
        # Exactly one: nothing else arrives, the API lists one, the outbox is drained.
        with pytest.raises(asyncio.TimeoutError):
            await ws.receive_json(timeout=1.0)
        assert [a["id"] for a in await api_alerts(http, cloud.http_port)] == [alert["id"]]
        await eventually(lambda: _outbox_empty(edge))


async def _outbox_empty(edge: Any) -> bool:
    """No alert is waiting (health rows about the devices may be)."""
    depth = await edge.outbox.depth()
    return depth.get(0, 0) == 0 and depth.get(1, 0) == 0


async def test_a_redelivered_device_message_does_not_duplicate_the_alert(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path
) -> None:
    """The device (or the broker after an edge crash) sends the same message twice."""
    edge_broker, cloud_broker = make_broker("edge"), make_broker("cloud")
    async with (
        running_cloud(cloud_config(cloud_broker, tmp_path)) as cloud,
        running_edge(edge_config(edge_broker, cloud_broker, tmp_path / "edge")) as edge,
        aiohttp.ClientSession() as http,
    ):
        device = MqttClient(broker_config(edge_broker), client_id=unique("dup-device"))
        await device.start()
        await device.wait_connected(10)
        env = make_envelope(site=None, device=BUTTON, kind="event", body={"event": "press"})
        for _ in range(3):
            await device.publish(device_topic(BUTTON, "event"), env.to_bytes())
        # A second press seconds later is the same SOS (debounce, docs/rules.md), not a second.
        second = make_envelope(site=None, device=BUTTON, kind="event", body={"event": "press"})
        await device.publish(device_topic(BUTTON, "event"), second.to_bytes())
        await device.close()
        await eventually(lambda: edge.rules.counts["events"] == 4)
        await eventually(lambda: _outbox_empty(edge))
        alerts = await eventually(lambda: api_alerts_at_least(http, cloud.http_port, 1))
        assert [a["source_id"] for a in alerts] == [env.id]
        assert edge.rules.book.open["resident:r-1|sos"].repeats == 1


async def test_alert_waits_in_the_outbox_while_the_cloud_broker_is_down(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path
) -> None:
    edge_broker, cloud_broker = make_broker("edge"), make_broker("cloud")
    async with (
        running_cloud(cloud_config(cloud_broker, tmp_path)) as cloud,
        running_edge(edge_config(edge_broker, cloud_broker, tmp_path / "edge")) as edge,
        aiohttp.ClientSession() as http,
    ):
        cloud_broker.stop()
        await eventually(lambda: not edge.cloud_mqtt.connected)
        async with Button(broker_config(edge_broker), BUTTON) as button:
            press_id = await button.press()
        # Stored and kept: one life-safety row that nothing deletes without a PUBACK.
        await eventually(lambda: _life_safety_waiting(edge, 1))
        cloud_broker.start()
        alerts = await eventually(lambda: api_alerts_at_least(http, cloud.http_port, 1), timeout=30)
        assert [a["source_id"] for a in alerts] == [press_id]
        await eventually(lambda: _outbox_empty(edge))


async def _life_safety_waiting(edge: Any, n: int) -> bool:
    return bool((await edge.outbox.depth()).get(0, 0) == n)


# --- the cloud as a real process, killed with SIGKILL -------------------------------------


class CloudProcess:
    def __init__(self, config_path: Path, http_port: int, log_path: Path) -> None:
        self.config_path = config_path
        self.http_port = http_port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        self.proc = await asyncio.to_thread(self._spawn)
        await asyncio.to_thread(wait_port, "127.0.0.1", self.http_port, 30, self.proc)

    def _spawn(self) -> subprocess.Popen[bytes]:
        args = ["cloud", "run", "--config", str(self.config_path)]
        with open(self.log_path, "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "shouwang", *args],
                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
            )

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=15)
            self.proc = None


@pytest.fixture
async def cloud_process(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path
) -> AsyncIterator[tuple[CloudProcess, Mosquitto]]:
    cloud_broker = make_broker("cloud")
    port = free_port()
    config = cloud_config(cloud_broker, tmp_path).model_dump(mode="json")
    config["http"]["port"] = port
    path = tmp_path / "cloud.yaml"
    path.write_text(yaml.safe_dump(config))
    await ensure_test_admin_in(config["database_url"])
    proc = CloudProcess(path, port, tmp_path / "cloud.log")
    try:
        yield proc, cloud_broker
    finally:
        await asyncio.to_thread(proc.stop)  # waits for the process: off the event loop


async def _broker_connected(http: aiohttp.ClientSession, port: int) -> bool:
    async with http.get(f"http://127.0.0.1:{port}/healthz") as res:
        return bool((await res.json())["broker_connected"])


async def test_cloud_killed_between_press_and_delivery_still_shows_the_alert_once(
    make_broker: Callable[[str], Mosquitto],
    cloud_process: tuple[CloudProcess, Mosquitto],
    tmp_path: Path,
) -> None:
    cloud, cloud_broker = cloud_process
    edge_broker = make_broker("edge")
    async with (
        running_edge(edge_config(edge_broker, cloud_broker, tmp_path / "edge")) as edge,
        aiohttp.ClientSession() as http,
    ):
        await cloud.start()  # its broker session (and subscription) now exists
        await eventually(lambda: _broker_connected(http, cloud.http_port))
        cloud.kill()

        async with Button(broker_config(edge_broker), BUTTON) as button:
            press_id = await button.press()
        # The cloud broker acknowledged it: it waits in the broker's queue for the dead cloud
        # worker's persistent session. The edge keeps its copy until the cloud confirms, but
        # resends only after `ack_timeout_s` (30 s): what arrives below came from the broker.
        await eventually(lambda: life_safety_awaiting_confirmation(edge, 1))

        await cloud.start()
        async with http.ws_connect(
            f"http://127.0.0.1:{cloud.http_port}/api/ws", headers=await auth(http, cloud.http_port)
        ) as ws:
            seen: list[str] = []
            first = await ws.receive_json(timeout=10)
            assert first["type"] == "snapshot"
            seen += [a["source_id"] for a in first["alerts"]]
            while press_id not in seen:
                msg = await ws.receive_json(timeout=15)
                seen.append(msg["alert"]["source_id"])
            with pytest.raises(asyncio.TimeoutError):
                msg = await ws.receive_json(timeout=1.0)
            assert seen == [press_id]
        assert [a["source_id"] for a in await api_alerts(http, cloud.http_port)] == [press_id]
        await eventually(lambda: _outbox_empty(edge))  # confirmed: now the edge let go
        assert edge.uplink.resent == 0


async def test_alert_survives_a_cloud_broker_restart_while_the_cloud_is_away(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path
) -> None:
    """The broker restarts, the edge hands it an SOS (PUBACK), and only then the cloud returns.

    Mosquitto 2.0 keeps a persistent session over a restart but not its *shared*
    subscriptions: an alert stream on $share/... would be acknowledged and dropped here.
    """
    edge_broker, cloud_broker = make_broker("edge"), make_broker("cloud")
    cconf = cloud_config(cloud_broker, tmp_path)
    async with running_edge(edge_config(edge_broker, cloud_broker, tmp_path / "edge")) as edge:
        async with running_cloud(cconf):
            pass  # the cloud's sessions and subscriptions now exist; it goes away cleanly
        cloud_broker.restart()
        await eventually(lambda: edge.cloud_mqtt.connected, timeout=20)
        async with Button(broker_config(edge_broker), BUTTON) as button:
            press_id = await button.press()
        await eventually(lambda: life_safety_awaiting_confirmation(edge, 1))  # broker has it
        async with running_cloud(cconf) as cloud, aiohttp.ClientSession() as http:
            alerts = await eventually(lambda: api_alerts_at_least(http, cloud.http_port, 1))
            assert [a["source_id"] for a in alerts] == [press_id]
            await eventually(lambda: _outbox_empty(edge))  # confirmed: the edge let go
