"""Acceptance scenarios through real Mosquitto and the edge, on a fast manual clock.

Device messages go device → edge broker → edge daemon (pipeline, rules, outbox) → uplink →
cloud broker, where a tap collects the alert and event envelopes the cloud would ingest.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from edge.adapters.modbus import ModbusLink
from edge.config import DeviceBinding, EdgeConfig, UplinkConfig
from edge.daemon import EdgeDaemon
from edge.rules.config import RulesSettings
from edge.rules.residents import Resident
from shouwang.clock import ManualClock
from shouwang.mqtt import MqttClient
from shouwang.profiles import load_profiles
from shouwang.services import Mosquitto
from simulators.modbus_meter import ModbusMeterServer
from simulators.scenario import Household, ScenarioRunner, Step, living_alone_days
from tests.conftest import broker_config, edge_config, eventually, unique

pytestmark = pytest.mark.integration
TZ = dt.timezone(dt.timedelta(hours=8))  # the sites' Asia/Shanghai, without DST
HOME = Household(water="wm-1", door="door-1", wearable="w-1")
LOCATION = "d/s/c/g/b/u/f/101"


class CloudTap:
    """Everything the edge uplinks for one site: alert and event envelopes, in order."""

    def __init__(self, cloud: Mosquitto, site: str) -> None:
        self.client = MqttClient(broker_config(cloud), client_id=unique("tap"))
        self.client.subscribe(f"site/{site}/up/alert", 1)
        self.client.subscribe(f"site/{site}/up/event", 1)
        self.envelopes: list[dict[str, Any]] = []

    def collect(self) -> list[dict[str, Any]]:
        for m in self.client.drain(10_000):
            self.envelopes.append(orjson.loads(m.payload))
        return self.envelopes

    def alerts(self, type_: str) -> list[dict[str, Any]]:
        return [e for e in self.collect() if e["kind"] == "alert" and e["body"]["type"] == type_]

    def events(self, type_: str) -> list[dict[str, Any]]:
        return [e for e in self.collect() if e["kind"] == "event" and e["body"]["type"] == type_]


@contextlib.asynccontextmanager
async def scenario(
    edge_broker: Mosquitto, cloud_broker: Mosquitto, config: EdgeConfig, clock: ManualClock
) -> AsyncIterator[tuple[EdgeDaemon, ScenarioRunner, CloudTap]]:
    tap = CloudTap(cloud_broker, config.site)
    await tap.client.start()
    await tap.client.wait_connected(10)
    daemon = EdgeDaemon(config, clock=clock)
    await daemon.start()
    try:
        await daemon.edge_mqtt.wait_connected(10)
        await daemon.cloud_mqtt.wait_connected(10)
        async with ScenarioRunner(daemon, clock, broker_config(edge_broker)) as runner:
            yield daemon, runner, tap
    finally:
        await daemon.stop()
        await tap.client.close()


def site_config(
    edge_broker: Mosquitto,
    cloud_broker: Mosquitto,
    tmp_path: Path,
    devices: list[tuple[str, str]],
    residents: list[Resident],
    rules: str | None = None,
) -> EdgeConfig:
    base = edge_config(edge_broker, cloud_broker, tmp_path / "edge")
    settings = RulesSettings(timezone="Asia/Shanghai")
    if rules is not None:
        (tmp_path / "rules.yaml").write_text(rules, encoding="utf-8")
        settings = RulesSettings(file=tmp_path / "rules.yaml", timezone="Asia/Shanghai")
    bindings = [
        DeviceBinding(id=d, profile=kind, resident="r-1", location=LOCATION) for d, kind in devices
    ]
    # No cloud here, only a tap: nothing confirms, so rows leave on the broker's PUBACK.
    return base.model_copy(update={
        "devices": bindings, "residents": residents, "rules": settings,
        "uplink": UplinkConfig(confirm="broker"),
    })


def local_ms(day: dt.date, hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(dt.datetime.combine(day, dt.time(int(h), int(m)), TZ).timestamp() * 1000)


async def test_a_silent_day_after_seven_days_of_routine_is_one_welfare_alert_saying_why(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path
) -> None:
    edge_b, cloud_b = make_broker("edge"), make_broker("cloud")
    # History in the past (device ts must not be ahead of the real clock), ending near now.
    day0 = dt.datetime.now(TZ).date() - dt.timedelta(days=9)
    silent = day0 + dt.timedelta(days=7)
    # The scenario sends only signs of life, not each device's heartbeat, so the devices look
    # stale to liveness: offline alerts are switched off here (their own tests cover them).
    config = site_config(
        edge_b, cloud_b, tmp_path,
        [("wm-1", "water_meter"), ("door-1", "door_contact"), ("w-1", "wearable")],
        [Resident(id="r-1", tags=["living_alone", "elderly"])],
        rules="disable: [device_offline]\n",
    )
    steps = living_alone_days(day0, 8, HOME, TZ, silent=[7], seed=4)
    clock = ManualClock(now_ms=local_ms(day0, "00:00"))
    started = time.monotonic()
    async with scenario(edge_b, cloud_b, config, clock) as (edge, runner, tap):
        await runner.run(steps, until_ms=local_ms(silent, "13:00"))
        welfare = await eventually(lambda: len(tap.alerts("welfare")) >= 2 and tap.alerts("welfare"))
        await runner.advance_to(local_ms(silent, "13:30"))
        assert tap.alerts("welfare") == welfare  # nothing more arrives
        every_alert = [e["body"]["type"] for e in tap.collect() if e["kind"] == "alert"]
    assert time.monotonic() - started < 120, "a week should replay in well under two minutes"
    assert every_alert == ["welfare", "welfare"]
    first, escalated = (e["body"] for e in welfare)
    assert first["detail"].get("update") is None
    assert escalated["detail"]["update"] == "escalated"
    assert escalated["detail"]["supersedes"] == welfare[0]["id"]
    assert (first["severity"], escalated["severity"]) == ("high", "critical")
    # At the right time: the latest first sign of the seven days, plus the one-hour margin.
    firsts = []
    for i in range(7):
        day = day0 + dt.timedelta(days=i)
        times = [s.at_ms for s in steps if _local_day(s) == day and _is_sign(s, steps)]
        firsts.append(_minute_of_day(min(times)))
    assert welfare[0]["ts"] == local_ms(silent, "00:00") + (max(firsts) + 60) * 60000
    why = first["detail"]["why"]
    assert why["reason"] == "no_first_sign"
    assert why["routine"]["learned_from_days"] == 7
    assert sorted(why["missing"]) == ["door", "water", "wearable"]
    last_sign = max(s.at_ms for s in steps if _is_sign(s, steps))
    assert why["last_sign_ms"] == last_sign
    assert first["resident"] == "r-1"
    assert first["detail"]["who"]["tags"] == ["living_alone", "elderly"]
    assert first["life_safety"] is True
    assert runner.published == len(steps)
    assert edge.rules.counts["readings"] + edge.rules.counts["events"] == len(steps)


def _local_day(s: Step) -> dt.date:
    return dt.datetime.fromtimestamp(s.at_ms / 1000, TZ).date()


def _minute_of_day(ms: int) -> int:
    t = dt.datetime.fromtimestamp(ms / 1000, TZ)
    return t.hour * 60 + t.minute


def _is_sign(s: Step, steps: list[Step]) -> bool:
    """Water flowing, a door, or steps that went up since the wearable's last report."""
    if s.device == "wm-1":
        return bool(s.body.get("flow"))
    if s.device == "door-1":
        return True
    before = [p for p in steps if p.device == "w-1" and p.at_ms < s.at_ms]
    return bool(before) and s.body["steps"] > before[-1].body["steps"]


async def test_a_flapping_gas_reading_is_one_alert(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path
) -> None:
    edge_b, cloud_b = make_broker("edge"), make_broker("cloud")
    config = site_config(edge_b, cloud_b, tmp_path, [("gas-1", "gas_detector")], [])
    clock = ManualClock(now_ms=int(time.time() * 1000) - 3_600_000)
    async with scenario(edge_b, cloud_b, config, clock) as (_, runner, tap):
        start = clock.now_ms()
        for i in range(30):  # 21/17 %LEL around the 20 %LEL level every 10 s for 5 minutes
            lel = 21.0 if i % 2 == 0 else 17.0
            await runner.advance_to(start + i * 10_000)
            await runner.publish(Step(clock.now_ms(), "gas-1", "telemetry", {"lel": lel}))
        await runner.advance_to(start + 30 * 10_000)
        [alert] = await eventually(lambda: tap.alerts("gas_leak"))
        assert alert["body"]["severity"] == "high"
        assert alert["body"]["detail"]["why"]["high"] == 20
        # It clears only after a minute below the level (less the hysteresis): one resolution.
        await runner.publish(Step(clock.now_ms(), "gas-1", "telemetry", {"lel": 2.0}))
        await runner.advance_to(clock.now_ms() + 61_000)
        await runner.publish(Step(clock.now_ms(), "gas-1", "telemetry", {"lel": 1.0}))
        [resolved] = await eventually(lambda: tap.events("alert_resolved"))
        assert resolved["body"]["alert_id"] == alert["id"]
        assert len(tap.alerts("gas_leak")) == 1


async def test_a_fall_cancelled_in_time_is_no_alert_one_not_cancelled_is_one(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path
) -> None:
    edge_b, cloud_b = make_broker("edge"), make_broker("cloud")
    config = site_config(edge_b, cloud_b, tmp_path, [("w-1", "wearable")], [Resident(id="r-1")])
    clock = ManualClock(now_ms=int(time.time() * 1000) - 3_600_000)
    async with scenario(edge_b, cloud_b, config, clock) as (_, runner, tap):
        await runner.publish(Step(clock.now_ms(), "w-1", "event", {"event": "fall"}))
        await runner.advance_to(clock.now_ms() + 12_000)
        await runner.publish(Step(clock.now_ms(), "w-1", "event", {"event": "fall_cancelled"}))
        await runner.advance_to(clock.now_ms() + 60_000)
        [cancelled] = await eventually(lambda: tap.events("fall_cancelled"))
        assert cancelled["body"]["cancelled_after_s"] == 12
        assert tap.alerts("fall") == []
        # The same, not cancelled: the alert comes when the 30 s window ends.
        fall_at = clock.now_ms()
        await runner.publish(Step(fall_at, "w-1", "event", {"event": "fall"}))
        await runner.advance_to(fall_at + 60_000)
        [alert] = await eventually(lambda: tap.alerts("fall"))
        # When the person fell, and raised when the 30 s window ended.
        assert alert["ts"] == fall_at
        assert alert["body"]["raised_ms"] == fall_at + 30_000
        assert alert["body"]["severity"] == "critical"
        assert len(tap.events("fall_cancelled")) == 1


async def test_the_gateway_losing_its_broker_is_one_alert_not_one_per_device(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path
) -> None:
    edge_b, cloud_b = make_broker("edge"), make_broker("cloud")
    devices = [("w-1", "wearable"), ("btn-1", "emergency_button"), ("door-1", "door_contact"),
               ("gas-1", "gas_detector"), ("sm-1", "smoke_detector")]
    config = site_config(edge_b, cloud_b, tmp_path, devices, [Resident(id="r-1")])
    clock = ManualClock(now_ms=int(time.time() * 1000) - 86_400_000)
    async with scenario(edge_b, cloud_b, config, clock) as (edge, runner, tap):
        for device, kind in devices:
            body = {"rssi": -70} if kind == "gas_detector" else {"battery": 80}
            await runner.publish(Step(clock.now_ms(), device, "telemetry", body))
        edge_b.stop()
        await eventually(lambda: not edge.edge_mqtt.connected)
        # Nine hours: every device's data goes stale (the smoke alarm's window is 8 h).
        await runner.advance_to(clock.now_ms() + 9 * 3_600_000)
        [down] = await eventually(lambda: tap.alerts("edge_broker_down"))
        assert down["body"]["subject"] == f"gateway:{config.site}"
        assert sorted(down["body"]["detail"]["why"]["devices"]) == sorted(d for d, _ in devices)
        assert tap.alerts("device_offline") == []
        edge_b.start()
        await edge.edge_mqtt.wait_connected(30)
        await runner.settle()
        [resolved] = await eventually(lambda: tap.events("alert_resolved"))
        assert resolved["body"]["alert_id"] == down["id"]
        assert len(tap.alerts("edge_broker_down")) == 1


async def test_gas_crossing_the_low_then_the_high_level_is_one_alert_escalated(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path
) -> None:
    edge_b, cloud_b = make_broker("edge"), make_broker("cloud")
    config = site_config(edge_b, cloud_b, tmp_path, [("gas-1", "gas_detector")], [])
    clock = ManualClock(now_ms=int(time.time() * 1000) - 3_600_000)
    async with scenario(edge_b, cloud_b, config, clock) as (_, runner, tap):
        for lel in (3.0, 12.0, 24.0):
            await runner.publish(Step(clock.now_ms(), "gas-1", "telemetry", {"lel": lel}))
            await runner.advance_to(clock.now_ms() + 5_000)
        await runner.publish(
            Step(clock.now_ms(), "gas-1", "event", {"event": "alarm", "level": "low", "lel": 24.0})
        )
        for lel in (38.0, 52.0):
            await runner.advance_to(clock.now_ms() + 5_000)
            await runner.publish(Step(clock.now_ms(), "gas-1", "telemetry", {"lel": lel}))
        await runner.publish(
            Step(clock.now_ms(), "gas-1", "event", {"event": "alarm", "level": "high", "lel": 52.0})
        )
        first, escalated = await eventually(
            lambda: len(tap.alerts("gas_leak")) >= 2 and tap.alerts("gas_leak")
        )
        await runner.advance_to(clock.now_ms() + 30_000)
        assert len(tap.alerts("gas_leak")) == 2
    assert (first["body"]["severity"], escalated["body"]["severity"]) == ("high", "critical")
    assert first["body"]["dedup_key"] == escalated["body"]["dedup_key"] == "resident:r-1|gas_leak"
    assert escalated["body"]["detail"]["update"] == "escalated"
    assert escalated["body"]["detail"]["supersedes"] == first["id"]
    assert first["body"]["life_safety"] is True


async def test_a_modbus_bus_that_stops_answering_is_one_alert_not_one_per_meter(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path
) -> None:
    profiles = load_profiles()
    edge_b, cloud_b = make_broker("edge"), make_broker("cloud")
    async with ModbusMeterServer({u: profiles["water_meter"] for u in (1, 2, 3)}, seed=2) as bus:
        link = {"host": "127.0.0.1", "port": bus.port, "poll_interval_s": 0.2, "timeout_s": 0.2,
                "retries": 0, "unavailable_after": 2, "unavailable_backoff_max_s": 0.4}
        meters = [
            DeviceBinding(id=f"wm-{u}", profile="water_meter", resident="r-1", location=LOCATION,
                          modbus=ModbusLink(unit_id=u, **link))
            for u in (1, 2, 3)
        ]
        config = site_config(edge_b, cloud_b, tmp_path, [], [Resident(id="r-1")])
        config = config.model_copy(update={"devices": meters})
        clock = ManualClock(now_ms=int(time.time() * 1000) - 3_600_000)
        async with scenario(edge_b, cloud_b, config, clock) as (edge, runner, tap):
            await eventually(lambda: edge.rules.counts["readings"] >= 6)
            bus.inject("stop_answering")
            # The rules' view, not liveness': a polled meter's transition reaches the rules a
            # moment later, and a clock moved before it would date the outage 301 s late.
            await eventually(lambda: all(edge.rules.states[m.id].offline for m in meters))
            await runner.advance_to(clock.now_ms() + 301_000)
            [down] = await eventually(lambda: tap.alerts("bus_down"))
            assert down["body"]["subject"] == f"bus:127.0.0.1:{bus.port}"
            assert down["body"]["detail"]["why"]["devices_offline"] == ["wm-1", "wm-2", "wm-3"]
            assert tap.alerts("device_offline") == []
            bus.clear()
            await eventually(lambda: tap.events("alert_resolved"))
            assert len(tap.alerts("bus_down")) == 1
