"""Cloud workers that work in rounds over the database, and what they share.

A round runs at once when a change made in this process wakes the worker, else every
`poll_s`. A database outage is logged when it starts and when it ends, never once a round
(STYLE.md: log a state change once); the worker keeps going and tries again next round.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger(__name__)


class Rounds:
    name = "rounds"  # said in the outage's log lines

    def __init__(self, poll_s: float) -> None:
        self.poll_s = poll_s
        self._wake = asyncio.Event()
        self._failing = False

    def wake(self) -> None:
        """A change was committed in this process: the next round now, not at the poll."""
        self._wake.set()

    async def round(self) -> Any:
        raise NotImplementedError

    async def run(self) -> None:
        while True:
            try:
                await self.round()
                if self._failing:
                    log.warning("%s: database reachable again", self.name)
                    self._failing = False
            except SQLAlchemyError as err:
                if not self._failing:
                    log.error("%s: database error, retrying each round: %s", self.name, err)
                    self._failing = True
            self._wake.clear()
            try:
                async with asyncio.timeout(self.poll_s):
                    await self._wake.wait()
            except TimeoutError:
                pass
