"""Rule types on a manual clock: each alert raised once, escalated or resolved when it should."""

from __future__ import annotations

import datetime as dt

from edge.rules.residents import Bounds, Geofence, Resident
from tests.unit.rules_helpers import Bench, local_ms

W = ("w-1", "wearable", "r-1")
ELDER = Resident(id="r-1", tags=["elderly"])


def test_a_flapping_heart_rate_is_one_alert_resolved_once() -> None:
    b = Bench([W], [ELDER])
    b.reading("w-1", worn=True, heart_rate=80)
    for _ in range(5):  # high for long enough: raised
        b.advance(30)
        b.reading("w-1", heart_rate=140)
    # Then flapping: 135/128 around the 130 bound (hysteresis 5 keeps it raised), and 135/120
    # (clears, returns before min_clear_s): never a second alert.
    for i in range(41):
        b.advance(30)
        b.reading("w-1", heart_rate=135 if i % 2 == 0 else (128 if i < 20 else 120))
    assert len(b.of("heart_rate")) == 1
    alert = b.of("heart_rate")[0]
    assert alert.severity == "high"
    assert alert.dedup_key == "resident:r-1|heart_rate"
    assert alert.detail["why"]["high"] == 130
    assert alert.detail["who"]["resident"] == "r-1"
    assert alert.detail["evidence"], "the readings that raised it"
    assert b.resolved("heart_rate") == []
    b.advance(30)
    b.reading("w-1", heart_rate=90)
    b.advance(299)
    assert b.resolved("heart_rate") == []  # min_clear_s 300 not yet over
    b.advance(1)
    b.reading("w-1", heart_rate=91)
    assert len(b.resolved("heart_rate")) == 1
    assert b.resolved("heart_rate")[0].body["alert_id"] == alert.id


def test_a_spike_shorter_than_min_duration_raises_nothing() -> None:
    b = Bench([W], [ELDER])
    b.reading("w-1", worn=True, heart_rate=150)
    b.advance(60)
    b.reading("w-1", heart_rate=80)
    b.advance(600)
    assert b.of("heart_rate") == []


def test_a_high_lasting_min_duration_alerts_at_the_deadline_without_another_reading() -> None:
    b = Bench([W], [ELDER])
    start = b.clock.now_ms()
    b.reading("w-1", worn=True, heart_rate=150)
    b.advance(600)
    [alert] = b.of("heart_rate")
    # It happened when the heart rate went high; it was raised when the minimum duration ended.
    assert (alert.ts, alert.raised_ms) == (start, start + 120_000)


def test_the_care_plan_bounds_replace_the_rule_for_that_resident_only() -> None:
    strict = Resident(id="r-1", care_plan={"heart_rate": Bounds(low=50, high=110)})
    b = Bench([W, ("w-2", "wearable", "r-2")], [strict, Resident(id="r-2")])
    for _ in range(5):
        b.reading("w-1", worn=True, heart_rate=120)
        b.reading("w-2", worn=True, heart_rate=120)
        b.advance(60)
    [alert] = b.of("heart_rate")
    assert alert.resident == "r-1"
    assert alert.detail["why"]["high"] == 110
    assert alert.detail["why"]["bounds_from"] == "care plan of r-1"


def test_no_vital_alerts_while_not_worn_and_a_tagged_residents_bare_wrist_alerts() -> None:
    tagged = Resident(id="r-1", tags=["dementia"])
    b = Bench([W, ("w-2", "wearable", "r-2")], [tagged, Resident(id="r-2")])
    for _ in range(40):
        b.reading("w-1", worn=False, heart_rate=20, spo2=50)
        b.reading("w-2", worn=False, heart_rate=20, spo2=50)
        b.advance(60)
    assert b.of("heart_rate") == []
    assert b.of("low_spo2") == []
    [off] = b.of("not_worn")
    assert off.resident == "r-1"  # r-2 has no tag that asks for it
    assert off.detail["why"]["after_s"] == 1800
    b.reading("w-1", worn=True)
    assert len(b.resolved("not_worn")) == 1


def test_a_wearable_on_its_charger_is_given_longer_before_not_worn() -> None:
    b = Bench([W], [Resident(id="r-1", tags=["wearable_required"])])
    b.reading("w-1", worn=False, charging=True)
    b.advance(3 * 3600 - 60)
    assert b.of("not_worn") == []
    b.advance(120)
    [alert] = b.of("not_worn")
    assert alert.detail["why"]["charging"] is True


def test_a_fall_cancelled_in_time_is_recorded_not_alerted() -> None:
    b = Bench([W], [ELDER])
    b.event("w-1", "fall")
    b.advance(10)
    b.event("w-1", "fall_cancelled")
    b.advance(120)
    assert b.of("fall") == []
    [note] = [n for n in b.notices if n.body["type"] == "fall_cancelled"]
    assert note.body["cancelled_after_s"] == 10
    assert note.body["resident"] == "r-1"


def test_a_fall_not_cancelled_alerts_when_the_window_ends() -> None:
    b = Bench([W], [ELDER])
    fall = b.event("w-1", "fall")
    assert fall.alerts == []
    start = b.clock.now_ms()
    b.advance(120)
    [alert] = b.of("fall")
    # The alert carries when the person fell and when it was raised: at the window's end.
    assert (alert.ts, alert.raised_ms) == (start, start + 30_000)
    assert (alert.severity, alert.life_safety) == ("critical", True)
    b.event("w-1", "fall_cancelled")  # too late: the alert stands, the late cancel is noted
    assert [n.body["type"] for n in b.notices] == ["fall_cancel_late"]


def test_sos_presses_within_the_debounce_are_one_alert_later_ones_a_new_one() -> None:
    b = Bench([("btn-1", "emergency_button", "r-1")], [ELDER])
    for _ in range(5):
        b.event("btn-1", "press")
        b.advance(5)
    b.event("btn-1", "long_press")
    assert len(b.of("sos")) == 1
    b.advance(61)
    b.event("btn-1", "press")
    assert len(b.of("sos")) == 2
    assert b.of("sos")[0].id != b.of("sos")[1].id


def test_the_same_message_twice_gives_the_same_alert() -> None:
    b = Bench([("btn-1", "emergency_button", "r-1")], [ELDER])
    from shouwang.records import Event

    e = Event("msg-1", "btn-1", b.clock.now_ms(), "press", {})
    first = b.engine.observe_event(e).alerts
    again = b.engine.observe_event(e).alerts
    assert [a.id for a in first] == [a.id for a in again]


def test_low_battery_waits_for_the_charger_to_be_off_and_resolves_on_it() -> None:
    b = Bench([W], [ELDER])
    b.reading("w-1", battery=10, charging=True)
    assert b.of("battery_low") == []
    b.reading("w-1", battery=12, charging=False)
    b.reading("w-1", battery=11, charging=False)
    assert len(b.of("battery_low")) == 1
    b.reading("w-1", battery=11, charging=True)
    assert len(b.resolved("battery_low")) == 1
    b.reading("w-1", battery=22, charging=False)  # inside the hysteresis band: not low again
    assert len(b.of("battery_low")) == 1


def test_a_dementia_resident_leaving_the_polygon_alerts_after_a_minute() -> None:
    fence = Geofence(polygon=[(31.0, 121.0), (31.0, 121.01), (31.01, 121.01), (31.01, 121.0)])
    b = Bench([W], [Resident(id="r-1", tags=["dementia"], geofence=fence)])
    b.reading("w-1", lat=31.005, lon=121.005)
    b.reading("w-1", lat=31.02, lon=121.005)
    b.advance(30)
    b.reading("w-1", lat=31.005, lon=121.005)  # back in: GPS jitter, no alert
    b.reading("w-1", lat=31.03, lon=121.005)
    b.advance(90)
    [alert] = b.of("geofence_exit")
    assert alert.detail["why"]["fence"] == "polygon"
    b.reading("w-1", lat=31.005, lon=121.005)
    assert len(b.resolved("geofence_exit")) == 1


def test_an_indoor_zone_outside_the_allowed_ones_is_a_geofence_exit() -> None:
    fence = Geofence(zones=["room-101", "corridor-1"])
    b = Bench([W], [Resident(id="r-1", tags=["dementia"], geofence=fence)])
    b.reading("w-1", zone="stairwell-2")
    b.advance(61)
    assert [a.detail["why"]["zone"] for a in b.of("geofence_exit")] == ["stairwell-2"]


def test_gas_low_then_high_is_one_alert_escalated() -> None:
    b = Bench([("gas-1", "gas_detector", None)])
    b.reading("gas-1", lel=5.0)
    b.reading("gas-1", lel=22.0)
    b.event("gas-1", "alarm", level="low", lel=22.0)
    b.advance(20)
    b.reading("gas-1", lel=35.0)
    b.reading("gas-1", lel=55.0)
    b.event("gas-1", "alarm", level="high", lel=55.0)
    b.reading("gas-1", lel=60.0)
    first, second = b.of("gas_leak")
    assert (first.severity, second.severity) == ("high", "critical")
    assert first.dedup_key == second.dedup_key == "device:gas-1|gas_leak"
    assert second.detail["update"] == "escalated"
    assert second.detail["supersedes"] == first.id
    assert second.detail["previous_severity"] == "high"


def test_night_flow_without_a_break_is_a_leak_day_flow_is_not() -> None:
    day = dt.date(2026, 1, 5)
    b = Bench([("wm-1", "water_meter", "r-1")], [ELDER], start_ms=local_ms(day, "12:00"))
    for _ in range(60):
        b.reading("wm-1", flow=0.05)
        b.advance(60)
    assert b.of("water_leak") == []
    b.reading("wm-1", flow=0.0)
    b.advance((local_ms(day, "23:59") - b.clock.now_ms()) / 1000 + 60)  # 00:00 next day
    for _ in range(40):
        b.reading("wm-1", flow=0.05)
        b.advance(60)
    [leak] = b.of("water_leak")
    assert leak.detail["why"]["window"] == "00:00-05:00"
    b.reading("wm-1", flow=0.0)
    assert len(b.resolved("water_leak")) == 1


def test_a_burst_is_more_flow_than_a_tap_for_two_minutes() -> None:
    b = Bench([("wm-1", "water_meter", None)])
    for _ in range(5):
        b.reading("wm-1", flow=4.0)
        b.advance(30)
    [burst] = b.of("water_leak")
    assert burst.detail["why"]["field"] == "flow"


def test_gas_flowing_faster_than_the_meter_allows_is_abnormal() -> None:
    b = Bench([("gm-1", "gas_meter", None)])
    total = 100.0
    for _ in range(30):  # 3 m³/h for 30 minutes
        b.reading("gm-1", total=total)
        total += 3.0 / 60
        b.advance(60)
    [alert] = b.of("gas_flow_abnormal")
    assert 2.9 < alert.detail["why"]["value"] < 3.1


def test_smoke_that_clears_and_returns_within_the_clear_time_stays_one_alert() -> None:
    b = Bench([("sm-1", "smoke_detector", None)])
    for _ in range(5):
        b.event("sm-1", "alarm", smoke=0.3)
        b.advance(30)
        b.event("sm-1", "alarm_cleared")
        b.advance(30)
    assert len(b.of("smoke")) == 1
    b.advance(121)
    assert len(b.resolved("smoke")) == 1


def test_a_camera_stream_lost_is_one_alert_resolved_by_frames() -> None:
    b = Bench([("cam-1", "camera", None)])
    b.event("cam-1", "stream_lost")
    b.event("cam-1", "stream_lost")
    b.event("cam-1", "stream_restored")
    assert len(b.of("stream_lost")) == 1
    assert len(b.resolved("stream_lost")) == 1


def test_heart_rate_that_stops_coming_while_worn_is_missing_data_not_while_offline() -> None:
    from edge.liveness import Transition

    b = Bench([W, ("w-2", "wearable", "r-2")], [ELDER, Resident(id="r-2")])
    b.engine.observe_transitions(
        [Transition("w-2", "transport", "connected", "disconnected", b.clock.now_ms(), "t")]
    )
    for _ in range(20):
        b.reading("w-1", worn=True, steps=10)  # the wearable talks, but no heart rate
        b.advance(60)
    [alert] = b.of("vitals_missing")
    assert alert.device == "w-1"  # w-2 is offline: its own alert says so, not this one
    assert alert.detail["why"]["after_s"] == 900
    b.reading("w-1", heart_rate=70)
    assert len(b.resolved("vitals_missing")) == 1


def test_a_debounce_of_zero_makes_every_press_its_own_alert(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rules = tmp_path / "rules.yaml"
    rules.write_text("override:\n  emergency_button.press: {repeat_after_s: 0}\n")
    b = Bench([("btn-1", "emergency_button", "r-1")], [ELDER], rules_file=rules)
    for _ in range(3):
        b.event("btn-1", "press")
    assert len({a.id for a in b.of("sos")}) == 3
