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
loop. Every write is one transaction through `_transaction`, which leaves none open behind a
failed statement or COMMIT. A full disk is the `DiskGuard`'s (edge/disk.py): the outbox tells
it of every write that failed for want of room and gives back the pages delivered rows left
(docs/disk.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from edge.disk import DiskGuard, free_bytes

log = logging.getLogger(__name__)
T = TypeVar("T")


class Priority(enum.IntEnum):
    LIFE_SAFETY = 0
    SECURITY = 1
    HEALTH = 2
    TELEMETRY = 3
    BULK = 4


MiB = 1024 * 1024
DEFAULT_RESERVE_BYTES = 4 * MiB
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

# "Not sent" and "never published" are this number, not NULL: a claim then overwrites six bytes
# of the row in place instead of rewriting the whole row with its payload (a NULL takes no
# bytes, so setting it changes the row's size). Measured on 100 rows of 90 KB: 412 KB of
# write-ahead log for the claim instead of 9.1 MB; on a full disk the difference is whether
# the backlog can drain at all. Any integer from 2**31 to 2**47 takes six bytes, as do the
# wall-clock milliseconds stored in its place. Written as a literal in SQL, so that the
# partial index below is usable.
NOT_SENT = -(1 << 40)
_PENDING = f"sent_ms = {NOT_SENT}"
# The rows the uplink may publish: a partial index keeps a long in-flight window off its path.
_PENDING_INDEX = (
    f"CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (priority, seq) WHERE {_PENDING}"
)
# Write-ahead log pages before a checkpoint (SQLite's default is 1000). Each page not yet
# copied back may need a new page in the database file when it is, so this bounds what a
# checkpoint can ask of a full disk: 1 MiB, well inside the reserve.
WAL_AUTOCHECKPOINT_PAGES = 256
VACUUM_STEP_PAGES = 256  # pages given back to the filesystem per transaction
VACUUM_STEPS_PER_CHECK = 64  # at most 64 MiB of 4 KiB pages per disk check (edge/disk.py)
# Rows claimed, given back or deleted per transaction. Each changes a page or two per row
# whatever its payload, so a transaction's log stays near 1 MiB; the log is copied back and
# started over between transactions. One transaction for a whole confirmation wrote 5 MB of
# log on a full disk (the cloud confirms dozens of merged messages, thousands of rows, at once)
# and failed, again and again.
ROWS_PER_TRANSACTION = 256
# An outbox made before incremental vacuum is converted (VACUUM) only when it is this small,
# and there is room for two copies of it besides the reserve.
CONVERT_MAX_BYTES = 64 * MiB


class Outbox:
    def __init__(
        self,
        path: Path,
        quotas: dict[Priority, int] | None = None,
        max_page_count: int | None = None,
        reserve_bytes: int = DEFAULT_RESERVE_BYTES,
    ) -> None:
        self.path = path
        self.quotas = {**DEFAULT_QUOTAS, **(quotas or {})}
        self.critical = False  # life-safety is over its quota
        self.disk = DiskGuard(path.parent, reserve_bytes)
        self._max_page_count = max_page_count  # tests simulate a full disk with it
        self._usage: dict[int, int] = {int(p): 0 for p in Priority}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        self._db: sqlite3.Connection | None = None
        self.damaged: Path | None = None  # where a damaged outbox found at start was kept

    async def open(self) -> None:
        await self._run(self._open)

    def _open(self) -> None:
        self.disk.prepare()
        try:
            self._connect()
        except sqlite3.DatabaseError as err:
            if isinstance(err, sqlite3.OperationalError):
                if self.disk.write_failed(err):
                    # No room to open (the log, its index, the start-up update): the reserve
                    # is released now, so one more try may do; if not, the caller retries.
                    self._connect()
                    self.disk.settle()
                    return
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
        self.disk.settle()

    def _connect(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        self._usage = {int(p): 0 for p in Priority}
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            self._setup(db)
        except BaseException:
            db.close()
            raise
        self._db = db

    def _setup(self, db: sqlite3.Connection) -> None:
        (tables,) = db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        if not tables:
            # Set before the first table, or it takes a VACUUM: freed pages can then go back
            # to the filesystem (`reclaim`), which a full disk needs to recover by itself.
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed row survives power loss, not only a process crash.
        db.execute("PRAGMA synchronous=FULL")
        # Debian builds SQLite with secure_delete on: every deleted page is overwritten, so a
        # delete writes as much log as the rows it frees, and on a full disk shedding or a
        # confirmation could not be committed (measured: docs/decisions.md). FAST zeroes what
        # it can without writing more.
        db.execute("PRAGMA secure_delete=FAST")
        db.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
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
        db.execute("DROP INDEX IF EXISTS outbox_unsent")  # on NULL, before NOT_SENT
        db.execute(_PENDING_INDEX)
        # What waited for a confirmation when we stopped is sent again; the cloud dedups it.
        # (Rows from before NOT_SENT hold NULLs: they become NOT_SENT here, once.)
        for column in ("sent_ms", "published_ms"):
            keep = "" if column == "sent_ms" else " AND published_ms IS NULL"
            while True:
                with self._transaction(db):
                    changed = db.execute(
                        f"UPDATE outbox SET {column} = {NOT_SENT} WHERE seq IN (SELECT seq FROM"
                        f" outbox WHERE {column} IS NOT {NOT_SENT}{keep}"
                        f" LIMIT {ROWS_PER_TRANSACTION})"
                    ).rowcount
                if changed < ROWS_PER_TRANSACTION:
                    break
        for priority, size in db.execute("SELECT priority, SUM(size) FROM outbox GROUP BY 1"):
            self._usage[priority] = size
        self.critical = self._usage[Priority.LIFE_SAFETY] > self.quotas[Priority.LIFE_SAFETY]
        self._convert_to_incremental_vacuum(db)

    def _convert_to_incremental_vacuum(self, db: sqlite3.Connection) -> None:
        """An outbox made before incremental vacuum gets it, when it is small and there is
        room; otherwise the pages of delivered rows stay in the file (reused, not returned)."""
        (mode,) = db.execute("PRAGMA auto_vacuum").fetchone()
        if mode == 2:
            return
        size = self.path.stat().st_size
        reserve = self.disk.reserve
        room = free_bytes(self.path.parent) - (reserve.size - reserve.held())
        if size > CONVERT_MAX_BYTES or room < 2 * size + self.disk.headroom:
            log.warning(
                "outbox %s (%d bytes) cannot get incremental vacuum now (%d bytes free):"
                " delivered rows will not give their disk space back",
                self.path, size, room,
            )
            return
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        db.execute("VACUUM")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        log.info("outbox %s converted to incremental vacuum", self.path)

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

    @contextlib.contextmanager
    def _transaction(self, db: sqlite3.Connection | None = None) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed whole, or rolled back whole and the error raised.

        SQLite ends a transaction by itself on some errors (SQLITE_FULL, SQLITE_IOERR) and not
        on others (a busy or constrained COMMIT): ROLLBACK only what is still open, or the
        rollback's own error ("no transaction is active") hides the real one. A write that
        failed for want of room is reported to the disk guard, which releases the reserve.
        """
        db = db or self._conn()
        if db.in_transaction:  # never expected: a transaction left open is a bug
            log.error("outbox: a transaction was left open; rolling it back")
            db.execute("ROLLBACK")
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException as err:
            if db.in_transaction:
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error as rollback_err:
                    log.error("outbox: rollback after %r failed: %s", err, rollback_err)
            if isinstance(err, sqlite3.Error):
                self.disk.write_failed(err)
            raise

    # --- writing ---------------------------------------------------------------------------

    async def put(
        self, id: str, priority: Priority, topic: str, payload: bytes, now_ms: int
    ) -> bool:
        """Store one row durably; False when a row with this id is already there."""
        [stored] = await self.put_many([NewRow(id, priority, topic, payload)], now_ms)
        return stored

    async def put_many(
        self, rows: Sequence[NewRow], now_ms: int, dropped: Sequence[Drops] = ()
    ) -> list[bool]:
        """Store rows in one transaction (one fsync); per row, whether it was new.

        `dropped` is what was not kept (a full disk sheds telemetry at the door): it goes into
        the drop ledger in the same transaction, so a loss is never silent."""
        if not rows and not dropped:
            return []
        return list(await self._run(self._put_many, list(rows), now_ms, list(dropped)))

    def _put_many(self, rows: list[NewRow], now_ms: int, dropped: list[Drops]) -> list[bool]:
        usage = dict(self._usage)
        with self._transaction() as db:
            stored = []
            for r in rows:
                size = len(r.payload)
                cur = db.execute(
                    "INSERT OR IGNORE INTO outbox (id, priority, topic, payload, size, items,"
                    " first_ts, last_ts, created_ms, sent_ms, published_ms)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                        NOT_SENT,
                        NOT_SENT,
                    ),
                )
                stored.append(cur.rowcount == 1)
                if cur.rowcount == 1:
                    usage[r.priority] += size
                    self._enforce_quota(db, r.priority, size, usage)
            for d in dropped:
                self._ledger(db, d.priority, d.bytes, d.items, d.first_ts, d.last_ts, d.rows)
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
                    f" AND {_PENDING} AND published_ms = {NOT_SENT} ORDER BY seq LIMIT 256",
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
        self,
        db: sqlite3.Connection,
        priority: int,
        size: int,
        items: int,
        first: int,
        last: int,
        rows: int = 1,
    ) -> None:
        db.execute(
            "INSERT INTO drops (priority, items, rows, bytes, first_ts, last_ts)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (priority) DO UPDATE SET"
            " items = items + excluded.items, rows = rows + excluded.rows,"
            " bytes = bytes + excluded.bytes, first_ts = MIN(first_ts, excluded.first_ts),"
            " last_ts = MAX(last_ts, excluded.last_ts)",
            (priority, items, rows, size, first, last),
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
        usage = dict(self._usage)
        with self._transaction() as db:
            lower = sorted((p for p in usage if p != Priority.LIFE_SAFETY), reverse=True)
            freed = self._evict(db, lower, nbytes, usage)
        self._usage = usage
        return freed

    # --- giving room back ------------------------------------------------------------------

    async def check_disk(self) -> bool:
        """Look at the disk (edge/disk.py); while it is full, first give the filesystem back
        the pages delivered and shed rows left. Returns whether the disk state changed."""
        if self.disk.full and self._db is not None:
            # A step per job on the outbox's thread: an SOS's commit waits for one step at
            # most, not for the whole reclaim.
            for _ in range(VACUUM_STEPS_PER_CHECK):
                if not await self._run(self._reclaim_step):
                    break
            await self._run(self._truncate_log)
        return bool(await self._run(self.disk.check))

    def _reclaim_step(self) -> int:
        """Give up to `VACUUM_STEP_PAGES` free pages back to the filesystem (incremental
        vacuum, one transaction, so its log stays small on a full disk); returns how many."""
        db = self._conn()
        (mode,) = db.execute("PRAGMA auto_vacuum").fetchone()
        (free_pages,) = db.execute("PRAGMA freelist_count").fetchone()
        step = min(free_pages, VACUUM_STEP_PAGES) if mode == 2 else 0
        if step:
            with self._transaction(db):
                # The pragma frees a page per step of its statement, and Python's sqlite3 steps
                # a statement that returns no columns only once: a page per execute.
                for _ in range(step):
                    db.execute("PRAGMA incremental_vacuum(1)")
        return int(step)

    def _truncate_log(self) -> None:
        # The file shrinks at the checkpoint; TRUNCATE also hands the log's own blocks back.
        self._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

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
        conditions = [_PENDING] if unsent_only else []
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
        mark = NOT_SENT if now_ms is None else now_ms
        for chunk in _chunks(ids):
            with self._transaction() as db:
                db.executemany(
                    f"UPDATE outbox SET sent_ms = ?, published_ms = CASE WHEN published_ms ="
                    f" {NOT_SENT} THEN ? ELSE published_ms END WHERE id = ?",
                    [(mark, mark, i) for i in chunk],
                )

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
        # A transaction per chunk: if a later one fails, the earlier ones stay done (deleting
        # a row again is a no-op for the caller's retry).
        try:
            for chunk in _chunks(ids):
                freed: list[tuple[int, int]] = []
                with self._transaction() as db:
                    for i in chunk:
                        freed += db.execute(
                            "DELETE FROM outbox WHERE id = ? RETURNING priority, size", (i,)
                        ).fetchall()
                for priority, size in freed:
                    self._usage[priority] -= size
        finally:
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
        with self._transaction() as db:
            self._ledger(db, priority, 0, items, ts, ts)

    async def settle_drops(self, reported: Sequence[Drops]) -> None:
        """Subtract what a report the cloud acknowledged covered; later drops stay."""
        await self._run(self._settle_drops, list(reported))

    def _settle_drops(self, reported: list[Drops]) -> None:
        with self._transaction() as db:
            for d in reported:
                db.execute(
                    "UPDATE drops SET items = items - ?, rows = rows - ?, bytes = bytes - ?"
                    " WHERE priority = ?",
                    (d.items, d.rows, d.bytes, d.priority),
                )
            db.execute("DELETE FROM drops WHERE rows <= 0")


def _chunks(items: list[T]) -> Iterator[list[T]]:
    for start in range(0, len(items), ROWS_PER_TRANSACTION):
        yield items[start : start + ROWS_PER_TRANSACTION]


def tally(rows: Iterable[NewRow], into: dict[int, Drops] | None = None) -> dict[int, Drops]:
    """Rows not kept, summed per class as the drop ledger counts them."""
    out = into if into is not None else {}
    for r in rows:
        p = int(r.priority)
        d = out.get(p)
        out[p] = Drops(
            p,
            (d.items if d else 0) + r.items,
            (d.rows if d else 0) + 1,
            (d.bytes if d else 0) + len(r.payload),
            min(d.first_ts, r.first_ts) if d else r.first_ts,
            max(d.last_ts, r.last_ts) if d else r.last_ts,
        )
    return out
