"""CJ/T 188 client against the simulated meters over loopback TCP: reads, valves, every fault."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from datetime import datetime

import pytest

from edge.adapters.cjt188 import (
    ChecksumError,
    Cjt188ConnectionError,
    Cjt188Error,
    Cjt188Timeout,
    FrameError,
    MeterErrorResponse,
    MeterStatus,
    MeterType,
    UnexpectedResponse,
    ValveResponse,
    encode_frame,
    read_data_request,
)
from edge.adapters.cjt188_client import Cjt188Client
from simulators.cjt188_meter import Cjt188MeterServer, SimMeter

pytestmark = pytest.mark.integration

COLD = "00000000000001"
HOT = "00000000000002"
GAS = "00000000000003"
METER_TIME = datetime(2024, 5, 6, 7, 8, 9)


class FakeClock:
    """The simulator's flow clock, moved by the test instead of by sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def server(clock: FakeClock) -> AsyncIterator[Cjt188MeterServer]:
    meters = [
        SimMeter(COLD, MeterType.COLD_WATER, cumulative_m3=12.34, settlement_m3=10.0),
        SimMeter(HOT, MeterType.HOT_WATER, cumulative_m3=56.78, flow_m3_per_h=1.5),
        SimMeter(GAS, MeterType.GAS, cumulative_m3=901.23, battery_low=True),
    ]
    async with Cjt188MeterServer(meters, clock=clock, wall_clock=lambda: METER_TIME) as s:
        yield s


@pytest.fixture
async def client(server: Cjt188MeterServer) -> AsyncIterator[Cjt188Client]:
    async with Cjt188Client(
        "127.0.0.1", server.port, timeout_s=0.3, retries=1, backoff_s=0.01
    ) as c:
        yield c


async def test_reads_each_meter_on_the_line(client: Cjt188Client) -> None:
    cold = await client.read_data(COLD)
    hot = await client.read_data(HOT, meter_type=MeterType.HOT_WATER)
    gas = await client.read_data(GAS, meter_type=MeterType.GAS)
    assert (cold.address, cold.meter_type, cold.cumulative_m3) == (COLD, 0x10, 12.34)
    assert cold.settlement_m3 == 10.0
    assert cold.meter_time == METER_TIME
    assert (cold.status.valve, cold.status.battery_low) == ("open", False)
    assert (hot.address, hot.meter_type, hot.cumulative_m3) == (HOT, 0x11, 56.78)
    assert (gas.address, gas.meter_type, gas.cumulative_m3) == (GAS, 0x30, 901.23)
    assert (gas.status.valve, gas.status.battery_low) == ("open", True)


async def test_flow_advances_with_the_clock_while_the_valve_is_open(
    client: Cjt188Client, clock: FakeClock
) -> None:
    clock.now += 3600  # one hour at 1.5 m3/h
    assert (await client.read_data(HOT, meter_type=MeterType.HOT_WATER)).cumulative_m3 == 58.28


async def test_closing_the_valve_shows_on_the_next_read_and_stops_the_flow(
    client: Cjt188Client, server: Cjt188MeterServer, clock: FakeClock
) -> None:
    closed = await client.set_valve(HOT, False, meter_type=MeterType.HOT_WATER)
    assert closed == ValveResponse(0x11, HOT, closed.ser, MeterStatus.of("closed"))
    assert server.meter(HOT).valve_open is False
    clock.now += 3600
    resp = await client.read_data(HOT, meter_type=MeterType.HOT_WATER)
    assert (resp.status.valve, resp.cumulative_m3) == ("closed", 56.78)
    opened = await client.set_valve(HOT, True, meter_type=MeterType.HOT_WATER)
    assert opened.status.valve == "open"
    clock.now += 1800
    resp = await client.read_data(HOT, meter_type=MeterType.HOT_WATER)
    assert (resp.status.valve, resp.cumulative_m3) == ("open", 57.53)


async def test_reads_the_address_of_the_only_meter_on_a_line(clock: FakeClock) -> None:
    async with (
        Cjt188MeterServer([SimMeter("12345678901234", MeterType.GAS)], clock=clock) as server,
        Cjt188Client("127.0.0.1", server.port, timeout_s=0.3) as client,
    ):
        resp = await client.read_address()
    assert (resp.address, resp.meter_type) == ("12345678901234", 0x30)


def _tx_of(address: str, ser: int) -> str:
    return encode_frame(read_data_request(address, ser=ser), preamble=4).hex(" ").upper()


@pytest.mark.parametrize(
    ("fault", "value", "error", "answers"),
    [
        ("silent", True, Cjt188Timeout, False),
        ("delay_s", 1.0, Cjt188Timeout, False),
        ("garbage", True, FrameError, True),
        ("bad_checksum", True, ChecksumError, True),
        ("disconnect", True, Cjt188ConnectionError, False),
        ("wrong_address", True, UnexpectedResponse, True),
        ("error_response", True, MeterErrorResponse, True),
    ],
)
async def test_each_fault_raises_its_error_with_frames_and_the_client_recovers(
    client: Cjt188Client,
    server: Cjt188MeterServer,
    fault: str,
    value: object,
    error: type[Cjt188Error],
    answers: bool,
) -> None:
    setattr(server.meter(COLD).faults, fault, value)
    with pytest.raises(Cjt188Error) as info:
        await client.read_data(COLD)
    err = info.value
    assert type(err) is error
    assert err.frames == client.frames(COLD)
    tx = [f.hex for f in err.frames if f.direction == "tx"]
    rx = [f.hex for f in err.frames if f.direction == "rx"]
    # A meter's refusal is final; everything else was tried twice (retries=1), with SER 1.
    assert tx == [_tx_of(COLD, 1)] * (1 if error is MeterErrorResponse else 2)
    assert bool(rx) is answers
    if answers:
        assert err.raw_hex in rx[-1]

    server.clear_faults()
    await server.wait_idle()  # a delayed answer has gone out; the client must skip it as stale
    resp = await client.read_data(COLD)
    assert resp.cumulative_m3 == 12.34
    assert resp.ser == 2


async def test_a_fault_on_one_meter_leaves_the_others_readable(
    client: Cjt188Client, server: Cjt188MeterServer
) -> None:
    server.meter(COLD).faults.silent = True
    with pytest.raises(Cjt188Timeout):
        await client.read_data(COLD)
    assert (await client.read_data(GAS, meter_type=MeterType.GAS)).cumulative_m3 == 901.23


async def test_a_line_wide_fault_hits_every_meter(
    client: Cjt188Client, server: Cjt188MeterServer
) -> None:
    server.faults.bad_checksum = True
    for address, meter_type in ((COLD, MeterType.COLD_WATER), (GAS, MeterType.GAS)):
        with pytest.raises(ChecksumError):
            await client.read_data(address, meter_type=meter_type)
    server.clear_faults()
    assert (await client.read_data(GAS, meter_type=MeterType.GAS)).cumulative_m3 == 901.23


async def test_noise_before_the_answer_is_skipped(
    client: Cjt188Client, server: Cjt188MeterServer
) -> None:
    server.meter(COLD).faults.noise = True
    assert (await client.read_data(COLD)).cumulative_m3 == 12.34
    assert client.frames(COLD)[-1].hex.startswith("00 FF 00 7F FE FE FE FE 68")


async def test_an_unknown_address_gets_no_answer(client: Cjt188Client) -> None:
    with pytest.raises(Cjt188Timeout, match="no answer from meter 99999999999999"):
        await client.read_data("99999999999999")


async def test_a_wrong_meter_type_gets_no_answer(client: Cjt188Client) -> None:
    with pytest.raises(Cjt188Timeout):
        await client.read_data(GAS, meter_type=MeterType.COLD_WATER)


async def test_concurrent_requests_take_turns_on_the_line(
    client: Cjt188Client, server: Cjt188MeterServer
) -> None:
    results = await asyncio.gather(
        *(
            client.read_data(address, meter_type=meter_type)
            for address, meter_type in (
                (COLD, MeterType.COLD_WATER),
                (HOT, MeterType.HOT_WATER),
                (GAS, MeterType.GAS),
            )
            for _ in range(3)
        )
    )
    assert [r.address for r in results] == [COLD] * 3 + [HOT] * 3 + [GAS] * 3
    assert sorted(r.ser for r in results) == list(range(1, 10))
    assert (server.connections, server.requests) == (1, 9)  # one line, no retries needed


async def test_frame_history_is_bounded_per_meter(server: Cjt188MeterServer) -> None:
    async with Cjt188Client("127.0.0.1", server.port, timeout_s=0.3, history=4) as client:
        for _ in range(5):
            await client.read_data(COLD)
        frames = client.frames(COLD)
    assert [f.direction for f in frames] == ["tx", "rx", "tx", "rx"]
    assert frames[-2].hex == _tx_of(COLD, 5)
    assert client.frames(GAS) == ()


async def test_a_server_that_is_not_there_is_a_connection_error(clock: FakeClock) -> None:
    async with Cjt188MeterServer([], clock=clock) as gone:
        port = gone.port
    async with Cjt188Client("127.0.0.1", port, timeout_s=0.3, retries=1, backoff_s=0.01) as c:
        with pytest.raises(
            Cjt188ConnectionError, match=f"cannot connect to serial server .*:{port}"
        ):
            await c.read_data(COLD)


async def test_the_simulator_runs_as_a_program() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulators.cjt188_meter", "--port", "0", "--meters", "2",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(20):
            lines = [(await proc.stdout.readline()).decode().strip() for _ in range(3)]
        assert lines[:2] == ["meter 00000000000001 type 10H", "meter 00000000000002 type 10H"]
        port = int(lines[2].rsplit(":", 1)[1])
        async with Cjt188Client("127.0.0.1", port, timeout_s=2) as client:
            resp = await client.read_data("00000000000002")
        assert resp.address == "00000000000002"
        assert resp.cumulative_m3 >= 20.0  # starts at 20 m3 and only ever grows
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        async with asyncio.timeout(10):
            await proc.communicate()  # reads stdout to its end, so its pipe closes too
