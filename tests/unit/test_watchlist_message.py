"""The watchlist message (shouwang/watchlist_message.py): what the gateway accepts, whole or not."""

from __future__ import annotations

import base64

import numpy as np
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shouwang.watchlist_message import Refused, WatchlistMessage, pack, parse, sign

KEY = Ed25519PrivateKey.generate()
VECTOR = [round(float(v), 6) for v in np.linspace(-0.2, 0.2, 192)]


def entry(**change: object) -> dict[str, object]:
    return {"id": "e-1", "person": "R-0117", "list": "missing_elder", "consent": "CF-1",
            "entered_ms": 1, "until_ms": 2, "model": "mobilefacenet", "photos": ["a" * 64],
            "embeddings": [pack(VECTOR)], **change}


def check(message: dict[str, object], held: int = 0) -> WatchlistMessage | Refused:
    return parse(sign(message, KEY), key=KEY.public_key(), site="s-1", held=held)


def test_a_good_message_gives_back_the_descriptor_to_6_decimals() -> None:
    got = check({"v": 1, "site": "s-1", "version": 3, "entries": [entry()]})
    assert isinstance(got, WatchlistMessage)
    assert [round(x, 6) for x in got.entries[0].embeddings[0]] == VECTOR
    # 1 KB a descriptor on the wire, not the 2.3 KB of JSON numbers.
    assert len(pack(VECTOR)) == 1024


def test_the_signature_covers_every_field_whatever_their_order() -> None:
    message = {"v": 1, "site": "s-1", "version": 3, "entries": [entry()]}
    signed = orjson.loads(sign(message, KEY))
    reordered = orjson.dumps(dict(reversed(list(signed.items()))))
    assert isinstance(parse(reordered, key=KEY.public_key(), site="s-1", held=0),
                      WatchlistMessage)
    signed["entries"][0]["person"] = "R-0999"  # one id changed after signing
    got = parse(orjson.dumps(signed), key=KEY.public_key(), site="s-1", held=0)
    assert isinstance(got, Refused)
    assert got.reason == "bad_signature"


def test_a_bad_entry_refuses_the_whole_message_naming_it() -> None:
    nan = base64.b64encode(np.full(192, np.nan, "<f4").tobytes()).decode()
    cases = {
        "embeddings": entry(embeddings=[nan]),
        "not base64": entry(embeddings=["***"]),
        "differ": entry(embeddings=[pack(VECTOR), pack(VECTOR[:128])]),
        "person": entry(person="a name with spaces"),
        "photos": entry(photos=["not-a-hash"]),
        "until_ms": entry(until_ms=2**50),  # no date a gateway can write
    }
    for word, bad in cases.items():
        got = check({"v": 1, "site": "s-1", "version": 3, "entries": [entry(id="ok"), bad]})
        assert isinstance(got, Refused), word
        assert got.reason == "bad_format"
        assert got.detail.startswith("entries[1]: ")


def test_older_than_held_is_stale_and_the_same_is_a_repeat() -> None:
    message = {"v": 1, "site": "s-1", "version": 5, "entries": []}
    assert isinstance(check(message, held=5), WatchlistMessage)
    stale = check(message, held=6)
    assert isinstance(stale, Refused)
    assert stale.reason == "stale_version"


def test_during_a_key_rotation_either_of_the_cloud_keys_signs() -> None:
    new = Ed25519PrivateKey.generate()
    stranger = Ed25519PrivateKey.generate()
    message = {"v": 1, "site": "s-1", "version": 3, "entries": [entry()]}
    both = [KEY.public_key(), new.public_key()]
    for signer in (KEY, new):
        assert isinstance(parse(sign(message, signer), key=both, site="s-1", held=0),
                          WatchlistMessage)
    got = parse(sign(message, stranger), key=both, site="s-1", held=0)
    assert isinstance(got, Refused)
    assert got.reason == "bad_signature"


def test_a_part_must_say_which_of_how_many_and_of_which_list() -> None:
    part = {"v": 2, "site": "s-1", "version": 3, "part": 1, "parts": 2, "digest": "0" * 16,
            "entries": [entry()]}
    got = check(part)
    assert isinstance(got, WatchlistMessage)
    assert (got.part, got.parts, got.digest) == (1, 2, "0" * 16)
    for bad in ({"part": 3}, {"part": 0}, {"parts": 33}, {"parts": "2"}, {"digest": "xyz"},
                {"digest": None}):
        refused = check({**part, **bad})
        assert isinstance(refused, Refused), bad
        assert refused.reason == "bad_format", bad


def test_a_date_past_the_year_9999_is_refused_not_raised_on_applying() -> None:
    # The gateway writes entered_ms and until_ms as dates: one past year 9999 raised
    # ValueError there, after parse had accepted it (found by tests/fuzz).
    from edge.video.face.downlink import _enrolment

    for name in ("entered_ms", "until_ms"):
        got = check({"v": 1, "site": "s-1", "version": 3,
                     "entries": [entry(**{name: 253_402_300_800_000})]})
        assert isinstance(got, Refused)
        assert got.reason == "bad_format"
        assert name in got.detail
    latest = check({"v": 1, "site": "s-1", "version": 3,
                    "entries": [entry(until_ms=253_402_300_799_999)]})
    assert isinstance(latest, WatchlistMessage)
    assert _enrolment(latest.entries[0]).until.startswith("9999-12-31")
