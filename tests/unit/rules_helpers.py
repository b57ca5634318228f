"""A rule engine on a manual clock, and short ways to feed it readings and events."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge.rules.book import Notice
from edge.rules.config import Binding, RulesSettings
from edge.rules.engine import RuleEngine, RuleOutput
from edge.rules.residents import Resident
from edge.rules.suppression import BROKER
from shouwang.clock import ManualClock
from shouwang.profiles import load_profiles
from shouwang.records import Alert, Event, Reading

PROFILES = load_profiles()
TZ = dt.timezone(dt.timedelta(hours=8))  # Asia/Shanghai has had no DST since 1991
_ids = itertools.count(1)


def local_ms(day: dt.date, hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(dt.datetime.combine(day, dt.time(int(h), int(m)), TZ).timestamp() * 1000)


class Bench:
    """An engine, its clock, and everything it has emitted so far."""

    def __init__(
        self,
        devices: Sequence[tuple[str, str, str | None]],
        residents: Sequence[Resident] = (),
        *,
        start_ms: int = 1_767_225_600_000,
        rules_file: Path | None = None,
        state_path: Path | None = None,
        parents: dict[str, str] | None = None,
    ) -> None:
        self.clock = ManualClock(now_ms=start_ms)
        self.bindings = [
            Binding(d, kind, res, "d/s/c/g/b/u/f/101", (parents or {}).get(d, BROKER))
            for d, kind, res in devices
        ]
        self.residents = list(residents)
        self.rules_file = rules_file
        self.state_path = state_path
        self.engine = self.make()
        self.alerts: list[Alert] = []
        self.notices: list[Notice] = []

    def make(self) -> RuleEngine:
        return RuleEngine(
            "site-t",
            self.bindings,
            PROFILES,
            self.clock,
            residents=self.residents,
            settings=RulesSettings(file=self.rules_file, timezone="Asia/Shanghai"),
            state_path=self.state_path,
        )

    def _take(self, out: RuleOutput) -> RuleOutput:
        self.alerts += out.alerts
        self.notices += out.notices
        return out

    def reading(self, device: str, **values: Any) -> RuleOutput:
        rid = f"r{next(_ids)}"
        out = self.engine.observe_reading(Reading(rid, device, self.clock.now_ms(), values))
        return self._take(out)

    def event(self, device: str, name: str, **data: Any) -> RuleOutput:
        eid = f"e{next(_ids)}"
        out = self.engine.observe_event(Event(eid, device, self.clock.now_ms(), name, data))
        return self._take(out)

    def advance(self, seconds: float) -> RuleOutput:
        """Move the clock, ticking at every deadline on the way (as the daemon does)."""
        end = self.clock.now_ms() + int(seconds * 1000)
        out = RuleOutput()
        while True:
            due = self.engine.next_deadline()
            if due is None or due > end:
                break
            if due > self.clock.now_ms():
                self.clock.advance(due - self.clock.now_ms())
            out.add(self.engine.tick())
        if end > self.clock.now_ms():
            self.clock.advance(end - self.clock.now_ms())
        out.add(self.engine.tick())
        return self._take(out)

    def of(self, type_: str) -> list[Alert]:
        """New alerts and escalations of `type_` (not repeats)."""
        return [
            a for a in self.alerts if a.type == type_ and a.detail.get("update") != "repeated"
        ]

    def repeats(self, type_: str) -> list[Alert]:
        """Repeats of an open alert: the same occurrence again, folded into it."""
        return [
            a for a in self.alerts if a.type == type_ and a.detail.get("update") == "repeated"
        ]

    def resolved(self, type_: str) -> list[Notice]:
        return [
            n for n in self.notices
            if n.body["type"] == "alert_resolved" and n.body["alert_type"] == type_
        ]
