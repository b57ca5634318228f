"""What a gateway's rules say about an alert it raised before: worse, again, or over.

The edge keeps one alert per (subject, type). When the condition worsens it sends another
`alert` envelope for the same dedup key with `detail.update = "escalated"` and
`detail.supersedes` naming the first; when the same thing happens again (the button pressed
again, a second fall) it sends one with `detail.update = "repeated"`; when the condition clears
(for types that allow it) it sends an `event` with `body.type = "alert_resolved"` and the
alert's id. Here an escalation is folded into the alert people are already working on (new
severity, the latest why, a line in its timeline), a repeat is counted on it (`repeats`,
`last_ms`, a line in its timeline), and a resolution closes an alert nobody has been sent to
yet; a dispatched alert only gets the news in its timeline, since the worker on the way closes
the case. Every change counts up the alert's `version`.

Each update is applied once, in one transaction with the record of its envelope (the `events`
table), so a redelivery, or several workers receiving the same alert stream, change nothing
twice. An update that cannot apply (its alert is unknown, already closed, or another site's) is
not lost: an escalation or a repeat is then a new alert of its own (`as_new_alert`: a press
after the case was closed is a new case), a resolution a plain event.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.schema import alert_transitions, alerts, events
from cloud.store import Store
from shouwang.protocol import Envelope

CLOSED = frozenset({"resolved", "false_alarm"})
AUTO_RESOLVE_FROM = frozenset({"open", "acknowledged"})


class NotApplicable(Exception):
    """The update names no open alert of this site; the caller stores it another way."""


UPDATES = ("escalated", "repeated")


def update_of(env: Envelope) -> tuple[str, str] | None:
    """(kind, alert id) of the update an `alert` envelope carries, or None for a new alert."""
    detail = env.body.get("detail")
    if not isinstance(detail, dict) or detail.get("update") not in UPDATES:
        return None
    target = detail.get("supersedes")
    return (detail["update"], target) if isinstance(target, str) and target else None


def escalation_of(env: Envelope) -> str | None:
    """The id of the alert an `alert` envelope escalates, or None."""
    found = update_of(env)
    return found[1] if found is not None and found[0] == "escalated" else None


def as_new_alert(env: Envelope) -> Envelope:
    """An update whose alert is closed (or unknown) as the new alert it then is: the
    detail says which alert it followed instead of which it updates."""
    detail = dict(env.body.get("detail") or {})
    follows = detail.get("supersedes")
    for key in ("update", "supersedes", "alert_id", "previous_severity", "repeats", "last_ms"):
        detail.pop(key, None)
    if isinstance(follows, str):
        detail["follows"] = follows
    return replace(env, body={**env.body, "detail": detail})


def resolution_of(env: Envelope) -> str | None:
    """The id of the alert an `event` envelope resolves, or None."""
    if env.body.get("type") != "alert_resolved":
        return None
    target = env.body.get("alert_id")
    return target if isinstance(target, str) and target else None


async def escalate(store: Store, env: Envelope, target: str) -> dict[str, Any] | None:
    """Fold the escalation `env` into alert `target`; the updated alert, or None when this
    escalation was applied before. Raises NotApplicable when `target` is not open here."""
    now = _now_ms()
    async with store.engine.begin() as conn:
        if not await _record(store, conn, env, "alert_escalated", now):
            return None
        row = await _open_alert(conn, target, env.site)
        old_body = row["body"] or {}
        detail = {**(old_body.get("detail") or {}), **(env.body.get("detail") or {})}
        detail["escalations"] = int((old_body.get("detail") or {}).get("escalations", 0)) + 1
        body = {
            **old_body,
            "severity": env.body["severity"],
            "life_safety": bool(old_body.get("life_safety") or env.body.get("life_safety")),
            "detail": detail,
        }
        await conn.execute(
            update(alerts)
            .where(alerts.c.id == target)
            .values(
                severity=env.body["severity"], life_safety=body["life_safety"], body=body,
                version=alerts.c.version + 1,
            )
        )
        await _timeline(
            conn, target, row["state"], row["state"], f"site:{env.site}", now,
            f"escalated by the gateway's rules: {row['severity']} → {env.body['severity']}",
        )
    return await store.get_alert(target)


async def resolve(store: Store, env: Envelope, target: str) -> dict[str, Any] | None:
    """Apply the resolution `env` to alert `target`; the updated alert, or None when this
    resolution was applied before. Raises NotApplicable when `target` is not open here."""
    now = _now_ms()
    why = env.body.get("why")
    note = "the condition cleared at the gateway" + (f" ({why})" if isinstance(why, str) else "")
    async with store.engine.begin() as conn:
        if not await _record(store, conn, env, "alert_resolved", now):
            return None
        row = await _open_alert(conn, target, env.site)
        state = row["state"]
        if state in AUTO_RESOLVE_FROM:
            result = await conn.execute(
                update(alerts)
                .where(alerts.c.id == target, alerts.c.state == state)
                .values(state="resolved", state_changed_ms=now, version=alerts.c.version + 1)
            )
            if result.rowcount != 1:
                raise NotApplicable(f"alert {target} changed concurrently")
            await _timeline(conn, target, state, "resolved", f"site:{env.site}", now, note)
        else:  # dispatched: the worker on the way closes it; the timeline gets the news
            await conn.execute(
                update(alerts).where(alerts.c.id == target).values(version=alerts.c.version + 1)
            )
            await _timeline(conn, target, state, state, f"site:{env.site}", now, note)
    return await store.get_alert(target)


async def repeat(store: Store, env: Envelope, target: str) -> dict[str, Any] | None:
    """Count the repeat `env` on alert `target`; the updated alert, or None when this repeat
    was counted before. Raises NotApplicable when `target` is not open here (closed: the
    repeat is a new alert)."""
    now = _now_ms()
    async with store.engine.begin() as conn:
        if not await _record(store, conn, env, "alert_repeated", now):
            return None
        row = await _open_alert(conn, target, env.site)
        await conn.execute(
            update(alerts)
            .where(alerts.c.id == target)
            .values(
                repeats=alerts.c.repeats + 1,
                last_ms=func.max(func.coalesce(alerts.c.last_ms, 0), env.ts)
                if store.engine.dialect.name == "sqlite"
                else func.greatest(func.coalesce(alerts.c.last_ms, 0), env.ts),
                version=alerts.c.version + 1,
            )
        )
        what = (env.body.get("detail") or {}).get("what") or env.body.get("type")
        await _timeline(
            conn, target, row["state"], row["state"], f"site:{env.site}", now,
            f"repeated: {what}",
        )
    return await store.get_alert(target)


async def _record(
    store: Store, conn: AsyncConnection, env: Envelope, name: str, now: int
) -> bool:
    """The update's envelope, once; False when it is there already."""
    stmt = (
        store.insert(events)
        .values(
            id=env.id, site=env.site, device=env.device, name=name, ts=env.ts,
            received_ms=now, body=env.body,
        )
        .on_conflict_do_nothing(index_elements=["id"])
    )
    return bool((await conn.execute(stmt)).rowcount == 1)


async def _open_alert(conn: AsyncConnection, alert_id: str, site: str | None) -> Any:
    row = (
        await conn.execute(
            select(alerts.c.state, alerts.c.severity, alerts.c.site, alerts.c.body).where(
                alerts.c.id == alert_id
            )
        )
    ).mappings().first()
    if row is None or row["site"] != site or row["state"] in CLOSED:
        # Rolls back the record of the envelope too: the caller stores it another way.
        raise NotApplicable(f"alert {alert_id} is not open at site {site}")
    return row


async def _timeline(
    conn: AsyncConnection, alert_id: str, before: str, after: str, actor: str, ts: int, note: str
) -> None:
    await conn.execute(
        alert_transitions.insert().values(
            alert_id=alert_id, from_state=before, to_state=after, actor=actor, ts=ts, note=note
        )
    )


def _now_ms() -> int:
    return int(time.time() * 1000)
