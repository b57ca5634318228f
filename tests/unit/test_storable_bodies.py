"""A body the cloud accepts is one its store can keep (found by tests/fuzz/test_cloud_envelopes.py)."""

from __future__ import annotations

from typing import Any

import pytest

from cloud.alerts import check_alert_body
from cloud.evidence import check_evidence_body
from cloud.site_bodies import check_health_body
from cloud.telemetry import check_telemetry_body

SOS = {"type": "sos", "severity": "critical", "subject": "resident:r-1",
       "dedup_key": "resident:r-1|sos"}
READING = {"id": "r-1", "device": "w-1", "ts": 1_795_000_000_000, "values": {"hr": 70}}
EVIDENCE = {"sha256": "a" * 64, "size": 10, "content_type": "image/jpeg", "alert": "a-1",
            "captured_ts": 1_795_000_000_000}
STATE = {"type": "device_state", "device": "w-1", "dimension": "transport", "new": "online",
         "at_ms": 1_795_000_000_000}


@pytest.mark.parametrize(("key", "most"), [("type", 64), ("subject", 128), ("dedup_key", 200),
                                           ("resident", 64), ("location", 256)])
def test_an_alert_field_longer_than_its_column_is_refused(key: str, most: int) -> None:
    assert check_alert_body({**SOS, key: "x" * most}) is None
    assert check_alert_body({**SOS, key: "x" * (most + 1)}) == (
        f"body.{key} must be at most {most} characters")


@pytest.mark.parametrize(("change", "why"), [
    ({"ts": 2**63}, "ts must be a 64-bit integer"),
    ({"id": "r" * 65}, "id must be 1-64 of"),
    ({"id": "r 1"}, "id must be 1-64 of"),
])
def test_a_reading_the_store_cannot_key_is_refused(change: dict[str, Any], why: str) -> None:
    assert check_telemetry_body({"readings": [READING]}) is None
    problem = check_telemetry_body({"readings": [{**READING, **change}]})
    assert problem is not None
    assert why in problem


@pytest.mark.parametrize(("change", "why"), [
    ({"captured_ts": 2**63}, "body.captured_ts"), ({"alert": "a" * 65}, "body.alert"),
])
def test_evidence_the_store_cannot_keep_is_refused(change: dict[str, Any], why: str) -> None:
    assert check_evidence_body(EVIDENCE) is None
    problem = check_evidence_body({**EVIDENCE, **change})
    assert problem is not None
    assert why in problem


def test_a_device_state_past_64_bits_is_refused() -> None:
    assert check_health_body(STATE) is None
    assert check_health_body({**STATE, "at_ms": 2**63}) == (
        "device_state: body.at_ms must be integer ms")


def test_a_gateway_names_the_watchlists_it_refused_in_its_report() -> None:
    report = {"type": "gateway", "watchlist": 4, "watchlist_refused": {"no_entry": "why"}}
    assert check_health_body(report) is None
    for bad in ({"no_entry": 3}, ["no_entry"], {"no_entry": "x" * 201}):
        assert check_health_body({**report, "watchlist_refused": bad}) is not None
