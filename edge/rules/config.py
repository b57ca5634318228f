"""Which rules run on which devices: profile defaults, then the site's rule file on top.

A profile's `rules:` are its kind's defaults, and every event with an `alert:` is an
`event_alert` rule unless a default rule already handles that event. The site's rule file
(`rules.file` in the site config) may switch rules off, override their parameters and add its
own. Every problem is refused at load with the file, the line and the reason.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator

from edge.rules import (  # noqa: F401  (importing a rule module registers its types)
    events,
    meters,
    missing,
    suppression,
    thresholds,
    wearable,
    welfare,
)
from edge.rules.base import RULE_TYPES, RuleParams
from edge.rules.lines import LinedYaml
from edge.rules.residents import KNOWN_TAGS, Resident
from shouwang.config import ConfigError, Strict
from shouwang.profiles import PROFILES_DIR, DeviceProfile

# Fields (params) whose value names a telemetry field or an event of the rule's kinds.
FIELD_KEYS = ("field", "charging_field")
EVENT_KEYS = ("event", "cancel_event", "clear_event")


class RulesSettings(Strict):
    file: Path | None = Field(
        None, description="Site rule file (YAML): disable, override and add rules"
    )
    timezone: str = Field(
        "Asia/Shanghai", description="IANA time zone for time-of-day rules (night, routine)"
    )

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(f"unknown time zone {value!r}") from err
        return value


class RuleFile(Strict):
    disable: list[str] = Field(default_factory=list, description="Rule ids switched off")
    override: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Rule id → parameters that replace the defaults"
    )
    rules: list[dict[str, Any]] = Field(default_factory=list, description="The site's own rules")


@dataclass(frozen=True, slots=True)
class Binding:
    """What the rules need of a site device binding (edge.config.DeviceBinding has these)."""

    id: str
    profile: str
    resident: str | None
    location: str | None
    parent: str


@dataclass(slots=True)
class Configured:
    params: RuleParams
    origin: str  # where it was defined, for errors and the docs


def parse_params(data: Mapping[str, Any]) -> RuleParams:
    """Validate one rule's parameters with its type's model; ValueError/ValidationError if bad."""
    type_ = data.get("type")
    cls = RULE_TYPES.get(type_) if isinstance(type_, str) else None
    if cls is None:
        raise KeyError(f"unknown rule type {type_!r} (known: {', '.join(sorted(RULE_TYPES))})")
    return cls.Params.model_validate(dict(data))


def profile_rules(profiles: Mapping[str, DeviceProfile]) -> dict[str, Configured]:
    """Every profile's default rules, ids prefixed with the kind (`wearable.heart_rate`)."""
    out: dict[str, Configured] = {}
    for kind, profile in profiles.items():
        source = f"{PROFILES_DIR / kind}.yaml"
        handled: set[str] = set()
        for i, raw in enumerate(profile.rules):
            data = {**raw, "id": f"{kind}.{raw.get('id', i)}", "kinds": [kind]}
            try:
                params = parse_params(data)
            except (KeyError, ValidationError) as err:
                raise ConfigError(f"{source}: rules[{i}]: {_reason(err)}") from err
            _check_names(
                params,
                {kind: profile},
                lambda key, msg, i=i, source=source: ConfigError(
                    f"{source}: rules[{i}].{'.'.join(map(str, key))}: {msg}"
                ),
            )
            out[params.id] = Configured(params, source)
            handled |= {getattr(params, k) for k in ("event",) if hasattr(params, k)}
        for name, spec in profile.alerting_events.items():
            if name in handled:
                continue
            params = parse_params(
                {"id": f"{kind}.{name}", "type": "event_alert", "event": name,
                 "alert": spec.type, "severity": spec.severity, "kinds": [kind]}
            )
            out[params.id] = Configured(params, f"{source} (events.{name}.alert)")
    return out


# Rules over more than one kind, so in no one profile: site defaults, overridable like the rest.
BUILTIN_RULES: list[dict[str, Any]] = [
    {"id": "welfare", "type": "welfare", "alert": "welfare", "severity": "high",
     "kinds": ["water_meter", "door_contact", "wearable"], "tags": ["living_alone"]},
    {"id": "device_offline", "type": "device_offline", "alert": "device_offline",
     "severity": "medium"},
]


def builtin_rules(profiles: Mapping[str, DeviceProfile]) -> dict[str, Configured]:
    out: dict[str, Configured] = {}
    for raw in BUILTIN_RULES:
        kinds = [k for k in raw.get("kinds", sorted(profiles)) if k in profiles]
        params = parse_params({**raw, "kinds": kinds})
        out[params.id] = Configured(params, "edge/rules/config.py (built in)")
    return out


def load_rules(
    settings: RulesSettings,
    profiles: Mapping[str, DeviceProfile],
    bindings: Sequence[Binding],
    residents: Mapping[str, Resident],
) -> list[Configured]:
    """Profile defaults with the site's rule file applied; ConfigError with file:line: reason."""
    rules = {**profile_rules(profiles), **builtin_rules(profiles)}
    if settings.file is None:
        return [c for c in rules.values() if c.params.enabled]
    doc = LinedYaml(settings.file)
    if not isinstance(doc.data, dict):
        raise doc.error((), "a rule file is a mapping with disable, override and rules")
    try:
        spec = RuleFile.model_validate(doc.data)
    except ValidationError as err:
        raise doc.validation_error((), err) from err
    for i, rid in enumerate(spec.disable):
        if rid not in rules:
            raise doc.error(("disable", i), f"no rule {rid!r} to disable ({_known(rules)})")
        rules[rid] = Configured(rules[rid].params.model_copy(update={"enabled": False}),
                                rules[rid].origin)
    for rid, changes in spec.override.items():
        if rid not in rules:
            raise doc.error(("override", rid), f"no rule {rid!r} to override ({_known(rules)})")
        for key in ("id", "type"):
            if key in changes:
                raise doc.error(("override", rid, key), f"{key} cannot be overridden")
        merged = {**rules[rid].params.model_dump(exclude_unset=True), **changes}
        try:
            params = parse_params(merged)
        except ValidationError as err:
            raise doc.validation_error(("override", rid), err) from err
        rules[rid] = Configured(params, f"{settings.file} (override)")
    for i, raw in enumerate(spec.rules):
        loc: tuple[str | int, ...] = ("rules", i)
        try:
            params = parse_params(raw)
        except KeyError as err:
            raise doc.error((*loc, "type"), err.args[0]) from err
        except ValidationError as err:
            raise doc.validation_error(loc, err) from err
        if params.id in rules:
            raise doc.error((*loc, "id"), f"duplicate rule id {params.id!r}")
        _check_refs(
            params, profiles, bindings, residents, lambda k, m, loc=loc: doc.error((*loc, *k), m)
        )
        rules[params.id] = Configured(params, str(settings.file))
    return [c for c in rules.values() if c.params.enabled]


def _check_refs(
    params: RuleParams,
    profiles: Mapping[str, DeviceProfile],
    bindings: Sequence[Binding],
    residents: Mapping[str, Resident],
    error: Any,
) -> None:
    by_id = {b.id: b for b in bindings}
    for i, device in enumerate(params.devices):
        if device not in by_id:
            raise error(("devices", i), f"no device {device!r} in the site config")
    for i, rid in enumerate(params.residents):
        if rid not in residents:
            raise error(("residents", i), f"no resident {rid!r} in the site config")
    for i, tag in enumerate(params.tags):
        if tag not in KNOWN_TAGS:
            known = ", ".join(sorted(KNOWN_TAGS))
            raise error(("tags", i), f"unknown tag {tag!r} (known: {known})")
    for i, kind in enumerate(params.kinds):
        if kind not in profiles:
            raise error(("kinds", i), f"unknown device kind {kind!r}")
    if not params.kinds and not params.devices:
        raise error(("kinds",), "say which devices: kinds, devices or both")
    kinds = set(params.kinds) | {by_id[d].profile for d in params.devices}
    _check_names(params, {k: profiles[k] for k in kinds}, error)


def _check_names(params: RuleParams, profiles: Mapping[str, DeviceProfile], error: Any) -> None:
    """A rule's field and event names exist in every kind it applies to."""
    for key in FIELD_KEYS:
        name = getattr(params, key, None)
        if name is None:
            continue
        for kind, profile in profiles.items():
            if name not in profile.fields:
                raise error((key,), f"{kind} has no field {name!r}")
    for key in EVENT_KEYS:
        name = getattr(params, key, None)
        if name is None:
            continue
        for kind, profile in profiles.items():
            if name not in profile.events:
                raise error((key,), f"{kind} has no event {name!r}")


def _reason(err: Exception) -> str:
    if isinstance(err, ValidationError):
        e = err.errors()[0]
        key = ".".join(str(p) for p in e["loc"])
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        return f"{key}: {msg}" if key else msg
    return str(err.args[0]) if err.args else str(err)


def _known(rules: Mapping[str, Configured]) -> str:
    names = sorted(rules)
    return "known: " + ", ".join(names[:12]) + (" …" if len(names) > 12 else "")
