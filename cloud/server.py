"""The cloud process: ingest worker and/or API server over one store."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

from aiohttp import web

from cloud import residents, watchlists
from cloud.access.scope import Principal
from cloud.access.users import Access
from cloud.api import build_app, build_monitor_app
from cloud.config import CloudConfig, Role
from cloud.downlink import Downlink
from cloud.escalation.repeats import RepeatNotifier
from cloud.escalation.scheduler import DispatchNotifier, Notifier, Scheduler
from cloud.escalation.timers import Timers
from cloud.evidence import EvidenceStore, add_routes
from cloud.evidence_key import EvidenceKey
from cloud.feed import ChangeFeed
from cloud.hub import PRINCIPAL, Hub
from cloud.ingest import Ingest
from cloud.lifecycle import Lifecycle
from cloud.notify import Dispatcher, build_notify
from cloud.notify.routes import family_routes, push_routes
from cloud.store import Store
from cloud.telemetry import TelemetryStore, open_telemetry
from cloud.watchdog import Watchdog
from cloud.watchlist_downlink import WatchlistDownlink
from cloud.watchlist_hits import FalseMatches
from cloud.watchlist_retention import EvidenceRetention
from cloud.watchlist_store import CloudKeys, cloud_keys
from shouwang import heap
from shouwang.clock import Clock, SystemClock
from shouwang.metrics import Metrics
from shouwang.mqtt import MqttClient
from shouwang.protocol import CLOUD_STREAMS

log = logging.getLogger(__name__)
SNAPSHOT_SIZE = 200  # alerts a dashboard gets on (re)connect before live changes


class CloudServer:
    def __init__(
        self, config: CloudConfig, *, clock: Clock | None = None, notifier: Notifier | None = None
    ) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        # None: escalation goes through the notifiers; tests pass one that records.
        self.notifier: Notifier | None = notifier
        self.dispatcher: Dispatcher | None = None
        self.policies = config.escalation.load()  # a bad policy file stops start-up here
        self.metrics_token = config.metrics_token()  # and so does an unreadable token file
        self.metrics = Metrics("cloud")
        self.store: Store | None = None
        self.evidence: EvidenceStore | None = None
        self.access: Access | None = None
        self.scheduler: Scheduler | None = None
        self.repeats: RepeatNotifier | None = None
        self.downlink: Downlink | None = None
        # Read at start, so a key file others may read (or that is not a key) stops start-up.
        self.watchlist_keys: CloudKeys | None = (
            cloud_keys(config.watchlists) if config.watchlists is not None else None
        )
        self.watchlist_downlink: WatchlistDownlink | None = None
        self.watchdog: Watchdog | None = None
        self.retention: EvidenceRetention | None = None
        self.false_matches = FalseMatches(self.metrics)
        self.hub = Hub(
            snapshot=self._snapshot, recheck=self._session_valid,
            recheck_s=config.access.websocket_recheck_s,
        )
        self.telemetry: TelemetryStore | None = None
        self.streams: list[MqttClient] = []  # ingest, one per stream
        self.downlinks: list[MqttClient] = []  # publish-only, one per downlink role
        self.http_port: int | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def _snapshot(self, principal: Principal) -> list[dict[str, Any]]:
        assert self.store is not None
        return await self.store.list_alerts(limit=SNAPSHOT_SIZE, where=[principal.where()])

    async def _session_valid(self, token: str) -> bool:
        assert self.access is not None
        return await self.access.authenticate(token) is not None

    def _on_alert(self, alert: dict[str, Any]) -> None:
        self.hub.broadcast({"type": "alert", "alert": alert})
        if self.scheduler is not None:
            self.scheduler.wake()
        self._tell_gateways()

    def _on_change(self, alert: dict[str, Any]) -> None:
        """A person changed an alert (acknowledged, dispatched, resolved, saw it)."""
        self.hub.broadcast({"type": "alert_updated", "alert": alert})
        self._tell_gateways()

    def _watchlists_changed(self) -> None:
        """An enrolment or removal here: its gateways hear of it now, not at the poll."""
        if self.watchlist_downlink is not None:
            self.watchlist_downlink.wake()

    def _tell_gateways(self) -> None:
        if self.downlink is not None:
            self.downlink.wake()

    async def _on_update(self, alert: dict[str, Any], why: str) -> None:
        """A gateway escalated, repeated or resolved an alert: dashboards see it; a closed
        one stops escalating; a repeat of a case someone has goes to them."""
        summary = {k: v for k, v in alert.items() if k != "timeline"}
        self.hub.broadcast({"type": "alert_updated", "alert": summary})
        self._tell_gateways()
        if alert["state"] != "open":
            await self._left_open(alert["id"])
        if why == "repeated" and self.repeats is not None and self.config.alert_duties:
            await self.repeats.repeated(alert)

    async def _left_open(self, alert_id: str) -> None:
        if self.scheduler is not None:
            await self.scheduler.timers.cancel(alert_id)

    async def _confirmed(self, alert: dict[str, Any]) -> None:
        """A person confirmed a watchlist match: its policy's confirmed stages, now."""
        if self.scheduler is not None:
            await self.scheduler.timers.plan_confirmed(
                alert["id"], alert["type"], alert["detail"], self.clock.now_ms())
            self.scheduler.wake()

    async def start(self) -> None:
        self.store = await Store.connect(self.config.database_url)
        self.evidence = EvidenceStore(self.config.evidence, self.store, self.metrics)
        self.access = Access(self.store.engine, self.clock, self.config.access)
        duties = self.config.alert_duties  # the database decides who fires what
        self.dispatcher = build_notify(self.config.notify, self.store, self.clock)
        await self.dispatcher.start(run=duties)
        if self.notifier is None:
            self.notifier = DispatchNotifier(self.dispatcher)
        esc = self.config.escalation
        self.scheduler = Scheduler(
            Timers(self.store, self.clock, self.policies, self.config.worker_id,
                   round(esc.lease_s * 1000)),
            self.store, self.access, self.notifier, esc.poll_s, esc.notify_timeout_s,
        )
        self.repeats = RepeatNotifier(
            self.scheduler.timers, self.access, self.notifier, esc.repeat_notify_s,
            esc.notify_timeout_s,
        )
        if duties and self.policies.policies:  # no policy file: nothing to plan, no loop
            self._tasks.append(
                asyncio.create_task(self.scheduler.run(), name="cloud-escalation")
            )
        # Those workers run it too: the alert id and the database keep one alert per outage.
        self.watchdog = Watchdog(
            self.store, self.clock, self.config.watchdog, on_alert=self._on_alert,
            on_change=self._on_change, on_left_open=self._left_open,
        )
        if duties and self.config.watchdog.enabled:
            self._tasks.append(asyncio.create_task(self.watchdog.run(), name="cloud-watchdog"))
        self.retention = EvidenceRetention(
            self.store, self.evidence, self.clock, self.config.watchlist_retention,
            on_expired=self._watchlists_changed,
            lists={name: own.retention_days for name, own in (
                self.config.watchlists.lists.items() if self.config.watchlists else ())})
        if duties and self.config.watchlist_retention.enabled:
            self._tasks.append(
                asyncio.create_task(self.retention.run(), name="cloud-watchlist-retention"))
        self.telemetry = await open_telemetry(self.config.telemetry, self.store)
        if self.config.api:
            feed = ChangeFeed(self.store, self.hub, self.config.feed_poll_s)
            await feed.start_position()
            self._tasks.append(asyncio.create_task(feed.run(), name="cloud-feed"))
            lifecycle = Lifecycle(
                self.store, self.access,
                on_change=self._on_change,
                on_left_open=self._left_open,
                responders=self.policies.responders_for,
                on_confirmed=self._confirmed,
                on_false_match=self.false_matches.count,
            )
            app = build_app(
                self.store, self.hub, self.metrics, self._broker_state, self.access, lifecycle,
                metrics_token=self.metrics_token,
            )
            # Made on the first start of an API worker, then read back by every worker.
            key = await EvidenceKey.load_or_create(self.store, self.clock.now_ms())
            add_routes(app, self.evidence, key)
            app[residents.TELEMETRY] = self.telemetry  # vitals charts read it
            app[watchlists.FACES].keys = self.watchlist_keys
            if self.config.watchlists is not None:
                app[watchlists.FACES].lists = dict(self.config.watchlists.lists)
            app[watchlists.FACES].changed = self._watchlists_changed
            push_routes(app, _current_user, self.dispatcher)
            family_routes(app)
        else:
            app = build_monitor_app(
                self.hub, self.metrics, self._broker_state, metrics_token=self.metrics_token
            )
        if self.config.api or self.config.ingest:
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.config.http.host, self.config.http.port)
            await site.start()
            assert site._server is not None
            self.http_port = site._server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
            what = "dashboard" if self.config.api else "metrics and health"
            log.info("%s on http://%s:%s", what, self.config.http.host, self.http_port)
        if self.config.ingest:
            await self._start_ingest()

    async def _start_ingest(self) -> None:
        """An MQTT client per role, each on its role's broker account (docs/provisioning.md):
        ingest reads the uplink and confirms; each downlink only publishes its own kind."""
        assert self.store is not None
        alert_news = await self._downlink_client("alert_downlink")
        watchlist_client = (await self._downlink_client("watchlist_downlink")
                            if self.watchlist_keys is not None else None)
        for stream in self.config.streams:
            client = MqttClient(
                self.config.broker_for("ingest"),
                client_id=f"{self.config.worker_id}-{stream}",
                persistent=True,
                manual_ack=True,
            )
            for topic in CLOUD_STREAMS[stream]:
                client.subscribe(topic, 1)
            await client.start()
            self.streams.append(client)
            if stream == "alerts":
                # Gateways hear of every change to their alerts from the alerts workers.
                self.downlink = Downlink(self.store, alert_news, self.config.feed_poll_s)
                await self.downlink.start_position()
                self._tasks.append(
                    asyncio.create_task(self.downlink.run(), name="cloud-downlink")
                )
                if self.watchlist_keys is not None:
                    assert watchlist_client is not None
                    self.watchlist_downlink = WatchlistDownlink(
                        self.store, self.watchlist_keys, watchlist_client,
                        self.config.feed_poll_s, self.clock,
                    )
                    self._tasks.append(asyncio.create_task(
                        self.watchlist_downlink.run(), name="cloud-watchlist-downlink"))
            ingest = Ingest(
                client,
                self.store,
                self.metrics,
                on_alert=self._on_alert,
                on_update=self._on_update,
                max_payload_bytes=self.config.max_payload_bytes,
                evidence=self.evidence,
                telemetry=self.telemetry,
                require_registered_sites=self.config.require_registered_sites,
                clock=self.clock,
                watchlist_keys=self.watchlist_keys,
                alert_news=alert_news,
                watchlist_client=watchlist_client,
            )
            self._tasks.append(asyncio.create_task(ingest.run(), name=f"cloud-{stream}"))

    async def _downlink_client(self, role: Role) -> MqttClient:
        """A publish-only client. Not persistent: it subscribes to nothing, and what it did
        not get a PUBACK for its sender publishes again (the next round, the next report)."""
        client = MqttClient(
            self.config.broker_for(role),
            client_id=f"{self.config.worker_id}-{role.replace('_', '-')}",
        )
        await client.start()
        self.downlinks.append(client)
        return client

    def _broker_state(self) -> bool | None:
        clients = self.streams + self.downlinks
        return all(c.connected for c in clients) if clients else None

    async def wait_connected(self, timeout: float) -> None:
        for client in self.streams + self.downlinks:
            await client.wait_connected(timeout)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for client in self.streams + self.downlinks:
            await client.close()
        self.streams, self.downlinks = [], []
        await self.hub.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.dispatcher is not None:
            await self.dispatcher.stop()
        if self.telemetry is not None:
            await self.telemetry.close()
            self.telemetry = None
        if self.store is not None:
            await self.store.close()

    async def wait_failed(self) -> None:
        if not self._tasks:
            await asyncio.Event().wait()
        done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
        raise RuntimeError("a cloud task ended unexpectedly")


async def _current_user(request: web.Request) -> str | None:
    """The logged-in user's name for the push-subscription routes (the login middleware ran)."""
    found = request.get(PRINCIPAL)
    return found.username if isinstance(found, Principal) else None


async def run(config: CloudConfig) -> None:
    if config.nice:
        os.nice(config.nice)
        log.info("data-only worker: CPU priority lowered by %d (data_worker_nice)", config.nice)
    server = CloudServer(config)
    await server.start()
    heap.settle()
    try:
        await server.wait_failed()
    finally:
        await server.stop()
