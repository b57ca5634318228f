"""Cloud ingest: a shared-subscription MQTT worker that stores each envelope exactly once.

A message is acknowledged to the broker only after the database committed it, and the
broker session is persistent, so a worker killed at any point gets the message again. After
the commit the worker also confirms the envelope to its gateway on `site/{site}/down/ack`
(stored, or refused for good with the reason): the gateway deletes its copy only then, so a
message the broker acknowledged and then lost is sent again.
Each kind (and each health type) has one handler in a registry; each handler writes in one
transaction, so a message is stored whole or not at all. Messages are taken in rounds of what
is queued and stored in their order; within a round, consecutive telemetry messages of one site
are one write (whole or not at all, every reading keyed by its id) and consecutive new alerts
one transaction, each run confirmed with one message per site listing its envelope ids.

A gateway is trusted to speak for its own site only, and only of what the cloud's registry
gives it (docs/security.md): an alert's resident and location are the registry's for its
device (`Fleet.placement`), not what the envelope says; an alert or event from a device not
registered to the site is refused (`unknown_device`, kept by the gateway until an admin
imports it) unless `require_registered_sites` is off; a recorded event must be one its
device's profile records, with its fields, and readings must fit their device's profile (where
the registry has one); evidence may name only a blob its site uploaded, and only an alert of
its site (`foreign_alert`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar

import orjson
from sqlalchemy.exc import SQLAlchemyError

from cloud.alerts import check_alert_body, placed
from cloud.deadletter import DeadLetters
from cloud.downlink import message as downlink_message
from cloud.downlink import news_for
from cloud.evidence import EvidenceStore, check_evidence_body
from cloud.fleet import Fleet
from cloud.site_bodies import check_event_body, check_health_body, recorded_event
from cloud.store import Store
from cloud.telemetry import (
    SqlTelemetryStore,
    TelemetryBackendError,
    TelemetryStore,
    check_telemetry_body,
)
from cloud.updates import (
    NotApplicable,
    as_new_alert,
    escalate,
    repeat,
    resolution_of,
    resolve,
    update_of,
)
from cloud.watchlist_downlink import answer_report
from cloud.watchlist_store import CloudKeys
from shouwang.clock import Clock, SystemClock
from shouwang.logs import Throttled
from shouwang.metrics import Metrics
from shouwang.mqtt import Message, MqttClient, MqttError
from shouwang.profiles import DeviceProfile, load_profiles
from shouwang.protocol import Envelope, Rejection, parse_envelope, parse_site_topic, site_down_topic

log = logging.getLogger(__name__)
Handler = Callable[[Envelope], Awaitable[dict[str, Any] | None]]
# Refusals that say nothing about the message itself: the cloud may accept it later (a site
# or device registered after its gateway connected, evidence whose upload is still to come),
# so the gateway keeps it and sends it again (and a life-safety alert it holds too long goes
# to its local fallback).
NOT_FINAL = frozenset({"unknown_site", "unknown_device", "evidence_missing"})
# One round takes at most this many queued messages; telemetry of one site within it is
# written at once, up to the telemetry store's `batch_readings` a write.
BATCH_MESSAGES = 100
# How long a worker takes a device's profile as read (readings are checked against it), and
# how many devices' it keeps at most.
PROFILE_TTL_S = 60.0
MAX_PROFILES_KEPT = 100_000
_T = TypeVar("_T")


class Ingest:
    def __init__(
        self,
        client: MqttClient,
        store: Store,
        metrics: Metrics,
        on_alert: Callable[[dict[str, Any]], None],
        max_payload_bytes: int,
        telemetry: TelemetryStore | None = None,
        require_registered_sites: bool = True,
        clock: Clock | None = None,
        evidence: EvidenceStore | None = None,
        on_update: Callable[[dict[str, Any], str], Awaitable[None]] | None = None,
        watchlist_keys: CloudKeys | None = None,
        alert_news: MqttClient | None = None,
        watchlist_client: MqttClient | None = None,
    ) -> None:
        self.client = client
        # The answers to a gateway's report go out on the downlinks' own clients (their broker
        # accounts may write down/alert and down/watchlist; ingest's only down/ack).
        self.alert_news = alert_news or client
        self.watchlist_client = watchlist_client or client
        self.watchlist_keys = watchlist_keys
        self.store = store
        self.metrics = metrics
        self.on_alert = on_alert
        self.max_payload_bytes = max_payload_bytes
        self.telemetry: TelemetryStore = telemetry or SqlTelemetryStore(store)
        self.fleet = Fleet(store)
        self.require_registered_sites = require_registered_sites
        self.clock = clock or SystemClock()
        self.evidence = evidence
        self.on_update = on_update or _ignore
        self.dead_letters = DeadLetters(store, self.fleet)
        self.profiles: dict[str, DeviceProfile] = load_profiles()
        self._complaints = Throttled(log)  # a rejection reason once per site a minute
        self.handlers: dict[str, Handler] = {
            "alert": self._alert,
            "telemetry": self._telemetry,
            "health": self._health,
            "event": self._event,
            "evidence": self._evidence,
        }
        self.health_handlers: dict[str, Handler] = {
            "outbox_drops": self._drops,
            "device_state": self._device_state,
            "gateway": self._gateway,
            "gateway_offline": self._gateway_offline,
        }
        # What the registry says of an envelope's device, site, alert: checked after the body.
        self.registry_checks: dict[str, Callable[[Envelope], Awaitable[Envelope | Rejection]]] = {
            "alert": self._place,
            "event": self._check_event,
            "evidence": self._check_evidence,
            "telemetry": self._check_readings,
        }
        # (site, device) → (profile or None, when read): readings are the hot path, and a
        # device's profile changes by an admin's import; a change applies within PROFILE_TTL_S.
        self._profile_of: dict[tuple[str, str], tuple[str | None, float]] = {}

    async def run(self) -> None:
        """Take what is queued (up to BATCH_MESSAGES), store it in order, acknowledge each
        message after its commit. Consecutive telemetry of one site is one telemetry write:
        one worker spent as long waiting on the store per message as computing."""
        while True:
            batch = [await self.client.messages(), *self.client.drain(BATCH_MESSAGES - 1)]
            await self.store_batch(batch)

    async def store_batch(self, batch: list[Message]) -> None:
        """Store a round in order. Runs of consecutive telemetry of one site, and of new
        alerts, are one write each; any other message ends a run and is stored alone."""
        pending: list[tuple[Message, Envelope]] = []  # one run, not yet written
        run: tuple[str, str] | None = None  # ("telemetry", site) or ("alert", "")
        size, most = 0, self.telemetry.batch_readings
        for message in batch:
            env = await self._retrying(self._admit, message, messages=[message])
            if env is None:
                self.client.ack(message)
                continue
            key = _run_of(env)
            readings = len(env.body["readings"]) if env.kind == "telemetry" else 0
            if pending and (key != run or size + readings > most):
                await self._flush(pending)
                pending, size = [], 0
            if key is None:
                await self._retrying(self._store, message, env, messages=[message])
                self.client.ack(message)
                continue
            pending.append((message, env))
            run, size = key, size + readings
        await self._flush(pending)

    async def _retrying(
        self, step: Callable[..., Awaitable[_T]], *args: Any, messages: list[Message]
    ) -> _T | None:
        """Run one step; while the database is away, keep the messages unacknowledged and
        retry. A bug in a handler is counted and logged, and the step's messages are kept as
        dead letters with an alert that carries them, and confirmed: never looped, never
        acknowledged away unseen (cloud/deadletter.py)."""
        while True:
            try:
                return await step(*args)
            except (SQLAlchemyError, TelemetryBackendError) as err:
                self.metrics.reject("store_error")
                log.error("store failed, retrying in 1 s: %s", err)
                await asyncio.sleep(1.0)
            except Exception as err:
                self.metrics.reject("internal_error")
                log.exception("failed to ingest a message (%s)", _what(args))
                await self._dead_letter(messages, err)
                return None

    async def _dead_letter(self, messages: list[Message], err: Exception) -> None:
        """Keep what a bug kept us from handling, tell a person, confirm it to its gateway."""
        error = f"{type(err).__name__}: {err}"[:500]
        while True:
            try:
                alert = await self.dead_letters.keep(messages, error, self.clock.now_ms())
                break
            except SQLAlchemyError as store_err:
                self.metrics.reject("store_error")
                log.error("dead letter not stored, retrying in 1 s: %s", store_err)
                await asyncio.sleep(1.0)
            except Exception:
                # Nothing more to do here: left unconfirmed, the gateway sends it again later.
                log.exception("dead letter failed too; %d message(s) left unconfirmed",
                              len(messages))
                return
        if alert is not None:
            self.on_alert(alert)
        for message in messages:
            self._confirm(message, stored=_envelope_id(message.payload))

    async def _admit(self, message: Message) -> Envelope | None:
        """The message's envelope if it may be stored (as the registry has it); a refusal is
        counted (and confirmed to its gateway when final) and gives None."""
        result = self._validate(message)
        if not isinstance(result, Rejection):
            result = await self._vouch(result, message.topic)
        if isinstance(result, Rejection):
            if result.reason not in NOT_FINAL:
                self._confirm(message, rejected=result.reason)
            self._reject(result, message.topic.split("/", 2)[1] if "/" in message.topic else "")
            return None
        self.metrics.received(result.kind)
        return result

    async def _vouch(self, env: Envelope, topic: str) -> Envelope | Rejection:
        """What the cloud's own registry says of a well-formed envelope: its site registered
        (when required), and what its kind's registry check makes of it."""
        if self.require_registered_sites and not await self.fleet.site_registered(
            env.site or ""
        ):
            return Rejection("unknown_site", f"{topic}: site is not registered")
        check = self.registry_checks.get(env.kind)
        return env if check is None else await check(env)

    async def _place(self, env: Envelope) -> Envelope | Rejection:
        """An alert with its resident and location as the registry has its device: a gateway
        cannot put an alert into another station's jurisdiction, or onto another family."""
        site = env.site or ""
        where = await self.fleet.placement(site, env.device)
        if where is None:
            if self.require_registered_sites:
                return Rejection(
                    "unknown_device",
                    f"site/{site}/up/alert {env.id}: device {env.device!r} is not registered "
                    "to this site",
                )
            return env  # a lab cloud takes its gateways' word (require_registered_sites off)
        body, differed = placed(env.body, where.resident, where.location)
        if differed:
            self._complaints.warning(
                (site, "placement"), "site %s: alert %s of device %s named another resident "
                "or location than the registry's; the registry's were stored",
                site, env.id, env.device, extra={"reason": "placement"},
            )
        return replace(env, body=body)

    async def _check_event(self, env: Envelope) -> Envelope | Rejection:
        """A device's recorded event against its profile in the registry; a rule's notice
        (no `event`) needs only a device of this site."""
        site = env.site or ""
        where = await self.fleet.placement(site, env.device)
        if where is None and self.require_registered_sites:
            return Rejection(
                "unknown_device",
                f"site/{site}/up/event {env.id}: device {env.device!r} is not registered",
            )
        name = recorded_event(env.body)
        if name is None:
            return env
        if env.body.get("device", env.device) != env.device:
            return Rejection("invalid_event", f"site/{site}/up/event {env.id}: body.device "
                             "differs from the envelope's device")
        profile = self.profiles.get(where.profile) if where and where.profile else None
        if profile is None:
            return env
        spec = profile.events.get(name)
        if spec is None or not spec.record:
            return Rejection("unknown_event", f"site/{site}/up/event {env.id}: {profile.kind} "
                             f"{env.device} records no event {name!r}")
        for key, value in env.body.items():
            if key in ("type", "event", "device"):
                continue
            field_spec = spec.fields.get(key)
            problem = "unknown field" if field_spec is None else field_spec.check(value)
            if problem is not None:
                return Rejection("invalid_event", f"site/{site}/up/event {env.id}: event "
                                 f"{name} field {key[:64]!r}: {problem}")
        return env

    async def _check_readings(self, env: Envelope) -> Envelope | Rejection:
        """Each reading's values against its device's profile, where the registry has one
        (a device not imported is stored as it comes: telemetry stays within its site)."""
        site = env.site or ""
        readings = env.body["readings"]
        kinds = await self._profiles(site, {r["device"] for r in readings})
        for i, r in enumerate(readings):
            profile = self.profiles.get(kinds.get(r["device"]) or "")
            if profile is None:
                continue
            for name, value in r["values"].items():
                spec = profile.fields.get(name)
                problem = "unknown field" if spec is None else spec.check(value)
                if problem is not None:
                    return Rejection("invalid_telemetry", f"site/{site}/up/telemetry {env.id}: "
                                     f"readings[{i}] {profile.kind} {r['device']} field "
                                     f"{name[:64]!r}: {problem}")
        return env

    async def _profiles(self, site: str, ids: set[str]) -> dict[str, str | None]:
        now = self.clock.monotonic()
        known = {d: self._profile_of.get((site, d)) for d in ids}
        stale = {d for d, got in known.items() if got is None or now - got[1] > PROFILE_TTL_S}
        if stale:
            found = await self.fleet.profiles(site, stale)
            if len(self._profile_of) > MAX_PROFILES_KEPT:
                self._profile_of.clear()
            for d in stale:
                self._profile_of[(site, d)] = known[d] = (found.get(d), now)
        return {d: got[0] for d, got in known.items() if got is not None}

    async def _check_evidence(self, env: Envelope) -> Envelope | Rejection:
        """Evidence of this site's alert, naming a blob this site uploaded."""
        site, body = env.site or "", env.body
        alert = body.get("alert")
        owner = await self.store.alert_site(alert) if isinstance(alert, str) else None
        if owner is not None and owner != site:
            return Rejection("foreign_alert", f"site/{site}/up/evidence {env.id}: alert "
                             f"{alert} is another site's")
        if self.evidence is None or not await self.evidence.uploaded(
            site, body["sha256"], body["size"]
        ):
            # The gateway uploads before it publishes; without this site's upload of the bytes
            # this is neither stored nor confirmed, so the gateway uploads and publishes again.
            return Rejection("evidence_missing", f"site/{site}/up/evidence {env.id}: "
                             f"{body['sha256']} was not uploaded by this site")
        return env

    async def _store(self, message: Message, env: Envelope) -> dict[str, Any] | None:
        """Store one envelope; returns after its transaction committed, then confirms it."""
        handler = self.handlers.get(env.kind)
        outcome = await handler(env) if handler is not None else None
        self._confirm(message, stored=env.id)
        return outcome

    async def _flush(self, pending: list[tuple[Message, Envelope]]) -> None:
        """Write a run at once, then confirm it (one message per site) and acknowledge it."""
        if not pending:
            return
        if pending[0][1].kind == "alert":
            await self._retrying(self._new_alerts, pending, messages=[m for m, _ in pending])
        else:
            site = pending[0][1].site or ""
            readings = [r for _, env in pending for r in env.body["readings"]]
            written = await self._retrying(
                self._write_telemetry, site, readings, messages=[m for m, _ in pending]
            )
            if written is True:
                # One confirmation for the whole write: the gateway takes a list of ids.
                self._confirm_stored(site, [env.id for _, env in pending])
        for message, _ in pending:
            self.client.ack(message)

    async def _new_alerts(self, pending: list[tuple[Message, Envelope]]) -> None:
        stored = await self.store.insert_alerts([env for _, env in pending])
        by_site: dict[str, list[str]] = {}
        for (_, env), alert in zip(pending, stored, strict=True):
            by_site.setdefault(env.site or "", []).append(env.id)
            if alert is None:
                self.metrics.reject("duplicate")
                continue
            self.metrics.alerts.labels("cloud", alert["type"], alert["severity"]).inc()
            log.info("alert stored", extra={"alert": alert["id"], "site": alert["site"]})
            self.on_alert(alert)
        for site, ids in by_site.items():
            self._confirm_stored(site, ids)

    def _confirm_stored(self, site: str, ids: list[str]) -> None:
        self._send_confirmation(site, {"v": 1, "stored": ids, "rejected": []})

    def _confirm(
        self, message: Message, *, stored: str | None = None, rejected: str | None = None
    ) -> None:
        """Tell the gateway its envelope is stored, or refused for good; after the commit."""
        topic = parse_site_topic(message.topic)
        envelope_id = stored or _envelope_id(message.payload)
        if isinstance(topic, Rejection) or envelope_id is None:
            return  # nothing a gateway could match: it was not one of ours
        body: dict[str, Any] = {"v": 1, "stored": [], "rejected": []}
        if rejected is None:
            body["stored"].append(envelope_id)
        else:
            body["rejected"].append({"id": envelope_id, "reason": rejected})
        self._send_confirmation(topic[0], body)

    def _send_confirmation(self, site: str, body: dict[str, Any]) -> None:
        try:
            self.client.publish_nowait(site_down_topic(site, "ack"), orjson.dumps(body), qos=1)
        except MqttError as err:
            # The gateway publishes them again after its timeout, and those copies are confirmed.
            log.warning("confirmation of %d envelope(s) of site %s not sent: %s",
                        len(body["stored"]) + len(body["rejected"]), site, err)

    async def _evidence(self, env: Envelope) -> None:
        assert self.evidence is not None  # _check_evidence checked it
        if not await self.evidence.insert(env, self.clock.now_ms()):
            self.metrics.reject("duplicate")

    def _reject(self, rejection: Rejection, source: str = "") -> Rejection:
        self.metrics.reject(rejection.reason)
        self._complaints.warning(
            (source, rejection.reason), "rejected message: %s", rejection.detail,
            extra={"reason": rejection.reason},
        )
        return rejection

    async def _alert(self, env: Envelope) -> dict[str, Any] | None:
        found = update_of(env)
        if found is not None:
            kind, target = found
            apply = escalate if kind == "escalated" else repeat
            try:
                updated = await apply(self.store, env, target)
            except NotApplicable as err:
                # Its alert is closed or unknown here: a worse condition, or the same thing
                # happening again after the case was closed, is a new alert of its own.
                log.info("%s stored as a new alert: %s", kind, err, extra={"alert": env.id})
                env = as_new_alert(env)
            else:
                if updated is None:
                    self.metrics.reject("duplicate")
                else:
                    log.info("alert %s", kind, extra={"alert": target, "site": env.site})
                    await self.on_update(updated, kind)
                return updated
        alert = await self.store.insert_alert(env)
        if alert is None:
            self.metrics.reject("duplicate")
            return None
        self.metrics.alerts.labels("cloud", alert["type"], alert["severity"]).inc()
        log.info("alert stored", extra={"alert": alert["id"], "site": alert["site"]})
        self.on_alert(alert)
        return alert

    async def _telemetry(self, env: Envelope) -> None:
        await self._write_telemetry(env.site or "", env.body["readings"])

    async def _write_telemetry(self, site: str, batch: list[dict[str, Any]]) -> bool:
        new = await self.telemetry.write(site, batch)
        self.metrics.readings_stored.inc(new)
        # After the readings: a monotonic max, so a crash in between is mended by redelivery.
        await self.fleet.seen(site, batch)
        return True

    async def _event(self, env: Envelope) -> None:
        target = resolution_of(env)
        if target is not None:
            try:
                updated = await resolve(self.store, env, target)
            except NotApplicable as err:
                log.info("resolution kept as an event only: %s", err, extra={"site": env.site})
            else:
                if updated is None:
                    self.metrics.reject("duplicate")
                else:
                    log.info("alert resolved at the gateway", extra={"alert": target})
                    await self.on_update(updated, "resolved")
                return
        if not await self.store.insert_event(env):
            self.metrics.reject("duplicate")

    async def _health(self, env: Envelope) -> None:
        handler = self.health_handlers.get(str(env.body.get("type")))
        if handler is not None:
            await handler(env)

    async def _drops(self, env: Envelope) -> None:
        if await self.store.insert_drop_report(env):
            log.warning(
                "site %s reports outbox drops: %s", env.site, env.body.get("drops"),
                extra={"site": env.site},
            )

    async def _device_state(self, env: Envelope) -> None:
        await self.fleet.device_state(env)

    async def _gateway(self, env: Envelope) -> None:
        await self.fleet.gateway_report(env, self.clock.now_ms())
        # The report lists the alerts the gateway holds and the version it knows of each:
        # answer with what it missed (a change made while it was away, or lost in transit).
        news = await news_for(self.store, env.site or "", env.body.get("alerts") or [])
        if news:
            try:
                self.alert_news.publish_nowait(
                    site_down_topic(env.site or "", "alert"), downlink_message(news), qos=1
                )
            except MqttError as err:
                log.warning("news of %d alert(s) for site %s not sent: %s", len(news),
                            env.site, err)
        # And the version of the watchlists it holds: the current one if that is older.
        if self.watchlist_keys is not None:
            await answer_report(self.store, self.watchlist_keys, self.watchlist_client,
                                env.site or "", env.body.get("watchlist"), self.clock.now_ms(),
                                env.body.get("watchlist_keys"))

    async def _gateway_offline(self, env: Envelope) -> None:
        await self.fleet.gateway_offline(env, self.clock.now_ms())

    def _validate(self, message: Message) -> Envelope | Rejection:
        return validate(message.topic, message.payload, max_bytes=self.max_payload_bytes)


def validate(topic: str, payload: bytes, *, max_bytes: int) -> Envelope | Rejection:
    """A gateway's message on `site/{site}/up/{kind}` as an envelope whose body its kind's
    handler may touch, or why not; never raises (tests/fuzz/test_cloud_envelopes.py)."""
    where = parse_site_topic(topic)
    if isinstance(where, Rejection):
        return where
    site, kind = where
    env = parse_envelope(payload, max_bytes=max_bytes)
    if isinstance(env, Rejection):
        return Rejection(env.reason, f"{topic}: {env.detail}")
    if env.site != site:
        return Rejection("site_mismatch", f"{topic}: envelope site {env.site!r} differs from topic")
    if env.kind != kind:
        return Rejection("kind_mismatch", f"{topic}: envelope kind {env.kind!r}")
    problem = BODY_CHECKS[kind](env.body)
    if problem is not None:
        return Rejection(f"invalid_{kind}", f"{topic} {env.id}: {problem}")
    return env


# What a body must hold before a handler may touch it; failures are `invalid_{kind}`. Every
# kind a site sends has one (shouwang.protocol.SITE_KINDS).
BODY_CHECKS: dict[str, Callable[[dict[str, Any]], str | None]] = {
    "alert": check_alert_body,
    "telemetry": check_telemetry_body,
    "health": check_health_body,
    "event": check_event_body,
    "evidence": check_evidence_body,
}


async def _ignore(alert: dict[str, Any], why: str) -> None:
    return None


def _run_of(env: Envelope) -> tuple[str, str] | None:
    """Which run a message may join: telemetry by site, and new alerts (an update of a
    stored alert, escalation or repeat, is stored alone, in order); None for every other
    message."""
    if env.kind == "telemetry":
        return ("telemetry", env.site or "")
    if env.kind == "alert" and update_of(env) is None:
        return ("alert", "")
    return None


def _what(args: tuple[Any, ...]) -> str:
    """For the log: the topics of the messages a failed step was about."""
    if len(args) == 1 and isinstance(args[0], list):  # a run: (message, envelope) pairs
        topics = [message.topic for message, _ in args[0]]
    else:
        topics = [a.topic for a in args if isinstance(a, Message)]
    if topics:
        return ", ".join(topics)
    site, readings = args
    return f"telemetry of site {site}, {len(readings)} readings"


def _envelope_id(payload: bytes) -> str | None:
    """The id of an envelope refused before it was parsed whole, where there is one."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    value = data.get("id") if isinstance(data, dict) else None
    return value if isinstance(value, str) and 0 < len(value) <= 64 else None
