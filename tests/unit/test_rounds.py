"""The cloud's round workers: woken at once, a database outage logged once each way."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest
from sqlalchemy.exc import OperationalError

from cloud.rounds import Rounds


class Flaky(Rounds):
    name = "test worker"

    def __init__(self, poll_s: float, failing: int) -> None:
        super().__init__(poll_s)
        self.failing = failing  # rounds that meet a database outage
        self.rounds = 0
        self.done = asyncio.Event()

    async def round(self) -> int:
        self.rounds += 1
        if self.rounds <= self.failing:
            raise OperationalError("SELECT 1", {}, Exception("connection refused"))
        self.done.set()
        return 0


async def test_an_outage_is_logged_when_it_starts_and_when_it_ends(
        caplog: pytest.LogCaptureFixture) -> None:
    worker = Flaky(poll_s=0.001, failing=5)
    with caplog.at_level(logging.WARNING, logger="cloud.rounds"):
        task = asyncio.create_task(worker.run())
        try:
            async with asyncio.timeout(30):
                await worker.done.wait()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    said = [r.getMessage() for r in caplog.records]
    assert worker.rounds >= 6
    errors = [m for m in said if "database error" in m]
    assert len(errors) == 1
    assert errors[0].startswith("test worker: database error, retrying")
    assert [m for m in said if "reachable again" in m] == ["test worker: database reachable again"]


async def test_a_wake_runs_the_next_round_before_the_poll() -> None:
    worker = Flaky(poll_s=3600, failing=0)
    task = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(30):
            await worker.done.wait()  # the first round runs at start
            worker.done.clear()
            worker.wake()
            await worker.done.wait()  # a second one now, not in an hour
        assert worker.rounds == 2
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
