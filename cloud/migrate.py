"""Schema migrations (Alembic): bring any cloud database to head, safely from several workers.

Migrations run in a worker thread with their own event loop and engine, so loading Alembic's
scripts never blocks the server's loop. Workers starting together take a lock first (an
advisory lock on PostgreSQL, a file lock beside an SQLite file); the second finds the schema
at head and does nothing. A database made by `create_all` before migrations existed holds
exactly revision 0001 and is stamped as such before upgrading.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from cloud.schema import complete_metadata

log = logging.getLogger(__name__)
SCRIPTS = Path(__file__).parent / "migrations"
FIRST_REVISION = "0001"
_PG_LOCK_KEY = 0x5348_5747  # "SHWG": one advisory lock id for every shouwang migration


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    config.attributes["connection"] = connection
    return config


async def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at `url` to `revision` (head by default)."""
    await asyncio.to_thread(_in_own_loop, _upgrade(url, revision))


async def current(url: str) -> str | None:
    """The revision the database is at; None for an empty database."""
    result: str | None = await asyncio.to_thread(_in_own_loop, _current(url))
    return result


async def schema_diff(url: str) -> list[Any]:
    """What differs between the database and `cloud.schema.metadata` (empty when in step)."""
    result: list[Any] = await asyncio.to_thread(_in_own_loop, _diff(url))
    return result


def _in_own_loop(coro: Any) -> Any:
    return asyncio.run(coro)


async def _upgrade(url: str, revision: str) -> None:
    engine = create_async_engine(url)
    try:
        with _file_lock(url):
            async with engine.begin() as conn:
                if engine.dialect.name == "postgresql":
                    await conn.execute(text(f"SELECT pg_advisory_xact_lock({_PG_LOCK_KEY})"))
                await conn.run_sync(_upgrade_sync, revision)
    finally:
        await engine.dispose()


def _upgrade_sync(conn: Connection, revision: str) -> None:
    config = alembic_config(conn)
    before = MigrationContext.configure(conn).get_current_revision()
    if before is None and inspect(conn).has_table("alerts"):
        log.info("database predates migrations; stamping revision %s", FIRST_REVISION)
        command.stamp(config, FIRST_REVISION)
    command.upgrade(config, revision)
    after = MigrationContext.configure(conn).get_current_revision()
    if after != before:
        log.info("database migrated from %s to %s", before, after)


async def _current(url: str) -> str | None:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda c: MigrationContext.configure(c).get_current_revision()
            )
    finally:
        await engine.dispose()


async def _diff(url: str) -> list[Any]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda c: compare_metadata(
                    MigrationContext.configure(c, opts={"compare_type": True}), complete_metadata()
                )
            )
    finally:
        await engine.dispose()


@contextlib.contextmanager
def _file_lock(url: str) -> Iterator[None]:
    """Serialise migrations of one SQLite file across processes; a no-op elsewhere."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        yield
        return
    lock_path = Path(f"{parsed.database}.migrate-lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
