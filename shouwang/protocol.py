"""Wire protocol v1: the JSON envelope, topic helpers and validation that says why it failed."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from shouwang.ids import new_id

PROTOCOL_VERSION = 1
MAX_PAYLOAD_BYTES = 64 * 1024
DEVICE_KINDS = ("telemetry", "event", "status", "config", "cmd")
SITE_KINDS = ("alert", "event", "telemetry", "health", "evidence")

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}\Z")
_REQUIRED = ("v", "id", "device", "kind", "ts", "body")
_ALLOWED = frozenset({*_REQUIRED, "site"})
# Timestamps before 2020 or more than a day ahead are a device clock fault, not data.
_TS_MIN = 1_577_836_800_000
_TS_FUTURE_SLACK_MS = 86_400_000
# A JSON string holding U+0000: `\u0000` after an even number of backslashes (an odd number
# would escape its own backslash). PostgreSQL's text cannot hold NUL, so a string with one
# that reached a text column failed the write again at every retry; no device or gateway
# has a reason to send one.
_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
# What both databases store in a BIGINT; orjson reads integers up to 2**64 - 1.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True, slots=True)
class Envelope:
    v: int
    id: str
    site: str | None
    device: str
    kind: str
    ts: int
    body: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": self.v,
            "id": self.id,
            "site": self.site,
            "device": self.device,
            "kind": self.kind,
            "ts": self.ts,
            "body": self.body,
        }

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.to_dict())


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message was refused: `reason` is a short metric label, `detail` is for the log."""

    reason: str
    detail: str


def now_ms() -> int:
    return int(time.time() * 1000)


def make_envelope(
    *,
    site: str | None,
    device: str,
    kind: str,
    body: dict[str, Any],
    ts: int | None = None,
    id: str | None = None,
) -> Envelope:
    return Envelope(
        v=PROTOCOL_VERSION,
        id=id or new_id(),
        site=site,
        device=device,
        kind=kind,
        ts=now_ms() if ts is None else ts,
        body=body,
    )


def parse_envelope(
    payload: bytes, *, max_bytes: int = MAX_PAYLOAD_BYTES, now: int | None = None
) -> Envelope | Rejection:
    """Decode and check one envelope; never raises on bad input."""
    if len(payload) > max_bytes:
        return Rejection("oversize", f"payload of {len(payload)} bytes exceeds {max_bytes}")
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as err:
        return Rejection("not_json", f"payload is not JSON: {err}")
    if not isinstance(data, dict):
        return Rejection("invalid_envelope", f"envelope must be an object, got {_type(data)}")
    if b"\\u0000" in payload and _NUL.search(payload):
        return Rejection("invalid_envelope", "a string holds the character U+0000 (NUL)")
    # Per message: a valid envelope's keys are within the allowed ones and hold all required.
    if not (data.keys() <= _ALLOWED and len(data) - ("site" in data) == len(_REQUIRED)):
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            return Rejection("invalid_envelope", f"missing field(s): {', '.join(missing)}")
        extra = sorted(set(data) - _ALLOWED)
        if extra:
            return Rejection("invalid_envelope", f"unknown field(s): {', '.join(extra)}")
    v, id_, site, device = data["v"], data["id"], data.get("site"), data["device"]
    kind, ts, body = data["kind"], data["ts"], data["body"]
    if type(v) is not int:
        return Rejection("invalid_envelope", f"field 'v' must be an integer, got {_type(v)}")
    if v != PROTOCOL_VERSION:
        return Rejection("unsupported_version", f"protocol version {v} is not supported")
    for name, value in (("id", id_), ("device", device)):
        if not isinstance(value, str) or not _ID_RE.match(value):
            return Rejection(
                "invalid_envelope", f"field '{name}' must be 1-64 of [A-Za-z0-9_.:-], got {value!r}"
            )
    if site is not None and (not isinstance(site, str) or not _ID_RE.match(site)):
        return Rejection("invalid_envelope", f"field 'site' must be an id, got {site!r}")
    if kind not in DEVICE_KINDS and kind not in SITE_KINDS:
        return Rejection("invalid_envelope", f"field 'kind' has unknown value {kind!r}")
    if type(ts) is not int:
        return Rejection("invalid_envelope", f"field 'ts' must be integer ms, got {_type(ts)}")
    current = now_ms() if now is None else now
    if ts < _TS_MIN or ts > current + _TS_FUTURE_SLACK_MS:
        return Rejection("bad_timestamp", f"field 'ts' {ts} is outside the accepted window")
    if not isinstance(body, dict):
        return Rejection("invalid_envelope", f"field 'body' must be an object, got {_type(body)}")
    return Envelope(v=v, id=id_, site=site, device=device, kind=kind, ts=ts, body=body)


def is_int64(value: object) -> bool:
    """An integer (not a bool) that fits a BIGINT column on both databases."""
    return type(value) is int and INT64_MIN <= value <= INT64_MAX


def _type(value: object) -> str:
    return type(value).__name__


# --- topics -------------------------------------------------------------------------------

DeviceTopicKind = Literal["telemetry", "event", "status", "config", "cmd"]


def device_topic(device_id: str, kind: str) -> str:
    return f"dev/{device_id}/{kind}"


def site_up_topic(site_id: str, kind: str) -> str:
    return f"site/{site_id}/up/{kind}"


def site_down_topic(site_id: str, kind: str) -> str:
    return f"site/{site_id}/down/{kind}"


# Cloud ingest streams, each with its own connection, so an SOS never waits behind telemetry.
# Alerts use a plain subscription per worker, not a shared one: Mosquitto 2.0 keeps a
# persistent session over a broker restart but drops its shared subscriptions, so an alert
# acknowledged to the edge in that window would be lost. Every worker gets every alert and
# the idempotent insert stores it once (alerts are few). Other kinds share the load.
# The cloud broker's ACL allows ingest this one group (cloud/provision.py).
SHARE_GROUP = "cloud"
CLOUD_STREAMS: dict[str, tuple[str, ...]] = {
    "alerts": ("site/+/up/alert",),
    "data": tuple(f"$share/{SHARE_GROUP}/site/+/up/{k}" for k in SITE_KINDS if k != "alert"),
}


def parse_device_topic(topic: str) -> tuple[str, str] | Rejection:
    """`dev/{device}/{kind}` → (device, kind)."""
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != "dev" or parts[2] not in DEVICE_KINDS:
        return Rejection("wrong_topic", f"topic {topic!r} is not dev/{{device}}/{{kind}}")
    if not _ID_RE.match(parts[1]):
        return Rejection("wrong_topic", f"topic {topic!r} has an invalid device id")
    return parts[1], parts[2]


def parse_site_topic(topic: str) -> tuple[str, str] | Rejection:
    """`site/{site}/up/{kind}` → (site, kind)."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != "site" or parts[2] != "up" or parts[3] not in SITE_KINDS:
        return Rejection("wrong_topic", f"topic {topic!r} is not site/{{site}}/up/{{kind}}")
    if not _ID_RE.match(parts[1]):
        return Rejection("wrong_topic", f"topic {topic!r} has an invalid site id")
    return parts[1], parts[3]
