"""Parent-first offline alerts, and alert state that survives a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

from edge.liveness import Transition
from edge.rules.residents import Resident
from tests.unit.rules_helpers import Bench

BUS = "bus:10.0.0.5:502"
METERS = [(f"wm-{i}", "water_meter", None) for i in range(4)]


def offline(b: Bench, device: str, dimension: str = "transport") -> None:
    new = "disconnected" if dimension == "transport" else "stale"
    b._take(b.engine.observe_transitions(
        [Transition(device, dimension, "connected", new, b.clock.now_ms(), "test")]  # type: ignore[arg-type]
    ))


def online(b: Bench, device: str) -> None:
    b._take(b.engine.observe_transitions(
        [Transition(device, "transport", "disconnected", "connected", b.clock.now_ms(), "test")]
    ))


def test_a_bus_that_stops_answering_is_one_alert_not_one_per_meter() -> None:
    b = Bench(METERS, parents={d: BUS for d, _, _ in METERS})
    for device, _, _ in METERS:
        offline(b, device)
        b.advance(20)  # meters notice one after another, within the grace period
    b.advance(3600)
    assert b.of("device_offline") == []
    [bus] = b.of("bus_down")
    assert bus.subject == BUS
    assert bus.detail["why"]["devices_offline"] == [d for d, _, _ in METERS]
    online(b, "wm-2")
    assert len(b.resolved("bus_down")) == 1
    # The others are still silent: each gets its own alert once the grace period has passed.
    b.advance(301)
    assert sorted(a.device for a in b.of("device_offline")) == ["wm-0", "wm-1", "wm-3"]


def test_an_outage_counts_from_when_liveness_saw_it_not_from_when_the_rules_heard() -> None:
    # A polled meter's transition waits for the rules lock; by the time the rules hear of the
    # last meter, time has moved on. The grace runs from the transition, or the one bus alert
    # comes late and the first meters' own alerts come first.
    b = Bench(METERS, parents={d: BUS for d, _, _ in METERS})
    seen = b.clock.now_ms()
    for device, _, _ in METERS[:3]:
        offline(b, device)
    b.advance(200)
    b._take(b.engine.observe_transitions(
        [Transition("wm-3", "transport", "connected", "disconnected", seen, "test")]
    ))
    assert b.engine.next_deadline() == seen + 300_000
    b.advance(101)
    assert b.of("device_offline") == []
    [bus] = b.of("bus_down")
    assert bus.detail["why"]["down_since_ms"] == seen


def test_one_meter_down_on_a_working_bus_is_its_own_alert() -> None:
    b = Bench(METERS, parents={d: BUS for d, _, _ in METERS})
    offline(b, "wm-1")
    b.advance(299)
    assert b.of("device_offline") == []
    b.advance(2)
    [alert] = b.of("device_offline")
    assert alert.device == "wm-1"
    assert b.of("bus_down") == []


def test_the_edge_broker_down_is_one_alert_over_every_stale_device() -> None:
    devices = [("w-1", "wearable", "r-1"), ("btn-1", "emergency_button", "r-1"),
               ("door-1", "door_contact", "r-1")]
    b = Bench(devices, [Resident(id="r-1")])
    b._take(b.engine.broker_changed(False))
    for device, _, _ in devices:
        b.advance(60)
        offline(b, device, "data")
    b.advance(7200)
    assert b.of("device_offline") == []
    [down] = b.of("edge_broker_down")
    assert down.subject == "gateway:site-t"
    b._take(b.engine.broker_changed(True))
    assert len(b.resolved("edge_broker_down")) == 1


def test_an_open_alert_is_not_raised_again_after_a_restart(tmp_path: Path) -> None:
    b = Bench([("gas-1", "gas_detector", None)], state_path=tmp_path / "rules-state.json")
    b.reading("gas-1", lel=30.0)
    assert len(b.of("gas_leak")) == 1
    asyncio.run(b.engine.save())
    b.engine = b.make()
    b.reading("gas-1", lel=31.0)  # the threshold state is new, the open alert is not
    assert len(b.of("gas_leak")) == 1
    b.reading("gas-1", lel=60.0)
    assert [a.severity for a in b.of("gas_leak")] == ["high", "critical"]


def test_a_fall_waiting_out_its_cancel_window_survives_a_restart(tmp_path: Path) -> None:
    b = Bench([("w-1", "wearable", "r-1")], [Resident(id="r-1")],
              state_path=tmp_path / "rules-state.json")
    b.event("w-1", "fall")
    asyncio.run(b.engine.save())
    b.engine = b.make()
    b.advance(60)
    assert len(b.of("fall")) == 1


def test_a_corrupt_state_file_starts_fresh_rather_than_not_at_all(tmp_path: Path) -> None:
    path = tmp_path / "rules-state.json"
    path.write_bytes(b"{not json")
    b = Bench([("gas-1", "gas_detector", None)], state_path=path)
    b.reading("gas-1", lel=30.0)
    assert len(b.of("gas_leak")) == 1
