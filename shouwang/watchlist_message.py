"""The watchlist message, `site/{site}/down/watchlist`: what the cloud signs, what a gateway checks.

One message carries a site's whole watchlist as the cloud holds it (so applying it is one
atomic replacement, and a lost message is repaired by any later one):

    {"v": 1, "site": "s-1", "version": 42, "entries": [
        {"id", "person", "list", "consent", "entered_ms", "until_ms", "model",
         "photos": [sha256...], "embeddings": ["<base64 of little-endian float32>"...]}],
     "lists": {"no_entry": {"description", "threshold", "margin", "hits", "cooldown_s",
                            "retention_days"}},
     "sig": "<Ed25519 signature, base64, of the message without sig, keys sorted>"}

A change to a list the gateway holds goes as a delta, the changes since the version it
acknowledged (`base`); the gateway applies it only on top of exactly `base`:

    {"v": 3, "site", "version", "base": 41, "entries": [...added or changed...],
     "removed": [["missing_elder", "R-0117"], ...], "lists", "sig"}

An entry replaces the cloud's entry of the same list and person; `removed` names the
(list, person) of each entry gone (a person is on a list once). The cloud sends the whole list
instead when the gateway holds none, refused a list, or more than MAX_DELTA changed.

Three optional fields roll the signing key over without an installer (docs/face.md):
`kid` names the key that signed the message (the first 16 hex of the SHA-256 of its public
PEM: `fingerprint`), so a message signed by a key the gateway does not trust is told from a
forged one (`key_untrusted`); `next_keys` carries the public PEM of the key the cloud will sign
with next, and `revoked` the fingerprints of keys it no longer signs with. Both are signed
with the message by a key the gateway trusts already, and it keeps them
(`{data_dir}/face/cloud_keys.json`, edge/video/face/downlink.py).

`lists` carries the matching tier of each list named in the entries (signed with them), so a
gateway matches a community's list without an installer copying its settings there; the
gateway's own `lists.yaml` wins where it names a list, and a list it can match by neither is
refused whole (edge/video/face/downlink.py). A message without `lists` (an older cloud) is
still read: the gateway's own tiers alone apply.

A descriptor travels as base64 of its float32 values (1 KB for 192 values, against 2.3 KB
as JSON numbers): the shipped brokers take packets up to 1 MiB (`max_packet_size`), and the
cloud sends no message over MAX_MESSAGE_BYTES. A list too large for one message (over 768
one-photo entries) goes in parts (`build`), each signed on its own:

    {"v": 2, "site", "version", "part": 1, "parts": 7, "digest": "<16 hex>", "entries": [...],
     "sig"}

`digest` names the whole list the parts were cut from (SHA-256 of its entries): the gateway
gathers the parts of one digest and version and applies them together, in one replacement,
only when it holds all of them (edge/video/face/downlink.py); a part of another cut of the same
version (an entry expired between two sends) starts the gathering over. Up to MAX_PARTS parts
and MAX_ENTRIES entries in all. Ids and descriptors only: no photo, no name, not who entered
it (a user name may be one).
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
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

VERSION = 1  # the whole list in one message
VERSION_PARTS = 2  # one part of a list cut into several
VERSION_DELTA = 3  # the changes since `base`: entries added or changed, (list, person) removed
MAX_DELTA = 500  # more changes than this go as the whole list
MAX_ENTRIES = 20_000  # in one message, and in all the parts of a list
MAX_PARTS = 32  # 32 messages of up to 1 MB: a gateway holds at most this much while gathering
MAX_NEXT_KEYS = 4
MAX_REVOKED = 64
MAX_LISTS = 256  # list tiers one message may carry
MAX_MESSAGE_BYTES = 1_000_000  # under the shipped brokers' max_packet_size of 1 MiB
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}\Z")
_SHA = re.compile(r"^[0-9a-f]{64}\Z")
MAX_EPOCH_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: a gateway writes it as a date
_DIGEST = re.compile(r"^[0-9a-f]{16}\Z")


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
    part: int = 1  # of `parts`; a v1 message is part 1 of 1
    parts: int = 1
    digest: str = ""
    lists: dict[str, dict[str, Any]] = field(default_factory=dict)  # name → its tier, unchecked
    next_keys: list[bytes] = field(default_factory=list)  # public PEM, checked Ed25519
    revoked: list[str] = field(default_factory=list)  # fingerprints
    kid: str = ""  # the signing key's fingerprint ("" from an older cloud)
    base: int | None = None  # a delta (v3): the version it applies on top of
    removed: list[tuple[str, str]] = field(default_factory=list)  # (list, person), a delta


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


def fingerprint(pem: bytes) -> str:
    """What names a key to an operator and in a message's `kid`: SHA-256 of its PEM, 16 hex."""
    return hashlib.sha256(pem).hexdigest()[:16]


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public(pem: bytes) -> Ed25519PublicKey | None:
    """An Ed25519 public key from its PEM, or None."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError):
        return None
    return key if isinstance(key, Ed25519PublicKey) else None


def verified(key: Ed25519PublicKey | Sequence[Ed25519PublicKey], sig: Any,
             data: dict[str, Any]) -> bool:
    """Signed by the key, or by one of the keys (during a rotation of the cloud's key)."""
    try:
        raw = base64.b64decode(str(sig), validate=True)
    except (binascii.Error, ValueError):
        return False
    body = canonical(data)
    for one in [key] if isinstance(key, Ed25519PublicKey) else key:
        try:
            one.verify(raw, body)
            return True
        except InvalidSignature:
            continue
    return False


def parse(payload: bytes, *,
          key: Ed25519PublicKey | Sequence[Ed25519PublicKey] | Mapping[str, Ed25519PublicKey],
          site: str, held: int) -> WatchlistMessage | Refused:
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
    kid = data.get("kid", "")
    if not isinstance(kid, str):
        return Refused("bad_format", "kid must be a key fingerprint")
    if isinstance(key, Mapping):  # the trusted keys by fingerprint
        if kid and kid not in key:
            return Refused("key_untrusted", f"signed by key {str(kid)[:16]!r}, which this "
                           f"gateway does not trust (it trusts {', '.join(sorted(key))})")
        key = [key[kid]] if kid else list(key.values())
    if not verified(key, data.get("sig"), data):
        return Refused("bad_signature",
                       "the signature is missing or not the cloud's watchlist key's")
    if data.get("v") not in (VERSION, VERSION_PARTS, VERSION_DELTA):
        return Refused("unsupported_version", f"message format v={data.get('v')!r}, newer "
                       f"than this gateway's software or not a watchlist message; it reads "
                       f"v={VERSION} (a whole list), v={VERSION_PARTS} (its parts) and "
                       f"v={VERSION_DELTA} (changes): nothing applied, update the gateway")
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
    part: Any = 1
    parts: Any = 1
    digest: Any = ""
    if data["v"] == VERSION_PARTS:
        part, parts, digest = data.get("part"), data.get("parts"), data.get("digest")
        if type(parts) is not int or not 1 <= parts <= MAX_PARTS:
            return Refused("bad_format", f"parts must be 1 to {MAX_PARTS}, got {parts!r}")
        if type(part) is not int or not 1 <= part <= parts:
            return Refused("bad_format", f"part must be 1 to {parts}, got {part!r}")
        if not isinstance(digest, str) or not _DIGEST.match(digest):
            return Refused("bad_format", "digest must be 16 hex digits")
    lists = data.get("lists", {})
    if not isinstance(lists, dict) or len(lists) > MAX_LISTS or not all(
            isinstance(name, str) and _ID.match(name) and isinstance(tier, dict)
            for name, tier in lists.items()):
        return Refused("bad_format", f"lists must map at most {MAX_LISTS} list names to "
                       "their tiers (objects)")
    base: Any = None
    removed: list[tuple[str, str]] = []
    if data["v"] == VERSION_DELTA:
        base, gone = data.get("base"), data.get("removed")
        if type(base) is not int or not 0 < base < version:
            return Refused("bad_format", f"base must be a version before {version}, got "
                           f"{base!r}")
        if not isinstance(gone, list) or len(gone) + len(entries) > MAX_DELTA or not all(
                isinstance(g, list) and len(g) == 2
                and all(isinstance(x, str) and _ID.match(x) for x in g) for g in gone):
            return Refused("bad_format", "removed must be a list of [list, person] ids, "
                           f"with the entries at most {MAX_DELTA} changes")
        removed = [(g[0], g[1]) for g in gone]
    next_keys = data.get("next_keys", [])
    if not isinstance(next_keys, list) or len(next_keys) > MAX_NEXT_KEYS or not all(
            isinstance(k, str) and len(k) < 1024 and load_public(k.encode()) is not None
            for k in next_keys):
        return Refused("bad_format", f"next_keys must be at most {MAX_NEXT_KEYS} Ed25519 "
                       "public keys (PEM)")
    revoked = data.get("revoked", [])
    if not isinstance(revoked, list) or len(revoked) > MAX_REVOKED or not all(
            isinstance(r, str) and _DIGEST.match(r) for r in revoked):
        return Refused("bad_format", f"revoked must be at most {MAX_REVOKED} key "
                       "fingerprints (16 hex digits)")
    out: list[Entry] = []
    for i, raw in enumerate(entries):
        entry = _entry(raw)
        if isinstance(entry, str):
            return Refused("bad_format", f"entries[{i}]: {entry}")
        out.append(entry)
    return WatchlistMessage(site, version, out, part, parts, digest, lists,
                            [k.encode() for k in next_keys], list(revoked),
                            kid, base, removed)


def build(site: str, version: int, entries: list[dict[str, Any]],
          signed: Callable[[dict[str, Any]], bytes],
          limit: int = MAX_MESSAGE_BYTES,
          lists: dict[str, dict[str, Any]] | None = None) -> list[bytes]:
    """The messages that carry `entries` (and the tiers of their `lists`, in every part) to
    `site` at `version`, each at most `limit` bytes: one v1 message when the whole list
    fits, else v2 parts filled in order. ValueError when it would take more than MAX_PARTS
    parts (or an entry alone does not fit in one)."""
    tiers = {} if lists is None else {"lists": lists}
    whole = signed({"v": VERSION, "site": site, "version": version, "entries": entries,
                    **tiers})
    if len(whole) <= limit:
        return [whole]
    if len(entries) > MAX_ENTRIES:
        raise ValueError(f"{len(entries)} entries, more than the {MAX_ENTRIES} a list may hold")
    digest = hashlib.sha256(orjson.dumps(entries)).hexdigest()[:16]
    # Everything but the entries, at its longest (part and parts of two digits).
    frame = len(signed({"v": VERSION_PARTS, "site": site, "version": version, "part": 99,
                        "parts": 99, "digest": digest, "entries": [], **tiers}))
    cuts: list[list[dict[str, Any]]] = [[]]
    size = frame
    for entry in entries:
        grows = len(orjson.dumps(entry)) + 1  # and its comma
        if frame + grows > limit:
            raise ValueError(f"entry {entry.get('id')} alone is over {limit} bytes")
        if size + grows > limit:
            cuts.append([])
            size = frame
        cuts[-1].append(entry)
        size += grows
    if len(cuts) > MAX_PARTS:
        raise ValueError(f"{len(cuts)} parts of {limit} bytes, more than {MAX_PARTS}")
    return [signed({"v": VERSION_PARTS, "site": site, "version": version, "part": i + 1,
                    "parts": len(cuts), "digest": digest, "entries": cut, **tiers})
            for i, cut in enumerate(cuts)]


def build_delta(site: str, version: int, base: int, entries: list[dict[str, Any]],
                removed: list[tuple[str, str]], signed: Callable[[dict[str, Any]], bytes],
                lists: dict[str, dict[str, Any]] | None = None,
                limit: int = MAX_MESSAGE_BYTES) -> bytes | None:
    """The delta from `base` to `version`, or None when it must go whole (more than
    MAX_DELTA changes, or over `limit` bytes)."""
    if len(entries) + len(removed) > MAX_DELTA:
        return None
    message = signed({"v": VERSION_DELTA, "site": site, "version": version, "base": base,
                      "entries": entries, "removed": [list(r) for r in removed],
                      **({} if lists is None else {"lists": lists})})
    return message if len(message) <= limit else None


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
        if type(raw.get(name)) is not int or not 0 <= raw[name] <= MAX_EPOCH_MS:
            return f"{name} must be epoch ms (up to the year 9999)"
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
