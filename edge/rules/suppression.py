"""Parent-first offline alerts: the edge broker or a Modbus bus down is one alert, not many.

Every device has a parent: the gateway's own broker for MQTT devices, the serial server or
Modbus TCP endpoint (`bus:host:port`) for polled meters. A device's offline alert waits out a
grace period; if by then its parent is down (the broker connection is lost, or every device on
a bus of two or more stopped answering), the parent gets the one alert and the devices under it
none. The parent alert lists the devices it covers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from pydantic import Field

from edge.rules.base import DeviceState, Output, Rule, RuleParams, Signal, Target, register
from shouwang.profiles import Severity

BROKER = "broker:edge"
GATEWAY_DEVICE = "gateway"  # as edge.uplink names the gateway itself (not imported: a cycle)


class OfflineParams(RuleParams):
    grace_s: float = Field(
        300, gt=0, description="Offline this long before an alert (the parent is found first)"
    )
    parent_severity: Severity = Field(
        "high", description="Severity of a parent's (bus, broker) alert"
    )


@register
class DeviceOffline(Rule):
    """Offline devices, grouped under their parent so an outage is one alert."""

    type_key = "device_offline"
    Params = OfflineParams
    summary = "Transport down or data stale for grace_s; a whole bus or the broker is one alert"
    params: OfflineParams
    auto_resolve = True

    def __init__(
        self, params: RuleParams, targets: list[Target], states: Mapping[str, DeviceState]
    ) -> None:
        super().__init__(params, targets, states)
        self.site = ""
        self.since: dict[str, int] = {}  # offline device → since
        self.raised: set[str] = set()  # devices and parents with an open alert
        self.broker_down_since: int | None = None
        self.children: dict[str, list[str]] = defaultdict(list)
        for t in targets:
            self.children[t.parent].append(t.device)

    def on_offline(self, target: Target, offline: bool, now: int) -> Output:
        device = target.device
        if offline:
            self.since.setdefault(device, now)
            return []
        self.since.pop(device, None)
        out: Output = []
        if device in self.raised:
            self.raised.discard(device)
            out.append(self.signal("resolve", target, now, f"online:{now}", why={"online": True}))
        if target.parent in self.raised and target.parent != BROKER:
            out += self._resolve_parent(target.parent, now)
        return out

    def broker_changed(self, up: bool, now: int) -> Output:
        if not up:
            if self.broker_down_since is None:
                self.broker_down_since = now
            return []
        self.broker_down_since = None
        return self._resolve_parent(BROKER, now) if BROKER in self.raised else []

    def _parent_down_since(self, parent: str) -> int | None:
        if parent == BROKER:
            return self.broker_down_since
        kids = self.children.get(parent, [])
        if len(kids) < 2 or any(k not in self.since for k in kids):
            return None
        return max(self.since[k] for k in kids)  # the bus is down once its last device is

    def tick(self, now: int) -> Output:
        out: Output = []
        grace = self.params.grace_s * 1000
        for parent in self.children.keys() | ({BROKER} if self.broker_down_since else set()):
            down = self._parent_down_since(parent)
            if down is not None and parent not in self.raised and now - down >= grace:
                self.raised.add(parent)
                out.append(self._parent_signal(parent, down, now))
        for device, since in self.since.items():
            target = self.targets[device]
            if device in self.raised or now - since < grace:
                continue
            if self._parent_down_since(target.parent) is not None:
                continue  # covered (or about to be) by the parent's one alert
            self.raised.add(device)
            out.append(
                self.signal(
                    "raise", target, now, f"offline:{since}", at=since,
                    summary=f"{target.kind} {device} offline for {(now - since) // 1000} s",
                    why={"offline_since_ms": since, "grace_s": self.params.grace_s,
                         "parent": target.parent},
                )
            )
        return out

    def next_deadline(self) -> int | None:
        grace = int(self.params.grace_s * 1000)
        due = []
        for parent in self.children.keys() | {BROKER}:
            down = self._parent_down_since(parent)
            if down is not None and parent not in self.raised:
                due.append(down + grace)
        for d, s in self.since.items():
            # A device under a parent that is down waits for the parent (no busy wake-ups).
            if d not in self.raised and self._parent_down_since(self.targets[d].parent) is None:
                due.append(s + grace)
        return min(due, default=None)

    def _parent_target(self, parent: str) -> Target:
        return Target(device=GATEWAY_DEVICE, kind="gateway", resident=None, location=None,
                      parent=parent)

    def _parent_signal(self, parent: str, since: int, now: int) -> Signal:
        kids = sorted(self.children.get(parent, []))
        what = "the gateway's own broker is unreachable" if parent == BROKER else (
            f"every meter on {parent} stopped answering"
        )
        sig = self.signal(
            "raise", self._parent_target(parent), now, f"{parent}:down:{since}", at=since,
            severity=self.params.parent_severity,
            summary=what,
            why={"parent": parent, "down_since_ms": since, "grace_s": self.params.grace_s,
                 "devices": kids, "devices_offline": sorted(k for k in kids if k in self.since)},
            subject=f"gateway:{self.site}" if parent == BROKER else parent,
        )
        sig.alert = _parent_type(parent)
        return sig

    def _resolve_parent(self, parent: str, now: int) -> Output:
        self.raised.discard(parent)
        sig = self.signal("resolve", self._parent_target(parent), now, f"{parent}:up:{now}",
                          why={"parent": parent},
                          subject=f"gateway:{self.site}" if parent == BROKER else parent)
        sig.alert = _parent_type(parent)
        return [sig]


def _parent_type(parent: str) -> str:
    return "edge_broker_down" if parent == BROKER else "bus_down"
