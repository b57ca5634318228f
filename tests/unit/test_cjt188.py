"""CJ/T 188-2004 codec: published frames, every rejection with its reason, property tests."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.adapters.cjt188 import (
    DI_VALVE,
    UNIT_L,
    UNIT_M3,
    ChecksumError,
    Cjt188Error,
    Cjt188Timeout,
    DiOrder,
    FieldError,
    Frame,
    FrameError,
    FrameReader,
    MeterErrorResponse,
    MeterStatus,
    MeterType,
    ReadAddressResponse,
    ReadDataResponse,
    UnsupportedResponse,
    ValveResponse,
    address_to_wire,
    checksum,
    decode_frame,
    decode_response,
    encode_frame,
    encode_response,
    error_response,
    parse_request,
    read_address_request,
    read_data_request,
    to_reading,
    valve_request,
)
from edge.adapters.cjt188_client import Cjt188Client


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# --- published frames ----------------------------------------------------------------------

# Source: https://hftangyu.com/563.html ("CJ/T-188水表协议" with an SC water meter; English copy at
# https://topic.alibabacloud.com/a/cjt-188-water-font-classtopic-s-color00c1demeterfont-protocol-analysis_8_8_31414702.html).
# Read-data request to meter 0011223344 of maker 7833; DI sent 1F 90, low byte first.
HFTANGYU_READ = h("FE FE FE FE 68 10 44 33 22 11 00 33 78 01 03 1F 90 00 80 16")
# Same source, the meter's answer. The page prints CS 08H, but its bytes from 68H on sum to 13H:
# the published frame disagrees with the standard's checksum rule, and the codec must reject it.
HFTANGYU_ANSWER = h(
    "FE FE FE FE 68 10 44 33 22 11 00 33 78 81 16 1F 90 00 00 77 66 55 2C 00 77 66 55 2C"
    " 31 01 22 11 05 15 20 21 84 08 16"
)

# Source: https://biecuoliao.com/pa/3ON9QK0.html ("CJ/T-188 水表协议解析2", same SC meter family).
# Valve open/close and the answer. These send DI A017H as A0 17, high byte first: that disagrees
# with the standard's DI0-first order (and with the same maker's 1F 90 above), so the tests name
# di_order="big" for them instead of letting the codec guess.
BIECUOLIAO_OPEN = h("FE FE FE FE 68 10 69 05 90 05 15 33 78 04 04 A0 17 01 55 50 16")
BIECUOLIAO_OPEN_ANSWER = h("FE FE FE FE 68 10 69 05 90 05 15 33 78 84 05 A0 17 01 00 00 7C 16")
BIECUOLIAO_CLOSE = h("FE FE FE FE 68 10 69 05 90 05 15 33 78 04 04 A0 17 01 99 94 16")

# Source: github.com/aixiwang/python_cjt188, python_cjt188.py (cjt188_get_addr and the commented
# encode/decode self-tests). DI goes high byte first there too (81 0A, 90 1F), again unlike the
# standard's DI0 first; the same file's live read switched to 1F 90 for a real DN15 meter.
AIXI_READ_ADDRESS = h("FE FE FE 68 AA AA AA AA AA AA AA AA 03 03 81 0A 00 49 16")
AIXI_ADDRESS_ANSWER = h("FE FE FE 68 10 12 00 00 00 00 00 00 83 03 81 0A 00 9B 16")
AIXI_READ = h("68 10 12 00 00 00 00 00 00 01 03 90 1F 00 3D 16")
AIXI_ANSWER = h(
    "FE FE FE 68 10 12 00 00 00 00 00 00 81 16 90 1F 00 10 00 10 00 2C 10 00 10 00 2C"
    " 00 00 00 00 00 00 00 00 FF 67 16"
)


def test_hftangyu_read_request_encodes_byte_for_byte() -> None:
    frame = read_data_request("78330011223344", ser=0)
    assert encode_frame(frame, preamble=4) == HFTANGYU_READ
    assert checksum(HFTANGYU_READ[4:-2]) == 0x80
    decoded = decode_frame(HFTANGYU_READ)
    assert decoded == Frame(0x10, "78330011223344", 0x01, h("1F 90 00"))
    request = parse_request(decoded)
    assert (request.di, request.ser, request.payload) == (0x901F, 0, b"")


def test_hftangyu_answer_is_rejected_for_its_published_checksum() -> None:
    with pytest.raises(ChecksumError) as info:
        decode_frame(HFTANGYU_ANSWER)
    assert "carries 08H" in str(info.value)
    assert "is 13H" in str(info.value)
    assert info.value.raw_hex == HFTANGYU_ANSWER[4:].hex(" ").upper()


def test_hftangyu_answer_payload_decodes_once_its_checksum_is_recomputed() -> None:
    # The layout is still the standard's; only the CS is repaired here, on purpose and in view.
    repaired = HFTANGYU_ANSWER[:-2] + bytes((0x13, 0x16))
    resp = decode_response(decode_frame(repaired))
    assert resp == ReadDataResponse(
        meter_type=0x10,
        address="78330011223344",
        ser=0,
        current_centi=55667700,
        current_unit=UNIT_M3,
        # The page calls this "本月用量"; the standard's field here is settlement-day cumulative flow.
        settlement_centi=55667700,
        settlement_unit=UNIT_M3,
        meter_time=datetime(2015, 5, 11, 22, 1, 31),
        status=MeterStatus(0x8421),
    )
    assert resp.cumulative_m3 == 556677.0
    # ST first byte 21H: D1D0 = 01 closed, D2 = 0 battery fine (the standard's bit order).
    # github.com/xijunzhou/sdqr_energy_node_class-20180705 Src/meter/cj188.h masks C0H (valve) and
    # 20H (battery) instead, which would read "open, battery low"; it disagrees with the standard.
    assert resp.status.valve == "closed"
    assert resp.status.battery_low is False


def test_biecuoliao_valve_frames_use_a_high_byte_first_di() -> None:
    # Address 1505900569 of maker 7833, sent low byte first as 69 05 90 05 15 33 78.
    opening = valve_request("78331505900569", True, ser=1, di_order="big")
    closing = valve_request("78331505900569", False, ser=1, di_order="big")
    assert encode_frame(opening, preamble=4) == BIECUOLIAO_OPEN
    assert encode_frame(closing, preamble=4) == BIECUOLIAO_CLOSE
    request = parse_request(decode_frame(BIECUOLIAO_OPEN))
    assert request.di == 0x17A0  # read DI0 first, as the standard orders it: not A017H
    request = parse_request(decode_frame(BIECUOLIAO_OPEN), di_order="big")
    assert (request.di, request.ser, request.payload) == (DI_VALVE, 1, b"\x55")


def test_biecuoliao_valve_answer_needs_the_big_endian_di_order() -> None:
    frame = decode_frame(BIECUOLIAO_OPEN_ANSWER)
    with pytest.raises(UnsupportedResponse) as info:
        decode_response(frame)
    assert "DI 17A0H" in str(info.value)
    assert "A017H the other way" in str(info.value)
    resp = decode_response(frame, di_order="big")
    assert resp == ValveResponse(0x10, "78331505900569", 1, MeterStatus(0))
    assert resp.status.valve == "open"


def test_aixiwang_frames_decode_with_the_big_endian_di_order() -> None:
    assert (
        encode_frame(read_address_request(ser=0, di_order="big"), preamble=3) == AIXI_READ_ADDRESS
    )
    assert encode_frame(read_data_request("00000000000012", di_order="big")) == AIXI_READ
    answer = decode_response(decode_frame(AIXI_ADDRESS_ANSWER), di_order="big")
    assert answer == ReadAddressResponse(0x10, "00000000000012", 0)
    resp = decode_response(decode_frame(AIXI_ANSWER), di_order="big")
    assert isinstance(resp, ReadDataResponse)
    assert (resp.current_centi, resp.settlement_centi) == (100010, 100010)
    assert resp.cumulative_m3 == 1000.10
    assert resp.meter_time is None  # all zeros: the meter's clock is not set
    assert resp.status == MeterStatus(0xFF00)  # vendor byte FFH; valve open, battery fine
    assert (resp.status.valve, resp.status.battery_low) == ("open", False)


# --- rejections name what was wrong ----------------------------------------------------------

GOOD = encode_frame(read_data_request("00000000000001"))


@pytest.mark.parametrize(
    ("raw", "error", "reason"),
    [
        (h("FE FE FE"), FrameError, "bad start: no 68H in 3 bytes"),
        (GOOD[:-1], FrameError, "truncated: frame needs 16 bytes from 68H, got 15"),
        (GOOD[:5], FrameError, "truncated: frame needs 11 bytes from 68H, got 5"),
        (GOOD[:-1] + b"\x17", FrameError, "bad end: byte 15 is 17H, expected 16H"),
        (GOOD[:10] + b"\x65" + GOOD[11:], FrameError, "bad length: L=101 exceeds 100"),
        (GOOD + b"\x00", FrameError, "1 bytes after the end byte 16H"),
        # 68+10+01+01+03+1F+90 = 12CH, so the sum byte is 2CH.
        (GOOD[:-2] + b"\x00\x16", ChecksumError, "frame carries 00H, sum of 68H..data is 2CH"),
    ],
    ids=[
        "no-start",
        "truncated-end",
        "truncated-header",
        "bad-end",
        "bad-length",
        "trailing",
        "cs",
    ],
)
def test_decode_frame_rejections_name_the_fault_and_carry_the_bytes(
    raw: bytes, error: type[Cjt188Error], reason: str
) -> None:
    with pytest.raises(error) as info:
        decode_frame(raw)
    assert type(info.value) is error
    assert reason in str(info.value)
    assert info.value.raw_hex in str(info.value)


def test_decode_frame_skips_preamble_and_noise_before_the_start() -> None:
    frame = decode_frame(b"\x00\xff\x13" + b"\xfe" * 4 + GOOD)
    assert frame.address == "00000000000001"
    assert frame.raw == GOOD


ANSWER = ReadDataResponse(
    meter_type=MeterType.COLD_WATER,
    address="00000000000042",
    ser=7,
    current_centi=123456,
    current_unit=UNIT_M3,
    settlement_centi=100000,
    settlement_unit=UNIT_M3,
    meter_time=datetime(2024, 3, 1, 8, 30, 0),
    status=MeterStatus.of("open"),
)


def _answer(**overrides: Any) -> ReadDataResponse:
    return replace(ANSWER, **overrides)


def test_abnormal_answer_raises_meter_error_with_ser_and_status() -> None:
    request = read_data_request("00000000000042", ser=9)
    frame = decode_frame(encode_frame(error_response(request, 9, MeterStatus.of("closed"))))
    assert frame.control == 0xC1
    with pytest.raises(MeterErrorResponse) as info:
        decode_response(frame)
    assert (info.value.ser, info.value.status) == (9, 0x0001)
    assert "answered C1H (abnormal) to function 01H, SER 9, ST 0001H" in str(info.value)


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (encode_response(_answer(meter_type=MeterType.HEAT)), "meter type 20H"),
        (encode_response(_answer(current_unit=0x05)), "flow unit 05H (kWh) is not a volume"),
        (read_data_request("00000000000042"), "control 01H is a request, not a response"),
        (Frame(0x10, "00000000000042", 0x89, h("06 81 00")), "control 89H is not a supported"),
        (Frame(0x10, "00000000000042", 0x81, h("1F 90 00")), "with 3 data bytes; expected 22"),
    ],
)
def test_answers_outside_the_supported_set_are_unsupported(frame: Frame, reason: str) -> None:
    with pytest.raises(UnsupportedResponse) as info:
        decode_response(decode_frame(encode_frame(frame)))
    assert reason in str(info.value)


def test_non_bcd_flow_is_a_field_error() -> None:
    wire = bytearray(encode_frame(encode_response(_answer())))
    wire[14] = 0x1A  # lowest byte of the current flow; A is no decimal digit
    wire[-2] = checksum(wire[:-2])
    with pytest.raises(FieldError, match="current cumulative flow: 1A 34 12 00 is not BCD"):
        decode_response(decode_frame(bytes(wire)))


def test_an_impossible_meter_clock_keeps_the_reading_and_drops_the_time() -> None:
    wire = bytearray(encode_frame(encode_response(_answer())))
    wire[11 + 17] = 0x13  # month 13
    wire[-2] = checksum(wire[:-2])
    resp = decode_response(decode_frame(bytes(wire)))
    assert isinstance(resp, ReadDataResponse)
    assert resp.meter_time is None
    assert resp.current_centi == 123456


@pytest.mark.parametrize(
    ("raw", "valve", "battery_low"),
    [(0x0000, "open", False), (0x0001, "closed", False), (0x0003, "abnormal", False),
     (0x0002, "abnormal", False), (0x0004, "open", True), (0xFF05, "closed", True)],
)  # fmt: skip
def test_status_bits(raw: int, valve: str, battery_low: bool) -> None:
    status = MeterStatus(raw)
    assert (status.valve, status.battery_low) == (valve, battery_low)


def test_status_of_keeps_vendor_bits_and_sets_the_standard_ones() -> None:
    assert MeterStatus.of("closed", battery_low=True, vendor=0xAB00).raw == 0xAB05
    assert MeterStatus.of("abnormal").to_wire() == h("03 00")


def test_litres_convert_to_cubic_metres() -> None:
    resp = _answer(current_centi=12345, current_unit=UNIT_L)
    assert resp.cumulative_m3 == 0.12345
    assert resp.settlement_m3 == 1000.0


def test_to_reading_carries_the_canonical_values() -> None:
    resp = _answer(status=MeterStatus.of("closed", battery_low=True))
    reading = to_reading(resp, device="wm-42", reading_id="r-1", ts=1_795_000_000_000)
    assert (reading.id, reading.device, reading.ts) == ("r-1", "wm-42", 1_795_000_000_000)
    assert reading.values == {
        "cumulative_m3": 1234.56,
        "settlement_m3": 1000.0,
        "valve": "closed",
        "battery_low": True,
        "status_raw": 0x0005,
        "meter_time": "2024-03-01T08:30:00",
        "meter_type": 0x10,
        "address": "00000000000042",
    }


@pytest.mark.parametrize("address", ["1234", "0000000000000G", "000000000000001"])
def test_a_malformed_address_is_refused_before_anything_is_sent(address: str) -> None:
    with pytest.raises(ValueError, match="14 hex digits"):
        address_to_wire(address)


# --- the stream reader -----------------------------------------------------------------------


def test_reader_finds_frames_fed_one_byte_at_a_time() -> None:
    reader = FrameReader()
    wire = b"\xfe\xfe" + GOOD + b"\xfe" + BIECUOLIAO_OPEN_ANSWER
    found = []
    for b in wire:
        reader.feed(bytes((b,)))
        if (frame := reader.next_frame()) is not None:
            found.append(frame.raw)
    assert found == [GOOD, BIECUOLIAO_OPEN_ANSWER[4:]]
    assert reader.noise == 0  # FE preamble is not noise


def test_reader_resyncs_past_a_false_start_in_noise() -> None:
    reader = FrameReader()
    # A 68H whose would-be end byte is not 16H, then the real frame.
    reader.feed(h("68 00 01 02 03 04 05 06 07 08 02 AA BB CC 00") + GOOD)
    assert reader.next_frame() == decode_frame(GOOD)
    assert reader.noise == 15
    assert isinstance(reader.last_rejection, FrameError)
    assert "bad end" in str(reader.last_rejection)


def test_reader_raises_on_a_damaged_frame_and_goes_on_to_the_next() -> None:
    reader = FrameReader()
    reader.feed(GOOD[:-2] + b"\x00\x16" + GOOD)
    with pytest.raises(ChecksumError):
        reader.next_frame()
    assert reader.next_frame() == decode_frame(GOOD)
    assert reader.next_frame() is None


# --- properties ----------------------------------------------------------------------------

addresses = st.integers(0, 10**14 - 1).map(lambda n: f"{n:014d}")
water_or_gas = st.sampled_from([0x10, 0x11, 0x12, 0x13, 0x19, 0x30, 0x39])
orders: st.SearchStrategy[DiOrder] = st.sampled_from(["little", "big"])
times = st.none() | st.datetimes(datetime(2000, 1, 1), datetime(2099, 12, 31)).map(
    lambda t: t.replace(microsecond=0)
)
answers = st.builds(
    ReadDataResponse,
    meter_type=water_or_gas,
    address=addresses,
    ser=st.integers(0, 255),
    current_centi=st.integers(0, 99_999_999),
    current_unit=st.sampled_from([UNIT_M3, UNIT_L]),
    settlement_centi=st.integers(0, 99_999_999),
    settlement_unit=st.sampled_from([UNIT_M3, UNIT_L]),
    meter_time=times,
    status=st.integers(0, 0xFFFF).map(MeterStatus),
)
other_answers = st.one_of(
    st.builds(ReadAddressResponse, water_or_gas, addresses, st.integers(0, 255)),
    st.builds(
        ValveResponse, water_or_gas, addresses, st.integers(0, 255),
        st.integers(0, 0xFFFF).map(MeterStatus),
    ),
)  # fmt: skip


@given(resp=answers | other_answers, order=orders, preamble=st.integers(0, 4))
def test_encode_then_decode_is_identity(
    resp: ReadDataResponse | ReadAddressResponse | ValveResponse, order: DiOrder, preamble: int
) -> None:
    wire = encode_frame(encode_response(resp, di_order=order), preamble=preamble)
    assert decode_response(decode_frame(wire), di_order=order) == resp


@given(address=addresses, ser=st.integers(0, 255), open_valve=st.booleans(), order=orders)
def test_requests_round_trip(address: str, ser: int, open_valve: bool, order: DiOrder) -> None:
    request = parse_request(
        decode_frame(encode_frame(valve_request(address, open_valve, ser=ser, di_order=order))),
        di_order=order,
    )
    assert (request.address, request.ser, request.di) == (address, ser, DI_VALVE)
    assert request.payload == (b"\x55" if open_valve else b"\x99")


@given(raw=st.binary(max_size=300))
def test_random_bytes_raise_only_cjt188_errors(raw: bytes) -> None:
    try:
        decode_response(decode_frame(raw))
    except Cjt188Error:
        pass
    reader = FrameReader()
    reader.feed(raw)
    for _ in range(len(raw) + 1):
        try:
            if reader.next_frame() is None:
                break
        except ChecksumError:
            pass


@given(raw=st.binary(max_size=40).map(lambda noise: noise.replace(b"\x68", b"")), data=st.data())
def test_random_bytes_around_a_frame_never_hide_it(raw: bytes, data: st.DataObject) -> None:
    # Noise without 68H before a frame is always skipped; the frame comes out whole.
    resp = data.draw(answers)
    wire = encode_frame(encode_response(resp))
    assert decode_response(decode_frame(raw + wire)) == resp


@given(resp=answers, data=st.data())
def test_truncated_frames_are_rejected(resp: ReadDataResponse, data: st.DataObject) -> None:
    wire = encode_frame(encode_response(resp), preamble=2)
    cut = data.draw(st.integers(0, len(wire) - 1))
    with pytest.raises(FrameError):
        decode_frame(wire[:cut])


@given(resp=answers, data=st.data())
def test_one_changed_byte_never_decodes_to_a_different_answer(
    resp: ReadDataResponse, data: st.DataObject
) -> None:
    wire = bytearray(encode_frame(encode_response(resp), preamble=2))
    at = data.draw(st.integers(0, len(wire) - 1))
    wire[at] = data.draw(st.integers(0, 255).filter(lambda b: b != wire[at]))
    try:
        decoded = decode_response(decode_frame(bytes(wire)))
    except Cjt188Error:
        return
    assert decoded == resp  # only a changed preamble byte may pass, and then nothing changed


async def test_the_clients_retries_wait_by_the_shared_back_off_with_jitter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Meters read in step on one line that time out together must not retry in step: each
    wait is drawn from [d/2, d], d doubling from backoff_s to backoff_max_s."""
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay: float) -> None:
        slept.append(delay)
        await real_sleep(0)

    async def no_answer(*args: object) -> None:
        raise Cjt188Timeout("no reply")

    monkeypatch.setattr("edge.adapters.cjt188_client.asyncio.sleep", sleep)
    client = Cjt188Client("127.0.0.1", 1, retries=3, backoff_s=0.1, backoff_max_s=0.3)
    monkeypatch.setattr(client, "_exchange", no_answer)
    for _ in range(20):
        with pytest.raises(Cjt188Timeout):
            await client.read_data("12345678901234")
    await client.close()
    assert len(slept) == 60
    for n, nominal in enumerate((0.1, 0.2, 0.3)):
        nth = slept[n::3]
        assert all(nominal / 2 <= w <= nominal for w in nth)
        assert len(set(nth)) == 20
