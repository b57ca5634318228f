"""The telemetry store: one interface; embedded SQL by default (VictoriaMetrics to come)."""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy import JSON, BigInteger, Column, Index, String, Table, func, select

from cloud.store import Store, metadata

readings = Table(
    "readings",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("site", String(64), nullable=False),
    Column("device", String(64), nullable=False),
    Column("ts", BigInteger, nullable=False),
    Column("vals", JSON, nullable=False),
    Index("readings_device_ts", "site", "device", "ts"),
)


class TelemetryStore(Protocol):
    async def write(self, site: str, batch: list[dict[str, Any]]) -> int:
        """Store readings idempotently (by reading id); returns how many were new."""
        ...

    async def count(self, site: str | None = None) -> int: ...


class SqlTelemetryStore:
    """Readings in the SQL store: right for one community; a district wants VictoriaMetrics."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def write(self, site: str, batch: list[dict[str, Any]]) -> int:
        if not batch:
            return 0
        rows = [
            {"id": r["id"], "site": site, "device": r["device"], "ts": r["ts"], "vals": r["values"]}
            for r in batch
        ]
        stmt = self.store.insert(readings).on_conflict_do_nothing(index_elements=["id"])
        async with self.store.engine.begin() as conn:
            result = await conn.execute(stmt, rows)
        return int(result.rowcount) if result.rowcount >= 0 else len(rows)

    async def count(self, site: str | None = None) -> int:
        query = select(func.count()).select_from(readings)
        if site is not None:
            query = query.where(readings.c.site == site)
        async with self.store.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())


def check_telemetry_body(body: dict[str, Any]) -> str | None:
    """None when a `telemetry` body is a well-formed batch of readings, else why not."""
    batch = body.get("readings")
    if not isinstance(batch, list) or not batch:
        return "body.readings must be a non-empty list"
    for i, r in enumerate(batch):
        if not isinstance(r, dict):
            return f"body.readings[{i}] must be an object"
        if not isinstance(r.get("id"), str) or not isinstance(r.get("device"), str):
            return f"body.readings[{i}]: id and device must be strings"
        if type(r.get("ts")) is not int or not isinstance(r.get("values"), dict):
            return f"body.readings[{i}]: ts must be an integer and values an object"
    return None
