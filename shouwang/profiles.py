"""Device profiles: YAML data that says what a device kind reports and which events alert."""

from __future__ import annotations

import math
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from shouwang.config import ConfigError, Strict, load_yaml
from shouwang.registers import ModbusMap

PROFILES_DIR = Path(__file__).resolve().parent.parent / "device_profiles"

Severity = Literal["critical", "high", "medium", "low", "info"]
SEVERITIES: tuple[str, ...] = ("critical", "high", "medium", "low", "info")
# Alert types that are life-safety: delivered at least once, never evicted, first in a backlog.
LIFE_SAFETY_TYPES = frozenset(
    {"sos", "fall", "gas_leak", "smoke", "welfare", "thrown_object", "watchlist_hit"}
)


class FieldSpec(Strict):
    type: Literal["int", "float", "bool", "str"] = Field(description="Value type")
    unit: str | None = Field(None, description="Unit of measure, e.g. bpm, %, m³")
    min: float | None = Field(None, description="Lowest valid value (inclusive)")
    max: float | None = Field(None, description="Highest valid value (inclusive)")
    choices: list[str] | None = Field(None, description="Allowed values for a str field")
    description: str = Field("", description="What the field means")

    @model_validator(mode="after")
    def _range(self) -> FieldSpec:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        return self

    def check(self, value: Any) -> str | None:
        """None when `value` is valid, else why it is not."""
        if self.type == "bool":
            ok = isinstance(value, bool)
        elif self.type == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif self.type == "float":
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if ok and not math.isfinite(value):
                return f"{value!r} is not a finite number"
        else:
            ok = isinstance(value, str) and len(value) <= 256
        if not ok:
            return f"expected {self.type}, got {type(value).__name__}"
        if self.min is not None and value < self.min:
            return f"{value!r} is below the minimum {self.min:g}"
        if self.max is not None and value > self.max:
            return f"{value!r} is above the maximum {self.max:g}"
        if self.choices is not None and value not in self.choices:
            return f"{value!r} is not one of {self.choices}"
        return None


class AlertSpec(Strict):
    type: str = Field(description="Alert type raised by this event, e.g. sos")
    severity: Severity = Field(description="Severity of the alert")


class EventSpec(Strict):
    description: str = Field("", description="What the event means")
    fields: dict[str, FieldSpec] = Field(default_factory=dict, description="Event data fields")
    alert: AlertSpec | None = Field(None, description="Alert raised directly by this event")
    record: bool = Field(
        False,
        description="Send every such event to the cloud as it is (an `event` envelope), to be "
        "kept there: a camera's gap ledger, for instance",
    )


class DeviceProfile(Strict):
    kind: str = Field(description="Device kind; the profile file is named after it")
    description: str = Field(description="What the device is")
    report_interval_s: int = Field(gt=0, description="Expected interval between reports")
    liveness_tolerance: float = Field(
        3.0, ge=1.0, description="Reports may be this many intervals late before data is stale"
    )
    fields: dict[str, FieldSpec] = Field(default_factory=dict, description="Telemetry fields")
    events: dict[str, EventSpec] = Field(default_factory=dict, description="Events it sends")
    modbus: ModbusMap | None = Field(
        None, description="Register map, for meters the gateway polls over Modbus"
    )
    rules: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Default rules for this kind; validated by the edge's rule engine "
        "(edge/rules), documented in docs/rules.md",
    )

    @model_validator(mode="after")
    def _modbus_fields_declared(self) -> DeviceProfile:
        if self.modbus is None:
            return self
        for name, reg in self.modbus.fields.items():
            spec = self.fields.get(name)
            if spec is None:
                raise ValueError(f"modbus.fields.{name}: not declared in the profile's fields")
            # A label needs a str field and a number a numeric one, or every poll would fail.
            if (reg.enum is not None) != (spec.type == "str"):
                raise ValueError(
                    f"modbus.fields.{name}: a {spec.type} field needs "
                    + ("a number register" if spec.type != "str" else "an enum register")
                )
            if reg.enum is not None and spec.choices is not None:
                extra = sorted(set(reg.enum.values()) - set(spec.choices))
                if extra:
                    raise ValueError(f"modbus.fields.{name}: enum labels {extra} not in choices")
        return self

    @cached_property
    def alerting_events(self) -> dict[str, AlertSpec]:
        return {name: e.alert for name, e in self.events.items() if e.alert is not None}


def load_profiles(directory: Path = PROFILES_DIR) -> dict[str, DeviceProfile]:
    """Every `*.yaml` in `directory`, keyed by kind; a bad file raises ConfigError naming it."""
    profiles: dict[str, DeviceProfile] = {}
    for path in sorted(directory.glob("*.yaml")):
        profile = load_yaml(path, DeviceProfile)
        if profile.kind != path.stem:
            raise ConfigError(f"{path}: kind: {profile.kind!r} must match the file name")
        profiles[profile.kind] = profile
    if not profiles:
        raise ConfigError(f"{directory}: no device profiles found")
    return profiles
