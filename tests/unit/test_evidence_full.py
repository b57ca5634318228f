"""Evidence that cannot be kept (a full disk, a failed write) is refused and counted, never
raised into the producer, and leaves nothing half-written behind."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from edge.evidence import EvidenceSpool
from edge.outbox import Outbox, Priority
from tests.unit.test_outbox_failures import FailingCommit

JPEG = b"\xff\xd8\xff" + b"x" * 1000


async def spool_on(tmp_path: Path) -> EvidenceSpool:
    box = Outbox(tmp_path / "o.sqlite", reserve_bytes=0)
    await box.open()
    return EvidenceSpool("s1", tmp_path / "evidence", box)


async def add(spool: EvidenceSpool) -> str | None:
    return await spool.add(JPEG, content_type="image/jpeg", device="cam-1", ts=1, now_ms=1)


async def bulk_rows(spool: EvidenceSpool) -> int:
    return len(await spool.outbox.next_batch(10, priorities=[Priority.BULK]))


async def test_evidence_is_refused_while_the_disk_is_full(tmp_path: Path) -> None:
    spool = await spool_on(tmp_path)
    try:
        spool.outbox.disk.enter("a test")
        assert await add(spool) is None
        assert spool.refused == 1
        assert await bulk_rows(spool) == 0
        assert not spool.directory.exists() or not any(spool.directory.iterdir())
    finally:
        await spool.outbox.close()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
async def test_a_write_that_finds_no_room_leaves_nothing_and_says_the_disk_is_full(
    tmp_path: Path,
) -> None:
    spool = await spool_on(tmp_path)
    try:
        spool.directory.mkdir()
        partial = spool.path(hashlib.sha256(JPEG).hexdigest()).with_suffix(".partial")
        partial.symlink_to("/dev/full")  # every write there fails with ENOSPC
        assert await add(spool) is None
        assert spool.refused == 1
        assert not partial.is_symlink()  # removed, not left taking room
        assert list(spool.directory.iterdir()) == []
        assert spool.outbox.disk.full
        assert await bulk_rows(spool) == 0
    finally:
        await spool.outbox.close()


async def test_evidence_whose_row_cannot_be_stored_is_not_kept(tmp_path: Path) -> None:
    spool = await spool_on(tmp_path)
    conn = FailingCommit(spool.outbox._conn(), rolls_back=False)  # "locked": not the disk
    spool.outbox._db = conn  # type: ignore[assignment]
    try:
        conn.armed = True
        assert await add(spool) is None
        assert spool.refused == 1
        assert list(spool.directory.iterdir()) == []  # the file went with the row
        digest = await add(spool)  # and the next one is kept
        assert digest == hashlib.sha256(JPEG).hexdigest()
        assert await bulk_rows(spool) == 1
    finally:
        spool.outbox._db = conn.real
        await spool.outbox.close()
