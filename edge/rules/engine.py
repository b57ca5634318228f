"""The rule engine: routes readings, events and device states to the rules that read them.

Pure and clock-driven: the daemon feeds it and asks `next_deadline()` when to call `tick()`, in
the same style as liveness; nothing here does I/O except `save()`, which writes the state file
off the event loop. See docs/rules.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import zoneinfo
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from edge.rules.base import RULE_TYPES, DeviceState, Note, Output, Rule, Signal, Target
from edge.rules.book import AlertBook, CloudWord, Notice
from edge.rules.config import Binding, Configured, RulesSettings, load_rules
from edge.rules.residents import Resident
from edge.rules.suppression import BROKER, DeviceOffline
from shouwang.clock import Clock
from shouwang.profiles import DeviceProfile
from shouwang.records import Alert, Event, Reading

if TYPE_CHECKING:
    from edge.config import EdgeConfig
    from edge.liveness import Transition

log = logging.getLogger(__name__)
STATE_VERSION = 1
LAZY_SAVE_MS = 60_000  # learned routines are saved at most once a minute; alert state at once


@dataclass(frozen=True, slots=True)
class RuleFailure:
    """A rule raised (a bug): the other rules still ran; the message must reach a person."""

    rule: str
    error: str


@dataclass(slots=True)
class RuleOutput:
    """What the rules decided: alerts (new, escalated, repeated) and notices (resolved,
    cancelled), and any rule that failed on the way."""

    alerts: list[Alert] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)
    failures: list[RuleFailure] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.alerts or self.notices or self.failures)

    def add(self, other: RuleOutput) -> None:
        self.alerts += other.alerts
        self.notices += other.notices
        self.failures += other.failures


NOTHING = RuleOutput()  # returned when nothing happened (most readings); never mutate it


def bindings_of(config: EdgeConfig) -> list[Binding]:
    out = []
    for d in config.devices:
        link = d.modbus or d.cjt188
        parent = f"bus:{link.host}:{link.port}" if link is not None else BROKER
        out.append(Binding(d.id, d.profile, d.resident, d.location, parent))
    return out


class RuleEngine:
    def __init__(
        self,
        site: str,
        bindings: Sequence[Binding],
        profiles: Mapping[str, DeviceProfile],
        clock: Clock,
        *,
        residents: Sequence[Resident] = (),
        settings: RulesSettings | None = None,
        state_path: Path | None = None,
    ) -> None:
        settings = settings or RulesSettings()
        self.site = site
        self.clock = clock
        self.tz = zoneinfo.ZoneInfo(settings.timezone)
        self.residents = {r.id: r for r in residents}
        configured = load_rules(settings, profiles, bindings, self.residents)
        self.states: dict[str, DeviceState] = {b.id: DeviceState() for b in bindings}
        self.book = AlertBook(site)
        self.rules: dict[str, Rule] = {}
        # Per device: (rule, target, the fields it reads or None for every reading).
        self._readers: dict[str, list[tuple[Rule, Target, frozenset[str] | None]]] = {
            b.id: [] for b in bindings
        }
        self._listeners: dict[str, dict[str, list[tuple[Rule, Target]]]] = {}
        self._offline_rules: list[DeviceOffline] = []
        self._targets: dict[str, Target] = {}
        self._offline_dims: dict[str, set[str]] = {}
        for b in bindings:
            resident = self.residents.get(b.resident) if b.resident else None
            if b.resident and resident is None:
                resident = Resident(id=b.resident)  # bound but not described: no tags
            self._targets[b.id] = Target(b.id, b.profile, resident, b.location, b.parent)
        for c in configured:
            self._add_rule(c)
        # Each rule's next deadline, recomputed only for rules something happened to since
        # (`_stale`): the daemon asks after every batch whether a timer must be re-armed.
        self._due: dict[str, int | None] = {}
        self._stale: set[str] = set(self.rules)
        self._rules_of: dict[str, list[str]] = {b.id: [] for b in bindings}
        for rid, rule in self.rules.items():
            for device in rule.targets:
                self._rules_of[device].append(rid)
        self.state_path = state_path
        self._urgent = self._lazy = False
        self._last_save = clock.now_ms()
        self._save_lock = asyncio.Lock()  # ingest and the watch loop both save
        self.counts = {"readings": 0, "events": 0, "signals": 0}
        now = clock.now_ms()
        if state_path is not None and state_path.exists():
            self._load(state_path)
        for rule in self.rules.values():
            rule.start(now)

    @classmethod
    def for_site(
        cls,
        config: EdgeConfig,
        profiles: Mapping[str, DeviceProfile],
        clock: Clock,
        *,
        load_state: bool = True,
    ) -> RuleEngine:
        """The engine for a site config; `load_state=False` only validates (edge check)."""
        return cls(
            config.site,
            bindings_of(config),
            profiles,
            clock,
            residents=config.residents,
            settings=config.rules,
            state_path=config.data_dir / "rules-state.json" if load_state else None,
        )

    def _add_rule(self, c: Configured) -> None:
        p = c.params
        targets = [t for t in self._targets.values() if _selected(p, t)]
        rule = RULE_TYPES[p.type](p, targets, self.states)
        rule.tz = self.tz
        if isinstance(rule, DeviceOffline):
            rule.site = self.site
            self._offline_rules.append(rule)
        self.rules[p.id] = rule
        for t in targets:
            if rule.fields or rule.wants_all_readings:
                wants = None if rule.wants_all_readings else rule.fields
                self._readers[t.device].append((rule, t, wants))
            for name in rule.events:
                self._listeners.setdefault(t.device, {}).setdefault(name, []).append((rule, t))

    # --- inputs ------------------------------------------------------------------------------

    def observe_reading(self, reading: Reading) -> RuleOutput:
        readers = self._readers.get(reading.device)
        if readers is None:
            return NOTHING
        self.counts["readings"] += 1
        values = reading.values
        if "worn" in values or "charging" in values:
            self._stale.update(self._rules_of[reading.device])  # rules that read the state
            st = self.states[reading.device]
            worn = values.get("worn")
            if worn is not None:
                st.worn = bool(worn)
            charging = values.get("charging")
            if charging is not None:
                st.charging = bool(charging)
        now = self.clock.now_ms()
        out: Output = []
        stale = self._stale
        failed: list[RuleFailure] = []
        for rule, target, wants in readers:
            if wants is None or not wants.isdisjoint(values):
                try:
                    out += rule.on_reading(target, reading, now)
                except Exception as err:
                    failed.append(_failure(rule, err))
                stale.add(rule.params.id)
        self._lazy = True
        if not (out or failed):
            return NOTHING
        return self._apply(out, reading.id, reading.ts, failed)

    def observe_event(self, event: Event) -> RuleOutput:
        st = self.states.get(event.device)
        if st is None:
            return NOTHING
        self.counts["events"] += 1
        if event.name in ("removed", "stream_lost", "stream_restored"):
            st.worn = False if event.name == "removed" else st.worn
            if event.name != "removed":
                st.stream_lost = event.name == "stream_lost"
            self._stale.update(self._rules_of[event.device])
        now = self.clock.now_ms()
        out: Output = []
        failed: list[RuleFailure] = []
        for rule, target in self._listeners.get(event.device, {}).get(event.name, []):
            try:
                out += rule.on_event(target, event, now)
            except Exception as err:
                failed.append(_failure(rule, err))
            self._stale.add(rule.params.id)
            self._urgent = True  # a pending cancel window must survive a restart
        return self._apply(out, event.id, event.ts, failed)

    def observe_transitions(self, changes: Iterable[Transition]) -> RuleOutput:
        """Liveness transitions: transport disconnected or data stale make a device offline.

        A device is offline from the transition's own time (when liveness saw it), not from
        when the rules are told: polled meters' transitions wait for the rules lock, and an
        offline grace counted from the later moment would run late by that wait."""
        out: Output = []
        failed: list[RuleFailure] = []
        for t in changes:
            target = self._targets.get(t.device)
            if target is None or t.dimension not in ("transport", "data"):
                continue
            dims = self._offline_dims.setdefault(t.device, set())
            was = bool(dims)
            if t.new in ("disconnected", "stale"):
                dims.add(t.dimension)
            else:
                dims.discard(t.dimension)
            offline = bool(dims)
            if offline == was:
                continue
            self.states[t.device].offline = offline
            self._stale.update(self._rules_of[t.device])
            for rule in self._offline_rules:
                if t.device in rule.targets:
                    try:
                        out += rule.on_offline(target, offline, t.at_ms)
                    except Exception as err:
                        failed.append(_failure(rule, err))
        return self._apply(out, failed=failed)

    def broker_changed(self, up: bool) -> RuleOutput:
        """The gateway's own broker connection: while it is down no device can reach us."""
        now = self.clock.now_ms()
        out: Output = []
        failed: list[RuleFailure] = []
        for rule in self._offline_rules:
            try:
                out += rule.broker_changed(up, now)
            except Exception as err:
                failed.append(_failure(rule, err))
            self._stale.add(rule.params.id)
        return self._apply(out, failed=failed)

    def tick(self) -> RuleOutput:
        """Every rule whose deadline has come: a fall's cancel window ended, a threshold's
        minimum duration, a silence, a clear time."""
        self._refresh()
        now = self.clock.now_ms()
        out: Output = []
        failed: list[RuleFailure] = []
        for rid, due in self._due.items():
            if due is not None and due <= now:
                try:
                    out += self.rules[rid].tick(now)
                except Exception as err:
                    failed.append(_failure(self.rules[rid], err))
                self._stale.add(rid)
        return self._apply(out, failed=failed)

    def next_deadline(self) -> int | None:
        """Wall-clock millisecond at which some rule wants a tick."""
        self._refresh()
        return min((d for d in self._due.values() if d is not None), default=None)

    def _refresh(self) -> None:
        for rid in self._stale:
            self._due[rid] = self.rules[rid].next_deadline()
        self._stale.clear()

    # --- outputs -----------------------------------------------------------------------------

    def _apply(
        self, out: Output, message_id: str | None = None, message_ts: int = 0,
        failed: list[RuleFailure] | None = None,
    ) -> RuleOutput:
        """Signals to the book, notes to notices. What a message caused happened at the
        message's own time: with its id, that makes the alert's id (see AlertBook)."""
        result = RuleOutput(failures=failed or [])
        for item in out:
            if item.at is None and item.cause == message_id:
                item.at = message_ts
            if isinstance(item, Signal):
                self.counts["signals"] += 1
                rule = self.rules[item.rule]
                for made in self.book.apply(
                    item, auto_resolve=rule.auto_resolve, repeat_after_s=rule.params.repeat_after_s
                ):
                    if isinstance(made, Alert):
                        result.alerts.append(made)
                    else:
                        result.notices.append(made)
            elif isinstance(item, Note):
                result.notices.append(self.book.note(item))
        if result or self.book.dirty:
            self._urgent = True
        return result

    def follow(self, word: CloudWord, *, adopt: bool) -> str | None:
        """The cloud's word on an alert (see AlertBook.follow); saved at the next save."""
        change = self.book.follow(word, adopt=adopt)
        if change is not None:
            self._urgent = True
        return change

    def snapshot(self) -> dict[str, Any]:
        return {
            "rules": len(self.rules),
            "open_alerts": {k: e.severity for k, e in self.book.open.items()},
            "suppressed": self.book.suppressed,
            "closed_by_cloud": self.book.closed_by_cloud,
            **self.counts,
        }

    # --- persistence -------------------------------------------------------------------------

    def _load(self, path: Path) -> None:
        try:
            data = orjson.loads(path.read_bytes())
            if data.get("version") != STATE_VERSION:
                raise ValueError(f"version {data.get('version')!r}")
            self.book.load(data.get("book", []))
            for rid, state in data.get("rules", {}).items():
                if rid in self.rules:
                    self.rules[rid].load_state(state)
                    self._stale.add(rid)
        except (OSError, ValueError, TypeError, KeyError) as err:
            # A corrupt state file costs re-learning and maybe one repeated alert, not start-up.
            log.error("rules state %s unreadable, starting fresh: %s", path, err)
            self.book = AlertBook(self.site)

    def state(self) -> dict[str, Any]:
        """What `save` writes, as live objects: serialise it at once (orjson), keep no copy."""
        rules = {rid: s for rid, r in self.rules.items() if (s := r.dump_state()) is not None}
        return {"version": STATE_VERSION, "book": self.book.dump(), "rules": rules}

    # Told of a state file that could not be written (the daemon hands it to the disk guard,
    # which releases the disk reserve when the disk is full).
    on_save_failed: Callable[[OSError], object] | None = None
    _save_failing = False
    # Set while rows the state implies are not stored (nothing could be written): saving it
    # then would make a redelivered message fold into an alert the outbox never had.
    save_held = False

    async def save(self, *, force: bool = False) -> None:
        """Write the state file if alert state changed, or learned state a minute ago.

        A write that fails (a full disk, an I/O error) is logged once, the state stays in
        memory and is written at the next save; it never raises. Until then a crash would
        restart from the older file: a redelivered message raises its alert again under the
        same id, which the outbox and the cloud store once."""
        if self.state_path is None:
            return
        if self.save_held:
            self._urgent = True  # saved when the hold ends
            return
        now = self.clock.now_ms()
        if not (force or self._urgent or (self._lazy and now - self._last_save >= LAZY_SAVE_MS)):
            return
        async with self._save_lock:
            # Snapshot inside the lock, so the file never goes back to an older state.
            data = orjson.dumps(self.state())
            self._urgent = self._lazy = False
            self.book.dirty = False
            self._last_save = now
            try:
                await asyncio.to_thread(_write_atomic, self.state_path, data)
            except OSError as err:
                self._urgent = True  # written again at the next save, whatever changes
                if not self._save_failing:
                    self._save_failing = True
                    log.error(
                        "rules state %s not written (%s); kept in memory, written again at"
                        " the next save", self.state_path, err,
                    )
                if self.on_save_failed is not None:
                    self.on_save_failed(err)
                return
            if self._save_failing:
                self._save_failing = False
                log.warning("rules state %s written again", self.state_path)


def _failure(rule: Rule, err: Exception) -> RuleFailure:
    log.exception("rule %s (%s) failed", rule.params.id, rule.type_key)
    return RuleFailure(rule.params.id, f"{type(err).__name__}: {err}"[:500])


def _write_atomic(path: Path, data: bytes) -> None:
    """Write a new copy, then rename it over the old one: a failure leaves the old file, and
    what the half-written copy took goes back to the disk."""
    tmp = path.with_suffix(".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _selected(p: Any, t: Target) -> bool:
    if p.kinds and t.kind not in p.kinds:
        return False
    if p.devices and t.device not in p.devices:
        return False
    if p.residents and (t.resident is None or t.resident.id not in p.residents):
        return False
    return not p.tags or (t.resident is not None and bool(set(p.tags) & set(t.resident.tags)))

