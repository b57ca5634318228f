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
responders: [worker, police, admin]   # who ends an escalation by acknowledging (the default)
```
`after_s` counts from when the cloud stored the alert; every stage whose time has come fires
unless the alert has left `open` (acknowledged, dispatched, resolved, false alarm) before.

Acknowledging means a responder has the case. Only the roles in `responders` (per policy, else
the file's) acknowledge; anyone else who may see the alert and says "seen" (a daughter far
away) is recorded and shown, and the escalation goes on to the next stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from shouwang.config import Strict, load_yaml

Role = Literal["family", "worker", "police", "admin"]
ANY_TYPE = "*"


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
    responders: list[Role] | None = Field(
        None,
        description="Roles whose acknowledgement stops this policy's escalation (someone on "
        "the way); others' is recorded as 'seen'. Default: the file's `responders`",
    )

    @model_validator(mode="after")
    def _ordered(self) -> Policy:
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique: {names}")
        times = [s.after_s for s in self.stages]
        if times != sorted(times):
            raise ValueError(f"stages must be in order of after_s: {times}")
        return self


class Policies(Strict):
    policies: dict[str, Policy] = Field(
        default_factory=dict,
        description=f"Alert type → policy; {ANY_TYPE!r} applies to every type not listed",
    )
    responders: list[Role] = Field(
        default_factory=lambda: list(DEFAULT_RESPONDERS),
        min_length=1,
        description="Roles whose acknowledgement means someone has the case and stops the "
        "escalation; a family member's acknowledgement is 'seen' unless listed here",
    )

    def for_type(self, alert_type: str) -> Policy | None:
        return self.policies.get(alert_type) or self.policies.get(ANY_TYPE)

    def responders_for(self, alert_type: str) -> frozenset[str]:
        """The roles that acknowledge alerts of `alert_type` (others only mark them seen)."""
        policy = self.for_type(alert_type)
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
