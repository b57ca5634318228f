"""Device liveness in separate states (transport, data, health, battery), pure and clock-driven."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from shouwang.clock import Clock
from shouwang.config import ConfigError
from shouwang.profiles import DeviceProfile

log = logging.getLogger(__name__)

Dimension = Literal["transport", "data", "health", "battery"]
DIMENSIONS: tuple[Dimension, ...] = ("transport", "data", "health", "battery")
STATES: dict[Dimension, tuple[str, ...]] = {
    "transport": ("unknown", "connected", "disconnected"),
    "data": ("unknown", "fresh", "stale"),
    "health": ("unknown", "healthy", "faulty"),
    "battery": ("unknown", "ok", "low"),
}
_BAD = frozenset({"disconnected", "stale", "faulty", "low"})
_STATUS_STATES = {"online": "connected", "offline": "disconnected"}


@dataclass(frozen=True, slots=True)
class Transition:
    """One device changed state in one dimension; `at_ms` is wall time when it happened."""

    device: str
    dimension: Dimension
    old: str
    new: str
    at_ms: int
    reason: str


@dataclass(frozen=True, slots=True)
class HealthRules:
    """What counts as a fault, and when a battery is low."""

    fault_events: frozenset[str] = frozenset({"fault"})
    clear_events: frozenset[str] = frozenset({"fault_cleared"})
    # A field that reports one of these values is faulty until it reports another value.
    fault_values: Mapping[str, frozenset[Any]] = field(
        default_factory=lambda: {"fault": frozenset({True}), "valve": frozenset({"fault"})}
    )
    battery_field: str = "battery"
    low_battery_pct: float = 20.0
    # A battery hovering at the threshold would flap; it is ok again only this much above it.
    battery_hysteresis_pct: float = 5.0


@dataclass(slots=True)
class _Device:
    kind: str
    window_s: float
    interval_s: int
    tolerance: float
    # Monotonic second from which silence counts: the last data, or the tracker's start.
    quiet_since: float
    state: dict[Dimension, str] = field(
        default_factory=lambda: dict.fromkeys(DIMENSIONS, "unknown")
    )
    since_ms: dict[Dimension, int | None] = field(default_factory=lambda: dict.fromkeys(DIMENSIONS))
    event_faults: set[str] = field(default_factory=set)
    field_faults: set[str] = field(default_factory=set)
    last_data_ms: int | None = None
    last_device_ts: int | None = None


class Liveness:
    """Tracks every bound device; `bindings` maps a device id to its kind. See docs/liveness.md."""

    def __init__(
        self,
        profiles: Mapping[str, DeviceProfile],
        bindings: Mapping[str, str],
        clock: Clock,
        *,
        rules: HealthRules | None = None,
    ) -> None:
        self.clock = clock
        self.rules = rules or HealthRules()
        started = clock.monotonic()
        self._devices: dict[str, _Device] = {}
        for device, kind in bindings.items():
            profile = profiles.get(kind)
            if profile is None:
                raise ConfigError(f"device {device}: unknown profile {kind!r}")
            self._devices[device] = _Device(
                kind=kind,
                window_s=profile.report_interval_s * profile.liveness_tolerance,
                interval_s=profile.report_interval_s,
                tolerance=profile.liveness_tolerance,
                # Silence is counted from start-up, so a gateway boot raises no stale storm.
                quiet_since=started,
            )

    # --- inputs ------------------------------------------------------------------------------

    def observe_status(
        self, device: str, body: Mapping[str, Any], ts: int | None = None
    ) -> list[Transition]:
        """A `dev/{id}/status` body; `{"state": "offline"}` is also the device's last will."""
        d = self._devices.get(device)
        state = body.get("state")
        new = _STATUS_STATES.get(state) if isinstance(state, str) else None
        if d is None or new is None:
            # A status without a state (e.g. a config acknowledgement) says nothing of transport.
            return []
        t = self._set(device, d, "transport", new, self.clock.now_ms(), f"status {state}")
        return [t] if t else []

    def observe_data(
        self,
        device: str,
        ts: int | None = None,
        fields: Mapping[str, Any] | None = None,
        event: str | None = None,
    ) -> list[Transition]:
        """Telemetry (`fields`) or an event from `device`; `ts` is the device's own timestamp.

        Freshness counts from when the gateway received the data, not from `ts`: a device clock
        a few minutes off would otherwise be stale for ever or fresh for too long.
        """
        d = self._devices.get(device)
        if d is None:
            return []
        now, now_ms = self.clock.monotonic(), self.clock.now_ms()
        out: list[Transition] = []
        # A silence that ran out between two ticks is still reported, so the record does not
        # depend on how often the caller ticks.
        self._check_stale(device, d, now, now_ms, out)
        was = d.state["data"]
        if was != "fresh":  # reasons are built for a change only: this runs per message
            reason = "first data" if was == "unknown" else "data again"
            if was == "stale" and d.last_data_ms is not None:
                reason = f"data again after {(now_ms - d.last_data_ms) // 1000} s"
            self._add(out, self._set(device, d, "data", "fresh", now_ms, reason))
        d.quiet_since, d.last_data_ms, d.last_device_ts = now, now_ms, ts
        self._health(device, d, fields or {}, event, now_ms, out)
        return out

    def tick(self) -> list[Transition]:
        """Declare stale every device whose silence has run past its window."""
        now, now_ms = self.clock.monotonic(), self.clock.now_ms()
        out: list[Transition] = []
        for device, d in self._devices.items():
            self._check_stale(device, d, now, now_ms, out)
        return out

    def next_deadline(self) -> float | None:
        """Monotonic second at which the next device goes stale, so the caller need not poll."""
        pending = [
            d.quiet_since + d.window_s for d in self._devices.values() if d.state["data"] != "stale"
        ]
        return min(pending, default=None)

    # --- outputs -----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Per-device state for /healthz and the health message; ids and kinds only, no people."""
        out: dict[str, dict[str, Any]] = {}
        for device, d in self._devices.items():
            entry: dict[str, Any] = {"kind": d.kind}
            for dim in DIMENSIONS:
                entry[dim] = d.state[dim]
            entry["since_ms"] = dict(d.since_ms)
            entry["faults"] = sorted(d.event_faults | d.field_faults)
            entry["last_data_ms"] = d.last_data_ms
            entry["last_device_ts"] = d.last_device_ts
            entry["stale_after_s"] = d.window_s
            out[device] = entry
        return out

    def gateway_health(self) -> dict[str, Any]:
        """Counts per dimension and state; zeros included, so the shape never changes."""
        counts: dict[str, Any] = {"at_ms": self.clock.now_ms(), "devices": len(self._devices)}
        for dim in DIMENSIONS:
            per = dict.fromkeys(STATES[dim], 0)
            for d in self._devices.values():
                per[d.state[dim]] += 1
            counts[dim] = per
        return counts

    # --- internals ---------------------------------------------------------------------------

    def _check_stale(
        self, device: str, d: _Device, now: float, now_ms: int, out: list[Transition]
    ) -> None:
        if d.state["data"] == "stale":
            return
        overdue = now - (d.quiet_since + d.window_s)
        if overdue <= 0:
            return
        # Stamped when the window ran out, not when someone noticed.
        at_ms = now_ms - round(overdue * 1000)
        window = f"{d.window_s:g} s = {d.tolerance:g} × {d.interval_s} s"
        if d.last_data_ms is None:
            reason = f"no data since start-up ({window})"
        else:
            reason = f"no data for {window}"
        self._add(out, self._set(device, d, "data", "stale", at_ms, reason))

    def _health(
        self,
        device: str,
        d: _Device,
        fields: Mapping[str, Any],
        event: str | None,
        now_ms: int,
        out: list[Transition],
    ) -> None:
        rules = self.rules
        if event in rules.fault_events:
            d.event_faults.add(event)
        elif event in rules.clear_events:
            d.event_faults.clear()
        for name, bad in rules.fault_values.items():
            if name in fields:
                # `==` rather than `in`: a value need not be hashable.
                if any(fields[name] == b for b in bad):
                    d.field_faults.add(name)
                else:
                    d.field_faults.discard(name)
        health = "faulty" if d.event_faults or d.field_faults else "healthy"
        if health != d.state["health"]:
            faults = sorted(d.event_faults | d.field_faults)
            reason = f"fault: {', '.join(faults)}" if faults else "no fault reported"
            self._add(out, self._set(device, d, "health", health, now_ms, reason))

        level = fields.get(rules.battery_field)
        if isinstance(level, int | float) and not isinstance(level, bool):
            if d.state["battery"] == "low":
                low = level < rules.low_battery_pct + rules.battery_hysteresis_pct
            else:
                low = level < rules.low_battery_pct
            battery = "low" if low else "ok"
            if battery != d.state["battery"]:
                reason = f"battery {level:g}%"
                if low:
                    reason += f", below {rules.low_battery_pct:g}%"
                self._add(out, self._set(device, d, "battery", battery, now_ms, reason))

    def _set(
        self, device: str, d: _Device, dim: Dimension, new: str, at_ms: int, reason: str
    ) -> Transition | None:
        old = d.state[dim]
        if old == new:
            return None
        d.state[dim], d.since_ms[dim] = new, at_ms
        if new in _BAD:
            level = logging.WARNING
        elif old == "unknown":
            # The first good report of each device at boot is inventory, not news.
            level = logging.DEBUG
        else:
            level = logging.INFO
        log.log(level, "device %s %s: %s -> %s (%s)", device, dim, old, new, reason)
        return Transition(device, dim, old, new, at_ms, reason)

    @staticmethod
    def _add(out: list[Transition], t: Transition | None) -> None:
        if t is not None:
            out.append(t)
