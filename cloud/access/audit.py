"""The audit log: who did what to which alert or account, and when.

What is recorded (docs/access.md): every login success, failure and refusal, every logout,
every alert transition and dispatch, every read of one alert's detail, every request refused
because the alert is outside the user's scope, and every account change.
List requests are not recorded one by one: they are frequent and show no more than a detail
read, which is recorded.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cloud.access.tables import audit_log


async def record(
    conn: AsyncConnection,
    *,
    ts: int,
    actor: str,
    action: str,
    target: str | None = None,
    remote: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    await conn.execute(
        audit_log.insert().values(
            ts=ts, actor=actor, action=action, target=target, remote=remote, detail=detail
        )
    )


async def entries(
    engine: AsyncEngine, *, action: str | None = None, target: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    query = select(audit_log).order_by(audit_log.c.seq.desc()).limit(limit)
    if action is not None:
        query = query.where(audit_log.c.action == action)
    if target is not None:
        query = query.where(audit_log.c.target == target)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    return [dict(r) for r in rows]
