"""From a raw MQTT message to validated records and alerts: the edge's ingest path.

Every refusal is a `Rejection` with a reason label (counted) and a detail (logged); nothing
here raises on bad input, so one bad device never stops the daemon. Valid records go to the
rule engine (edge/rules), which decides every alert, including a profile's event alerts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edge.config import DeviceBinding
from edge.rules.book import Notice
from edge.rules.config import Binding
from edge.rules.engine import RuleEngine, RuleFailure, RuleOutput
from edge.rules.suppression import BROKER
from shouwang.clock import SystemClock
from shouwang.profiles import DeviceProfile
from shouwang.protocol import Envelope, Rejection, parse_device_topic, parse_envelope
from shouwang.records import Alert, Event, Reading

INGEST_KINDS = ("telemetry", "event", "status")


@dataclass(slots=True)
class Outcome:
    """What one message produced. `field_rejections` are bad fields dropped from a reading."""

    envelope: Envelope
    reading: Reading | None = None
    event: Event | None = None
    alerts: list[Alert] = field(default_factory=list)
    field_rejections: list[Rejection] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)  # alert resolved, fall cancelled, ...
    failures: list[RuleFailure] = field(default_factory=list)  # rules that raised (bugs)

    def add(self, out: RuleOutput) -> Outcome:
        self.alerts += out.alerts
        self.notices += out.notices
        self.failures += out.failures
        return self


class Pipeline:
    def __init__(
        self,
        site: str,
        devices: dict[str, DeviceBinding],
        profiles: dict[str, DeviceProfile],
        max_payload_bytes: int,
        rules: RuleEngine | None = None,
    ) -> None:
        self.site = site
        self.devices = devices
        self.profiles = profiles
        self.max_payload_bytes = max_payload_bytes
        if rules is None:
            # Profile defaults only, on the real clock: for tools and tests that need no site.
            bindings = [
                Binding(d.id, d.profile, d.resident, d.location, BROKER) for d in devices.values()
            ]
            rules = RuleEngine(site, bindings, profiles, SystemClock())
        self.rules = rules

    def process(self, topic: str, payload: bytes) -> Outcome | Rejection:
        parsed_topic = parse_device_topic(topic)
        if isinstance(parsed_topic, Rejection):
            return parsed_topic
        device_id, topic_kind = parsed_topic
        if topic_kind not in INGEST_KINDS:
            return Rejection("wrong_topic", f"{topic}: devices do not publish {topic_kind}")
        env = parse_envelope(payload, max_bytes=self.max_payload_bytes)
        if isinstance(env, Rejection):
            return Rejection(env.reason, f"{topic}: {env.detail}")
        if env.device != device_id:
            return Rejection(
                "device_mismatch", f"{topic}: envelope device {env.device!r} differs from topic"
            )
        if env.kind != topic_kind:
            return Rejection("kind_mismatch", f"{topic}: envelope kind {env.kind!r} differs")
        if env.site is not None and env.site != self.site:
            return Rejection("wrong_site", f"{topic}: envelope site {env.site!r} is not ours")
        binding = self.devices.get(device_id)
        if binding is None:
            return Rejection("unknown_device", f"{topic}: device {device_id!r} is not registered")
        profile = self.profiles[binding.profile]
        if env.kind == "telemetry":
            result = self._telemetry(env, profile)
            if isinstance(result, Outcome) and result.reading is not None:
                result.add(self.rules.observe_reading(result.reading))
            return result
        if env.kind == "event":
            result = self._event(env, profile)
            if isinstance(result, Outcome) and result.event is not None:
                result.add(self.rules.observe_event(result.event))
            return result
        return Outcome(env)  # status: liveness tracking comes with the devices work

    def _telemetry(self, env: Envelope, profile: DeviceProfile) -> Outcome | Rejection:
        values = {}
        bad: list[Rejection] = []
        for name, value in env.body.items():
            spec = profile.fields.get(name)
            if spec is None:
                bad.append(Rejection("unknown_field", f"{env.device}: unknown field {name!r}"))
                continue
            problem = spec.check(value)
            if problem is not None:
                reason = "wrong_type" if problem.startswith("expected") else "out_of_range"
                bad.append(Rejection(reason, f"{env.device}: field {name!r}: {problem}"))
                continue
            values[name] = value
        if not values:
            detail = "; ".join(b.detail for b in bad) or f"{env.device}: empty telemetry"
            return Rejection("no_valid_fields", detail)
        return Outcome(
            env, reading=Reading(env.id, env.device, env.ts, values), field_rejections=bad
        )

    def _event(self, env: Envelope, profile: DeviceProfile) -> Outcome | Rejection:
        name = env.body.get("event")
        if not isinstance(name, str):
            return Rejection("invalid_event", f"{env.device}: body.event must be a string")
        spec = profile.events.get(name)
        if spec is None:
            return Rejection("unknown_event", f"{env.device}: {profile.kind} has no event {name!r}")
        data = {k: v for k, v in env.body.items() if k != "event"}
        for key, value in data.items():
            fspec = spec.fields.get(key)
            problem = "unknown field" if fspec is None else fspec.check(value)
            if problem is not None:
                return Rejection(
                    "invalid_event", f"{env.device}: event {name} field {key!r}: {problem}"
                )
        return Outcome(env, event=Event(env.id, env.device, env.ts, name, data))
