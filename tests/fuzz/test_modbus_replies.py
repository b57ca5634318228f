"""Fuzz what a Modbus meter (or a gateway, or anything on its bus) answers the edge.

The adapter checks each raw reply before pymodbus sees it (edge/adapters/modbus.py
`classify_reply`, `late_reply_length`) and turns registers into a profile's values
(shouwang/registers.py `decode_read`, then the profile's checks, edge/adapters/polling.py
`_check`). Whatever arrives: a verdict, never an exception; a damaged reply is never `ok`
where the framing can tell; what is `ok` pymodbus decodes into exactly the registers it
carries; registers become values the profile accepts, or a counted reason per field.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import strategies as st
from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerRTU, FramerSocket
from pymodbus.pdu import DecodePDU

from edge.adapters.modbus import PendingRequest, classify_reply, late_reply_length
from edge.adapters.polling import Sample, _check
from shouwang.profiles import load_profiles
from shouwang.records import Reading
from shouwang.registers import (
    ModbusMap,
    RegisterDecodeError,
    RegisterField,
    decode,
    decode_read,
    encode,
    plan_reads,
    registers_to_raw,
)
from tests.fuzz.harness import fuzz, mutated

PROFILES = load_profiles()
MAPPED = {kind: p for kind, p in PROFILES.items() if p.modbus is not None}
VERDICTS = {"ok", "incomplete", "garbage", "wrong_unit_id"}
FIELD_REASONS = {"short_response", "bad_register", "unknown_code", "unknown_field", "wrong_type",
                 "out_of_range"}
framers = st.sampled_from(["tcp", "rtu_over_tcp"])
pendings = st.builds(PendingRequest, unit=st.integers(0, 255), tid=st.integers(0, 0xFFFF),
                     function_code=st.sampled_from([3, 4]), count=st.integers(1, 125))


def reply(framer: str, p: PendingRequest, registers: list[int], *, unit: int | None = None,
          exception: int | None = None) -> bytes:
    """The reply a meter sends to `p`: its registers, or an exception code."""
    unit = p.unit if unit is None else unit
    if exception is None:
        pdu = bytes((p.function_code, 2 * len(registers))) + b"".join(
            r.to_bytes(2, "big") for r in registers)
    else:
        pdu = bytes((p.function_code | 0x80, exception))
    if framer == "tcp":
        return struct.pack(">HHHB", p.tid, 0, len(pdu) + 1, unit) + pdu
    frame = bytes((unit,)) + pdu
    return frame + FramerRTU.compute_CRC(frame).to_bytes(2, "big")


@st.composite
def replies(draw: st.DrawFn) -> tuple[str, PendingRequest, bytes]:
    framer, p = draw(framers), draw(pendings)
    if draw(st.booleans()):
        data = reply(framer, p, draw(st.lists(st.integers(0, 0xFFFF), min_size=p.count,
                                              max_size=p.count)))
    else:
        data = reply(framer, p, [], exception=draw(st.integers(0, 255)))
    return framer, p, data


@fuzz(framer=framers, pending=pendings, data=st.binary(max_size=300))
def test_any_bytes_get_a_verdict(framer: str, pending: PendingRequest, data: bytes) -> None:
    assert classify_reply(framer, pending, data) in VERDICTS  # type: ignore[arg-type]
    late = late_reply_length(framer, pending, data)  # type: ignore[arg-type]
    assert 0 <= late <= len(data)
    parsed = PendingRequest.parse(framer, data)  # type: ignore[arg-type]
    assert parsed is None or isinstance(parsed, PendingRequest)


@fuzz(case=replies(), other_unit=st.integers(0, 255))
def test_a_whole_reply_is_ok_and_another_units_is_told(
    case: tuple[str, PendingRequest, bytes], other_unit: int
) -> None:
    framer, p, data = case
    assert classify_reply(framer, p, data) == "ok"  # type: ignore[arg-type]
    if other_unit != p.unit:
        registers = [0] * p.count
        stranger = reply(framer, PendingRequest(other_unit, p.tid, p.function_code, p.count),
                         registers)
        assert classify_reply(framer, p, stranger) == "wrong_unit_id"  # type: ignore[arg-type]


@fuzz(case=replies().flatmap(lambda c: st.tuples(st.just(c), mutated(c[2]))))
def test_a_damaged_reply_is_never_taken_where_the_framing_can_tell(
    case: tuple[tuple[str, PendingRequest, bytes], tuple[str, bytes]],
) -> None:
    (framer, p, data), (how, bad) = case
    verdict = classify_reply(framer, p, bad)  # type: ignore[arg-type]
    assert verdict in VERDICTS
    if how == "truncate":
        assert verdict == "incomplete"
    elif how == "extend":
        assert verdict == "garbage"
    elif framer == "rtu_over_tcp":
        # The CRC catches every single-bit error and every lost byte.
        assert verdict in ("garbage", "incomplete"), (how, bad.hex())
    elif how == "flip":
        at = next(i for i, (a, b) in enumerate(zip(data, bad, strict=True)) if a != b)
        exception = data[7] & 0x80
        if at < 6 or at == 7 or (at == 8 and not exception):  # MBAP, function, byte count
            assert verdict != "ok", (at, bad.hex())
        elif at == 6:
            assert verdict == "wrong_unit_id"
        # Register bytes: Modbus TCP has no check of its own (TCP's checksum is the check).


def pymodbus_reads(framer: str, p: PendingRequest, data: bytes) -> Any:
    """What the pymodbus client's own framer makes of `data` as the reply to `p`."""
    decoder = (FramerSocket if framer == "tcp" else FramerRTU)(DecodePDU(False))
    return decoder.handleFrame(data, p.unit, p.tid)


@fuzz(case=replies().flatmap(lambda c: st.tuples(st.just(c), mutated(c[2]))))
def test_what_passes_the_check_pymodbus_decodes_into_the_registers_it_carries(
    case: tuple[tuple[str, PendingRequest, bytes], tuple[str, bytes]],
) -> None:
    (framer, p, whole), (_, damaged) = case
    for data in (whole, damaged):
        if classify_reply(framer, p, data) != "ok":  # type: ignore[arg-type]
            continue  # the adapter hands pymodbus nothing (see _Bus._trace_packet)
        used, pdu = pymodbus_reads(framer, p, data)
        assert used == len(data), data.hex()
        assert pdu is not None, data.hex()
        body = data[7:] if framer == "tcp" else data[1:-2]
        if body[0] & 0x80:
            assert pdu.isError()
            assert pdu.exception_code == body[1]
        else:
            assert pdu.function_code == p.function_code
            carried = [int.from_bytes(body[2 + 2 * i:4 + 2 * i], "big") for i in range(p.count)]
            assert list(pdu.registers) == carried


@fuzz(framer=framers, pending=pendings, data=st.binary(max_size=300))
def test_pymodbus_itself_survives_bytes_the_check_would_stop(
    framer: str, pending: PendingRequest, data: bytes
) -> None:
    # Defence in depth: were the check ever bypassed, pymodbus still only answers or raises
    # its own exception, which the adapter counts as a lost connection.
    try:
        pymodbus_reads(framer, pending, data)
    except ModbusException:
        pass


@fuzz(framer=framers, awaited=pendings, earlier=st.lists(pendings, max_size=3),
      tail=st.binary(max_size=10))
def test_late_replies_ahead_of_the_awaited_one_are_skipped_whole(
    framer: str, awaited: PendingRequest, earlier: list[PendingRequest], tail: bytes
) -> None:
    late = [reply(framer, p, [0] * p.count) for p in earlier if p.tid != awaited.tid]
    data = b"".join(late) + reply(framer, awaited, [1] * awaited.count) + tail
    skipped = late_reply_length(framer, awaited, data)  # type: ignore[arg-type]
    # Over RTU a reply carries no transaction id: it cannot be told late (docs say so).
    assert skipped == (sum(map(len, late)) if framer == "tcp" else 0)


def counted(err: RegisterDecodeError, reasons: set[str]) -> None:
    assert err.reason in reasons, err
    assert str(err)


def values_of(registers: Any, kind: str) -> None:
    """Registers of every read of `kind`'s plan → the values the poller keeps, and why not."""
    profile = PROFILES[kind]
    assert profile.modbus is not None
    values: dict[str, Any] = {}
    problems: dict[str, tuple[str, str]] = {}
    for req in plan_reads(profile.modbus):
        try:
            got, errors = decode_read(profile.modbus, req, registers[req.address:req.address + req.count])
        except RegisterDecodeError as err:
            counted(err, {"short_response"})
            continue
        values.update(got)
        problems.update({n: (e.reason, str(e)) for n, e in errors.items()})
    kept, dropped = _check(profile, Sample(Reading("r-1", "m-1", 0, values), problems))
    for name, value in kept.items():
        assert profile.fields[name].check(value) is None, (name, value)
    for name, (reason, detail) in dropped.items():
        assert reason in FIELD_REASONS, (name, reason)
        assert detail


@fuzz(kind=st.sampled_from(sorted(MAPPED)),
      registers=st.lists(st.integers(0, 0xFFFF), min_size=0x30, max_size=0x30)
      | st.lists(st.integers(-(2**17), 2**17), max_size=0x30))
def test_any_registers_become_accepted_values_or_counted_reasons(kind: str, registers: list[int]) -> None:
    values_of(registers, kind)


fields = st.builds(
    RegisterField, address=st.integers(0, 100), function=st.sampled_from(["holding", "input"]),
    type=st.sampled_from(["int16", "uint16", "int32", "uint32", "float32"]),
    word_order=st.sampled_from(["big", "little"]), byte_order=st.sampled_from(["big", "little"]),
    scale=st.sampled_from([1.0, 0.1, 0.01, 0.001, 10.0, -1.0]),
    offset=st.sampled_from([0.0, 0.5, -40.0, 273.15]),
)


@fuzz(f=fields, data=st.data())
def test_registers_round_trip_through_any_field(f: RegisterField, data: st.DataObject) -> None:
    registers = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=f.width, max_size=f.width))
    value = decode(f, registers)
    raw = registers_to_raw(f.type, registers, f.word_order, f.byte_order)
    if isinstance(raw, float) and raw != raw:
        return  # a NaN has many encodings; the profile's check refuses it
    if isinstance(value, float) and abs(value) == float("inf"):
        return
    again = encode(f, value)
    if f.type == "float32" and not f.is_identity:
        # A scaled float32 is rounded back to float32: the nearest register value.
        assert decode(f, again) == pytest.approx(value, rel=1e-6, abs=1e-30)
    else:
        assert again == registers


def test_every_mapped_profile_is_fuzzed() -> None:
    assert set(MAPPED) >= {"water_meter", "gas_meter"}
    for profile in MAPPED.values():
        assert isinstance(profile.modbus, ModbusMap)
