"""What a bug kept the cloud from handling is kept, and a person is told.

An envelope whose handler raises (a bug, not a refusal: refusals are counted and confirmed
with their reason) used to be left unconfirmed, so its gateway sent it again forever. Now it
is kept in `dead_letters` as it arrived, a `processing_failed` alert carrying it is raised for
the duty officers of its place (the resident and location the registry has for the device it
names, when the envelope is an alert: never what the envelope says; admins only otherwise),
and the envelope is confirmed to its gateway. Both are
keyed by the envelope's id: a redelivery changes nothing.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from sqlalchemy import select

from cloud.fleet import Fleet, Placement
from cloud.schema import dead_letters
from cloud.store import Store
from shouwang.ids import derived_id
from shouwang.mqtt import Message
from shouwang.protocol import Rejection, make_envelope, parse_site_topic

ALERT_TYPE = "processing_failed"
RAW_KEPT = 4096  # bytes of a payload shown in the alert; the dead letter keeps it whole
ACTOR = "system:ingest"
_COLUMNS = ("id", "site", "topic", "payload", "error", "received_ms")


class DeadLetters:
    def __init__(self, store: Store, fleet: Fleet) -> None:
        self.store = store
        self.fleet = fleet

    async def keep(
        self, messages: list[Message], error: str, now_ms: int
    ) -> dict[str, Any] | None:
        """Store the messages and their alert; the alert as stored, or None when every one
        of them was kept before (a redelivery)."""
        letters = [_letter(m, error, now_ms) for m in messages]
        ids = [row["id"] for row in letters]
        async with self.store.engine.connect() as conn:
            known = set(
                (await conn.execute(select(dead_letters.c.id).where(dead_letters.c.id.in_(ids))))
                .scalars()
            )
        fresh = [row for row in letters if row["id"] not in known]
        if not fresh:
            return None
        first = fresh[0]
        where = None
        if first["site"] and first["_kind"] == "alert":
            where = await self.fleet.placement(first["site"], first["device"])
        alert_id = derived_id(now_ms, "dead_letter", *(row["id"] for row in fresh))
        env = make_envelope(
            site=first["site"] or "unknown", device=first["device"], kind="alert",
            body=_alert_body(fresh, error, where), ts=now_ms, id=alert_id,
        )
        async with self.store.engine.begin() as conn:
            for row in fresh:
                await conn.execute(
                    self.store.insert(dead_letters)
                    .values(**{k: row[k] for k in _COLUMNS}, alert_id=alert_id)
                    .on_conflict_do_nothing(index_elements=["id"])
                )
        return await self.store.insert_alert(env, actor=ACTOR)


def _letter(message: Message, error: str, now_ms: int) -> dict[str, Any]:
    topic = parse_site_topic(message.topic)
    site, kind = (None, None) if isinstance(topic, Rejection) else topic
    try:
        data = orjson.loads(message.payload)
    except orjson.JSONDecodeError:
        data = None
    envelope = data if isinstance(data, dict) else {}
    given = envelope.get("id")
    key = given if isinstance(given, str) and 0 < len(given) <= 64 else None
    device = envelope.get("device")
    return {
        "id": key or hashlib.sha256(message.payload).hexdigest()[:64],
        "site": site,
        "device": device if isinstance(device, str) and device else "unknown",
        "topic": message.topic[:256],
        "payload": message.payload.decode("utf-8", "replace"),
        "error": error,
        "received_ms": now_ms,
        "_kind": kind,
        "_body": envelope.get("body") if isinstance(envelope.get("body"), dict) else {},
    }


def _alert_body(
    letters: list[dict[str, Any]], error: str, where: Placement | None
) -> dict[str, Any]:
    first = letters[0]
    body = first["_body"]
    # An alert envelope gets the place and person of its device, so the station that covers
    # it sees it; from the registry, since a gateway may name anyone's.
    location = where.location if where is not None else None
    resident = where.resident if where is not None else None
    life_safety = body.get("life_safety") is True
    subject = f"resident:{resident}" if resident else f"device:{first['device']}"
    return {
        "type": ALERT_TYPE,
        "severity": "critical" if life_safety else "high",
        "subject": subject,
        "dedup_key": f"{subject}|{ALERT_TYPE}",
        "source_id": first["id"],
        "life_safety": life_safety,
        "resident": resident,
        "location": location,
        "detail": {
            "what": f"the cloud could not process {len(letters)} message(s) from "
            f"{first['device']}",
            "error": error,
            "raw": {
                "topic": first["topic"],
                "payload": first["payload"][:RAW_KEPT],
                "dead_letters": [row["id"] for row in letters],
            },
        },
    }
