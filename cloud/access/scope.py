"""Jurisdiction and least data: the ONE place that decides which alerts a user sees, and how much.

Everything that hands an alert to a person goes through a `Principal`: the SQL filter for
lists and snapshots (`where`), the check for a single alert and for each WebSocket message
(`allows`), the fields returned (`view`) and the actions permitted (`may`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, false, func, or_, true

from cloud.store import alerts
from shouwang.explain import explain
from shouwang.vocabulary import LANGUAGES

ROLES = ("police", "worker", "family", "admin")
# Segments of district/street/community/grid: a community worker's scope is a grid or below.
GRID_DEPTH = 4

# What each role may do to an alert it can see. Family can say "we have it" or "false alarm"
# but cannot send a community worker; that is the community's and the station's call. A
# signed evidence package is a record for a case file (police, the grid's workers, admins);
# a family sees the clips in the alert but asks the police for a package (docs/access.md).
ACTIONS: dict[str, frozenset[str]] = {
    "ack": frozenset(ROLES),
    "dispatch": frozenset({"police", "worker", "admin"}),
    "resolve": frozenset(ROLES),
    "false_alarm": frozenset(ROLES),
    "export_package": frozenset({"police", "worker", "admin"}),
    # A watchlist match is confirmed or rejected by its duty person (the policy's responders
    # narrow it per list: the police list's by police), never by a family.
    "confirm": frozenset({"police", "worker", "admin"}),
    "reject": frozenset({"police", "worker", "admin"}),
    # The flat a thrown object came from, once someone went and found it (高空抛物).
    "confirm_flat": frozenset({"police", "worker", "admin"}),
    # A line in the timeline without a state change, by those who handle the case.
    "note": frozenset({"police", "worker", "admin"}),
    # A note shown to the resident's family ("网格员已到达，老人无大碍"): the grid's workers
    # speak to families; a police note is for the case file (docs/access.md).
    "share_note": frozenset({"worker", "admin"}),
}

# `detail` keys police and community workers receive; anything else (vital signs, signal
# histories, new keys nobody has classified yet) only reaches the family and admins.
# The edge rules' keys: `who` (device, kind, resident id and tags, location), `what` (the
# summary), `evidence` (references), and of `why` only SHARED_WHY: which rule fired and on
# what event, not the readings it fired on (`why.data`, thresholds' values, vitals).
SHARED_DETAIL = frozenset({"event", "profile", "reason", "summary", "who", "what", "why",
                           "evidence"})
SHARED_WHY = frozenset({"rule", "type", "event", "cancel_window_s", "reason"})
FULL_DETAIL_ROLES = frozenset({"family", "admin"})
# Of `why.data`, the keys police and workers receive, by alert type. A thrown object's estimate
# of the window it left (floor, column, ranked candidates, the track it fell along) is where to
# go and look: the case itself, not a reading about a person.
SHARED_DATA: dict[str, frozenset[str]] = {
    "thrown_object": frozenset({"floor", "column", "candidates", "track", "confidence"}),
}


def under(
    column: ColumnElement[Any], prefix: str, *, strictly: bool = False
) -> ColumnElement[bool]:
    """`prefix_matches` in SQL: `column` is `prefix` (unless `strictly`) or below it, by whole
    segments, exactly, on both databases. SQLite's LIKE ignores ASCII case, so a police user
    scoped to `Demo/StreetX` once saw `demo/streetx/...` alerts in lists; the LIKE stays (an
    index may serve it) and an exact comparison of the leading characters decides."""
    below = and_(
        column.startswith(prefix + "/", autoescape=True),
        func.substr(column, 1, len(prefix) + 1) == prefix + "/",
    )
    return below if strictly else or_(column == prefix, below)


def prefix_matches(location: str | None, prefix: str) -> bool:
    """Whole path segments only: `a/b` covers `a/b` and `a/b/c`, not `a/bc`."""
    return location is not None and (location == prefix or location.startswith(prefix + "/"))


def check_location_prefix(prefix: str, role: str) -> str | None:
    """None when `prefix` is a usable scope for `role`, else why not."""
    parts = prefix.split("/")
    if not prefix or any(not p.strip() for p in parts):
        return f"location prefix {prefix!r} has an empty segment"
    if role == "worker" and len(parts) < GRID_DEPTH:
        return (
            f"a community worker's scope is a grid (district/street/community/grid); "
            f"{prefix!r} has {len(parts)} segments"
        )
    return None


@dataclass(frozen=True)
class Principal:
    user_id: int
    username: str
    role: str
    display_name: str
    locations: tuple[str, ...] = ()
    residents: tuple[str, ...] = ()

    def allows(self, alert: Mapping[str, Any]) -> bool:
        if self.role == "admin":
            return True
        if self.role == "family":
            return alert.get("resident") in self.residents
        return any(prefix_matches(alert.get("location"), p) for p in self.locations)

    def where(
        self,
        location: ColumnElement[Any] | None = None,
        resident: ColumnElement[Any] | None = None,
    ) -> ColumnElement[bool]:
        """`allows` as SQL (kept side by side so they cannot drift): on the alerts table, or
        on the given location and resident columns (devices, residents)."""
        location = alerts.c.location if location is None else location
        resident = alerts.c.resident if resident is None else resident
        if self.role == "admin":
            return true()
        if self.role == "family":
            return resident.in_(self.residents) if self.residents else false()
        if not self.locations:
            return false()
        return or_(*(under(location, p) for p in self.locations))

    def view(self, alert: Mapping[str, Any]) -> dict[str, Any]:
        """The alert as this role may see it."""
        out = dict(alert)
        if self.role not in FULL_DETAIL_ROLES:
            detail = alert.get("detail") or {}
            out["detail"] = {k: v for k, v in detail.items() if k in SHARED_DETAIL}
            why = out["detail"].get("why")
            if why is not None:
                out["detail"]["why"] = (
                    {k: v for k, v in why.items() if k in SHARED_WHY}
                    if isinstance(why, dict) else {}
                )
                data = why.get("data") if isinstance(why, dict) else None
                shared = SHARED_DATA.get(str(alert.get("type")))
                if shared and isinstance(data, dict):
                    out["detail"]["why"]["data"] = {
                        k: v for k, v in data.items() if k in shared}
        if self.role == "family" and "timeline" in alert:
            # A family reads the notes its elder's responders chose to share, no other: every
            # step stays (who, when, what), an unshared note's text does not.
            out["timeline"] = [{**step, "note": step.get("note") if step.get("shared") else None}
                               for step in alert["timeline"]]
        # Why it was raised, as a sentence, from what this role may see (shouwang/explain.py).
        out["explain"] = {lang: explain(out, lang) for lang in LANGUAGES}
        return out

    def may(self, action: str) -> bool:
        return self.role in ACTIONS.get(action, frozenset())

    @property
    def actor(self) -> str:
        return f"user:{self.username}"
