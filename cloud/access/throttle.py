"""Login throttling: a per-user delay that grows with failures, a per-address limit, and one
password check at a time per user name.

Failures are counted from the audit log (`login_failed`), so every API worker sees the same
numbers. After `max_failures_per_user` failures for a name within `login_window_s`, each
further login for it waits `login_delay_base_s`, doubled with every failure, up to
`login_delay_max_s` after the last failure: guessing slows to one try per that delay, and the
user it targets waits at most that long, never a whole window. From an address the user logged
in from within `known_address_days`, only failures from that address count, so an attacker
elsewhere does not delay the duty officer at their desk at all.

A login claims its user name (a row in `login_claims`) before it checks the limits, and keeps
it until its own failure is recorded: thirty guesses sent at once are checked one after
another, and each sees the failures of those before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cloud.access.config import AccessConfig
from cloud.access.tables import audit_log, login_claims
from shouwang.clock import Clock

CLAIM_MS = 30_000  # a claim outlives any password check; one left by a crashed worker expires
CLAIM_WAIT_S = 5.0  # how long a login waits for another check of the same name to finish
CLAIM_POLL_S = 0.05  # only another worker's check of the same name is waited on this way


@dataclass(frozen=True)
class Wait:
    """A refused login: how long to wait and why (for the log, never for the client)."""

    seconds: int
    reason: str


class LoginThrottle:
    def __init__(self, engine: AsyncEngine, clock: Clock, config: AccessConfig) -> None:
        self.engine = engine
        self.clock = clock
        self.config = config
        self._locks: dict[str, asyncio.Lock] = {}

    async def check(self, conn: AsyncConnection, username: str, remote: str | None) -> Wait | None:
        """None when a login for `username` from `remote` may be checked now."""
        now = self.clock.now_ms()
        since = now - self.config.login_window_s * 1000
        if remote is not None:
            by_addr = await _failures(conn, since, remote=remote)
            if by_addr[0] >= self.config.max_failures_per_address:
                return Wait(self.config.login_window_s, "address")
        known = remote is not None and await self._known(conn, username, remote, now)
        count, last_ms = await _failures(
            conn, since, target=username, remote=remote if known else None
        )
        over = count - self.config.max_failures_per_user
        if over < 0 or last_ms is None:
            return None
        delay_ms = 1000 * min(
            self.config.login_delay_base_s * 2**over, self.config.login_delay_max_s
        )
        left_ms = last_ms + delay_ms - now
        return Wait(math.ceil(left_ms / 1000), "user") if left_ms > 0 else None

    async def _known(self, conn: AsyncConnection, username: str, remote: str, now: int) -> bool:
        if self.config.known_address_days == 0:
            return False
        since = now - self.config.known_address_days * 86_400_000
        found = await conn.execute(
            select(audit_log.c.seq).where(
                audit_log.c.action == "login_succeeded", audit_log.c.target == username,
                audit_log.c.remote == remote, audit_log.c.ts >= since,
            ).limit(1)
        )
        return found.first() is not None

    @contextlib.asynccontextmanager
    async def turn(self, username: str) -> AsyncIterator[bool]:
        """Hold the right to check a password for `username`: yields False when it did not
        come within CLAIM_WAIT_S. Logins in this process queue on a lock; across workers the
        claim row decides."""
        lock = self._locks.setdefault(username, asyncio.Lock())
        try:
            async with asyncio.timeout(CLAIM_WAIT_S):
                await lock.acquire()
        except TimeoutError:
            yield False
            return
        try:
            claimed = await self._claim(username)
            try:
                yield claimed
            finally:
                if claimed:
                    await self.release(username)
        finally:
            lock.release()
            if not lock.locked() and self._locks.get(username) is lock:
                del self._locks[username]  # no one waits: forget the name

    async def _claim(self, username: str) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLAIM_WAIT_S
        while not await self._try_claim(username):
            if loop.time() > deadline:
                return False
            await asyncio.sleep(CLAIM_POLL_S)
        return True

    async def _try_claim(self, username: str) -> bool:
        now = self.clock.now_ms()
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    login_claims.insert().values(username=username, until_ms=now + CLAIM_MS)
                )
            return True
        except IntegrityError:  # held by another login, or left by a crashed worker
            async with self.engine.begin() as conn:
                stale = await conn.execute(
                    update(login_claims)
                    .where(login_claims.c.username == username, login_claims.c.until_ms <= now)
                    .values(until_ms=now + CLAIM_MS)
                )
            return bool(stale.rowcount == 1)

    async def release(self, username: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(delete(login_claims).where(login_claims.c.username == username))


async def _failures(
    conn: AsyncConnection, since: int, *, target: str | None = None, remote: str | None = None
) -> tuple[int, int | None]:
    """How many `login_failed` since `since` (for a user name and/or an address), and the
    time of the last."""
    query = select(func.count(), func.max(audit_log.c.ts)).where(
        audit_log.c.action == "login_failed", audit_log.c.ts >= since
    )
    if target is not None:
        query = query.where(audit_log.c.target == target)
    if remote is not None:
        query = query.where(audit_log.c.remote == remote)
    count, last = (await conn.execute(query)).one()
    return int(count), None if last is None else int(last)
