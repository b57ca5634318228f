"""Fuzz the other messages the edge parses: a device's status and `config_applied` (the firmware
config push, edge/firmware.py) and the cloud's word on `site/{site}/down/...` (the ack,
edge/uplink.py `parse_confirmation`; alert news, edge/rules/book.py `parse_news`, which the
rules' book then follows). Each answers, or says the message is not of its form; none raises.
"""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import strategies as st

from cloud.ingest import _envelope_id
from edge.deadletter import _message_ts
from edge.firmware import CONFIG_APPLIED_EVENT, ConfigPusher, FirmwareConfigs
from edge.rules.book import AlertBook, CloudWord, parse_news
from edge.uplink import parse_confirmation
from shouwang.clock import ManualClock
from shouwang.profiles import load_profiles
from tests.fuzz.harness import fuzz, json_values, nearly
from tests.fuzz.test_device_envelope import id_like, ids

CONFIGS = FirmwareConfigs.load(profiles=load_profiles())
CLOCK = ManualClock()
DEVICES = ["emergency_button-1", "wearable-1", "water_meter-1"]
ISSUES = {"no_config", "ack_timeout", "version_mismatch"}

statuses = st.fixed_dictionaries({}, optional={
    "state": st.sampled_from(["online", "offline"]) | json_values,
    "model": st.sampled_from(["SW-B1", "SW-M1", "SW-W1", "SW-W2"]) | json_values,
    "firmware": st.sampled_from(["1.0", "1.4", "2.3.1", "3.0-rc1", "v2"]) | st.text(max_size=40),
    "config_version": st.integers(0, 5) | st.sampled_from(["1", "2", "3"]) | json_values,
})
steps = st.lists(st.tuples(
    st.sampled_from(DEVICES), st.sampled_from(["status", "event", "tick"]), statuses,
    st.sampled_from([CONFIG_APPLIED_EVENT, "press"]), st.integers(0, 600_000)), max_size=12)


@fuzz(script=steps)
def test_the_config_pusher_takes_any_status_and_event(script: list[Any]) -> None:
    pusher = ConfigPusher(CONFIGS, ManualClock(), ack_timeout_s=60)
    for device, what, body, name, wait_ms in script:
        pusher.clock.advance(wait_ms)  # type: ignore[attr-defined]
        if what == "status":
            step = pusher.observe_status(device, body)
        elif what == "event":
            step = pusher.observe_event(device, name, body)
        else:
            for issue in pusher.tick():
                assert issue.kind in ISSUES
            continue
        assert step.topic == f"dev/{device}/config"
        for issue in step.issues:
            assert issue.kind in ISSUES
            assert issue.detail
        if step.publish is not None:
            orjson.dumps(step.publish)  # what goes to the device is JSON
    orjson.dumps(pusher.snapshot())


confirmations = st.fixed_dictionaries({"v": st.just(1), "stored": st.lists(ids, max_size=3),
                                       "rejected": st.lists(st.fixed_dictionaries(
                                           {"id": ids, "reason": st.text(max_size=20)}),
                                           max_size=3)})


@fuzz(data=confirmations.flatmap(lambda c: nearly(c, {"stored": json_values,
                                                      "rejected": json_values})) | json_values,
      raw=st.binary(max_size=100))
def test_any_confirmation_is_parsed_or_ignored(data: Any, raw: bytes) -> None:
    for payload in (orjson.dumps(data), raw):
        parsed = parse_confirmation(payload)
        if parsed is not None:
            stored, rejected = parsed
            assert all(isinstance(i, str) for i in stored)
            assert all(isinstance(i, str) and isinstance(r, str) for i, r in rejected)
        _message_ts(payload)
        _envelope_id(payload)


words = st.fixed_dictionaries({
    "id": ids, "dedup_key": st.sampled_from(["resident:r-1|sos", "device:d-1|tamper"]),
    "state": st.sampled_from(["open", "acknowledged", "resolved", "false_alarm"]),
    "version": st.integers(1, 9)}, optional={
    "type": st.just("sos"), "subject": st.just("resident:r-1"),
    "severity": st.sampled_from(["critical", "low", "bogus"]), "device": ids,
    "ts": st.integers(0, 2**41), "by": st.none() | st.just("police")})
news = st.lists(words.flatmap(lambda w: nearly(w, {"id": id_like, "dedup_key": json_values,
                                                   "version": json_values,
                                                   "state": json_values})), max_size=4)


@fuzz(items=news, outer=st.booleans(), adopt=st.booleans(), raw=st.binary(max_size=60))
def test_any_alert_news_is_followed_or_ignored(
    items: list[Any], outer: bool, adopt: bool, raw: bytes
) -> None:
    book = AlertBook("site-a")
    for payload in (orjson.dumps({"v": 1, "alerts": items} if outer else items), raw):
        parsed = parse_news(payload)
        if parsed is None:
            continue
        for word in parsed:
            assert isinstance(word, CloudWord)
            assert type(word.version) is int
            book.follow(word, adopt=adopt)
    orjson.dumps(book.dump())
