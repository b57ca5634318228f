"""The store-and-forward outbox: SQLite in WAL mode, ordered by priority class, then age.

A row leaves the outbox only after the cloud confirmed it stored it (or, with
`uplink.confirm: broker`, after the cloud broker's PUBACK), or when its class is over its byte
quota. A row that was published and awaits that confirmation is marked `sent_ms`; it is not
published again until the uplink gives it back (no confirmation in time, a reconnect, a
restart). A row once published (`published_ms`) is never evicted: the cloud may have it.
Life-safety rows are never evicted: over their quota they take room from the lower classes
(lowest first, oldest first) and the outbox reports itself critical. Every eviction is added
to a persistent drop ledger that the uplink reports to the cloud.

Ids are the envelope ids, so putting the same message twice (a device message redelivered
after a crash) is a no-op. All SQLite work runs on one dedicated thread, never on the event
loop.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import sqlite3
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class Priority(enum.IntEnum):
    LIFE_SAFETY = 0
    SECURITY = 1
    HEALTH = 2
    TELEMETRY = 3
    BULK = 4


MiB = 1024 * 1024
DEFAULT_QUOTAS = {
    Priority.LIFE_SAFETY: 64 * MiB,
    Priority.SECURITY: 32 * MiB,
    Priority.HEALTH: 16 * MiB,
    Priority.TELEMETRY: 256 * MiB,
    Priority.BULK: 512 * MiB,
}


@dataclass(frozen=True, slots=True)
class Row:
    id: str
    priority: int
    topic: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class NewRow:
    """A row to store. `items` counts the readings or events inside (a batch holds many);
    `first_ts`/`last_ts` bound their times, for the drop ledger."""

    id: str
    priority: Priority
    topic: str
    payload: bytes
    items: int = 1
    first_ts: int = 0
    last_ts: int = 0


@dataclass(frozen=True, slots=True)
class Drops:
    """What one class lost to eviction since the last report."""

    priority: int
    items: int
    rows: int
    bytes: int
    first_ts: int
    last_ts: int


_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    priority INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    size INTEGER NOT NULL,
    items INTEGER NOT NULL,
    first_ts INTEGER NOT NULL,
    last_ts INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    sent_ms INTEGER,
    published_ms INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_order ON outbox (priority, seq);
CREATE TABLE IF NOT EXISTS drops (
    priority INTEGER PRIMARY KEY,
    items INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    first_ts INTEGER NOT NULL,
    last_ts INTEGER NOT NULL
);
"""

# The rows the uplink may publish: a partial index keeps a long in-flight window off its path.
_UNSENT_INDEX = (
    "CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (priority, seq) WHERE sent_ms IS NULL"
)


class Outbox:
    def __init__(
        self,
        path: Path,
        quotas: dict[Priority, int] | None = None,
        max_page_count: int | None = None,
    ) -> None:
        self.path = path
        self.quotas = {**DEFAULT_QUOTAS, **(quotas or {})}
        self.critical = False  # life-safety is over its quota
        self._max_page_count = max_page_count  # tests simulate a full disk with it
        self._usage: dict[int, int] = {int(p): 0 for p in Priority}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        self._db: sqlite3.Connection | None = None
        self.damaged: Path | None = None  # where a damaged outbox found at start was kept

    async def open(self) -> None:
        await self._run(self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._connect()
        except sqlite3.DatabaseError as err:
            if isinstance(err, sqlite3.OperationalError):
                raise  # locked, unreadable, I/O: not damage, and not ours to move aside
            # A damaged file (a disk fault, not a torn write: the WAL recovers those). Starting
            # without an outbox would stop every alert, so the damaged file is kept aside for
            # recovery by hand and a new one is started, loudly, never silently.
            aside = self.path.with_name(f"{self.path.name}.damaged-{int(time.time() * 1000)}")
            for suffix in ("", "-wal", "-shm"):
                source = Path(f"{self.path}{suffix}")
                if source.exists():
                    source.rename(Path(f"{aside}{suffix}"))
            log.error("outbox %s is damaged (%s); kept it as %s, starting a new one",
                      self.path, err, aside)
            self.damaged = aside
            self._connect()

    def _connect(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        self._usage = {int(p): 0 for p in Priority}
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db = db
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed row survives power loss, not only a process crash.
        db.execute("PRAGMA synchronous=FULL")
        if self._max_page_count:
            db.execute(f"PRAGMA max_page_count={int(self._max_page_count)}")
        (verdict,) = db.execute("PRAGMA quick_check").fetchone()
        if verdict != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {verdict}")
        db.executescript(_SCHEMA)
        columns = {c[1] for c in db.execute("PRAGMA table_info(outbox)")}
        if "sent_ms" not in columns:  # an outbox written before end-to-end confirmation
            db.execute("ALTER TABLE outbox ADD COLUMN sent_ms INTEGER")
        if "published_ms" not in columns:
            db.execute("ALTER TABLE outbox ADD COLUMN published_ms INTEGER")
        db.execute(_UNSENT_INDEX)
        # What waited for a confirmation when we stopped is sent again; the cloud dedups it.
        db.execute("UPDATE outbox SET sent_ms = NULL WHERE sent_ms IS NOT NULL")
        for priority, size in db.execute("SELECT priority, SUM(size) FROM outbox GROUP BY 1"):
            self._usage[priority] = size
        self.critical = self._usage[Priority.LIFE_SAFETY] > self.quotas[Priority.LIFE_SAFETY]

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

    # --- writing ---------------------------------------------------------------------------

    async def put(
        self, id: str, priority: Priority, topic: str, payload: bytes, now_ms: int
    ) -> bool:
        """Store one row durably; False when a row with this id is already there."""
        [stored] = await self.put_many([NewRow(id, priority, topic, payload)], now_ms)
        return stored

    async def put_many(self, rows: Sequence[NewRow], now_ms: int) -> list[bool]:
        """Store rows in one transaction (one fsync); per row, whether it was new."""
        if not rows:
            return []
        return list(await self._run(self._put_many, list(rows), now_ms))

    def _put_many(self, rows: list[NewRow], now_ms: int) -> list[bool]:
        db = self._conn()
        usage = dict(self._usage)
        try:
            db.execute("BEGIN IMMEDIATE")
            stored = []
            for r in rows:
                size = len(r.payload)
                cur = db.execute(
                    "INSERT OR IGNORE INTO outbox (id, priority, topic, payload, size, items,"
                    " first_ts, last_ts, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        r.id,
                        int(r.priority),
                        r.topic,
                        r.payload,
                        size,
                        r.items,
                        r.first_ts,
                        r.last_ts,
                        now_ms,
                    ),
                )
                stored.append(cur.rowcount == 1)
                if cur.rowcount == 1:
                    usage[r.priority] += size
                    self._enforce_quota(db, r.priority, size, usage)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self._usage = usage
        self._update_critical()
        return stored

    def _enforce_quota(
        self, db: sqlite3.Connection, priority: int, added: int, usage: dict[int, int]
    ) -> None:
        if priority != Priority.LIFE_SAFETY:
            excess = usage[priority] - self.quotas[Priority(priority)]
            if excess > 0:
                self._evict(db, [priority], excess, usage)
            return
        # Life-safety never loses a row: the part of this row over its quota takes its room
        # from the lowest classes (earlier rows already took theirs).
        excess = min(added, usage[Priority.LIFE_SAFETY] - self.quotas[Priority.LIFE_SAFETY])
        if excess > 0:
            lower = sorted((p for p in usage if p != Priority.LIFE_SAFETY), reverse=True)
            self._evict(db, lower, excess, usage)

    def _evict(
        self, db: sqlite3.Connection, classes: list[int], need: int, usage: dict[int, int]
    ) -> int:
        """Delete the oldest rows of `classes` (in that order) until `need` bytes are freed."""
        freed = 0
        for priority in classes:
            while freed < need and usage[priority] > 0:
                # Never a row ever published: the broker may hold it and the cloud store it
                # later (a publish without PUBACK, a confirmation that came too late), and
                # evicting it would count a delivered reading as lost. Such rows are bounded
                # by the uplink's in-flight window when the link went down.
                candidates = db.execute(
                    "SELECT seq, size, items, first_ts, last_ts FROM outbox WHERE priority = ?"
                    " AND sent_ms IS NULL AND published_ms IS NULL ORDER BY seq LIMIT 256",
                    (priority,),
                ).fetchall()
                if not candidates:
                    break
                victims = []
                for seq, size, items, first_ts, last_ts in candidates:
                    if freed >= need:
                        break
                    victims.append((seq,))
                    freed += size
                    usage[priority] -= size
                    self._ledger(db, priority, size, items, first_ts, last_ts)
                db.executemany("DELETE FROM outbox WHERE seq = ?", victims)
        return freed

    def _ledger(
        self, db: sqlite3.Connection, priority: int, size: int, items: int, first: int, last: int
    ) -> None:
        db.execute(
            "INSERT INTO drops (priority, items, rows, bytes, first_ts, last_ts)"
            " VALUES (?, ?, 1, ?, ?, ?) ON CONFLICT (priority) DO UPDATE SET"
            " items = items + excluded.items, rows = rows + 1, bytes = bytes + excluded.bytes,"
            " first_ts = MIN(first_ts, excluded.first_ts),"
            " last_ts = MAX(last_ts, excluded.last_ts)",
            (priority, items, size, first, last),
        )

    def _update_critical(self) -> None:
        critical = self._usage[Priority.LIFE_SAFETY] > self.quotas[Priority.LIFE_SAFETY]
        if critical != self.critical:
            if critical:
                log.error("outbox critical: life-safety backlog is over its quota")
            else:
                log.info("outbox no longer critical")
            self.critical = critical

    async def shed(self, nbytes: int) -> int:
        """Free `nbytes` from the lowest classes (a full disk); life-safety is never shed."""
        return int(await self._run(self._shed, nbytes))

    def _shed(self, nbytes: int) -> int:
        db = self._conn()
        usage = dict(self._usage)
        db.execute("BEGIN IMMEDIATE")
        try:
            lower = sorted((p for p in usage if p != Priority.LIFE_SAFETY), reverse=True)
            freed = self._evict(db, lower, nbytes, usage)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._usage = usage
        return freed

    # --- reading and acknowledging ---------------------------------------------------------

    async def next_batch(
        self,
        limit: int,
        priorities: Iterable[int] | None = None,
        *,
        unsent_only: bool = True,
        created_before: int | None = None,
        claim_ms: int | None = None,
    ) -> list[Row]:
        """The oldest rows of the most urgent class first (optionally only some classes).

        Rows published and awaiting confirmation are left out unless `unsent_only` is False;
        `created_before` (wall ms) keeps only rows stored before then. With `claim_ms` the rows
        are marked sent in the same step, before anything else touches the outbox: a row on
        its way to the broker is never evicted (it would be delivered and reported lost).
        """
        return list(
            await self._run(
                self._next_batch,
                limit,
                tuple(priorities or ()),
                unsent_only,
                created_before,
                claim_ms,
            )
        )

    def _next_batch(
        self,
        limit: int,
        priorities: tuple[int, ...],
        unsent_only: bool,
        created_before: int | None,
        claim_ms: int | None,
    ) -> list[Row]:
        conditions = ["sent_ms IS NULL"] if unsent_only else []
        params: list[int] = []
        if priorities:
            conditions.append(f"priority IN ({','.join('?' * len(priorities))})")
            params += priorities
        if created_before is not None:
            conditions.append("created_ms < ?")
            params.append(created_before)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        rows = (
            self._conn()
            .execute(
                f"SELECT id, priority, topic, payload FROM outbox {where} ORDER BY priority, seq"
                " LIMIT ?",
                (*params, limit),
            )
            .fetchall()
        )
        if claim_ms is not None and rows:
            self._set_sent([r[0] for r in rows], claim_ms)
        return [Row(r[0], r[1], r[2], bytes(r[3])) for r in rows]

    async def unsend(self, ids: Iterable[str]) -> None:
        """No confirmation came: these rows may be published again."""
        await self._run(self._set_sent, list(ids), None)

    def _set_sent(self, ids: list[str], now_ms: int | None) -> None:
        # `published_ms` stays once set: given back, a row is publishable again, not evictable.
        db = self._conn()
        db.execute("BEGIN")
        db.executemany(
            "UPDATE outbox SET sent_ms = ?, published_ms = COALESCE(published_ms, ?) WHERE id = ?",
            [(now_ms, now_ms, i) for i in ids],
        )
        db.execute("COMMIT")

    async def oldest_created(self, priority: int, after: int | None = None) -> int | None:
        """Wall ms at which the oldest row of `priority` (stored after `after`) was stored."""
        query = "SELECT MIN(created_ms) FROM outbox WHERE priority = ?"
        params: tuple[int, ...] = (priority,)
        if after is not None:
            query += " AND created_ms >= ?"
            params += (after,)
        (oldest,) = await self._run(lambda: self._conn().execute(query, params).fetchone())
        return None if oldest is None else int(oldest)

    async def mentions(self, priority: int, needle: bytes) -> bool:
        """Whether a row of `priority` holds `needle` in its payload (for evidence files)."""
        row = await self._run(
            lambda: self._conn()
            .execute(
                "SELECT 1 FROM outbox WHERE priority = ? AND instr(payload, ?) > 0 LIMIT 1",
                (priority, needle),
            )
            .fetchone()
        )
        return row is not None

    async def delete(self, ids: Iterable[str]) -> None:
        await self._run(self._delete, list(ids))

    def _delete(self, ids: list[str]) -> None:
        db = self._conn()
        db.execute("BEGIN")
        freed: list[tuple[int, int]] = []
        for i in ids:
            freed += db.execute(
                "DELETE FROM outbox WHERE id = ? RETURNING priority, size", (i,)
            ).fetchall()
        db.execute("COMMIT")
        for priority, size in freed:
            self._usage[priority] -= size
        self._update_critical()

    async def depth(self) -> dict[int, int]:
        return dict(await self._run(self._depth))

    def _depth(self) -> list[tuple[int, int]]:
        return (
            self._conn()
            .execute("SELECT priority, COUNT(*) FROM outbox GROUP BY priority")
            .fetchall()
        )

    def usage(self) -> dict[int, int]:
        """Bytes stored per class (payload bytes, as counted against the quotas)."""
        return dict(self._usage)

    # --- the drop ledger -------------------------------------------------------------------

    async def drops(self) -> list[Drops]:
        return list(await self._run(self._drops))

    def _drops(self) -> list[Drops]:
        rows = (
            self._conn()
            .execute("SELECT priority, items, rows, bytes, first_ts, last_ts FROM drops ORDER BY 1")
            .fetchall()
        )
        return [Drops(*r) for r in rows]

    async def note_drops(self, priority: Priority, items: int, ts: int) -> None:
        """Record a loss that happened before the outbox (a full ingest queue)."""
        await self._run(self._note_drops, int(priority), items, ts)

    def _note_drops(self, priority: int, items: int, ts: int) -> None:
        db = self._conn()
        db.execute("BEGIN")
        self._ledger(db, priority, 0, items, ts, ts)
        db.execute("COMMIT")

    async def settle_drops(self, reported: Sequence[Drops]) -> None:
        """Subtract what a report the cloud acknowledged covered; later drops stay."""
        await self._run(self._settle_drops, list(reported))

    def _settle_drops(self, reported: list[Drops]) -> None:
        db = self._conn()
        db.execute("BEGIN")
        for d in reported:
            db.execute(
                "UPDATE drops SET items = items - ?, rows = rows - ?, bytes = bytes - ?"
                " WHERE priority = ?",
                (d.items, d.rows, d.bytes, d.priority),
            )
        db.execute("DELETE FROM drops WHERE rows <= 0")
        db.execute("COMMIT")
