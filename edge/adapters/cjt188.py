"""CJ/T 188-2004 water and gas meters: the frame codec, pure functions without I/O."""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from typing import Literal, NamedTuple

from shouwang.records import Reading

# --- constants of the standard -------------------------------------------------------------

START = 0x68
END = 0x16
PREAMBLE_BYTE = 0xFE
HEADER_LEN = 11  # 68H, T, A0..A6, C, L
# No CJ/T 188-2004 data field comes near this (a heat meter's 901F answer is 46 bytes), so a
# larger L marks a false 68H in line noise: resync at once instead of waiting for bytes.
MAX_DATA_LEN = 100
BROADCAST_ADDRESS = "AAAAAAAAAAAAAA"
ANY_METER_TYPE = 0xAA

RESPONSE_BIT = 0x80  # C bit 7: sent by the meter
ABNORMAL_BIT = 0x40  # C bit 6: the meter could not do what was asked
FUNCTION_MASK = 0x3F


class MeterType(IntEnum):
    """T, the meter type byte (10H-19H water, 20H-29H heat, 30H-39H gas, 40H-49H custom)."""

    COLD_WATER = 0x10
    HOT_WATER = 0x11
    DRINKING_WATER = 0x12
    RECLAIMED_WATER = 0x13
    HEAT = 0x20
    COOLING = 0x21
    GAS = 0x30
    CUSTOM = 0x40


class Function(IntEnum):
    """The function bits of the control code C."""

    READ_DATA = 0x01
    READ_ADDRESS = 0x03
    WRITE_DATA = 0x04


DI_READ_DATA = 0x901F
DI_READ_ADDRESS = 0x810A
DI_VALVE = 0xA017
VALVE_OPEN = 0x55
VALVE_CLOSE = 0x99

UNIT_M3 = 0x2C
UNIT_L = 0x29
UNITS: dict[int, str] = {
    0x01: "J", 0x02: "Wh", 0x05: "kWh", 0x08: "MWh", 0x0A: "MWh*100", 0x0B: "kJ", 0x0E: "MJ",
    0x11: "GJ", 0x13: "GJ*100", 0x14: "W", 0x17: "kW", 0x1A: "MW", 0x29: "L", 0x2C: "m3",
    0x32: "L/h", 0x35: "m3/h",
}  # fmt: skip
_CENTI_PER_M3 = {UNIT_M3: 100, UNIT_L: 100_000}  # flows are hundredths of their unit
READ_DATA_LEN = 22  # DI(2) SER(1) current(4+1) settlement(4+1) time(7) ST(2)

DiOrder = Literal["little", "big"]
ValveState = Literal["open", "closed", "abnormal"]


def hex_text(raw: bytes | bytearray) -> str:
    return raw.hex(" ").upper()


# --- errors --------------------------------------------------------------------------------


class FrameRecord(NamedTuple):
    """One raw exchange on the line, kept for diagnostics."""

    direction: Literal["tx", "rx"]
    hex: str
    t: float  # time.monotonic()


class Cjt188Error(Exception):
    """Any CJ/T 188 failure; `raw` holds the bytes at fault, `frames` the meter's last exchanges."""

    def __init__(self, message: str, *, raw: bytes | bytearray = b"") -> None:
        self.message = message
        self.raw = bytes(raw)
        self.frames: tuple[FrameRecord, ...] = ()
        super().__init__(f"{message} [raw: {hex_text(self.raw)}]" if raw else message)

    @property
    def raw_hex(self) -> str:
        return hex_text(self.raw)


class FrameError(Cjt188Error):
    """The bytes are not one well-formed frame: truncated, bad start or end, bad length."""


class ChecksumError(Cjt188Error):
    """A frame whose CS is not the sum of its bytes from 68H through the data field."""


class FieldError(Cjt188Error):
    """A well-formed frame carries an impossible value, such as a non-BCD digit."""


class UnsupportedResponse(Cjt188Error):
    """A well-formed answer this codec does not decode (control, DI, unit, length or meter type)."""


class MeterErrorResponse(Cjt188Error):
    """The meter answered with the abnormal bit (C bit 6) set: it refused or failed the request."""

    def __init__(self, message: str, *, raw: bytes, ser: int | None, status: int | None) -> None:
        super().__init__(message, raw=raw)
        self.ser = ser
        self.status = status


class UnexpectedResponse(Cjt188Error):
    """A valid answer that does not answer our request (another meter's address)."""


class Cjt188Timeout(Cjt188Error):
    """No answer within the per-request timeout."""


class Cjt188ConnectionError(Cjt188Error):
    """The TCP link to the serial server could not be opened or was lost."""


class Cjt188ConnectFailed(Cjt188ConnectionError):
    """The TCP link to the serial server could not be opened: refused, unreachable, timed out."""


# --- frames --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame; `address` is the 14 hex digits A6..A0 as printed on the meter."""

    meter_type: int
    address: str
    control: int
    data: bytes
    raw: bytes = field(default=b"", compare=False, repr=False)


def checksum(data: bytes | bytearray) -> int:
    return sum(data) & 0xFF


def address_to_wire(address: str) -> bytes:
    if len(address) != 14 or any(c not in string.hexdigits for c in address):
        raise ValueError(f"meter address must be 14 hex digits (A6..A0), got {address!r}")
    return bytes.fromhex(address)[::-1]  # low byte first on the line


def address_from_wire(wire: bytes | bytearray) -> str:
    return bytes(wire[::-1]).hex().upper()


def encode_frame(frame: Frame, *, preamble: int = 0) -> bytes:
    if not 0 <= len(frame.data) <= 0xFF:
        raise ValueError(f"data field of {len(frame.data)} bytes does not fit L (one byte)")
    body = (
        bytes((START, frame.meter_type))
        + address_to_wire(frame.address)
        + bytes((frame.control, len(frame.data)))
        + frame.data
    )
    return bytes((PREAMBLE_BYTE,)) * preamble + body + bytes((checksum(body), END))


def _judge(buf: bytes | bytearray, start: int) -> Frame | Cjt188Error | int:
    """The bytes from one 68H: a frame, why they are not one, or the total length still needed."""
    if len(buf) - start < HEADER_LEN:
        return HEADER_LEN
    length = buf[start + 10]
    if length > MAX_DATA_LEN:
        header = bytes(buf[start : start + HEADER_LEN])
        return FrameError(f"bad length: L={length} exceeds {MAX_DATA_LEN}", raw=header)
    total = HEADER_LEN + length + 2
    if len(buf) - start < total:
        return total
    raw = bytes(buf[start : start + total])
    if raw[-1] != END:
        return FrameError(f"bad end: byte {total - 1} is {raw[-1]:02X}H, expected 16H", raw=raw)
    expected = checksum(raw[:-2])
    if raw[-2] != expected:
        return ChecksumError(
            f"bad checksum: frame carries {raw[-2]:02X}H, sum of 68H..data is {expected:02X}H",
            raw=raw,
        )
    return Frame(raw[1], address_from_wire(raw[2:9]), raw[9], raw[11:-2], raw)


def decode_frame(raw: bytes | bytearray) -> Frame:
    """Decode exactly one frame; FE preamble or other bytes before 68H are skipped."""
    start = raw.find(START)
    if start < 0:
        raise FrameError(f"bad start: no 68H in {len(raw)} bytes", raw=raw)
    result = _judge(raw, start)
    if isinstance(result, int):
        have = len(raw) - start
        raise FrameError(f"truncated: frame needs {result} bytes from 68H, got {have}", raw=raw)
    if isinstance(result, Cjt188Error):
        raise result
    trailing = len(raw) - start - len(result.raw)
    if trailing:
        raise FrameError(f"{trailing} bytes after the end byte 16H", raw=raw)
    return result


class FrameReader:
    """Pulls frames out of a byte stream: skips preamble and noise, resyncs past false 68H."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.noise = 0  # bytes dropped that were neither preamble nor part of a frame
        self.last_rejection: Cjt188Error | None = None

    def clear(self) -> None:
        self._buf.clear()
        self.noise = 0
        self.last_rejection = None

    @property
    def pending(self) -> bytes:
        return bytes(self._buf)

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_frame(self) -> Frame | None:
        """The next whole frame, or None until more bytes arrive.

        Raises ChecksumError for a frame whose start, length and end all hold but whose sum does
        not: that is a real frame damaged on the line, not noise to resync past.
        """
        while True:
            start = self._buf.find(START)
            dropped = self._buf[: len(self._buf) if start < 0 else start]
            self.noise += sum(1 for b in dropped if b != PREAMBLE_BYTE)
            del self._buf[: len(dropped)]
            if start < 0:
                return None
            result = _judge(self._buf, 0)
            if isinstance(result, int):
                return None
            if isinstance(result, ChecksumError):
                del self._buf[: len(result.raw)]
                raise result
            if isinstance(result, Cjt188Error):
                # A 68H inside noise: drop it and look for the next one.
                self.last_rejection = result
                self.noise += 1
                del self._buf[:1]
                continue
            del self._buf[: len(result.raw)]
            return result


# --- data field ----------------------------------------------------------------------------


def _di_to_wire(di: int, order: DiOrder) -> bytes:
    return di.to_bytes(2, order)


def _di_from_wire(wire: bytes, order: DiOrder) -> int:
    return int.from_bytes(wire[:2], order)


def bcd_encode(value: int, length: int) -> bytes:
    """Little-endian BCD: the first byte holds the two lowest digits."""
    digits = f"{value:0{length * 2}d}"
    if value < 0 or len(digits) > length * 2:
        raise ValueError(f"{value} does not fit {length} BCD bytes")
    return bytes.fromhex(digits)[::-1]


def bcd_decode(wire: bytes, *, what: str, raw: bytes = b"") -> int:
    text = wire[::-1].hex()
    if not text.isdigit():
        raise FieldError(f"{what}: {hex_text(wire)} is not BCD", raw=raw or wire)
    return int(text)


def _time_to_wire(when: datetime | None) -> bytes:
    # The standard writes the field YYYYMMDDhhmmss; like every multi-byte field it goes low
    # byte first, so the seconds lead on the line.
    if when is None:
        return bytes(7)
    return bytes.fromhex(f"{when:%Y%m%d%H%M%S}")[::-1]


def _time_from_wire(wire: bytes) -> datetime | None:
    """The meter's clock, or None when it is unset or not a date (the flow reading still counts)."""
    text = wire[::-1].hex()
    if not text.isdigit() or int(text) == 0:
        return None
    try:
        return datetime.strptime(text, "%Y%m%d%H%M%S")
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class MeterStatus:
    """ST: bits D0-D1 valve (00 open, 01 closed, 11 abnormal), D2 battery low; the rest vendor's."""

    raw: int  # both bytes, the first on the line as the low byte

    @classmethod
    def of(cls, valve: ValveState, battery_low: bool = False, vendor: int = 0) -> MeterStatus:
        bits = {"open": 0b00, "closed": 0b01, "abnormal": 0b11}[valve]
        return cls((vendor & ~0x07 & 0xFFFF) | bits | (0x04 if battery_low else 0))

    @property
    def valve(self) -> ValveState:
        bits = self.raw & 0x03
        # 10 is undefined in the standard; report it as abnormal rather than guess.
        return "open" if bits == 0 else "closed" if bits == 1 else "abnormal"

    @property
    def battery_low(self) -> bool:
        return bool(self.raw & 0x04)

    def to_wire(self) -> bytes:
        return self.raw.to_bytes(2, "little")


@dataclass(frozen=True, slots=True)
class Request:
    """A master's request as a meter sees it."""

    meter_type: int
    address: str
    control: int
    di: int
    ser: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class ReadDataResponse:
    """A water or gas meter's answer to 901FH; flows are in hundredths of their unit."""

    meter_type: int
    address: str
    ser: int
    current_centi: int
    current_unit: int
    settlement_centi: int
    settlement_unit: int
    meter_time: datetime | None
    status: MeterStatus

    @property
    def cumulative_m3(self) -> float:
        return self.current_centi / _CENTI_PER_M3[self.current_unit]

    @property
    def settlement_m3(self) -> float:
        return self.settlement_centi / _CENTI_PER_M3[self.settlement_unit]


@dataclass(frozen=True, slots=True)
class ReadAddressResponse:
    meter_type: int
    address: str
    ser: int


@dataclass(frozen=True, slots=True)
class ValveResponse:
    meter_type: int
    address: str
    ser: int
    status: MeterStatus


Response = ReadDataResponse | ReadAddressResponse | ValveResponse


def _request(
    function: Function,
    meter_type: int,
    address: str,
    di: int,
    ser: int,
    payload: bytes,
    order: DiOrder,
) -> Frame:
    data = _di_to_wire(di, order) + bytes((ser,)) + payload
    return Frame(meter_type, address, int(function), data)


def read_data_request(
    address: str,
    *,
    meter_type: int = MeterType.COLD_WATER,
    ser: int = 0,
    di_order: DiOrder = "little",
) -> Frame:
    return _request(Function.READ_DATA, meter_type, address, DI_READ_DATA, ser, b"", di_order)


def read_address_request(
    address: str = BROADCAST_ADDRESS,
    *,
    meter_type: int = ANY_METER_TYPE,
    ser: int = 0,
    di_order: DiOrder = "little",
) -> Frame:
    """Ask the one meter on the line (broadcast address) or a given meter for its address."""
    return _request(Function.READ_ADDRESS, meter_type, address, DI_READ_ADDRESS, ser, b"", di_order)


def valve_request(
    address: str,
    open_valve: bool,
    *,
    meter_type: int = MeterType.COLD_WATER,
    ser: int = 0,
    di_order: DiOrder = "little",
) -> Frame:
    command = bytes((VALVE_OPEN if open_valve else VALVE_CLOSE,))
    return _request(Function.WRITE_DATA, meter_type, address, DI_VALVE, ser, command, di_order)


def parse_request(frame: Frame, *, di_order: DiOrder = "little") -> Request:
    if frame.control & RESPONSE_BIT:
        raise UnsupportedResponse(f"control {frame.control:02X}H is a response", raw=frame.raw)
    if len(frame.data) < 3:
        raise FrameError(
            f"bad length: data field of {len(frame.data)} bytes has no DI and SER", raw=frame.raw
        )
    return Request(
        frame.meter_type,
        frame.address,
        frame.control,
        _di_from_wire(frame.data, di_order),
        frame.data[2],
        frame.data[3:],
    )


def encode_response(resp: Response, *, di_order: DiOrder = "little") -> Frame:
    """The meter's side, for simulators and tests."""
    match resp:
        case ReadDataResponse():
            function, di = Function.READ_DATA, DI_READ_DATA
            payload = (
                bcd_encode(resp.current_centi, 4)
                + bytes((resp.current_unit,))
                + bcd_encode(resp.settlement_centi, 4)
                + bytes((resp.settlement_unit,))
                + _time_to_wire(resp.meter_time)
                + resp.status.to_wire()
            )
        case ReadAddressResponse():
            function, di, payload = Function.READ_ADDRESS, DI_READ_ADDRESS, b""
        case ValveResponse():
            function, di, payload = Function.WRITE_DATA, DI_VALVE, resp.status.to_wire()
    data = _di_to_wire(di, di_order) + bytes((resp.ser,)) + payload
    return Frame(resp.meter_type, resp.address, RESPONSE_BIT | function, data)


def error_response(request: Frame, ser: int, status: MeterStatus) -> Frame:
    """The abnormal answer: C with bits 7 and 6 set, data SER and ST."""
    control = RESPONSE_BIT | ABNORMAL_BIT | (request.control & FUNCTION_MASK)
    return Frame(request.meter_type, request.address, control, bytes((ser,)) + status.to_wire())


# The answers this codec decodes: function -> (DI, length of the data field).
_ANSWERS: dict[int, tuple[int, int]] = {
    Function.READ_DATA: (DI_READ_DATA, READ_DATA_LEN),
    Function.READ_ADDRESS: (DI_READ_ADDRESS, 3),
    Function.WRITE_DATA: (DI_VALVE, 5),
}


def decode_response(frame: Frame, *, di_order: DiOrder = "little") -> Response:
    """Decode a meter's answer; an abnormal answer raises MeterErrorResponse."""
    control = frame.control
    if not control & RESPONSE_BIT:
        raise UnsupportedResponse(
            f"control {control:02X}H is a request, not a response", raw=frame.raw
        )
    if control & ABNORMAL_BIT:
        ser = frame.data[0] if frame.data else None
        status = int.from_bytes(frame.data[1:3], "little") if len(frame.data) >= 3 else None
        shown = "?" if status is None else f"{status:04X}H"
        raise MeterErrorResponse(
            f"meter {frame.address} answered {control:02X}H (abnormal) to function "
            f"{control & FUNCTION_MASK:02X}H, SER {ser}, ST {shown}",
            raw=frame.raw,
            ser=ser,
            status=status,
        )
    function = control & FUNCTION_MASK
    if function not in _ANSWERS:
        raise UnsupportedResponse(
            f"control {control:02X}H is not a supported answer", raw=frame.raw
        )
    expected_di, expected_len = _ANSWERS[function]
    if function == Function.READ_DATA and not _is_water_or_gas(frame.meter_type):
        raise UnsupportedResponse(
            f"meter type {frame.meter_type:02X}H: only the water/gas 901FH layout is supported",
            raw=frame.raw,
        )
    data = frame.data
    if len(data) != expected_len:
        raise UnsupportedResponse(
            f"control {control:02X}H with {len(data)} data bytes; expected {expected_len}",
            raw=frame.raw,
        )
    di = _di_from_wire(data, di_order)
    if di != expected_di:
        other = _di_from_wire(data, "big" if di_order == "little" else "little")
        raise UnsupportedResponse(
            f"DI {di:04X}H (read {di_order}-endian; {other:04X}H the other way) "
            f"is not {expected_di:04X}H for control {control:02X}H",
            raw=frame.raw,
        )
    ser = data[2]
    if function == Function.READ_ADDRESS:
        return ReadAddressResponse(frame.meter_type, frame.address, ser)
    if function == Function.WRITE_DATA:
        return ValveResponse(frame.meter_type, frame.address, ser, _status(data[3:5]))
    units = (data[7], data[12])
    for unit in units:
        if unit not in _CENTI_PER_M3:
            name = UNITS.get(unit, "unknown")
            raise UnsupportedResponse(
                f"flow unit {unit:02X}H ({name}) is not a volume", raw=frame.raw
            )
    return ReadDataResponse(
        meter_type=frame.meter_type,
        address=frame.address,
        ser=ser,
        current_centi=bcd_decode(data[3:7], what="current cumulative flow", raw=frame.raw),
        current_unit=units[0],
        settlement_centi=bcd_decode(data[8:12], what="settlement-day flow", raw=frame.raw),
        settlement_unit=units[1],
        meter_time=_time_from_wire(data[13:20]),
        status=_status(data[20:22]),
    )


def _status(wire: bytes) -> MeterStatus:
    return MeterStatus(int.from_bytes(wire, "little"))


def _is_water_or_gas(meter_type: int) -> bool:
    return 0x10 <= meter_type <= 0x19 or 0x30 <= meter_type <= 0x39


def to_reading(resp: ReadDataResponse, *, device: str, reading_id: str, ts: int) -> Reading:
    """The canonical record for one read-data answer."""
    return Reading(
        id=reading_id,
        device=device,
        ts=ts,
        values={
            "cumulative_m3": resp.cumulative_m3,
            "settlement_m3": resp.settlement_m3,
            "valve": resp.status.valve,
            "battery_low": resp.status.battery_low,
            "status_raw": resp.status.raw,
            "meter_time": None if resp.meter_time is None else resp.meter_time.isoformat(),
            "meter_type": resp.meter_type,
            "address": resp.address,
        },
    )
