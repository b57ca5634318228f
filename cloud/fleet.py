"""Sites and devices as their gateways report them: registry checks, liveness, last-seen.

Writes are idempotent and monotonic, so a redelivered or reordered health message never
moves a device back to an older state: each update applies only when its `at_ms` is not
older than the state already stored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, exists, or_, select, update

from cloud.schema import devices, sites
from cloud.store import Store, _now_ms
from shouwang.protocol import Envelope

log = logging.getLogger(__name__)
GATEWAY_DEVICE = "gateway"  # how a gateway names itself (edge/uplink.py)
DIMENSIONS = ("transport", "data", "health", "battery")
# A device's last-seen is written again only once readings are this much newer (reading
# time, not wall time): under load most batches then skip the update (bench/cloud_ingest.py).
SEEN_RESOLUTION_MS = 10_000
_SEEN = (
    update(devices)
    .where(
        and_(
            devices.c.site == bindparam("site_"),
            devices.c.id == bindparam("device"),
            or_(devices.c.last_seen_ms.is_(None), devices.c.last_seen_ms < bindparam("ts")),
        )
    )
    .values(last_seen_ms=bindparam("ts"))
)


@dataclass(frozen=True, slots=True)
class Placement:
    """Where the cloud's own registry puts a device: who it is bound to, where, what it is."""

    resident: str | None
    location: str | None
    profile: str | None


class Fleet:
    def __init__(self, store: Store) -> None:
        self.store = store
        # (site, device) → newest ts this worker wrote; one int per device, only skips writes
        # (the database stays the truth: other workers write their own).
        self._seen_written: dict[tuple[str, str], int] = {}

    async def site_registered(self, site: str) -> bool:
        async with self.store.engine.connect() as conn:
            return bool(
                (await conn.execute(select(exists().where(sites.c.id == site)))).scalar_one()
            )

    async def placement(self, site: str, device: str) -> Placement | None:
        """The registry's word on `device` of `site`: as an admin imported it (`shouwang cloud
        import devices`), or for the gateway itself the site's own location; None when it is
        not registered to this site. A row a gateway's health report created (no profile) is
        the gateway's word, not the registry's: None too."""
        async with self.store.engine.connect() as conn:
            if device == GATEWAY_DEVICE:
                row = (await conn.execute(
                    select(sites.c.location).where(sites.c.id == site))).first()
                return None if row is None else Placement(None, row.location, None)
            row = (await conn.execute(
                select(devices.c.resident, devices.c.location, devices.c.profile).where(
                    devices.c.site == site, devices.c.id == device,
                    devices.c.profile.is_not(None),
                ))).first()
        return None if row is None else Placement(row.resident, row.location, row.profile)

    async def profiles(self, site: str, ids: set[str]) -> dict[str, str]:
        """The profile of each of `ids` imported to `site` (others are left out)."""
        async with self.store.engine.connect() as conn:
            rows = (await conn.execute(
                select(devices.c.id, devices.c.profile).where(
                    devices.c.site == site, devices.c.id.in_(sorted(ids)),
                    devices.c.profile.is_not(None),
                ))).all()
        return {row.id: row.profile for row in rows}

    async def gateway_report(self, env: Envelope, now_ms: int) -> None:
        """The gateway's own report: the site's last-seen and health; registers a new site."""
        site = env.site or ""
        async with self.store.engine.begin() as conn:
            # Heard now, whatever the report's own ts: a backlog flushed after an outage is
            # still a gateway that is back (the watchdog resolves its alert on this).
            await conn.execute(
                update(sites)
                .where(sites.c.id == site)
                .where(or_(sites.c.heard_ms.is_(None), sites.c.heard_ms < now_ms))
                .values(heard_ms=now_ms)
            )
            result = await conn.execute(
                update(sites)
                .where(sites.c.id == site)
                .where(or_(sites.c.last_seen_ms.is_(None), sites.c.last_seen_ms <= env.ts))
                .values(last_seen_ms=env.ts, last_health=env.body)
            )
            if result.rowcount == 0:
                inserted = await conn.execute(
                    self.store.insert(sites)
                    .values(
                        id=site, registered_ms=now_ms, last_seen_ms=env.ts, last_health=env.body,
                        heard_ms=now_ms,
                    )
                    .on_conflict_do_nothing(index_elements=["id"])
                )
                if inserted.rowcount == 1:
                    log.info("site %s registered by its first gateway report", site)

    async def gateway_offline(self, env: Envelope, now_ms: int) -> bool:
        """A gateway's offline notice (its MQTT will, or a planned stop), timed by receipt.

        A will is set once per process, so its id and ts are those of the first connect and
        the broker may deliver the same one again (redelivery, a second worker): the same id
        moves the time only when reports came after it (a later disconnect). Unknown sites
        are not registered by a notice: a gateway that never reported is not watched."""
        reason = env.body.get("reason")
        async with self.store.engine.begin() as conn:
            result = await conn.execute(
                update(sites)
                .where(sites.c.id == (env.site or ""))
                .where(
                    or_(
                        sites.c.offline_id.is_(None),
                        sites.c.offline_id != env.id,
                        sites.c.heard_ms > sites.c.offline_ms,
                    )
                )
                .values(
                    offline_ms=now_ms,
                    offline_id=env.id,
                    offline_reason=reason[:32] if isinstance(reason, str) else None,
                )
            )
        changed = bool(result.rowcount == 1)
        if changed:
            log.info("site %s: gateway offline notice (%s)", env.site, reason)
        return changed

    async def device_state(self, env: Envelope) -> bool:
        """Apply one liveness transition; False when it is older than what is stored.

        Each dimension keeps its own change time, so transitions of different dimensions
        may arrive in any order."""
        body = env.body
        dimension, new, at_ms = body["dimension"], body["new"], body["at_ms"]
        site, device = env.site or "", body["device"]
        async with self.store.engine.begin() as conn:
            await conn.execute(
                self.store.insert(devices)
                .values(site=site, id=device)
                .on_conflict_do_nothing(index_elements=["site", "id"])
            )
            result = await conn.execute(
                update(devices)
                .where(devices.c.site == site, devices.c.id == device)
                .where(
                    or_(
                        devices.c[f"{dimension}_ms"].is_(None),
                        devices.c[f"{dimension}_ms"] <= at_ms,
                    )
                )
                .values({dimension: new, f"{dimension}_ms": at_ms,
                         "changed_ms": _now_ms()})
            )
        return bool(result.rowcount == 1)

    async def seen(self, site: str, batch: list[dict[str, Any]]) -> None:
        """Move each registered device's last-seen to its newest reading in `batch`,
        to within SEEN_RESOLUTION_MS."""
        newest: dict[str, int] = {}
        for r in batch:
            if r["ts"] > newest.get(r["device"], -1):
                newest[r["device"]] = r["ts"]
        written = self._seen_written
        due = {
            d: ts
            for d, ts in newest.items()
            if ts >= written.get((site, d), -SEEN_RESOLUTION_MS) + SEEN_RESOLUTION_MS
        }
        if not due:
            return
        async with self.store.engine.begin() as conn:
            await conn.execute(
                _SEEN, [{"site_": site, "device": d, "ts": ts} for d, ts in due.items()]
            )
        for d, ts in due.items():
            written[(site, d)] = ts

    async def device(self, site: str, device: str) -> dict[str, Any] | None:
        async with self.store.engine.connect() as conn:
            row = (
                (
                    await conn.execute(
                        select(devices).where(devices.c.site == site, devices.c.id == device)
                    )
                )
                .mappings()
                .first()
            )
        return dict(row) if row is not None else None

    async def site(self, site: str) -> dict[str, Any] | None:
        async with self.store.engine.connect() as conn:
            row = (await conn.execute(select(sites).where(sites.c.id == site))).mappings().first()
        return dict(row) if row is not None else None


def check_device_state(body: dict[str, Any]) -> str | None:
    """None when a `device_state` health body can be applied, else why not."""
    if not isinstance(body.get("device"), str) or not body["device"]:
        return "device_state: device must be a string"
    if body.get("dimension") not in DIMENSIONS:
        return f"device_state: dimension must be one of {', '.join(DIMENSIONS)}"
    if not isinstance(body.get("new"), str) or len(body["new"]) > 16:
        return "device_state: new must be a state name"
    if type(body.get("at_ms")) is not int:
        return "device_state: at_ms must be integer ms"
    return None
