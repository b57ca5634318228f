"""Modbus register maps: typed, scaled fields over 16-bit registers, their codecs and read plans."""

from __future__ import annotations

import itertools
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Literal

from pydantic import Field, model_validator

from shouwang.config import Strict

RegisterType = Literal["int16", "uint16", "int32", "uint32", "float32"]
Function = Literal["holding", "input"]
Order = Literal["big", "little"]
Value = int | float | str

MAX_ADDRESS = 65535
# The Modbus spec caps function codes 3 and 4 at 125 registers per request.
MAX_REGISTERS_PER_READ = 125

WIDTH: dict[str, int] = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2}
_STRUCT: dict[str, str] = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "float32": "f"}
_INT_RANGE: dict[str, tuple[int, int]] = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
}


class RegisterDecodeError(ValueError):
    """Registers that cannot become a field value; `reason` is a short label for counters."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class RegisterField(Strict):
    address: int = Field(ge=0, le=MAX_ADDRESS, description="First register, 0-based as on the wire")
    function: Function = Field(
        "holding", description="holding (function code 3) or input (function code 4) registers"
    )
    type: RegisterType = Field(description="Encoding of the raw value")
    count: int | None = Field(
        None,
        ge=1,
        description="Registers the value spans; implied by type, and refused when it disagrees",
    )
    word_order: Order = Field(
        "big", description="big: the first register holds the most significant word"
    )
    byte_order: Order = Field(
        "big", description="big: each register's high byte comes first (the Modbus default)"
    )
    scale: float = Field(1.0, description="value = raw * scale + offset")
    offset: float = Field(0.0, description="value = raw * scale + offset")
    mask: int | None = Field(
        None, ge=1, description="Bits of an unsigned raw value that carry this field (status words)"
    )
    enum: dict[int, str] | None = Field(
        None, description="Raw code to label, for state registers such as a valve"
    )
    unit: str | None = Field(None, description="Unit of the scaled value, e.g. m³")
    description: str = Field("", description="What the register holds")

    @property
    def width(self) -> int:
        return WIDTH[self.type]

    @property
    def end(self) -> int:
        """One past the last register the field occupies."""
        return self.address + self.width

    @property
    def is_identity(self) -> bool:
        return self.scale == 1.0 and self.offset == 0.0

    @model_validator(mode="after")
    def _consistent(self) -> RegisterField:
        if self.count is not None and self.count != self.width:
            raise ValueError(f"{self.type} needs {self.width} register(s), count says {self.count}")
        if self.end - 1 > MAX_ADDRESS:
            raise ValueError(f"{self.type} at {self.address} runs past register {MAX_ADDRESS}")
        if not (math.isfinite(self.scale) and math.isfinite(self.offset)) or self.scale == 0:
            raise ValueError("scale must be finite and non-zero, offset finite")
        if self.mask is not None:
            if self.type not in ("uint16", "uint32"):
                raise ValueError(f"mask needs an unsigned integer type, not {self.type}")
            if self.mask > _INT_RANGE[self.type][1]:
                raise ValueError(f"mask {self.mask:#x} is wider than {self.type}")
        if self.enum is not None:
            if self.type == "float32":
                raise ValueError("enum needs an integer type, not float32")
            if not self.is_identity:
                raise ValueError("enum codes are raw values: leave scale and offset at 1 and 0")
            if not self.enum:
                raise ValueError("enum must list at least one code")
            if len(set(self.enum.values())) != len(self.enum):
                raise ValueError("enum labels must be distinct")
        return self


class ModbusMap(Strict):
    fields: dict[str, RegisterField] = Field(
        min_length=1, description="Register fields by profile field name"
    )
    max_registers_per_read: int = Field(
        MAX_REGISTERS_PER_READ,
        ge=1,
        le=MAX_REGISTERS_PER_READ,
        description="Largest read the meter accepts (some accept far fewer than 125)",
    )
    max_read_gap: int = Field(
        0,
        ge=0,
        le=MAX_REGISTERS_PER_READ - 2,
        description="Unmapped registers one read may span to save a request; 0 for meters that "
        "refuse reads of undefined registers",
    )

    @model_validator(mode="after")
    def _no_overlap(self) -> ModbusMap:
        for name, f in self.fields.items():
            if f.width > self.max_registers_per_read:
                raise ValueError(
                    f"field {name!r}: {f.type} does not fit in max_registers_per_read "
                    f"{self.max_registers_per_read}"
                )
        for function in ("holding", "input"):
            ranked = sorted(
                ((f.address, name, f) for name, f in self.fields.items() if f.function == function)
            )
            for (_, prev_name, prev), (_, name, f) in itertools.pairwise(ranked):
                if f.address < prev.end:
                    raise ValueError(
                        f"fields {prev_name!r} and {name!r} overlap at {function} register "
                        f"{f.address}"
                    )
        return self


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One read of `count` registers from `address`, covering `fields` (in address order)."""

    function: Function
    address: int
    count: int
    fields: tuple[str, ...]


def plan_reads(rmap: ModbusMap) -> list[ReadRequest]:
    """The fewest contiguous reads that cover every field, holding registers first."""
    plan: list[ReadRequest] = []
    for function in ("holding", "input"):
        ranked = sorted(
            (f.address, name, f) for name, f in rmap.fields.items() if f.function == function
        )
        start = end = 0
        names: list[str] = []
        for _, name, f in ranked:
            # Greedy extension is optimal: any sub-run of a feasible run is feasible.
            if (
                names
                and f.address - end <= rmap.max_read_gap
                and f.end - start <= rmap.max_registers_per_read
            ):
                names.append(name)
                end = f.end
                continue
            if names:
                plan.append(ReadRequest(function, start, end - start, tuple(names)))
            start, end, names = f.address, f.end, [name]
        if names:
            plan.append(ReadRequest(function, start, end - start, tuple(names)))
    return plan


def _to_bytes(registers: Sequence[int], word_order: Order, byte_order: Order) -> bytes:
    words = list(registers)
    if word_order == "little":
        words.reverse()
    return b"".join(w.to_bytes(2, byte_order) for w in words)


def _from_bytes(data: bytes, word_order: Order, byte_order: Order) -> list[int]:
    words = [int.from_bytes(data[i : i + 2], byte_order) for i in range(0, len(data), 2)]
    if word_order == "little":
        words.reverse()
    return words


def registers_to_raw(
    type_: RegisterType,
    registers: Sequence[int],
    word_order: Order = "big",
    byte_order: Order = "big",
) -> int | float:
    """The raw number `registers` encode, before scale and offset."""
    width = WIDTH[type_]
    if len(registers) != width:
        raise RegisterDecodeError(
            "short_response", f"{type_} needs {width} register(s), got {len(registers)}"
        )
    for r in registers:
        if not 0 <= r <= 0xFFFF:
            raise RegisterDecodeError("bad_register", f"{r!r} is not a 16-bit register value")
    value: int | float = struct.unpack(
        ">" + _STRUCT[type_], _to_bytes(registers, word_order, byte_order)
    )[0]
    return value


def raw_to_registers(
    type_: RegisterType,
    raw: int | float,
    word_order: Order = "big",
    byte_order: Order = "big",
) -> list[int]:
    """The registers that encode `raw`; ValueError when it does not fit the type."""
    if type_ == "float32":
        try:
            data = struct.pack(">f", raw)
        except OverflowError as err:
            raise ValueError(f"{raw!r} does not fit float32") from err
    else:
        if not isinstance(raw, int) or isinstance(raw, bool):
            raise ValueError(f"{type_} needs an integer, got {raw!r}")
        lo, hi = _INT_RANGE[type_]
        if not lo <= raw <= hi:
            raise ValueError(f"{raw} does not fit {type_} ({lo}..{hi})")
        data = struct.pack(">" + _STRUCT[type_], raw)
    return _from_bytes(data, word_order, byte_order)


def decode(f: RegisterField, registers: Sequence[int]) -> Value:
    """The field's value: an enum label, or raw * scale + offset.

    Integer types with no scaling stay int; scaled values are the float nearest the exact
    decimal result (raw 123456 at scale 0.01 is 1234.56, not 1234.5600000000002).
    """
    raw = registers_to_raw(f.type, registers, f.word_order, f.byte_order)
    if f.mask is not None:
        raw = int(raw) & f.mask
    if f.enum is not None:
        label = f.enum.get(int(raw))
        if label is None:
            raise RegisterDecodeError("unknown_code", f"code {raw} is not one of {sorted(f.enum)}")
        return label
    if f.is_identity or (isinstance(raw, float) and not math.isfinite(raw)):
        return raw
    return float(Decimal(raw) * Decimal(repr(f.scale)) + Decimal(repr(f.offset)))


def encode(f: RegisterField, value: Value) -> list[int]:
    """The registers a meter would hold for `value` (the simulator's side of `decode`)."""
    if f.enum is not None:
        codes = [code for code, label in f.enum.items() if label == value]
        if not codes:
            raise ValueError(f"{value!r} is not one of {sorted(f.enum.values())}")
        raw: int | float = codes[0]
    elif isinstance(value, str | bool):
        raise ValueError(f"{f.type} field needs a number, got {value!r}")
    elif f.is_identity:
        raw = value
    else:
        exact = (Decimal(repr(value)) - Decimal(repr(f.offset))) / Decimal(repr(f.scale))
        if f.type == "float32":
            raw = float(exact)
        else:
            raw = int(exact.to_integral_value(rounding=ROUND_HALF_EVEN))
    if f.type != "float32" and isinstance(raw, float):
        if not raw.is_integer():
            raise ValueError(f"{f.type} field needs an integer, got {value!r}")
        raw = int(raw)
    if f.mask is not None and int(raw) & ~f.mask:
        raise ValueError(f"{raw} has bits outside mask {f.mask:#x}")
    return raw_to_registers(f.type, raw, f.word_order, f.byte_order)


def decode_read(
    rmap: ModbusMap, request: ReadRequest, registers: Sequence[int]
) -> tuple[dict[str, Value], dict[str, RegisterDecodeError]]:
    """Values of the fields one read covers, and the fields that would not decode."""
    if len(registers) != request.count:
        raise RegisterDecodeError(
            "short_response",
            f"{request.function} read at {request.address} wanted {request.count} registers, "
            f"got {len(registers)}",
        )
    values: dict[str, Value] = {}
    errors: dict[str, RegisterDecodeError] = {}
    for name in request.fields:
        f = rmap.fields[name]
        start = f.address - request.address
        try:
            values[name] = decode(f, registers[start : start + f.width])
        except RegisterDecodeError as err:
            errors[name] = err
    return values, errors
