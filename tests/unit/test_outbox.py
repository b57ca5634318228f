"""The outbox: durable, idempotent, most urgent class first, oldest first within a class."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from edge.outbox import Drops, NewRow, Outbox, Priority


async def test_order_idempotency_and_persistence(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    box = Outbox(path)
    await box.open()
    assert await box.put("t1", Priority.TELEMETRY, "x/t", b"t1", 1)
    assert await box.put("a1", Priority.LIFE_SAFETY, "x/a", b"a1", 2)
    assert await box.put("s1", Priority.SECURITY, "x/s", b"s1", 3)
    assert await box.put("a2", Priority.LIFE_SAFETY, "x/a", b"a2", 4)
    assert not await box.put("a1", Priority.LIFE_SAFETY, "x/a", b"again", 5)
    assert [r.id for r in await box.next_batch(10)] == ["a1", "a2", "s1", "t1"]
    assert [r.id for r in await box.next_batch(2)] == ["a1", "a2"]
    await box.delete(["a1"])
    await box.close()

    reopened = Outbox(path)
    await reopened.open()
    rows = await reopened.next_batch(10)
    assert [(r.id, r.payload) for r in rows] == [("a2", b"a2"), ("s1", b"s1"), ("t1", b"t1")]
    assert await reopened.depth() == {0: 1, 1: 1, 3: 1}
    await reopened.close()


def telemetry(i: int, size: int = 100, items: int = 10) -> NewRow:
    return NewRow(f"t{i:04d}", Priority.TELEMETRY, "x/t", b"t" * size, items, 1000 + i, 1000 + i)


def sos(i: int, size: int = 100) -> NewRow:
    return NewRow(f"a{i:04d}", Priority.LIFE_SAFETY, "x/a", b"a" * size, 1, 5000 + i, 5000 + i)


async def test_telemetry_over_quota_drops_the_oldest_and_counts_it(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite", quotas={Priority.TELEMETRY: 1000})
    await box.open()
    await box.put_many([telemetry(i) for i in range(25)], now_ms=1)
    rows = await box.next_batch(100)
    assert [r.id for r in rows] == [f"t{i:04d}" for i in range(15, 25)]  # newest ten kept
    assert box.usage()[Priority.TELEMETRY] == 1000
    assert await box.drops() == [Drops(Priority.TELEMETRY, items=150, rows=15, bytes=1500,
                                       first_ts=1000, last_ts=1014)]
    await box.close()


async def test_life_safety_is_never_evicted_and_takes_room_from_lower_classes(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite", quotas={Priority.LIFE_SAFETY: 300, Priority.TELEMETRY: 10_000})
    await box.open()
    await box.put_many([telemetry(i) for i in range(10)], now_ms=1)
    await box.put_many([sos(i) for i in range(3)], now_ms=2)
    assert not box.critical
    await box.put_many([sos(i) for i in range(3, 8)], now_ms=3)  # 500 bytes over quota
    assert box.critical
    ids = [r.id for r in await box.next_batch(100)]
    assert ids == [f"a{i:04d}" for i in range(8)] + [f"t{i:04d}" for i in range(5, 10)]
    assert await box.drops() == [Drops(Priority.TELEMETRY, 50, 5, 500, 1000, 1004)]
    # Nothing lower left to give: life-safety still grows, never refused.
    await box.put_many([telemetry(99, size=1)], now_ms=4)
    await box.put_many([sos(i) for i in range(8, 20)], now_ms=5)
    assert [r.id for r in await box.next_batch(100, priorities=[Priority.LIFE_SAFETY])] == [
        f"a{i:04d}" for i in range(20)
    ]
    await box.delete([f"a{i:04d}" for i in range(20)])
    assert not box.critical
    await box.close()


async def test_full_disk_sheds_lower_classes_not_life_safety(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite", max_page_count=40)  # about 160 KiB with 4 KiB pages
    await box.open()
    stored: list[str] = []

    async def fill() -> None:
        while True:
            await box.put_many([telemetry(len(stored), size=3000, items=1)], now_ms=1)
            stored.append("ok")

    with pytest.raises(sqlite3.OperationalError, match="full"):
        await fill()
    assert len(stored) > 5
    freed = await box.shed(30_000)
    assert freed >= 30_000
    assert await box.put("a1", Priority.LIFE_SAFETY, "x/a", b"a" * 3000, 2)
    assert (await box.drops())[0].rows == freed // 3000
    assert (await box.next_batch(1))[0].id == "a1"
    await box.close()


async def test_settled_drops_leave_later_ones(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite", quotas={Priority.TELEMETRY: 100})
    await box.open()
    await box.put_many([telemetry(i) for i in range(3)], now_ms=1)
    reported = await box.drops()
    await box.put_many([telemetry(i) for i in range(3, 5)], now_ms=1)
    await box.settle_drops(reported)
    assert await box.drops() == [Drops(Priority.TELEMETRY, 20, 2, 200, 1000, 1003)]
    await box.close()
    reopened = Outbox(tmp_path / "o.sqlite", quotas={Priority.TELEMETRY: 100})
    await reopened.open()
    assert reopened.usage()[Priority.TELEMETRY] == 100
    await reopened.close()


async def test_rows_awaiting_confirmation_are_not_sent_twice_until_given_back(
    tmp_path: Path,
) -> None:
    path = tmp_path / "o.sqlite"
    box = Outbox(path)
    await box.open()
    await box.put_many([sos(1), sos(2), telemetry(1)], now_ms=1)
    # Taken for publishing: marked sent in the same step.
    assert [r.id for r in await box.next_batch(1, claim_ms=2)] == ["a0001"]
    taken = await box.next_batch(1, priorities=[Priority.TELEMETRY], claim_ms=2)
    assert [r.id for r in taken] == ["t0001"]
    assert [r.id for r in await box.next_batch(10)] == ["a0002"]
    # The fallback announces what the cloud has not confirmed, published or not.
    everything = await box.next_batch(10, priorities=[Priority.LIFE_SAFETY], unsent_only=False)
    assert [r.id for r in everything] == ["a0001", "a0002"]
    await box.unsend(["t0001"])
    assert [r.id for r in await box.next_batch(10)] == ["a0002", "t0001"]
    await box.close()

    # A restart gives back everything unconfirmed: the cloud dedups what it already has.
    reopened = Outbox(path)
    await reopened.open()
    assert [r.id for r in await reopened.next_batch(10)] == ["a0001", "a0002", "t0001"]
    await reopened.close()


async def test_eviction_spares_rows_the_cloud_may_already_have(tmp_path: Path) -> None:
    """Evicting a row taken for publishing would report a reading lost that the cloud stored
    (the outage test caught it once: stored + reported dropped = accepted + 1)."""
    box = Outbox(tmp_path / "o.sqlite", quotas={Priority.TELEMETRY: 1000})
    await box.open()
    await box.put_many([telemetry(i) for i in range(10)], now_ms=1)
    assert [r.id for r in await box.next_batch(2, claim_ms=2)] == ["t0000", "t0001"]
    await box.put_many([telemetry(i) for i in range(10, 13)], now_ms=3)
    kept = {r.id for r in await box.next_batch(100, unsent_only=False)}
    assert {"t0000", "t0001"} <= kept
    assert not {"t0002", "t0003", "t0004"} & kept  # the oldest unsent went instead
    [drops] = await box.drops()
    assert (drops.rows, drops.items) == (3, 30)
    await box.close()


async def test_a_row_given_back_after_a_publish_is_still_never_evicted(tmp_path: Path) -> None:
    """Published, then given back (no PUBACK: the broker went down; no confirmation in time; a
    restart): the broker may still hold it and the cloud store it later. Evicting it would
    report as lost a reading the cloud has (the outage test caught it: stored + dropped =
    accepted + 1). It is published again, and never counted as dropped."""
    path = tmp_path / "o.sqlite"
    box = Outbox(path, quotas={Priority.TELEMETRY: 1000})
    await box.open()
    await box.put_many([telemetry(i) for i in range(10)], now_ms=1)
    assert [r.id for r in await box.next_batch(2, claim_ms=2)] == ["t0000", "t0001"]
    await box.unsend(["t0000"])
    await box.close()
    box = Outbox(path, quotas={Priority.TELEMETRY: 1000})
    await box.open()  # a restart gives t0001 back too
    await box.put_many([telemetry(i) for i in range(10, 13)], now_ms=3)
    kept = [r.id for r in await box.next_batch(100)]
    assert kept[:2] == ["t0000", "t0001"]  # publishable again, first
    assert not {"t0002", "t0003", "t0004"} & set(kept)
    [drops] = await box.drops()
    assert (drops.rows, drops.items) == (3, 30)
    await box.close()


async def test_an_outbox_from_before_confirmations_opens_and_keeps_its_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,"
        " priority INTEGER NOT NULL, topic TEXT NOT NULL, payload BLOB NOT NULL,"
        " size INTEGER NOT NULL, items INTEGER NOT NULL, first_ts INTEGER NOT NULL,"
        " last_ts INTEGER NOT NULL, created_ms INTEGER NOT NULL);"
        "INSERT INTO outbox (id, priority, topic, payload, size, items, first_ts, last_ts,"
        " created_ms) VALUES ('a1', 0, 'x/a', X'61', 1, 1, 1, 1, 1);"
    )
    db.commit()
    db.close()
    box = Outbox(path)
    await box.open()
    assert [r.id for r in await box.next_batch(10)] == ["a1"]
    assert [r.id for r in await box.next_batch(10, claim_ms=2)] == ["a1"]
    assert await box.next_batch(10) == []
    await box.close()
