"""Liveness: transport, data freshness, health and battery change once each way, on the clock."""

from __future__ import annotations

import logging

import pytest

from edge.liveness import Liveness, Transition
from shouwang.clock import ManualClock
from shouwang.config import ConfigError
from shouwang.profiles import DeviceProfile

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, ManualClock's default wall time
S = 1000
MIN = 60 * S
HOUR = 3600 * S

PROFILES = {
    "meter": DeviceProfile(
        kind="meter", description="hourly meter", report_interval_s=3600, liveness_tolerance=2.5
    ),
    "wearable": DeviceProfile(
        kind="wearable", description="watch", report_interval_s=60, liveness_tolerance=3
    ),
}
BINDINGS = {"meter-1": "meter", "wear-1": "wearable"}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def live(clock: ManualClock) -> Liveness:
    return Liveness(PROFILES, BINDINGS, clock)


def data_only(transitions: list[Transition]) -> list[Transition]:
    return [t for t in transitions if t.dimension == "data"]


def test_hourly_meter_for_a_day_then_silent_goes_stale_once_and_fresh_once(
    clock: ManualClock,
) -> None:
    live = Liveness(PROFILES, {"meter-1": "meter"}, clock)
    seen: list[Transition] = []
    for minute in range(24 * 60):  # reports on the hour for 24 h, ticks every minute
        if minute % 60 == 0:
            seen += live.observe_data("meter-1", clock.now_ms(), {"total": 1.0 + minute})
        seen += live.tick()
        clock.advance(MIN)
    last_report = T0 + 23 * HOUR
    for _ in range(6 * 60):  # then six silent hours
        seen += live.tick()
        clock.advance(MIN)
    back_at = clock.now_ms()
    seen += live.observe_data("meter-1", back_at, {"total": 9.0})
    seen += live.tick()

    assert data_only(seen) == [
        Transition("meter-1", "data", "unknown", "fresh", T0, "first data"),
        Transition(
            "meter-1",
            "data",
            "fresh",
            "stale",
            last_report + 9000 * S,
            "no data for 9000 s = 2.5 × 3600 s",
        ),
        Transition("meter-1", "data", "stale", "fresh", back_at, "data again after 25200 s"),
    ]
    assert back_at == T0 + 30 * HOUR


def test_hourly_meter_is_not_stale_a_minute_or_two_hours_after_a_report(
    live: Liveness, clock: ManualClock
) -> None:
    live.observe_data("meter-1", clock.now_ms(), {"total": 1.0})
    clock.advance(MIN)
    assert data_only(live.tick()) == []
    clock.advance(2 * HOUR)
    assert [t for t in live.tick() if t.device == "meter-1"] == []
    assert live.snapshot()["meter-1"]["data"] == "fresh"


def test_boot_grace_stale_only_after_a_full_window_since_start(
    live: Liveness, clock: ManualClock
) -> None:
    clock.advance(179 * S)
    assert live.tick() == []
    clock.advance(1 * S)  # exactly the window: not yet past it
    assert live.tick() == []
    clock.advance(1)
    assert live.tick() == [
        Transition(
            "wear-1",
            "data",
            "unknown",
            "stale",
            T0 + 180 * S,
            "no data since start-up (180 s = 3 × 60 s)",
        )
    ]
    assert live.tick() == []
    assert live.snapshot()["meter-1"]["data"] == "unknown"  # its window is 9000 s


def test_device_reporting_within_boot_window_never_goes_stale(
    live: Liveness, clock: ManualClock
) -> None:
    clock.advance(100 * S)
    live.observe_data("wear-1", clock.now_ms(), {"heart_rate": 70})
    clock.advance(170 * S)  # 270 s after boot, 170 s after its report
    assert live.tick() == []
    clock.advance(10 * S + 1)
    assert live.tick() == [
        Transition("wear-1", "data", "fresh", "stale", T0 + 280 * S, "no data for 180 s = 3 × 60 s")
    ]


def test_silence_that_ran_out_between_ticks_is_reported_before_the_new_data(
    live: Liveness, clock: ManualClock
) -> None:
    live.observe_data("wear-1", clock.now_ms(), {"heart_rate": 70})
    clock.advance(200 * S)  # no tick in between
    assert live.observe_data("wear-1", clock.now_ms(), {"heart_rate": 71}) == [
        Transition(
            "wear-1", "data", "fresh", "stale", T0 + 180 * S, "no data for 180 s = 3 × 60 s"
        ),
        Transition("wear-1", "data", "stale", "fresh", T0 + 200 * S, "data again after 200 s"),
    ]


def test_flapping_wearable_gives_one_transition_per_real_change(
    live: Liveness, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="edge.liveness")
    seen: list[Transition] = []
    for state in ["online", "online", "offline", "offline", "online", "online", "offline"]:
        seen += live.observe_status("wear-1", {"state": state}, clock.now_ms())
        clock.advance(5 * S)
    assert [(t.old, t.new, t.at_ms) for t in seen] == [
        ("unknown", "connected", T0),
        ("connected", "disconnected", T0 + 10 * S),
        ("disconnected", "connected", T0 + 20 * S),
        ("connected", "disconnected", T0 + 30 * S),
    ]
    assert {t.dimension for t in seen} == {"transport"}
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert lines == [
        ("DEBUG", "device wear-1 transport: unknown -> connected (status online)"),
        ("WARNING", "device wear-1 transport: connected -> disconnected (status offline)"),
        ("INFO", "device wear-1 transport: disconnected -> connected (status online)"),
        ("WARNING", "device wear-1 transport: connected -> disconnected (status offline)"),
    ]


def test_transport_and_data_are_separate(live: Liveness, clock: ManualClock) -> None:
    live.observe_data("wear-1", clock.now_ms(), {"heart_rate": 70})
    assert live.observe_status("wear-1", {"state": "offline"}) == [
        Transition("wear-1", "transport", "unknown", "disconnected", T0, "status offline")
    ]
    snap = live.snapshot()["wear-1"]
    assert (snap["transport"], snap["data"]) == ("disconnected", "fresh")


@pytest.mark.parametrize(
    "body",
    [{}, {"state": "sleeping"}, {"state": ["online"]}, {"config_version": 3}],
)
def test_status_without_a_known_state_changes_nothing(live: Liveness, body: dict) -> None:
    assert live.observe_status("wear-1", body) == []
    assert live.snapshot()["wear-1"]["transport"] == "unknown"


def test_unbound_device_is_ignored(live: Liveness) -> None:
    assert live.observe_status("ghost", {"state": "online"}) == []
    assert live.observe_data("ghost", None, {"fault": True}, "fault") == []


def test_fault_event_then_recovery(live: Liveness, clock: ManualClock) -> None:
    first = live.observe_data("wear-1", clock.now_ms(), {"heart_rate": 70})
    assert [(t.dimension, t.new) for t in first] == [("data", "fresh"), ("health", "healthy")]
    clock.advance(10 * S)
    assert live.observe_data("wear-1", clock.now_ms(), event="fault") == [
        Transition("wear-1", "health", "healthy", "faulty", T0 + 10 * S, "fault: fault")
    ]
    clock.advance(10 * S)
    assert live.observe_data("wear-1", clock.now_ms(), {"heart_rate": 71}) == []
    assert live.snapshot()["wear-1"]["faults"] == ["fault"]
    clock.advance(10 * S)
    assert live.observe_data("wear-1", clock.now_ms(), event="fault_cleared") == [
        Transition("wear-1", "health", "faulty", "healthy", T0 + 30 * S, "no fault reported")
    ]


def test_fault_fields_set_and_clear(live: Liveness, clock: ManualClock) -> None:
    live.observe_data("meter-1", clock.now_ms(), {"valve": "open"})
    assert live.observe_data("meter-1", clock.now_ms(), {"valve": "fault", "fault": True}) == [
        Transition("meter-1", "health", "healthy", "faulty", T0, "fault: fault, valve")
    ]
    assert live.observe_data("meter-1", clock.now_ms(), {"valve": "closed"}) == []
    assert live.snapshot()["meter-1"]["faults"] == ["fault"]
    assert live.observe_data("meter-1", clock.now_ms(), {"fault": False}) == [
        Transition("meter-1", "health", "faulty", "healthy", T0, "no fault reported")
    ]


def test_low_battery_is_its_own_flag_with_hysteresis(live: Liveness) -> None:
    def battery(level: int) -> list[tuple[str, str, str]]:
        return [
            (t.dimension, t.new, t.reason)
            for t in live.observe_data("wear-1", None, {"battery": level})
            if t.dimension != "data"
        ]

    assert battery(50) == [
        ("health", "healthy", "no fault reported"),
        ("battery", "ok", "battery 50%"),
    ]
    assert battery(19) == [("battery", "low", "battery 19%, below 20%")]
    assert battery(21) == []  # inside the 5-point band: still low, no flap
    assert battery(24) == []
    assert battery(25) == [("battery", "ok", "battery 25%")]
    assert battery(20) == []
    assert live.snapshot()["wear-1"]["health"] == "healthy"


def test_wall_clock_jump_does_not_make_devices_stale(live: Liveness, clock: ManualClock) -> None:
    live.observe_data("wear-1", clock.now_ms(), {"heart_rate": 70})
    clock.set(T0 + 48 * HOUR)  # NTP corrects a gateway that booted with a wrong clock
    clock.advance(10 * S)
    assert live.tick() == []
    assert live.next_deadline() == 180.0


def test_next_deadline_is_the_earliest_window_end(live: Liveness, clock: ManualClock) -> None:
    assert live.next_deadline() == 180.0
    clock.advance(100 * S)
    live.observe_data("wear-1", clock.now_ms(), {})
    assert live.next_deadline() == 280.0
    clock.advance(181 * S)
    live.tick()
    assert live.next_deadline() == 9000.0  # the wearable is stale; the meter is next


def test_stale_is_logged_once_however_many_ticks(
    live: Liveness, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge.liveness")
    for _ in range(600):
        live.tick()
        clock.advance(10 * S)
    assert [r.getMessage() for r in caplog.records] == [
        "device wear-1 data: unknown -> stale (no data since start-up (180 s = 3 × 60 s))"
    ]
    assert all(r.levelno == logging.WARNING for r in caplog.records)


def test_snapshot_and_gateway_health(live: Liveness, clock: ManualClock) -> None:
    live.observe_status("wear-1", {"state": "online"}, clock.now_ms())
    live.observe_data("wear-1", T0 - 5 * S, {"battery": 10}, "fault")
    clock.advance(200 * S)
    live.tick()
    assert live.snapshot() == {
        "meter-1": {
            "kind": "meter",
            "transport": "unknown",
            "data": "unknown",
            "health": "unknown",
            "battery": "unknown",
            "since_ms": {"transport": None, "data": None, "health": None, "battery": None},
            "faults": [],
            "last_data_ms": None,
            "last_device_ts": None,
            "stale_after_s": 9000.0,
        },
        "wear-1": {
            "kind": "wearable",
            "transport": "connected",
            "data": "stale",
            "health": "faulty",
            "battery": "low",
            "since_ms": {"transport": T0, "data": T0 + 180 * S, "health": T0, "battery": T0},
            "faults": ["fault"],
            "last_data_ms": T0,
            "last_device_ts": T0 - 5 * S,
            "stale_after_s": 180.0,
        },
    }
    assert live.gateway_health() == {
        "at_ms": T0 + 200 * S,
        "devices": 2,
        "transport": {"unknown": 1, "connected": 1, "disconnected": 0},
        "data": {"unknown": 1, "fresh": 0, "stale": 1},
        "health": {"unknown": 1, "healthy": 0, "faulty": 1},
        "battery": {"unknown": 1, "ok": 0, "low": 1},
    }


def test_binding_to_an_unknown_profile_is_refused(clock: ManualClock) -> None:
    with pytest.raises(ConfigError, match="device d1: unknown profile 'toaster'"):
        Liveness(PROFILES, {"d1": "toaster"}, clock)


def test_manual_clock_moves_both_readings_on_advance_and_only_wall_on_set() -> None:
    clock = ManualClock(T0)
    clock.advance(1500)
    assert (clock.now_ms(), clock.monotonic()) == (T0 + 1500, 1.5)
    clock.set(T0)
    assert (clock.now_ms(), clock.monotonic()) == (T0, 1.5)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)
