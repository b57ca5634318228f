"""Outbox writes that fail (a full disk) never end the uplink, and nothing they carried is lost.

Before, a claim, a give-back or a confirmed delete that failed raised out of the uplink's
task and the edge exited (`database or disk is full` when the cloud came back, issue 12).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson

from edge.config import UplinkConfig
from edge.outbox import NewRow, Outbox, Priority
from edge.uplink import Uplink
from shouwang.mqtt import Message
from tests.conftest import eventually
from tests.unit.test_outbox_failures import FailingCommit

SITE = "s1"


class Broker:
    """Stands in for the cloud broker: takes every publish at once."""

    connected = True

    def __init__(self) -> None:
        self.published: list[str] = []

    def subscribe(self, topic: str, qos: int = 1) -> None:
        pass

    async def publish(self, topic: str, payload: bytes, **kwargs: Any) -> None:
        self.published.append(orjson.loads(payload)["id"])


def sos(i: int) -> NewRow:
    body = orjson.dumps({"id": f"a{i}", "body": {}})
    return NewRow(f"a{i}", Priority.LIFE_SAFETY, f"site/{SITE}/up/alert", body, 1, i, i)


def confirmation(ids: list[str]) -> Message:
    return Message(f"site/{SITE}/down/ack", orjson.dumps({"v": 1, "stored": ids}), 1, False, 1)


@contextlib.asynccontextmanager
async def uplink_on(tmp_path: Path) -> AsyncIterator[tuple[Uplink, Broker, FailingCommit]]:
    box = Outbox(tmp_path / "o.sqlite", reserve_bytes=0)
    await box.open()
    conn = FailingCommit(box._conn(), rolls_back=True)  # as SQLITE_FULL does
    box._db = conn  # type: ignore[assignment]
    broker = Broker()
    config = UplinkConfig(retry_delay_s=0.05, ack_timeout_s=0.3)
    uplink = Uplink(box, broker, config, SITE)  # type: ignore[arg-type]
    task = asyncio.create_task(uplink.run())
    try:
        yield uplink, broker, conn
        assert not task.done(), task  # still running: nothing ended it
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        box._db = conn.real
        await box.close()


async def held(uplink: Uplink) -> list[str]:
    return [r.id for r in await uplink.outbox.next_batch(100, unsent_only=False)]


async def test_a_claim_that_fails_is_tried_again(tmp_path: Path) -> None:
    async with uplink_on(tmp_path) as (uplink, broker, conn):
        await uplink.outbox.put_many([sos(1)], now_ms=1)
        conn.armed = True  # the claim of the next round fails
        uplink.notify()
        await eventually(lambda: broker.published == ["a1"], timeout=10)
        assert conn.commits_failed == 1


async def test_a_confirmation_whose_delete_fails_is_deleted_later(tmp_path: Path) -> None:
    async with uplink_on(tmp_path) as (uplink, broker, conn):
        await uplink.outbox.put_many([sos(1), sos(2)], now_ms=1)
        uplink.notify()
        await eventually(lambda: sorted(broker.published) == ["a1", "a2"], timeout=10)
        conn.armed = True
        await uplink.handle_confirmation(confirmation(["a1", "a2"]))  # does not raise
        assert await held(uplink) == ["a1", "a2"]  # not deleted yet, not forgotten either
        await eventually(lambda: _empty(uplink), timeout=10)
        assert sorted(broker.published) == ["a1", "a2"]  # confirmed: never sent again


async def test_rows_whose_give_back_fails_are_given_back_later(tmp_path: Path) -> None:
    async with uplink_on(tmp_path) as (uplink, broker, conn):
        await uplink.outbox.put_many([sos(1)], now_ms=1)
        uplink.notify()
        await eventually(lambda: broker.published == ["a1"], timeout=10)
        conn.armed = True  # no confirmation in time: the give-back fails once
        # Published again once given back (the cloud stores an id once).
        await eventually(lambda: broker.published.count("a1") >= 2, timeout=10)
        assert conn.commits_failed == 1
        await uplink.handle_confirmation(confirmation(["a1"]))
        await eventually(lambda: _empty(uplink), timeout=10)


async def _empty(uplink: Uplink) -> bool:
    return await held(uplink) == []
