"""A kill or power loss in the middle of a write: the outbox opens with every committed row.

The state a kill -9 leaves is the database file plus its write-ahead log as they are on disk.
We copy both while the outbox is open (nothing checkpointed, as after a crash), then tear the
log the way an interrupted write does: the frames of the last, unfinished transaction cut
short, or followed by garbage.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from edge.outbox import NewRow, Outbox, Priority

COMMITTED = 10


def sos(i: int) -> NewRow:
    return NewRow(f"a{i:04d}", Priority.LIFE_SAFETY, "site/s/up/alert", b"x" * 300, 1, i, i)


async def crash_image(tmp_path: Path) -> tuple[Path, int, int]:
    """A copy of db + WAL after COMMITTED commits and one more; the WAL sizes at both points."""
    live = tmp_path / "live" / "outbox.sqlite"
    box = Outbox(live)
    await box.open()
    for i in range(COMMITTED):
        await box.put_many([sos(i)], now_ms=1)
    wal = Path(f"{live}-wal")
    committed_size = size_of(wal)
    await box.put_many([sos(COMMITTED)], now_ms=1)  # the write the crash will tear
    torn_size = size_of(wal)
    image = copy_image(live, tmp_path / "image")
    await box.close()
    assert torn_size > committed_size
    return image, committed_size, torn_size


def size_of(path: Path) -> int:
    return path.stat().st_size


def copy_image(db: Path, directory: Path) -> Path:
    """What is on disk at this instant, as a kill -9 would leave it."""
    directory.mkdir()
    image = directory / db.name
    shutil.copyfile(db, image)
    shutil.copyfile(f"{db}-wal", f"{image}-wal")
    return image


def tear_wal(wal: Path, tear: str, cut_at: int) -> None:
    if tear == "cut_in_half":
        with wal.open("r+b") as f:
            f.truncate(cut_at)  # the last transaction's frames, half written
    else:
        with wal.open("ab") as f:
            f.write(b"\xde\xad\xbe\xef" * 1024)  # a frame that never finished: bad checksum


def damaged_files(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if "damaged" in p.name]


@pytest.mark.parametrize("tear", ["cut_in_half", "garbage_after_commit"])
async def test_a_torn_write_loses_only_the_unfinished_transaction(
    tmp_path: Path, tear: str
) -> None:
    image, committed_size, torn_size = await crash_image(tmp_path)
    tear_wal(Path(f"{image}-wal"), tear, committed_size + (torn_size - committed_size) // 2)
    expected = COMMITTED if tear == "cut_in_half" else COMMITTED + 1

    box = Outbox(image)
    await box.open()
    rows = await box.next_batch(100)
    assert [r.id for r in rows] == [f"a{i:04d}" for i in range(expected)]
    assert all(r.payload == b"x" * 300 for r in rows)
    assert box.usage()[Priority.LIFE_SAFETY] == 300 * expected  # quotas count what is there
    # The outbox goes on working: the torn message comes again from the broker and is stored.
    assert await box.put_many([sos(COMMITTED)], now_ms=2) == [expected == COMMITTED]
    await box.close()

    db = sqlite3.connect(image)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert db.execute("SELECT COUNT(*) FROM outbox").fetchone() == (COMMITTED + 1,)
    db.close()


async def test_a_damaged_outbox_is_kept_aside_and_a_new_one_started(tmp_path: Path) -> None:
    """Not silently recreated: the damaged file stays for recovery by hand, and it is said."""
    path = tmp_path / "outbox.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    box = Outbox(path)
    await box.open()
    assert box.damaged is not None
    assert damaged_files(tmp_path) == [box.damaged.name]
    assert box.damaged.read_bytes().startswith(b"this is not a database")
    assert await box.put_many([sos(1)], now_ms=1) == [True]
    assert [r.id for r in await box.next_batch(10)] == ["a0001"]
    await box.close()


async def test_a_healthy_outbox_is_not_moved(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    box = Outbox(path)
    await box.open()
    await box.put_many([sos(1)], now_ms=1)
    await box.close()
    again = Outbox(path)
    await again.open()
    assert again.damaged is None
    assert damaged_files(tmp_path) == []
    await again.close()
