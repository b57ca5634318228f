"""Threshold and rate-of-change rules: minimum duration, hysteresis, minimum clear time, levels."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, model_validator

from edge.rules.base import (
    SEVERITY_RANK,
    DeviceState,
    Output,
    Rule,
    RuleParams,
    Target,
    register,
)
from shouwang.config import Strict
from shouwang.profiles import Severity
from shouwang.records import Reading

EVIDENCE_KEPT = 5


class Level(Strict):
    above: float = Field(description="Escalate when the value exceeds this")
    severity: Severity = Field(description="Severity from this level up")


class BoundParams(RuleParams):
    low: float | None = Field(None, description="Alert while the value is below this")
    high: float | None = Field(None, description="Alert while the value is above this")
    levels: list[Level] = Field(
        default_factory=list,
        description="Higher levels above `high`, each with a higher severity: the open alert "
        "is escalated, not duplicated",
    )
    min_duration_s: float = Field(
        0, ge=0, description="The value must stay out of bounds this long before the alert"
    )
    hysteresis: float = Field(
        0, ge=0, description="Once raised, the value must come back this far inside the bound"
    )
    min_clear_s: float = Field(
        0, ge=0, description="…and stay inside this long before the alert resolves"
    )
    care_plan_key: str | None = Field(
        None, description="Resident care-plan entry whose low/high replace this rule's bounds"
    )
    requires_worn: bool = Field(
        False, description="Ignore readings while the wearable is off the wrist or charging"
    )

    @model_validator(mode="after")
    def _bounds(self) -> BoundParams:
        if self.low is None and self.high is None:
            raise ValueError("give low, high or both")
        if self.low is not None and self.high is not None and self.low >= self.high:
            raise ValueError(f"low {self.low:g} must be below high {self.high:g}")
        last, rank = self.high, SEVERITY_RANK[self.severity]
        for lv in self.levels:
            if last is None or lv.above <= last:
                raise ValueError(f"levels: {lv.above:g} must be above {last} (high, then rising)")
            if SEVERITY_RANK[lv.severity] <= rank:
                raise ValueError(f"levels: severity {lv.severity} must rise with the level")
            last, rank = lv.above, SEVERITY_RANK[lv.severity]
        return self


@dataclass(slots=True)
class Hold:
    """One subject's condition: normal → pending → active → clearing → normal."""

    phase: Literal["normal", "pending", "active", "clearing"] = "normal"
    since: int = 0
    side: str = ""
    severity: str = ""
    value: float = 0.0
    evidence: deque[str] = field(default_factory=lambda: deque(maxlen=EVIDENCE_KEPT))


class BoundRule(Rule):
    """Shared machinery: a value per reading (the field, or a rate) against bounds."""

    params: BoundParams
    auto_resolve = True
    unit_note = ""

    def __init__(
        self, params: RuleParams, targets: list[Target], states: Mapping[str, DeviceState]
    ) -> None:
        super().__init__(params, targets, states)
        assert isinstance(params, BoundParams)
        self.fields = frozenset({self.field_name})
        self.holds: dict[str, Hold] = {}
        self._bounds: dict[str, tuple[float | None, float | None]] = {}
        key = params.care_plan_key
        for t in targets:
            plan = t.resident.care_plan.get(key) if (key and t.resident) else None
            self._bounds[t.device] = (plan.low, plan.high) if plan else (params.low, params.high)

    @property
    def field_name(self) -> str:
        raise NotImplementedError

    def value(self, target: Target, reading: Reading) -> float | None:
        raise NotImplementedError

    def on_reading(self, target: Target, reading: Reading, now: int) -> Output:
        p = self.params
        if p.requires_worn:
            st = self.states.get(target.device)
            if st is not None and (st.worn is False or st.charging):
                return []
        v = self.value(target, reading)
        if v is None:
            return []
        low, high = self._bounds[target.device]
        side = ""
        if high is not None and v > high:
            side = "high"
        elif low is not None and v < low:
            side = "low"
        h = self.holds.get(target.device)
        if h is None:
            if not side:
                return []  # the common case: in bounds, nothing pending
            h = self.holds[target.device] = Hold()
        h.value = v
        if h.phase in ("normal", "pending"):
            if not side:
                h.phase = "normal"
                h.evidence.clear()
                return []
            h.evidence.append(reading.id)
            if h.phase == "normal" or h.side != side:
                h.phase, h.since, h.side = "pending", now, side
            if now - h.since >= p.min_duration_s * 1000:
                return self._raise(target, h, now, reading.id)
            return []
        # Raised: still out of bounds counts with the hysteresis margin.
        margin = p.hysteresis
        still = (h.side == "high" and high is not None and v > high - margin) or (
            h.side == "low" and low is not None and v < low + margin
        )
        if still:
            h.evidence.append(reading.id)
            h.phase = "active"
            sev = self._severity(h.side, v)
            if SEVERITY_RANK[sev] > SEVERITY_RANK[h.severity]:
                return self._raise(target, h, now, reading.id)
            return []
        if h.phase == "active":
            h.phase, h.since = "clearing", now
        if now - h.since >= p.min_clear_s * 1000:
            return self._resolve(target, h, now, reading.id)
        return []

    def tick(self, now: int) -> Output:
        out: Output = []
        for device, h in self.holds.items():
            target = self.targets[device]
            if h.phase == "pending" and now - h.since >= self.params.min_duration_s * 1000:
                out += self._raise(target, h, now, f"timer:{h.since}", at=h.since)
            elif h.phase == "clearing" and now - h.since >= self.params.min_clear_s * 1000:
                out += self._resolve(target, h, now, f"timer:{h.since}", at=h.since)
        return out

    def next_deadline(self) -> int | None:
        p = self.params
        due = [
            h.since + int((p.min_duration_s if h.phase == "pending" else p.min_clear_s) * 1000)
            for h in self.holds.values()
            if h.phase in ("pending", "clearing")
        ]
        return min(due, default=None)

    def _severity(self, side: str, v: float) -> str:
        sev = self.params.severity
        if side == "high":
            for lv in self.params.levels:
                if v > lv.above:
                    sev = lv.severity
        return sev

    def _why(self, target: Target, h: Hold) -> dict[str, Any]:
        low, high = self._bounds[target.device]
        p = self.params
        why: dict[str, Any] = {
            "field": self.field_name,
            "value": h.value,
            "side": h.side,
            "low": low,
            "high": high,
            "min_duration_s": p.min_duration_s,
            "hysteresis": p.hysteresis,
            "min_clear_s": p.min_clear_s,
            "since_ms": h.since,
        }
        if p.levels:
            why["levels"] = [lv.model_dump() for lv in p.levels]
        if p.care_plan_key and target.resident and p.care_plan_key in target.resident.care_plan:
            why["bounds_from"] = f"care plan of {target.resident.id}"
        return why

    def _raise(
        self, target: Target, h: Hold, now: int, cause: str, at: int | None = None
    ) -> Output:
        h.phase = "active"
        h.severity = self._severity(h.side, h.value)
        bound = self._bounds[target.device][1 if h.side == "high" else 0]
        word = "above" if h.side == "high" else "below"
        summary = f"{self.field_name}{self.unit_note} {h.value:g} {word} {bound:g}"
        return [
            self.signal(
                "raise",
                target,
                now,
                cause,
                severity=h.severity,
                summary=summary,
                why=self._why(target, h),
                evidence=h.evidence,
                at=at,
            )
        ]

    def _resolve(
        self, target: Target, h: Hold, now: int, cause: str, at: int | None = None
    ) -> Output:
        why = self._why(target, h)
        h.phase, h.severity = "normal", ""
        h.evidence.clear()
        return [self.signal("resolve", target, now, cause, why=why, at=at)]


class ThresholdParams(BoundParams):
    field: str = Field(description="Telemetry field compared with the bounds")


@register
class Threshold(BoundRule):
    """A field out of bounds for a minimum duration; resolves after a minimum clear time."""

    type_key = "threshold"
    Params = ThresholdParams
    summary = "A telemetry field outside low/high for min_duration_s; levels escalate it"
    params: ThresholdParams

    @property
    def field_name(self) -> str:
        return self.params.field

    def value(self, target: Target, reading: Reading) -> float | None:
        v = reading.values.get(self.params.field)
        return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


class RateParams(BoundParams):
    field: str = Field(description="Telemetry field whose rate of change is compared")
    window_s: float = Field(
        300, gt=0, description="Rate measured over readings at most this far apart"
    )
    per_s: float = Field(
        3600, gt=0, description="Rate unit: change per this many seconds (3600: per hour)"
    )


@register
class RateOfChange(BoundRule):
    """How fast a field changes (e.g. a gas meter's total rising too fast), against bounds."""

    type_key = "rate_of_change"
    Params = RateParams
    summary = "The change of a field per per_s seconds, over window_s, outside low/high"
    params: RateParams
    unit_note = " rate"

    def __init__(
        self, params: RuleParams, targets: list[Target], states: Mapping[str, DeviceState]
    ) -> None:
        super().__init__(params, targets, states)
        self.history: dict[str, deque[tuple[int, float]]] = {}

    @property
    def field_name(self) -> str:
        return self.params.field

    def value(self, target: Target, reading: Reading) -> float | None:
        v = reading.values.get(self.params.field)
        if not isinstance(v, int | float) or isinstance(v, bool):
            return None
        hist = self.history.setdefault(target.device, deque(maxlen=64))
        ts = reading.ts
        window_ms = self.params.window_s * 1000
        while hist and ts - hist[0][0] > window_ms:
            hist.popleft()
        hist.append((ts, float(v)))
        first_ts, first_v = hist[0]
        if ts <= first_ts:
            return None
        return (float(v) - first_v) / ((ts - first_ts) / 1000) * self.params.per_s
