"""Welfare inference on a manual clock: a week of routine, then a silent day, in milliseconds."""

from __future__ import annotations

import datetime as dt

from edge.rules.residents import QuietHours, Resident
from shouwang.records import Event, Reading
from simulators.scenario import Household, Step, living_alone_days
from tests.unit.rules_helpers import TZ, Bench, local_ms

HOME = Household(water="wm-1", door="door-1", wearable="w-1")
DEVICES = [("wm-1", "water_meter", "r-1"), ("door-1", "door_contact", "r-1"),
           ("w-1", "wearable", "r-1")]
ALONE = Resident(id="r-1", tags=["living_alone", "elderly"])
DAY0 = dt.date(2026, 3, 2)


def replay(b: Bench, steps: list[Step], until_ms: int) -> None:
    for s in steps:
        b.advance((s.at_ms - b.clock.now_ms()) / 1000)
        if s.kind == "telemetry":
            out = b.engine.observe_reading(Reading(f"m{s.at_ms}", s.device, s.at_ms, s.body))
        else:
            out = b.engine.observe_event(
                Event(f"m{s.at_ms}", s.device, s.at_ms, s.body["event"], {})
            )
        b.alerts += out.alerts
        b.notices += out.notices
    b.advance((until_ms - b.clock.now_ms()) / 1000)


def first_sign_minutes(steps: list[Step], days: int) -> list[int]:
    firsts = []
    for i in range(days):
        day = DAY0 + dt.timedelta(days=i)
        times = [
            s.at_ms for s in steps
            if dt.datetime.fromtimestamp(s.at_ms / 1000, TZ).date() == day
            and (s.device != "w-1" or s.body.get("steps", 0) > 0)
            and not (s.device == "wm-1" and s.body.get("flow") == 0.0)
        ]
        first = dt.datetime.fromtimestamp(min(times) / 1000, TZ)
        firsts.append(first.hour * 60 + first.minute)
    return firsts


def test_a_silent_day_after_a_week_of_routine_raises_one_welfare_alert_on_time() -> None:
    steps = living_alone_days(DAY0, 8, HOME, TZ, silent=[7])
    b = Bench(DEVICES, [ALONE], start_ms=local_ms(DAY0, "00:00"))
    silent_day = DAY0 + dt.timedelta(days=7)
    replay(b, steps, local_ms(silent_day, "13:00"))
    welfare = b.of("welfare")
    assert [a.detail.get("update") for a in welfare] == [None, "escalated"]
    first, escalated = welfare
    expected_by = max(first_sign_minutes(steps, 7)) + 60
    assert first.ts == local_ms(silent_day, "00:00") + expected_by * 60000
    assert first.severity == "high"
    assert escalated.severity == "critical"
    assert escalated.ts == first.ts + 7200_000
    why = first.detail["why"]
    assert why["reason"] == "no_first_sign"
    assert why["routine"]["learned"] is True
    assert why["routine"]["learned_from_days"] == 7
    last_evening = max(s.at_ms for s in steps if s.body.get("flow") != 0.0)
    assert set(why["missing"]) == {"water", "door", "wearable"}
    assert why["last_sign_ms"] == last_evening
    for signal in why["missing"].values():
        assert signal["last_ms"] <= last_evening
    assert first.detail["who"]["tags"] == ["living_alone", "elderly"]
    assert first.life_safety is True


def test_a_normal_week_raises_no_welfare_alert_and_activity_resolves_one() -> None:
    steps = living_alone_days(DAY0, 8, HOME, TZ)
    b = Bench(DEVICES, [ALONE], start_ms=local_ms(DAY0, "00:00"))
    replay(b, steps, local_ms(DAY0 + dt.timedelta(days=8), "00:00"))
    assert b.of("welfare") == []


def test_the_resident_getting_up_late_resolves_the_alert() -> None:
    steps = living_alone_days(DAY0, 7, HOME, TZ)
    late = [Step(local_ms(DAY0 + dt.timedelta(days=7), "09:30"), "door-1", "event",
                 {"event": "opened"})]
    b = Bench(DEVICES, [ALONE], start_ms=local_ms(DAY0, "00:00"))
    replay(b, steps + late, local_ms(DAY0 + dt.timedelta(days=7), "13:00"))
    assert len(b.of("welfare")) == 1
    [resolved] = b.resolved("welfare")
    assert resolved.body["why"]["sign_of_life"] == "door"


def test_an_away_day_and_quiet_hours_raise_nothing() -> None:
    away = DAY0 + dt.timedelta(days=7)
    resident = Resident(id="r-1", tags=["living_alone"], away=[away],
                        quiet_hours=QuietHours(start="21:45", end="06:00"))
    steps = living_alone_days(DAY0, 8, HOME, TZ, silent=[7])
    b = Bench(DEVICES, [resident], start_ms=local_ms(DAY0, "00:00"))
    replay(b, steps, local_ms(away, "23:59"))
    assert b.of("welfare") == []


def test_before_the_routine_is_learned_the_defaults_apply() -> None:
    b = Bench(DEVICES, [ALONE], start_ms=local_ms(DAY0, "00:00"))
    b.advance((local_ms(DAY0, "10:30") - b.clock.now_ms()) / 1000)
    [alert] = b.of("welfare")
    assert alert.ts == local_ms(DAY0, "10:00")
    assert alert.detail["why"]["routine"]["learned"] is False


def test_a_long_daytime_silence_after_a_normal_morning_alerts() -> None:
    steps = living_alone_days(DAY0, 7, HOME, TZ)
    day7 = DAY0 + dt.timedelta(days=7)
    morning = [Step(local_ms(day7, "07:00"), "wm-1", "telemetry", {"flow": 0.3})]
    b = Bench(DEVICES, [ALONE], start_ms=local_ms(DAY0, "00:00"))
    replay(b, steps + morning, local_ms(day7, "20:00"))
    [alert, _escalated] = b.of("welfare")
    assert alert.detail["why"]["reason"] == "silence_too_long"
    limit = alert.detail["why"]["routine"]["max_gap_min"]
    assert alert.ts == local_ms(day7, "07:00") + limit * 60000


def test_the_learned_routine_survives_a_restart(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    steps = living_alone_days(DAY0, 8, HOME, TZ, silent=[7])
    b = Bench(DEVICES, [ALONE], start_ms=local_ms(DAY0, "00:00"),
              state_path=tmp_path / "rules.json")
    day7 = DAY0 + dt.timedelta(days=7)
    replay(b, steps, local_ms(day7, "05:00"))
    asyncio.run(b.engine.save(force=True))
    b.engine = b.make()  # a gateway restart
    assert b.engine.rules["welfare"].routine("r-1")["learned_from_days"] == 7  # type: ignore[attr-defined]
    b.advance((local_ms(day7, "12:00") - b.clock.now_ms()) / 1000)
    assert [a.detail.get("update") for a in b.of("welfare")] == [None, "escalated"]
