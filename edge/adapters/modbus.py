"""Modbus meters on the shared poller: one client per bus, every raw frame checked and kept."""

from __future__ import annotations

import asyncio
import logging
import random
import struct
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from pydantic import Field
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerRTU, FramerType
from pymodbus.pdu import ModbusPDU

from edge.adapters.polling import (
    DecodeError,
    DeviceUnavailable,
    OnAvailability,
    OnReading,
    PollCounters,
    PolledDevice,
    Poller,
    PollLink,
    RawFrame,
    Sample,
)
from shouwang.backoff import Backoff
from shouwang.config import ConfigError
from shouwang.ids import new_id
from shouwang.profiles import DeviceProfile
from shouwang.protocol import now_ms
from shouwang.records import Reading
from shouwang.registers import ModbusMap, ReadRequest, Value, decode_read, plan_reads

log = logging.getLogger(__name__)

Framer = Literal["tcp", "rtu_over_tcp"]
Frame = RawFrame  # (direction "tx" | "rx", hex bytes, wall-clock time)

_FRAMER_TYPES = {"tcp": FramerType.SOCKET, "rtu_over_tcp": FramerType.RTU}
_FUNCTION_CODES = {"holding": 3, "input": 4}
# These codes say the request itself is wrong (bad map or firmware): a retry cannot help.
_PERMANENT_EXCEPTIONS = frozenset({1, 2, 3})
_EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    5: "acknowledge",
    6: "device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}
_CONNECT_BACKOFF_MIN_S = 0.5
_CONNECT_BACKOFF_MAX_S = 60.0


class ModbusLink(PollLink):
    """How to reach one meter; the `modbus:` block of a device in the site config."""

    host: str = Field(description="Modbus TCP server or RS-485 gateway address")
    port: int = Field(502, ge=1, le=65535, description="TCP port of that server or gateway")
    framer: Framer = Field(
        "tcp", description="tcp (Modbus TCP, MBAP header) or rtu_over_tcp (RTU frames with CRC)"
    )
    unit_id: int = Field(
        ge=0, le=255, description="Modbus unit id (slave address; pymodbus calls it device_id)"
    )
    connect_timeout_s: float = Field(
        3.0,
        gt=0,
        description="Wait this long to open the TCP connection (apart from timeout_s per reply)",
    )


class ModbusMeterConfig(ModbusLink):
    id: str = Field(description="Device id, as in the edge config's devices list")
    profile: str = Field(description="Device profile kind; the profile needs a modbus register map")


@dataclass(slots=True, eq=False, kw_only=True)
class _Meter(PolledDevice[ModbusMeterConfig]):
    rmap: ModbusMap
    plan: list[ReadRequest]
    frames: deque[Frame]
    bus: _Bus | None = None


@dataclass(frozen=True, slots=True)
class PendingRequest:
    """What the reply to a read request must look like."""

    unit: int
    tid: int
    function_code: int
    count: int

    @classmethod
    def parse(cls, framer: Framer, frame: bytes) -> PendingRequest | None:
        """From the request frame as sent; None if it is no read request."""
        try:
            if framer == "tcp":
                tid, _, _, unit, fc, _, count = struct.unpack(">HHHBBHH", frame[:12])
            else:
                tid = 0
                unit, fc, _, count = struct.unpack(">BBHH", frame[:6])
        except struct.error:
            return None
        return cls(unit, tid, fc, count)


def late_reply_length(framer: Framer, pending: PendingRequest, data: bytes) -> int:
    """Bytes at the head of `data` that are whole Modbus TCP replies to earlier requests.

    A slow meter's reply can land while the next request waits. RTU frames carry no
    transaction id, so over RTU such a reply cannot be told from the awaited one.
    """
    offset = 0
    while framer == "tcp" and len(data) - offset >= 8:
        tid, pid, length = struct.unpack_from(">HHH", data, offset)
        end = offset + 6 + length
        if tid == pending.tid or pid != 0 or not 2 <= length <= 254 or len(data) < end:
            break
        offset = end
    return offset


def classify_reply(framer: Framer, pending: PendingRequest, data: bytes) -> str:
    """ok | incomplete | garbage | wrong_unit_id, for the reply at the head of `data`."""
    if framer == "tcp":
        if len(data) < 8:
            return "incomplete"
        tid, pid, length = struct.unpack(">HHH", data[:6])
        unit, fc = data[6], data[7]
        if pid != 0 or not 2 <= length <= 254:
            return "garbage"
        if len(data) < 6 + length:
            return "incomplete"
        if len(data) > 6 + length or tid != pending.tid:
            return "garbage"
        if fc == pending.function_code:
            if length != 3 + 2 * pending.count or data[8] != 2 * pending.count:
                return "garbage"
        elif fc != pending.function_code | 0x80 or length != 3:
            return "garbage"
    else:
        if len(data) < 3:
            return "incomplete"
        unit, fc = data[0], data[1]
        if fc == pending.function_code:
            if data[2] != 2 * pending.count:
                return "garbage"
            total = 5 + data[2]
        elif fc == pending.function_code | 0x80:
            total = 5
        else:
            return "garbage"
        if len(data) < total:
            return "incomplete"
        crc = int.from_bytes(data[total - 2 : total], "big")
        if len(data) > total or not FramerRTU.check_CRC(data[: total - 2], crc):
            return "garbage"
    return "wrong_unit_id" if unit != pending.unit else "ok"


class _Bus:
    """One TCP connection (a Modbus TCP server or an RS-485 gateway) shared by its meters."""

    def __init__(
        self,
        host: str,
        port: int,
        framer: Framer,
        timeout_s: float,
        rng: random.Random,
        counters: PollCounters,
    ) -> None:
        self.name = f"{framer}://{host}:{port}"
        self.framer = framer
        self.lock = asyncio.Lock()
        self.owner: _Meter | None = None
        self.observed: tuple[str, str] | None = None
        self.disconnects = 0
        self._expect: PendingRequest | None = None
        self._partial = b""
        self._seen = 0
        self._counters = counters
        self._timeout: asyncio.Timeout | None = None
        self._connect_backoff = Backoff(_CONNECT_BACKOFF_MIN_S, _CONNECT_BACKOFF_MAX_S, rng=rng)
        self._next_connect_at = 0.0
        self._rng = rng
        self.client = AsyncModbusTcpClient(
            host,
            port=port,
            framer=_FRAMER_TYPES[framer],
            name=self.name,
            # Our own asyncio.timeout bounds each request; this is only pymodbus's backstop.
            timeout=timeout_s + 1.0,
            # Retries and reconnects are ours, with backoff, jitter and counters.
            retries=0,
            reconnect_delay=0,
            trace_packet=self._trace_packet,
            trace_connect=self._trace_connect,
        )

    # -- raw frames: recorded for diagnostics, and checked before pymodbus sees them ------------

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        # pymodbus passes its whole receive buffer, which only grows until the next send.
        if sending:
            self._record("tx", data)
            self._expect = PendingRequest.parse(self.framer, data)
            self._partial = b""
            self._seen = 0
            return data
        if self._expect is None:
            # A reply after its request gave up: keep it for diagnosis, hand pymodbus nothing.
            if len(data) > self._seen:
                self._record("rx", data[self._seen :])
                self._count_late()
                self._seen = len(data)
            return b""
        late = late_reply_length(self.framer, self._expect, data)
        if late > self._seen:
            self._record("rx", data[self._seen : late])
            self._count_late()
            self._seen = late
        data = data[late:]
        if not data:
            return b""
        verdict = classify_reply(self.framer, self._expect, data)
        if verdict == "incomplete":
            self._partial = data
            return data
        self._partial = b""
        self._record("rx", data)
        if verdict == "ok":
            return data
        # Hand pymodbus nothing: it would log an error per frame and wait for its own timeout.
        self.observed = (verdict, self._describe(verdict, data))
        self._fail_fast()
        return b""

    def _count_late(self) -> None:
        self._counters.late_replies += 1
        if self.owner is not None:
            self.owner.counters.late_replies += 1

    def _trace_connect(self, connected: bool) -> None:
        if connected:
            return
        self.disconnects += 1
        if self._expect is not None and self.observed is None:
            self.observed = ("connection_lost", f"{self.name} closed the connection")
            self._fail_fast()

    def _fail_fast(self) -> None:
        if self._timeout is not None:
            self._timeout.reschedule(asyncio.get_running_loop().time())

    def _record(self, direction: str, data: bytes) -> None:
        if self.owner is not None:
            self.owner.frames.append((direction, data.hex(), time.time()))

    def _describe(self, verdict: str, data: bytes) -> str:
        exp = self._expect
        if verdict == "wrong_unit_id" and exp is not None:
            unit = data[6] if self.framer == "tcp" else data[0]
            return f"reply from unit {unit}, expected unit {exp.unit}"
        return f"unparseable reply ({len(data)} bytes)"

    # -- requests --------------------------------------------------------------------------------

    async def ensure_connected(self, meter: _Meter) -> None:
        if self.client.connected:
            return
        loop = asyncio.get_running_loop()
        device = meter.id
        if loop.time() < self._next_connect_at:
            # Fail fast: fifty meters on a dead gateway must not each wait for a connect timeout.
            raise DeviceUnavailable(
                device, "connect_failed", f"cannot connect to {self.name}", meter.frames
            )
        ok = False
        try:
            async with asyncio.timeout(meter.config.connect_timeout_s):
                ok = await self.client.connect()
        except TimeoutError:
            pass
        if not ok:
            self.client.close()
            self._next_connect_at = loop.time() + self._connect_backoff.next()
            raise DeviceUnavailable(
                device, "connect_failed", f"cannot connect to {self.name}", meter.frames
            )
        self._connect_backoff.reset()

    async def read(self, meter: _Meter, req: ReadRequest) -> list[int]:
        """One read request; the caller holds `lock`."""
        cfg = meter.config
        if not self.client.connected:
            raise DeviceUnavailable(
                meter.id, "connection_lost", f"{self.name} closed the connection", meter.frames
            )
        self.owner = meter
        self.observed = None
        self._partial = b""
        response: ModbusPDU | None = None
        try:
            async with asyncio.timeout(cfg.timeout_s) as self._timeout:
                if req.function == "holding":
                    response = await self.client.read_holding_registers(
                        req.address, count=req.count, device_id=cfg.unit_id
                    )
                else:
                    response = await self.client.read_input_registers(
                        req.address, count=req.count, device_id=cfg.unit_id
                    )
        except TimeoutError as err:
            if self._partial:
                self._record("rx", self._partial)
            reason, detail = self.observed or (
                ("garbage", f"incomplete reply ({len(self._partial)} bytes)")
                if self._partial
                else ("timeout", f"no reply within {cfg.timeout_s:g} s")
            )
            kind = DeviceUnavailable if reason in ("timeout", "connection_lost") else DecodeError
            raise kind(
                meter.id, reason, f"{req.function} {req.address}: {detail}", meter.frames
            ) from err
        except ModbusException as err:
            raise DeviceUnavailable(meter.id, "connection_lost", str(err), meter.frames) from err
        finally:
            self._timeout = None
            self._expect = None
            self._partial = b""
        if response.isError():
            code = int(getattr(response, "exception_code", 0))
            name = _EXCEPTION_NAMES.get(code, "unknown")
            error = DecodeError(
                meter.id,
                "exception_response",
                f"{req.function} {req.address}+{req.count}: exception code {code} ({name})",
                meter.frames,
            )
            error.retryable = code not in _PERMANENT_EXCEPTIONS
            raise error
        registers = list(response.registers)
        if len(registers) != req.count:
            raise DecodeError(
                meter.id,
                "short_response",
                f"{req.function} {req.address}: {len(registers)} registers, wanted {req.count}",
                meter.frames,
            )
        return registers


class ModbusPoller(Poller[_Meter]):
    """Polls Modbus meters on their own schedules and turns their registers into Readings.

    Callbacks run in the event loop and must not block. A meter is assumed available until
    `unavailable_after` consecutive polls fail; each change is reported and logged once.
    """

    label = "modbus"
    logger = log

    def __init__(
        self,
        meters: Sequence[ModbusMeterConfig],
        profiles: Mapping[str, DeviceProfile],
        on_reading: OnReading,
        on_availability: OnAvailability,
        *,
        quiet_pymodbus: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        devices: dict[str, _Meter] = {}
        addresses: dict[tuple[str, int, str, int], str] = {}
        for cfg in meters:
            where = f"modbus meter {cfg.id!r}"
            if cfg.id in devices:
                raise ConfigError(f"{where}: duplicate device id")
            profile = profiles.get(cfg.profile)
            if profile is None:
                raise ConfigError(f"{where}: profile: unknown profile {cfg.profile!r}")
            if profile.modbus is None:
                raise ConfigError(f"{where}: profile: {cfg.profile!r} has no modbus register map")
            address = (cfg.host, cfg.port, cfg.framer, cfg.unit_id)
            if address in addresses:
                raise ConfigError(f"{where}: unit_id: same bus and unit as {addresses[address]!r}")
            addresses[address] = cfg.id
            devices[cfg.id] = _Meter(
                id=cfg.id,
                config=cfg,
                profile=profile,
                rmap=profile.modbus,
                plan=plan_reads(profile.modbus),
                frames=deque(maxlen=cfg.frames_kept),
            )
        super().__init__(list(devices.values()), on_reading, on_availability, rng=rng)
        self._quiet_pymodbus = quiet_pymodbus
        self._silenced = False
        self._buses: dict[tuple[str, int, str], _Bus] = {}

    # -- the protocol's part of the shared poller ------------------------------------------------

    def _open(self) -> list[list[_Meter]]:
        self._silence_pymodbus()
        by_bus: dict[tuple[str, int, str], list[_Meter]] = {}
        for meter in self._devices.values():
            cfg = meter.config
            by_bus.setdefault((cfg.host, cfg.port, cfg.framer), []).append(meter)
        for (host, port, framer), meters in by_bus.items():
            timeout = max(m.config.timeout_s for m in meters)
            bus = self._buses[(host, port, framer)] = _Bus(
                host, port, cast(Framer, framer), timeout, self._rng, self.counters
            )
            for meter in meters:
                meter.bus = bus
        log.info("modbus polling %d meters on %d buses", len(self._devices), len(self._buses))
        return list(by_bus.values())

    async def _close(self) -> None:
        for bus in self._buses.values():
            bus.client.close()
        self._buses.clear()
        for meter in self._devices.values():
            meter.bus = None
        self._restore_pymodbus()

    async def _read(self, m: _Meter) -> Sample:
        bus = m.bus
        assert bus is not None, "poller not started"
        results = []
        # One poll holds the bus for all its reads: a meter's values form one snapshot.
        async with bus.lock:
            await bus.ensure_connected(m)
            for req in m.plan:
                m.counters.requests += 1
                self.counters.requests += 1
                results.append((req, await bus.read(m, req)))
        values: dict[str, Value] = {}
        problems: dict[str, tuple[str, str]] = {}
        for req, registers in results:
            decoded, errors = decode_read(m.rmap, req, registers)
            for name, derr in errors.items():
                problems[name] = (derr.reason, str(derr))
            values.update(decoded)
        return Sample(Reading(new_id(), m.id, now_ms(), values), problems)

    def _where(self, m: _Meter) -> dict[str, Any]:
        cfg = m.config
        return {"bus": f"{cfg.framer}://{cfg.host}:{cfg.port}", "unit_id": cfg.unit_id}

    def _frames(self, m: _Meter) -> Sequence[Frame]:
        return m.frames

    # -- pymodbus logs an error per timeout and per stray frame; our counters cover those -------

    def _silence_pymodbus(self) -> None:
        pm = logging.getLogger("pymodbus")
        if self._quiet_pymodbus and pm.level == logging.NOTSET:
            pm.setLevel(logging.CRITICAL)
            self._silenced = True

    def _restore_pymodbus(self) -> None:
        if self._silenced:
            logging.getLogger("pymodbus").setLevel(logging.NOTSET)
            self._silenced = False
