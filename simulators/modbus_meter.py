"""Simulated Modbus meters built from device profiles: pymodbus servers with runtime faults."""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import signal
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice

from shouwang.profiles import DeviceProfile, load_profiles
from shouwang.registers import Value, decode, encode, plan_reads

log = logging.getLogger(__name__)

Fault = Literal[
    "stop_answering", "garbage", "wrong_unit_id", "disconnect", "exception_code", "slow"
]
FAULTS: tuple[str, ...] = get_args(Fault)
Framer = Literal["tcp", "rtu_over_tcp"]
_FRAMER_TYPES = {"tcp": FramerType.SOCKET, "rtu_over_tcp": FramerType.RTU}
_HOLDING_CODES = frozenset({3, 6, 16, 22, 23})


@dataclass(slots=True)
class SimMeter:
    """One simulated meter: its values, how fast they grow, and the fault it shows now."""

    unit_id: int
    profile: DeviceProfile
    values: dict[str, Value]
    rates: dict[str, float] = field(default_factory=dict)
    fault: Fault | None = None
    exception_code: int = ExcCodes.DEVICE_FAILURE
    delay_s: float = 1.0
    served: int = 0
    _clock: float = field(default_factory=time.monotonic)

    def advance(self) -> None:
        """Apply the rates (units per second) for the time since the last call."""
        now = time.monotonic()
        elapsed, self._clock = now - self._clock, now
        for name, rate in self.rates.items():
            value = self.values[name]
            if rate and isinstance(value, int | float):
                self.values[name] = value + rate * elapsed

    def registers(self, name: str) -> list[int]:
        assert self.profile.modbus is not None
        return encode(self.profile.modbus.fields[name], self.values[name])

    def expected(self) -> dict[str, Value]:
        """What a correct poller reads now: the values as the registers represent them."""
        assert self.profile.modbus is not None
        self.advance()
        fields = self.profile.modbus.fields
        return {name: decode(fields[name], self.registers(name)) for name in fields}


def default_values(profile: DeviceProfile, rng: random.Random) -> dict[str, Value]:
    """Plausible starting values inside the profile's ranges."""
    assert profile.modbus is not None
    values: dict[str, Value] = {}
    for name, reg in profile.modbus.fields.items():
        spec = profile.fields[name]
        if reg.enum is not None:
            labels = list(reg.enum.values())
            values[name] = "open" if "open" in labels else labels[0]
            continue
        if name == "total":
            value = rng.uniform(10, 3000)  # a household meter, not a district one
        elif reg.unit == "m³/h":
            value = rng.uniform(0.05, 1.5)
        else:
            lo = spec.min if spec.min is not None else 0.0
            hi = spec.max if spec.max is not None else lo + 100.0
            value = lo + (hi - lo) * rng.uniform(0.3, 0.8)
        values[name] = round(value) if spec.type == "int" else round(value, 3)
    return values


def default_rates(values: Mapping[str, Value]) -> dict[str, float]:
    """The cumulative total grows with the flow (m³/h), or by 0.2 m³/h without one."""
    if "total" not in values:
        return {}
    flow = values.get("flow")
    per_hour = flow if isinstance(flow, int | float) else 0.2
    return {"total": per_hour / 3600}


class _Handler(ServerRequestHandler):
    """One client connection; applies the addressed meter's fault to the reply."""

    def server_send(self, pdu: ModbusPDU | None, addr: Any) -> None:
        sim = cast(_Server, self.server).sim
        meter = sim.meters.get(pdu.dev_id) if pdu is not None else None
        if pdu is None or meter is None:
            return  # an unknown unit on an RS-485 line stays silent
        fault = meter.fault
        if fault == "stop_answering":
            return
        if fault == "disconnect":
            self.close()
            return
        if fault == "garbage":
            self.send(sim.garbage())
            return
        if fault == "exception_code":
            pdu = ExceptionResponse(
                pdu.function_code & 0x7F,
                meter.exception_code,
                device_id=pdu.dev_id,
                transaction=pdu.transaction_id,
            )
        elif fault == "wrong_unit_id":
            pdu.dev_id = pdu.dev_id % 247 + 1
        meter.served += 1
        if fault == "slow":
            # A timer, not a task: nothing is left to cancel when the server stops.
            self.loop.call_later(meter.delay_s, self._send_if_open, pdu, addr)
            return
        super().server_send(pdu, addr)

    def _send_if_open(self, pdu: ModbusPDU, addr: Any) -> None:
        if self.transport is not None:
            super().server_send(pdu, addr)


class _Server(ModbusTcpServer):
    def __init__(
        self, sim: ModbusMeterServer, devices: list[SimDevice], framer: Framer, host: str, port: int
    ) -> None:
        super().__init__(devices, framer=_FRAMER_TYPES[framer], address=(host, port))
        self.sim = sim

    def callback_new_connection(self) -> _Handler:
        return _Handler(self, self.trace_packet, self.trace_pdu, self.trace_connect)


class ModbusMeterServer:
    """Meters (unit id -> profile) behind one TCP port, like an RS-485 line behind a gateway.

    `async with ModbusMeterServer({1: water, 2: gas}) as server:` listens on a free port
    (`server.port`). Faults change at run time with `inject` and `clear`.
    """

    def __init__(
        self,
        meters: Mapping[int, DeviceProfile],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        framer: Framer = "tcp",
        seed: int | None = None,
    ) -> None:
        if not meters:
            raise ValueError("a server needs at least one meter")
        self.host = host
        self.port = port
        self.framer = framer
        self._rng = random.Random(seed)
        self.meters: dict[int, SimMeter] = {}
        for unit, profile in meters.items():
            if not 1 <= unit <= 247:
                raise ValueError(f"unit id {unit} is outside 1..247")
            if profile.modbus is None:
                raise ValueError(f"profile {profile.kind!r} has no modbus register map")
            values = default_values(profile, self._rng)
            self.meters[unit] = SimMeter(unit, profile, values, default_rates(values))
        self._server: _Server | None = None

    @classmethod
    def uniform(
        cls, profile: DeviceProfile, count: int, *, first_unit: int = 1, **kwargs: Any
    ) -> ModbusMeterServer:
        """`count` meters of one profile with consecutive unit ids."""
        return cls({first_unit + i: profile for i in range(count)}, **kwargs)

    async def start(self) -> None:
        devices = [self._device(m) for m in self.meters.values()]
        # Unit 0 catches requests for unknown units, which server_send then leaves unanswered.
        devices.append(self._placeholder(0))
        self._server = _Server(self, devices, self.framer, self.host, self.port)
        await self._server.serve_forever(background=True)
        listener = cast(asyncio.Server, self._server.transport)
        self.port = listener.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        await server.shutdown()
        # Let request tasks that pymodbus scheduled before the close run to completion.
        for _ in range(3):
            await asyncio.sleep(0)

    async def __aenter__(self) -> ModbusMeterServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- state and faults ------------------------------------------------------------------------

    def meter(self, unit: int) -> SimMeter:
        return self.meters[unit]

    def set_value(self, unit: int, name: str, value: Value) -> None:
        """Set a field; any value the register can hold, including out-of-profile ones."""
        meter = self.meters[unit]
        assert meter.profile.modbus is not None
        encode(meter.profile.modbus.fields[name], value)  # raises ValueError if it cannot
        meter.advance()
        meter.values[name] = value

    def set_rate(self, unit: int, name: str, per_second: float) -> None:
        meter = self.meters[unit]
        meter.advance()
        meter.rates[name] = per_second

    def freeze(self) -> None:
        """Stop every value from changing, so tests can compare exact readings."""
        for meter in self.meters.values():
            meter.advance()
            meter.rates.clear()

    def expected(self, unit: int) -> dict[str, Value]:
        return self.meters[unit].expected()

    def inject(
        self,
        fault: Fault,
        units: Iterable[int] | None = None,
        *,
        exception_code: int = ExcCodes.DEVICE_FAILURE,
        delay_s: float = 1.0,
    ) -> None:
        """Make `units` (all when None) show `fault` until `clear`.

        `exception_code` is the code an exception_code fault answers with; `delay_s` is how
        late a slow meter replies.
        """
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; expected one of {FAULTS}")
        for unit in self.meters if units is None else units:
            self.meters[unit].fault = fault
            self.meters[unit].exception_code = exception_code
            self.meters[unit].delay_s = delay_s

    def clear(self, units: Iterable[int] | None = None) -> None:
        for unit in self.meters if units is None else units:
            self.meters[unit].fault = None

    @property
    def connections(self) -> int:
        """Client connections open now."""
        return 0 if self._server is None else len(self._server.active_connections)

    def garbage(self) -> bytes:
        return self._rng.randbytes(self._rng.randint(8, 24))

    # -- pymodbus devices ------------------------------------------------------------------------

    def _device(self, meter: SimMeter) -> SimDevice:
        assert meter.profile.modbus is not None
        rmap = meter.profile.modbus
        blocks: dict[str, list[SimData]] = {"holding": [], "input": []}
        # Exactly the registers the plan reads are valid; anything else is an illegal address.
        for req in plan_reads(rmap):
            blocks[req.function].append(
                SimData(req.address, values=[0] * req.count, datatype=DataType.REGISTERS)
            )

        async def refresh(
            function_code: int,
            start_address: int,
            address: int,
            count: int,
            registers: list[int],
            set_values: list[int] | list[bool] | None,
        ) -> ExcCodes | None:
            function = "holding" if function_code in _HOLDING_CODES else "input"
            meter.advance()
            for name, reg in rmap.fields.items():
                if reg.function == function:
                    at = reg.address - start_address
                    registers[at : at + reg.width] = meter.registers(name)
            return None

        return SimDevice(
            meter.unit_id,
            simdata=(
                [SimData(0, values=False, datatype=DataType.BITS)],
                [SimData(0, values=False, datatype=DataType.BITS)],
                blocks["holding"] or [SimData(0, datatype=DataType.INVALID)],
                blocks["input"] or [SimData(0, datatype=DataType.INVALID)],
            ),
            action=refresh,
        )

    @staticmethod
    def _placeholder(unit: int) -> SimDevice:
        return SimDevice(
            unit,
            simdata=(
                [SimData(0, values=False, datatype=DataType.BITS)],
                [SimData(0, values=False, datatype=DataType.BITS)],
                [SimData(0, datatype=DataType.INVALID)],
                [SimData(0, datatype=DataType.INVALID)],
            ),
        )


async def serve(args: argparse.Namespace) -> None:
    profile = load_profiles()[args.profile]
    servers = [
        ModbusMeterServer.uniform(
            profile,
            args.meters,
            first_unit=args.first_unit,
            host=args.host,
            port=args.port + i if args.port else 0,
            framer=args.framer,
            seed=None if args.seed is None else args.seed + i,
        )
        for i in range(args.servers)
    ]
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopped.set)
    try:
        for server in servers:
            await server.start()
            last = args.first_unit + args.meters - 1
            print(
                f"modbus_meter listening framer={args.framer} host={args.host} port={server.port} "
                f"units={args.first_unit}-{last} profile={args.profile}",
                flush=True,
            )
        await stopped.wait()
    finally:
        for server in servers:
            await server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=5020, help="TCP port; 0 picks a free one")
    parser.add_argument("--servers", type=int, default=1, help="servers on consecutive ports")
    parser.add_argument("--meters", type=int, default=10, help="meters per server")
    parser.add_argument("--first-unit", type=int, default=1, help="unit id of the first meter")
    parser.add_argument("--profile", default="water_meter", help="device profile kind")
    parser.add_argument("--framer", choices=get_args(Framer), default="tcp")
    parser.add_argument("--seed", type=int, default=None, help="seed for values and garbage")
    args = parser.parse_args(argv)
    if not 1 <= args.first_unit <= args.first_unit + args.meters - 1 <= 247:
        parser.error("unit ids must stay within 1..247")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
