"""Escalation policies (YAML) and their settings in cloud.yaml (`escalation:`).

```yaml
policies:
  sos:
    stages:
      - {name: family, after_s: 0, notify: [family]}
      - {name: grid-worker, after_s: 120, notify: [worker]}
      - {name: police, after_s: 300, notify: [police]}
  "*":            # any other alert type
    stages: [{name: grid-worker, after_s: 0, notify: [worker]}]
  watchlist_hit:  # a face match: its duty person only, until a person confirms it
    stages: [{name: duty-worker, after_s: 0, notify: [worker]}]
    confirmed: [{name: family-and-worker, after_s: 0, notify: [family, worker]}]
  watchlist_hit/police:   # a variant: the police list's matches
    stages: [{name: duty-officer, after_s: 0, notify: [police]}]
    confirmed: [{name: station, after_s: 0, notify: [police]}]
    responders: [police, admin]
responders: [worker, police, admin]   # who ends an escalation by acknowledging (the default)
```
`after_s` counts from when the cloud stored the alert; every stage whose time has come fires
unless the alert has left `open` (acknowledged, dispatched, resolved, false alarm) before.

Acknowledging means a responder has the case. Only the roles in `responders` (per policy, else
the file's) acknowledge; anyone else who may see the alert and says "seen" (a daughter far
away) is recorded and shown, and the escalation goes on to the next stage.

Some alerts need a person to confirm them before anyone acts (a watchlist match, docs/face.md):
their policy's `stages` go only to whoever confirms, and its `confirmed` stages are planned
when a responder confirms, `after_s` counting from the confirmation. A policy may be for a
variant of a type, `type/variant` (a watchlist_hit's list), before the type's own and `*`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from cloud.alerts import CONFIRMED_TYPES
from shouwang.config import Strict, load_yaml

Role = Literal["family", "worker", "police", "admin"]
ANY_TYPE = "*"


def variant(alert_type: str, detail: Mapping[str, Any] | None) -> str | None:
    """The variant of an alert that may have a policy of its own: a watchlist_hit's list."""
    if alert_type not in CONFIRMED_TYPES or not isinstance(detail, Mapping):
        return None
    why = detail.get("why")
    data = why.get("data") if isinstance(why, Mapping) else None
    name = data.get("watchlist") if isinstance(data, Mapping) else None
    return name if isinstance(name, str) and name else None


class Stage(Strict):
    name: str = Field(pattern=r"^[a-z0-9_-]{1,64}$", description="Stage name, unique per policy")
    after_s: float = Field(
        ge=0, le=7 * 86400, description="Seconds after the alert was stored until this stage"
    )
    notify: list[Role] = Field(
        min_length=1,
        description="Roles told, each limited to users who have this alert in scope: family "
        "of its resident, workers of its grid, police of its station, admins",
    )


DEFAULT_RESPONDERS: list[Role] = ["worker", "police", "admin"]


class Policy(Strict):
    stages: list[Stage] = Field(min_length=1, description="In order of after_s")
    confirmed: list[Stage] = Field(
        default_factory=list,
        description="For alerts a person confirms first (watchlist_hit): stages planned when a "
        "responder confirms, after_s counted from the confirmation; until then only `stages` "
        "fire",
    )
    responders: list[Role] | None = Field(
        None,
        description="Roles whose acknowledgement stops this policy's escalation (someone on "
        "the way); others' is recorded as 'seen'; for alerts a person confirms first, the "
        "roles that may confirm or reject. Default: the file's `responders`",
    )

    @model_validator(mode="after")
    def _ordered(self) -> Policy:
        names = [s.name for s in self.stages + self.confirmed]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique: {names}")
        for part in (self.stages, self.confirmed):
            times = [s.after_s for s in part]
            if times != sorted(times):
                raise ValueError(f"stages must be in order of after_s: {times}")
        return self


# A watchlist_hit without a policy of its own: the grid's workers only, nobody more on confirm.
UNCONFIRMED_DEFAULT = Policy(stages=[Stage(name="duty-worker", after_s=0, notify=["worker"])])


class Policies(Strict):
    policies: dict[str, Policy] = Field(
        default_factory=dict,
        description=f"Alert type (or `type/variant`: a watchlist_hit's list) → policy; "
        f"{ANY_TYPE!r} applies to every type not listed",
    )
    responders: list[Role] = Field(
        default_factory=lambda: list(DEFAULT_RESPONDERS),
        min_length=1,
        description="Roles whose acknowledgement means someone has the case and stops the "
        "escalation; a family member's acknowledgement is 'seen' unless listed here",
    )

    def for_type(self, alert_type: str, variant: str | None = None) -> Policy | None:
        found = self.policies.get(f"{alert_type}/{variant}") if variant else None
        found = found or self.policies.get(alert_type)
        if found is None and alert_type in CONFIRMED_TYPES:
            # Never the catch-all's family or police stages for a match nobody confirmed.
            return UNCONFIRMED_DEFAULT
        return found or self.policies.get(ANY_TYPE)

    def responders_for(self, alert_type: str, variant: str | None = None) -> frozenset[str]:
        """The roles that acknowledge alerts of `alert_type` (others only mark them seen),
        and confirm or reject those a person confirms first."""
        policy = self.for_type(alert_type, variant)
        if policy is not None and policy.responders is not None:
            return frozenset(policy.responders)
        return frozenset(self.responders)


class EscalationConfig(Strict):
    file: Path | None = Field(
        None, description="YAML file of escalation policies; no escalation when absent"
    )
    poll_s: float = Field(
        1.0, gt=0, le=60, description="How often each worker looks for due stages"
    )
    lease_s: float = Field(
        60, ge=1, le=3600,
        description="A stage claimed by a worker that died before finishing is taken over by "
        "another after this long (recipients already told are not told again)",
    )
    notify_timeout_s: float = Field(
        10, gt=0, le=300, description="Longest wait for one notifier call"
    )
    repeat_notify_s: float = Field(
        30, ge=0, le=3600,
        description="A repeat of an acknowledged or dispatched alert (the button pressed "
        "again) is sent to the responders on the case, at most once in this many seconds "
        "per alert; every repeat shows on the board",
    )

    def load(self) -> Policies:
        """The policies; ConfigError names the file and key when they are wrong."""
        return Policies() if self.file is None else load_yaml(self.file, Policies)
