"""Wearable semantics: not worn, low battery that knows about the charger, geofence exit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import Field

from edge.rules.base import DeviceState, Output, Rule, RuleParams, Target, register
from shouwang.records import Event, Reading


class NotWornParams(RuleParams):
    after_s: float = Field(1800, gt=0, description="Off the wrist this long → alert")
    charging_after_s: float = Field(
        10800, gt=0, description="On the charger this long → alert (charging is expected a while)"
    )


@register
class NotWorn(Rule):
    """A tagged resident's wearable off the wrist for N minutes (its vitals say nothing then)."""

    type_key = "not_worn"
    Params = NotWornParams
    summary = "Wearable off the wrist (worn=false or a removed event) for after_s"
    params: NotWornParams
    fields = frozenset({"worn", "charging"})
    events = frozenset({"removed"})
    auto_resolve = True

    def __init__(
        self, params: RuleParams, targets: list[Target], states: Mapping[str, DeviceState]
    ) -> None:
        super().__init__(params, targets, states)
        self.off_since: dict[str, tuple[int, str]] = {}  # device → (since, cause)
        self.raised: set[str] = set()

    def on_reading(self, target: Target, reading: Reading, now: int) -> Output:
        worn = reading.values.get("worn")
        if worn is True:
            self.off_since.pop(target.device, None)
            if target.device in self.raised:
                self.raised.discard(target.device)
                return [self.signal("resolve", target, now, reading.id, why={"worn": True})]
        elif worn is False:
            self.off_since.setdefault(target.device, (now, reading.id))
        return []

    def on_event(self, target: Target, event: Event, now: int) -> Output:
        self.off_since.setdefault(target.device, (now, event.id))
        return []

    def _limit_ms(self, device: str) -> int:
        st = self.states.get(device)
        charging = st is not None and st.charging
        return int((self.params.charging_after_s if charging else self.params.after_s) * 1000)

    def tick(self, now: int) -> Output:
        out: Output = []
        for device, (since, cause) in self.off_since.items():
            if device in self.raised or now - since < self._limit_ms(device):
                continue
            self.raised.add(device)
            st = self.states.get(device)
            charging = st is not None and st.charging
            minutes = (now - since) // 60000
            out.append(
                self.signal(
                    "raise",
                    self.targets[device],
                    now,
                    f"{cause}:not_worn",
                    at=since,
                    summary=f"wearable not worn for {minutes} min"
                    + (" (on the charger)" if charging else ""),
                    why={"off_since_ms": since, "charging": charging,
                         "after_s": self.params.after_s,
                         "charging_after_s": self.params.charging_after_s},
                    evidence=[cause],
                )
            )
        return out

    def next_deadline(self) -> int | None:
        due = [
            since + self._limit_ms(d)
            for d, (since, _) in self.off_since.items()
            if d not in self.raised
        ]
        return min(due, default=None)


class BatteryParams(RuleParams):
    field: str = Field("battery", description="Battery level field (%)")
    low: float = Field(20, ge=0, le=100, description="Alert below this level")
    hysteresis: float = Field(5, ge=0, description="Resolves at low + hysteresis or above")
    charging_field: str | None = Field(
        None, description="Field that is true on the charger (none: the device has no charger)"
    )


@register
class BatteryLow(Rule):
    """Low battery, never while charging; resolves on the charger or once charged."""

    type_key = "battery_low"
    Params = BatteryParams
    summary = "Battery below low, unless on the charger; resolves at low + hysteresis"
    params: BatteryParams
    auto_resolve = True

    def __init__(
        self, params: RuleParams, targets: list[Target], states: Mapping[str, DeviceState]
    ) -> None:
        super().__init__(params, targets, states)
        assert isinstance(params, BatteryParams)
        self.fields = frozenset(f for f in (params.field, params.charging_field) if f)
        self.low: set[str] = set()

    def on_reading(self, target: Target, reading: Reading, now: int) -> Output:
        p = self.params
        charging = reading.values.get(p.charging_field) if p.charging_field else False
        if charging is None:
            st = self.states.get(target.device)
            charging = st.charging if st is not None else False
        level = reading.values.get(p.field)
        device = target.device
        if device in self.low:
            recovered = isinstance(level, int | float) and level >= p.low + p.hysteresis
            if charging is True or recovered:
                self.low.discard(device)
                why = {"field": p.field, "value": level, "low": p.low, "charging": charging}
                return [self.signal("resolve", target, now, reading.id, why=why)]
            return []
        if charging is not True and isinstance(level, int | float) and level < p.low:
            self.low.add(device)
            why = {"field": p.field, "value": level, "low": p.low, "charging": charging}
            return [
                self.signal(
                    "raise", target, now, reading.id,
                    summary=f"battery {level:g}% below {p.low:g}%", why=why,
                    evidence=[reading.id],
                )
            ]
        return []


class GeofenceParams(RuleParams):
    min_outside_s: float = Field(
        60, ge=0, description="Outside this long before the alert (GPS jitter at the edge)"
    )


def inside(polygon: Sequence[tuple[float, float]], lat: float, lon: float) -> bool:
    """Ray casting; fine for a community-sized polygon away from the poles and the 180° line."""
    hit = False
    j = len(polygon) - 1
    for i in range(len(polygon)):
        (ya, xa), (yb, xb) = polygon[i], polygon[j]
        if (ya > lat) != (yb > lat) and lon < (xb - xa) * (lat - ya) / (yb - ya) + xa:
            hit = not hit
        j = i
    return hit


@register
class GeofenceExit(Rule):
    """A resident (tagged dementia) outside their outdoor polygon or allowed indoor zones."""

    type_key = "geofence"
    Params = GeofenceParams
    summary = "Position (lat/lon) outside the resident's polygon, or zone not allowed"
    params: GeofenceParams
    fields = frozenset({"lat", "lon", "zone"})
    auto_resolve = True

    def __init__(
        self, params: RuleParams, targets: list[Target], states: Mapping[str, DeviceState]
    ) -> None:
        super().__init__(params, targets, states)
        self.out_since: dict[str, tuple[int, str, dict[str, Any]]] = {}
        self.raised: set[str] = set()

    def on_reading(self, target: Target, reading: Reading, now: int) -> Output:
        fence = target.resident.geofence if target.resident else None
        if fence is None:
            return []
        v = reading.values
        outside: dict[str, Any] | None = None
        if fence.polygon is not None and "lat" in v and "lon" in v:
            if not inside(fence.polygon, v["lat"], v["lon"]):
                outside = {"lat": v["lat"], "lon": v["lon"], "fence": "polygon"}
        elif fence.zones is not None and "zone" in v and v["zone"] not in fence.zones:
            outside = {"zone": v["zone"], "allowed_zones": fence.zones, "fence": "zones"}
        elif not ({"lat", "lon", "zone"} & v.keys()):
            return []
        device = target.device
        if outside is None:
            self.out_since.pop(device, None)
            if device in self.raised:
                self.raised.discard(device)
                return [self.signal("resolve", target, now, reading.id, why={"inside": True})]
            return []
        since, cause, _ = self.out_since.get(device, (now, reading.id, outside))
        self.out_since[device] = (since, cause, outside)
        return self._check(device, now)

    def _check(self, device: str, now: int) -> Output:
        since, cause, where = self.out_since[device]
        if device in self.raised or now - since < self.params.min_outside_s * 1000:
            return []
        self.raised.add(device)
        return [
            self.signal(
                "raise", self.targets[device], now, cause, at=since,
                summary="resident left the safe area",
                why={**where, "outside_since_ms": since,
                     "min_outside_s": self.params.min_outside_s},
                evidence=[cause],
            )
        ]

    def tick(self, now: int) -> Output:
        out: Output = []
        for device in list(self.out_since):
            out += self._check(device, now)
        return out

    def next_deadline(self) -> int | None:
        due = [
            s + int(self.params.min_outside_s * 1000)
            for d, (s, _, _) in self.out_since.items()
            if d not in self.raised
        ]
        return min(due, default=None)
