"""Welfare inference for residents living alone: their own routine, learned, and what is missing.

Signs of life are water used (flow, or the total rising), the front door opened or closed, and
steps on a worn wearable. Each local day the rule keeps when the first sign came and the longest
daytime stretch without one (quiet hours do not count). After `min_history_days` such days it
expects the first sign by the latest first sign it has seen plus a margin, and no daytime
silence longer than the longest it has seen times a factor plus a margin; before that it uses
the defaults. A missing expectation raises one welfare alert that says which signals are
missing and since when; it escalates if nothing comes, and resolves when a sign of life does.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from edge.rules.base import DeviceState, Output, Rule, RuleParams, Target, register
from edge.rules.residents import QuietHours, Resident, minutes
from shouwang.profiles import Severity
from shouwang.records import Event, Reading

SIGNAL_OF_KIND = {"water_meter": "water", "door_contact": "door", "wearable": "wearable"}
HISTORY_DAYS = 28
DAY_MS = 86_400_000


class WelfareParams(RuleParams):
    min_history_days: int = Field(5, ge=1, description="Days of routine before it is trusted")
    first_activity_margin_s: float = Field(
        3600, gt=0, description="Alert this long after the latest usual first sign of the day"
    )
    default_first_activity_by: str = Field(
        "10:00", description="Until the routine is learned: first sign expected by (HH:MM)"
    )
    gap_factor: float = Field(1.5, ge=1, description="Usual longest daytime silence × this …")
    gap_margin_s: float = Field(3600, ge=0, description="… plus this is too long a silence")
    default_max_gap_s: float = Field(
        6 * 3600, gt=0, description="Until the routine is learned: longest daytime silence"
    )
    default_quiet_hours: QuietHours = Field(
        default_factory=lambda: QuietHours(start="22:00", end="06:00"),
        description="Night hours, for residents without their own quiet_hours",
    )
    holidays: list[dt.date] = Field(
        default_factory=list,
        description="Public holidays: no first-sign check and not learned from (people sleep in)",
    )
    escalate_after_s: float = Field(
        7200, gt=0, description="Still nothing this long after the alert → escalated"
    )
    escalate_to: Severity = Field("critical", description="Severity after escalation")
    min_flow: float = Field(0.005, gt=0, description="Water flow (m³/h) that counts as use")


@dataclass(slots=True)
class _Day:
    date: str
    first_min: int | None = None  # minute of the local day of the first sign
    max_gap_min: int = 0  # longest daytime silence that ended this day
    partial: bool = False  # started watching mid-day: not a full day to learn from


@dataclass(slots=True)
class _Person:
    last_ms: int  # the last sign of life (or start-up)
    last_by_signal: dict[str, int | None]
    today: _Day
    history: list[_Day] = field(default_factory=list)
    raised_ms: int | None = None
    raised_cause: str = ""
    escalated: bool = False
    last_values: dict[str, float] = field(default_factory=dict)


@register
class Welfare(Rule):
    type_key = "welfare"
    Params = WelfareParams
    summary = "Expected signs of life (water, door, steps) missing against the learned routine"
    params: WelfareParams
    auto_resolve = True
    fields = frozenset({"flow", "total", "steps", "state", "worn"})
    events = frozenset({"opened", "closed"})

    def __init__(
        self, params: RuleParams, targets: list[Target], states: Mapping[str, DeviceState]
    ) -> None:
        super().__init__(params, targets, states)
        self.by_resident: dict[str, list[Target]] = {}
        for t in targets:
            if t.resident is not None and t.kind in SIGNAL_OF_KIND:
                self.by_resident.setdefault(t.resident.id, []).append(t)
        self.people: dict[str, _Person] = {}
        self._now = 0  # the engine's time at the last tick: next_deadline() takes no argument
        # The local day last asked for, as [from, to) wall ms and its ISO date: every sign of
        # life asks for its date, and a time-zone conversion per reading was a tenth of the rule.
        self._day: tuple[int, int, str] = (0, 0, "")

    # --- time helpers ----------------------------------------------------------------------

    def _local(self, ms: int) -> dt.datetime:
        return dt.datetime.fromtimestamp(ms / 1000, self.tz)

    def _local_date(self, ms: int) -> str:
        lo, hi, date = self._day
        if lo <= ms < hi:
            return date
        day = self._local(ms).date()
        lo = int(dt.datetime.combine(day, dt.time(), self.tz).timestamp() * 1000)
        nxt = day + dt.timedelta(days=1)
        hi = int(dt.datetime.combine(nxt, dt.time(), self.tz).timestamp() * 1000)
        self._day = (lo, hi, day.isoformat())
        return self._day[2]

    def _quiet(self, resident: Resident) -> QuietHours:
        return resident.quiet_hours or self.params.default_quiet_hours

    def _day_start_ms(self, ms: int) -> int:
        local = self._local(ms)
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
        return int(midnight.timestamp() * 1000)

    def _daytime_ms(self, resident: Resident, start: int, end: int) -> int:
        """Milliseconds of [start, end) outside the resident's quiet hours."""
        quiet = self._quiet(resident)
        total, cursor = 0, start
        while cursor < end:
            day0 = self._day_start_ms(cursor)
            for a, b in _day_segments(quiet):
                lo, hi = max(cursor, day0 + a * 60000), min(end, day0 + b * 60000)
                if hi > lo:
                    total += hi - lo
            cursor = day0 + DAY_MS
        return total

    def _daytime_deadline(self, resident: Resident, start: int, need: int) -> int:
        """The instant at which [start, t) holds `need` ms of daytime."""
        quiet = self._quiet(resident)
        cursor, left = start, need
        for _ in range(400):
            day0 = self._day_start_ms(cursor)
            for a, b in _day_segments(quiet):
                lo, hi = max(cursor, day0 + a * 60000), day0 + b * 60000
                if hi > lo:
                    if hi - lo >= left:
                        return lo + left
                    left -= hi - lo
            cursor = day0 + DAY_MS
        return cursor

    # --- lifecycle -------------------------------------------------------------------------

    def start(self, now: int) -> None:
        for rid, targets in self.by_resident.items():
            if rid in self.people:
                continue
            resident = targets[0].resident
            assert resident is not None
            local = self._local(now)
            partial = local.hour * 60 + local.minute > minutes(self._quiet(resident).end)
            signals: dict[str, int | None] = {SIGNAL_OF_KIND[t.kind]: None for t in targets}
            today = _Day(local.date().isoformat(), partial=partial)
            self.people[rid] = _Person(now, signals, today)

    def _person(self, target: Target) -> tuple[Resident, _Person] | None:
        if target.resident is None or target.resident.id not in self.people:
            return None
        return target.resident, self.people[target.resident.id]

    def on_reading(self, target: Target, reading: Reading, now: int) -> Output:
        found = self._person(target)
        if found is None:
            return []
        resident, person = found
        v = reading.values
        active = False
        key = target.device
        if target.kind == "water_meter":
            flow, total = v.get("flow"), v.get("total")
            if isinstance(flow, int | float) and flow >= self.params.min_flow:
                active = True
            if isinstance(total, int | float):
                before = person.last_values.get(f"{key}.total")
                active = active or (before is not None and total > before + 1e-6)
                person.last_values[f"{key}.total"] = float(total)
        elif target.kind == "wearable":
            steps = v.get("steps")
            st = self.states.get(key)
            if isinstance(steps, int) and not (st is not None and st.worn is False):
                before = person.last_values.get(f"{key}.steps")
                active = before is not None and steps > before
                person.last_values[f"{key}.steps"] = float(steps)
        elif target.kind == "door_contact" and "state" in v:
            before = person.last_values.get(f"{key}.state")
            now_state = 1.0 if v["state"] == "open" else 0.0
            active = before is not None and before != now_state
            person.last_values[f"{key}.state"] = now_state
        return self._activity(resident, person, target, now, reading.id) if active else []

    def on_event(self, target: Target, event: Event, now: int) -> Output:
        found = self._person(target)
        if found is None:
            return []
        return self._activity(*found, target, now, event.id)

    def _activity(
        self, resident: Resident, person: _Person, target: Target, now: int, cause: str
    ) -> Output:
        self._now = max(self._now, now)
        self._roll(resident, person, now)
        gap = now - person.last_ms
        # The daytime within a gap is at most the gap: only a gap of a whole minute more than
        # the longest so far can make a longer one (the daytime count walks the calendar).
        if gap >= (person.today.max_gap_min + 1) * 60000:
            daytime = self._daytime_ms(resident, person.last_ms, now) // 60000
            person.today.max_gap_min = max(person.today.max_gap_min, daytime)
        if person.today.first_min is None:
            local = self._local(now)
            person.today.first_min = local.hour * 60 + local.minute
        person.last_ms = now
        person.last_by_signal[SIGNAL_OF_KIND[target.kind]] = now
        if person.raised_ms is None:
            return []
        person.raised_ms, person.escalated = None, False
        why = {"sign_of_life": SIGNAL_OF_KIND[target.kind], "device": target.device}
        return [self.signal("resolve", target, now, cause, why=why)]

    def _roll(self, resident: Resident, person: _Person, now: int) -> None:
        """Close the days that ended before `now` into the history."""
        date = self._local_date(now)
        while person.today.date < date:
            day = person.today
            d = dt.date.fromisoformat(day.date)
            if (
                not day.partial
                and day.first_min is not None
                and d not in resident.away
                and d not in self.params.holidays
            ):
                person.history = [*person.history, day][-HISTORY_DAYS:]
            nxt = (d + dt.timedelta(days=1)).isoformat()
            person.today = _Day(nxt)

    # --- expectations ----------------------------------------------------------------------

    def routine(self, resident_id: str) -> dict[str, Any]:
        """What the rule expects of a resident now, and from how many days it learned it."""
        person = self.people[resident_id]
        p = self.params
        days = person.history[-HISTORY_DAYS:]
        learned = len(days) >= p.min_history_days
        if learned:
            first_by = max(d.first_min for d in days if d.first_min is not None) + int(
                p.first_activity_margin_s // 60
            )
            usual_gap = max(d.max_gap_min for d in days)
            max_gap_min = int(usual_gap * p.gap_factor + p.gap_margin_s // 60)
        else:
            first_by = minutes(p.default_first_activity_by)
            usual_gap = None
            max_gap_min = int(p.default_max_gap_s // 60)
        return {
            "learned_from_days": len(days),
            "learned": learned,
            "usual_latest_first_min": first_by - int(p.first_activity_margin_s // 60)
            if learned else None,
            "first_sign_by_min": min(first_by, 24 * 60 - 1),
            "usual_longest_gap_min": usual_gap,
            "max_gap_min": max_gap_min,
        }

    def _deadlines(self, resident: Resident, person: _Person, now: int) -> list[tuple[int, str]]:
        today = self._local(now).date()
        r = self.routine(resident.id)
        out: list[tuple[int, str]] = []
        checks_today = today not in resident.away
        if (
            checks_today
            and person.today.first_min is None
            and not person.today.partial
            and today not in self.params.holidays
            and person.today.date == today.isoformat()
            # A first sign "due" in quiet hours is no reason to wake anyone: silence covers it.
            and not self._quiet(resident).contains(r["first_sign_by_min"])
        ):
            out.append((self._day_start_ms(now) + r["first_sign_by_min"] * 60000, "no_first_sign"))
        gap_at = self._daytime_deadline(resident, person.last_ms, r["max_gap_min"] * 60000)
        if self._local(gap_at).date() not in resident.away:
            out.append((gap_at, "silence_too_long"))
        return out

    def tick(self, now: int) -> Output:
        self._now = now
        out: Output = []
        for rid, targets in self.by_resident.items():
            person = self.people.get(rid)
            resident = targets[0].resident
            if person is None or resident is None:
                continue
            self._roll(resident, person, now)
            if person.raised_ms is not None:
                at = person.raised_ms + int(self.params.escalate_after_s * 1000)
                if not person.escalated and now >= at:
                    person.escalated = True
                    out.append(self._signal(resident, person, targets, at, "escalated",
                                            self.params.escalate_to))
                continue
            due = [(at, why) for at, why in self._deadlines(resident, person, now) if at <= now]
            if due:
                at, reason = min(due)
                person.raised_ms, person.raised_cause = at, f"welfare:{rid}:{at}"
                sev = self.params.severity
                out.append(self._signal(resident, person, targets, at, reason, sev))
        return out

    def next_deadline(self) -> int | None:
        due: list[int] = []
        for rid, targets in self.by_resident.items():
            person, resident = self.people.get(rid), targets[0].resident
            if person is None or resident is None:
                continue
            if person.raised_ms is not None:
                if not person.escalated:
                    due.append(person.raised_ms + int(self.params.escalate_after_s * 1000))
                continue
            now = max(self._now, person.last_ms)
            self._roll(resident, person, now)
            due += [at for at, _ in self._deadlines(resident, person, now)]
            # The day rolls over at local midnight, bringing a new first-sign deadline.
            due.append(self._day_start_ms(now) + DAY_MS)
        return min(due, default=None)

    def _signal(
        self, resident: Resident, person: _Person, targets: list[Target], at: int, reason: str,
        severity: str,
    ) -> Any:
        r = self.routine(resident.id)
        missing = {
            sig: {"last_ms": last, "since_ms": last if last is not None else person.last_ms}
            for sig, last in sorted(person.last_by_signal.items())
        }
        fmt = _hhmm
        cause = person.raised_cause + (":escalated" if reason == "escalated" else "")
        summary = {
            "no_first_sign": f"no sign of life today; usually by {fmt(r['first_sign_by_min'])}",
            "silence_too_long": f"no sign of life for over {r['max_gap_min']} min of daytime",
            "escalated": "still no sign of life",
        }[reason]
        return self.signal(
            "raise", targets[0], at, cause, severity=severity,
            summary=summary,
            why={
                "reason": reason,
                "missing": missing,
                "last_sign_ms": person.last_ms,
                "routine": r,
                "quiet_hours": self._quiet(resident).model_dump(),
                "signals": sorted(person.last_by_signal),
            },
            evidence=[t.device for t in targets],
        )

    # --- persistence -----------------------------------------------------------------------

    def dump_state(self) -> Any:
        return dict(self.people)  # dataclasses: orjson writes them, see AlertBook.dump

    def load_state(self, data: Any) -> None:
        for rid, raw in dict(data or {}).items():
            if rid not in self.by_resident:
                continue
            raw = dict(raw)
            raw["today"] = _Day(**raw["today"])
            raw["history"] = [_Day(**d) for d in raw["history"]]
            self.people[rid] = _Person(**raw)


@functools.lru_cache(maxsize=256)
def _day_segments(quiet: QuietHours) -> tuple[tuple[int, int], ...]:
    """Daytime as [from, to) minutes of a local day: the complement of the quiet hours."""
    s, e = minutes(quiet.start), minutes(quiet.end)
    if s > e:  # quiet over midnight (22:00-06:00): day is 06:00-22:00
        return ((e, s),)
    return ((0, s), (e, 24 * 60))


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"
