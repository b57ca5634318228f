"""Residents in the site config: ids and tags (never names), care-plan bounds, geofence, routine."""

from __future__ import annotations

import datetime as dt
import re

from pydantic import Field, field_validator, model_validator

from shouwang.config import Strict

_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d\Z")
KNOWN_TAGS = frozenset(
    {"living_alone", "elderly", "dementia", "disabled", "child", "wearable_required"}
)


def minutes(hhmm: str) -> int:
    """'07:30' → 450 (minutes after local midnight)."""
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


class Bounds(Strict):
    low: float | None = Field(None, description="Alert below this value")
    high: float | None = Field(None, description="Alert above this value")

    @model_validator(mode="after")
    def _order(self) -> Bounds:
        if self.low is None and self.high is None:
            raise ValueError("give low, high or both")
        if self.low is not None and self.high is not None and self.low >= self.high:
            raise ValueError(f"low {self.low:g} must be below high {self.high:g}")
        return self


class Geofence(Strict):
    polygon: list[tuple[float, float]] | None = Field(
        None, description="Outdoor safe area: [[lat, lon], ...] (WGS-84), at least 3 corners"
    )
    zones: list[str] | None = Field(
        None, description="Indoor zones (beacon names) the resident may be in"
    )

    @model_validator(mode="after")
    def _some(self) -> Geofence:
        if self.polygon is None and self.zones is None:
            raise ValueError("give polygon, zones or both")
        if self.polygon is not None and len(self.polygon) < 3:
            raise ValueError("polygon needs at least 3 corners")
        for lat, lon in self.polygon or []:
            if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                raise ValueError(f"polygon corner [{lat}, {lon}] is not a WGS-84 position")
        return self


class QuietHours(Strict):
    start: str = Field(description="Local time quiet hours begin, HH:MM (e.g. 22:00)")
    end: str = Field(description="Local time they end, HH:MM (e.g. 06:30)")

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if not _HHMM.match(value):
            raise ValueError(f"{value!r} is not HH:MM")
        return value

    def contains(self, minute: int) -> bool:
        s, e = minutes(self.start), minutes(self.end)
        return s <= minute < e if s <= e else minute >= s or minute < e


class Resident(Strict):
    id: str = Field(description="Resident id (never a name)")
    tags: list[str] = Field(
        default_factory=list,
        description=f"Tags that switch rules on: {', '.join(sorted(KNOWN_TAGS))}",
    )
    care_plan: dict[str, Bounds] = Field(
        default_factory=dict,
        description="Per-field bounds from the care plan (e.g. heart_rate: {low: 45, high: 110}); "
        "they replace a rule's bounds for this resident",
    )
    geofence: Geofence | None = Field(None, description="Safe area, for residents tagged dementia")
    quiet_hours: QuietHours | None = Field(
        None, description="No welfare alert is raised in these hours (the resident sleeps)"
    )
    away: list[dt.date] = Field(
        default_factory=list,
        description="Days the resident is away or on holiday (YYYY-MM-DD): no welfare alerts",
    )

    @field_validator("tags")
    @classmethod
    def _known(cls, tags: list[str]) -> list[str]:
        unknown = sorted(set(tags) - KNOWN_TAGS)
        if unknown:
            raise ValueError(f"unknown tag(s) {unknown} (known: {', '.join(sorted(KNOWN_TAGS))})")
        return tags
