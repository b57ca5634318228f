"""Admin imports: sites, locations, residents and devices from CSV or YAML, all or nothing.

Every row is checked (its fields, and its references against the database and the rows
before it) before anything is written; any bad row makes the import write nothing and report
every bad row as `FILE:LINE: field: reason`. A good file is written in one transaction as
upserts keyed by id (a location by its path), so importing the same file again changes
nothing. CSV lists (tags, guardians, consents) are `;`-separated; a guardian is
`contact_id[:relation]`. YAML files are a list of mappings with the same keys (lists as lists).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.schema import (
    LOCATION_LEVELS,
    RESIDENT_TAGS,
    consents,
    devices,
    locations,
    resident_guardians,
    residents,
    sites,
)
from cloud.store import Store
from shouwang.config import Strict
from shouwang.profiles import load_profiles
from shouwang.protocol import _ID_RE

MAX_ROWS = 100_000


class ImportRejected(Exception):
    """The file could not be imported; `problems` lists every bad row."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _id(value: str) -> str:
    if not _ID_RE.match(value):
        raise ValueError(f"{value!r} is not an id (1-64 of A-Za-z0-9_.:-)")
    return value


def _path(value: str) -> str:
    parts = value.split("/")
    if len(parts) > len(LOCATION_LEVELS) or any(not p.strip() or p != p.strip() for p in parts):
        raise ValueError(
            f"{value!r} is not a location path: 1-8 non-empty segments "
            f"({'/'.join(LOCATION_LEVELS)})"
        )
    return value


def _split(value: Any) -> Any:
    if isinstance(value, str):
        return [v.strip() for v in value.split(";") if v.strip()]
    return value


class SiteRow(Strict):
    id: str = Field(description="Site id, as the gateway's `site`")
    name: str | None = Field(None, description="Display name")
    location: str | None = Field(None, description="Location path prefix the site serves")

    check_id = field_validator("id")(_id)

    @field_validator("location")
    @classmethod
    def _loc(cls, v: str | None) -> str | None:
        return _path(v) if v else None


_PHONE = re.compile(r"^\+?[0-9][0-9 -]{2,30}\Z")


def _phone(v: str | None) -> str | None:
    if v is not None and not _PHONE.match(v):
        raise ValueError("a phone number is digits, spaces and '-', with an optional leading '+'")
    return v


class LocationRow(Strict):
    path: str = Field(description="district/street/…/household; ancestors are created too")
    label: str | None = Field(None, description="Display name of the last segment")
    phone: str | None = Field(
        None, description="The number a family calls for this place: a community's office, a "
                          "building's property desk; a household's is its nearest ancestor's")

    check_path = field_validator("path")(_path)
    check_phone = field_validator("phone")(_phone)


class Guardian(Strict):
    contact: str = Field(description="User or contact id")
    relation: str | None = Field(None, max_length=32, description="daughter, neighbour, …")


class Contact(Strict):
    name: str = Field(min_length=1, max_length=64, description="Who to call (never logged)")
    relation: str | None = Field(None, max_length=32, description="daughter, neighbour, …")
    phone: str = Field(description="Their number")

    check_phone = field_validator("phone")(_phone)


class ResidentRow(Strict):
    id: str = Field(description="Resident id")
    name: str = Field(min_length=1, max_length=128, description="Full name (never logged)")
    birth_year: int | None = Field(None, ge=1900, le=2100, description="For the age on screen")
    phone: str | None = Field(None, description="The resident's own number")
    contacts: list[Contact] = Field(
        default_factory=list, max_length=5,
        description="Emergency contacts to call, in order; CSV: name:relation:phone; …")
    location: str | None = Field(None, description="Household path; must be imported")
    tags: list[str] = Field(default_factory=list, description="; -separated in CSV")
    guardians: list[Guardian] = Field(default_factory=list, description="In order of calling")
    consents: list[str] = Field(default_factory=list, description="Purposes consented to")

    check_id = field_validator("id")(_id)

    @field_validator("tags", "consents", mode="before")
    @classmethod
    def _lists(cls, v: Any) -> Any:
        return _split(v)

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: list[str]) -> list[str]:
        for tag in v:
            if tag not in RESIDENT_TAGS:
                raise ValueError(f"unknown tag {tag!r} (known: {', '.join(RESIDENT_TAGS)})")
        return v

    check_phone = field_validator("phone")(_phone)

    @field_validator("contacts", mode="before")
    @classmethod
    def _contacts(cls, v: Any) -> Any:
        if isinstance(v, str):
            out = []
            for item in _split(v):
                name, relation, phone = [*item.split(":"), "", ""][:3]
                out.append({"name": name, "relation": relation or None, "phone": phone})
            return out
        return v

    @field_validator("guardians", mode="before")
    @classmethod
    def _guardians(cls, v: Any) -> Any:
        if isinstance(v, str):
            out = []
            for item in _split(v):
                contact, _, relation = item.partition(":")
                out.append({"contact": contact, "relation": relation or None})
            return out
        return v

    @field_validator("location")
    @classmethod
    def _loc(cls, v: str | None) -> str | None:
        return _path(v) if v else None


class DeviceRow(Strict):
    site: str = Field(description="Site id the device reports through")
    id: str = Field(description="Device id, as in the site config")
    profile: str = Field(description="Device profile (device_profiles/*.yaml)")
    model: str | None = Field(None, max_length=64, description="Hardware model")
    firmware: str | None = Field(None, max_length=64, description="Firmware version")
    resident: str | None = Field(None, description="Resident the device is bound to")
    location: str | None = Field(None, description="Place the device is bound to")

    check_ids = field_validator("site", "id")(_id)

    @field_validator("location")
    @classmethod
    def _loc(cls, v: str | None) -> str | None:
        return _path(v) if v else None


@dataclass
class Report:
    kind: str
    rows: int = 0
    new: int = 0
    implied: int = 0  # ancestors a location import created on the way

    def summary(self) -> str:
        text = f"{self.kind}: {self.rows} rows, {self.new} new, {self.rows - self.new} updated"
        return text + (f", {self.implied} ancestors added" if self.implied else "")


@dataclass(frozen=True)
class Kind:
    model: type[Strict]
    check: Callable[[AsyncConnection, list[tuple[int, Any]]], Awaitable[list[str]]]
    write: Callable[[Store, AsyncConnection, list[Any], int], Awaitable[tuple[int, int]]]


# --- reading files -------------------------------------------------------------------------


def read_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line, raw row) pairs from a CSV (header first) or YAML (list of mappings) file."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        rows = []
        for row in reader:
            clean = {k.strip(): v.strip() for k, v in row.items() if k and v and v.strip()}
            rows.append((reader.line_num, clean))
        return rows
    if path.suffix.lower() in (".yaml", ".yml"):
        node = yaml.compose(text)
        if node is None:
            return []
        if not isinstance(node, yaml.SequenceNode):
            line = node.start_mark.line + 1
            raise ImportRejected([f"{path.name}:{line}: expected a list of rows"])
        data = yaml.safe_load(text)
        return [(item.start_mark.line + 1, row) for item, row in zip(node.value, data, strict=True)]
    raise ImportRejected([f"{path.name}: unknown format {path.suffix!r}; use .csv or .yaml"])


# --- reference checks (against the database and earlier rows) ------------------------------


async def _keys(conn: AsyncConnection, column: Any) -> set[str]:
    return set((await conn.execute(select(column))).scalars().all())


async def _check_sites(conn: AsyncConnection, rows: list[tuple[int, SiteRow]]) -> list[str]:
    return _duplicates(rows, lambda r: r.id, "id")


async def _check_locations(
    conn: AsyncConnection, rows: list[tuple[int, LocationRow]]
) -> list[str]:
    return _duplicates(rows, lambda r: r.path, "path")


async def _check_residents(
    conn: AsyncConnection, rows: list[tuple[int, ResidentRow]]
) -> list[str]:
    known = await _keys(conn, locations.c.path)
    problems = _duplicates(rows, lambda r: r.id, "id")
    for line, r in rows:
        if r.location and r.location not in known:
            problems.append(f"{line}: location: {r.location!r} is not imported")
        contacts = [g.contact for g in r.guardians]
        if len(set(contacts)) != len(contacts):
            problems.append(f"{line}: guardians: a contact is listed twice")
    return problems


async def _check_devices(conn: AsyncConnection, rows: list[tuple[int, DeviceRow]]) -> list[str]:
    known_places = await _keys(conn, locations.c.path)
    known_people = await _keys(conn, residents.c.id)
    profiles = load_profiles()
    problems = _duplicates(rows, lambda r: (r.site, r.id), "id")
    for line, r in rows:
        if r.profile not in profiles:
            known = ", ".join(sorted(profiles))
            problems.append(f"{line}: profile: unknown profile {r.profile!r} (known: {known})")
        if r.resident is None and r.location is None:
            problems.append(f"{line}: resident, location: a device is bound to one or both")
        if r.resident and r.resident not in known_people:
            problems.append(f"{line}: resident: {r.resident!r} is not imported")
        if r.location and r.location not in known_places:
            problems.append(f"{line}: location: {r.location!r} is not imported")
    return problems


def _duplicates(rows: Iterable[tuple[int, Any]], key: Callable[[Any], Any], name: str) -> list[str]:
    seen: dict[Any, int] = {}
    problems = []
    for line, r in rows:
        k = key(r)
        if k in seen:
            problems.append(f"{line}: {name}: duplicate of line {seen[k]}")
        seen.setdefault(k, line)
    return problems


# --- writes (one transaction, upserts) -----------------------------------------------------


async def _upsert(
    store: Store, conn: AsyncConnection, table: Any, keys: list[str], rows: list[dict[str, Any]]
) -> int:
    """Insert or update `rows`; returns how many were new."""
    if not rows:
        return 0
    key_cols = [table.c[k] for k in keys]
    existing = {tuple(r) for r in (await conn.execute(select(*key_cols))).all()}
    new = sum(1 for r in rows if tuple(r[k] for k in keys) not in existing)
    stmt = store.insert(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=keys,
        set_={c: stmt.excluded[c] for c in rows[0] if c not in keys},
    )
    await conn.execute(stmt, rows)
    return new


async def _write_sites(
    store: Store, conn: AsyncConnection, rows: list[SiteRow], now: int
) -> tuple[int, int]:
    stmt = store.insert(sites).on_conflict_do_nothing(index_elements=["id"])
    existing = await _keys(conn, sites.c.id)
    await conn.execute(stmt, [{"id": r.id, "registered_ms": now} for r in rows])
    for r in rows:
        await conn.execute(
            update(sites).where(sites.c.id == r.id).values(name=r.name, location=r.location)
        )
    return sum(1 for r in rows if r.id not in existing), 0


async def _write_locations(
    store: Store, conn: AsyncConnection, rows: list[LocationRow], now: int
) -> tuple[int, int]:
    wanted: dict[str, dict[str, Any]] = {}
    for r in rows:
        parts = r.path.split("/")
        for depth in range(1, len(parts) + 1):  # ancestors first, so each parent exists
            path = "/".join(parts[:depth])
            wanted.setdefault(path, {
                "path": path,
                "parent": "/".join(parts[: depth - 1]) or None,
                "level": depth,
                "name": parts[depth - 1],
                "label": None,
                "phone": None,
            })
        wanted[r.path].update(label=r.label, phone=r.phone)
    known = await _keys(conn, locations.c.path)
    named = {r.path for r in rows}
    implicit = [v for p, v in wanted.items() if p not in known and p not in named]
    explicit = [wanted[p] for p in sorted(named)]
    # Level by level, implied and named together: an implied grid below a named community
    # needs the community first (PostgreSQL checks the parent key on each insert).
    new = 0
    for level in sorted({v["level"] for v in [*implicit, *explicit]}):
        implied_here = [v for v in implicit if v["level"] == level]
        if implied_here:
            await conn.execute(store.insert(locations).on_conflict_do_nothing(), implied_here)
        new += await _upsert(store, conn, locations, ["path"],
                             [v for v in explicit if v["level"] == level])
    return new, len(implicit)


async def _write_residents(
    store: Store, conn: AsyncConnection, rows: list[ResidentRow], now: int
) -> tuple[int, int]:
    new = await _upsert(store, conn, residents, ["id"], [
        {"id": r.id, "name": r.name, "location": r.location, "tags": r.tags, "updated_ms": now,
         "birth_year": r.birth_year, "phone": r.phone,
         "contacts": [c.model_dump() for c in r.contacts]}
        for r in rows
    ])
    ids = [r.id for r in rows]
    await conn.execute(delete(resident_guardians).where(resident_guardians.c.resident_id.in_(ids)))
    guardians = [
        {"resident_id": r.id, "contact_id": g.contact, "relation": g.relation, "priority": i + 1}
        for r in rows
        for i, g in enumerate(r.guardians)
    ]
    if guardians:
        await conn.execute(resident_guardians.insert(), guardians)
    # Consents are a record, not a setting: a purpose missing from the file is revoked now,
    # a new one granted now; one still granted keeps its original grant time.
    active = (
        await conn.execute(
            select(consents.c.seq, consents.c.resident_id, consents.c.purpose).where(
                consents.c.resident_id.in_(ids), consents.c.revoked_ms.is_(None)
            )
        )
    ).all()
    granted = {(rid, purpose) for _, rid, purpose in active}
    wanted = {(r.id, p) for r in rows for p in r.consents}
    revoke = [seq for seq, rid, purpose in active if (rid, purpose) not in wanted]
    if revoke:
        await conn.execute(
            update(consents).where(consents.c.seq.in_(revoke)).values(revoked_ms=now)
        )
    grants = [
        {"resident_id": rid, "purpose": p, "granted_ms": now, "recorded_by": "import"}
        for rid, p in sorted(wanted - granted)
    ]
    if grants:
        await conn.execute(consents.insert(), grants)
    return new, 0


async def _write_devices(
    store: Store, conn: AsyncConnection, rows: list[DeviceRow], now: int
) -> tuple[int, int]:
    new = await _upsert(store, conn, devices, ["site", "id"], [
        {"site": r.site, "id": r.id, "profile": r.profile, "model": r.model,
         "firmware": r.firmware, "resident": r.resident, "location": r.location}
        for r in rows
    ])
    return new, 0


KINDS: dict[str, Kind] = {
    "sites": Kind(SiteRow, _check_sites, _write_sites),
    "locations": Kind(LocationRow, _check_locations, _write_locations),
    "residents": Kind(ResidentRow, _check_residents, _write_residents),
    "devices": Kind(DeviceRow, _check_devices, _write_devices),
}


async def import_file(store: Store, kind: str, path: Path, now_ms: int) -> Report:
    """Check every row of `path`, then write them all in one transaction (or nothing)."""
    try:
        raw = read_rows(path)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, csv.Error) as err:
        raise ImportRejected([f"{path.name}: cannot read: {err}"]) from err
    return await _import(store, kind, path.name, raw, now_ms)


async def import_rows(
    store: Store, kind: str, rows: list[dict[str, Any]], now_ms: int, name: str = "rows"
) -> Report:
    """As `import_file`, from rows in memory (the demo registering its site, tests); a
    problem names the row by its position from 1, as `name:N`."""
    return await _import(store, kind, name, list(enumerate(rows, start=1)), now_ms)


async def _import(
    store: Store, kind: str, name: str, raw: list[tuple[int, Any]], now_ms: int
) -> Report:
    spec = KINDS[kind]
    if len(raw) > MAX_ROWS:
        raise ImportRejected([f"{name}: {len(raw)} rows exceed {MAX_ROWS}; split the file"])
    parsed: list[tuple[int, Any]] = []
    problems: list[str] = []
    for line, row in raw:
        if not isinstance(row, dict):
            problems.append(f"{name}:{line}: expected a mapping of column to value")
            continue
        try:
            parsed.append((line, spec.model.model_validate(row)))
        except ValidationError as err:
            for e in err.errors():
                key = ".".join(str(p) for p in e["loc"]) or "(row)"
                msg = "unknown column" if e["type"] == "extra_forbidden" else e["msg"]
                problems.append(f"{name}:{line}: {key}: {msg.removeprefix('Value error, ')}")
    async with store.engine.begin() as conn:
        problems += [f"{name}:{p}" for p in await spec.check(conn, parsed)]
        if problems:
            raise ImportRejected(sorted(problems, key=_line_of))
        new, implied = await spec.write(store, conn, [r for _, r in parsed], now_ms)
    return Report(kind, rows=len(parsed), new=new, implied=implied)


def _line_of(problem: str) -> int:
    parts = problem.split(":")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def import_cli(config_path: Path, kind: str, path: Path) -> int:
    """`shouwang cloud import KIND FILE --config cloud.yaml`: 0 imported, 1 refused."""
    import asyncio
    import sys

    from cloud.config import CloudConfig
    from shouwang.clock import SystemClock
    from shouwang.config import load_yaml

    config = load_yaml(config_path, CloudConfig)

    async def run() -> Report:
        store = await Store.connect(config.database_url)
        try:
            return await import_file(store, kind, path, SystemClock().now_ms())
        finally:
            await store.close()

    try:
        report = asyncio.run(run())
    except ImportRejected as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        print(f"{path.name}: {len(err.problems)} problem(s); nothing imported", file=sys.stderr)
        return 1
    print(report.summary())
    return 0
