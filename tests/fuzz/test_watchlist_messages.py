"""Fuzz the watchlist message a gateway takes from the cloud (`site/{site}/down/watchlist`).

Whatever reaches the topic, `parse` answers with the message or a `Refused` with its reason,
never an exception; only the cloud's key makes it accept anything; a signed message that is
malformed is refused whole; an accepted one is one the gateway can apply (its entries become
enrolments, edge/video/face/downlink.py); and what the cloud signs reads back the same.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import strategies as st

from edge.video.face.downlink import _enrolment
from shouwang.watchlist_message import MAX_ENTRIES, Refused, WatchlistMessage, pack, parse, sign
from tests.fuzz.harness import fuzz, json_values, mutated, nearly, wide_ints
from tests.fuzz.test_device_envelope import id_like, ids, is_id

SITE = "site-a"
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))  # fixed: derandomized runs
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
REASONS = {"not_json", "bad_signature", "unsupported_version", "wrong_site", "bad_format",
           "stale_version"}

vectors = st.integers(16, 64).flatmap(lambda n: st.lists(
    st.floats(-1, 1, width=32), min_size=n, max_size=n))
entries = st.builds(
    lambda id_, person, list_, consent, entered, until, model, photos, vs: {
        "id": id_, "person": person, "list": list_, "consent": consent, "entered_ms": entered,
        "until_ms": until, "model": model, "photos": photos, "embeddings": [pack(v) for v in vs]},
    ids, ids, ids, st.text(min_size=1, max_size=20), st.integers(0, 2**41), st.integers(0, 2**41),
    st.sampled_from(["mobilefacenet", "arcface"]),
    st.lists(st.text(alphabet="0123456789abcdef", min_size=64, max_size=64), max_size=2),
    st.integers(1, 3).flatmap(lambda k: vectors.flatmap(
        lambda v: st.lists(st.lists(st.floats(-1, 1, width=32), min_size=len(v),
                                    max_size=len(v)), min_size=k - 1, max_size=k - 1)
        .map(lambda more: [v, *more]))),
)
ENTRY_OTHERS: dict[str, st.SearchStrategy[Any]] = {
    "id": id_like, "person": id_like, "list": id_like, "consent": st.text(max_size=200),
    "model": st.text(max_size=200), "entered_ms": wide_ints,
    "until_ms": wide_ints,
    "photos": st.lists(st.text(max_size=70)), "embeddings": st.lists(
        st.text(max_size=100) | vectors.map(pack) | st.binary(max_size=80).map(
            lambda b: __import__("base64").b64encode(b).decode())),
}
messages = st.builds(
    lambda version, es: {"v": 1, "site": SITE, "version": version, "entries": es},
    st.integers(0, 2**40), st.lists(entries, max_size=3),
)


def check(result: WatchlistMessage | Refused, held: int) -> None:
    if isinstance(result, Refused):
        assert result.reason in REASONS, result
        assert result.detail
        return
    assert result.site == SITE
    assert result.version >= held
    assert len(result.entries) <= MAX_ENTRIES
    for e in result.entries:
        assert is_id(e.id)
        assert is_id(e.person)
        assert is_id(e.list)
        assert len({len(v) for v in e.embeddings}) == 1
        assert all(np.isfinite(v).all() for v in e.embeddings)
        _enrolment(e)  # what the gateway applies


@fuzz(payload=st.binary(max_size=400), held=st.integers(0, 10))
def test_any_bytes_are_refused_with_a_reason(payload: bytes, held: int) -> None:
    result = parse(payload, key=KEY.public_key(), site=SITE, held=held)
    assert isinstance(result, Refused)  # nothing unsigned is taken
    check(result, held)


@st.composite
def signed_near_messages(draw: st.DrawFn) -> dict[str, Any]:
    message = draw(messages)
    if message["entries"] and draw(st.booleans()):
        i = draw(st.integers(0, len(message["entries"]) - 1))
        message["entries"][i] = draw(nearly(message["entries"][i], ENTRY_OTHERS))
    if draw(st.integers(0, 3)):
        return message
    return draw(nearly(message, {"v": json_values, "site": id_like,
                                 "version": wide_ints,
                                 "entries": st.lists(json_values, max_size=3)}))


@fuzz(message=signed_near_messages(), held=st.integers(0, 2**40))
def test_a_signed_message_of_any_shape_is_taken_whole_or_refused(
    message: dict[str, Any], held: int
) -> None:
    check(parse(sign(message, KEY), key=KEY.public_key(), site=SITE, held=held), held)


@fuzz(entry=entries, data=st.data())
def test_each_entry_field_takes_only_what_the_gateway_can_apply(
    entry: dict[str, Any], data: st.DataObject
) -> None:
    field = data.draw(st.sampled_from(sorted(ENTRY_OTHERS)))
    entry = {**entry, field: data.draw(ENTRY_OTHERS[field] | json_values)}
    message = {"v": 1, "site": SITE, "version": 1, "entries": [entry]}
    check(parse(sign(message, KEY), key=KEY.public_key(), site=SITE, held=0), 0)


@fuzz(message=messages)
def test_what_the_cloud_signs_reads_back_the_same(message: dict[str, Any]) -> None:
    result = parse(sign(message, KEY), key=KEY.public_key(), site=SITE, held=0)
    assert isinstance(result, WatchlistMessage), result
    check(result, 0)
    assert [e.id for e in result.entries] == [e["id"] for e in message["entries"]]
    assert [[pack(v) for v in e.embeddings] for e in result.entries] == [
        e["embeddings"] for e in message["entries"]]
    # Another key's signature is never the cloud's.
    forged = parse(sign(message, OTHER_KEY), key=KEY.public_key(), site=SITE, held=0)
    assert isinstance(forged, Refused)
    assert forged.reason == "bad_signature"


@st.composite
def damaged(draw: st.DrawFn) -> tuple[bytes, str, bytes]:
    good = sign(draw(messages), KEY)
    how, bad = draw(mutated(good))
    return good, how, bad


@fuzz(case=damaged())
def test_a_damaged_message_is_refused(case: tuple[bytes, str, bytes]) -> None:
    good, how, bad = case
    result = parse(bad, key=KEY.public_key(), site=SITE, held=0)
    # What JSON itself ignores after a value (Python's strip() also takes \v and \f).
    added_only_whitespace = how == "extend" and not bad[len(good):].strip(b" \t\n\r")
    if isinstance(result, WatchlistMessage):
        # Only a change that leaves the signed content and the signature as they were:
        # whitespace after the object, or the unused low bits of the signature's last
        # base64 digit.
        assert result == parse(good, key=KEY.public_key(), site=SITE, held=0)
        assert added_only_whitespace or orjson.loads(bad)["sig"] != orjson.loads(good)["sig"]
        return
    check(result, 0)
    if how == "truncate" or (how == "extend" and not added_only_whitespace):
        assert result.reason == "not_json"
