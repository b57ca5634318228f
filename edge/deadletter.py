"""A message the edge failed on, by a bug of ours, still reaches a person.

When processing a device message raises (a bug in the pipeline or in a rule), the message is
not acknowledged away: it becomes a `processing_failed` alert that carries the raw message
(device, topic, payload) and the error, and takes the one road (outbox, uplink, cloud) to the
duty officer's board, so they see that button btn-0001 sent something that could not be
handled and can call the resident. Its id is a pure function of the message, so a redelivery
after a crash is the same alert. A device that can raise a life-safety alert makes it critical
and life-safety (it might have been an SOS); any other device, high.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from edge.config import DeviceBinding
from shouwang.ids import derived_id
from shouwang.profiles import LIFE_SAFETY_TYPES, DeviceProfile
from shouwang.records import Alert

ALERT_TYPE = "processing_failed"
RAW_KEPT = 4096  # bytes of the payload carried in the alert (a device payload is small)


def dead_letter(
    site: str,
    topic: str,
    payload: bytes,
    error: str,
    now_ms: int,
    binding: DeviceBinding | None,
    profile: DeviceProfile | None,
    rule: str | None = None,
) -> Alert:
    """The alert that carries a message we failed on to a person."""
    parts = topic.split("/")
    device = parts[1] if len(parts) == 3 and parts[0] == "dev" else "gateway"
    happened = _message_ts(payload) or now_ms
    digest = hashlib.sha256(payload).hexdigest()
    critical = profile is not None and any(
        e.alert is not None and e.alert.type in LIFE_SAFETY_TYPES for e in profile.events.values()
    )
    resident = binding.resident if binding is not None else None
    subject = f"resident:{resident}" if resident else f"device:{device}"
    where = f" by rule {rule}" if rule else ""
    detail: dict[str, Any] = {
        "what": f"{device} sent a message that could not be processed{where}",
        "error": error,
        "rule": rule,
        "raw": {
            "device": device,
            "topic": topic,
            "payload": payload[:RAW_KEPT].decode("utf-8", "replace"),
            "bytes": len(payload),
            "sha256": digest,
        },
    }
    return Alert(
        id=derived_id(happened, site, ALERT_TYPE, topic, digest, rule or ""),
        site=site,
        type=ALERT_TYPE,
        severity="critical" if critical else "high",
        device=device,
        subject=subject,
        dedup_key=f"{subject}|{ALERT_TYPE}",
        ts=happened,
        source_id=digest,
        life_safety=critical,
        resident=resident,
        location=binding.location if binding is not None else None,
        detail=detail,
        raised_ms=now_ms,
    )


def _message_ts(payload: bytes) -> int | None:
    """The envelope's own `ts`, when there is one to read: the message's time, not ours."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    ts = data.get("ts") if isinstance(data, dict) else None
    return ts if type(ts) is int and ts > 0 else None
