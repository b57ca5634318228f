"""From a raw MQTT message to validated records and alerts: the edge's ingest path.

Every refusal is a `Rejection` with a reason label (counted) and a detail (logged); nothing
here raises on bad input, so one bad device never stops the daemon.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edge.config import DeviceBinding
from shouwang.ids import derived_id
from shouwang.profiles import LIFE_SAFETY_TYPES, DeviceProfile
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


class Pipeline:
    def __init__(
        self,
        site: str,
        devices: dict[str, DeviceBinding],
        profiles: dict[str, DeviceProfile],
        max_payload_bytes: int,
    ) -> None:
        self.site = site
        self.devices = devices
        self.profiles = profiles
        self.max_payload_bytes = max_payload_bytes

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
            return self._telemetry(env, profile)
        if env.kind == "event":
            return self._event(env, binding, profile)
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

    def _event(
        self, env: Envelope, binding: DeviceBinding, profile: DeviceProfile
    ) -> Outcome | Rejection:
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
        event = Event(env.id, env.device, env.ts, name, data)
        outcome = Outcome(env, event=event)
        if spec.alert is not None:
            outcome.alerts.append(
                self._alert(env, binding, spec.alert.type, spec.alert.severity, name)
            )
        return outcome

    def _alert(
        self, env: Envelope, binding: DeviceBinding, type_: str, severity: str, cause: str
    ) -> Alert:
        subject = f"resident:{binding.resident}" if binding.resident else f"device:{binding.id}"
        return Alert(
            # Derived from the cause: a redelivered device message yields the very same alert.
            id=derived_id(env.ts, self.site, env.device, env.id, type_),
            site=self.site,
            type=type_,
            severity=severity,
            device=env.device,
            subject=subject,
            dedup_key=f"{subject}|{type_}",
            ts=env.ts,
            source_id=env.id,
            life_safety=type_ in LIFE_SAFETY_TYPES,
            resident=binding.resident,
            location=binding.location,
            detail={"event": cause, "profile": binding.profile},
        )
