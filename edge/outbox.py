"""The store-and-forward outbox: SQLite in WAL mode, ordered by priority class, then age.

A row leaves the outbox only after the cloud broker acknowledged it. Ids are the envelope
ids, so putting the same message twice (a device message redelivered after a crash) is a
no-op. All SQLite work runs on one dedicated thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import enum
import sqlite3
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class Priority(enum.IntEnum):
    LIFE_SAFETY = 0
    SECURITY = 1
    HEALTH = 2
    TELEMETRY = 3
    BULK = 4


@dataclass(frozen=True, slots=True)
class Row:
    id: str
    priority: int
    topic: str
    payload: bytes


_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    priority INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_order ON outbox (priority, seq);
"""


class Outbox:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        self._db: sqlite3.Connection | None = None

    async def open(self) -> None:
        await self._run(self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed row survives power loss, not only a process crash.
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        self._db = db

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._executor.shutdown(wait=True)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("outbox is not open")
        return self._db

    async def put(
        self, id: str, priority: Priority, topic: str, payload: bytes, now_ms: int
    ) -> bool:
        """Store durably; False when a row with this id is already there."""
        return bool(await self._run(self._put, id, int(priority), topic, payload, now_ms))

    def _put(self, id: str, priority: int, topic: str, payload: bytes, now_ms: int) -> int:
        cur = self._conn().execute(
            "INSERT OR IGNORE INTO outbox (id, priority, topic, payload, created_ms)"
            " VALUES (?, ?, ?, ?, ?)",
            (id, priority, topic, payload, now_ms),
        )
        return cur.rowcount

    async def next_batch(self, limit: int) -> list[Row]:
        """The oldest rows of the most urgent class first."""
        return list(await self._run(self._next_batch, limit))

    def _next_batch(self, limit: int) -> list[Row]:
        rows = (
            self._conn()
            .execute(
                "SELECT id, priority, topic, payload FROM outbox ORDER BY priority, seq LIMIT ?",
                (limit,),
            )
            .fetchall()
        )
        return [Row(r[0], r[1], r[2], bytes(r[3])) for r in rows]

    async def delete(self, ids: Iterable[str]) -> None:
        await self._run(self._delete, list(ids))

    def _delete(self, ids: list[str]) -> None:
        db = self._conn()
        db.execute("BEGIN")
        db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])
        db.execute("COMMIT")

    async def depth(self) -> dict[int, int]:
        return dict(await self._run(self._depth))

    def _depth(self) -> list[tuple[int, int]]:
        return (
            self._conn()
            .execute("SELECT priority, COUNT(*) FROM outbox GROUP BY priority")
            .fetchall()
        )
