"""A site's watchlist larger than one message (issue 16): cut into signed parts at the true
1,000,000-byte boundary, gathered by the gateway and applied only whole."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.video.face.downlink import CloudWatchlists
from edge.video.face.store import WatchlistStore
from shouwang.metrics import Metrics
from shouwang.watchlist_message import (
    MAX_MESSAGE_BYTES,
    WatchlistMessage,
    build,
    pack,
    parse,
    sign,
)

KEY = Ed25519PrivateKey.generate()
RNG = np.random.default_rng(16)


def entry(i: int, consent: str = "CF-2026-0042") -> dict[str, Any]:
    """One enrolment as the cloud sends it: one photo, a 192-d MobileFaceNet descriptor."""
    vector = RNG.standard_normal(192).astype(np.float32)
    vector /= np.linalg.norm(vector)
    return {"id": str(uuid.UUID(int=i)), "person": f"P-{i:05d}", "list": "police",
            "consent": consent, "entered_ms": 1_796_000_000_000 + i,
            "until_ms": 1_803_776_000_000 + i, "model": "mobilefacenet",
            "photos": [f"{i:064x}"],
            "embeddings": [pack([round(float(v), 6) for v in vector])]}


def signed(message: dict[str, Any]) -> bytes:
    return sign(message, KEY)


def read(payload: bytes) -> WatchlistMessage:
    got = parse(payload, key=KEY.public_key(), site="s-1", held=0)
    assert isinstance(got, WatchlistMessage), got
    return got


def exactly(size: int) -> list[dict[str, Any]]:
    """Entries whose whole message is exactly `size` bytes (consent references padded)."""
    entries = []
    while len(signed({"v": 1, "site": "s-1", "version": 7,
                      "entries": [*entries, entry(len(entries))]})) <= size:
        entries.append(entry(len(entries)))
    short = size - len(signed({"v": 1, "site": "s-1", "version": 7, "entries": entries}))
    for e in entries:
        grow = min(short, 128 - len(e["consent"]))
        e["consent"] += "x" * grow
        short -= grow
    assert short == 0
    return entries


def test_one_message_up_to_the_limit_and_parts_one_byte_past_it() -> None:
    entries = exactly(MAX_MESSAGE_BYTES)
    [whole] = build("s-1", 7, entries, signed)
    assert len(whole) == MAX_MESSAGE_BYTES
    assert orjson.loads(whole)["v"] == 1
    assert [e.id for e in read(whole).entries] == [e["id"] for e in entries]
    longer = exactly(MAX_MESSAGE_BYTES + 1)  # one byte more
    parts = build("s-1", 7, longer, signed)
    assert len(parts) == 2
    assert all(len(p) <= MAX_MESSAGE_BYTES for p in parts)
    got = [read(p) for p in parts]
    assert [(m.part, m.parts) for m in got] == [(1, 2), (2, 2)]
    assert len({m.digest for m in got}) == 1
    assert [e.id for m in got for e in m.entries] == [e["id"] for e in longer]


def test_five_thousand_people_fit_and_the_bytes_per_entry() -> None:
    entries = [entry(i) for i in range(5000)]
    parts = build("s-1", 9, entries, signed)
    sizes = [len(p) for p in parts]
    assert max(sizes) <= MAX_MESSAGE_BYTES
    per_entry = sum(sizes) / len(entries)
    assert 1200 < per_entry < 1400  # docs/face.md: 1,308 bytes an entry with one photo
    assert len(parts) == -(-sum(sizes) // MAX_MESSAGE_BYTES)  # filled: no part wasted
    got = [read(p) for p in parts]
    assert [e.person for m in got for e in m.entries] == [e["person"] for e in entries]


def _gateway(tmp_path: Path) -> CloudWatchlists:
    public = tmp_path / "cloud.pub.pem"
    public.write_bytes(KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return CloudWatchlists(WatchlistStore(tmp_path / "edge"), "s-1", public, Metrics("edge"))


def test_the_gateway_applies_a_cut_list_only_when_every_part_is_here(tmp_path: Path) -> None:
    gateway = _gateway(tmp_path)
    store = gateway.store
    entries = [entry(i) for i in range(1800)]
    parts = build("s-1", 5, entries, signed)
    assert len(parts) == 3

    async def scenario() -> None:
        # Parts in any order; nothing is written until the last.
        assert not await gateway.handle(parts[2])
        assert not await gateway.handle(parts[0])
        assert not await gateway.handle(parts[0])  # a redelivery
        assert not store.path.exists()
        assert await gateway.handle(parts[1])
        assert len(store.load()) == 1800
        assert gateway.held == 5
        # Another cut of a newer version: a part of it alone changes nothing; a part of
        # another cut of that version starts the gathering over.
        fewer = build("s-1", 6, entries[:1000] + entries[1001:], signed)
        other = build("s-1", 6, entries[:1700], signed)
        before = store.path.read_bytes()
        assert not await gateway.handle(fewer[0])
        assert not await gateway.handle(other[0])
        assert not await gateway.handle(fewer[1])
        assert store.path.read_bytes() == before
        for p in [*fewer[2:], fewer[0]]:
            await gateway.handle(p)
        assert gateway.held == 6
        assert {e.person for e in store.load()} == {e["person"] for e in entries} - {"P-01000"}

    asyncio.run(scenario())
