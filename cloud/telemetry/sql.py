"""Telemetry in the SQL store: the embedded default, right for one community."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from sqlalchemy import func, select

from cloud.schema import readings
from cloud.store import Store
from cloud.telemetry import Point, backend, check_field, numeric, steps
from shouwang.config import Strict


class SqlTelemetryConfig(Strict):
    backend: Literal["sql"] = Field("sql", description="Readings in the cloud's SQL database")


class SqlTelemetryStore:
    """One row per reading, keyed by the reading's id: a redelivery is ignored."""

    def __init__(self, store: Store) -> None:
        self.store = store
        # SQLite: about 10 ms of write lock; PostgreSQL locks rows, not the database.
        self.batch_readings = 500 if store.engine.dialect.name == "sqlite" else 5000

    async def write(self, site: str, batch: list[dict[str, Any]]) -> int:
        """Returns how many readings were new (redelivered ids are not counted)."""
        if not batch:
            return 0
        rows = [
            {"id": r["id"], "site": site, "device": r["device"], "ts": r["ts"], "vals": r["values"]}
            for r in batch
        ]
        stmt = (
            self.store.insert(readings)
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(readings.c.id)
        )
        async with self.store.engine.begin() as conn:
            result = await conn.execute(stmt, rows)
            return len(result.all())

    async def count(self, site: str | None = None) -> int:
        query = select(func.count()).select_from(readings)
        if site is not None:
            query = query.where(readings.c.site == site)
        async with self.store.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def query_range(
        self, site: str, device: str, field: str, start_ms: int, end_ms: int, step_s: int
    ) -> list[Point]:
        check_field(field)
        first, last, step = steps(start_ms, end_ms, step_s)
        if first > last:
            return []  # no multiple of the step in range
        query = (
            select(readings.c.ts, readings.c.vals)
            .where(
                readings.c.site == site,
                readings.c.device == device,
                readings.c.ts > first - step,
                readings.c.ts <= last,
            )
            .order_by(readings.c.ts)
        )
        async with self.store.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        sums: dict[int, list[float]] = {}
        for ts, vals in rows:
            value = numeric(vals.get(field))
            if value is None:
                continue
            t = -(-ts // step) * step  # the step whose window (t - step, t] holds ts
            acc = sums.setdefault(t, [0.0, 0.0])
            acc[0] += value
            acc[1] += 1
        return [(t, s / n) for t, (s, n) in sorted(sums.items())]

    async def close(self) -> None:
        """The SQL store is closed by its owner."""


@backend("sql")
async def _open(config: SqlTelemetryConfig, store: Store) -> SqlTelemetryStore:
    return SqlTelemetryStore(store)
