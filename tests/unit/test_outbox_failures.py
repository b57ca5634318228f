"""Every outbox write is one transaction that a failed statement or COMMIT leaves closed.

Before, `_shed` rolled back unconditionally (SQLite had already ended the transaction on
SQLITE_FULL, so the real error became "cannot rollback - no transaction is active"), and
`_set_sent`, `_delete`, `_note_drops` and `_settle_drops` left a transaction open behind a
failure, so that every later write failed with "cannot start a transaction within a
transaction" (issue 12, finding 5).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from edge.outbox import Drops, NewRow, Outbox, Priority


def telemetry(i: int, size: int = 100) -> NewRow:
    return NewRow(f"t{i:04d}", Priority.TELEMETRY, "x/t", b"t" * size, 10, 1000 + i, 1000 + i)


def sos(i: int) -> NewRow:
    return NewRow(f"a{i:04d}", Priority.LIFE_SAFETY, "x/a", b"a" * 100, 1, 5000 + i, 5000 + i)


class FailingCommit:
    """A connection whose next COMMIT fails, as a busy or full disk makes it fail: either
    leaving the transaction open (`rolls_back=False`, as SQLITE_BUSY or a deferred constraint
    do) or ended by SQLite itself (`rolls_back=True`, as SQLITE_FULL does)."""

    def __init__(self, real: sqlite3.Connection, rolls_back: bool) -> None:
        self.real = real
        self.rolls_back = rolls_back
        self.armed = False
        self.commits_failed = 0

    @property
    def in_transaction(self) -> bool:
        return self.real.in_transaction

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "COMMIT" and self.armed:
            self.armed = False
            self.commits_failed += 1
            if self.rolls_back:
                self.real.execute("ROLLBACK")
                raise sqlite3.OperationalError("database or disk is full")
            raise sqlite3.OperationalError("database is locked")
        return self.real.execute(sql, *args)

    def executemany(self, sql: str, args: Any) -> Any:
        return self.real.executemany(sql, args)

    def close(self) -> None:
        self.real.close()


Write = Callable[[Outbox], Awaitable[object]]
WRITES: dict[str, Write] = {
    "put_many": lambda box: box.put_many([sos(9)], now_ms=9),
    "put_many_dropped": lambda box: box.put_many(
        [], now_ms=9, dropped=[Drops(3, 10, 1, 100, 1009, 1009)]
    ),
    "shed": lambda box: box.shed(150),
    "claim": lambda box: box.next_batch(1, claim_ms=1_795_000_000_000),
    "unsend": lambda box: box.unsend(["t0000"]),
    "delete": lambda box: box.delete(["t0001"]),
    "note_drops": lambda box: box.note_drops(Priority.TELEMETRY, 5, 1000),
    "settle_drops": lambda box: box.settle_drops([Drops(3, 1, 1, 0, 1000, 1000)]),
}


@pytest.mark.parametrize("rolls_back", [False, True], ids=["left-open", "ended-by-sqlite"])
@pytest.mark.parametrize("write", list(WRITES))
async def test_a_failed_commit_leaves_no_transaction_and_the_next_write_works(
    tmp_path: Path, write: str, rolls_back: bool
) -> None:
    box = Outbox(tmp_path / "o.sqlite", reserve_bytes=0)
    await box.open()
    await box.put_many([telemetry(i) for i in range(3)], now_ms=1)
    await box.note_drops(Priority.TELEMETRY, 1, 1000)
    conn = FailingCommit(box._conn(), rolls_back)
    box._db = conn  # type: ignore[assignment]
    before = await box.next_batch(100, unsent_only=False)
    usage = box.usage()
    try:
        conn.armed = True
        with pytest.raises(sqlite3.OperationalError) as failure:
            await WRITES[write](box)
        assert conn.commits_failed == 1
        # The error is the COMMIT's, not a rollback's complaint about it.
        assert "rollback" not in str(failure.value)
        assert not conn.in_transaction
        # Nothing of the failed write is left, in the file or in the byte counts.
        assert await box.next_batch(100, unsent_only=False) == before
        assert box.usage() == usage
        # The same write works now, and so does any other.
        await WRITES[write](box)
        assert await box.put("a0001", Priority.LIFE_SAFETY, "x/a", b"a", 2)
    finally:
        box._db = conn.real
        await box.close()


async def test_a_commit_refused_by_sqlite_itself_is_rolled_back(tmp_path: Path) -> None:
    """A real failing COMMIT: a deferred foreign key is checked only then, and SQLite keeps the
    transaction open after refusing it."""
    box = Outbox(tmp_path / "o.sqlite", reserve_bytes=0)
    db = sqlite3.connect(tmp_path / "fk.sqlite", isolation_level=None)
    db.execute("PRAGMA foreign_keys=ON")
    db.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    db.execute(
        "CREATE TABLE child (parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
    )
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"), box._transaction(db):
        db.execute("INSERT INTO child VALUES (42)")
    assert not db.in_transaction
    assert db.execute("SELECT COUNT(*) FROM child").fetchone() == (0,)
    with box._transaction(db):
        db.execute("INSERT INTO parent VALUES (42)")
        db.execute("INSERT INTO child VALUES (42)")
    assert db.execute("SELECT COUNT(*) FROM child").fetchone() == (1,)
    db.close()


async def test_a_full_database_sheds_and_reports_the_real_error(tmp_path: Path) -> None:
    """SQLITE_FULL ends the transaction itself; the shed that follows must not fail on its own
    ROLLBACK ("cannot rollback - no transaction is active", the log line of issue 12)."""
    box = Outbox(tmp_path / "o.sqlite", max_page_count=40, reserve_bytes=0)
    await box.open()
    stored: list[int] = []

    async def fill() -> None:
        while True:
            await box.put_many([telemetry(len(stored), size=3000)], now_ms=1)
            stored.append(1)

    with pytest.raises(sqlite3.OperationalError, match="full"):
        await fill()
    assert len(stored) > 5
    assert box.disk.full  # told the guard
    with pytest.raises(sqlite3.OperationalError, match="full"):
        await box.put_many([telemetry(i, size=3000) for i in range(1000, 1040)], now_ms=1)
    assert await box.shed(9000) >= 9000
    assert await box.put("a1", Priority.LIFE_SAFETY, "x/a", b"a" * 3000, 2)
    await box.close()


async def test_a_claim_overwrites_the_row_in_place(tmp_path: Path) -> None:
    """Marking a big row sent must not rewrite its payload: on a full disk the backlog could not
    drain (the uplink died with "database or disk is full" when the cloud came back)."""
    path = tmp_path / "o.sqlite"
    box = Outbox(path, reserve_bytes=0)
    await box.open()
    await box.put_many([telemetry(i, size=90_000) for i in range(20)], now_ms=1)
    box._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    now = 1_795_000_000_000
    assert len(await box.next_batch(20, claim_ms=now)) == 20
    await box.unsend([f"t{i:04d}" for i in range(20)])
    wal = await asyncio.to_thread(os.path.getsize, f"{path}-wal")
    # Two pages a row at most (the record's leaf, its last overflow page), not 90 KB.
    assert wal < 20 * 2 * 2 * 4096 + 64 * 1024, wal
    assert len(await box.next_batch(20)) == 20  # given back: publishable again
    await box.close()


async def test_an_older_outbox_is_converted_and_gives_delivered_rows_room_back(
    tmp_path: Path,
) -> None:
    """Made before incremental vacuum and NOT_SENT: its NULL claims become NOT_SENT, and
    once converted the pages of delivered rows go back to the filesystem while it is full."""
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,"
        " priority INTEGER NOT NULL, topic TEXT NOT NULL, payload BLOB NOT NULL,"
        " size INTEGER NOT NULL, items INTEGER NOT NULL, first_ts INTEGER NOT NULL,"
        " last_ts INTEGER NOT NULL, created_ms INTEGER NOT NULL, sent_ms INTEGER,"
        " published_ms INTEGER);"
        "CREATE INDEX outbox_unsent ON outbox (priority, seq) WHERE sent_ms IS NULL;"
    )
    db.executemany(
        "INSERT INTO outbox (id, priority, topic, payload, size, items, first_ts, last_ts,"
        " created_ms) VALUES (?, 3, 'x/t', ?, 50000, 1, 1, 1, 1)",
        [(f"t{i}", b"t" * 50_000) for i in range(40)],
    )
    db.commit()
    db.close()
    box = Outbox(path, reserve_bytes=0)
    await box.open()
    try:
        assert box._conn().execute("PRAGMA auto_vacuum").fetchone() == (2,)
        assert len(await box.next_batch(100)) == 40  # all pending, through the new index
        await box.delete([f"t{i}" for i in range(40)])
        before = (await asyncio.to_thread(os.stat, path)).st_size
        box.disk.enter("a test")
        await box.check_disk()
        after = (await asyncio.to_thread(os.stat, path)).st_size
        assert after < before - 1_500_000, (before, after)
    finally:
        await box.close()
