"""The edge ingest path: each kind of bad input is refused with its reason; good input alerts."""

from __future__ import annotations

import orjson
import pytest

from edge.config import DeviceBinding
from edge.pipeline import Outcome, Pipeline
from shouwang.profiles import load_profiles
from shouwang.protocol import Rejection, make_envelope

SITE = "s1"


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    devices = {
        "btn-1": DeviceBinding(id="btn-1", profile="emergency_button", resident="r-1", location="a/b/c"),
        "btn-2": DeviceBinding(id="btn-2", profile="emergency_button"),
        "w-1": DeviceBinding(id="w-1", profile="wearable", resident="r-1"),
    }
    return Pipeline(SITE, devices, load_profiles(), max_payload_bytes=4096)


def msg(device: str, kind: str, body: dict[str, object], **kw: object) -> bytes:
    env = make_envelope(site=kw.pop("site", None), device=device, kind=kind, body=body)  # type: ignore[arg-type]
    data = env.to_dict()
    data.update(kw)
    return orjson.dumps(data)


def test_press_becomes_one_critical_sos_alert(pipeline: Pipeline) -> None:
    payload = msg("btn-1", "event", {"event": "press"})
    out = pipeline.process("dev/btn-1/event", payload)
    assert isinstance(out, Outcome)
    assert out.event is not None
    assert out.event.name == "press"
    [alert] = out.alerts
    assert (alert.type, alert.severity, alert.life_safety) == ("sos", "critical", True)
    assert alert.subject == "resident:r-1"
    assert alert.dedup_key == "resident:r-1|sos"
    assert alert.location == "a/b/c"
    assert alert.source_id == out.envelope.id
    # The same device message processed again yields the same alert id (idempotent).
    again = pipeline.process("dev/btn-1/event", payload)
    assert isinstance(again, Outcome)
    assert again.alerts[0].id == alert.id


def test_unbound_device_alert_has_the_device_as_subject(pipeline: Pipeline) -> None:
    out = pipeline.process("dev/btn-2/event", msg("btn-2", "event", {"event": "long_press"}))
    assert isinstance(out, Outcome)
    assert out.alerts[0].subject == "device:btn-2"


def test_tamper_is_not_life_safety(pipeline: Pipeline) -> None:
    out = pipeline.process("dev/btn-1/event", msg("btn-1", "event", {"event": "tamper"}))
    assert isinstance(out, Outcome)
    assert (out.alerts[0].type, out.alerts[0].life_safety) == ("tamper", False)


def test_event_without_alert_raises_none(pipeline: Pipeline) -> None:
    out = pipeline.process("dev/w-1/event", msg("w-1", "event", {"event": "fall_cancelled"}))
    assert isinstance(out, Outcome)
    assert out.alerts == []


def test_telemetry_keeps_good_fields_and_names_bad_ones(pipeline: Pipeline) -> None:
    body = {"heart_rate": 72, "spo2": 140, "worn": "yes", "mood": "happy"}
    out = pipeline.process("dev/w-1/telemetry", msg("w-1", "telemetry", body))
    assert isinstance(out, Outcome)
    assert out.reading is not None
    assert out.reading.values == {"heart_rate": 72}
    reasons = sorted((r.reason, r.detail) for r in out.field_rejections)
    assert reasons == [
        ("out_of_range", "w-1: field 'spo2': 140 is above the maximum 100"),
        ("unknown_field", "w-1: unknown field 'mood'"),
        ("wrong_type", "w-1: field 'worn': expected bool, got str"),
    ]


@pytest.mark.parametrize(
    ("topic", "payload", "reason", "detail"),
    [
        ("dev/btn-1/event", b"not json", "not_json", "not JSON"),
        ("dev/btn-1/event", b'{"v": 1}', "invalid_envelope", "missing field"),
        ("dev/btn-1/event", b"{" + b" " * 5000 + b"}", "oversize", "exceeds 4096"),
        ("dev/btn-1/cmd", msg("btn-1", "cmd", {}), "wrong_topic", "do not publish cmd"),
        ("devices/btn-1/event", msg("btn-1", "event", {"event": "press"}), "wrong_topic", "is not dev/"),
        ("dev/btn-1/event", msg("btn-2", "event", {"event": "press"}), "device_mismatch", "'btn-2'"),
        ("dev/btn-1/event", msg("btn-1", "telemetry", {"battery": 5}), "kind_mismatch", "'telemetry'"),
        ("dev/btn-1/event", msg("btn-1", "event", {"event": "press"}, site="s2"), "wrong_site", "'s2'"),
        ("dev/ghost/event", msg("ghost", "event", {"event": "press"}), "unknown_device", "'ghost'"),
        ("dev/btn-1/event", msg("btn-1", "event", {"event": "explode"}), "unknown_event", "'explode'"),
        ("dev/btn-1/event", msg("btn-1", "event", {"event": 3}), "invalid_event", "must be a string"),
        ("dev/btn-1/event", msg("btn-1", "event", {"event": "press", "x": 1}), "invalid_event", "'x'"),
        ("dev/w-1/telemetry", msg("w-1", "telemetry", {"spo2": 140}), "no_valid_fields", "spo2"),
        ("dev/w-1/telemetry", msg("w-1", "telemetry", {}), "no_valid_fields", "empty telemetry"),
    ],
)
def test_bad_input_is_rejected_with_reason(
    pipeline: Pipeline, topic: str, payload: bytes, reason: str, detail: str
) -> None:
    out = pipeline.process(topic, payload)
    assert isinstance(out, Rejection), out
    assert out.reason == reason
    assert detail in out.detail
