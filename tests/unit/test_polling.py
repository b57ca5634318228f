"""The shared poller with a fake protocol: availability once each way, retries, backoff, crashes."""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from edge.adapters.polling import (
    DecodeError,
    DeviceError,
    DeviceUnavailable,
    PolledDevice,
    Poller,
    PollLink,
    RawFrame,
    Sample,
    first_poll_offset,
)
from shouwang.config import validate
from shouwang.ids import new_id
from shouwang.profiles import DeviceProfile
from shouwang.protocol import now_ms
from shouwang.records import Reading

LOGGER = "tests.unit.test_polling"
PROFILE = validate(
    {
        "kind": "meter",
        "description": "A meter",
        "report_interval_s": 60,
        "fields": {
            "total": {"type": "float", "min": 0},
            "battery": {"type": "int", "min": 0, "max": 100},
        },
    },
    DeviceProfile,
    source="meter.yaml",
)
FRAME: RawFrame = ("tx", "01 02", 0.0)
Device = PolledDevice[PollLink]


def link(**kw: Any) -> PollLink:
    settings: dict[str, Any] = {
        "poll_interval_s": 0.01,
        "retries": 0,
        "retry_backoff_s": 0.001,
        "unavailable_after": 3,
        "unavailable_backoff_max_s": 0.04,
    }
    return PollLink(**(settings | kw))


class FakePoller(Poller[Device]):
    """A protocol whose answers the test sets: values, or an error to raise."""

    label = "fake"
    logger = logging.getLogger(LOGGER)

    def __init__(self, links: dict[str, PollLink], **kw: Any) -> None:
        devices = [Device(id=name, config=cfg, profile=PROFILE) for name, cfg in links.items()]
        self.readings: list[Reading] = []
        self.availability: list[tuple[str, bool, str, int]] = []
        super().__init__(devices, self._reading, self._available, rng=random.Random(7), **kw)
        self.values: dict[str, Any] = {"total": 1.5, "battery": 80}
        self.error: Callable[[str], Exception] | None = None
        self.attempts: Counter[str] = Counter()
        self.opened = self.closed = 0
        self._changed = asyncio.Event()

    def _reading(self, reading: Reading) -> None:
        self.readings.append(reading)

    def _available(self, device: str, available: bool, reason: str) -> None:
        failures = self.diagnostics(device)["consecutive_failures"]
        self.availability.append((device, available, reason, failures))

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    def _open(self) -> list[list[Device]]:
        self.opened += 1
        return [list(self._devices.values())]

    async def _close(self) -> None:
        self.closed += 1

    async def _read(self, device: Device) -> Sample:
        self.attempts[device.id] += 1
        self._changed.set()
        if self.error is not None:
            raise self.error(device.id)
        return Sample(Reading(new_id(), device.id, now_ms(), dict(self.values)))

    def _where(self, device: Device) -> dict[str, Any]:
        return {"bus": "fake://line"}

    def _frames(self, device: Device) -> Sequence[RawFrame]:
        return [FRAME]


def silent(device: str) -> Exception:
    return DeviceUnavailable(device, "timeout", "no reply within 0.1 s", [FRAME])


async def test_unavailable_once_after_n_failures_and_available_once_on_recovery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    poller = FakePoller({"m": link(), "other": link()})
    async with poller:
        await poller.wait_until(lambda: len(poller.readings) >= 2)
        poller.error = silent
        await poller.wait_until(lambda: len(poller.availability) == 2)  # both devices
        down = poller.diagnostics("m")["counters"]["failures"]
        # Keeps polling while unavailable, without a second report.
        await poller.wait_until(lambda: poller.diagnostics("m")["counters"]["failures"] >= down + 3)
        assert len(poller.availability) == 2
        poller.error = None
        await poller.wait_until(lambda: len(poller.availability) == 4)
        after = len(poller.readings)
        await poller.wait_until(lambda: len(poller.readings) >= after + 4)
        stats = poller.stats()

    mine = [a for a in poller.availability if a[0] == "m"]
    assert [(d, up, n) for d, up, _, n in mine] == [("m", False, 3), ("m", True, 0)]
    assert mine[0][2] == "timeout: no reply within 0.1 s"
    assert re.fullmatch(r"answered after \d+ failed polls", mine[1][2])
    assert (stats["meters"], stats["unavailable"]) == (2, 0)
    assert stats["failure_reasons"] == {"timeout": stats["failures"]}
    assert stats["decode_errors"] == {}
    logged = [r for r in caplog.records if r.name == LOGGER and "meter m " in r.getMessage()]
    assert [r.levelname for r in logged] == ["WARNING", "INFO"]
    assert logged[0].getMessage() == (
        "fake meter m unavailable after 3 failed polls: timeout: no reply within 0.1 s"
    )
    assert logged[0].frames == [FRAME]  # type: ignore[attr-defined]
    assert (poller.opened, poller.closed) == (1, 1)


async def test_retries_then_gives_up_and_a_final_error_is_not_retried() -> None:
    poller = FakePoller({"garbled": link(retries=2), "refused": link(retries=2)})

    def error(device: str) -> Exception:
        err = DecodeError(device, "garbage", "unparseable reply (9 bytes)")
        err.retryable = device == "garbled"
        return err

    poller.error = error
    async with poller:
        await poller.wait_until(lambda: len(poller.availability) == 2)
    garbled = poller.diagnostics("garbled")["counters"]
    refused = poller.diagnostics("refused")["counters"]
    # stop() may cancel a poll between attempts, so allow one unfinished poll.
    assert 2 * garbled["failures"] <= garbled["retries"] <= 2 * garbled["failures"] + 2
    assert garbled["decode_errors"]["garbage"] == poller.attempts["garbled"]
    assert refused["retries"] == 0
    assert refused["failures"] == poller.attempts["refused"]


def test_while_unavailable_the_interval_doubles_up_to_its_cap() -> None:
    poller = FakePoller({"m": link(poll_interval_s=1.0, unavailable_backoff_max_s=10.0)})
    device = poller._devices["m"]
    device.available = False
    waits = []
    for failures in range(3, 12):
        device.consecutive_failures = failures
        waits.append(poller._next_deadline(device, 0.0, 100.0) - 100.0)
    caps = [min(10.0, 2.0**level) for level in range(9)]
    assert all(cap / 2 <= wait <= cap for wait, cap in zip(waits, caps, strict=True))
    assert waits[-1] >= 5.0  # no busy loop against a dead device, however long it stays dead


def test_devices_unavailable_together_are_polled_again_apart() -> None:
    """A bus that failed takes a hundred meters down at once: their next polls spread over
    [d/2, d] of the shared back-off, not one burst on the recovering bus."""
    poller = FakePoller({f"m{n}": link(poll_interval_s=1.0, unavailable_backoff_max_s=60.0)
                         for n in range(100)})
    waits = []
    for device in poller._devices.values():
        device.available = False
        device.consecutive_failures = 5  # 2 polls after it became unavailable: d = 4 s
        waits.append(poller._next_deadline(device, 0.0, 100.0) - 100.0)
    assert all(2.0 <= w <= 4.0 for w in waits)
    assert max(waits) - min(waits) > 1.0
    assert len({round(w, 2) for w in waits}) > 80


async def test_retries_within_a_poll_double_with_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    poller = FakePoller({"m": link(retries=3, retry_backoff_s=0.1)})
    poller.error = lambda device: DeviceUnavailable(device, "timeout", "no reply")
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay: float) -> None:
        slept.append(delay)
        await real_sleep(0)

    monkeypatch.setattr("edge.adapters.polling.asyncio.sleep", sleep)
    for _ in range(20):
        await poller._poll(poller._devices["m"])
    assert len(slept) == 60
    for n, nominal in enumerate((0.1, 0.2, 0.4)):
        nth = slept[n::3]
        assert all(nominal / 2 <= w <= nominal for w in nth)
        assert len(set(nth)) == 20  # jittered: no two polls retry in step


def test_an_overrun_skips_lost_slots_and_counts_them() -> None:
    poller = FakePoller({"m": link(poll_interval_s=1.0, unavailable_backoff_max_s=1.0)})
    device = poller._devices["m"]
    assert poller._next_deadline(device, 10.0, 10.4) == 11.0
    assert device.counters.deadline_misses == 0
    assert poller._next_deadline(device, 10.0, 13.5) == 14.0  # slots 11, 12, 13 are lost
    assert device.counters.deadline_misses == 3
    assert poller.stats()["deadline_misses"] == 3


def test_first_polls_spread_over_one_interval_on_a_grid() -> None:
    offsets = [first_poll_offset(i, 500, 10.0) for i in range(500)]
    assert offsets == sorted(offsets)
    assert offsets[0] == 0.0
    assert offsets[-1] < 10.0
    assert len(set(offsets)) == 20  # 500 devices, 20 wake-ups of the loop per interval
    assert all(round(o / 0.5, 9).is_integer() for o in offsets)


async def test_bad_fields_are_dropped_and_no_valid_field_is_a_failed_poll() -> None:
    poller = FakePoller({"m": link(unavailable_after=2)})
    poller.values = {"total": 3, "battery": 150, "colour": "red"}
    async with poller:
        await poller.wait_until(lambda: len(poller.readings) >= 2)
        poller.values = {"battery": 150}
        await poller.wait_until(lambda: len(poller.availability) == 1)
    assert poller.readings[0].values == {"total": 3.0}
    assert type(poller.readings[0].values["total"]) is float
    diag = poller.diagnostics("m")
    assert diag["bad_fields"] == ["battery", "colour"]
    assert diag["counters"]["failure_reasons"]["no_valid_fields"] == diag["counters"]["failures"]
    assert poller.availability[0][2] == "no_valid_fields: battery: 150 is above the maximum 100"
    assert diag["counters"]["decode_errors"]["unknown_field"] == len(poller.readings)


async def test_a_crashing_read_or_callback_does_not_stop_polling(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    poller = FakePoller({"m": link(unavailable_after=5)})
    poller.error = lambda _device: RuntimeError("bug")
    calls = 0

    def broken(_reading: Reading) -> None:
        nonlocal calls
        calls += 1
        raise ValueError("callback bug")

    poller.on_reading = broken
    async with poller:
        await poller.wait_until(lambda: poller.attempts["m"] >= 3)
        poller.error = None
        await poller.wait_until(lambda: calls >= 3)
    counters = poller.diagnostics("m")["counters"]
    assert counters["failure_reasons"] == {"internal_error": counters["failures"]}
    assert counters["failures"] >= 2
    assert counters["callback_errors"] == calls
    tracebacks = [r for r in caplog.records if r.name == LOGGER and r.exc_info]
    assert [r.getMessage() for r in tracebacks] == [
        "fake meter m: poll crashed",
        "fake on_reading callback failed (device m)",
    ]


async def test_start_twice_is_refused_and_stop_leaves_no_task() -> None:
    poller = FakePoller({"a": link(), "b": link()})
    await poller.start()
    try:
        with pytest.raises(RuntimeError, match="already started"):
            await poller.start()
        await poller.wait_until(lambda: len(poller.readings) >= 2)
    finally:
        await poller.stop()
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
    assert poller.diagnostics("a")["frames"] == [FRAME]
    assert poller.diagnostics("a")["bus"] == "fake://line"


def test_device_errors_carry_reason_detail_and_frames() -> None:
    err = DeviceError("m", "timeout", "no reply", [FRAME])
    assert (str(err), err.reason, err.detail, err.frames, err.retryable) == (
        "m: no reply",
        "timeout",
        "no reply",
        [FRAME],
        True,
    )


def test_backoff_cap_below_the_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="unavailable_backoff_max_s must be at least"):
        PollLink(poll_interval_s=60, unavailable_backoff_max_s=30)
