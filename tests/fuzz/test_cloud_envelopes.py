"""Fuzz what a gateway (or anything holding its broker account) sends the cloud: `site/{site}/up/{kind}`.

`cloud.ingest.validate` (the topic, the envelope, every kind's body check: cloud/alerts.py,
cloud/telemetry, cloud/evidence.py, cloud/site_bodies.py) either refuses a message with an
`invalid_...` (or envelope) reason, or hands its handler an envelope the store can keep: every
value bound for a column fits it on both databases (PostgreSQL refuses an over-long string, a
NUL character or an integer past 64 bits, and a refusal there would be retried for ever), and
what runs before the store's own error handling (`_run_of`, `update_of`, `resolution_of`,
`recorded_event`, `placed`) does not raise.
"""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import assume
from hypothesis import strategies as st
from sqlalchemy import Column

from cloud.alerts import placed
from cloud.evidence import CONTENT_TYPES, KINDS, MAX_BYTES, evidence
from cloud.fleet import DIMENSIONS
from cloud.ingest import _run_of, validate
from cloud.schema import alerts, devices, readings
from cloud.site_bodies import HEALTH, recorded_event
from cloud.updates import resolution_of, update_of
from shouwang.clock import ManualClock
from shouwang.profiles import SEVERITIES
from shouwang.protocol import MAX_PAYLOAD_BYTES, SITE_KINDS, Envelope, Rejection, make_envelope
from shouwang.records import Alert
from tests.fuzz.harness import fuzz, json_values, mutated, nearly, no_nul, wide_ints
from tests.fuzz.test_device_envelope import ID_CHARS, id_like, ids, is_id

SITE = "site-a"
NOW = ManualClock().now_ms()
INT64 = (-(2**63), 2**63 - 1)
REASONS = {"wrong_topic", "oversize", "not_json", "invalid_envelope", "unsupported_version",
           "bad_timestamp", "site_mismatch", "kind_mismatch",
           *(f"invalid_{k}" for k in SITE_KINDS)}

texts = (st.text(max_size=30) | st.text(min_size=60, max_size=300)
         | st.text(max_size=10).map(lambda t: f"{t}\x00"))
ints = wide_ints | st.integers(0, 10**6)
sha256s = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
locations = st.lists(st.text(alphabet="abcxyz0123", min_size=1, max_size=8), min_size=1,
                     max_size=8).map("/".join)


# --- what a gateway sends, as the edge builds it ----------------------------------------

def alert_bodies() -> st.SearchStrategy[dict[str, Any]]:
    detail = st.fixed_dictionaries({}, optional={
        "who": st.fixed_dictionaries({"device": ids, "resident": st.none() | ids,
                                      "location": st.none() | locations}),
        "update": st.sampled_from(["escalated", "repeated"]), "supersedes": ids,
        "what": texts,
    })
    return st.builds(
        Alert, id=ids, site=st.just(SITE), type=st.sampled_from(["sos", "fall", "water_leak"]),
        severity=st.sampled_from(SEVERITIES), device=ids,
        subject=ids.map(lambda i: f"resident:{i}"[:128]), dedup_key=ids.map(lambda i: f"{i}|sos"),
        ts=st.just(NOW), source_id=ids, life_safety=st.booleans(),
        resident=st.none() | ids, location=st.none() | locations, detail=detail,
        raised_ms=st.none() | st.just(NOW),
    ).map(Alert.body)


reading_values = st.dictionaries(st.from_regex(r"\A[a-z_][a-z0-9_]{0,20}\Z"),
                                 st.integers(-1000, 1000) | st.floats(-1e6, 1e6) | st.booleans()
                                 | st.text(max_size=10), max_size=4)
telemetry_bodies = st.lists(st.fixed_dictionaries({
    "id": ids, "device": ids, "ts": st.integers(1_577_836_800_000, NOW), "values": reading_values,
}), min_size=1, max_size=4).map(lambda rs: {"readings": rs})
evidence_bodies = st.fixed_dictionaries({
    "sha256": sha256s, "size": st.integers(1, MAX_BYTES), "content_type": st.sampled_from(CONTENT_TYPES),
    "alert": st.none() | ids, "captured_ts": st.integers(1_577_836_800_000, NOW),
}, optional={"kind": st.sampled_from(KINDS)})
health_bodies = st.one_of(
    st.fixed_dictionaries({"type": st.just("gateway")}, optional={
        "devices": st.dictionaries(st.text(max_size=10), st.integers(0, 100)
                                   | st.dictionaries(st.text(max_size=10), st.integers(0, 100))),
        "outbox_depth": st.dictionaries(st.sampled_from(["life_safety", "alert", "telemetry"]),
                                        st.integers(0, 10**6)),
        "outbox_critical": st.booleans(), "edge_broker": st.booleans(),
        "alerts": st.lists(st.tuples(ids, st.integers(1, 1000)).map(list), max_size=4),
        "watchlist": st.integers(0, 10**6),
        "watchlist_refused": st.dictionaries(ids, st.text(max_size=200), max_size=3),
        "watchlist_keys": st.lists(st.text("0123456789abcdef", min_size=16, max_size=16),
                                   max_size=3),
    }),
    st.fixed_dictionaries({"type": st.just("device_state"), "device": ids,
                           "dimension": st.sampled_from(DIMENSIONS),
                           "old": st.none() | st.sampled_from(["online", "offline", "stale"]),
                           "new": st.sampled_from(["online", "offline", "stale", "low"]),
                           "at_ms": st.integers(1_577_836_800_000, NOW),
                           "reason": st.none() | st.text(max_size=200)}),
    st.fixed_dictionaries({"type": st.just("gateway_offline")},
                          optional={"reason": st.none() | st.text(max_size=64)}),
    st.fixed_dictionaries({"type": st.just("config_issue"), "device": ids,
                           "kind": st.sampled_from(["no_config", "ack_timeout", "version_mismatch"]),
                           "detail": st.text(max_size=100)}),
    st.fixed_dictionaries({"type": st.just("outbox_drops"), "drops": st.lists(
        st.fixed_dictionaries({"class": st.sampled_from(["telemetry", "bulk"]),
                               "items": st.integers(0, 10**6)},
                              optional={"rows": st.integers(0, 10**6),
                                        "first_ts": st.integers(0, NOW)}), max_size=3)}),
    st.fixed_dictionaries({"type": st.just("disk_full"), "full": st.booleans(),
                           "free_bytes": st.integers(0, 2**40),
                           "reserve_bytes": st.integers(0, 2**40)}),
)
event_bodies = st.one_of(
    st.fixed_dictionaries({"type": st.just("alert_resolved"), "alert_id": ids},
                          optional={"alert_type": st.just("sos"), "repeats": st.integers(0, 9),
                                    "who": st.dictionaries(st.text(max_size=5), json_values)}),
    st.fixed_dictionaries({"type": st.sampled_from(["fall_cancelled", "fall_cancel_late"])},
                          optional={"device": ids, "resident": st.none() | ids,
                                    "cancelled_after_s": st.floats(0, 600)}),
    st.builds(lambda name, device, data: {"type": name, "event": name, "device": device, **data},
              st.sampled_from(["gap", "recording_gap", "press"]), ids,
              st.dictionaries(st.from_regex(r"\A[a-z]{1,8}\Z"),
                              st.integers(-10, 10) | st.text(max_size=20), max_size=3)),
)
BODIES = {"alert": alert_bodies(), "telemetry": telemetry_bodies, "health": health_bodies,
          "event": event_bodies, "evidence": evidence_bodies}
# What a gateway could put in a body's place instead: the same keys, any value, or near ones.
OTHERS: dict[str, st.SearchStrategy[Any]] = {
    "type": texts, "severity": texts, "subject": texts, "dedup_key": texts, "resident": texts,
    "location": texts, "detail": json_values, "life_safety": json_values, "id": texts,
    "device": id_like, "ts": ints, "values": json_values, "readings": json_values,
    "alert": texts, "captured_ts": ints, "size": ints, "sha256": texts, "at_ms": ints,
    "new": texts, "reason": texts, "alert_id": texts, "event": texts, "supersedes": texts,
}


@st.composite
def gateway_messages(draw: st.DrawFn) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(SITE_KINDS))
    body = draw(BODIES[kind])
    body = draw(nearly(body, OTHERS))
    readings = body.get("readings")
    if kind == "telemetry" and isinstance(readings, list) and readings and isinstance(readings[0], dict):
        body["readings"][0] = draw(nearly(body["readings"][0], OTHERS))
    if kind == "alert" and isinstance(body.get("detail"), dict):
        body["detail"] = draw(nearly(body["detail"], OTHERS))
    env = make_envelope(site=SITE, device=draw(ids), kind=kind, body=body, ts=NOW, id=draw(ids))
    data = env.to_dict()
    if not draw(st.integers(0, 4)):  # the envelope too, now and then
        data = draw(nearly(data, {"site": id_like, "kind": st.sampled_from(SITE_KINDS)}))
    topic_kind = kind if draw(st.integers(0, 19)) else draw(st.sampled_from(SITE_KINDS) | texts)
    return f"site/{SITE}/up/{topic_kind}", orjson.dumps(data)


# --- what the store can keep ----------------------------------------------------------------

def fits(value: Any, column: Column[Any]) -> bool:
    """A value PostgreSQL takes for `column` (SQLite takes more)."""
    if value is None:
        return bool(column.nullable)
    length = getattr(column.type, "length", None)
    if isinstance(value, str):
        return "\x00" not in value and (length is None or len(value) <= length)
    python = column.type.python_type
    if python is int:
        bits = 31 if type(column.type).__name__ == "Integer" else 63
        return type(value) is int and -(2**bits) <= value < 2**bits
    return True


def storable(env: Envelope) -> None:
    """What the kind's handler writes into columns fits them (cloud/store.py, fleet.py,
    evidence.py, updates.py); strings anywhere may end in a column or a timeline note."""
    body = env.body
    assert no_nul(body), "a NUL character reached a handler"
    if env.kind == "alert":
        for key in ("type", "severity", "subject", "dedup_key", "resident", "location"):
            assert fits(body.get(key), alerts.c[key]), (key, body.get(key))
    elif env.kind == "telemetry":
        for r in body["readings"]:
            for key in ("id", "device", "ts"):
                assert fits(r[key], readings.c[key]), (key, r[key])
    elif env.kind == "evidence":
        assert fits(body.get("alert"), evidence.c.alert_id), body.get("alert")
        for key in ("size", "captured_ts", "sha256", "content_type", "kind"):
            assert fits(body.get(key), evidence.c[key]), (key, body.get(key))
    elif env.kind == "health" and body["type"] == "device_state":
        assert fits(body["device"], devices.c.id)
        assert fits(body["new"], devices.c[body["dimension"]])
        assert fits(body["at_ms"], devices.c[f"{body['dimension']}_ms"])


def check(result: Envelope | Rejection) -> None:
    if isinstance(result, Rejection):
        assert result.reason in REASONS, result
        assert result.detail
        return
    assert is_id(result.device)
    assert result.site == SITE
    storable(result)
    # What runs on an admitted envelope before the store's own error handling.
    _run_of(result)
    if result.kind == "alert":
        update_of(result)
        placed(result.body, "r-1", "d/s/c")
    if result.kind == "event":
        resolution_of(result)
        recorded_event(result.body)


# --- properties -----------------------------------------------------------------------------


@fuzz(topic=st.sampled_from([f"site/{SITE}/up/{k}" for k in SITE_KINDS]) | texts,
      payload=st.binary(max_size=300))
def test_any_bytes_on_any_topic_are_stored_whole_or_refused_with_a_reason(
    topic: str, payload: bytes
) -> None:
    check(validate(topic, payload, max_bytes=MAX_PAYLOAD_BYTES))


@fuzz(message=gateway_messages())
def test_every_kind_of_gateway_message_is_storable_or_refused(message: tuple[str, bytes]) -> None:
    topic, payload = message
    check(validate(topic, payload, max_bytes=MAX_PAYLOAD_BYTES))


@fuzz(kind=st.sampled_from(SITE_KINDS), data=st.data())
def test_what_the_edge_sends_the_cloud_takes(kind: str, data: st.DataObject) -> None:
    body = data.draw(BODIES[kind])
    # The edge refuses a device's NUL (shouwang/protocol.py) and writes none of its own.
    assume(no_nul(body))
    env = make_envelope(site=SITE, device=data.draw(ids), kind=kind, body=body, ts=NOW,
                        id=data.draw(ids))
    result = validate(f"site/{SITE}/up/{kind}", env.to_bytes(), max_bytes=MAX_PAYLOAD_BYTES)
    assert result == env, result
    check(result)


@st.composite
def damaged_messages(draw: st.DrawFn) -> tuple[str, str, bytes, bytes]:
    kind = draw(st.sampled_from(SITE_KINDS))
    env = make_envelope(site=SITE, device=draw(ids), kind=kind, body=draw(BODIES[kind]), ts=NOW,
                        id=draw(ids))
    how, bad = draw(mutated(env.to_bytes()))
    return kind, how, env.to_bytes(), bad


@fuzz(case=damaged_messages())
def test_a_damaged_message_is_refused_or_still_storable(case: tuple[str, str, bytes, bytes]) -> None:
    kind, how, good, bad = case
    result = validate(f"site/{SITE}/up/{kind}", bad, max_bytes=MAX_PAYLOAD_BYTES)
    if how == "truncate" or (how == "extend" and bad[len(good):].strip()):
        assert isinstance(result, Rejection)
        assert result.reason == "not_json"
    check(result)


def test_the_health_shapes_fuzzed_are_all_the_cloud_knows() -> None:
    sent = {"gateway", "device_state", "gateway_offline", "config_issue", "outbox_drops",
            "disk_full"}
    assert sent <= set(HEALTH)
    assert ID_CHARS  # shared with the device envelope's fuzzing
