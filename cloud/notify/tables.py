"""Every table the notifiers keep, on the shared metadata (one place for a future migration)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Index,
    Integer,
    String,
    Table,
    Text,
    delete,
    select,
)

from cloud.schema import metadata
from cloud.store import Store

RESULTS = ("delivered", "failed", "rate_limited", "digested")

notification_attempts = Table(
    "notification_attempts",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("alert_id", String(64), nullable=False),
    Column("recipient", String(200), nullable=False),
    Column("stage", String(64), nullable=False),  # the escalation step, or "digest"
    Column("channel", String(32), nullable=False),
    Column("target", String(200), nullable=False),  # redacted: never a token or an address
    Column("attempt", Integer),  # 1, 2, ... for sends; null for rate_limited and digested
    Column("result", String(16), nullable=False),
    Column("reason", Text),
    Column("http_status", Integer),
    Column("ts", BigInteger, nullable=False),
    Index("notification_attempts_alert", "alert_id", "seq"),
)

push_subscriptions = Table(
    "push_subscriptions",
    metadata,
    Column("id", String(32), primary_key=True),  # derived from the endpoint
    Column("user_id", String(128), nullable=False, index=True),
    Column("endpoint", Text, nullable=False),
    Column("p256dh", String(128), nullable=False),
    Column("auth", String(64), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
)

vapid_keys = Table(
    "vapid_keys",
    metadata,
    Column("id", Integer, primary_key=True),  # always 1: one key pair per deployment
    Column("private_pem", Text, nullable=False),
    Column("public_key", String(128), nullable=False),  # base64url, uncompressed point
    Column("created_ms", BigInteger, nullable=False),
)

# Work that must survive a restart and be shared by several cloud workers: digest items
# waiting for their window, and retries waiting for their time. A worker claims rows
# (claim, claimed_ms) before sending and deletes them after; a claim older than the claim
# timeout is released, so a worker killed mid-send delays the work, never loses it.
notification_pending = Table(
    "notification_pending",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(8), nullable=False),  # "digest" or "retry"
    Column("recipient", String(200), nullable=False),
    Column("due_ms", BigInteger, nullable=False),
    Column("stage", String(64), nullable=False),
    Column("alert_id", String(64)),  # digest: the alert collected
    Column("channel", String(32)),  # retry: where to, and which attempt comes next
    Column("target_key", String(200)),
    Column("attempt", Integer),
    Column("body", JSON, nullable=False),  # digest: the alert summary; retry: the message
    Column("claim", String(40)),
    Column("claimed_ms", BigInteger),
    Index("notification_pending_due", "kind", "due_ms"),
    Index("notification_pending_recipient", "kind", "recipient"),
)

TABLES = [notification_attempts, push_subscriptions, vapid_keys, notification_pending]
_PUBLIC = ("ts", "recipient", "stage", "channel", "target", "attempt", "result", "reason",
           "http_status")


async def record_attempts(store: Store, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    for row in rows:
        assert row["result"] in RESULTS, row["result"]
    async with store.engine.begin() as conn:
        await conn.execute(notification_attempts.insert(), rows)


async def alert_attempts(store: Store, alert_id: str) -> list[dict[str, Any]]:
    """Every delivery attempt for one alert, oldest first, ready for its timeline in the API.

    Targets are stored redacted, so this is safe to show to anyone who may see the alert.
    """
    query = (
        select(*(notification_attempts.c[name] for name in _PUBLIC))
        .where(notification_attempts.c.alert_id == alert_id)
        .order_by(notification_attempts.c.seq)
    )
    async with store.engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    return [dict(r) for r in rows]


async def subscriptions_of(store: Store, user_id: str) -> list[dict[str, Any]]:
    query = (
        select(push_subscriptions)
        .where(push_subscriptions.c.user_id == user_id)
        .order_by(push_subscriptions.c.created_ms, push_subscriptions.c.id)
    )
    async with store.engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(query)).mappings().all()]


async def save_subscription(store: Store, row: dict[str, Any]) -> None:
    """Insert or replace: a browser that subscribes again keeps one row, with the latest keys."""
    stmt = store.insert(push_subscriptions).values(**row)
    stmt = stmt.on_conflict_do_update(
        index_elements=["id"],
        set_={k: stmt.excluded[k] for k in ("user_id", "endpoint", "p256dh", "auth")},
    )
    async with store.engine.begin() as conn:
        await conn.execute(stmt)


async def delete_subscription(store: Store, sub_id: str, user_id: str | None = None) -> bool:
    stmt = delete(push_subscriptions).where(push_subscriptions.c.id == sub_id)
    if user_id is not None:
        stmt = stmt.where(push_subscriptions.c.user_id == user_id)
    async with store.engine.begin() as conn:
        return bool((await conn.execute(stmt)).rowcount)
