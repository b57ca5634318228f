"""Wire protocol v1: ids, envelope validation with reasons, topics."""

from __future__ import annotations

import time

import orjson
import pytest

from shouwang.ids import derived_id, id_time_ms, new_id
from shouwang.protocol import (
    Envelope,
    Rejection,
    make_envelope,
    parse_device_topic,
    parse_envelope,
    parse_site_topic,
)

NOW = 1_795_000_000_000


def good(**overrides: object) -> dict[str, object]:
    data: dict[str, object] = {
        "v": 1, "id": "01JABCDEF", "device": "btn-1", "kind": "event", "ts": NOW,
        "body": {"event": "press"},
    }
    data.update(overrides)
    return data


def parse(data: object) -> Envelope | Rejection:
    return parse_envelope(orjson.dumps(data), now=NOW)


def test_ids_sort_in_creation_order_even_within_one_millisecond() -> None:
    later = int(time.time() * 1000) + 60_000  # ahead of every id made so far in this process
    ids = [new_id(now_ms=later) for _ in range(1000)] + [new_id(now_ms=later + 1)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 26 for i in ids)
    assert id_time_ms(ids[0]) == later
    assert id_time_ms(ids[-1]) == later + 1


def test_ids_stay_ordered_when_the_clock_steps_back() -> None:
    first = new_id()
    second = new_id(now_ms=id_time_ms(first) - 5000)
    assert second > first


def test_derived_id_is_deterministic_and_carries_the_time() -> None:
    a = derived_id(NOW, "site", "dev", "msg-1", "sos")
    assert a == derived_id(NOW, "site", "dev", "msg-1", "sos")
    assert a != derived_id(NOW, "site", "dev", "msg-2", "sos")
    assert id_time_ms(a) == NOW


def test_valid_envelope_round_trips() -> None:
    env = make_envelope(site="s1", device="btn-1", kind="event", body={"event": "press"}, ts=NOW)
    parsed = parse_envelope(env.to_bytes(), now=NOW)
    assert parsed == env


@pytest.mark.parametrize(
    ("payload", "reason", "detail"),
    [
        (b"\xff\xfenot json", "not_json", "not JSON"),
        (b"[1, 2]", "invalid_envelope", "must be an object"),
        (orjson.dumps({"v": 1}), "invalid_envelope", "missing field(s): id, device, kind, ts, body"),
        (orjson.dumps(good(v="1")), "invalid_envelope", "'v' must be an integer, got str"),
        (orjson.dumps(good(v=2)), "unsupported_version", "version 2"),
        (orjson.dumps(good(id="")), "invalid_envelope", "field 'id'"),
        (orjson.dumps(good(device="a/b")), "invalid_envelope", "field 'device'"),
        (orjson.dumps(good(kind="bogus")), "invalid_envelope", "'bogus'"),
        (orjson.dumps(good(ts="yesterday")), "invalid_envelope", "'ts' must be integer ms, got str"),
        (orjson.dumps(good(ts=12)), "bad_timestamp", "outside the accepted window"),
        (orjson.dumps(good(body=[1])), "invalid_envelope", "'body' must be an object, got list"),
        (orjson.dumps(good(extra=1)), "invalid_envelope", "unknown field(s): extra"),
        (orjson.dumps(good(site=5)), "invalid_envelope", "field 'site'"),
    ],
)
def test_bad_envelopes_are_rejected_with_a_reason(payload: bytes, reason: str, detail: str) -> None:
    result = parse_envelope(payload, now=NOW)
    assert isinstance(result, Rejection)
    assert result.reason == reason
    assert detail in result.detail


def test_oversize_payload_is_rejected_before_parsing() -> None:
    result = parse_envelope(b"{" + b" " * 2000 + b"}", max_bytes=1000, now=NOW)
    assert result == Rejection("oversize", "payload of 2002 bytes exceeds 1000")


def test_topics() -> None:
    assert parse_device_topic("dev/btn-1/event") == ("btn-1", "event")
    assert parse_site_topic("site/s-1/up/alert") == ("s-1", "alert")
    for bad in ("dev/btn-1", "dev/btn-1/event/x", "dev/btn-1/bogus", "x/btn-1/event", "dev//event"):
        assert isinstance(parse_device_topic(bad), Rejection), bad
    for bad in ("site/s-1/down/alert", "site/s-1/up/bogus", "site/s-1/up"):
        assert isinstance(parse_site_topic(bad), Rejection), bad


@pytest.mark.parametrize("field", ["id", "device", "site"])
def test_an_id_with_a_trailing_newline_is_refused(field: str) -> None:
    # `$` matches before a final newline: found by tests/fuzz/test_device_envelope.py.
    result = parse_envelope(orjson.dumps(good(**{field: "btn-1\n"})), now=NOW)
    assert isinstance(result, Rejection)
    assert result.reason == "invalid_envelope"
    assert f"field '{field}'" in result.detail


def test_a_topic_id_with_a_trailing_newline_is_refused() -> None:
    assert isinstance(parse_device_topic("dev/btn-1\n/event"), Rejection)
    assert isinstance(parse_site_topic("site/s-1\n/up/alert"), Rejection)


def test_a_string_holding_nul_is_refused_and_an_escaped_backslash_is_not() -> None:
    # PostgreSQL's text cannot hold U+0000: a write with one failed at every retry.
    for body in ({"event": "press\u0000"}, {"press\u0000": 1}, {"x": ["\\\u0000"]}):
        result = parse_envelope(orjson.dumps(good(body=body)), now=NOW)
        assert isinstance(result, Rejection)
        assert result.reason == "invalid_envelope"
        assert "U+0000" in result.detail
    # The text `\u0000` (a backslash, then u0000) is no NUL.
    ok = parse_envelope(orjson.dumps(good(body={"event": "\\u0000"})), now=NOW)
    assert isinstance(ok, Envelope)
    assert ok.body == {"event": "\\u0000"}
