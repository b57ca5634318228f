"""Escalation timers in the database: every worker plans and claims; the rows decide.

Planning writes an alert's stage rows with their due times (`ON CONFLICT DO NOTHING`, so two
workers planning the same alert write one set). A worker fires a stage only after winning a
compare-and-set on its row (`UPDATE ... WHERE claimed_by IS NULL`), so a stage fires once
however many workers run and however often they restart. A claim older than the lease whose
stage is not done is taken over; recipients already marked `sent` are skipped then.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.access.tables import escalation_plans, escalation_stages, notifications
from cloud.escalation.policy import Policies, Stage, variant
from cloud.store import Store, alerts
from shouwang.clock import Clock

PLAN_BATCH = 200


class Timers:
    def __init__(
        self, store: Store, clock: Clock, policies: Policies, worker: str, lease_ms: int
    ) -> None:
        self.store = store
        self.engine: AsyncEngine = store.engine
        self.clock = clock
        self.policies = policies
        self.worker = worker
        self.lease_ms = lease_ms

    async def plan_pending(self) -> int:
        """Plan every open alert that has no plan yet; the number planned."""
        query = (
            select(alerts.c.id, alerts.c.type, alerts.c.received_ms, alerts.c.body)
            .outerjoin(escalation_plans, escalation_plans.c.alert_id == alerts.c.id)
            .where(escalation_plans.c.alert_id.is_(None), alerts.c.state == "open")
            .limit(PLAN_BATCH)
        )
        insert = self.store.insert
        async with self.engine.begin() as conn:
            todo = (await conn.execute(query)).all()
            for alert_id, alert_type, received_ms, body in todo:
                policy = self.policies.for_type(
                    alert_type, variant(alert_type, (body or {}).get("detail")))
                await self._plan(conn, alert_id, policy.stages if policy else [], 0,
                                 received_ms)
                await conn.execute(
                    insert(escalation_plans)
                    .values(alert_id=alert_id, planned_ms=self.clock.now_ms())
                    .on_conflict_do_nothing(index_elements=["alert_id"])
                )
        return len(todo)

    async def plan_confirmed(
        self, alert_id: str, alert_type: str, detail: dict[str, Any], confirmed_ms: int
    ) -> int:
        """A person confirmed the alert: its policy's `confirmed` stages, due from now."""
        policy = self.policies.for_type(alert_type, variant(alert_type, detail))
        if policy is None or not policy.confirmed:
            return 0
        async with self.engine.begin() as conn:
            await self._plan(conn, alert_id, policy.confirmed, len(policy.stages), confirmed_ms)
        return len(policy.confirmed)

    async def _plan(
        self, conn: Any, alert_id: str, stages: list[Stage], first: int, from_ms: int
    ) -> None:
        for position, stage in enumerate(stages, start=first):
            await conn.execute(
                self.store.insert(escalation_stages)
                .values(
                    alert_id=alert_id, stage=stage.name, position=position,
                    targets=list(stage.notify), due_ms=from_ms + round(stage.after_s * 1000),
                )
                .on_conflict_do_nothing(index_elements=["alert_id", "stage"])
            )

    def _claimable(self, now: int) -> Any:
        s = escalation_stages.c
        return and_(
            s.done_ms.is_(None),
            s.cancelled_ms.is_(None),
            s.due_ms <= now,
            or_(s.claimed_by.is_(None), s.claimed_ms < now - self.lease_ms),
        )

    async def due(self, limit: int = 100) -> list[tuple[str, str, list[str]]]:
        """Stages whose time has come, of alerts still open: (alert id, stage, roles)."""
        s = escalation_stages.c
        query = (
            select(s.alert_id, s.stage, s.targets)
            .join(alerts, alerts.c.id == s.alert_id)
            .where(self._claimable(self.clock.now_ms()), alerts.c.state == "open")
            .order_by(s.due_ms, s.position)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            return [(a, st, list(t)) for a, st, t in (await conn.execute(query)).all()]

    async def claim(self, alert_id: str, stage: str) -> bool:
        """True for exactly one worker, unless the alert left `open` first."""
        now = self.clock.now_ms()
        s = escalation_stages.c
        still_open = (
            select(alerts.c.id).where(alerts.c.id == alert_id, alerts.c.state == "open").exists()
        )
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(escalation_stages)
                .where(s.alert_id == alert_id, s.stage == stage, self._claimable(now), still_open)
                .values(claimed_by=self.worker, claimed_ms=now)
            )
        return bool(result.rowcount == 1)

    async def finish(self, alert_id: str, stage: str) -> None:
        s = escalation_stages.c
        async with self.engine.begin() as conn:
            await conn.execute(
                update(escalation_stages)
                .where(s.alert_id == alert_id, s.stage == stage, s.claimed_by == self.worker)
                .values(done_ms=self.clock.now_ms())
            )

    async def cancel(self, alert_id: str) -> int:
        """The alert left `open`: its stages not yet fired never will."""
        s = escalation_stages.c
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(escalation_stages)
                .where(s.alert_id == alert_id, s.done_ms.is_(None), s.cancelled_ms.is_(None))
                .values(cancelled_ms=self.clock.now_ms())
            )
        return int(result.rowcount)

    async def begin_notification(self, alert_id: str, stage: str, user_id: int) -> bool:
        """Record that `user_id` is about to be told; False if they were told already."""
        n = notifications.c
        async with self.engine.begin() as conn:
            await conn.execute(
                self.store.insert(notifications)
                .values(alert_id=alert_id, stage=stage, user_id=user_id, worker=self.worker,
                        ts=self.clock.now_ms(), outcome="pending")
                .on_conflict_do_nothing(index_elements=["alert_id", "stage", "user_id"])
            )
            outcome = (
                await conn.execute(
                    select(n.outcome).where(
                        n.alert_id == alert_id, n.stage == stage, n.user_id == user_id
                    )
                )
            ).scalar_one()
        return bool(outcome != "sent")

    async def end_notification(
        self, alert_id: str, stage: str, user_id: int, error: str | None
    ) -> None:
        n = notifications.c
        async with self.engine.begin() as conn:
            await conn.execute(
                update(notifications)
                .where(n.alert_id == alert_id, n.stage == stage, n.user_id == user_id)
                .values(outcome="failed" if error else "sent", error=error,
                        ts=self.clock.now_ms(), worker=self.worker)
            )

    async def stages(self, alert_id: str) -> list[dict[str, Any]]:
        s = escalation_stages.c
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(escalation_stages).where(s.alert_id == alert_id).order_by(s.position)
                )
            ).mappings().all()
        return [dict(r) for r in rows]
