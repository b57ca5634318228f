"""The watchlist message, `site/{site}/down/watchlist`: what the cloud signs, what a gateway checks.

One message carries a site's whole watchlist as the cloud holds it (so applying it is one
atomic replacement, and a lost message is repaired by any later one):

    {"v": 1, "site": "s-1", "version": 42, "entries": [
        {"id", "person", "list", "consent", "entered_ms", "until_ms", "model",
         "photos": [sha256...], "embeddings": ["<base64 of little-endian float32>"...]}],
     "sig": "<Ed25519 signature, base64, of the message without sig, keys sorted>"}

A descriptor travels as base64 of its float32 values (1 KB for 192 values, against 2.3 KB
as JSON numbers): the shipped brokers take packets up to 1 MiB (`max_packet_size`), and the
cloud sends no message over MAX_MESSAGE_BYTES (it logs the site instead). Ids and descriptors
only: no photo, no name, not who entered it (a user name may be one).
`version` is the cloud's watchlist change counter; a gateway applies a version newer than the
one it holds, and says which it holds in its reports (the acknowledgement). The signature is
the cloud's watchlist key's (cloud/watchlists.py); the gateway holds the public half
(`cloud_watchlist_key`), so a broker that lets the wrong client publish still cannot put a face
on a gate's watchlist.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

VERSION = 1
MAX_ENTRIES = 20_000
MAX_MESSAGE_BYTES = 1_000_000  # under the shipped brokers' max_packet_size of 1 MiB
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}\Z")
# The gateway writes them as dates (edge/video/face/downlink.py); Python's end at year 9999.
MAX_MS = 253_402_300_799_999
_SHA = re.compile(r"^[0-9a-f]{64}\Z")


@dataclass(frozen=True, slots=True)
class Refused:
    """Why a message was not applied: `reason` a short metric label, `detail` for the log."""

    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class Entry:
    id: str
    person: str
    list: str
    consent: str
    entered_ms: int
    until_ms: int
    model: str
    photos: builtins.list[str]
    embeddings: builtins.list[builtins.list[float]]


@dataclass(frozen=True, slots=True)
class WatchlistMessage:
    site: str
    version: int
    entries: list[Entry]


def pack(vector: list[float]) -> str:
    return base64.b64encode(np.asarray(vector, "<f4").tobytes()).decode()


def unpack(text: Any) -> list[float] | None:
    """A descriptor from its base64, or None when it is not 16 to 1024 finite float32."""
    if not isinstance(text, str) or len(text) > 8192:
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) % 4 or not 16 <= len(raw) // 4 <= 1024:
        return None
    values = np.frombuffer(raw, "<f4")
    if not np.isfinite(values).all():
        return None
    return [float(v) for v in values]


def canonical(message: dict[str, Any]) -> bytes:
    return orjson.dumps({k: v for k, v in message.items() if k != "sig"},
                        option=orjson.OPT_SORT_KEYS)


def sign(message: dict[str, Any], key: Ed25519PrivateKey) -> bytes:
    """The message as published: itself, signed."""
    sig = base64.b64encode(key.sign(canonical(message))).decode()
    return orjson.dumps({**message, "sig": sig})


def parse(payload: bytes, *, key: Ed25519PublicKey, site: str,
          held: int) -> WatchlistMessage | Refused:
    """Check one message for the gateway of `site` that holds version `held`; never raises.
    Order: it is JSON, it is signed by the cloud, it is our version of the format, for us,
    newer than what we hold, and every entry is whole. A message that fails any of these
    is refused whole."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as err:
        return Refused("not_json", f"not JSON: {err}")
    if not isinstance(data, dict):
        return Refused("not_json", "not a JSON object")
    sig = data.get("sig")
    try:
        key.verify(base64.b64decode(str(sig), validate=True), canonical(data))
    except (InvalidSignature, binascii.Error, ValueError):
        return Refused("bad_signature",
                       "the signature is missing or not the cloud's watchlist key's")
    if data.get("v") != VERSION:
        return Refused("unsupported_version",
                       f"message format v={data.get('v')!r}; this gateway reads v={VERSION}")
    if data.get("site") != site:
        return Refused("wrong_site", f"for site {data.get('site')!r}, this is {site!r}")
    version = data.get("version")
    if type(version) is not int or version < 0:
        return Refused("bad_format", f"version must be a non-negative integer, got {version!r}")
    if version < held:
        return Refused("stale_version", f"version {version} is older than the {held} held")
    entries = data.get("entries")
    if not isinstance(entries, list) or len(entries) > MAX_ENTRIES:
        return Refused("bad_format", f"entries must be a list of at most {MAX_ENTRIES}")
    out: list[Entry] = []
    for i, raw in enumerate(entries):
        entry = _entry(raw)
        if isinstance(entry, str):
            return Refused("bad_format", f"entries[{i}]: {entry}")
        out.append(entry)
    return WatchlistMessage(site, version, out)


def _entry(raw: Any) -> Entry | str:
    """The entry, or what is wrong with it."""
    if not isinstance(raw, dict):
        return "not an object"
    for name in ("id", "person", "list"):
        if not isinstance(raw.get(name), str) or not _ID.match(raw[name]):
            return f"{name} must be an id (1-64 of [A-Za-z0-9_.:-])"
    for name in ("consent", "model"):
        if not isinstance(raw.get(name), str) or not 0 < len(raw[name]) <= 128:
            return f"{name} must be a string of 1 to 128 characters"
    for name in ("entered_ms", "until_ms"):
        if type(raw.get(name)) is not int or not 0 <= raw[name] <= MAX_MS:
            return f"{name} must be epoch ms, before the year 10000"
    photos = raw.get("photos")
    if not isinstance(photos, list) or not all(isinstance(p, str) and _SHA.match(p)
                                               for p in photos):
        return "photos must be a list of SHA-256 hex digests"
    packed = raw.get("embeddings")
    if not isinstance(packed, list) or not packed:
        return "embeddings must be a non-empty list of descriptors"
    vectors = [unpack(v) for v in packed]
    if any(v is None for v in vectors):
        return "each descriptor must be base64 of 16 to 1024 finite little-endian float32"
    if len({len(v) for v in vectors if v is not None}) != 1:
        return "the descriptors differ in length"
    return Entry(raw["id"], raw["person"], raw["list"], raw["consent"], raw["entered_ms"],
                 raw["until_ms"], raw["model"], list(photos),
                 [v for v in vectors if v is not None])
