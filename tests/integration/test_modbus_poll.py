"""ModbusPoller against real pymodbus servers on loopback: values, faults, availability, cleanup."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from typing import Any

import pytest

from edge.adapters.modbus import (
    ModbusMeterConfig,
    ModbusPoller,
    PendingRequest,
    classify_reply,
    late_reply_length,
)
from shouwang.profiles import DeviceProfile, load_profiles
from simulators.modbus_meter import ModbusMeterServer
from tests.conftest import Recorder

pytestmark = pytest.mark.integration

LOGGER = "edge.adapters.modbus"
PROFILES = load_profiles()
WATER, GAS = PROFILES["water_meter"], PROFILES["gas_meter"]
assert WATER.modbus is not None
# The same meter read field by field: four requests instead of one, to exercise the planner.
SPLIT = WATER.model_copy(update={"modbus": WATER.modbus.model_copy(update={"max_read_gap": 0})})
ALL_PROFILES: dict[str, DeviceProfile] = {**PROFILES, "water_meter_split": SPLIT}
FRAMERS = ["tcp", "rtu_over_tcp"]




def meter(
    device: str, profile: str, server: ModbusMeterServer, unit: int, **kw: Any
) -> ModbusMeterConfig:
    settings: dict[str, Any] = {
        "poll_interval_s": 0.1,
        "timeout_s": 1.0,
        "retries": 0,
        "retry_backoff_s": 0.01,
        "unavailable_after": 3,
        "unavailable_backoff_max_s": 0.4,
    }
    settings.update(kw)
    return ModbusMeterConfig(
        id=device,
        profile=profile,
        host="127.0.0.1",
        port=server.port,
        framer=server.framer,
        unit_id=unit,
        **settings,
    )


def poller_for(meters: list[ModbusMeterConfig], rec: Recorder) -> ModbusPoller:
    return ModbusPoller(meters, ALL_PROFILES, rec.on_reading, rec.on_availability)


def state_changes(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == LOGGER and r.levelno >= logging.INFO and "modbus polling" not in r.msg
    ]


@pytest.mark.parametrize("framer", FRAMERS)
async def test_readings_equal_the_simulated_values(framer: str) -> None:
    async with ModbusMeterServer({1: WATER, 2: SPLIT, 3: GAS}, framer=framer, seed=1) as server:
        server.freeze()
        for name, value in {
            "total": 1234.5,
            "flow": 0.75,
            "battery_voltage": 3.5,
            "valve": "closed",
            "battery": 87,
        }.items():
            server.set_value(1, name, value)
        for name, value in {
            "total": 98765.25,
            "flow": 2.125,
            "battery_voltage": 3.25,
            "valve": "fault",
            "battery": 5,
        }.items():
            server.set_value(2, name, value)
        for name, value in {
            "total": 4321.987,
            "valve": "open",
            "gas_temp": -3.5,
            "battery": 64,
        }.items():
            server.set_value(3, name, value)
        rec = Recorder()
        poller = poller_for(
            [
                meter("water-1", "water_meter", server, 1),
                meter("water-2", "water_meter_split", server, 2),
                meter("gas-3", "gas_meter", server, 3),
            ],
            rec,
        )
        await poller.start()
        try:
            await rec.wait_until(
                lambda: all(len(rec.of(d)) >= 2 for d in ("water-1", "water-2", "gas-3"))
            )
        finally:
            await poller.stop()
        expected = {unit: server.expected(unit) for unit in (1, 2, 3)}

    water1 = {
        "total": 1234.5,
        "flow": 0.75,
        "battery_voltage": 3.5,
        "valve": "closed",
        "battery": 87,
    }
    water2 = {
        "total": 98765.25,
        "flow": 2.125,
        "battery_voltage": 3.25,
        "valve": "fault",
        "battery": 5,
    }
    gas = {"total": 4321.987, "valve": "open", "gas_temp": -3.5, "battery": 64}
    for reading in rec.of("water-1"):
        assert reading.values == water1
    for reading in rec.of("water-2"):
        assert reading.values == water2
    for reading in rec.of("gas-3"):
        assert reading.values == gas
    assert type(rec.of("water-1")[0].values["battery"]) is int
    assert (expected[1], expected[2], expected[3]) == (water1, water2, gas)
    assert rec.availability == []
    # The field-by-field map needs four reads a poll; the shipped maps need one.
    for device, reads in (("water-1", 1), ("water-2", 4), ("gas-3", 1)):
        counters = poller.diagnostics(device)["counters"]
        assert counters["failures"] == 0
        assert counters["requests"] == reads * counters["polls"]


async def test_cumulative_total_keeps_growing() -> None:
    async with ModbusMeterServer({7: WATER}, seed=2) as server:
        server.set_rate(7, "total", 0.5)  # 1800 m³/h, so a 0.1 s poll sees it move
        rec = Recorder()
        poller = poller_for([meter("w", "water_meter", server, 7)], rec)
        await poller.start()
        try:
            await rec.wait_until(lambda: len(rec.readings) >= 4)
        finally:
            await poller.stop()
    totals = [r.values["total"] for r in rec.readings]
    assert all(later > earlier for earlier, later in itertools.pairwise(totals))


FAULT_REASONS = {
    "stop_answering": "timeout",
    "garbage": "garbage",
    "wrong_unit_id": "wrong_unit_id",
    "disconnect": "connection_lost",
    "exception_code": "exception_response",
}
DECODE_REASONS = {"garbage", "wrong_unit_id", "exception_response"}


@pytest.mark.parametrize("framer", FRAMERS)
@pytest.mark.parametrize("fault", list(FAULT_REASONS))
async def test_fault_is_reported_once_and_recovery_once(
    framer: str, fault: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    reason = FAULT_REASONS[fault]
    async with ModbusMeterServer({1: WATER, 2: GAS}, framer=framer, seed=3) as server:
        rec = Recorder()
        poller = poller_for(
            [meter("sick", "water_meter", server, 1), meter("healthy", "gas_meter", server, 2)],
            rec,
        )
        await poller.start()
        try:
            await rec.wait_until(lambda: len(rec.of("sick")) >= 1)
            server.inject(fault, [1])
            await rec.wait_until(lambda: len(rec.availability) >= 1)
            healthy_before = len(rec.of("healthy"))
            # Keeps failing while unavailable, without a second report; the healthy meter's
            # readings wake the wait.
            await rec.wait_until(
                lambda: (
                    poller.diagnostics("sick")["counters"]["failures"] >= 5
                    and len(rec.of("healthy")) > healthy_before
                )
            )
            assert len(rec.availability) == 1
            down = poller.diagnostics("sick")
            server.clear()
            await rec.wait_until(lambda: len(rec.availability) >= 2)
            recovered_at = len(rec.of("sick"))
            await rec.wait_until(lambda: len(rec.of("sick")) >= recovered_at + 3)
            up = poller.diagnostics("sick")
        finally:
            await poller.stop()

    assert [(d, a) for d, a, _ in rec.availability] == [("sick", False), ("sick", True)]
    assert rec.availability[0][2].startswith(f"{reason}: ")
    assert down["available"] is False
    assert down["last_error"] is not None
    counters = up["counters"]
    assert counters["failure_reasons"] == {reason: counters["failures"]}
    expected_decode = {reason: counters["failures"]} if reason in DECODE_REASONS else {}
    assert counters["decode_errors"] == expected_decode
    assert up["available"] is True
    assert up["consecutive_failures"] == 0
    assert poller.diagnostics("healthy")["counters"]["failures"] == 0

    logged = state_changes(caplog)
    assert [r.levelname for r in logged] == ["WARNING", "INFO"]
    assert "unavailable after 3 failed polls" in logged[0].getMessage()
    assert "available again" in logged[1].getMessage()
    frames = logged[0].frames  # type: ignore[attr-defined]
    assert 1 <= len(frames) <= 20
    assert frames[-1][0] in ("tx", "rx")
    tx = [hexa for direction, hexa, _ in frames if direction == "tx"]
    assert tx
    rx = [bytes.fromhex(hexa) for direction, hexa, _ in frames if direction == "rx"]
    if fault in ("stop_answering", "disconnect"):
        return
    assert rx, "the bad reply is kept for diagnosis"
    reply = rx[-1]
    header = 6 if framer == "tcp" else 0  # the unit id follows the MBAP header in Modbus TCP
    if fault == "garbage":
        assert 8 <= len(reply) <= 24  # the simulator's random bytes, unchanged
    elif fault == "wrong_unit_id":
        assert (reply[header], reply[header + 1]) == (2, 0x03)  # unit 2 answered unit 1's read
    else:
        assert reply[header : header + 3] == bytes([1, 0x83, 4])  # exception 4 to function 3


async def test_late_replies_are_skipped_not_misread() -> None:
    """A slow meter's reply that lands during the next request is neither garbage nor data."""
    async with ModbusMeterServer({1: WATER}, seed=13) as server:
        server.freeze()
        rec = Recorder()
        poller = poller_for(
            [meter("slow", "water_meter", server, 1, timeout_s=0.15, retries=1)], rec
        )
        await poller.start()
        try:
            await rec.wait_until(lambda: len(rec.readings) >= 1)
            server.inject("slow", delay_s=0.25)
            await rec.wait_until(lambda: len(rec.availability) == 1)
            server.clear()
            await rec.wait_until(lambda: len(rec.availability) == 2)
            await rec.wait_until(lambda: len(rec.readings) >= 3)
        finally:
            await poller.stop()
        expected = server.expected(1)
    counters = poller.diagnostics("slow")["counters"]
    assert counters["late_replies"] >= 1
    assert counters["failure_reasons"] == {"timeout": counters["failures"]}
    assert counters["decode_errors"] == {}
    assert all(r.values == expected for r in rec.readings)


async def test_retries_back_off_then_give_up() -> None:
    async with ModbusMeterServer({1: WATER}, seed=4) as server:
        server.inject("garbage")
        rec = Recorder()
        poller = poller_for([meter("m", "water_meter", server, 1, retries=2)], rec)
        await poller.start()
        try:
            await rec.wait_until(lambda: len(rec.availability) == 1)
        finally:
            await poller.stop()
    counters = poller.diagnostics("m")["counters"]
    failures = counters["failures"]
    assert failures >= 3
    # stop() may cancel a poll between attempts, so allow one unfinished poll.
    assert 2 * failures <= counters["retries"] <= 2 * failures + 2
    assert 3 * failures <= counters["decode_errors"]["garbage"] <= 3 * failures + 2


async def test_illegal_address_is_not_retried() -> None:
    async with ModbusMeterServer({1: GAS}, seed=5) as server:
        server.inject("exception_code", exception_code=2)
        rec = Recorder()
        poller = poller_for([meter("g", "gas_meter", server, 1, retries=3)], rec)
        await poller.start()
        try:
            await rec.wait_until(lambda: len(rec.availability) == 1)
        finally:
            await poller.stop()
    counters = poller.diagnostics("g")["counters"]
    assert counters["retries"] == 0
    assert counters["decode_errors"] == {"exception_response": counters["failures"]}
    assert rec.availability[0][2] == (
        "exception_response: input 0+5: exception code 2 (illegal data address)"
    )


async def test_out_of_range_field_is_dropped_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    async with ModbusMeterServer({1: WATER}, seed=6) as server:
        server.freeze()
        server.set_value(1, "battery", 150)
        rec = Recorder()
        poller = poller_for([meter("m", "water_meter", server, 1)], rec)
        await poller.start()
        try:
            await rec.wait_until(lambda: len(rec.readings) >= 3)
            bad = len(rec.readings)
            server.set_value(1, "battery", 80)
            await rec.wait_until(lambda: rec.readings[-1].values.get("battery") == 80)
        finally:
            await poller.stop()
    assert all("battery" not in r.values for r in rec.readings[:bad])
    assert all(
        set(r.values) == {"total", "flow", "battery_voltage", "valve"} for r in rec.readings[:bad]
    )
    counters = poller.diagnostics("m")["counters"]
    dropped = sum(1 for r in rec.readings if "battery" not in r.values)
    assert counters["decode_errors"] == {"out_of_range": dropped}
    assert counters["failures"] == 0
    assert rec.availability == []
    logged = state_changes(caplog)
    assert [r.getMessage() for r in logged] == [
        "modbus meter m field battery dropped: 150 is above the maximum 100",
        "modbus meter m field battery valid again",
    ]


async def test_unreachable_bus_is_reported_once_and_recovers() -> None:
    server = ModbusMeterServer({1: GAS}, seed=8)
    await server.start()
    port = server.port
    await server.stop()  # nothing listens on `port` now
    rec = Recorder()
    poller = poller_for([meter("g", "gas_meter", server, 1)], rec)
    await poller.start()
    try:
        await rec.wait_until(lambda: len(rec.availability) == 1)
        async with ModbusMeterServer({1: GAS}, port=port, seed=8):
            await rec.wait_until(lambda: len(rec.availability) == 2)
    finally:
        await poller.stop()
    assert [(d, a) for d, a, _ in rec.availability] == [("g", False), ("g", True)]
    assert rec.availability[0][2].startswith("connect_failed: cannot connect to tcp://127.0.0.1:")
    counters = poller.diagnostics("g")["counters"]
    assert counters["failure_reasons"] == {"connect_failed": counters["failures"]}


async def test_stalled_meter_does_not_delay_meters_on_other_buses() -> None:
    async with (
        ModbusMeterServer({1: WATER}, seed=9) as stalled,
        ModbusMeterServer({1: GAS}, seed=10) as healthy,
    ):
        stalled.inject("stop_answering")
        rec = Recorder()
        poller = poller_for(
            [
                meter("stuck", "water_meter", stalled, 1, timeout_s=30.0),
                meter("fine", "gas_meter", healthy, 1),
            ],
            rec,
        )
        await poller.start()
        try:
            await rec.wait_until(lambda: len(rec.of("fine")) >= 5)
            stuck = poller.diagnostics("stuck")["counters"]
        finally:
            await poller.stop()
    # The stuck meter is still inside its first request while the other bus is read on.
    assert (stuck["polls"], stuck["failures"], stuck["readings"]) == (1, 0, 0)
    assert poller.diagnostics("fine")["counters"]["failures"] == 0


async def test_one_client_per_bus_and_stop_leaves_nothing_behind() -> None:
    async with ModbusMeterServer.uniform(WATER, 5, seed=11) as server:
        rec = Recorder()
        poller = poller_for(
            [meter(f"w{unit}", "water_meter", server, unit) for unit in range(1, 6)], rec
        )
        await poller.start()
        try:
            await rec.wait_until(
                lambda: {r.device for r in rec.readings} == {"w1", "w2", "w3", "w4", "w5"}
            )
            assert server.connections == 1
        finally:
            await poller.stop()
        leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert leftover == []
        # The server sees the close once the loop has run the transport's callbacks.
        for _ in range(100):
            if server.connections == 0:
                break
            await asyncio.sleep(0.01)
        assert server.connections == 0
    assert all(poller.diagnostics(f"w{u}")["available"] for u in range(1, 6))


async def test_stop_returns_even_when_a_reply_races_the_cancel() -> None:
    """Python 3.11's wait_for drops a cancel that lands with the reply; stop() must not hang.

    Eight buses keep replies in flight all the time, so some stop() lands on one.
    """
    rng = random.Random(12)
    async with contextlib.AsyncExitStack() as stack:
        servers = [
            await stack.enter_async_context(ModbusMeterServer.uniform(GAS, 5, seed=12 + i))
            for i in range(8)
        ]
        meters = [
            meter(f"g{i}-{unit}", "gas_meter", server, unit, poll_interval_s=0.02)
            for i, server in enumerate(servers)
            for unit in range(1, 6)
        ]
        for _ in range(30):
            poller = poller_for(meters, Recorder())
            await poller.start()
            await asyncio.sleep(rng.uniform(0.02, 0.1))
            async with asyncio.timeout(5):
                await poller.stop()
            assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


def test_config_errors_name_the_meter() -> None:
    base = {"host": "127.0.0.1", "unit_id": 1}

    def build(*configs: dict[str, Any]) -> ModbusPoller:
        return ModbusPoller(
            [ModbusMeterConfig.model_validate({**base, **c}) for c in configs],
            ALL_PROFILES,
            lambda _r: None,
            lambda *_a: None,
        )

    with pytest.raises(Exception, match="modbus meter 'x': profile: unknown profile 'nope'"):
        build({"id": "x", "profile": "nope"})
    with pytest.raises(Exception, match="modbus meter 'x': profile: 'wearable' has no modbus"):
        build({"id": "x", "profile": "wearable"})
    with pytest.raises(Exception, match="modbus meter 'b': unit_id: same bus and unit as 'a'"):
        build({"id": "a", "profile": "gas_meter"}, {"id": "b", "profile": "gas_meter"})


# Frames as pymodbus 3.16 put them on the wire: read 4 holding registers from 1, unit 2.
TCP_REQUEST = "000100000006020300010004"
TCP_REPLY = "00010000000b0203081092000200030004"  # tid 1, unit 2, 8 bytes: 4242 2 3 4
RTU_REQUEST = "02030001000415fa"
RTU_REPLY = "0203081092000200030004a055"  # CRC a055


@pytest.mark.parametrize(
    ("framer", "sent", "reply", "verdict"),
    [
        ("tcp", TCP_REQUEST, TCP_REPLY, "ok"),
        ("tcp", "000100000006010300010004", TCP_REPLY, "wrong_unit_id"),  # asked unit 1
        ("tcp", "000100000006020300010005", TCP_REPLY, "garbage"),  # asked 5 registers
        ("tcp", "000200000006020300010004", TCP_REPLY, "garbage"),  # tid 1 when 2 is awaited
        ("tcp", TCP_REQUEST, TCP_REPLY[:18], "incomplete"),
        ("tcp", TCP_REQUEST, TCP_REPLY + "00", "garbage"),  # trailing byte
        ("tcp", TCP_REQUEST, "deadbeef00010203", "garbage"),  # protocol id 0xbeef
        ("tcp", "000300000006010300050001", "000300000003018302", "ok"),  # exception 2
        ("rtu_over_tcp", RTU_REQUEST, RTU_REPLY, "ok"),
        ("rtu_over_tcp", "01030001000400", RTU_REPLY, "wrong_unit_id"),
        ("rtu_over_tcp", RTU_REQUEST, RTU_REPLY[:-1] + "6", "garbage"),  # CRC a056
        ("rtu_over_tcp", RTU_REQUEST, RTU_REPLY[:10], "incomplete"),
        ("rtu_over_tcp", RTU_REQUEST, "0210", "incomplete"),
        ("rtu_over_tcp", RTU_REQUEST, "021099", "garbage"),  # function 16 to a read
        ("rtu_over_tcp", "010300050001940b", "018302c0f1", "ok"),  # exception 2
    ],
)
def test_reply_classification(framer: Any, sent: str, reply: str, verdict: str) -> None:
    pending = PendingRequest.parse(framer, bytes.fromhex(sent))
    assert pending is not None
    assert classify_reply(framer, pending, bytes.fromhex(reply)) == verdict


def test_late_tcp_replies_are_skipped_not_taken_for_the_awaited_one() -> None:
    pending = PendingRequest.parse("tcp", bytes.fromhex("000200000006020300010004"))
    assert pending == PendingRequest(unit=2, tid=2, function_code=3, count=4)
    awaited = "0002" + TCP_REPLY[4:]
    buffer = bytes.fromhex(TCP_REPLY + awaited)  # the reply to tid 1 arrives first
    assert late_reply_length("tcp", pending, buffer) == 17
    assert classify_reply("tcp", pending, buffer[17:]) == "ok"
    assert late_reply_length("tcp", pending, bytes.fromhex(awaited)) == 0
    # Over RTU there is no transaction id to tell them apart.
    rtu = PendingRequest.parse("rtu_over_tcp", bytes.fromhex(RTU_REQUEST))
    assert rtu is not None
    assert late_reply_length("rtu_over_tcp", rtu, bytes.fromhex(RTU_REPLY * 2)) == 0
