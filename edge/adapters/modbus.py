"""Modbus meter polling: a shared client per bus, deadline scheduling, availability logged once."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import random
import struct
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from pydantic import Field, model_validator
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerRTU, FramerType
from pymodbus.pdu import ModbusPDU

from shouwang.config import ConfigError, Strict
from shouwang.ids import new_id
from shouwang.profiles import DeviceProfile, FieldSpec
from shouwang.protocol import now_ms
from shouwang.records import Reading
from shouwang.registers import ModbusMap, ReadRequest, Value, decode_read, plan_reads

log = logging.getLogger(__name__)

Framer = Literal["tcp", "rtu_over_tcp"]
Frame = tuple[str, str, float]  # (direction "tx" | "rx", hex bytes, wall-clock time)

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
# First polls fall on a grid of 1/20 interval (50 ms to 1 s), so meters due together share one
# wake-up of the event loop: waking an idle process costs more than the read it then does.
_GRID_PER_INTERVAL = 20
_GRID_MIN_S, _GRID_MAX_S = 0.05, 1.0
_CONNECT_BACKOFF_MAX_S = 60.0


class ModbusLink(Strict):
    """How to reach one meter; the `modbus:` block of a device in the site config."""

    host: str = Field(description="Modbus TCP server or RS-485 gateway address")
    port: int = Field(502, ge=1, le=65535, description="TCP port of that server or gateway")
    framer: Framer = Field(
        "tcp", description="tcp (Modbus TCP, MBAP header) or rtu_over_tcp (RTU frames with CRC)"
    )
    unit_id: int = Field(
        ge=0, le=255, description="Modbus unit id (slave address; pymodbus calls it device_id)"
    )
    poll_interval_s: float = Field(60.0, gt=0, description="Time between polls")
    timeout_s: float = Field(1.0, gt=0, description="Wait this long for each reply")
    retries: int = Field(
        2, ge=0, le=10, description="Further attempts after a failed one, per poll"
    )
    retry_backoff_s: float = Field(
        0.2, gt=0, description="Pause before the first retry; doubles per retry, with jitter"
    )
    unavailable_after: int = Field(
        3, ge=1, description="Consecutive failed polls before the meter is reported unavailable"
    )
    unavailable_backoff_max_s: float = Field(
        300.0, gt=0, description="While unavailable, the poll interval doubles up to this"
    )
    frames_kept: int = Field(20, ge=1, le=1000, description="Raw frames kept for diagnostics")

    @model_validator(mode="after")
    def _backoff_cap(self) -> ModbusLink:
        if self.unavailable_backoff_max_s < self.poll_interval_s:
            raise ValueError("unavailable_backoff_max_s must be at least poll_interval_s")
        return self


class ModbusMeterConfig(ModbusLink):
    id: str = Field(description="Device id, as in the edge config's devices list")
    profile: str = Field(description="Device profile kind; the profile needs a modbus register map")


class DeviceError(Exception):
    """A device did not give what was asked; `reason` is a short label for counters."""

    def __init__(self, device: str, reason: str, message: str, frames: Sequence[Frame] = ()):
        super().__init__(f"{device}: {message}")
        self.device = device
        self.reason = reason
        self.detail = message
        self.frames = list(frames)
        self.retryable = True


class DeviceUnavailable(DeviceError):
    """No reply: timeout, refused connection, connection lost."""


class DecodeError(DeviceError):
    """A reply that is no answer: an exception response, another unit's reply, garbage."""


@dataclass(slots=True)
class PollCounters:
    """Plain counters, so the daemon can export them to Prometheus as it likes."""

    polls: int = 0
    readings: int = 0
    failures: int = 0
    requests: int = 0
    retries: int = 0
    deadline_misses: int = 0
    late_replies: int = 0
    callback_errors: int = 0
    failure_reasons: Counter[str] = field(default_factory=Counter)
    decode_errors: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "polls": self.polls,
            "readings": self.readings,
            "failures": self.failures,
            "requests": self.requests,
            "retries": self.retries,
            "deadline_misses": self.deadline_misses,
            "late_replies": self.late_replies,
            "callback_errors": self.callback_errors,
            "failure_reasons": dict(self.failure_reasons),
            "decode_errors": dict(self.decode_errors),
        }


@dataclass(slots=True)
class _Meter:
    config: ModbusMeterConfig
    profile: DeviceProfile
    rmap: ModbusMap
    plan: list[ReadRequest]
    frames: deque[Frame]
    counters: PollCounters = field(default_factory=PollCounters)
    bus: _Bus | None = None
    available: bool = True
    consecutive_failures: int = 0
    last_error: str | None = None
    last_reading_ts: int | None = None
    bad_fields: set[str] = field(default_factory=set)


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
        self._connect_backoff_s = _CONNECT_BACKOFF_MIN_S
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
        device = meter.config.id
        if loop.time() < self._next_connect_at:
            # Fail fast: fifty meters on a dead gateway must not each wait for a connect timeout.
            raise DeviceUnavailable(
                device, "connect_failed", f"cannot connect to {self.name}", meter.frames
            )
        ok = False
        try:
            async with asyncio.timeout(meter.config.timeout_s):
                ok = await self.client.connect()
        except TimeoutError:
            pass
        if not ok:
            self.client.close()
            delay = self._connect_backoff_s
            self._next_connect_at = loop.time() + self._rng.uniform(delay / 2, delay)
            self._connect_backoff_s = min(delay * 2, _CONNECT_BACKOFF_MAX_S)
            raise DeviceUnavailable(
                device, "connect_failed", f"cannot connect to {self.name}", meter.frames
            )
        self._connect_backoff_s = _CONNECT_BACKOFF_MIN_S

    async def read(self, meter: _Meter, req: ReadRequest) -> list[int]:
        """One read request; the caller holds `lock`."""
        cfg = meter.config
        if not self.client.connected:
            raise DeviceUnavailable(
                cfg.id, "connection_lost", f"{self.name} closed the connection", meter.frames
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
                cfg.id, reason, f"{req.function} {req.address}: {detail}", meter.frames
            ) from err
        except ModbusException as err:
            raise DeviceUnavailable(cfg.id, "connection_lost", str(err), meter.frames) from err
        finally:
            self._timeout = None
            self._expect = None
            self._partial = b""
        if response.isError():
            code = int(getattr(response, "exception_code", 0))
            name = _EXCEPTION_NAMES.get(code, "unknown")
            error = DecodeError(
                cfg.id,
                "exception_response",
                f"{req.function} {req.address}+{req.count}: exception code {code} ({name})",
                meter.frames,
            )
            error.retryable = code not in _PERMANENT_EXCEPTIONS
            raise error
        registers = list(response.registers)
        if len(registers) != req.count:
            raise DecodeError(
                cfg.id,
                "short_response",
                f"{req.function} {req.address}: {len(registers)} registers, wanted {req.count}",
                meter.frames,
            )
        return registers


OnReading = Callable[[Reading], None]
OnAvailability = Callable[[str, bool, str], None]


class ModbusPoller:
    """Polls Modbus meters on their own schedules and turns their registers into Readings.

    Callbacks run in the event loop and must not block. A meter is assumed available until
    `unavailable_after` consecutive polls fail; each change is reported and logged once.
    """

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
        self.on_reading = on_reading
        self.on_availability = on_availability
        self.counters = PollCounters()
        self._quiet_pymodbus = quiet_pymodbus
        self._rng = rng or random.Random()
        self._meters: dict[str, _Meter] = {}
        self._buses: dict[tuple[str, int, str], _Bus] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        self._silenced = False
        addresses: dict[tuple[str, int, str, int], str] = {}
        for cfg in meters:
            where = f"modbus meter {cfg.id!r}"
            if cfg.id in self._meters:
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
            self._meters[cfg.id] = _Meter(
                cfg,
                profile,
                profile.modbus,
                plan_reads(profile.modbus),
                deque(maxlen=cfg.frames_kept),
            )

    async def start(self) -> None:
        if self._tasks:
            raise RuntimeError("ModbusPoller already started")
        self._silence_pymodbus()
        self._running = True
        loop = asyncio.get_running_loop()
        now = loop.time()
        by_bus: dict[tuple[str, int, str], list[_Meter]] = {}
        for meter in self._meters.values():
            cfg = meter.config
            by_bus.setdefault((cfg.host, cfg.port, cfg.framer), []).append(meter)
        for (host, port, framer), meters in by_bus.items():
            timeout = max(m.config.timeout_s for m in meters)
            bus = self._buses[(host, port, framer)] = _Bus(
                host, port, cast(Framer, framer), timeout, self._rng, self.counters
            )
            for meter in meters:
                meter.bus = bus
        # Round robin over buses, so the meters due at one instant are on different buses.
        order = [m for group in itertools.zip_longest(*by_bus.values()) for m in group if m]
        count = len(order)
        for index, meter in enumerate(order):
            cfg = meter.config
            # Spread first polls over one interval so 500 meters do not fire at once.
            offset = cfg.poll_interval_s * index / count
            grid = min(_GRID_MAX_S, max(_GRID_MIN_S, cfg.poll_interval_s / _GRID_PER_INTERVAL))
            first = now + offset - offset % grid
            self._tasks.append(
                asyncio.create_task(self._run(meter, first), name=f"modbus {cfg.id}")
            )
        log.info("modbus polling %d meters on %d buses", count, len(self._buses))

    async def stop(self) -> None:
        self._running = False
        tasks, self._tasks = self._tasks, []
        pending = set(tasks)
        while pending:
            for task in pending:
                task.cancel()
            # Python 3.11's wait_for returns a reply that lands with the cancel and drops the
            # cancel; such a task sees _running and ends, or the next round cancels it again.
            _, pending = await asyncio.wait(pending, timeout=0.5)
        for bus in self._buses.values():
            bus.client.close()
        self._buses.clear()
        for meter in self._meters.values():
            meter.bus = None
        self._restore_pymodbus()

    async def __aenter__(self) -> ModbusPoller:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- introspection ---------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Totals over all meters, plus how many are unavailable now."""
        data = self.counters.as_dict()
        data["meters"] = len(self._meters)
        data["unavailable"] = sum(1 for m in self._meters.values() if not m.available)
        return data

    def diagnostics(self, device_id: str) -> dict[str, Any]:
        """State, counters and the last raw frames of one meter; KeyError if unknown."""
        m = self._meters[device_id]
        cfg = m.config
        return {
            "device": cfg.id,
            "bus": f"{cfg.framer}://{cfg.host}:{cfg.port}",
            "unit_id": cfg.unit_id,
            "available": m.available,
            "consecutive_failures": m.consecutive_failures,
            "last_error": m.last_error,
            "last_reading_ts": m.last_reading_ts,
            "bad_fields": sorted(m.bad_fields),
            "counters": m.counters.as_dict(),
            "frames": list(m.frames),
        }

    # -- scheduling ------------------------------------------------------------------------------

    async def _run(self, m: _Meter, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        interval = m.config.poll_interval_s
        slack = min(1.0, interval / 4)
        while self._running:
            delay = deadline - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if m.available and loop.time() - deadline > slack:
                self._miss(m, 1)
            try:
                await self._poll(m)
            except Exception as err:
                # A bug must not end a meter's polling for good: count it and carry on,
                # with one traceback per meter rather than one per poll.
                if not m.counters.failure_reasons["internal_error"]:
                    log.exception("modbus meter %s: poll crashed", m.config.id)
                self._failed(m, DeviceError(m.config.id, "internal_error", repr(err), m.frames))
            now = loop.time()
            if m.available:
                deadline += interval
                if deadline < now:
                    # Overran (slow bus, long retries): skip the lost slots rather than burst.
                    skipped = math.floor((now - deadline) / interval) + 1
                    self._miss(m, skipped)
                    deadline += skipped * interval
            else:
                level = m.consecutive_failures - m.config.unavailable_after
                backoff = min(m.config.unavailable_backoff_max_s, interval * 2.0 ** min(level, 30))
                deadline = now + self._rng.uniform(backoff / 2, backoff)

    def _miss(self, m: _Meter, n: int) -> None:
        m.counters.deadline_misses += n
        self.counters.deadline_misses += n

    # -- one poll --------------------------------------------------------------------------------

    async def _poll(self, m: _Meter) -> None:
        m.counters.polls += 1
        self.counters.polls += 1
        attempt = 0
        while True:
            try:
                results = await self._read_all(m)
                break
            except DeviceError as err:
                if isinstance(err, DecodeError):
                    self._count_decode(m, err.reason)
                if attempt >= m.config.retries or not err.retryable:
                    self._failed(m, err)
                    return
            attempt += 1
            m.counters.retries += 1
            self.counters.retries += 1
            base = m.config.retry_backoff_s * 2 ** (attempt - 1)
            await asyncio.sleep(self._rng.uniform(base / 2, base))

        values: dict[str, Value] = {}
        problems: dict[str, tuple[str, str]] = {}
        for req, registers in results:
            decoded, errors = decode_read(m.rmap, req, registers)
            for name, derr in errors.items():
                problems[name] = (derr.reason, str(derr))
            for name, value in decoded.items():
                spec = m.profile.fields[name]
                value = _coerce(spec, value)
                problem = spec.check(value)
                if problem is None:
                    values[name] = value
                else:
                    reason = "wrong_type" if problem.startswith("expected") else "out_of_range"
                    problems[name] = (reason, problem)
        self._track_fields(m, values, problems)
        if not values:
            detail = "; ".join(f"{n}: {p}" for n, (_, p) in sorted(problems.items()))
            self._failed(m, DecodeError(m.config.id, "no_valid_fields", detail, m.frames))
            return
        reading = Reading(new_id(), m.config.id, now_ms(), values)
        m.last_reading_ts = reading.ts
        m.counters.readings += 1
        self.counters.readings += 1
        self._succeeded(m)
        try:
            self.on_reading(reading)
        except Exception:
            self._callback_failed(m, "on_reading")

    async def _read_all(self, m: _Meter) -> list[tuple[ReadRequest, list[int]]]:
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
        return results

    def _count_decode(self, m: _Meter, reason: str) -> None:
        m.counters.decode_errors[reason] += 1
        self.counters.decode_errors[reason] += 1

    def _track_fields(
        self, m: _Meter, values: dict[str, Value], problems: dict[str, tuple[str, str]]
    ) -> None:
        for name, (reason, detail) in problems.items():
            self._count_decode(m, reason)
            if name not in m.bad_fields:
                m.bad_fields.add(name)
                log.warning(
                    "modbus meter %s field %s dropped: %s",
                    m.config.id,
                    name,
                    detail,
                    extra={"device": m.config.id, "reason": reason, "frames": list(m.frames)},
                )
        for name in [n for n in m.bad_fields if n in values]:
            m.bad_fields.discard(name)
            log.info("modbus meter %s field %s valid again", m.config.id, name)

    def _failed(self, m: _Meter, err: DeviceError) -> None:
        m.consecutive_failures += 1
        m.last_error = str(err)
        m.counters.failures += 1
        self.counters.failures += 1
        m.counters.failure_reasons[err.reason] += 1
        self.counters.failure_reasons[err.reason] += 1
        if not m.available or m.consecutive_failures < m.config.unavailable_after:
            return
        m.available = False
        reason = f"{err.reason}: {err.detail}"
        log.warning(
            "modbus meter %s unavailable after %d failed polls: %s",
            m.config.id,
            m.consecutive_failures,
            reason,
            extra={"device": m.config.id, "reason": err.reason, "frames": err.frames},
        )
        self._notify(m, False, reason)

    def _succeeded(self, m: _Meter) -> None:
        failures, m.consecutive_failures = m.consecutive_failures, 0
        m.last_error = None
        if m.available:
            return
        m.available = True
        log.info(
            "modbus meter %s available again after %d failed polls",
            m.config.id,
            failures,
            extra={"device": m.config.id},
        )
        self._notify(m, True, f"answered after {failures} failed polls")

    def _notify(self, m: _Meter, available: bool, reason: str) -> None:
        try:
            self.on_availability(m.config.id, available, reason)
        except Exception:
            self._callback_failed(m, "on_availability")

    def _callback_failed(self, m: _Meter, name: str) -> None:
        self.counters.callback_errors += 1
        m.counters.callback_errors += 1
        # The first failure carries the traceback; a callback failing per poll must not flood.
        if self.counters.callback_errors == 1:
            log.exception("modbus %s callback failed (device %s)", name, m.config.id)

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


def _coerce(spec: FieldSpec, value: Value) -> Value:
    """Register numbers in the profile's type: 87 for an int field, 87.0 for a float one."""
    if spec.type == "float" and isinstance(value, int):
        return float(value)
    if spec.type == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    if spec.type == "bool" and isinstance(value, int | float):
        return value != 0
    return value
