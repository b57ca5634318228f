"""CJ/T 188 meters behind a transparent serial server: the asyncio client and its poller."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from pydantic import Field, field_validator

from edge.adapters.cjt188 import (
    ABNORMAL_BIT,
    ANY_METER_TYPE,
    BROADCAST_ADDRESS,
    FUNCTION_MASK,
    RESPONSE_BIT,
    START,
    ChecksumError,
    Cjt188ConnectFailed,
    Cjt188ConnectionError,
    Cjt188Error,
    Cjt188Timeout,
    DiOrder,
    FieldError,
    Frame,
    FrameError,
    FrameReader,
    FrameRecord,
    MeterErrorResponse,
    MeterType,
    ReadAddressResponse,
    ReadDataResponse,
    Response,
    UnexpectedResponse,
    UnsupportedResponse,
    ValveResponse,
    decode_response,
    encode_frame,
    hex_text,
    read_address_request,
    read_data_request,
    to_reading,
    valve_request,
)
from edge.adapters.polling import (
    DecodeError,
    DeviceError,
    DeviceUnavailable,
    OnAvailability,
    OnReading,
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
from shouwang.registers import Value

log = logging.getLogger(__name__)

_READ_CHUNK = 512
# Worth another try: the line or the link garbled or lost the answer.
_RETRYABLE = (Cjt188Timeout, Cjt188ConnectionError, FrameError, ChecksumError, UnexpectedResponse)
# The meter is not answering usefully; log the change once, not on every poll.
_UNAVAILABLE = (Cjt188Timeout, Cjt188ConnectionError, FrameError, ChecksumError)


class Cjt188Client:
    """Talks to CJ/T 188 meters on one RS-485 line through a transparent serial server (TCP)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout_s: float = 2.0,
        connect_timeout_s: float = 3.0,
        retries: int = 2,
        backoff_s: float = 0.2,
        backoff_max_s: float = 5.0,
        queue_timeout_s: float = 60.0,
        reconnect_after_timeouts: int = 3,
        history: int = 20,
        preamble: int = 4,
        di_order: DiOrder = "little",
        match_ser: bool = True,
        log_availability: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.retries = retries
        self.backoff_s, self.backoff_max_s = backoff_s, backoff_max_s
        # Between the tries of one request, jittered: meters polled in step drift apart.
        self._backoff = Backoff(backoff_s, max(backoff_s, backoff_max_s), rng=rng)
        self.queue_timeout_s = queue_timeout_s
        self.reconnect_after_timeouts = reconnect_after_timeouts
        self.history = history
        self.preamble = preamble
        self.di_order: DiOrder = di_order
        # Some meters always answer SER 00; they need this off (and lose stale-reply filtering).
        self.match_ser = match_ser
        # Off when a poller reports availability itself, so a change is logged once, not twice.
        self.log_availability = log_availability
        self._lock = asyncio.Lock()  # one request at a time on the shared RS-485 line
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._stream = FrameReader()
        self._frames: dict[str, deque[FrameRecord]] = {}
        self._ser = 0
        self._timeouts_in_a_row = 0
        self._unavailable: set[str] = set()

    async def __aenter__(self) -> Cjt188Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def frames(self, address: str) -> tuple[FrameRecord, ...]:
        """The last raw exchanges with this meter, oldest first."""
        return tuple(self._frames.get(address, ()))

    async def read_data(
        self,
        address: str,
        *,
        meter_type: int = MeterType.COLD_WATER,
        timeout_s: float | None = None,
    ) -> ReadDataResponse:
        """`timeout_s` overrides the client's wait for this answer (meters on a line differ)."""
        request = read_data_request(
            address, meter_type=meter_type, ser=self._next_ser(), di_order=self.di_order
        )
        resp = await self._call(request, timeout_s)
        assert isinstance(resp, ReadDataResponse)  # decode_response keys the type on C
        return resp

    async def set_valve(
        self, address: str, open: bool, *, meter_type: int = MeterType.COLD_WATER
    ) -> ValveResponse:
        request = valve_request(
            address, open, meter_type=meter_type, ser=self._next_ser(), di_order=self.di_order
        )
        resp = await self._call(request)
        assert isinstance(resp, ValveResponse)
        return resp

    async def read_address(
        self, address: str = BROADCAST_ADDRESS, *, meter_type: int = ANY_METER_TYPE
    ) -> ReadAddressResponse:
        """With the broadcast address, only safe when one meter is on the line."""
        request = read_address_request(
            address, meter_type=meter_type, ser=self._next_ser(), di_order=self.di_order
        )
        resp = await self._call(request)
        assert isinstance(resp, ReadAddressResponse)
        return resp

    async def close(self) -> None:
        await self._drop()

    # --- internals ---

    def _next_ser(self) -> int:
        self._ser = (self._ser + 1) & 0xFF
        return self._ser

    async def _call(self, request: Frame, timeout_s: float | None = None) -> Response:
        history = self._frames.setdefault(request.address, deque(maxlen=self.history))
        try:
            frame = await self._transact(request, history, timeout_s or self.timeout_s)
            resp = decode_response(frame, di_order=self.di_order)
        except Cjt188Error as err:
            err.frames = tuple(history)
            if isinstance(err, _UNAVAILABLE) and request.address not in self._unavailable:
                self._unavailable.add(request.address)
                if self.log_availability:
                    log.warning("CJ/T 188 meter %s unavailable: %s", request.address, err)
            raise
        if request.address in self._unavailable:
            self._unavailable.discard(request.address)
            if self.log_availability:
                log.info("CJ/T 188 meter %s answering again", request.address)
        return resp

    async def _transact(
        self, request: Frame, history: deque[FrameRecord], timeout_s: float
    ) -> Frame:
        try:
            async with asyncio.timeout(self.queue_timeout_s):
                await self._lock.acquire()
        except TimeoutError as err:
            raise Cjt188Timeout(
                f"serial line {self.host}:{self.port} busy for {self.queue_timeout_s} s"
            ) from err
        try:
            last: Cjt188Error | None = None
            for attempt in range(self.retries + 1):
                if attempt:
                    await asyncio.sleep(self._backoff.delay(attempt))
                try:
                    frame = await self._exchange(request, history, timeout_s)
                except _RETRYABLE as err:
                    last = err
                    await self._after_failure(err)
                    log.debug("meter %s attempt %d failed: %s", request.address, attempt + 1, err)
                    continue
                self._timeouts_in_a_row = 0
                return frame
            assert last is not None
            raise last
        finally:
            self._lock.release()

    async def _after_failure(self, err: Cjt188Error) -> None:
        if isinstance(err, Cjt188ConnectionError):
            await self._drop()
        elif isinstance(err, Cjt188Timeout):
            # A serial server can keep a dead TCP session open; a fresh one often cures it.
            self._timeouts_in_a_row += 1
            if self._timeouts_in_a_row >= self.reconnect_after_timeouts:
                self._timeouts_in_a_row = 0
                await self._drop()

    async def _exchange(
        self, request: Frame, history: deque[FrameRecord], timeout_s: float
    ) -> Frame:
        reader, writer = await self._connect()
        wire = encode_frame(request, preamble=self.preamble)
        self._stream.clear()
        history.append(FrameRecord("tx", hex_text(wire), time.monotonic()))
        received = bytearray()
        try:
            async with asyncio.timeout(timeout_s):
                writer.write(wire)
                await writer.drain()
                while True:
                    frame = self._stream.next_frame()
                    if frame is not None:
                        if self._answers(request, frame):
                            return frame
                        continue
                    chunk = await reader.read(_READ_CHUNK)
                    if not chunk:
                        raise Cjt188ConnectionError(
                            f"serial server {self.host}:{self.port} closed the connection",
                            raw=received,
                        )
                    received += chunk
                    self._stream.feed(chunk)
        except TimeoutError as err:
            raise self._no_answer(request, received, timeout_s) from err
        except OSError as err:
            raise Cjt188ConnectionError(
                f"link to serial server {self.host}:{self.port} failed: {err!r}", raw=received
            ) from err
        finally:
            if received:
                history.append(FrameRecord("rx", hex_text(received), time.monotonic()))

    def _answers(self, request: Frame, frame: Frame) -> bool:
        """Whether `frame` answers `request`; stale or echoed frames are skipped."""
        if not frame.control & RESPONSE_BIT:
            return False  # an RS-485 adapter echoing our request, or another master
        if frame.control & FUNCTION_MASK != request.control & FUNCTION_MASK:
            return False
        if self.match_ser:
            ser_at = 0 if frame.control & ABNORMAL_BIT else 2
            if len(frame.data) > ser_at and frame.data[ser_at] != request.data[2]:
                log.debug("skipped a stale answer from %s: %s", frame.address, hex_text(frame.raw))
                return False
        if request.address != BROADCAST_ADDRESS and frame.address != request.address:
            raise UnexpectedResponse(
                f"asked meter {request.address}, the answer came from {frame.address}",
                raw=frame.raw,
            )
        return True

    def _no_answer(self, request: Frame, received: bytearray, timeout_s: float) -> Cjt188Error:
        pending = self._stream.pending
        if pending and pending[0] == START:
            return FrameError(
                f"truncated: meter {request.address} sent {len(pending)} bytes of a frame "
                f"in {timeout_s} s",
                raw=received,
            )
        if self._stream.noise:
            why = self._stream.last_rejection
            return FrameError(
                f"no valid frame from meter {request.address} in {timeout_s} s: "
                f"{self._stream.noise} bytes of noise" + (f" ({why})" if why else ""),
                raw=received,
            )
        return Cjt188Timeout(
            f"no answer from meter {request.address} within {timeout_s} s", raw=received
        )

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is not None and self._writer is not None and not self._writer.is_closing():
            return self._reader, self._writer
        await self._drop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                reader, writer = await asyncio.open_connection(self.host, self.port)
        except TimeoutError as err:
            raise Cjt188ConnectFailed(
                f"connecting to serial server {self.host}:{self.port} timed out "
                f"after {self.connect_timeout_s} s"
            ) from err
        except OSError as err:
            raise Cjt188ConnectFailed(
                f"cannot connect to serial server {self.host}:{self.port}: {err!r}"
            ) from err
        self._reader, self._writer = reader, writer
        return reader, writer

    async def _drop(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is None:
            return
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(self.connect_timeout_s):
                await writer.wait_closed()


# --- polling ---------------------------------------------------------------------------------

_ADDRESS = re.compile(r"[0-9]{14}")
MeterKind = Literal["cold_water", "hot_water", "drinking_water", "reclaimed_water", "gas"]


class Cjt188Link(PollLink):
    """How to reach one CJ/T 188 meter; the `cjt188:` block of a device in the site config."""

    host: str = Field(description="Transparent serial server (RS-485 or M-Bus to TCP) address")
    port: int = Field(ge=1, le=65535, description="TCP port of that serial server")
    address: str = Field(
        description="Meter address: the 14 digits printed on the meter (A6..A0); quote it in YAML"
    )
    meter_type: MeterKind = Field(
        "cold_water",
        description="Meter type T: cold_water (10H), hot_water (11H), drinking_water (12H), "
        "reclaimed_water (13H) or gas (30H)",
    )
    di_order: DiOrder = Field(
        "little",
        description="DI byte order: little (DI0 first, as the standard says) or big (some "
        "makers); the meters of one serial server must agree",
    )
    timeout_s: float = Field(
        2.0, gt=0, description="Wait this long for each answer (a 2400 bps meter wakes slowly)"
    )

    @field_validator("address", mode="before")
    @classmethod
    def _address(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            # YAML reads 00000000000001 as an octal number and 78330011223344 as a decimal one.
            raise ValueError(f'read as the number {value}: quote it, e.g. "00000000000001"')
        if isinstance(value, str) and not _ADDRESS.fullmatch(value):
            raise ValueError(f"must be 14 digits (A6..A0, as printed on the meter), got {value!r}")
        return value


class Cjt188MeterConfig(Cjt188Link):
    id: str = Field(description="Device id, as in the edge config's devices list")
    profile: str = Field(description="Device profile kind; the profile needs a total field")


# to_reading()'s names that the meter profiles spell otherwise. Any other value whose name the
# profile declares (say settlement_m3 or battery_low, once a profile adds them) passes as it is.
PROFILE_NAMES = {"cumulative_m3": "total"}
# ST's valve bits 11 ("abnormal") are what the profiles, and the valve_fault rules, call fault.
VALVE_STATES = {"abnormal": "fault"}


def profile_values(values: Mapping[str, Any], profile: DeviceProfile) -> dict[str, Value]:
    """A to_reading() record's values under the profile's field names; the rest is dropped."""
    out: dict[str, Value] = {}
    for name, value in values.items():
        field_name = PROFILE_NAMES.get(name, name)
        if name == "valve":
            value = VALVE_STATES.get(value, value)
        if field_name in profile.fields and value is not None:
            out[field_name] = value
    return out


# How a client error counts in the poller: the first class that matches gives the reason label
# (as Modbus's where the meaning is the same), the kind and whether another attempt may help.
_FAILURES: tuple[tuple[type[Cjt188Error], str, type[DeviceError], bool], ...] = (
    (Cjt188Timeout, "timeout", DeviceUnavailable, True),
    (Cjt188ConnectFailed, "connect_failed", DeviceUnavailable, True),
    (Cjt188ConnectionError, "connection_lost", DeviceUnavailable, True),
    (ChecksumError, "bad_checksum", DecodeError, True),
    (FrameError, "garbage", DecodeError, True),
    (UnexpectedResponse, "wrong_address", DecodeError, True),
    (FieldError, "bad_field", DecodeError, True),
    # The meter refused, or answers in a layout or DI order this codec does not read.
    (MeterErrorResponse, "error_response", DecodeError, False),
    (UnsupportedResponse, "unsupported", DecodeError, False),
)


def device_error(device: str, err: Cjt188Error) -> DeviceError:
    """The poller's view of a client error; the raw frames travel with it."""
    reason, retryable = "error", True
    kind: type[DeviceError] = DecodeError
    for cls, cls_reason, cls_kind, cls_retryable in _FAILURES:
        if isinstance(err, cls):
            reason, kind, retryable = cls_reason, cls_kind, cls_retryable
            break
    error = kind(device, reason, err.message, err.frames)
    error.retryable = retryable
    return error


@dataclass(slots=True, eq=False, kw_only=True)
class _Meter(PolledDevice[Cjt188MeterConfig]):
    meter_type: int
    client: Cjt188Client | None = None


class Cjt188Poller(Poller[_Meter]):
    """Polls CJ/T 188 meters on the shared scheduler, one Cjt188Client per serial server.

    Callbacks run in the event loop and must not block. A meter is assumed available until
    `unavailable_after` consecutive polls fail; each change is reported and logged once.
    """

    label = "CJ/T 188"
    logger = log

    def __init__(
        self,
        meters: Sequence[Cjt188MeterConfig],
        profiles: Mapping[str, DeviceProfile],
        on_reading: OnReading,
        on_availability: OnAvailability,
        *,
        rng: random.Random | None = None,
    ) -> None:
        devices: dict[str, _Meter] = {}
        addresses: dict[tuple[str, int, str], str] = {}
        lines: dict[tuple[str, int], Cjt188MeterConfig] = {}
        for cfg in meters:
            where = f"CJ/T 188 meter {cfg.id!r}"
            if cfg.id in devices:
                raise ConfigError(f"{where}: duplicate device id")
            profile = profiles.get(cfg.profile)
            if profile is None:
                raise ConfigError(f"{where}: profile: unknown profile {cfg.profile!r}")
            if "total" not in profile.fields:
                raise ConfigError(
                    f"{where}: profile: {cfg.profile!r} has no total field for the volume"
                )
            first = lines.setdefault((cfg.host, cfg.port), cfg)
            if cfg.di_order != first.di_order:
                raise ConfigError(
                    f"{where}: di_order: {cfg.di_order!r}, but {first.id!r} on the same serial "
                    f"server has {first.di_order!r}"
                )
            key = (cfg.host, cfg.port, cfg.address)
            if key in addresses:
                raise ConfigError(
                    f"{where}: address: same serial server and address as {addresses[key]!r}"
                )
            addresses[key] = cfg.id
            devices[cfg.id] = _Meter(
                id=cfg.id,
                config=cfg,
                profile=profile,
                meter_type=MeterType[cfg.meter_type.upper()],
            )
        super().__init__(list(devices.values()), on_reading, on_availability, rng=rng)
        self._clients: dict[tuple[str, int], Cjt188Client] = {}

    # -- the protocol's part of the shared poller ------------------------------------------------

    def _open(self) -> list[list[_Meter]]:
        by_line: dict[tuple[str, int], list[_Meter]] = {}
        for meter in self._devices.values():
            by_line.setdefault((meter.config.host, meter.config.port), []).append(meter)
        for (host, port), meters in by_line.items():
            longest = max(m.config.timeout_s for m in meters)
            client = self._clients[(host, port)] = Cjt188Client(
                host,
                port,
                timeout_s=longest,  # each read passes its meter's own timeout_s
                connect_timeout_s=longest,
                retries=0,  # retries are the poller's, with jitter and counters
                history=max(m.config.frames_kept for m in meters),
                di_order=meters[0].config.di_order,
                log_availability=False,
            )
            for meter in meters:
                meter.client = client
        log.info(
            "CJ/T 188 polling %d meters on %d serial servers", len(self._devices), len(by_line)
        )
        return list(by_line.values())

    async def _close(self) -> None:
        clients = list(self._clients.values())
        self._clients.clear()
        # Each meter keeps its closed client, whose frames diagnostics() still shows.
        for client in clients:
            await client.close()

    async def _read(self, m: _Meter) -> Sample:
        client = m.client
        assert client is not None, "poller not started"
        cfg = m.config
        m.counters.requests += 1
        self.counters.requests += 1
        try:
            answer = await client.read_data(
                cfg.address, meter_type=m.meter_type, timeout_s=cfg.timeout_s
            )
        except Cjt188Error as err:
            raise device_error(m.id, err) from err
        reading = to_reading(answer, device=m.id, reading_id=new_id(), ts=now_ms())
        return Sample(replace(reading, values=profile_values(reading.values, m.profile)))

    def _where(self, m: _Meter) -> dict[str, Any]:
        cfg = m.config
        return {"bus": f"cjt188://{cfg.host}:{cfg.port}", "address": cfg.address}

    def _frames(self, m: _Meter) -> Sequence[RawFrame]:
        if m.client is None:
            return ()
        return m.client.frames(m.config.address)[-m.config.frames_kept :]
