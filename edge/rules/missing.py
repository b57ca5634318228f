"""Missing data: a field that stops coming while its device is otherwise up."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import Field, field_validator

from edge.rules.base import DeviceState, Output, Rule, RuleParams, Target, register
from shouwang.records import Reading


class MissingParams(RuleParams):
    field: str | None = Field(None, description="Field that must keep coming (none: any reading)")
    after_s: float = Field(gt=0, description="No such data this long → alert")

    @field_validator("after_s")
    @classmethod
    def _sane(cls, v: float) -> float:
        if v < 10:
            raise ValueError("after_s under 10 s would flap on ordinary jitter")
        return v


@register
class MissingData(Rule):
    """A field that stops coming while the device is otherwise up (offline has its own alert)."""

    type_key = "missing_data"
    Params = MissingParams
    summary = "No value of field for after_s; quiet while the device is offline or not worn"
    params: MissingParams
    auto_resolve = True
    wants_all_readings = True

    def __init__(
        self, params: RuleParams, targets: list[Target], states: Mapping[str, DeviceState]
    ) -> None:
        super().__init__(params, targets, states)
        self.last: dict[str, int] = {}
        self.raised: set[str] = set()

    def start(self, now: int) -> None:
        for device in self.targets:
            self.last.setdefault(device, now)  # silence counts from start-up

    def on_reading(self, target: Target, reading: Reading, now: int) -> Output:
        f = self.params.field
        if f is not None and f not in reading.values:
            return []
        self.last[target.device] = now
        if target.device in self.raised:
            self.raised.discard(target.device)
            return [self.signal("resolve", target, now, reading.id, why={"field": f})]
        return []

    def _quiet(self, device: str) -> bool:
        st = self.states.get(device)
        # Offline and stream-lost are reported by their own alerts; not worn means no vitals.
        return st is not None and (st.offline or st.stream_lost or st.worn is False)

    def tick(self, now: int) -> Output:
        out: Output = []
        limit = self.params.after_s * 1000
        for device, last in self.last.items():
            if device in self.raised or now - last < limit:
                continue
            if self._quiet(device):
                self.last[device] = now  # count again from when it is back
                continue
            self.raised.add(device)
            out.append(
                self.signal(
                    "raise", self.targets[device], now, f"timer:{last}", at=last,
                    summary=f"no {self.params.field or 'data'} for {(now - last) // 1000} s",
                    why={"field": self.params.field, "last_ms": last,
                         "after_s": self.params.after_s},
                )
            )
        return out

    def next_deadline(self) -> int | None:
        due = [t + int(self.params.after_s * 1000) for d, t in self.last.items()
               if d not in self.raised]
        return min(due, default=None)
