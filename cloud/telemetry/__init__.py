"""The telemetry store: one interface, backends by registry (embedded SQL, VictoriaMetrics).

`query_range` downsamples for charts with Prometheus' convention on both backends: points at
the multiples of `step_s` within [start_ms, end_ms], each the average of the samples in
(t - step, t]; a step with no sample has no point.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from shouwang.protocol import _ID_RE as ID_RE
from shouwang.protocol import is_int64

if TYPE_CHECKING:
    from cloud.store import Store

MAX_POINTS = 11_000  # per query_range, like Prometheus: a chart never needs more
_FIELD_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}\Z")

Point = tuple[int, float]  # (t in epoch ms, average)


class TelemetryBackendError(Exception):
    """The telemetry backend is unreachable or refused a request: ingest keeps the messages
    unacknowledged and retries, as for the database."""


class BadQuery(ValueError):
    """A range query the store refuses: the message says which argument and why."""


class TelemetryStore(Protocol):
    # Most readings ingest merges into one write. On SQLite a write holds the database's only
    # write lock, which an alert insert then waits for: there it is kept small.
    batch_readings: int

    async def write(self, site: str, batch: list[dict[str, Any]]) -> int:
        """Store readings idempotently; returns how many it wrote (see each backend)."""
        ...

    async def count(self, site: str | None = None) -> int:
        """Readings stored (a redelivered reading counts once)."""
        ...

    async def query_range(
        self, site: str, device: str, field: str, start_ms: int, end_ms: int, step_s: int
    ) -> list[Point]:
        """Average of `field` per step, for charts (see the module docstring)."""
        ...

    async def close(self) -> None: ...


Factory = Callable[[Any, "Store"], Awaitable[TelemetryStore]]
BACKENDS: dict[str, Factory] = {}


def backend(name: str) -> Callable[[Factory], Factory]:
    """Register a backend factory under the config's `backend:` value."""

    def register(factory: Factory) -> Factory:
        BACKENDS[name] = factory
        return factory

    return register


async def open_telemetry(config: Any, store: Store) -> TelemetryStore:
    return await BACKENDS[config.backend](config, store)


def steps(start_ms: int, end_ms: int, step_s: int) -> tuple[int, int, int]:
    """Check a range query; returns (first t, last t, step) in ms, aligned to the step."""
    if type(step_s) is not int or step_s < 1:
        raise BadQuery(f"step_s must be a whole number of seconds >= 1, got {step_s!r}")
    if end_ms < start_ms:
        raise BadQuery(f"end_ms {end_ms} is before start_ms {start_ms}")
    step = step_s * 1000
    first, last = math.ceil(start_ms / step) * step, (end_ms // step) * step
    points = (last - first) // step + 1
    if points > MAX_POINTS:
        raise BadQuery(f"{points} points exceed {MAX_POINTS}; use a larger step")
    return first, last, step


def check_field(field: str) -> None:
    if not _FIELD_RE.match(field):
        raise BadQuery(f"field must be an identifier, got {field!r}")


def numeric(value: Any) -> float | None:
    """A chartable value: numbers, and booleans as 0/1; None for anything else."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def check_telemetry_body(body: dict[str, Any]) -> str | None:
    """None when a `telemetry` body is a well-formed batch of readings, else why not.

    Device ids and field names become series labels and metric names (unescaped in the line
    protocol), so they must be ids and identifiers. Ones seen good are remembered: a fleet
    has a few thousand, and each reading would otherwise pay a regular expression per name.
    """
    batch = body.get("readings")
    if not isinstance(batch, list) or not batch:
        return "body.readings must be a non-empty list"
    for i, r in enumerate(batch):
        if not isinstance(r, dict):
            return f"body.readings[{i}] must be an object"
        device, id_ = r.get("device"), r.get("id")
        if type(id_) is not str or type(device) is not str:
            return f"body.readings[{i}]: id and device must be strings"
        if not ID_RE.match(id_):  # the row's key
            return f"body.readings[{i}]: id must be 1-64 of [A-Za-z0-9_.:-]"
        if device not in _GOOD_DEVICES:
            if not ID_RE.match(device):
                return f"body.readings[{i}]: device must be 1-64 of [A-Za-z0-9_.:-]"
            _remember(_GOOD_DEVICES, device)
        values = r.get("values")
        if not is_int64(r.get("ts")) or not isinstance(values, dict):
            return f"body.readings[{i}]: ts must be a 64-bit integer and values an object"
        for name in values:
            if name not in _GOOD_FIELDS:
                if not _FIELD_RE.match(name):
                    return f"body.readings[{i}]: field {name[:64]!r} is not an identifier"
                _remember(_GOOD_FIELDS, name)
    return None


_GOOD_DEVICES: set[str] = set()
_GOOD_FIELDS: set[str] = set()
_REMEMBERED = 100_000  # names per set; past it, a new name is checked every time


def _remember(good: set[str], name: str) -> None:
    if len(good) < _REMEMBERED:
        good.add(name)


# Import the backends so they register (the registry lives above).
from cloud.schema import readings  # noqa: E402  (where `readings` was imported from before)
from cloud.telemetry import sql, victoria  # noqa: E402, F401
from cloud.telemetry.sql import SqlTelemetryStore  # noqa: E402

__all__ = [
    "BACKENDS",
    "BadQuery",
    "Point",
    "SqlTelemetryStore",
    "TelemetryStore",
    "check_telemetry_body",
    "open_telemetry",
    "readings",
]
