"""Meters: continuous night flow (a leak, a running toilet, a tap left open)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from pydantic import Field

from edge.rules.base import DeviceState, Output, Rule, RuleParams, Target, register
from edge.rules.residents import QuietHours, minutes
from shouwang.records import Reading


class FlowParams(RuleParams):
    field: str = Field("flow", description="Instantaneous flow field")
    min_flow: float = Field(0.005, gt=0, description="Flow at or above this counts as flowing")
    after_s: float = Field(1800, gt=0, description="Flowing without a break this long → alert")
    window: QuietHours = Field(
        default_factory=lambda: QuietHours(start="00:00", end="05:00"),
        description="Local hours the rule watches (night: nobody runs water for half an hour)",
    )


@register
class ContinuousFlow(Rule):
    """Flow that never stops for after_s inside the night window: a leak or a running toilet."""

    type_key = "continuous_flow"
    Params = FlowParams
    summary = "Flow ≥ min_flow without a break for after_s, starting inside the local window"
    params: FlowParams
    auto_resolve = True

    def __init__(
        self, params: RuleParams, targets: list[Target], states: Mapping[str, DeviceState]
    ) -> None:
        super().__init__(params, targets, states)
        assert isinstance(params, FlowParams)
        self.fields = frozenset({params.field})
        self._window = (minutes(params.window.start), minutes(params.window.end))
        self.since: dict[str, tuple[int, str]] = {}
        self.raised: set[str] = set()

    def on_reading(self, target: Target, reading: Reading, now: int) -> Output:
        flow = reading.values.get(self.params.field)
        if not isinstance(flow, int | float):
            return []
        device = target.device
        if flow < self.params.min_flow:
            self.since.pop(device, None)
            if device in self.raised:
                self.raised.discard(device)
                return [self.signal("resolve", target, now, reading.id, why={"flow": flow})]
            return []
        if device not in self.since:
            local = dt.datetime.fromtimestamp(now / 1000, self.tz)
            if not _contains(self._window, local.hour * 60 + local.minute):
                return []
            self.since[device] = (now, reading.id)
        return self._check(device, now, flow)

    def _check(self, device: str, now: int, flow: float | None) -> Output:
        since, cause = self.since[device]
        if device in self.raised or now - since < self.params.after_s * 1000:
            return []
        self.raised.add(device)
        w = self.params.window
        return [
            self.signal(
                "raise", self.targets[device], now, f"{cause}:flow", at=since,
                summary=f"water flowing without a break for {(now - since) // 60000} min at night",
                why={"field": self.params.field, "flow": flow, "min_flow": self.params.min_flow,
                     "since_ms": since, "after_s": self.params.after_s,
                     "window": f"{w.start}-{w.end}"},
                evidence=[cause],
            )
        ]

    def tick(self, now: int) -> Output:
        out: Output = []
        for device in list(self.since):
            out += self._check(device, now, None)
        return out

    def next_deadline(self) -> int | None:
        due = [s + int(self.params.after_s * 1000) for d, (s, _) in self.since.items()
               if d not in self.raised]
        return min(due, default=None)


def _contains(window: tuple[int, int], minute: int) -> bool:
    s, e = window
    return s <= minute < e if s <= e else minute >= s or minute < e
