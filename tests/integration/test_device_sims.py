"""Simulated devices of every kind through real Mosquitto into the edge and on to the cloud."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge.config import EdgeConfig
from edge.rules.config import RulesSettings
from shouwang.config import HttpConfig
from shouwang.mqtt import Message, MqttClient
from shouwang.profiles import LIFE_SAFETY_TYPES, load_profiles
from shouwang.services import Mosquitto
from simulators.devices import Fleet
from tests.conftest import (
    api_alerts_at_least,
    broker_args,
    broker_config,
    cloud_config,
    eventually,
    running_cloud,
    running_edge,
    unique,
)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
PROFILES = load_profiles()
EVERY_KIND = dict.fromkeys(sorted(PROFILES), 1)


def site_config(
    edge_broker: Mosquitto,
    cloud_broker: Mosquitto,
    data_dir: Path,
    fleet: Fleet,
    rules: RulesSettings | None = None,
) -> EdgeConfig:
    return EdgeConfig(
        site=unique("site"),
        edge_broker=broker_config(edge_broker),
        cloud_broker=broker_config(cloud_broker),
        data_dir=data_dir,
        http=HttpConfig(port=0),
        devices=fleet.bindings(),
        rules=rules or RulesSettings(),
    )


# Every event alerts at once and on its own: no SOS debounce, no fall cancel window
# (docs/rules.md; their own tests are in tests/unit/test_rules.py).
AT_ONCE = """override:
  emergency_button.press: {repeat_after_s: 0}
  emergency_button.long_press: {repeat_after_s: 0}
  wearable.fall: {cancel_window_s: 0}
"""


async def scrape(http: aiohttp.ClientSession, port: int | None) -> dict[str, dict[str, float]]:
    """Edge counters: messages in by kind, rejections by reason, alerts raised by type."""
    async with http.get(f"http://127.0.0.1:{port}/metrics") as res:
        text = await res.text()
    out: dict[str, dict[str, float]] = {"in": {}, "rejected": {}, "alerts": {}}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "shouwang_messages_in_total":
                out["in"][s.labels["kind"]] = s.value
            elif s.name == "shouwang_messages_rejected_total":
                out["rejected"][s.labels["reason"]] = s.value
            elif s.name == "shouwang_alerts_total":
                out["alerts"][s.labels["type"]] = s.value
    return out


async def next_message(client: MqttClient) -> tuple[Message, dict[str, Any]]:
    message = await asyncio.wait_for(client.messages(), 10)
    return message, orjson.loads(message.payload)


async def test_every_kind_reports_telemetry_the_edge_accepts(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path
) -> None:
    edge_broker, cloud_broker = make_broker("edge"), make_broker("cloud")
    fleet = Fleet(broker_config(edge_broker), EVERY_KIND, seed=1, autoreport=False)
    async with (
        running_edge(site_config(edge_broker, cloud_broker, tmp_path, fleet)) as edge,
        aiohttp.ClientSession() as http,
        fleet,
    ):
        for _ in range(5):
            for dev in fleet.devices:
                await dev.report()
        expected = 5 * len(fleet.devices)
        await eventually(lambda: _telemetry_in(http, edge.http_port, expected))
        counts = await scrape(http, edge.http_port)
        assert counts["in"] == {"telemetry": expected, "status": len(fleet.devices)}
        assert counts["rejected"] == {}


async def _telemetry_in(
    http: aiohttp.ClientSession, port: int | None, n: int, in_flight: int = 0
) -> bool:
    """All `n` acknowledged reports arrived, plus at most `in_flight` that were cancelled after
    reaching the broker but before their PUBACK was counted (a fleet stopping mid-publish)."""
    got = (await scrape(http, port))["in"].get("telemetry", 0)
    assert got <= n + in_flight, f"{got} readings arrived but only {n} (+{in_flight}) were sent"
    return bool(got >= n)


async def test_every_alerting_event_of_every_kind_reaches_the_cloud(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path
) -> None:
    edge_broker, cloud_broker = make_broker("edge"), make_broker("cloud")
    fleet = Fleet(broker_config(edge_broker), EVERY_KIND, seed=2, autoreport=False)
    (tmp_path / "rules.yaml").write_text(AT_ONCE, encoding="utf-8")
    rules = RulesSettings(file=tmp_path / "rules.yaml")
    async with (
        running_cloud(cloud_config(cloud_broker, tmp_path)) as cloud,
        running_edge(site_config(edge_broker, cloud_broker, tmp_path / "edge", fleet, rules)),
        aiohttp.ClientSession() as http,
        fleet,
    ):
        expected = set()
        for dev in fleet.devices:
            for name, spec in dev.profile.events.items():
                # A gas alarm's severity follows its level (low: high, high: critical).
                level = {"level": "high"} if (dev.profile.kind, name) == ("gas_detector", "alarm") else {}
                source = await dev.event(name, **level)
                if spec.alert is not None:
                    alert = spec.alert
                    life_safety = alert.type in LIFE_SAFETY_TYPES
                    expected.add((source, dev.device_id, alert.type, alert.severity, life_safety))
        assert {e[2] for e in expected} >= LIFE_SAFETY_TYPES - {"welfare"}
        alerts = await eventually(lambda: api_alerts_at_least(http, cloud.http_port, len(expected)))
        got = {
            (a["source_id"], a["device"], a["type"], a["severity"], a["life_safety"])
            for a in alerts
        }
        assert got == expected


async def test_faulty_devices_are_refused_with_the_right_reason(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path
) -> None:
    edge_broker, cloud_broker = make_broker("edge"), make_broker("cloud")
    fleet = Fleet(broker_config(edge_broker), EVERY_KIND, seed=3, autoreport=False)
    async with (
        running_edge(site_config(edge_broker, cloud_broker, tmp_path, fleet)) as edge,
        aiohttp.ClientSession() as http,
        fleet,
    ):
        for dev in fleet.devices:
            await dev.garbage()
            ranged = next(
                n for n, s in dev.profile.fields.items() if s.choices or s.max is not None
            )
            await dev.out_of_range(ranged)
        await fleet.of_kind("wearable")[0].out_of_range("spo2")  # SpO2 140
        skewed = fleet.of_kind("smoke_detector")[0]
        skewed.clock_skew(2 * 86_400_000)
        await skewed.report()
        await skewed.event("alarm")

        n = len(fleet.devices)
        expected = {"not_json": n, "out_of_range": n + 1, "bad_timestamp": 2}
        await eventually(lambda: _rejected_total(http, edge.http_port, sum(expected.values())))
        counts = await scrape(http, edge.http_port)
        assert counts["rejected"] == expected
        # An out-of-range field is dropped; the rest of its reading is kept.
        assert counts["in"]["telemetry"] == n + 1
        assert counts["alerts"] == {}  # the skewed smoke alarm raised nothing


async def _rejected_total(http: aiohttp.ClientSession, port: int | None, n: int) -> bool:
    return sum((await scrape(http, port))["rejected"].values()) >= n


async def test_a_dropped_device_leaves_its_retained_offline_will(
    make_broker: Callable[[str], Mosquitto],
) -> None:
    broker = make_broker("edge")
    fleet = Fleet(
        broker_config(broker), {"wearable": 1}, id_prefix=unique("w") + "-", autoreport=False
    )
    dev = fleet.devices[0]
    watcher = MqttClient(broker_config(broker), client_id=unique("watcher"))
    watcher.subscribe(dev.topic("status"))
    await watcher.start()
    try:
        await watcher.wait_connected(10)
        async with fleet:
            _, status = await next_message(watcher)
            assert (status["device"], status["body"]) == (dev.device_id, {"state": "online"})

            await dev.disconnect()
            _, status = await next_message(watcher)
            assert (status["kind"], status["body"]) == ("status", {"state": "offline"})
            # Someone who subscribes later still learns the device is offline.
            late = MqttClient(broker_config(broker), client_id=unique("late"))
            late.subscribe(dev.topic("status"))
            await late.start()
            try:
                message, status = await next_message(late)
            finally:
                await late.close()
            assert message.retain is True
            assert status["body"] == {"state": "offline"}

            await dev.reconnect()
            _, status = await next_message(watcher)
            assert status["body"] == {"state": "online"}
        # A clean shutdown says offline itself: a clean DISCONNECT discards the will.
        _, status = await next_message(watcher)
        assert status["body"] == {"state": "offline"}
    finally:
        await watcher.close()


async def test_a_sped_up_fleet_reports_on_its_own_and_pauses_on_demand(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path
) -> None:
    edge_broker, cloud_broker = make_broker("edge"), make_broker("cloud")
    # The longest interval (a smoke alarm's 4 h) becomes 0.1 s; shorter ones hit the floor.
    fleet = Fleet(broker_config(edge_broker), EVERY_KIND, seed=4, speed=144_000)
    async with (
        running_edge(site_config(edge_broker, cloud_broker, tmp_path, fleet)) as edge,
        aiohttp.ClientSession() as http,
    ):
        async with fleet:
            await eventually(lambda: all(d.reports_sent >= 3 for d in fleet.devices))
            paused, other = fleet.of_kind("wearable")[0], fleet.of_kind("camera")[0]
            paused.stop_reporting()
            # One report may have been in flight when it paused; let it land first.
            mark = other.reports_sent
            await eventually(lambda: other.reports_sent >= mark + 1)
            frozen, mark = paused.reports_sent, other.reports_sent
            await eventually(lambda: other.reports_sent >= mark + 5)
            assert paused.reports_sent == frozen
            paused.resume_reporting()
            await eventually(lambda: paused.reports_sent > frozen)
        sent = sum(d.reports_sent for d in fleet.devices)
        await eventually(lambda: _telemetry_in(http, edge.http_port, sent, len(fleet.devices)))
        assert (await scrape(http, edge.http_port))["rejected"] == {}

    # After a clean shutdown every device's retained status says offline.
    watcher = MqttClient(broker_config(edge_broker), client_id=unique("watcher"))
    watcher.subscribe("dev/+/status")
    await watcher.start()
    try:
        statuses: dict[str, tuple[bool, str]] = {}
        while len(statuses) < len(fleet.devices):
            message, status = await next_message(watcher)
            statuses[status["device"]] = (message.retain, status["body"]["state"])
    finally:
        await watcher.close()
    assert statuses == {d.device_id: (True, "offline") for d in fleet.devices}


async def test_cli_runs_a_fleet_and_stops_cleanly(make_broker: Callable[[str], Mosquitto]) -> None:
    broker = make_broker("edge")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulators.devices", *broker_args(broker),
        "--profile", "door_contact", "--profile", "camera", "--count", "2",
        "--speed", "100000", "--seconds", "0.5", "--id-prefix", unique("cli") + "-",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[0] == "4 devices connected"
    assert lines[-1].startswith("4 devices sent ")
