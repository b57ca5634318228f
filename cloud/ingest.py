"""Cloud ingest: a shared-subscription MQTT worker that stores each envelope exactly once.

A message is acknowledged to the broker only after the database committed it, and the
broker session is persistent, so a worker killed at any point gets the message again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from cloud.alerts import check_alert_body
from cloud.store import Store
from cloud.telemetry import SqlTelemetryStore, TelemetryStore, check_telemetry_body
from shouwang.metrics import Metrics
from shouwang.mqtt import Message, MqttClient
from shouwang.protocol import Rejection, parse_envelope, parse_site_topic

log = logging.getLogger(__name__)


class Ingest:
    def __init__(
        self,
        client: MqttClient,
        store: Store,
        metrics: Metrics,
        on_alert: Callable[[dict[str, Any]], None],
        max_payload_bytes: int,
    ) -> None:
        self.client = client
        self.store = store
        self.metrics = metrics
        self.on_alert = on_alert
        self.max_payload_bytes = max_payload_bytes
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
            return result
        env = result
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
        if env.kind != "alert":
            return None  # events and evidence: the cloud issue's work
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
        if kind == "telemetry":
            problem = check_telemetry_body(env.body)
            if problem is not None:
                return Rejection("invalid_telemetry", f"{message.topic} {env.id}: {problem}")
        return env
