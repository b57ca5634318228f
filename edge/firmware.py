"""Firmware configs: the settings pushed to each device model and firmware, and the push to it."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from shouwang.clock import Clock
from shouwang.config import ConfigError, Strict, load_yaml
from shouwang.profiles import DeviceProfile
from shouwang.protocol import device_topic

log = logging.getLogger(__name__)

FIRMWARE_DIR = Path(__file__).resolve().parent.parent / "firmware_configs"
CONFIG_APPLIED_EVENT = "config_applied"

# --- versions ------------------------------------------------------------------------------

Version = tuple[int, ...]
_VERSION_RE = re.compile(r"^v?(\d{1,6}(?:\.\d{1,6}){0,3})(?:[-+][0-9A-Za-z.+-]{1,32})?\Z")
_CLAUSE_RE = re.compile(r"^(>=|<=|==|>|<)?\s*(\d{1,6}(?:\.\d{1,6}){0,3})\Z")


def parse_version(text: str) -> Version | None:
    """`2.3.1`, `v2.3` or `2.3.1-rc1+b7` → (2, 3, 1); a suffix is ignored; None if unreadable."""
    m = _VERSION_RE.match(text.strip())
    return _norm(tuple(int(p) for p in m.group(1).split("."))) if m else None


def _norm(v: Version) -> Version:
    # 2, 2.0 and 2.0.0 are one version.
    n = len(v)
    while n > 1 and v[n - 1] == 0:
        n -= 1
    return v[:n]


@dataclass(frozen=True, slots=True)
class VersionRange:
    """An interval of versions; `None` bounds are open-ended."""

    low: Version | None = None
    low_inclusive: bool = True
    high: Version | None = None
    high_inclusive: bool = False

    @classmethod
    def parse(cls, text: str) -> VersionRange:
        """`2.3` (every 2.3.x), `==2.3.1`, or comparisons joined by commas: `>=2.0,<3`."""
        result = cls()
        clauses = [c.strip() for c in text.split(",")]
        for clause in clauses:
            m = _CLAUSE_RE.match(clause)
            if m is None:
                raise ValueError(
                    f"{clause!r} is not a version or a comparison (>=, >, <=, <, ==) with one"
                )
            op, parts = m.group(1), tuple(int(p) for p in m.group(2).split("."))
            v = _norm(parts)
            if op is None:
                # A bare version is a prefix: 2.3 covers 2.3, 2.3.0 and 2.3.9, not 2.4.
                upper = _norm((*parts[:-1], parts[-1] + 1))
                bound = cls(v, True, upper, False)
            elif op == "==":
                bound = cls(v, True, v, True)
            elif op in (">=", ">"):
                bound = cls(low=v, low_inclusive=op == ">=", high=None)
            else:
                bound = cls(low=None, high=v, high_inclusive=op == "<=")
            result = result.intersect(bound)
        if result.empty:
            raise ValueError(f"{text!r} matches no version")
        return result

    def intersect(self, other: VersionRange) -> VersionRange:
        low, low_inc = self.low, self.low_inclusive
        if other.low is not None and (low is None or other.low > low):
            low, low_inc = other.low, other.low_inclusive
        elif other.low is not None and other.low == low:
            low_inc = low_inc and other.low_inclusive
        high, high_inc = self.high, self.high_inclusive
        if other.high is not None and (high is None or other.high < high):
            high, high_inc = other.high, other.high_inclusive
        elif other.high is not None and other.high == high:
            high_inc = high_inc and other.high_inclusive
        return VersionRange(low, low_inc, high, high_inc)

    @property
    def empty(self) -> bool:
        # Versions are dense enough (2.0.0.1 lies between 2 and 2.0.1) that low < high suffices.
        if self.low is None or self.high is None:
            return False
        return self.low > self.high or (
            self.low == self.high and not (self.low_inclusive and self.high_inclusive)
        )

    def __contains__(self, v: object) -> bool:
        if not isinstance(v, tuple):
            return False
        if self.low is not None and (v < self.low or (v == self.low and not self.low_inclusive)):
            return False
        return not (
            self.high is not None
            and (v > self.high or (v == self.high and not self.high_inclusive))
        )


# --- settings, one model per device kind ---------------------------------------------------


class DeviceSettings(Strict):
    """Settings every device may take. Strict types: `true` is not a number, `"60"` is not 60."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    report_interval_s: int | None = Field(
        None, ge=10, le=86400, description="How often the device reports telemetry or heartbeat"
    )
    low_battery_pct: int | None = Field(
        None, ge=5, le=50, description="Battery level at which the device warns locally"
    )


class WearableSettings(DeviceSettings):
    heart_rate_high_bpm: int | None = Field(
        None, ge=60, le=220, description="Heart rate above which the wearable alarms"
    )
    heart_rate_low_bpm: int | None = Field(
        None, ge=25, le=100, description="Heart rate below which the wearable alarms"
    )
    spo2_low_pct: int | None = Field(
        None, ge=70, le=99, description="Blood oxygen below which the wearable alarms"
    )
    fall_sensitivity: Literal["low", "medium", "high"] | None = Field(
        None, description="Fall detector sensitivity"
    )
    fall_cancel_window_s: int | None = Field(
        None, ge=0, le=120, description="Time the wearer has to cancel a detected fall"
    )
    sos_debounce_ms: int | None = Field(
        None, ge=0, le=5000, description="Presses closer than this count as one SOS"
    )
    location_interval_s: int | None = Field(
        None, ge=30, le=3600, description="How often the position is sampled"
    )

    @model_validator(mode="after")
    def _heart_rate_band(self) -> WearableSettings:
        low, high = self.heart_rate_low_bpm, self.heart_rate_high_bpm
        if low is not None and high is not None and low >= high:
            raise ValueError(f"heart_rate_low_bpm {low} must be below heart_rate_high_bpm {high}")
        return self


class EmergencyButtonSettings(DeviceSettings):
    long_press_ms: int | None = Field(
        None, ge=1000, le=10000, description="Hold time that makes a press a long press"
    )
    press_debounce_ms: int | None = Field(
        None, ge=0, le=5000, description="Presses closer than this count as one"
    )
    buzzer: bool | None = Field(None, description="Sound the buzzer to confirm a press")


class WaterMeterSettings(DeviceSettings):
    leak_flow_m3h: float | None = Field(
        None, gt=0, le=20, description="Flow above which a continuous draw counts as a leak"
    )
    leak_duration_s: int | None = Field(
        None, ge=60, le=86400, description="How long the flow must last to count as a leak"
    )
    valve_auto_close: bool | None = Field(None, description="Close the valve on a leak")


# Adding a device kind with its own settings is one class and one line here; a kind not listed
# takes only the common settings.
SETTINGS_MODELS: dict[str, type[DeviceSettings]] = {
    "wearable": WearableSettings,
    "emergency_button": EmergencyButtonSettings,
    "water_meter": WaterMeterSettings,
}


# --- the config files ----------------------------------------------------------------------


class FirmwareConfig(Strict):
    model: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="Device model, e.g. SW-W1"
    )
    firmware: str = Field(description="A version (a prefix: 2.3 is every 2.3.x) or a range")
    profile: str = Field(description="Device kind (a file name in device_profiles/)")
    config_version: StrictInt | StrictStr = Field(
        description="Version of these settings; the device reports it back once applied"
    )
    description: str = Field("", description="What this config is for")
    settings: dict[str, Any] = Field(
        min_length=1, description="Settings the device applies; checked against the profile kind"
    )

    @field_validator("firmware")
    @classmethod
    def _firmware_range(cls, value: str) -> str:
        VersionRange.parse(value)
        return value

    @field_validator("config_version")
    @classmethod
    def _config_version(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 0:
            raise ValueError("must not be negative")
        if isinstance(value, str) and not 1 <= len(value) <= 64:
            raise ValueError("must be 1 to 64 characters")
        return value

    @cached_property
    def versions(self) -> VersionRange:
        return VersionRange.parse(self.firmware)

    def body(self) -> dict[str, Any]:
        """The body of the `config` envelope on `dev/{id}/config`."""
        return {"config_version": self.config_version, "settings": dict(self.settings)}


def _check_settings(path: Path, cfg: FirmwareConfig) -> dict[str, Any]:
    model = SETTINGS_MODELS.get(cfg.profile, DeviceSettings)
    try:
        parsed = model.model_validate(cfg.settings)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            key = ".".join(str(p) for p in ("settings", *e["loc"]))
            msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
            problems.append(f"{key}: {msg}")
        raise ConfigError(f"{path}: {'; '.join(problems)}") from err
    # Only what the file names is pushed, in the file's order; the device keeps the rest.
    dumped = parsed.model_dump(exclude_unset=True)
    return {key: dumped[key] for key in cfg.settings}


class FirmwareConfigs:
    """Every firmware config, found by device model and the firmware it reports."""

    def __init__(self, configs: Iterable[tuple[str, FirmwareConfig]] = ()) -> None:
        self._by_model: dict[str, list[tuple[str, FirmwareConfig]]] = {}
        for source, cfg in configs:
            for other_source, other in self._by_model.get(cfg.model, []):
                if not cfg.versions.intersect(other.versions).empty:
                    raise ConfigError(
                        f"{source}: model {cfg.model} firmware {cfg.firmware!r} overlaps"
                        f" firmware {other.firmware!r} in {other_source}"
                    )
            self._by_model.setdefault(cfg.model, []).append((source, cfg))

    @classmethod
    def load(
        cls, directory: Path = FIRMWARE_DIR, profiles: Mapping[str, DeviceProfile] | None = None
    ) -> FirmwareConfigs:
        """Every `{profile}/*.yaml` under `directory`; a bad file raises ConfigError naming it.

        With `profiles`, each config must name a known kind and must not slow a device below
        the report interval its profile's liveness check expects.
        """
        loaded: list[tuple[str, FirmwareConfig]] = []
        for path in sorted(directory.rglob("*.yaml")):
            cfg = load_yaml(path, FirmwareConfig)
            if path.parent.name != cfg.profile:
                raise ConfigError(
                    f"{path}: profile: {cfg.profile!r} must match the folder {path.parent.name!r}"
                )
            if not path.stem.startswith(f"{cfg.model}_"):
                raise ConfigError(f"{path}: model: the file name must start with {cfg.model}_")
            settings = _check_settings(path, cfg)
            if profiles is not None:
                _check_against_profile(path, cfg, settings, profiles)
            loaded.append((str(path), cfg.model_copy(update={"settings": settings})))
        configs = cls(loaded)
        log.info("loaded %s firmware configs from %s", len(loaded), directory)
        return configs

    def match(self, model: str, firmware: str) -> FirmwareConfig | None:
        """The config for this model whose range holds `firmware`; None if none or unreadable."""
        version = parse_version(firmware)
        if version is None:
            return None
        for _, cfg in self._by_model.get(model, []):
            if version in cfg.versions:
                return cfg
        return None

    def __iter__(self) -> Iterator[FirmwareConfig]:
        for entries in self._by_model.values():
            for _, cfg in entries:
                yield cfg

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._by_model.values())


def _check_against_profile(
    path: Path,
    cfg: FirmwareConfig,
    settings: Mapping[str, Any],
    profiles: Mapping[str, DeviceProfile],
) -> None:
    profile = profiles.get(cfg.profile)
    if profile is None:
        raise ConfigError(
            f"{path}: profile: unknown profile {cfg.profile!r}"
            f" (known: {', '.join(sorted(profiles))})"
        )
    interval = settings.get("report_interval_s")
    if interval is not None and interval > profile.report_interval_s:
        # A slower device would be declared stale by liveness between two healthy reports.
        raise ConfigError(
            f"{path}: settings.report_interval_s: {interval} is longer than the"
            f" {cfg.profile} profile's report_interval_s {profile.report_interval_s}"
        )


# --- pushing a config and waiting for the device's acknowledgement -------------------------

IssueKind = Literal["no_config", "ack_timeout", "version_mismatch"]
PushState = Literal["idle", "no_config", "pending", "applied", "failed"]


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """A device that needs a person: reported once per device and config."""

    device: str
    kind: IssueKind
    detail: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class PushStep:
    """What one observation asks of the caller.

    `publish`: publish this body on `topic`, retained. `clear`: publish an empty retained
    message on `topic`, so a device on firmware without a config does not get an older
    firmware's settings. `issues`: report them.
    """

    topic: str
    publish: dict[str, Any] | None = None
    clear: bool = False
    issues: tuple[ConfigIssue, ...] = ()


def _same_version(reported: object, expected: int | str) -> bool:
    # A device may echo 3 as "3"; both mean the same config. A bool is never a version.
    if isinstance(reported, bool) or not isinstance(reported, int | str):
        return False
    return str(reported) == str(expected)


class ConfigPush:
    """The push state machine of one device.

    idle → (announces model and firmware) → no_config | applied (already has it) | pending
    pending → (reports the version) applied | (another version applied) failed
            | (ack timeout) failed.
    A new model or firmware starts over; a failed device that later reports the right version
    is applied again.
    """

    def __init__(self, device: str, configs: FirmwareConfigs, ack_timeout_s: float) -> None:
        self.device = device
        self.configs = configs
        self.ack_timeout_s = ack_timeout_s
        self.topic = device_topic(device, "config")
        self.state: PushState = "idle"
        self.model: str | None = None
        self.firmware: str | None = None
        self.target: FirmwareConfig | None = None
        self.deadline: float | None = None
        self.applied_version: int | str | None = None

    def status(self, body: Mapping[str, Any], now: float, now_ms: int) -> PushStep:
        """A status body; with `model` and `firmware` it is an announcement."""
        model, firmware = body.get("model"), body.get("firmware")
        reported = body.get("config_version")
        if isinstance(model, str) and isinstance(firmware, str):
            if (model, firmware) != (self.model, self.firmware):
                return self._announce(model, firmware, reported, now, now_ms)
            if (
                self.target is not None
                and self.state == "applied"
                and reported is not None
                and not _same_version(reported, self.target.config_version)
            ):
                # It lost the config (a reset); send it again and wait once more.
                return self._push(now, "device reports another config after a restart")
            if self.state == "pending" and not _same_version(reported, self._expected()):
                # Just reconnected: the retained config reaches it after this status.
                return PushStep(self.topic)
        if reported is None:
            return PushStep(self.topic)
        return self._ack(reported, now_ms)

    def event(self, name: str, data: Mapping[str, Any], now_ms: int) -> PushStep:
        """An event; only `config_applied` with `config_version` matters here."""
        if name != CONFIG_APPLIED_EVENT or "config_version" not in data:
            return PushStep(self.topic)
        return self._ack(data["config_version"], now_ms)

    def tick(self, now: float, now_ms: int) -> PushStep:
        if self.state != "pending" or self.deadline is None or now < self.deadline:
            return PushStep(self.topic)
        self.state, self.deadline = "failed", None
        return self._issue(
            "ack_timeout",
            f"config_version {self._expected()} not acknowledged within {self.ack_timeout_s:g} s",
            now_ms,
        )

    def _expected(self) -> int | str:
        assert self.target is not None
        return self.target.config_version

    def _announce(
        self, model: str, firmware: str, reported: object, now: float, now_ms: int
    ) -> PushStep:
        self.model, self.firmware, self.deadline = model, firmware, None
        self.target = self.configs.match(model, firmware)
        if self.target is None:
            self.state = "no_config"
            step = self._issue(
                "no_config", f"no config for model {model} firmware {firmware}", now_ms
            )
            return PushStep(self.topic, clear=True, issues=step.issues)
        if _same_version(reported, self.target.config_version):
            self.state, self.applied_version = "applied", self.target.config_version
            return PushStep(self.topic)
        return self._push(now, f"model {model} firmware {firmware}")

    def _push(self, now: float, why: str) -> PushStep:
        assert self.target is not None
        self.state, self.deadline = "pending", now + self.ack_timeout_s
        log.info(
            "pushing config_version %s to device %s (%s)",
            self.target.config_version,
            self.device,
            why,
        )
        return PushStep(self.topic, publish=self.target.body())

    def _ack(self, reported: object, now_ms: int) -> PushStep:
        if self.target is None or self.state not in ("pending", "applied", "failed"):
            return PushStep(self.topic)
        if _same_version(reported, self.target.config_version):
            if self.state != "applied":
                log.info(
                    "device %s applied config_version %s", self.device, self.target.config_version
                )
            self.state, self.deadline = "applied", None
            self.applied_version = self.target.config_version
            return PushStep(self.topic)
        if self.state != "pending":
            # Already reported, or applied and now echoing something odd: once is enough.
            return PushStep(self.topic)
        self.state, self.deadline = "failed", None
        return self._issue(
            "version_mismatch",
            f"device applied config_version {reported!r}, expected {self.target.config_version!r}",
            now_ms,
        )

    def _issue(self, kind: IssueKind, detail: str, now_ms: int) -> PushStep:
        log.warning("device %s config %s: %s", self.device, kind, detail)
        return PushStep(self.topic, issues=(ConfigIssue(self.device, kind, detail, now_ms),))


class ConfigPusher:
    """`ConfigPush` for every device, on the clock: feed it messages, tick it (docs/firmware.md)."""

    def __init__(
        self, configs: FirmwareConfigs, clock: Clock, *, ack_timeout_s: float = 300.0
    ) -> None:
        self.configs = configs
        self.clock = clock
        self.ack_timeout_s = ack_timeout_s
        self._devices: dict[str, ConfigPush] = {}

    def push(self, device: str) -> ConfigPush:
        machine = self._devices.get(device)
        if machine is None:
            machine = self._devices[device] = ConfigPush(device, self.configs, self.ack_timeout_s)
        return machine

    def observe_status(self, device: str, body: Mapping[str, Any]) -> PushStep:
        return self.push(device).status(body, self.clock.monotonic(), self.clock.now_ms())

    def observe_event(self, device: str, name: str, data: Mapping[str, Any]) -> PushStep:
        return self.push(device).event(name, data, self.clock.now_ms())

    def tick(self) -> list[ConfigIssue]:
        now, now_ms = self.clock.monotonic(), self.clock.now_ms()
        issues: list[ConfigIssue] = []
        for machine in self._devices.values():
            issues.extend(machine.tick(now, now_ms).issues)
        return issues

    def next_deadline(self) -> float | None:
        """Monotonic second of the next ack timeout, so the caller need not poll."""
        return min(
            (m.deadline for m in self._devices.values() if m.deadline is not None), default=None
        )

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {
            device: {
                "state": m.state,
                "model": m.model,
                "firmware": m.firmware,
                "config_version": m.target.config_version if m.target else None,
                "applied_version": m.applied_version,
            }
            for device, m in self._devices.items()
        }
