"""Cloud ingest: a shared-subscription MQTT worker that stores each envelope exactly once.

A message is acknowledged to the broker only after the database committed it, and the
broker session is persistent, so a worker killed at any point gets the message again. After
the commit the worker also confirms the envelope to its gateway on `site/{site}/down/ack`
(stored, or refused for good with the reason): the gateway deletes its copy only then, so a
message the broker acknowledged and then lost is sent again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from sqlalchemy.exc import SQLAlchemyError

from cloud.alerts import check_alert_body
from cloud.evidence import EvidenceStore, check_evidence_body
from cloud.store import Store
from cloud.telemetry import SqlTelemetryStore, TelemetryStore, check_telemetry_body
from shouwang.metrics import Metrics
from shouwang.mqtt import Message, MqttClient, MqttError
from shouwang.protocol import Envelope, Rejection, parse_envelope, parse_site_topic, site_down_topic

log = logging.getLogger(__name__)


class Ingest:
    def __init__(
        self,
        client: MqttClient,
        store: Store,
        metrics: Metrics,
        on_alert: Callable[[dict[str, Any]], None],
        max_payload_bytes: int,
        evidence: EvidenceStore | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.metrics = metrics
        self.on_alert = on_alert
        self.max_payload_bytes = max_payload_bytes
        self.evidence = evidence
        self.telemetry: TelemetryStore = SqlTelemetryStore(store)

    async def run(self) -> None:
        while True:
            message = await self.client.messages()
            while True:
                try:
                    await self.handle(message)
                    break
                except SQLAlchemyError as err:
                    # The database is away: keep the message unacknowledged and retry.
                    self.metrics.reject("store_error")
                    log.error("store failed, retrying in 1 s: %s", err)
                    await asyncio.sleep(1.0)
                except Exception:
                    self.metrics.reject("internal_error")
                    log.exception("failed to ingest a message on %s", message.topic)
                    break
            self.client.ack(message)

    async def handle(self, message: Message) -> dict[str, Any] | Rejection | None:
        result = self._validate(message)
        if isinstance(result, Rejection):
            self.metrics.reject(result.reason)
            log.warning("rejected message: %s", result.detail, extra={"reason": result.reason})
            self._confirm(message, rejected=result.reason)
            return result
        if result.kind == "evidence" and not self._evidence_present(result):
            # The gateway uploads before it publishes; without the bytes this is not stored
            # and not confirmed, so the gateway uploads and publishes it again.
            self.metrics.reject("evidence_missing")
            log.warning("evidence %s names bytes not uploaded", result.id)
            return Rejection("evidence_missing", f"{message.topic} {result.id}")
        outcome = await self._store(result)
        self._confirm(message, stored=result.id)
        return outcome

    def _evidence_present(self, env: Envelope) -> bool:
        return self.evidence is not None and self.evidence.has(
            env.body["sha256"], env.body["size"]
        )

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
        try:
            self.client.publish_nowait(site_down_topic(topic[0], "ack"), orjson.dumps(body), qos=1)
        except MqttError as err:
            # The gateway publishes it again after its timeout, and that copy is confirmed.
            log.warning("confirmation for %s not sent: %s", envelope_id, err)

    async def _store(self, env: Envelope) -> dict[str, Any] | None:
        self.metrics.received(env.kind)
        if env.kind == "telemetry":
            new = await self.telemetry.write(env.site or "", env.body["readings"])
            self.metrics.readings_stored.inc(new)
            return None
        if env.kind == "health":
            if env.body.get("type") == "outbox_drops" and await self.store.insert_drop_report(env):
                log.warning(
                    "site %s reports outbox drops: %s", env.site, env.body.get("drops"),
                    extra={"site": env.site},
                )
            return None
        if env.kind == "evidence":
            assert self.evidence is not None
            await self.evidence.insert(env, int(time.time() * 1000))
            return None
        if env.kind != "alert":
            return None  # events: the cloud issue's work
        alert = await self.store.insert_alert(env)
        if alert is None:
            self.metrics.reject("duplicate")
            return None
        self.metrics.alerts.labels("cloud", alert["type"], alert["severity"]).inc()
        log.info("alert stored", extra={"alert": alert["id"], "site": alert["site"]})
        self.on_alert(alert)
        return alert

    def _validate(self, message: Message) -> Any:
        topic = parse_site_topic(message.topic)
        if isinstance(topic, Rejection):
            return topic
        site, kind = topic
        env = parse_envelope(message.payload, max_bytes=self.max_payload_bytes)
        if isinstance(env, Rejection):
            return Rejection(env.reason, f"{message.topic}: {env.detail}")
        if env.site != site:
            return Rejection(
                "site_mismatch", f"{message.topic}: envelope site {env.site!r} differs from topic"
            )
        if env.kind != kind:
            return Rejection("kind_mismatch", f"{message.topic}: envelope kind {env.kind!r}")
        if kind == "alert":
            problem = check_alert_body(env.body)
            if problem is not None:
                return Rejection("invalid_alert", f"{message.topic} {env.id}: {problem}")
        if kind == "evidence":
            problem = check_evidence_body(env.body)
            if problem is not None:
                return Rejection("invalid_evidence", f"{message.topic} {env.id}: {problem}")
        if kind == "telemetry":
            problem = check_telemetry_body(env.body)
            if problem is not None:
                return Rejection("invalid_telemetry", f"{message.topic} {env.id}: {problem}")
        return env


def _envelope_id(payload: bytes) -> str | None:
    """The id of an envelope refused before it was parsed whole, where there is one."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    value = data.get("id") if isinstance(data, dict) else None
    return value if isinstance(value, str) and 0 < len(value) <= 64 else None
