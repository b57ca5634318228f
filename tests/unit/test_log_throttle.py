"""Hostile traffic must not fill a gateway's disk through its log (issue 12, finding 9)."""

from __future__ import annotations

import logging

import pytest

from shouwang.logs import Throttled


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_device_and_reason_a_minute_with_a_count_of_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    log = logging.getLogger("test.throttle")
    throttled = Throttled(log, interval_s=60, clock=clock)
    with caplog.at_level(logging.WARNING, "test.throttle"):
        for _ in range(1000):
            throttled.warning(("btn-1", "not_json"), "rejected message: %s", "not JSON")
        throttled.warning(("btn-1", "oversize"), "rejected message: %s", "too big")
        clock.now = 61
        throttled.warning(("btn-1", "not_json"), "rejected message: %s", "not JSON")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "rejected message: not JSON",
        "rejected message: too big",
        "rejected message: not JSON (and 999 more like it since the last such line)",
    ]


def test_many_devices_at_once_are_capped_and_the_rest_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    throttled = Throttled(logging.getLogger("test.cap"), interval_s=60, max_keys=10, clock=clock)
    with caplog.at_level(logging.WARNING, "test.cap"):
        for n in range(500):
            throttled.warning((f"dev-{n}", "unknown_device"), "rejected %s", n)
        clock.now = 60
        throttled.warning(("dev-x", "unknown_device"), "rejected %s", "x")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 12
    assert lines[10] == "490 more complaints held back in the last 60 s"
