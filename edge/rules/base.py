"""What every rule type shares: parameters, the devices it watches, what it emits, a registry."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import Field

from edge.rules.residents import Resident
from shouwang.config import Strict
from shouwang.profiles import Severity
from shouwang.records import Event, Reading

SEVERITY_RANK = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}


class RuleParams(Strict):
    """Keys every rule has. A rule type adds its own; `type` picks the type from the registry."""

    id: str = Field(description="Rule id, unique in its file; overrides and logs name it")
    type: str = Field(description="Rule type (see the table below)")
    alert: str = Field(description="Alert type raised, e.g. heart_rate, gas_leak")
    severity: Severity = Field("medium", description="Severity of the alert")
    enabled: bool = Field(True, description="false turns the rule off (e.g. a profile default)")
    kinds: list[str] = Field(
        default_factory=list, description="Device kinds it applies to (profile defaults: its own)"
    )
    devices: list[str] = Field(
        default_factory=list, description="Only these device ids (empty: every device of kinds)"
    )
    residents: list[str] = Field(
        default_factory=list, description="Only devices bound to these resident ids"
    )
    tags: list[str] = Field(
        default_factory=list,
        description="Only devices whose resident has one of these tags (e.g. living_alone)",
    )
    repeat_after_s: float = Field(
        600,
        ge=0,
        description="For an alert that does not resolve itself: a new occurrence within this "
        "long of the last is the same alert (debounce); later, it is a new alert (0: every "
        "occurrence is its own alert)",
    )


@dataclass(slots=True)
class Target:
    """One device a rule watches, with who and where it is."""

    device: str
    kind: str
    resident: Resident | None
    location: str | None
    parent: str = "broker:edge"  # what it is reached through: the edge broker or a polled bus

    @property
    def subject(self) -> str:
        return f"resident:{self.resident.id}" if self.resident else f"device:{self.device}"


@dataclass(slots=True)
class DeviceState:
    """What the engine knows about a device beyond one message: shared by every rule on it."""

    worn: bool | None = None  # None: the device does not say (not a wearable)
    worn_since_ms: int | None = None
    charging: bool = False
    offline: bool = False  # transport down (status offline, a polled meter not answering)
    stream_lost: bool = False  # a camera that sees nothing is not a camera that detects nothing


@dataclass(slots=True)
class Signal:
    """A rule's verdict on a subject: raise (or escalate) an alert, or resolve it."""

    action: Literal["raise", "resolve"]
    rule: str
    rule_type: str
    alert: str
    severity: str
    target: Target
    ts: int
    cause: str  # the triggering message id, or a timer's name: alert ids derive from it
    summary: str = ""
    why: dict[str, Any] = field(default_factory=dict)
    evidence: list[str] = field(default_factory=list)
    subject: str | None = None  # defaults to the target's subject
    # When it happened: the causing message's own `ts`, or when a timed condition began. With
    # `cause` it makes the alert id, so the same message gives the same id whenever it is
    # processed (a redelivery after a crash). None: the engine fills it in from the message.
    at: int | None = None

    @property
    def key(self) -> str:
        return f"{self.subject or self.target.subject}|{self.alert}"

    @property
    def happened(self) -> int:
        return self.ts if self.at is None else self.at


@dataclass(slots=True)
class Note:
    """A recorded happening that is not an alert (a fall cancelled in time, a repeat press)."""

    type: str
    target: Target
    ts: int
    cause: str
    detail: dict[str, Any] = field(default_factory=dict)
    at: int | None = None  # as Signal.at: with `cause`, what the note's id derives from

    @property
    def happened(self) -> int:
        return self.ts if self.at is None else self.at


Output = list[Signal | Note]
P = TypeVar("P", bound=RuleParams)


class Rule:
    """One configured rule over its targets. Subclasses override the hooks they need.

    Time is wall milliseconds from the engine's clock, passed in as `now`; a rule never reads a
    clock itself, so a scenario can run a week in a second.
    """

    type_key: ClassVar[str]
    Params: ClassVar[type[RuleParams]]
    summary: ClassVar[str] = ""
    auto_resolve: bool = False  # the alert resolves itself when the condition clears
    # Telemetry fields and events the rule reads; the engine routes only those to it.
    fields: frozenset[str] = frozenset()
    events: frozenset[str] = frozenset()
    wants_all_readings: ClassVar[bool] = False
    tz: dt.tzinfo = dt.UTC  # the site's time zone, for rules that know the time of day

    def __init__(
        self, params: RuleParams, targets: list[Target], states: Mapping[str, DeviceState]
    ) -> None:
        self.params = params
        self.targets = {t.device: t for t in targets}
        self.states = states

    @property
    def id(self) -> str:
        return self.params.id

    def start(self, now: int) -> None:
        """Called once with the engine's start time (silence counts from start-up)."""

    def on_reading(self, target: Target, reading: Reading, now: int) -> Output:
        return []

    def on_event(self, target: Target, event: Event, now: int) -> Output:
        return []

    def on_offline(self, target: Target, offline: bool, now: int) -> Output:
        return []

    def tick(self, now: int) -> Output:
        return []

    def next_deadline(self) -> int | None:
        return None

    def signal(
        self,
        action: Literal["raise", "resolve"],
        target: Target,
        now: int,
        cause: str,
        *,
        severity: str | None = None,
        summary: str = "",
        why: dict[str, Any] | None = None,
        evidence: Iterable[str] = (),
        subject: str | None = None,
        at: int | None = None,
    ) -> Signal:
        return Signal(
            action=action,
            rule=self.id,
            rule_type=self.type_key,
            alert=self.params.alert,
            severity=severity or self.params.severity,
            target=target,
            ts=now,
            cause=cause,
            summary=summary,
            why={"rule": self.id, "type": self.type_key, **(why or {})},
            evidence=list(evidence),
            subject=subject,
            at=at,
        )

    # --- state that survives a restart (rules with none need not override) -----------------

    def dump_state(self) -> Any:
        return None

    def load_state(self, data: Any) -> None:
        return None


RULE_TYPES: dict[str, type[Rule]] = {}
R = TypeVar("R", bound=type[Rule])


def register(cls: R) -> R:
    """Class decorator: make a rule type available to rule files by its `type_key`."""
    if cls.type_key in RULE_TYPES:
        raise RuntimeError(f"rule type {cls.type_key!r} registered twice")
    RULE_TYPES[cls.type_key] = cls
    return cls


def severity_max(a: str, b: str) -> str:
    return a if SEVERITY_RANK[a] >= SEVERITY_RANK[b] else b


Factory = Callable[[RuleParams, list[Target], Mapping[str, DeviceState]], Rule]
