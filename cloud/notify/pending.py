"""Digest items and retries kept in the database: they survive a restart, workers share them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, delete, func, select, update

from cloud.notify.tables import notification_pending as pending
from cloud.store import Store

DIGEST, RETRY = "digest", "retry"


async def add(store: Store, row: dict[str, Any]) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(pending.insert().values(**row))


async def add_digest_item(
    store: Store, recipient: str, alert_id: str, stage: str, body: dict[str, Any],
    now_ms: int, window_ms: int,
) -> int:
    """Collect one alert into `recipient`'s open digest; returns how many it now holds.

    Every item of an open digest carries the due time of its first item, so "due" selects
    whole digests.
    """
    async with store.engine.begin() as conn:
        open_due = (
            await conn.execute(
                select(func.min(pending.c.due_ms)).where(
                    pending.c.kind == DIGEST, pending.c.recipient == recipient,
                    pending.c.claim.is_(None),
                )
            )
        ).scalar_one_or_none()
        known = (
            await conn.execute(
                select(func.count()).where(
                    pending.c.kind == DIGEST, pending.c.recipient == recipient,
                    pending.c.alert_id == alert_id, pending.c.claim.is_(None),
                )
            )
        ).scalar_one()
        if not known:  # the same alert twice in one digest is listed once
            await conn.execute(pending.insert().values(
                kind=DIGEST, recipient=recipient, due_ms=open_due or now_ms + window_ms,
                stage=stage, alert_id=alert_id, body=body,
            ))
        count = (
            await conn.execute(
                select(func.count()).where(
                    pending.c.kind == DIGEST, pending.c.recipient == recipient,
                    pending.c.claim.is_(None),
                )
            )
        ).scalar_one()
    return int(count)


async def release_stale(store: Store, now_ms: int, timeout_ms: int) -> int:
    """Free claims of a worker that died mid-send; returns how many rows came back."""
    stmt = (
        update(pending)
        .where(pending.c.claim.is_not(None), pending.c.claimed_ms < now_ms - timeout_ms)
        .values(claim=None, claimed_ms=None)
    )
    async with store.engine.begin() as conn:
        return int((await conn.execute(stmt)).rowcount)


async def claim(
    store: Store, kind: str, token: str, now_ms: int, *, recipient: str | None = None,
    limit: int = 500,
) -> list[dict[str, Any]]:
    """Take due rows of `kind` (all of `recipient`'s, due or not, when given) for this worker.

    Each row goes to exactly one claimant: the UPDATE only takes rows nobody holds.
    """
    where = [pending.c.kind == kind, pending.c.claim.is_(None)]
    where.append(pending.c.recipient == recipient if recipient else pending.c.due_ms <= now_ms)
    chosen = select(pending.c.seq).where(and_(*where)).order_by(pending.c.seq).limit(limit)
    async with store.engine.begin() as conn:
        await conn.execute(
            update(pending)
            .where(pending.c.seq.in_(chosen.scalar_subquery()), pending.c.claim.is_(None))
            .values(claim=token, claimed_ms=now_ms)
        )
        rows = (
            await conn.execute(
                select(pending).where(pending.c.claim == token).order_by(pending.c.seq)
            )
        ).mappings().all()
    return [dict(r) for r in rows]


async def done(store: Store, token: str) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(delete(pending).where(pending.c.claim == token))


async def count(store: Store, kind: str) -> int:
    async with store.engine.connect() as conn:
        n = (await conn.execute(select(func.count()).where(pending.c.kind == kind))).scalar_one()
    return int(n)
