"""Simulated CJ/T 188 water/gas meters on one RS-485 line behind a transparent serial server."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from datetime import datetime

from edge.adapters.cjt188 import (
    BROADCAST_ADDRESS,
    DI_READ_ADDRESS,
    DI_READ_DATA,
    DI_VALVE,
    RESPONSE_BIT,
    UNIT_M3,
    VALVE_CLOSE,
    VALVE_OPEN,
    ChecksumError,
    Cjt188Error,
    DiOrder,
    Frame,
    FrameReader,
    Function,
    MeterStatus,
    MeterType,
    ReadAddressResponse,
    ReadDataResponse,
    ValveResponse,
    encode_frame,
    encode_response,
    error_response,
    parse_request,
)

log = logging.getLogger(__name__)

# Line noise as an RS-485 transceiver makes when it turns the bus around.
NOISE = bytes((0x00, 0xFF, 0x00, 0x7F))
_BCD_WRAP = 100_000_000  # a 4-byte BCD register of hundredths rolls over past 999999.99


@dataclass
class Faults:
    """What goes wrong; set on one meter or on the whole line, at any time."""

    silent: bool = False  # no answer at all
    garbage: bool = False  # random bytes instead of a frame
    bad_checksum: bool = False  # the right frame with a wrong CS
    disconnect: bool = False  # the serial server drops the TCP connection
    wrong_address: bool = False  # the answer names another meter's address
    error_response: bool = False  # the abnormal answer (C bit 6 set)
    noise: bool = False  # junk bytes before the frame; a good client still reads it
    delay_s: float = 0.0  # wait this long before answering

    def merged(self, other: Faults) -> Faults:
        flags = {f.name: getattr(self, f.name) or getattr(other, f.name) for f in fields(self)}
        flags["delay_s"] = max(self.delay_s, other.delay_s)
        return Faults(**flags)

    def clear(self) -> None:
        for f in fields(self):
            setattr(self, f.name, f.default)


@dataclass
class SimMeter:
    """One meter: its flow advances at `flow_m3_per_h` while the valve is open."""

    address: str
    meter_type: int = MeterType.COLD_WATER
    cumulative_m3: float = 0.0
    settlement_m3: float = 0.0
    flow_m3_per_h: float = 0.0
    valve_open: bool = True
    battery_low: bool = False
    faults: Faults = field(default_factory=Faults)
    _last: float | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if len(self.address) != 14 or not self.address.isdigit():
            raise ValueError(f"meter address must be 14 BCD digits, got {self.address!r}")

    def advance(self, now: float) -> None:
        if self._last is not None and self.valve_open:
            self.cumulative_m3 += self.flow_m3_per_h * (now - self._last) / 3600
        self._last = now

    def status(self) -> MeterStatus:
        return MeterStatus.of("open" if self.valve_open else "closed", self.battery_low)


class Cjt188MeterServer:
    """A TCP server that answers like meters on an RS-485 bus behind a transparent serial server."""

    def __init__(
        self,
        meters: Iterable[SimMeter],
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        preamble: int = 4,
        di_order: DiOrder = "little",
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = datetime.now,
        seed: int = 188,
    ) -> None:
        self.meters = {m.address: m for m in meters}
        self.host, self.port = host, port
        self.preamble = preamble
        self.di_order: DiOrder = di_order
        self.clock = clock
        self.wall_clock = wall_clock
        self.faults = Faults()  # line-wide, on top of each meter's own
        self.requests = 0  # well-formed requests seen, answered or not
        self.connections = 0  # TCP connections accepted; many serial servers allow only one
        self._random = random.Random(seed)
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._busy = 0
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()

    async def __aenter__(self) -> Cjt188MeterServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def meter(self, address: str) -> SimMeter:
        return self.meters[address]

    def clear_faults(self) -> None:
        self.faults.clear()
        for m in self.meters.values():
            m.faults.clear()

    async def start(self) -> None:
        now = self.clock()
        for m in self.meters.values():
            m.advance(now)
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def wait_idle(self, timeout: float = 5.0) -> None:
        """Until no answer is being prepared (a delayed one has gone out)."""
        async with asyncio.timeout(timeout):
            await self._idle.wait()

    async def close(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()  # the handler reads EOF and ends
        if self._handlers:
            _, pending = await asyncio.wait(set(self._handlers), timeout=1)
            for task in pending:
                task.cancel()  # still sleeping on a delayed answer
            if pending:
                await asyncio.wait(pending, timeout=5)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self._server.wait_closed()
            self._server = None

    # --- the line ---

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        self.connections += 1
        frames = FrameReader()
        try:
            while chunk := await reader.read(512):
                frames.feed(chunk)
                while True:
                    try:
                        frame = frames.next_frame()
                    except ChecksumError:
                        continue  # a meter ignores a request damaged on the line
                    if frame is None:
                        break
                    if not await self._answer(frame, writer):
                        return
        except (ConnectionError, OSError):
            pass  # the client went away; nothing to answer
        except asyncio.CancelledError:
            # Python 3.11's stream callback calls task.exception() on the handler and logs the
            # CancelledError it raises; ending normally when we cancelled it ourselves avoids that.
            if not self._closing:
                raise
        finally:
            writer.close()
            self._writers.discard(writer)
            self._handlers.discard(task)

    def _route(self, frame: Frame) -> SimMeter | None:
        """The meter that hears itself addressed; like RS-485, nobody answers an unknown one."""
        if frame.address == BROADCAST_ADDRESS:
            # Several meters answering a broadcast would collide on a real bus.
            only = list(self.meters.values())
            meter = only[0] if len(only) == 1 else None
        else:
            meter = self.meters.get(frame.address)
        if meter is None or frame.meter_type not in (meter.meter_type, 0xAA):
            return None
        return meter

    async def _answer(self, frame: Frame, writer: asyncio.StreamWriter) -> bool:
        """Answer one frame; False when the connection was dropped on purpose."""
        if frame.control & RESPONSE_BIT:
            return True  # another meter's answer, or an echo
        self.requests += 1
        meter = self._route(frame)
        if meter is None:
            return True
        faults = meter.faults.merged(self.faults)
        self._busy += 1
        self._idle.clear()
        try:
            if faults.delay_s:
                await asyncio.sleep(faults.delay_s)
            if faults.disconnect:
                writer.close()
                return False
            if faults.silent:
                return True
            if faults.garbage:
                writer.write(self._garbage())
            else:
                writer.write(self._reply_bytes(meter, frame, faults))
            await writer.drain()
            return True
        finally:
            self._busy -= 1
            if not self._busy:
                self._idle.set()

    def _garbage(self) -> bytes:
        # Never 68H or 16H: the fault then always reads as noise, never a chance false frame.
        pool = [b for b in range(256) if b not in (0x68, 0x16)]
        return bytes(self._random.choice(pool) for _ in range(24))

    def _reply_bytes(self, meter: SimMeter, frame: Frame, faults: Faults) -> bytes:
        reply = self._reply(meter, frame, faults)
        wire = bytearray(encode_frame(reply, preamble=self.preamble))
        if faults.bad_checksum:
            wire[-2] = (wire[-2] + 1) & 0xFF
        return (NOISE if faults.noise else b"") + bytes(wire)

    def _reply(self, meter: SimMeter, frame: Frame, faults: Faults) -> Frame:
        try:
            request = parse_request(frame, di_order=self.di_order)
        except Cjt188Error:
            return error_response(frame, 0, meter.status())
        address = _other_address(meter.address) if faults.wrong_address else meter.address
        function = frame.control & 0x3F
        if faults.error_response:
            reply = error_response(frame, request.ser, meter.status())
        elif function == Function.READ_DATA and request.di == DI_READ_DATA:
            meter.advance(self.clock())
            reply = encode_response(
                ReadDataResponse(
                    meter_type=meter.meter_type,
                    address=address,
                    ser=request.ser,
                    current_centi=round(meter.cumulative_m3 * 100) % _BCD_WRAP,
                    current_unit=UNIT_M3,
                    settlement_centi=round(meter.settlement_m3 * 100) % _BCD_WRAP,
                    settlement_unit=UNIT_M3,
                    meter_time=self.wall_clock().replace(microsecond=0),
                    status=meter.status(),
                ),
                di_order=self.di_order,
            )
        elif function == Function.READ_ADDRESS and request.di == DI_READ_ADDRESS:
            reply = encode_response(
                ReadAddressResponse(meter.meter_type, address, request.ser), di_order=self.di_order
            )
        elif (
            function == Function.WRITE_DATA
            and request.di == DI_VALVE
            and request.payload in (bytes((VALVE_OPEN,)), bytes((VALVE_CLOSE,)))
        ):
            meter.advance(self.clock())  # flow up to now counts at the old valve state
            meter.valve_open = request.payload[0] == VALVE_OPEN
            reply = encode_response(
                ValveResponse(meter.meter_type, address, request.ser, meter.status()),
                di_order=self.di_order,
            )
        else:
            reply = error_response(frame, request.ser, meter.status())
        # A meter answers a wildcard T (AAH) with its own type, and with its own address.
        return Frame(meter.meter_type, address, reply.control, reply.data)


def _other_address(address: str) -> str:
    return f"{(int(address) + 1) % 10**14:014d}"


def _meter_type(text: str) -> int:
    return int(text, 16)


async def _serve_forever(args: argparse.Namespace) -> None:
    meters = [
        SimMeter(
            address=f"{args.first_address + i:014d}",
            meter_type=args.meter_type,
            cumulative_m3=10.0 * (i + 1),
            flow_m3_per_h=args.flow_m3_per_h,
        )
        for i in range(args.meters)
    ]
    async with Cjt188MeterServer(meters, args.host, args.port) as server:
        for m in meters:
            print(f"meter {m.address} type {m.meter_type:02X}H", flush=True)
        print(f"listening on {server.host}:{server.port}", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Simulated CJ/T 188 meters behind a serial server")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=10188, help="TCP port (0: any free port)")
    parser.add_argument("--meters", type=int, default=3, help="how many meters on the line")
    parser.add_argument("--first-address", type=int, default=1, help="address of the first meter")
    parser.add_argument(
        "--meter-type", type=_meter_type, default=MeterType.COLD_WATER, help="T in hex, e.g. 30"
    )
    parser.add_argument("--flow-m3-per-h", type=float, default=0.5, help="flow while valve open")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(args))


if __name__ == "__main__":
    main()
