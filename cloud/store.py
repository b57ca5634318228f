"""The SQL store: one SQLAlchemy Core layer over SQLite (default) and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Executable, and_, case, event, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from cloud import migrate
from cloud.access.tables import assignments, users
from cloud.alerts import (
    CONFIRMED_TYPES,
    SEVERITY_RANK,
    STATE_RANK,
    TRANSITIONS,
    AlertNotFound,
    IllegalTransition,
)
from cloud.schema import alert_transitions, alerts, drop_reports, events, metadata
from shouwang.protocol import Envelope

__all__ = ["Store", "metadata"]  # tables live in cloud.schema; metadata is re-exported here

_ALERT_COLUMNS = [c for c in alerts.c if c.name != "body"]


def _now_ms() -> int:
    return int(time.time() * 1000)


class Store:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        # Built once, values passed as parameters: building `.values(**row)` per alert was a
        # third of an alert's ingest CPU (py-spy on bench/cloud_ingest.py).
        self._new_alert = self.insert(alerts).on_conflict_do_nothing(index_elements=["id"])
        self._new_transition = alert_transitions.insert()

    @classmethod
    async def connect(cls, url: str) -> Store:
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        await migrate.upgrade(url)
        engine = create_async_engine(url)
        if engine.dialect.name == "sqlite":
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return cls(engine)

    async def close(self) -> None:
        await self.engine.dispose()

    async def insert_alert(
        self, env: Envelope, *, actor: str | None = None
    ) -> dict[str, Any] | None:
        """Store an alert once; None when this id is already stored (a redelivery).
        `actor` opens it in the timeline (default: the site that raised it)."""
        [alert] = await self.insert_alerts([env], actor=actor)
        return alert

    async def insert_alerts(
        self, envs: Sequence[Envelope], *, actor: str | None = None
    ) -> list[dict[str, Any] | None]:
        """Store alerts in one transaction (one commit for a storm), each once; for each, the
        stored alert or None for a redelivery."""
        now = _now_ms()
        out: list[dict[str, Any] | None] = []
        async with self.engine.begin() as conn:
            # A message that was a repeat on one pass and a new alert on the next (the gateway
            # crashed between the two and the alert was closed meanwhile) is one alert: both
            # envelopes carry the same id, so one folded in stands for it.
            folded = set(
                (
                    await conn.execute(
                        select(events.c.id).where(
                            events.c.id.in_([e.id for e in envs]),
                            events.c.name == "alert_repeated",
                        )
                    )
                ).scalars()
            )
            for env in envs:
                body = env.body
                row = {
                    "id": env.id,
                    "site": env.site,
                    "type": body["type"],
                    "severity": body["severity"],
                    "device": env.device,
                    "subject": body["subject"],
                    "dedup_key": body["dedup_key"],
                    "resident": body.get("resident"),
                    "location": body.get("location"),
                    "life_safety": bool(body.get("life_safety", False)),
                    "ts": env.ts,
                    "received_ms": now,
                    "state": "open",
                    "state_changed_ms": now,
                    "body": body,
                }
                if env.id in folded:
                    out.append(None)  # folded into an open alert as a repeat already
                    continue
                result = await conn.execute(self._new_alert, row)
                if result.rowcount != 1:
                    out.append(None)
                    continue
                await conn.execute(
                    self._new_transition,
                    {
                        "alert_id": env.id,
                        "from_state": None,
                        "to_state": "open",
                        "actor": actor or f"site:{env.site}",
                        "ts": now,
                        "note": None,
                    },
                )
                out.append(_public({**row, "version": 1, "repeats": 0}))
        return out

    async def insert_drop_report(self, env: Envelope) -> bool:
        """Store a gateway's report of what its outbox had to drop; False for a resend."""
        stmt = (
            self.insert(drop_reports)
            .values(id=env.id, site=env.site, received_ms=_now_ms(), body=env.body)
            .on_conflict_do_nothing(index_elements=["id"])
        )
        async with self.engine.begin() as conn:
            return bool((await conn.execute(stmt)).rowcount == 1)

    async def insert_event(self, env: Envelope) -> bool:
        """Store a site's event once, keyed by envelope id; False for a redelivery."""
        name = env.body.get("event", env.body.get("type"))
        stmt = (
            self.insert(events)
            .values(
                id=env.id,
                site=env.site,
                device=env.device,
                name=name if isinstance(name, str) else None,
                ts=env.ts,
                received_ms=_now_ms(),
                body=env.body,
            )
            .on_conflict_do_nothing(index_elements=["id"])
        )
        async with self.engine.begin() as conn:
            return bool((await conn.execute(stmt)).rowcount == 1)

    async def dropped_items(self, site: str) -> dict[str, int]:
        """Total items each outbox class dropped, over every report from `site`."""
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(select(drop_reports.c.body).where(drop_reports.c.site == site))
            ).scalars().all()
        totals: dict[str, int] = {}
        for body in rows:
            for d in body.get("drops", []):
                totals[d["class"]] = totals.get(d["class"], 0) + int(d["items"])
        return totals

    async def list_alerts(
        self,
        *,
        state: str | None = None,
        limit: int = 100,
        before_ts: int | None = None,
        after: tuple[int, str] | tuple[int, int, int, str] | None = None,
        where: Sequence[ColumnElement[bool]] = (),
        order: str = "time",
    ) -> list[dict[str, Any]]:
        """Newest first, or by urgency (state, severity, then newest; cloud.alerts). `after`
        is the sort key of the last alert of the previous page; `where` adds conditions on the
        alerts table (filters, a user's scope)."""
        keys: list[Any] = [alerts.c.ts, alerts.c.id]
        if order == "urgency":
            state_rank = case(STATE_RANK, value=alerts.c.state, else_=9)
            severity_rank = case(SEVERITY_RANK, value=alerts.c.severity, else_=9)
            keys = [state_rank, severity_rank, *keys]
            query = select(alerts).order_by(
                state_rank, severity_rank, alerts.c.ts.desc(), alerts.c.id.desc()
            )
        else:
            query = select(alerts).order_by(alerts.c.ts.desc(), alerts.c.id.desc())
        query = query.limit(limit)
        if state is not None:
            query = query.where(alerts.c.state == state)
        if before_ts is not None:
            query = query.where(alerts.c.ts < before_ts)
        if after is not None:
            query = query.where(_past(keys, list(after), ascending=len(keys) - 2))
        for condition in where:
            query = query.where(condition)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
            return await with_people(conn, [_public(dict(r)) for r in rows])

    async def alert_site(self, alert_id: str) -> str | None:
        """The site an alert belongs to; None when no such alert is stored."""
        async with self.engine.connect() as conn:
            site = (
                await conn.execute(select(alerts.c.site).where(alerts.c.id == alert_id))
            ).scalar_one_or_none()
        return None if site is None else str(site)

    async def get_alert(self, alert_id: str) -> dict[str, Any]:
        async with self.engine.connect() as conn:
            row = (
                (await conn.execute(select(alerts).where(alerts.c.id == alert_id)))
                .mappings()
                .first()
            )
            if row is None:
                raise AlertNotFound(alert_id)
            history = (
                (
                    await conn.execute(
                        select(alert_transitions)
                        .where(alert_transitions.c.alert_id == alert_id)
                        .order_by(alert_transitions.c.seq)
                    )
                )
                .mappings()
                .all()
            )
            [alert] = await with_people(conn, [_public(dict(row))])
            names = await display_names(conn, {user_of(h["actor"]) for h in history})
        alert["timeline"] = [
            {**{k: h[k] for k in ("from_state", "to_state", "actor", "ts", "note")},
             "shared": bool(h["shared"]), "name": names.get(user_of(h["actor"]) or "")}
            for h in history
        ]
        return alert

    async def note(
        self, alert_id: str, *, actor: str, note: str, states: Sequence[str],
        values: dict[str, Any] | None = None, shared: bool = False,
    ) -> dict[str, Any] | None:
        """A change that is not a state change (a family member's "seen", a worker's note):
        `values` set on the alert and a line in its timeline (`shared` with the resident's
        family or not), while it is in one of `states`; None when it is not (any more)."""
        now = _now_ms()
        async with self.engine.begin() as conn:
            current = (
                await conn.execute(select(alerts.c.state).where(alerts.c.id == alert_id))
            ).scalar_one_or_none()
            if current is None:
                raise AlertNotFound(alert_id)
            if current not in states:
                return None
            result = await conn.execute(
                update(alerts)
                .where(alerts.c.id == alert_id, alerts.c.state == current)
                .values(version=alerts.c.version + 1, **(values or {}))
            )
            if result.rowcount != 1:
                return None
            await conn.execute(
                alert_transitions.insert().values(
                    alert_id=alert_id, from_state=current, to_state=current, actor=actor,
                    ts=now, note=note, shared=shared,
                )
            )
        return await self.get_alert(alert_id)

    async def confirm(
        self, alert_id: str, *, actor: str, note: str, confirmed: dict[str, Any],
        resident: str | None,
    ) -> dict[str, Any] | None:
        """A person confirmed an open alert (a watchlist match): `confirmed` kept in its body,
        its resident set when given, a line in its timeline. Once: None when it is no longer
        open or was confirmed already (the version compare-and-set settles two at once)."""
        now = _now_ms()
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    select(alerts.c.state, alerts.c.version, alerts.c.body)
                    .where(alerts.c.id == alert_id)
                )
            ).first()
            if row is None:
                raise AlertNotFound(alert_id)
            state, version, body = row
            if state != "open" or (body or {}).get("confirmed"):
                return None
            values: dict[str, Any] = {"body": {**body, "confirmed": confirmed}}
            if resident is not None:
                values["resident"] = resident
            result = await conn.execute(
                update(alerts)
                .where(alerts.c.id == alert_id, alerts.c.version == version)
                .values(version=version + 1, **values)
            )
            if result.rowcount != 1:
                return None
            await conn.execute(
                alert_transitions.insert().values(
                    alert_id=alert_id, from_state=state, to_state=state, actor=actor, ts=now,
                    note=note,
                )
            )
        return await self.get_alert(alert_id)

    async def transition(
        self, alert_id: str, target: str, *, actor: str, note: str | None = None,
        also: Sequence[Executable] = (), values: dict[str, Any] | None = None,
        shared: bool = False,
    ) -> dict[str, Any]:
        """Move an alert to `target` atomically; the database arbitrates concurrent workers.
        `also` runs in the same transaction (a dispatch's assignee): all of it or none;
        `values` are set on the alert with the state (who acknowledged); the note is
        `shared` with the resident's family or not."""
        now = _now_ms()
        async with self.engine.begin() as conn:
            current = (
                await conn.execute(select(alerts.c.state).where(alerts.c.id == alert_id))
            ).scalar_one_or_none()
            if current is None:
                raise AlertNotFound(alert_id)
            if target not in TRANSITIONS[current]:
                raise IllegalTransition(alert_id, current, target)
            result = await conn.execute(
                update(alerts)
                .where(alerts.c.id == alert_id, alerts.c.state == current)
                .values(
                    state=target, state_changed_ms=now, version=alerts.c.version + 1,
                    **(values or {}),
                )
            )
            if result.rowcount != 1:  # another worker moved it first
                raise IllegalTransition(alert_id, "changed concurrently", target)
            await conn.execute(
                alert_transitions.insert().values(
                    alert_id=alert_id,
                    from_state=current,
                    to_state=target,
                    actor=actor,
                    ts=now,
                    note=note,
                    shared=shared and note is not None,
                )
            )
            for statement in also:
                await conn.execute(statement)
        return await self.get_alert(alert_id)


def _past(keys: list[Any], values: list[Any], ascending: int) -> ColumnElement[bool]:
    """Rows after `values` in keyset order: the first `ascending` keys ascend, the rest
    descend. (a, b, c) after (x, y, z) is a > x, or a = x and (b, c) after (y, z)."""
    key, value = keys[0], values[0]
    beyond = key > value if ascending > 0 else key < value
    if len(keys) == 1:
        return beyond
    return or_(beyond, and_(key == value, _past(keys[1:], values[1:], ascending - 1)))


def user_of(actor: str | None) -> str | None:
    """The user name of a `user:NAME` actor; None for a site, the system, a rule."""
    return actor[5:] if actor and actor.startswith("user:") else None


async def display_names(conn: AsyncConnection, usernames: set[str | None]) -> dict[str, str]:
    wanted = sorted(u for u in usernames if u)
    if not wanted:
        return {}
    rows = await conn.execute(
        select(users.c.username, users.c.display_name).where(users.c.username.in_(wanted)))
    return {str(u): str(d) for u, d in rows.all() if d}


async def with_people(conn: AsyncConnection, out: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Who is on each alert, by the name people know them by (`ack_name`, `seen_name`, the
    latest `dispatched_to` and its `dispatched_name`), and the notes its responders shared
    with the resident's family (`shared_notes`, oldest first). Three reads for a page."""
    ids = [a["id"] for a in out]
    if not ids:
        return out
    assigned: dict[str, str] = {}
    for alert_id, username in (await conn.execute(
        select(assignments.c.alert_id, users.c.username)
        .join(users, users.c.id == assignments.c.user_id)
        .where(assignments.c.alert_id.in_(ids))
        .order_by(assignments.c.seq)
    )).all():
        assigned[alert_id] = username  # the latest stands
    t = alert_transitions.c
    shared: dict[str, list[dict[str, Any]]] = {}
    for r in (await conn.execute(
        select(t.alert_id, t.actor, t.ts, t.note)
        .where(t.alert_id.in_(ids), t.shared.is_(True), t.note.is_not(None))
        .order_by(t.seq)
    )).mappings():
        shared.setdefault(r["alert_id"], []).append(
            {"ts": r["ts"], "note": r["note"], "by": user_of(r["actor"])})
    names = await display_names(conn, {
        *(a.get("ack_by") for a in out), *(a.get("seen_by") for a in out), *assigned.values(),
        *(n["by"] for notes in shared.values() for n in notes)})
    for a in out:
        a["dispatched_to"] = assigned.get(a["id"])
        for field in ("ack", "seen", "dispatched"):
            who = a["dispatched_to"] if field == "dispatched" else a.get(f"{field}_by")
            a[f"{field}_name"] = names.get(who, who) if who else None
        a["shared_notes"] = [{**n, "name": names.get(n["by"] or "", n["by"])}
                             for n in shared.get(a["id"], [])]
    return out


def _public(row: dict[str, Any]) -> dict[str, Any]:
    out = {str(c.name): row.get(c.name) for c in _ALERT_COLUMNS}
    # Filled by `with_people` where the database is at hand; a new alert has none of them.
    out.update(dispatched_to=None, ack_name=None, seen_name=None, dispatched_name=None,
               shared_notes=[])
    body = row.get("body") or {}
    out["source_id"] = body.get("source_id")
    out["raised_ms"] = body.get("raised_ms")
    out["detail"] = body.get("detail", {})
    if out["type"] in CONFIRMED_TYPES:
        # Who confirmed it (null until someone does), and the match, for every role: the list,
        # the person's id and the score (not the rule's other data, docs/access.md).
        out["confirmed"] = body.get("confirmed")
        out["match"] = match_of(out["detail"])
    return out


def match_of(detail: Any) -> dict[str, Any] | None:
    """A watchlist_hit's match from the edge rule's data: list, person id, score."""
    why = detail.get("why") if isinstance(detail, dict) else None
    data = why.get("data") if isinstance(why, dict) else None
    if not isinstance(data, dict):
        return None
    return {"list": data.get("watchlist"), "person": data.get("person"),
            "score": data.get("confidence")}


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()
