"""Fuzz the CJ/T 188 codec: what a meter, or anything else on the RS-485 line, sends the edge.

A frame decodes, or raises the codec's own error (a Cjt188Error subclass, which the poller
counts by its class, edge/adapters/cjt188_client.py `device_error`) with a message; what the
codec encodes decodes to itself; a frame damaged on the line (a bit flipped, cut short,
bytes after it) is refused with the reason that names the damage.
"""

from __future__ import annotations

from datetime import datetime

from hypothesis import strategies as st

from edge.adapters.cjt188 import (
    BROADCAST_ADDRESS,
    PREAMBLE_BYTE,
    ChecksumError,
    Cjt188Error,
    Frame,
    FrameError,
    FrameReader,
    MeterStatus,
    ReadAddressResponse,
    ReadDataResponse,
    Response,
    ValveResponse,
    decode_frame,
    decode_response,
    encode_frame,
    encode_response,
    parse_request,
    read_address_request,
    read_data_request,
    to_reading,
    valve_request,
)
from edge.adapters.cjt188_client import device_error, profile_values
from shouwang.profiles import load_profiles
from tests.fuzz.harness import fuzz, mutated

PROFILES = load_profiles()
orders = st.sampled_from(["little", "big"])
addresses = st.text(alphabet="0123456789ABCDEF", min_size=14, max_size=14)
water_or_gas = st.integers(0x10, 0x19) | st.integers(0x30, 0x39)
statuses = st.integers(0, 0xFFFF).map(MeterStatus)
times = st.none() | st.datetimes(datetime(2000, 1, 1), datetime(2099, 12, 31)).map(
    lambda t: t.replace(microsecond=0))
read_data = st.builds(
    ReadDataResponse, meter_type=water_or_gas, address=addresses, ser=st.integers(0, 255),
    current_centi=st.integers(0, 99_999_999), current_unit=st.sampled_from([0x2C, 0x29]),
    settlement_centi=st.integers(0, 99_999_999), settlement_unit=st.sampled_from([0x2C, 0x29]),
    meter_time=times, status=statuses,
)
answers: st.SearchStrategy[Response] = read_data | st.builds(
    ReadAddressResponse, meter_type=st.integers(0, 255), address=addresses,
    ser=st.integers(0, 255),
) | st.builds(
    ValveResponse, meter_type=st.integers(0, 255), address=addresses, ser=st.integers(0, 255),
    status=statuses,
)
frames = st.builds(Frame, meter_type=st.integers(0, 255), address=addresses,
                   control=st.integers(0, 255), data=st.binary(max_size=100))


def refused(err: Cjt188Error) -> None:
    """What the poller makes of a codec error: a reason label and the message."""
    assert err.message
    polled = device_error("meter-1", err)
    assert polled.reason not in ("", "error"), err  # every codec error has its own label


@fuzz(raw=st.binary(max_size=300))
def test_any_bytes_decode_or_raise_the_codec_error(raw: bytes) -> None:
    try:
        frame = decode_frame(raw)
    except Cjt188Error as err:
        refused(err)
        return
    assert encode_frame(frame) == raw[raw.index(0x68):]


@fuzz(frame=frames, order=orders)
def test_any_frame_is_an_answer_or_the_codec_error(frame: Frame, order: str) -> None:
    frame = decode_frame(encode_frame(frame))
    try:
        resp = decode_response(frame, di_order=order)  # type: ignore[arg-type]
    except Cjt188Error as err:
        refused(err)
    else:
        assert decode_response(encode_frame_of(resp, order), di_order=order) == resp  # type: ignore[arg-type]
        if isinstance(resp, ReadDataResponse):
            # What the poller keeps of it passes the meter's profile.
            reading = to_reading(resp, device="meter-1", reading_id="r-1", ts=0)
            for kind in ("water_meter", "gas_meter"):
                values = profile_values(reading.values, PROFILES[kind])
                for name, value in values.items():
                    assert PROFILES[kind].fields[name].check(value) is None, (name, value)
    try:
        request = parse_request(frame, di_order=order)  # type: ignore[arg-type]
    except Cjt188Error as err:
        refused(err)
    else:
        assert request.address == frame.address


def encode_frame_of(resp: Response, order: str) -> Frame:
    return decode_frame(encode_frame(encode_response(resp, di_order=order)))  # type: ignore[arg-type]


@fuzz(resp=answers, order=orders, preamble=st.integers(0, 4))
def test_answers_round_trip(resp: Response, order: str, preamble: int) -> None:
    wire = encode_frame(encode_response(resp, di_order=order), preamble=preamble)  # type: ignore[arg-type]
    assert decode_response(decode_frame(wire), di_order=order) == resp  # type: ignore[arg-type]


@fuzz(address=addresses, ser=st.integers(0, 255), order=orders, which=st.integers(0, 3))
def test_requests_round_trip(address: str, ser: int, order: str, which: int) -> None:
    request = [
        read_data_request(address, ser=ser, di_order=order),  # type: ignore[arg-type]
        read_address_request(ser=ser, di_order=order),  # type: ignore[arg-type]
        valve_request(address, True, ser=ser, di_order=order),  # type: ignore[arg-type]
        valve_request(address, False, ser=ser, di_order=order),  # type: ignore[arg-type]
    ][which]
    parsed = parse_request(decode_frame(encode_frame(request)), di_order=order)  # type: ignore[arg-type]
    assert (parsed.address, parsed.control, parsed.ser) == (
        BROADCAST_ADDRESS if which == 1 else address, request.control, ser)


@st.composite
def damaged(draw: st.DrawFn) -> tuple[bytes, int, str, bytes]:
    preamble = draw(st.integers(0, 4))
    wire = encode_frame(encode_response(draw(answers)), preamble=preamble)
    how, bad = draw(mutated(wire))
    return wire, preamble, how, bad


@fuzz(case=damaged())
def test_a_damaged_frame_is_refused_with_its_reason(case: tuple[bytes, int, str, bytes]) -> None:
    wire, preamble, how, bad = case
    # Where the damage is: the first byte that differs (for a deletion, the byte deleted).
    at = next((i for i, (a, b) in enumerate(zip(wire, bad, strict=False)) if a != b), len(bad))
    try:
        result: Frame | Cjt188Error = decode_frame(bad)
    except Cjt188Error as err:
        result = err
    if how in ("flip", "delete") and at < preamble:
        assert result == decode_frame(wire)  # the preamble is not the frame
        return
    if how in ("flip", "delete") and at == preamble and isinstance(result, Frame):
        # The 68H is gone: the decoder looks for the next one, and a frame found in the
        # rest is a shorter one; most often there is none.
        assert len(result.raw) < len(wire) - preamble
        return
    assert isinstance(result, Cjt188Error), f"{how} at byte {at} went unnoticed"
    refused(result)
    where, size = at - preamble, len(wire) - preamble  # in the frame, from its 68H
    if how == "truncate" and where > 0:
        assert isinstance(result, FrameError)
        assert "truncated" in result.message
    elif how == "extend":
        assert isinstance(result, FrameError)
        assert "after the end byte" in result.message
    elif how == "delete" and where not in (0, 10):  # a byte less than L says
        assert "truncated" in result.message
    elif how == "flip" and where == size - 1:
        assert "bad end" in result.message
    elif how == "flip" and 0 < where < size - 1 and where != 10:
        # T, the address, C, the data or CS: one flipped bit always changes the sum.
        assert isinstance(result, ChecksumError)
        assert "bad checksum" in result.message


@fuzz(chunks=st.lists(st.binary(max_size=40) | answers.map(
    lambda r: encode_frame(encode_response(r), preamble=2)), max_size=8),
      cuts=st.lists(st.integers(1, 50), max_size=10))
def test_the_stream_reader_takes_anything_in_any_pieces(chunks: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(chunks)
    reader = FrameReader()
    pieces, at = [], 0
    for cut in cuts:
        pieces.append(stream[at:at + cut])
        at += cut
    pieces.append(stream[at:])
    for piece in pieces:
        reader.feed(piece)
        for _ in range(len(stream) + 1):  # each call takes bytes away, or waits for more
            try:
                if reader.next_frame() is None:
                    break
            except ChecksumError as err:
                refused(err)
        else:
            raise AssertionError("the reader kept answering without taking bytes")
    assert len(reader.pending) <= len(stream)


@fuzz(answers_=st.lists(answers, min_size=1, max_size=5), cuts=st.lists(st.integers(1, 30)))
def test_clean_frames_come_out_whole_in_any_pieces(answers_: list[Response], cuts: list[int]) -> None:
    wires = [encode_frame(encode_response(r), preamble=i % 3) for i, r in enumerate(answers_)]
    stream = b"".join(wires)
    reader, got, at = FrameReader(), [], 0
    for cut in [*cuts, len(stream)]:
        reader.feed(stream[at:at + cut])
        at += cut
        while (frame := reader.next_frame()) is not None:
            got.append(frame)
    assert [decode_response(f) for f in got] == answers_
    assert reader.noise == 0
    assert PREAMBLE_BYTE not in reader.pending or not reader.pending.strip(bytes((PREAMBLE_BYTE,)))
