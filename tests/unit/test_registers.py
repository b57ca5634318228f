"""Register maps: exact decoding of every type and order, scaling, read plans, refused maps."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from pymodbus.client import AsyncModbusTcpClient

from shouwang.config import ConfigError, validate
from shouwang.profiles import DeviceProfile, load_profiles
from shouwang.registers import (
    WIDTH,
    ModbusMap,
    ReadRequest,
    RegisterDecodeError,
    RegisterField,
    decode,
    decode_read,
    encode,
    plan_reads,
    raw_to_registers,
    registers_to_raw,
)

TYPES = ("int16", "uint16", "int32", "uint32", "float32")
ORDERS = [("big", "big"), ("little", "big"), ("big", "little"), ("little", "little")]


def field(**kw: Any) -> RegisterField:
    return RegisterField.model_validate({"address": 0, **kw})


# (type, word_order, byte_order, registers, value), worked out by hand from the bytes.
DECODE_CASES = [
    ("uint16", "big", "big", [0x1234], 4660),
    ("uint16", "big", "little", [0x1234], 13330),  # bytes 34 12
    ("int16", "big", "big", [0x85FF], -31233),  # 0x85FF - 0x10000
    ("int16", "big", "little", [0x85FF], -123),  # bytes FF 85
    ("uint32", "big", "big", [0x0001, 0x0002], 65538),  # ABCD 0x00010002
    ("uint32", "little", "big", [0x0001, 0x0002], 131073),  # CDAB 0x00020001
    ("uint32", "big", "little", [0x0001, 0x0002], 16777728),  # BADC 0x01000200
    ("uint32", "little", "little", [0x0001, 0x0002], 33554688),  # DCBA 0x02000100
    ("int32", "big", "big", [0xFFFF, 0xFF85], -123),  # 0xFFFFFF85
    ("int32", "little", "big", [0xFFFF, 0xFF85], -7995393),  # 0xFF85FFFF
    ("int32", "big", "little", [0xFFFF, 0x85FF], -123),
    ("int32", "little", "little", [0x85FF, 0xFFFF], -123),
    ("float32", "big", "big", [0x3F80, 0x0000], 1.0),
    # -123.25 = -1.11101101b x 2^6: sign 1, exponent 133, so 0xC2F68000 in ABCD order.
    ("float32", "big", "big", [0xC2F6, 0x8000], -123.25),
    ("float32", "little", "big", [0x8000, 0xC2F6], -123.25),
    ("float32", "big", "little", [0xF6C2, 0x0080], -123.25),
    ("float32", "little", "little", [0x0080, 0xF6C2], -123.25),
    # The Xintai manual's example reply 1E 85 0B 3F (DCBA) is 0x3F0B851E, which it prints
    # rounded as 0.545 m³/h: exponent 126, mantissa 0x0B851E, so 1.0899999 x 2^-1.
    ("float32", "little", "little", [0x1E85, 0x0B3F], 0.5449999570846558),
]


@pytest.mark.parametrize(("type_", "word", "byte", "registers", "value"), DECODE_CASES)
def test_decode_exact(type_: str, word: str, byte: str, registers: list[int], value: Any) -> None:
    f = field(type=type_, word_order=word, byte_order=byte)
    result = decode(f, registers)
    assert result == value
    assert type(result) is type(value)
    assert encode(f, value) == registers


@pytest.mark.parametrize("type_", ["int16", "uint16", "int32", "uint32", "float32"])
@pytest.mark.parametrize("word", ["big", "little"])
def test_decode_agrees_with_pymodbus(type_: str, word: str) -> None:
    """pymodbus's own converter (big-endian bytes only) is an independent oracle."""
    registers = [0xC2F6, 0x8000][: WIDTH[type_]]
    dtype = getattr(AsyncModbusTcpClient.DATATYPE, type_.upper())
    expected = AsyncModbusTcpClient.convert_from_registers(registers, dtype, word_order=word)
    assert registers_to_raw(type_, registers, word, "big") == expected  # type: ignore[arg-type]


def test_scale_and_offset_give_the_exact_decimal() -> None:
    total = field(type="uint32", scale=0.01)
    assert decode(total, [0x0001, 0xE240]) == 1234.56  # raw 123456, not 1234.5600000000002
    temp = field(type="int16", scale=0.1)
    assert decode(temp, [0xFFDD]) == -3.5  # raw -35
    kelvin = field(type="uint16", scale=0.1, offset=-273.15)
    assert decode(kelvin, [0x0AAB]) == -0.05  # raw 2731: 273.1 - 273.15
    assert encode(kelvin, -0.05) == [0x0AAB]
    litres = field(type="uint32", scale=0.001)
    assert encode(litres, 4321.987) == [0x0041, 0xF2C3]  # raw 4321987
    assert decode(litres, [0x0041, 0xF2C3]) == 4321.987


def test_unscaled_integers_stay_int_and_scaled_become_float() -> None:
    assert decode(field(type="uint16"), [87]) == 87
    assert isinstance(decode(field(type="uint16"), [87]), int)
    assert isinstance(decode(field(type="uint16", scale=10), [87]), float)
    assert decode(field(type="uint16", scale=10), [87]) == 870.0


def test_mask_and_enum() -> None:
    valve = field(type="uint16", mask=0x0007, enum={1: "open", 2: "closed", 4: "fault"})
    assert decode(valve, [0x0009]) == "open"  # open, with the low-battery bit 8 masked off
    assert decode(valve, [0x0002]) == "closed"
    with pytest.raises(RegisterDecodeError, match="code 3 is not one of") as err:
        decode(valve, [0x0003])
    assert err.value.reason == "unknown_code"
    assert encode(valve, "fault") == [0x0004]
    with pytest.raises(ValueError, match="'ajar' is not one of"):
        encode(valve, "ajar")


def test_wrong_register_count_is_a_short_response() -> None:
    with pytest.raises(RegisterDecodeError, match="uint32 needs 2 register") as err:
        registers_to_raw("uint32", [1])
    assert err.value.reason == "short_response"


@pytest.mark.parametrize(
    ("kw", "value", "message"),
    [
        ({"type": "uint16"}, 65536, "does not fit uint16"),
        ({"type": "int16"}, -32769, "does not fit int16"),
        ({"type": "uint32", "scale": 0.001}, -0.001, "does not fit uint32"),
        ({"type": "uint16"}, 1.5, "needs an integer"),
        ({"type": "float32"}, 1e39, "does not fit float32"),
        ({"type": "uint16", "mask": 0x0F}, 16, "outside mask"),
    ],
)
def test_encode_refuses_values_the_register_cannot_hold(
    kw: dict[str, Any], value: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        encode(field(**kw), value)


def mapping(fields: dict[str, dict[str, Any]], **kw: Any) -> ModbusMap:
    return ModbusMap.model_validate({"fields": fields, **kw})


def test_plan_groups_contiguous_fields_per_function() -> None:
    rmap = mapping(
        {
            "a": {"address": 0, "type": "uint32"},
            "b": {"address": 2, "type": "uint16"},
            "c": {"address": 10, "type": "float32"},
            "d": {"address": 0, "function": "input", "type": "int16"},
            "e": {"address": 1, "function": "input", "type": "int16"},
        }
    )
    assert plan_reads(rmap) == [
        ReadRequest("holding", 0, 3, ("a", "b")),
        ReadRequest("holding", 10, 2, ("c",)),
        ReadRequest("input", 0, 2, ("d", "e")),
    ]
    bridged = rmap.model_copy(update={"max_read_gap": 7})
    assert plan_reads(bridged)[0] == ReadRequest("holding", 0, 12, ("a", "b", "c"))
    small = rmap.model_copy(update={"max_registers_per_read": 2})
    assert [r.count for r in plan_reads(small)] == [2, 1, 2, 2]


def test_plan_respects_the_125_register_limit() -> None:
    fits = mapping(
        {"a": {"address": 0, "type": "uint16"}, "b": {"address": 123, "type": "uint32"}},
        max_read_gap=122,
    )
    assert plan_reads(fits) == [ReadRequest("holding", 0, 125, ("a", "b"))]
    too_far = mapping(
        {"a": {"address": 0, "type": "uint16"}, "b": {"address": 124, "type": "uint32"}},
        max_read_gap=123,
    )
    assert plan_reads(too_far) == [
        ReadRequest("holding", 0, 1, ("a",)),
        ReadRequest("holding", 124, 2, ("b",)),
    ]


def test_decode_read_slices_each_field() -> None:
    rmap = mapping(
        {
            "total": {"address": 0, "function": "input", "type": "uint32", "scale": 0.001},
            "valve": {"address": 2, "function": "input", "type": "uint16", "enum": {0: "closed"}},
            "temp": {"address": 3, "function": "input", "type": "int16", "scale": 0.1},
        }
    )
    [req] = plan_reads(rmap)
    values, errors = decode_read(rmap, req, [0x0041, 0xF2C3, 5, 0xFFDD])
    assert values == {"total": 4321.987, "temp": -3.5}
    assert list(errors) == ["valve"]
    assert errors["valve"].reason == "unknown_code"
    with pytest.raises(RegisterDecodeError, match="wanted 4 registers, got 3"):
        decode_read(rmap, req, [0, 0, 0])


def test_shipped_meter_profiles_load_with_their_plans() -> None:
    profiles = load_profiles()
    water, gas = profiles["water_meter"].modbus, profiles["gas_meter"].modbus
    assert water is not None
    assert gas is not None
    assert plan_reads(water) == [
        ReadRequest("holding", 1, 32, ("total", "flow", "battery_voltage", "valve", "battery"))
    ]
    assert plan_reads(gas) == [
        ReadRequest("input", 0, 5, ("total", "valve", "gas_temp", "battery"))
    ]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"total": {"address": 0, "type": "float32", "count": 1}},
            "fields.total: Value error, float32 needs 2 register(s), count says 1",
        ),
        (
            {"total": {"address": 0, "type": "uint32"}, "flow": {"address": 1, "type": "uint16"}},
            "fields 'total' and 'flow' overlap at holding register 1",
        ),
        (
            {"total": {"address": 65535, "type": "uint32"}},
            "fields.total: Value error, uint32 at 65535 runs past register 65535",
        ),
        (
            {"total": {"address": 70000, "type": "uint16"}},
            "fields.total.address: Input should be less than or equal to 65535",
        ),
        ({"t": {"address": 0, "type": "bcd"}}, "fields.t.type: Input should be 'int16'"),
        ({"t": {"address": 0, "type": "int16", "mask": 3}}, "fields.t: Value error, mask needs"),
        (
            {"t": {"address": 0, "type": "float32", "enum": {1: "on"}}},
            "fields.t: Value error, enum needs an integer type",
        ),
        (
            {"t": {"address": 0, "type": "uint16", "scale": 0}},
            "fields.t: Value error, scale must be finite and non-zero",
        ),
        ({"t": {"address": 0, "type": "uint16", "adress": 1}}, "fields.t.adress: unknown key"),
    ],
)
def test_invalid_maps_are_refused_naming_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate({"fields": fields}, ModbusMap, source="meter.yaml")
    assert str(err.value).startswith("meter.yaml: ")
    assert message in str(err.value)


PROFILE = {
    "kind": "meter",
    "description": "test meter",
    "report_interval_s": 60,
    "fields": {
        "total": {"type": "float", "unit": "m³"},
        "valve": {"type": "str", "choices": ["open", "closed"]},
    },
}


@pytest.mark.parametrize(
    ("modbus_fields", "message"),
    [
        ({"flow": {"address": 0, "type": "uint16"}}, "modbus.fields.flow: not declared"),
        ({"valve": {"address": 0, "type": "uint16"}}, "modbus.fields.valve: a str field needs"),
        (
            {"total": {"address": 0, "type": "uint16", "enum": {1: "x"}}},
            "modbus.fields.total: a float field needs a number register",
        ),
        (
            {"valve": {"address": 0, "type": "uint16", "enum": {1: "open", 2: "ajar"}}},
            "modbus.fields.valve: enum labels ['ajar'] not in choices",
        ),
    ],
)
def test_profile_refuses_register_fields_it_does_not_declare(
    modbus_fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        validate(
            {**PROFILE, "modbus": {"fields": modbus_fields}}, DeviceProfile, source="meter.yaml"
        )
    assert str(err.value).startswith("meter.yaml: ")
    assert message in str(err.value)


def test_profile_without_modbus_is_unchanged() -> None:
    assert validate(PROFILE, DeviceProfile, source="meter.yaml").modbus is None


registers_16 = st.integers(min_value=0, max_value=0xFFFF)
orders = st.sampled_from(ORDERS)


@given(type_=st.sampled_from(TYPES), order=orders, data=st.data())
def test_registers_round_trip_through_raw(type_: str, order: tuple[str, str], data: Any) -> None:
    registers = data.draw(st.lists(registers_16, min_size=WIDTH[type_], max_size=WIDTH[type_]))
    raw = registers_to_raw(type_, registers, *order)  # type: ignore[arg-type]
    assume(raw == raw)  # NaN payloads need not survive a float round trip
    assert raw_to_registers(type_, raw, *order) == registers  # type: ignore[arg-type]


@given(
    type_=st.sampled_from(["int16", "uint16", "int32", "uint32"]),
    scale=st.sampled_from([0.1, 0.01, 0.001, 10.0]),
    offset=st.sampled_from([0.0, -273.15, 12.5]),
    order=orders,
    data=st.data(),
)
def test_scaled_integers_round_trip(
    type_: str, scale: float, offset: float, order: tuple[str, str], data: Any
) -> None:
    f = field(type=type_, scale=scale, offset=offset, word_order=order[0], byte_order=order[1])
    registers = data.draw(st.lists(registers_16, min_size=f.width, max_size=f.width))
    assert encode(f, decode(f, registers)) == registers


@given(value=st.floats(width=32, allow_nan=False), order=orders)
def test_float32_values_round_trip(value: float, order: tuple[str, str]) -> None:
    f = field(type="float32", word_order=order[0], byte_order=order[1])
    assert decode(f, encode(f, value)) == value


@given(
    fields=st.lists(
        st.tuples(
            st.integers(0, 300), st.sampled_from(TYPES), st.sampled_from(["holding", "input"])
        ),
        min_size=1,
        max_size=12,
    ),
    gap=st.integers(0, 10),
    limit=st.integers(2, 125),
)
def test_plan_covers_every_field_once_within_limits(
    fields: list[tuple[int, str, str]], gap: int, limit: int
) -> None:
    chosen: dict[str, dict[str, Any]] = {}
    taken: set[tuple[str, int]] = set()
    for i, (address, type_, function) in enumerate(fields):
        cells = {(function, address + k) for k in range(WIDTH[type_])}
        if not cells & taken:
            taken |= cells
            chosen[f"f{i}"] = {"address": address, "type": type_, "function": function}
    rmap = mapping(chosen, max_read_gap=gap, max_registers_per_read=limit)
    plan = plan_reads(rmap)
    covered = [name for req in plan for name in req.fields]
    assert sorted(covered) == sorted(chosen)
    for req in plan:
        assert 1 <= req.count <= limit
        for name in req.fields:
            f = rmap.fields[name]
            assert f.function == req.function
            assert req.address <= f.address
            assert f.end <= req.address + req.count
