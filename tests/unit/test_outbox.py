"""The outbox: durable, idempotent, most urgent class first, oldest first within a class."""

from __future__ import annotations

from pathlib import Path

from edge.outbox import Outbox, Priority


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
