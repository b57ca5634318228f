"""Every shipped profile: loads, alerts sensibly, and the simulator's values pass its checks."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from edge.config import DeviceBinding
from edge.pipeline import Outcome, Pipeline
from edge.rules.config import profile_rules
from edge.rules.events import EventAlertParams
from shouwang.config import BrokerConfig
from shouwang.profiles import LIFE_SAFETY_TYPES, PROFILES_DIR, SEVERITIES, load_profiles
from shouwang.protocol import Rejection
from simulators.devices import (
    Fleet,
    Grow,
    ReadingModel,
    SimDevice,
    garbage_payload,
    main,
    out_of_range_value,
)

PROFILES = load_profiles()
KINDS = sorted(PROFILES)
ROOT = Path(__file__).resolve().parents[2]
BROKER = BrokerConfig(port=1883)  # never connected to in these tests

# DESIGN.md, "Alerts": "Life-safety alerts (SOS, fall, gas, smoke, welfare, thrown object,
# watchlist hit)".
DESIGN_LIFE_SAFETY = {
    "sos",
    "fall",
    "gas_leak",
    "smoke",
    "welfare",
    "thrown_object",
    "watchlist_hit",
}

# The events that must raise each life-safety alert, and how severe it is.
LIFE_SAFETY_EVENTS = {
    ("emergency_button", "press"): ("sos", "critical"),
    ("emergency_button", "long_press"): ("sos", "critical"),
    ("wearable", "sos"): ("sos", "critical"),
    ("wearable", "fall"): ("fall", "critical"),
    ("gas_detector", "alarm"): ("gas_leak", "critical"),
    ("smoke_detector", "alarm"): ("smoke", "critical"),
    ("camera", "thrown_object"): ("thrown_object", "critical"),
    ("camera", "watchlist_hit"): ("watchlist_hit", "high"),
}


def test_every_kind_the_issue_names_is_shipped_and_named_after_its_file() -> None:
    assert {
        "emergency_button",
        "wearable",
        "gas_detector",
        "smoke_detector",
        "door_contact",
        "camera",
    } <= set(PROFILES)
    assert {p.stem for p in PROFILES_DIR.glob("*.yaml")} == set(PROFILES)


@pytest.mark.parametrize("kind", KINDS)
def test_profile_sets_its_own_interval_and_liveness_tolerance(kind: str) -> None:
    # The model has defaults; a shipped profile must say what is true for its device.
    raw = yaml.safe_load((PROFILES_DIR / f"{kind}.yaml").read_text(encoding="utf-8"))
    assert {"report_interval_s", "liveness_tolerance"} <= set(raw)


def test_life_safety_types_are_the_ones_design_lists() -> None:
    assert set(LIFE_SAFETY_TYPES) == DESIGN_LIFE_SAFETY


def test_life_safety_events_raise_their_alert_at_their_severity() -> None:
    for (kind, event), expected in LIFE_SAFETY_EVENTS.items():
        alert = PROFILES[kind].alerting_events[event]
        assert (alert.type, alert.severity) == expected, (kind, event)
    raised = {a.type for p in PROFILES.values() for a in p.alerting_events.values()}
    # welfare is inferred by rules across a resident's devices, never sent by one device.
    assert LIFE_SAFETY_TYPES - raised == {"welfare"}


@pytest.mark.parametrize("kind", KINDS)
def test_alerting_events_have_a_known_severity_and_life_safety_ones_are_urgent(kind: str) -> None:
    for event, alert in PROFILES[kind].alerting_events.items():
        assert alert.severity in SEVERITIES, (event, alert)
        assert alert.type
        assert alert.type == alert.type.lower().replace(" ", "_")
        if alert.type in LIFE_SAFETY_TYPES:
            assert alert.severity in ("critical", "high"), (event, alert)


def test_door_open_and_close_raise_no_alert_by_themselves() -> None:
    door = PROFILES["door_contact"]
    assert door.events["opened"].alert is None
    assert door.events["closed"].alert is None
    assert door.fields["state"].choices == ["open", "closed"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_field_has_a_unit_or_is_bool_or_str_and_numbers_have_a_range(kind: str) -> None:
    profile = PROFILES[kind]
    specs = {f"fields.{n}": s for n, s in profile.fields.items()}
    for event, e in profile.events.items():
        specs |= {f"events.{event}.fields.{n}": s for n, s in e.fields.items()}
    for where, spec in specs.items():
        assert spec.description, f"{kind}: {where} has no description"
        if spec.type in ("int", "float"):
            assert spec.unit, f"{kind}: {where} has no unit"
            assert spec.min is not None or spec.max is not None, f"{kind}: {where} has no range"


@pytest.mark.parametrize("kind", KINDS)
def test_simulated_readings_pass_every_field_check(kind: str) -> None:
    profile = PROFILES[kind]
    model = ReadingModel(profile, random.Random(kind))
    previous: dict[str, float] = {}
    for _ in range(2000):  # about a month of hourly reports: walks reach their bounds
        reading = model.next(profile.report_interval_s)
        assert set(reading) == set(profile.fields)
        for name, value in reading.items():
            assert profile.fields[name].check(value) is None, (name, value)
            if isinstance(model.behaviours[name], Grow):
                assert value >= previous.get(name, value), f"cumulative {name} went down"
                previous[name] = value


def test_wearable_vitals_look_like_a_resting_elder_not_the_edges_of_the_range() -> None:
    model = ReadingModel(PROFILES["wearable"], random.Random(7))
    readings = [model.next(60) for _ in range(500)]
    assert all(50 <= r["heart_rate"] <= 120 for r in readings)
    assert all(r["spo2"] >= 90 for r in readings)
    assert readings[-1]["steps"] > readings[0]["steps"]


def _pipeline() -> Pipeline:
    devices = {f"d-{k}": DeviceBinding(id=f"d-{k}", profile=k) for k in KINDS}
    return Pipeline("s1", devices, PROFILES, 64 * 1024)


def _device(kind: str, seed: int = 1) -> SimDevice:
    return SimDevice(BROKER, f"d-{kind}", PROFILES[kind], random.Random(seed))


@pytest.mark.parametrize("kind", KINDS)
def test_the_edge_pipeline_accepts_simulated_telemetry_and_events(kind: str) -> None:
    dev, pipeline = _device(kind), _pipeline()
    profile = PROFILES[kind]
    for _ in range(50):
        env = dev.envelope("telemetry", dev.values.next(profile.report_interval_s))
        out = pipeline.process(dev.topic("telemetry"), env.to_bytes())
        assert isinstance(out, Outcome), out
        assert out.field_rejections == []
    rules = {
        c.params.event: c.params
        for c in profile_rules(PROFILES).values()
        if isinstance(c.params, EventAlertParams) and c.params.kinds == [kind]
    }
    for event, spec in profile.events.items():
        # A fresh pipeline per event: SOS debounce would fold a long press into the press.
        pipeline = _pipeline()
        data = dev.values.event_data(event)
        env = dev.envelope("event", {"event": event, **data})
        out = pipeline.process(dev.topic("event"), env.to_bytes())
        assert isinstance(out, Outcome), out
        rule = rules.get(event)
        if spec.alert is not None:
            assert rule is not None, event
            assert rule.alert == spec.alert.type, event
        if rule is None or rule.cancel_window_s:
            expected = []  # no alert, or not yet: a fall waits out its cancel window
        else:
            severity = rule.severity_map.get(str(data.get(rule.severity_field)), rule.severity)
            expected = [(rule.alert, severity)]
        assert [(a.type, a.severity) for a in out.alerts] == expected, event


@pytest.mark.parametrize("kind", KINDS)
def test_out_of_range_values_are_refused_by_their_field(kind: str) -> None:
    profile = PROFILES[kind]
    ranged = {n: s for n, s in profile.fields.items() if s.choices or s.min is not None}
    assert ranged, f"{kind} has no field a fault could push out of range"
    for name, spec in ranged.items():
        for below in (False, True):
            problem = spec.check(out_of_range_value(name, spec, below=below))
            assert problem is not None, (name, below)
            assert not problem.startswith("expected"), (name, problem)


def test_out_of_range_examples_from_the_issue() -> None:
    assert out_of_range_value("spo2", PROFILES["wearable"].fields["spo2"]) == 140
    if "water_meter" in PROFILES:
        flow = PROFILES["water_meter"].fields["flow"]
        assert out_of_range_value("flow", flow, below=True) < 0
    with pytest.raises(ValueError, match="no range"):
        out_of_range_value("worn", PROFILES["wearable"].fields["worn"])


def test_garbage_and_clock_skew_are_refused_with_their_reasons() -> None:
    dev, pipeline = _device("wearable"), _pipeline()
    for _ in range(20):
        result = pipeline.process(dev.topic("telemetry"), garbage_payload(dev.rng))
        assert isinstance(result, Rejection)
        assert result.reason == "not_json"
    dev.clock_skew(2 * 86_400_000)
    env = dev.envelope("telemetry", dev.values.next(60))
    result = pipeline.process(dev.topic("telemetry"), env.to_bytes())
    assert isinstance(result, Rejection)
    assert result.reason == "bad_timestamp"


def test_battery_drain_takes_its_rate_per_report_down_to_zero() -> None:
    dev = _device("emergency_button")
    start = dev.values.next(3600)["battery"]
    dev.battery_drain(7)
    levels = [dev.values.next(3600)["battery"] for _ in range(20)]
    assert levels[:3] == pytest.approx([start - 7, start - 14, start - 21], abs=1)
    assert levels[-1] == 0
    with pytest.raises(ValueError, match="no battery"):
        _device("camera").battery_drain(1)


def test_events_change_what_the_device_reports_next() -> None:
    dev = _device("door_contact")
    dev.values.apply_event("opened")
    assert dev.values.state["state"] == "open"
    cam = _device("camera")
    cam.values.apply_event("stream_lost")
    reading = cam.values.next(60)
    assert (reading["online"], reading["fps"], reading["bitrate"]) == (False, 0, 0)


def test_unknown_event_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="wearable has no event 'explode'"):
        _device("wearable").values.event_data("explode")


def test_fleet_names_devices_per_kind_and_binds_them() -> None:
    fleet = Fleet(BROKER, {"wearable": 2, "camera": 1}, id_prefix="s1-", autoreport=False)
    assert [(b.id, b.profile) for b in fleet.bindings()] == [
        ("s1-wear-0001", "wearable"),
        ("s1-wear-0002", "wearable"),
        ("s1-cam-0001", "camera"),
    ]
    with pytest.raises(ValueError, match=r"unknown device kind\(s\) \['toaster'\]"):
        Fleet(BROKER, {"toaster": 1})


def test_speed_divides_the_interval_down_to_a_floor() -> None:
    dev = SimDevice(BROKER, "w", PROFILES["wearable"], speed=60)
    assert dev.interval_s == 1.0
    assert SimDevice(BROKER, "w", PROFILES["wearable"], speed=1e9).interval_s == dev.min_interval_s


def test_cli_prints_the_bindings_an_edge_needs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--profile", "door_contact", "--count", "2", "--print-bindings"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == {
        "devices": [
            {"id": "door-0001", "profile": "door_contact"},
            {"id": "door-0002", "profile": "door_contact"},
        ]
    }


def _gen_docs() -> ModuleType:
    path = ROOT / "scripts" / "gen_device_docs.py"
    spec = importlib.util.spec_from_file_location("gen_device_docs", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_device_docs_match_the_profiles() -> None:
    gen = _gen_docs()
    text = (ROOT / "docs" / "devices.md").read_text(encoding="utf-8")
    assert gen.replace_block(text, gen.render(PROFILES)) == text, (
        "docs/devices.md is stale: run .venv/bin/python scripts/gen_device_docs.py"
    )
