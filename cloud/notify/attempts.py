"""Delivery attempts written in shared transactions: whatever is waiting goes in one commit."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from cloud.notify.tables import record_attempts
from cloud.store import Store


class AttemptLog:
    """`await write(rows)` returns once the rows are committed.

    No timer: idle, each write is its own transaction; when many sends finish together (an
    alert fanned out to a hundred families) they share one commit and its fsync. The queue
    holds one entry per waiting caller, so it is bounded by the number of sends in flight.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._waiting: list[tuple[list[dict[str, Any]], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def write(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((rows, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain(), name="notify-attempts")
        await done

    async def _drain(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                await record_attempts(self.store, [r for rows, _ in batch for r in rows])
            except Exception as err:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(err)
            else:
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)

    async def close(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await self._writer
