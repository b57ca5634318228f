"""Fuzz the device envelope (`dev/{device}/{kind}`), the edge's first trust boundary.

`parse_envelope` and the edge's ingest path behind it (`Pipeline.process`: topic, envelope,
the device's profile, the rules), then what a status or event tells liveness and the firmware
config pusher (edge/daemon.py `_observe`): whatever a device or anything on the LAN publishes,
the answer is an Outcome or a Rejection with a reason label, never an exception; no rule fails
(a failure there would be a dead letter, a bug); and what is accepted is well formed.
"""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import assume
from hypothesis import strategies as st

from edge.config import DeviceBinding
from edge.firmware import ConfigPusher, FirmwareConfigs
from edge.liveness import Liveness
from edge.pipeline import Outcome, Pipeline
from edge.rules.config import Binding
from edge.rules.engine import RuleEngine
from edge.rules.suppression import BROKER
from shouwang.clock import ManualClock
from shouwang.profiles import DeviceProfile, FieldSpec, load_profiles
from shouwang.protocol import (
    DEVICE_KINDS,
    MAX_PAYLOAD_BYTES,
    PROTOCOL_VERSION,
    SITE_KINDS,
    Envelope,
    Rejection,
    make_envelope,
    parse_envelope,
)
from tests.fuzz.harness import (
    fuzz,
    json_object_like,
    json_values,
    mutated,
    nearly,
    no_nul,
    wide_ints,
)

SITE = "site-1"
CLOCK = ManualClock()
NOW = CLOCK.now_ms()
ENVELOPE_REASONS = {"oversize", "not_json", "invalid_envelope", "unsupported_version",
                    "bad_timestamp"}
PIPELINE_REASONS = ENVELOPE_REASONS | {
    "wrong_topic", "device_mismatch", "kind_mismatch", "wrong_site", "unknown_device",
    "no_valid_fields", "invalid_event", "unknown_event", "unknown_field", "wrong_type",
    "out_of_range",
}
ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-")

PROFILES = load_profiles()
# One device of each kind, bound to a resident and a place, and one not bound to anyone.
DEVICES = {f"{kind}-1": DeviceBinding(id=f"{kind}-1", profile=kind, resident="r-1",
                                      location="d/s/c/g/b/u/f/h") for kind in PROFILES}
DEVICES["emergency_button-2"] = DeviceBinding(id="emergency_button-2", profile="emergency_button")


def is_id(value: object) -> bool:
    """What an id is, said without the regular expression the code uses."""
    return (isinstance(value, str) and 1 <= len(value) <= 64 and set(value) <= ID_CHARS
            and value[0] not in "_.:-")


def check_refusal(result: Rejection, reasons: set[str]) -> None:
    assert result.reason in reasons, result
    assert result.detail, result


def check_envelope(env: Envelope) -> None:
    """An accepted envelope holds what the protocol promises, and says it again the same way."""
    assert env.v == PROTOCOL_VERSION
    assert is_id(env.id), env
    assert is_id(env.device), env
    assert env.site is None or is_id(env.site), env
    assert env.kind in DEVICE_KINDS or env.kind in SITE_KINDS
    assert type(env.ts) is int
    assert isinstance(env.body, dict)
    assert parse_envelope(env.to_bytes(), now=NOW) == env


# --- strategies -----------------------------------------------------------------------------

ids = st.text(alphabet=sorted(ID_CHARS), min_size=1, max_size=64).filter(is_id)
# Near-ids too: the id regular expression's own idea of a match (trailing newline included).
id_like = st.from_regex(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$") | ids | st.text(max_size=70)
timestamps = st.integers(1_577_836_800_000, NOW + 86_400_000)


def field_values(spec: FieldSpec) -> st.SearchStrategy[Any]:
    if spec.choices is not None:
        return st.sampled_from(spec.choices)
    if spec.type == "bool":
        return st.booleans()
    if spec.type == "str":
        return st.text(max_size=20)
    lo = spec.min if spec.min is not None else -1e9
    hi = spec.max if spec.max is not None else 1e9
    if spec.type == "int":
        return st.integers(int(lo) if lo == int(lo) else int(lo) + 1, int(hi))
    return st.floats(lo, hi, allow_nan=False)


def telemetry_bodies(profile: DeviceProfile) -> st.SearchStrategy[dict[str, Any]]:
    return json_object_like({name: field_values(spec) for name, spec in profile.fields.items()})


def event_bodies(profile: DeviceProfile) -> st.SearchStrategy[dict[str, Any]]:
    names = sorted(profile.events) or ["none"]
    return st.sampled_from(names).flatmap(lambda name: json_object_like({
        **{k: field_values(s) for k, s in profile.events[name].fields.items()}
    }).map(lambda d: {**d, "event": name} if name in profile.events else d))


status_bodies = json_object_like({
    "state": st.sampled_from(["online", "offline", "sleep", "ok"]),
    "model": st.sampled_from(["SW-B1", "SW-M1", "SW-W1", "SW-W2"]),
    "firmware": st.sampled_from(["1.0", "1.4", "2.3.1", "3.0-rc1", "v2"]),
    "config_version": st.integers(0, 5) | st.sampled_from(["1", "2", "3"]),
    "battery": st.integers(0, 100),
})


@st.composite
def device_messages(draw: st.DrawFn) -> tuple[str, bytes]:
    """A message as a device would publish it, with one part of it maybe wrong."""
    device = draw(st.sampled_from(sorted(DEVICES)) | id_like)
    binding = DEVICES.get(device)
    profile = PROFILES[binding.profile] if binding else PROFILES["emergency_button"]
    kind = draw(st.sampled_from(["telemetry", "event", "status"]))
    body = draw({"telemetry": telemetry_bodies(profile), "event": event_bodies(profile),
                 "status": status_bodies}[kind])
    env: dict[str, Any] = make_envelope(
        site=draw(st.none() | st.just(SITE)), device=device, kind=kind, body=body,
        ts=draw(timestamps), id=draw(ids),
    ).to_dict()
    if env["site"] is None and draw(st.booleans()):
        del env["site"]
    if draw(st.integers(0, 3)) == 0:  # one field anything at all
        env[draw(st.sampled_from([*env, "extra"]))] = draw(json_values)
    topic_device = device if draw(st.integers(0, 5)) else draw(id_like)
    topic_kind = kind if draw(st.integers(0, 5)) else draw(st.sampled_from(DEVICE_KINDS)
                                                           | st.text(max_size=10))
    return f"dev/{topic_device}/{topic_kind}", orjson.dumps(env)


def new_edge() -> tuple[Pipeline, Liveness, ConfigPusher]:
    bindings = [Binding(d.id, d.profile, d.resident, d.location, BROKER) for d in DEVICES.values()]
    rules = RuleEngine(SITE, bindings, PROFILES, CLOCK)
    pipeline = Pipeline(SITE, DEVICES, PROFILES, max_payload_bytes=MAX_PAYLOAD_BYTES, rules=rules)
    liveness = Liveness(PROFILES, {d.id: d.profile for d in DEVICES.values()}, CLOCK)
    pusher = ConfigPusher(FirmwareConfigs.load(profiles=PROFILES), CLOCK)
    return pipeline, liveness, pusher


EDGE = new_edge()


# --- properties -----------------------------------------------------------------------------


@fuzz(payload=st.binary(max_size=300))
def test_any_bytes_are_an_envelope_or_a_reasoned_refusal(payload: bytes) -> None:
    result = parse_envelope(payload, now=NOW)
    if isinstance(result, Rejection):
        check_refusal(result, ENVELOPE_REASONS)
    else:
        check_envelope(result)


envelope_like = st.builds(
    lambda *a: make_envelope(site=a[0], device=a[1], kind=a[2], ts=a[3], id=a[4], body=a[5]),
    st.none() | ids, ids, st.sampled_from(DEVICE_KINDS + SITE_KINDS), timestamps, ids,
    st.dictionaries(st.text(max_size=8), json_values, max_size=3),
).flatmap(lambda env: nearly(env.to_dict(), {
    "v": st.integers(0, 2), "id": id_like, "site": id_like, "device": id_like,
    "kind": st.text(max_size=10), "ts": wide_ints, "body": json_values,
}))


@fuzz(data=envelope_like | json_values)
def test_any_json_is_an_envelope_or_a_reasoned_refusal(data: Any) -> None:
    result = parse_envelope(orjson.dumps(data), now=NOW)
    if isinstance(result, Rejection):
        check_refusal(result, ENVELOPE_REASONS)
    else:
        check_envelope(result)
        assert result.to_dict() == {"site": None, **data}, "not the envelope sent"


@fuzz(site=st.none() | ids, device=ids, kind=st.sampled_from(DEVICE_KINDS + SITE_KINDS),
      ts=timestamps, id=ids, body=st.dictionaries(st.text(max_size=12), json_values, max_size=5))
def test_valid_envelopes_round_trip(
    site: str | None, device: str, kind: str, ts: int, id: str, body: dict[str, Any]
) -> None:
    assume(no_nul(body))  # refused: tests/unit/test_protocol.py
    env = make_envelope(site=site, device=device, kind=kind, body=body, ts=ts, id=id)
    assert parse_envelope(env.to_bytes(), now=NOW) == env


@fuzz(field=st.sampled_from(["id", "device", "site"]), value=id_like)
def test_an_id_field_takes_only_an_id(field: str, value: str) -> None:
    env = make_envelope(site=SITE, device="d-1", kind="event", body={}, ts=NOW).to_dict()
    result = parse_envelope(orjson.dumps({**env, field: value}), now=NOW)
    if is_id(value):
        assert isinstance(result, Envelope), result
    else:
        assert isinstance(result, Rejection), result
        assert result.reason == "invalid_envelope", result
        assert f"field '{field}'" in result.detail or "U+0000" in result.detail


@st.composite
def mutated_envelopes(draw: st.DrawFn) -> tuple[Envelope, str, bytes]:
    env = make_envelope(site=draw(st.none() | ids), device=draw(ids), kind="event",
                        body={"event": "press"}, ts=draw(timestamps), id=draw(ids))
    how, payload = draw(mutated(env.to_bytes()))
    return env, how, payload


@fuzz(case=mutated_envelopes())
def test_a_damaged_envelope_is_refused_with_its_reason(case: tuple[Envelope, str, bytes]) -> None:
    env, how, payload = case
    result = parse_envelope(payload, now=NOW)
    if how == "truncate" or (how == "extend" and payload[len(env.to_bytes()):].strip()):
        # Cut short or with bytes after it, a JSON object is no longer JSON.
        assert isinstance(result, Rejection), result
        assert result.reason == "not_json", result
    elif isinstance(result, Rejection):
        check_refusal(result, ENVELOPE_REASONS)
    else:
        check_envelope(result)  # a flip can leave a valid envelope: then it is one


@fuzz(message=device_messages())
def test_the_edge_ingest_path_never_fails_on_a_device_message(message: tuple[str, bytes]) -> None:
    pipeline, liveness, pusher = EDGE
    topic, payload = message
    result = pipeline.process(topic, payload)
    if isinstance(result, Rejection):
        check_refusal(result, PIPELINE_REASONS)
        return
    assert isinstance(result, Outcome)
    check_envelope(result.envelope)
    assert not result.failures, result.failures  # a rule that raised is a bug
    for bad in result.field_rejections:
        check_refusal(bad, PIPELINE_REASONS)
    env = result.envelope
    assert topic == f"dev/{env.device}/{env.kind}"
    # What the daemon does next with it (edge/daemon.py `_observe`).
    if env.kind == "status":
        liveness.observe_status(env.device, env.body, env.ts)
        pusher.observe_status(env.device, env.body)
    elif result.event is not None:
        liveness.observe_data(env.device, env.ts, event=result.event.name,
                              fields=result.event.data)
        pusher.observe_event(env.device, result.event.name, result.event.data)
    elif result.reading is not None:
        profile = PROFILES[DEVICES[env.device].profile]
        for name, value in result.reading.values.items():
            assert profile.fields[name].check(value) is None
        liveness.observe_data(env.device, env.ts, fields=result.reading.values)
