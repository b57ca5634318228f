"""Schema migrations on SQLite and PostgreSQL: from empty, from the previous revision, in step."""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from cloud import migrate
from cloud.schema import complete_metadata
from cloud.store import Store

pytestmark = pytest.mark.integration
metadata = complete_metadata()  # every subsystem's tables, as migrations must produce them
HEAD = "0013"

ALERT = {
    "type": "sos", "severity": "critical", "subject": "resident:r-1",
    "dedup_key": "resident:r-1|sos", "life_safety": True, "source_id": "m-1",
}


async def test_empty_database_migrates_to_exactly_the_metadata(database_url: str) -> None:
    assert await migrate.current(database_url) is None
    store = await Store.connect(database_url)
    await store.close()
    assert await migrate.current(database_url) == HEAD
    # A table or column added to cloud.schema without a migration shows up here.
    assert await migrate.schema_diff(database_url) == []
    store = await Store.connect(database_url)  # a second start finds head: nothing to do
    try:
        async with store.engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    finally:
        await store.close()
    assert tables == set(metadata.tables) | {"alembic_version"}


@pytest.mark.parametrize("previous", ["0001", "0002"])
async def test_data_at_a_previous_revision_survives_the_upgrade(
    database_url: str, previous: str
) -> None:
    await migrate.upgrade(database_url, previous)
    assert await migrate.current(database_url) == previous
    # Rows written the way the cloud wrote them at that revision (its columns, not today's).
    engine = create_async_engine(database_url)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO alerts (id, site, type, severity, device, subject, dedup_key,"
                " life_safety, ts, received_ms, state, state_changed_ms, body) VALUES"
                " ('a-1', 's-1', 'sos', 'critical', 'btn-1', 'resident:r-1',"
                " 'resident:r-1|sos', :yes, 1795000000000, 1795000000001, 'open',"
                " 1795000000001, :body)"
            ),
            {"yes": True, "body": json.dumps(ALERT)},
        )
        await conn.execute(text(
            "INSERT INTO alert_transitions (alert_id, from_state, to_state, actor, ts)"
            " VALUES ('a-1', NULL, 'open', 'site:s-1', 1795000000001)"
        ))
        await conn.execute(text(
            "INSERT INTO readings (id, site, device, ts, vals) "
            "VALUES ('r-1', 's-1', 'wear-1', 1795000000000, '{\"heart_rate\": 71}')"
        ))
    await engine.dispose()

    store = await Store.connect(database_url)
    try:
        assert await migrate.current(database_url) == HEAD
        got = await store.get_alert("a-1")
        assert (got["type"], got["state"], got["source_id"]) == ("sos", "open", "m-1")
        assert (got["version"], got["repeats"]) == (1, 0)  # new columns take their defaults
        assert [t["to_state"] for t in got["timeline"]] == ["open"]
        async with store.engine.connect() as conn:
            rows = (await conn.execute(text("SELECT id, vals FROM readings"))).all()
            sites = (await conn.execute(text("SELECT count(*) FROM sites"))).scalar_one()
        assert [(r[0], _json(r[1])) for r in rows] == [("r-1", {"heart_rate": 71})]
        assert sites == 0
    finally:
        await store.close()
    assert await migrate.schema_diff(database_url) == []


async def test_a_database_made_before_migrations_is_adopted(database_url: str) -> None:
    """`create_all` of the four original tables (what main did) is revision 0001, stamped."""
    # Revision 0001 is those four tables as create_all made them; without its version row it is
    # what such a database holds (today's metadata has indexes on them main never made).
    await migrate.upgrade(database_url, "0001")
    engine = create_async_engine(database_url)
    async with engine.begin() as conn:
        await conn.execute(text("DROP TABLE alembic_version"))
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    await engine.dispose()
    assert tables == {"alerts", "alert_transitions", "drop_reports", "readings"}
    store = await Store.connect(database_url)
    await store.close()
    assert await migrate.current(database_url) == HEAD
    assert await migrate.schema_diff(database_url) == []


async def test_workers_starting_together_migrate_once(database_url: str) -> None:
    stores = await asyncio.gather(*(Store.connect(database_url) for _ in range(3)))
    for store in stores:
        await store.close()
    assert await migrate.current(database_url) == HEAD


def _json(value: object) -> object:
    return json.loads(value) if isinstance(value, str) else value
