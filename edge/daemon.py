"""The edge daemon: one asyncio process wiring broker ingest, pipeline, outbox and uplink."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from typing import Any

import orjson
from aiohttp import web

from edge.adapters.cjt188_client import Cjt188MeterConfig, Cjt188Poller
from edge.adapters.modbus import ModbusMeterConfig, ModbusPoller
from edge.adapters.polling import Poller
from edge.config import EdgeConfig
from edge.deadletter import dead_letter
from edge.evidence import EvidenceSpool, EvidenceUploader
from edge.fallback import LOCAL_ALARM_TOPIC, LocalFallback
from edge.firmware import ConfigIssue, ConfigPusher, FirmwareConfigs, PushStep
from edge.liveness import Liveness, Transition
from edge.outbox import Drops, MiB, NewRow, Outbox, Priority, tally
from edge.pipeline import Outcome, Pipeline
from edge.rules.book import Notice, parse_news
from edge.rules.engine import RuleEngine, RuleOutput
from edge.uplink import GATEWAY_DEVICE, Uplink
from edge.video.face.downlink import CloudWatchlists
from edge.video.face.expiry import EnrolmentExpiry
from edge.video.face.store import WatchlistStore
from edge.video.supervisor import CameraSupervisor
from shouwang import heap, logs
from shouwang.clock import Clock, SystemClock
from shouwang.config import ConfigError
from shouwang.ids import derived_id
from shouwang.metrics import Metrics
from shouwang.mqtt import SESSION_NEVER_EXPIRES, Message, MqttClient, MqttError
from shouwang.profiles import DeviceProfile, load_profiles
from shouwang.protocol import Rejection, make_envelope, now_ms, site_up_topic
from shouwang.records import Alert, Event, Reading

log = logging.getLogger(__name__)
# A full disk: telemetry and bulk rows are shed at the door (counted in the drop ledger); if
# the rest still does not fit in the room the reserve gave, the lowest classes give up this
# much, oldest first, and the commit is tried again (docs/disk.md).
SHED_AT_DOOR = (Priority.TELEMETRY, Priority.BULK)
SHED_STEP_BYTES = 1024 * 1024
PUT_RETRY_FIRST_S = 0.25  # rows that could not be stored are tried again after this, doubling
PUT_RETRY_MAX_S = 5.0  # ... up to this
OPEN_RETRY_MAX_S = 30.0  # an outbox that cannot open (a full disk) is tried at most this far apart
GATEWAY_REPORT_S = 60.0
STOP_NOTICE_TIMEOUT_S = 2.0  # a planned stop waits this long for the cloud broker's PUBACK
POLLED_PROTOCOLS: dict[str, tuple[Any, Any]] = {
    "modbus": (ModbusMeterConfig, ModbusPoller),
    "cjt188": (Cjt188MeterConfig, Cjt188Poller),
}  # the gateway's own health, to the cloud


def check_bindings(config: EdgeConfig, profiles: dict[str, DeviceProfile]) -> None:
    """Every device names a profile that exists, and the rules load; raises ConfigError."""
    for i, d in enumerate(config.devices):
        if d.profile not in profiles:
            raise ConfigError(
                f"devices[{i}].profile: unknown profile {d.profile!r}"
                f" (known: {', '.join(sorted(profiles))})"
            )
    RuleEngine.for_site(config, profiles, SystemClock(), load_state=False)


class EdgeDaemon:
    def __init__(
        self,
        config: EdgeConfig,
        profiles: dict[str, DeviceProfile] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.profiles = profiles if profiles is not None else load_profiles()
        check_bindings(config, self.profiles)
        self.clock: Clock = clock or SystemClock()
        self.rules = RuleEngine.for_site(config, self.profiles, self.clock)
        self._broker_changes: list[bool] = []  # edge broker up/down, applied by the watch loop
        # Rule deadlines (a fall's cancel window, a threshold's duration) are timers of their
        # own: `_rule_timers` sleeps until the earliest, and is woken when a batch, a poll or
        # a watch round brings an earlier one (`_rearm`), or when an injected clock moves.
        self._timers_changed = asyncio.Event()
        self._armed_due: int | None = None
        self.rule_rounds = 0  # completed rule-timer rounds (a scenario waits on it)
        # Rule state may be saved only when every row it implies is committed: whoever changes
        # it (a batch, polled readings, a watch round) holds this from the change to the save.
        # Saved ahead of its rows, a crash would leave an escalation or a broker-down alert
        # "raised" that was never stored (a redelivered press gives its SOS again; those not).
        self._rules_lock = asyncio.Lock()
        self.watch_rounds = 0  # completed watch-loop rounds (a scenario waits on it)
        self._complaints = logs.Throttled(log)  # a rejection reason once per device a minute
        self.metrics = Metrics("edge")
        # Enrolled faces leave the watchlist at the end of their retention (docs/face.md).
        self.face_expiry = EnrolmentExpiry(config.data_dir, self.clock, self.metrics)
        self.outbox_depth = self.metrics.gauge(
            "shouwang_outbox_depth", "Messages waiting in the outbox, by priority class", ["klass"]
        )
        self.pipeline = Pipeline(
            config.site,
            {d.id: d for d in config.devices},
            self.profiles,
            config.max_payload_bytes,
            self.rules,
        )
        q = config.outbox
        self.outbox = Outbox(
            config.data_dir / "outbox.sqlite",
            quotas={
                Priority.LIFE_SAFETY: int(q.life_safety_mib * MiB),
                Priority.SECURITY: int(q.security_mib * MiB),
                Priority.HEALTH: int(q.health_mib * MiB),
                Priority.TELEMETRY: int(q.telemetry_mib * MiB),
                Priority.BULK: int(q.bulk_mib * MiB),
            },
            reserve_bytes=int(q.reserve_mib * MiB),
        )
        self.liveness = Liveness(
            self.profiles, {d.id: d.profile for d in config.devices}, self.clock
        )
        self.firmware = ConfigPusher(FirmwareConfigs.load(profiles=self.profiles), self.clock)
        self.transitions = self.metrics.counter(
            "shouwang_device_state_changes_total", "Liveness transitions", ["dimension", "new"]
        )
        self._health_topic = site_up_topic(config.site, "health")
        self._polled: list[Reading] = []
        self._polled_changes: list[Transition] = []
        self._polled_seen: set[str] = set()
        self._polled_ready = asyncio.Event()
        # One poller per polled protocol, keyed by the device's link block in the site config.
        self.pollers: dict[str, Poller[Any]] = {}
        for block, (meter_config, poller_class) in POLLED_PROTOCOLS.items():
            meters = [
                meter_config(id=d.id, profile=d.profile, **link.model_dump())
                for d in config.devices
                if (link := getattr(d, block)) is not None
            ]
            if meters:
                self.pollers[block] = poller_class(
                    meters, self.profiles, self._on_polled, self._on_availability
                )
        self._wake_watch = asyncio.Event()
        self._alert_topic = site_up_topic(config.site, "alert")
        self._event_topic = site_up_topic(config.site, "event")
        self._telemetry_topic = site_up_topic(config.site, "telemetry")
        self._ingest_drops_noted = 0
        # The gateway's session on its own broker never expires: whatever devices send while
        # the daemon is down (crash, upgrade, a long outage) waits for it there.
        self.edge_mqtt = MqttClient(
            config.edge_broker,
            client_id=f"edge-{config.site}",
            persistent=True,
            session_expiry_s=SESSION_NEVER_EXPIRES,
            manual_ack=True,
            on_connection_change=self._edge_connection_changed,
        )
        self.cloud_mqtt = MqttClient(
            config.cloud_broker,
            client_id=f"edge-{config.site}-uplink",
            persistent=True,
            # The cloud's gateway watchdog hears at once of a connection that dies uncleanly.
            # Not retained: a stale "offline" must not greet whoever subscribes later.
            will=gateway_offline_notice(config.site, "connection_lost"),
            will_retain=False,
            on_connection_change=self._cloud_connection_changed,
        )
        # Producers (camera workers, rules) hand evidence to the spool; the uplink uploads it.
        self.evidence = EvidenceSpool(config.site, config.data_dir / "evidence", self.outbox)
        self.uploader = (
            EvidenceUploader(config.evidence, self.evidence) if config.evidence else None
        )
        # The cloud's watchlists for this site, into the store the camera workers read.
        self.watchlists = CloudWatchlists(
            WatchlistStore(config.data_dir), config.site, config.cloud_watchlist_key,
            self.metrics,
        )
        self.uplink = Uplink(
            self.outbox, self.cloud_mqtt, config.uplink, config.site, self.uploader,
            on_news=self._follow_cloud, on_refused=self._refused,
            on_down={"watchlist": self._watchlist},
        )
        self.news = self.metrics.counter(
            "shouwang_alert_news_total",
            "The cloud's word on this site's alerts, by what it changed in the rules' book",
            ["change"],
        )
        self.fallback = LocalFallback(config.fallback, self.edge_mqtt, self.clock)
        # Each camera's decoding and analysis run in a worker process of its own.
        self.video = (
            CameraSupervisor(config.cameras, config.edge_broker, config.data_dir, self.metrics)
            if config.cameras else None
        )
        self._critical_announced = False
        # Rows that could not be written (a full disk), waiting in memory; see `_put_rows`.
        self._parked: list[NewRow] = []
        self._parked_drops: dict[int, Drops] = {}
        self._sent_around: set[str] = set()  # life-safety rows the cloud broker has from us
        self._report_now = False  # a gateway report goes out at the next watch round
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self.http_port: int | None = None
        wake_on_change = getattr(self.clock, "wake_on_change", None)
        if wake_on_change is not None:  # a test's clock: moving it is time passing
            wake_on_change(self._timers_changed)
            wake_on_change(self._wake_watch)

    def _edge_connection_changed(self, up: bool) -> None:
        self._broker_changes.append(up)  # applied under the rules lock, not in this callback
        self._wake_watch.set()

    def poke(self) -> None:
        """Re-check every deadline now (the clock was moved: a scenario, an NTP step)."""
        self._wake_watch.set()
        self._timers_changed.set()

    def _cloud_connection_changed(self, up: bool) -> None:
        log.info("uplink to cloud broker %s", "up" if up else "down")
        self.uplink.connection_changed(up)
        self.fallback.uplink_changed(up)
        # Back after a blip: report at once, before the cloud's will grace runs out.
        self._report_now = self._report_now or up
        self._wake_watch.set()

    async def start(self) -> None:
        delay = PUT_RETRY_FIRST_S
        while True:
            try:
                await self.outbox.open()
                break
            except sqlite3.OperationalError as err:
                # A full disk with nothing left to release: wait for room, do not crash-loop.
                if not self.outbox.disk.full:
                    raise
                log.error("outbox cannot open on a full disk (%s); retrying in %g s", err, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, OPEN_RETRY_MAX_S)
        self.rules.on_save_failed = self.outbox.disk.write_failed
        disk = self.outbox.disk
        self.metrics.gauge(
            "shouwang_disk_full", "1 while the data directory's disk is full (reserve released)"
        ).set_function(lambda: float(disk.full))
        self.metrics.gauge(
            "shouwang_disk_free_bytes", "Free bytes on the data directory's filesystem"
        ).set_function(lambda: float(disk.free()))
        self.metrics.gauge(
            "shouwang_disk_reserve_bytes", "Bytes the disk reserve holds for life-safety now"
        ).set_function(lambda: float(disk.reserve.held()))
        await self.evidence.sweep()
        await self.watchlists.start()
        if self.outbox.damaged is not None:
            body = {"type": "outbox_damaged", "kept_as": self.outbox.damaged.name}
            try:
                await self.outbox.put_many([self._health_row(body, now_ms())], now_ms())
            except sqlite3.Error as err:
                log.error("outbox_damaged health message not stored: %s", err)
        await self._refresh_depth()
        await self._start_http()
        self.edge_mqtt.subscribe("dev/+/telemetry", 1)
        self.edge_mqtt.subscribe("dev/+/event", 1)
        self.edge_mqtt.subscribe("dev/+/status", 1)
        await self.edge_mqtt.start()
        await self.cloud_mqtt.start()
        self._tasks = [
            asyncio.create_task(self._consume(), name="edge-consume"),
            asyncio.create_task(self.uplink.run(), name="edge-uplink"),
            asyncio.create_task(self.uplink.receive_confirmations(), name="edge-confirmations"),
            asyncio.create_task(self._watch(), name="edge-watch"),
            asyncio.create_task(self._rule_timers(), name="edge-rule-timers"),
            asyncio.create_task(self._store_polled(), name="edge-polled"),
            asyncio.create_task(
                disk.run(self.outbox.check_disk, self._disk_round), name="edge-disk"
            ),
        ]
        for poller in self.pollers.values():
            await poller.start()
        if self.video is not None:
            await self.video.start()
        self.uplink.notify()  # drain whatever a previous run left behind
        log.info("edge daemon for site %s started", self.config.site)

    async def stop(self) -> None:
        if self.video is not None:
            await self.video.stop()
        for poller in self.pollers.values():
            await poller.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self._announce_stop()
        await self.edge_mqtt.close()
        await self.cloud_mqtt.close()
        if self.uploader is not None:
            await self.uploader.close()
        await self.rules.save(force=True)
        await self.outbox.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _announce_stop(self) -> None:
        """A planned stop still leaves the site unwatched: tell the cloud, which alerts after
        its will grace unless the gateway is back by then (a restart, an upgrade). A clean
        disconnect does not fire the will, so this says it instead; best effort, the cloud's
        silence timeout covers a notice that does not get out."""
        topic, payload = gateway_offline_notice(self.config.site, "stopped")
        try:
            async with asyncio.timeout(STOP_NOTICE_TIMEOUT_S):
                await self.cloud_mqtt.publish(topic, payload, qos=1)
        except (MqttError, TimeoutError) as err:
            log.warning("planned stop not announced to the cloud: %s", err)

    async def _start_http(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._health)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.http.host, self.config.http.port)
        await site.start()
        server = site._server
        assert server is not None
        self.http_port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        await self._refresh_depth()
        return await self.metrics.handle(request)

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "site": self.config.site,
                "edge_broker": self.edge_mqtt.connected,
                "cloud_broker": self.cloud_mqtt.connected,
                "outbox": await self.outbox.depth(),
                "outbox_critical": self.outbox.critical,
                "devices": self.liveness.snapshot(),
                "firmware": self.firmware.snapshot(),
                "rules": self.rules.snapshot(),
            }
        )

    async def _refresh_depth(self) -> None:
        depth = await self.outbox.depth()
        for klass in Priority:
            self.outbox_depth.labels(klass.name.lower()).set(depth.get(int(klass), 0))

    async def _consume(self) -> None:
        """Store what devices sent, a batch per transaction, then acknowledge it.

        Idle, a batch is one message (no added latency); under load, whatever queued up while
        the last transaction committed goes into the next one. Nothing is acknowledged to the
        broker before it is stored, so a crash at any point makes the broker send it again.
        """
        limit = self.config.outbox.consume_batch
        while True:
            batch = [await self.edge_mqtt.messages()]
            batch += self.edge_mqtt.drain(limit - 1)
            await self._store_with_retry(batch)
            self.edge_mqtt.ack_many(batch)
            await self._note_ingest_drops()

    async def _store_with_retry(self, batch: list[Message]) -> None:
        """Store a batch; what fails after its rows are committed is retried whole (the ids
        make a second pass a no-op). The commit itself is `_put_rows`'s.

        When nothing can be written, the batch's rows wait in memory (`_put_rows`) and the
        batch stays unacknowledged, so the broker keeps its messages; meanwhile what else
        arrives is taken in too (each press still announced on site and sent straight to the
        cloud broker as it comes) and joins the batch, until the commit goes through. The
        broker's receive maximum bounds how many unacknowledged messages that can be."""
        delay = PUT_RETRY_FIRST_S
        while True:
            try:
                await self.handle_batch(batch)
                if delay > PUT_RETRY_FIRST_S:
                    log.warning("storing device messages works again")
                break
            except (sqlite3.Error, OSError) as err:
                self.metrics.reject("outbox_error")
                if delay == PUT_RETRY_FIRST_S:  # once a streak, not once a retry
                    log.error("storing device messages failed (%s); retrying with back-off", err)
                await asyncio.sleep(delay)
                delay = min(delay * 2, PUT_RETRY_MAX_S)
        loop = asyncio.get_running_loop()
        delay = PUT_RETRY_FIRST_S
        retry_at = loop.time() + delay
        while self._parked or self._parked_drops:
            try:
                async with asyncio.timeout(max(0.0, retry_at - loop.time())):
                    first: Message | None = await self.edge_mqtt.messages()
            except TimeoutError:
                first = None
            if first is not None:
                more = [first, *self.edge_mqtt.drain(self.config.outbox.consume_batch - 1)]
                batch += [m for m in more if m.qos > 0]  # acknowledged with the batch
                await self._take_in_while_waiting(more)
            if loop.time() < retry_at:
                continue  # a flood of messages does not hammer a failing disk
            if await self._commit_parked():
                return
            delay = min(delay * 2, PUT_RETRY_MAX_S)
            retry_at = loop.time() + delay

    async def _take_in_while_waiting(self, messages: list[Message]) -> None:
        """Messages that arrived while rows wait for the outbox: their rows wait too."""
        try:
            await self.handle_batch(messages)
        except (sqlite3.Error, OSError) as err:
            # Not from the outbox (its rows only join the waiting ones); unacknowledged,
            # they come again after a restart.
            log.error("taking in device messages while rows wait failed: %s", err)

    async def _put_rows(self, rows: list[NewRow]) -> list[bool]:
        """Commit rows; per row, whether it was new. Never raises a write error.

        Only the commit is retried: the rules have already taken the rows' messages in, and
        a second pass would feed them the same readings twice (a threshold's duration, a
        day's routine). On a full disk (edge/disk.py) telemetry and bulk rows are shed at the
        door into the drop ledger, then the lowest classes in the outbox give up room. When
        even so nothing can be written, the rows wait in memory (`_parked`, their rule state
        not saved meanwhile): life-safety ones are announced on site and published straight
        to the cloud broker (the cloud stores an alert id once), and the commit is retried
        with a back-off (`_store_with_retry`, and the disk watch when no device is talking).
        Rows that wait are reported new."""
        if self._parked or self._parked_drops:
            self._park(rows)  # behind what already waits, in order
            await self._send_around(rows)
            return [True] * len(rows)
        disk = self.outbox.disk
        shed_tried = False
        while True:
            shedding = disk.full
            keep = [r for r in rows if not (shedding and r.priority in SHED_AT_DOOR)]
            dropped = tally(r for r in rows if shedding and r.priority in SHED_AT_DOOR)
            try:
                stored = iter(await self.outbox.put_many(keep, now_ms(), list(dropped.values())))
            except sqlite3.Error as err:
                self.metrics.reject("outbox_error")
                disk.write_failed(err)  # the outbox told it already; this covers any writer
                if disk.full and not shedding:
                    continue  # this write found the disk full: shed at the door, try again
                if disk.full and not shed_tried and await self._shed():
                    shed_tried = True
                    continue
                log.error(
                    "outbox write failed (%s): rows wait in memory, retried with back-off;"
                    " life-safety alerts are announced on site and sent straight to the cloud",
                    err,
                )
                self._park(rows)
                await self._send_around(rows)
                return [True] * len(rows)
            return [False if shedding and r.priority in SHED_AT_DOOR else next(stored)
                    for r in rows]

    async def _shed(self) -> int:
        """A full disk: the lowest classes give up a step of room, oldest first."""
        try:
            freed = await self.outbox.shed(SHED_STEP_BYTES)
        except sqlite3.Error:
            return 0
        if freed:
            log.error("disk full: shed %d bytes of the lowest classes", freed)
        return freed

    def _park(self, rows: list[NewRow]) -> None:
        # Nothing can be written: shed at the door whatever the disk says, or a telemetry flood
        # would grow in memory; what waits is counted in the ledger when it is written.
        self._parked += [r for r in rows if r.priority not in SHED_AT_DOOR]
        tally((r for r in rows if r.priority in SHED_AT_DOOR), self._parked_drops)
        # The rule state must not run ahead of rows that are not stored: after a crash the
        # broker's redelivery would be folded into alerts the outbox never had.
        self.rules.save_held = True

    async def _commit_parked(self) -> bool:
        """Try once to store the rows that wait in memory; True when none wait any more."""
        async with self._rules_lock:
            if not (self._parked or self._parked_drops):
                return True
            rows = list(self._parked)
            try:
                await self.outbox.put_many(rows, now_ms(), list(self._parked_drops.values()))
            except sqlite3.Error as err:
                self.metrics.reject("outbox_error")
                if self.outbox.disk.write_failed(err):
                    await self._shed()
                await self._send_around(rows)  # straight publishes that failed, again
                return False
            self._parked = []
            self._parked_drops = {}
            self._sent_around = set()
            self.rules.save_held = False
            await self.rules.save()
        log.warning("outbox writes work again: %d waiting rows stored", len(rows))
        self.uplink.notify()
        return True

    async def _send_around(self, rows: list[NewRow]) -> None:
        """Life-safety rows the outbox cannot take: announced on site (the local fallback, each
        once) and published straight to the cloud broker, best effort. The outbox still stores
        and sends them when it can; the cloud stores an alert id once."""
        urgent = [r for r in rows if r.priority == Priority.LIFE_SAFETY]
        if not urgent:
            return
        await self.fallback.announce(
            [r.payload for r in urgent], reason="not stored: the gateway cannot write to its disk"
        )
        urgent = [r for r in urgent if r.id not in self._sent_around]
        if not urgent or not self.cloud_mqtt.connected:
            return
        timeout = self.config.uplink.publish_timeout_s
        results = await asyncio.gather(
            *(self.cloud_mqtt.publish(r.topic, r.payload, qos=1, timeout=timeout) for r in urgent),
            return_exceptions=True,
        )
        for row, result in zip(urgent, results, strict=True):
            if result is None:
                self._sent_around.add(row.id)
                log.warning("life-safety alert sent straight to the cloud broker",
                            extra={"alert": row.id})
            elif not isinstance(result, MqttError):
                log.error("life-safety alert %s not sent straight: %r", row.id, result)

    async def _disk_round(self) -> None:
        """The disk watch's round: rows that wait get another try, then what changed is said."""
        if self._parked or self._parked_drops:
            await self._commit_parked()
        await self._check_critical()

    async def _note_ingest_drops(self) -> None:
        dropped = self.edge_mqtt.dropped_incoming - self._ingest_drops_noted
        if dropped > 0:
            try:
                await self.outbox.note_drops(Priority.TELEMETRY, dropped, now_ms())
            except sqlite3.Error as err:
                log.warning("ingest drops not recorded yet (%s); counted again next time", err)
                return
            self._ingest_drops_noted += dropped

    async def wait_failed(self) -> None:
        """Return (raising) when a background task dies; the process should then exit."""
        done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
        raise RuntimeError("an edge task ended unexpectedly")

    async def handle_batch(self, batch: list[Message]) -> list[Outcome | Rejection]:
        """Validate each message, then store its alerts and readings in one transaction."""
        async with self._rules_lock:
            return await self._handle_batch(batch)

    async def _handle_batch(self, batch: list[Message]) -> list[Outcome | Rejection]:
        results: list[Outcome | Rejection] = []
        rows: list[NewRow] = []
        alerts: list[Alert] = []
        notices: list[Notice] = []
        evidence: list[Event] = []  # a camera's clips and snapshots, kept after the commit
        readings = []
        pushes: list[PushStep] = []
        kinds: dict[str, int] = {}  # counted once per batch, not per message
        for message in batch:
            try:
                result = self.pipeline.process(message.topic, message.payload)
            except Exception as err:
                # A bug must not stop ingest for every other device, nor lose this message:
                # it goes on as an alert that carries it (edge/deadletter.py).
                alerts.append(self._dead_letter(message, err))
                continue
            results.append(result)
            if isinstance(result, Rejection):
                self.metrics.reject(result.reason)
                self._complaints.warning(
                    (_source(message.topic), result.reason), "rejected message: %s",
                    result.detail, extra={"reason": result.reason},
                )
                continue
            kind = result.envelope.kind
            kinds[kind] = kinds.get(kind, 0) + 1
            for bad in result.field_rejections:
                self.metrics.reject(bad.reason)
                self._complaints.warning(
                    (_source(message.topic), bad.reason), "dropped field: %s", bad.detail,
                    extra={"reason": bad.reason},
                )
            alerts += result.alerts
            notices += result.notices
            for failure in result.failures:  # a rule failed; the others ran
                alerts.append(self._dead_letter(message, failure.error, rule=failure.rule))
            if result.reading is not None:
                readings.append(result.reading)
            if result.event is not None:
                if result.event.name == "evidence":
                    evidence.append(result.event)
                elif self._recorded(result.event):
                    notices.append(_recorded_notice(self.config.site, result.event))
            try:
                rows += self._observe(result, pushes)
            except Exception as err:
                alerts.append(self._dead_letter(message, err))
        if alerts or notices:
            rows = self._rule_rows(RuleOutput(alerts, notices), count=False) + rows
        for kind, n in kinds.items():
            self.metrics.received(kind, n)
        if readings:
            rows.append(self._telemetry_row(readings))
        if not rows:
            await self.rules.save()
            for event in evidence:
                await self._take_evidence(event)
            return results
        stored = await self._put_rows(rows)
        # The rows may leave now: an alert's id comes from its cause, so if the edge dies before
        # the save below, the broker's redelivery raises it again under the same id, and the
        # outbox and the cloud store it once. Waking the uplink after the save cost an SOS the
        # state file's write and fsync (6-10 ms, measured with 40 open alerts).
        self.uplink.notify()
        # Rule state (open alerts, a fall's cancel window) after the rows, before the ack.
        await self.rules.save()
        alert_stored = [
            new for row, new in zip(rows, stored, strict=True) if row.topic == self._alert_topic
        ]
        for alert, is_new in zip(alerts, alert_stored, strict=False):
            if is_new:
                self._count_alert(alert)
        self._rearm()
        await self._check_critical()
        life_safety = [r.payload for r in rows if r.priority == Priority.LIFE_SAFETY]
        if life_safety:
            # The watch round that checks its confirmation is due only when it could be overdue;
            # a round now would queue outbox reads ahead of the uplink sending this very alert.
            asyncio.get_running_loop().call_later(
                self.config.fallback.after_s + 0.05, self._wake_watch.set
            )
        if self.fallback.active():
            await self.fallback.announce(life_safety)
        for step in pushes:
            await self._apply_push(step)
        for event in evidence:
            await self._take_evidence(event)
        return results

    def _observe(self, result: Outcome, pushes: list[PushStep]) -> list[NewRow]:
        """Feed liveness and firmware tracking; returns health rows for what changed."""
        env = result.envelope
        if env.kind == "status":
            changes = self.liveness.observe_status(env.device, env.body, env.ts)
            step = self.firmware.observe_status(env.device, env.body)
        elif result.event is not None:
            changes = self.liveness.observe_data(
                env.device, env.ts, event=result.event.name, fields=result.event.data
            )
            step = self.firmware.observe_event(env.device, result.event.name, result.event.data)
        else:
            values = result.reading.values if result.reading is not None else {}
            changes = self.liveness.observe_data(env.device, env.ts, fields=values)
            step = None
        if step is not None and (step.publish is not None or step.clear or step.issues):
            pushes.append(step)
        return self._transition_rows(changes)

    async def _check_critical(self) -> None:
        """Life-safety over its quota, and a full disk, are on-site alarms and health messages
        to the cloud (once each way), not only log lines. Never raises a write error: a health
        message that cannot be stored now is stored at a later call."""
        critical = self.outbox.critical
        if critical != self._critical_announced:
            self._critical_announced = critical
            usage = {Priority(p).name.lower(): n for p, n in self.outbox.usage().items()}
            body = {"type": "buffer_critical", "critical": critical, "usage_bytes": usage}
            await self._local_alarm(body)
            try:
                await self.outbox.put_many([self._health_row(body, now_ms())], now_ms())
            except sqlite3.Error as err:
                log.error("buffer_critical health message not stored: %s", err)
        disk = self.outbox.disk
        full = disk.full
        if full == disk.told_site and full == disk.told_cloud:
            return
        body = {
            "type": "disk_full",
            "full": full,
            "free_bytes": disk.free(),
            "reserve_bytes": disk.reserve.size,
            "reason": disk.reason if full else "",
        }
        if full != disk.told_site:
            disk.told_site = full  # claimed before the await: callers run side by side
            await self._local_alarm(body)
        if full != disk.told_cloud:
            disk.told_cloud = full
            try:
                await self.outbox.put_many([self._health_row(body, now_ms())], now_ms())
            except sqlite3.Error as err:
                disk.told_cloud = not full  # told at a later call, when a write goes through
                log.warning("disk_full health message not stored yet: %s", err)
                return
            self.uplink.notify()

    async def _local_alarm(self, body: dict[str, Any]) -> None:
        """A gateway condition on the site's own broker (`local/alarm`): a siren, a duty room."""
        message = {"site": self.config.site, "device": GATEWAY_DEVICE, "body": body}
        try:
            await self.edge_mqtt.publish(LOCAL_ALARM_TOPIC, orjson.dumps(message), qos=1)
        except MqttError as err:
            log.error("%s alarm not published locally: %s", body["type"], err)

    async def _apply_push(self, step: PushStep) -> None:
        if step.publish is not None or step.clear:
            payload = b"" if step.clear else orjson.dumps(step.publish)
            try:
                await self.edge_mqtt.publish(step.topic, payload, qos=1, retain=True)
            except MqttError as err:
                log.warning("could not publish config on %s: %s", step.topic, err)
        if step.issues:
            await self._put_rows([self._health_row(_issue_body(i), i.at_ms) for i in step.issues])
            self.uplink.notify()

    def _transition_rows(self, changes: list[Transition]) -> list[NewRow]:
        if not changes:  # the usual case, once per message: nothing changed, nothing to tell
            return []
        self._timers_changed.set()  # a device back from stale has a deadline again
        rows = [self._health_row(_transition_body(t), t.at_ms) for t in changes]
        return rows + self._rule_rows(self.rules.observe_transitions(changes))

    def _rule_rows(self, out: RuleOutput, *, count: bool = True) -> list[NewRow]:
        """Alerts as alert rows (life-safety class where it applies), notices as event rows."""
        rows = []
        for alert in out.alerts:
            envelope = make_envelope(
                site=alert.site, device=alert.device, kind="alert", body=alert.body(),
                ts=alert.ts, id=alert.id,
            )
            priority = Priority.LIFE_SAFETY if alert.life_safety else Priority.SECURITY
            rows.append(
                NewRow(alert.id, priority, self._alert_topic, envelope.to_bytes(), 1, alert.ts,
                       alert.ts)
            )
            if count:
                self._count_alert(alert)
        for n in out.notices:
            envelope = make_envelope(
                site=self.config.site, device=n.device, kind="event", body=n.body, ts=n.ts, id=n.id
            )
            rows.append(
                NewRow(n.id, Priority.SECURITY, self._event_topic, envelope.to_bytes(), 1, n.ts,
                       n.ts)
            )
        return rows

    def _recorded(self, event: Event) -> bool:
        """Whether the device's profile has this event kept in the cloud as it is."""
        binding = self.pipeline.devices.get(event.device)
        spec = self.profiles[binding.profile].events.get(event.name) if binding else None
        return spec is not None and spec.record

    async def _take_evidence(self, event: Event) -> None:
        """A camera worker kept a clip or snapshot (edge/video/worker.py): into the evidence
        spool, with the alert it shows. Its envelope id comes from the message, so a
        redelivery adds nothing."""
        kind = {"clip": ("video/mp4", ".mp4"), "snapshot": ("image/jpeg", ".jpg"),
                "crop": ("image/jpeg", ".jpg"), "marked": ("image/jpeg", ".jpg"),
                "launch": ("image/jpeg", ".jpg"), "marked_clip": ("video/mp4", ".mp4")}
        for field_name, (content_type, suffix) in kind.items():
            digest = event.data.get(field_name)
            if not isinstance(digest, str) or self.video is None:
                continue
            path = self.video.directory(event.device) / "evidence" / f"{digest}{suffix}"
            try:
                data = await asyncio.to_thread(path.read_bytes)
            except OSError as err:
                self.metrics.reject("evidence_missing")
                log.warning("camera %s: evidence %s not readable: %s", event.device, path,
                            err.strerror)
                continue
            alert_id = self.rules.book.alert_for(f"device:{event.device}|{event.data['alert']}")
            try:
                kept = await self.evidence.add(
                    data, content_type=content_type, device=event.device, ts=event.ts,
                    alert=alert_id, now_ms=now_ms(), kind=field_name,
                    envelope_id=derived_id(event.ts, self.config.site, event.id, field_name),
                )
            except ValueError as err:  # empty or over the size limit: the worker's fault
                kept = None
                self.metrics.reject("evidence_error")
                log.error("camera %s: evidence %s not kept: %s", event.device, digest, err)
            # The spool has its own copy now, or refused it (counted there): either way the
            # worker's file has served.
            await asyncio.to_thread(path.unlink, True)
            if kept is not None:
                self.uplink.notify()

    def _dead_letter(
        self, message: Message, err: Exception | str, rule: str | None = None
    ) -> Alert:
        """A message we failed on (a bug), as the alert that carries it to a person."""
        error = err if isinstance(err, str) else f"{type(err).__name__}: {err}"[:500]
        self.metrics.reject("internal_error")
        if isinstance(err, Exception):
            log.error("failed to process a message on %s; sent on as an alert", message.topic,
                      exc_info=err)
        parts = message.topic.split("/")
        binding = self.pipeline.devices.get(parts[1]) if len(parts) == 3 else None
        profile = self.profiles.get(binding.profile) if binding is not None else None
        return dead_letter(self.config.site, message.topic, message.payload, error, now_ms(),
                           binding, profile, rule)

    def _count_alert(self, alert: Alert) -> None:
        update = alert.detail.get("update")
        if update is None:
            self.metrics.alerts.labels("edge", alert.type, alert.severity).inc()
        what = "alert raised" if update is None else f"alert {update}"
        log.info(what, extra={"alert": alert.id, "type": alert.type, "device": alert.device})

    def _health_row(self, body: dict[str, Any], ts: int) -> NewRow:
        if body.get("type") == "device_state":
            self.transitions.labels(body["dimension"], body["new"]).inc()
        envelope = make_envelope(
            site=self.config.site, device=GATEWAY_DEVICE, kind="health", body=body, ts=ts
        )
        return NewRow(
            envelope.id, Priority.HEALTH, self._health_topic, envelope.to_bytes(), 1, ts, ts
        )

    # --- polled meters (Modbus) -----------------------------------------------------------

    def _on_polled(self, reading: Reading) -> None:
        self.metrics.received("telemetry")
        if reading.device not in self._polled_seen:
            # The poller reports changes from "available"; its first answer is the first news.
            self._polled_seen.add(reading.device)
            self._polled_changes += self.liveness.observe_status(
                reading.device, {"state": "online"}
            )
        self._polled.append(reading)
        self._polled_ready.set()

    def _on_availability(self, device: str, available: bool, reason: str) -> None:
        # A polled meter's transport is its bus answering, not an MQTT status.
        state = "online" if available else "offline"
        self._polled_changes += self.liveness.observe_status(device, {"state": state})
        self._polled_ready.set()

    async def _store_polled(self) -> None:
        """Polled readings take the same road as MQTT telemetry: outbox rows, liveness."""
        while True:
            await self._polled_ready.wait()
            self._polled_ready.clear()
            async with self._rules_lock:
                readings, self._polled = self._polled, []
                changes, self._polled_changes = self._polled_changes, []
                out = RuleOutput()
                for r in readings:
                    changes += self.liveness.observe_data(r.device, r.ts, fields=r.values)
                    out.add(self.rules.observe_reading(r))
                rows = self._transition_rows(changes) + self._rule_rows(out)
                if readings:
                    rows.append(self._telemetry_row(readings))
                if rows:
                    await self._put_rows(rows)
                    self.uplink.notify()
                await self.rules.save()
                self._rearm()

    # --- rule timers ----------------------------------------------------------------------

    def _rearm(self) -> None:
        """Wake the rule timers if the rules now have a deadline earlier than the armed one
        (a fall just started its cancel window)."""
        due = self.rules.next_deadline()
        if due is not None and (self._armed_due is None or due < self._armed_due):
            self._timers_changed.set()

    def _timers_due(self) -> tuple[float | None, bool]:
        """Seconds until the next rule or liveness deadline (None: none), and whether one
        is due now."""
        waits = []
        due_now = False
        rule_due = self.rules.next_deadline()
        if rule_due is not None:
            waits.append((rule_due - self.clock.now_ms()) / 1000)
            due_now = rule_due <= self.clock.now_ms()
        stale_at = self.liveness.next_deadline()
        if stale_at is not None:
            # A device is stale once its window has run out, not at its last instant.
            waits.append(stale_at - self.clock.monotonic() + 0.001)
            due_now = due_now or stale_at < self.clock.monotonic()
        self._armed_due = rule_due
        return min(waits, default=None), due_now

    def timers_idle(self) -> bool:
        """No rule or liveness deadline is due and none is being handled (for scenarios)."""
        return not self._timers_due()[1] and not self._rules_lock.locked()

    async def _rule_timers(self) -> None:
        """Fire each deadline when it is due on the injected clock: a fall not cancelled is
        raised at the end of its window, a silent device goes stale at the end of its window,
        not at the next round of anything. Liveness goes first: a rule due at the same moment
        (missing data) must know the device is offline."""
        spun = False
        while True:
            wait, due_now = self._timers_due()
            if not due_now or spun:
                # `spun`: a round left something due (a deadline its tick did not clear);
                # wait a little rather than spin on it.
                timeout = None if wait is None else max(0.05, wait)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._timers_changed.wait()
                self._timers_changed.clear()
                spun = False
                continue
            async with self._rules_lock:
                rows = self._transition_rows(self.liveness.tick())
                rows += self._rule_rows(self.rules.tick())
                if rows:
                    await self._put_rows(rows)
                    self.uplink.notify()
                await self.rules.save()
            spun = self._timers_due()[1]
            self.rule_rounds += 1

    # --- the cloud's word on our alerts ---------------------------------------------------

    async def _follow_cloud(self, payload: bytes) -> None:
        """`site/{site}/down/alert`: the book follows the cloud's life of each alert."""
        words = parse_news(payload)
        if words is None:
            self.metrics.reject("bad_alert_news")
            log.warning("ignored malformed alert news from the cloud (%d bytes)", len(payload))
            return
        async with self._rules_lock:
            for word in words:
                change = self.rules.follow(word, adopt=word.device in self.pipeline.devices)
                if change is None:
                    continue
                self.news.labels(change).inc()
                if change in ("resolved", "false_alarm"):
                    log.info("alert %s is %s in the cloud (by %s): the next occurrence is a "
                             "new alert", word.id, change, word.by)
                else:
                    log.info("alert %s is %s in the cloud (version %d)", word.id, change,
                             word.version)
            await self.rules.save()

    async def _watchlist(self, payload: bytes) -> None:
        """`site/{site}/down/watchlist`: applied, the next report (at once) acknowledges it."""
        if await self.watchlists.handle(payload):
            self._report_now = True
            self._wake_watch.set()

    async def _refused(self, ids: list[str]) -> None:
        """The cloud refused these for good: an alert among them has nothing to fold into."""
        async with self._rules_lock:
            for envelope_id in ids:
                if self.rules.book.forget(envelope_id):
                    log.warning("alert %s refused by the cloud; dropped from the book",
                                envelope_id)
            await self.rules.save()

    async def _watch(self) -> None:
        """Sleep until a config ack times out, a life-safety alert may be overdue, or the
        gateway reports. (Rule and liveness deadlines are `_rule_timers`'.)"""
        next_report = self.clock.monotonic()
        while True:
            now = self.clock.monotonic()
            async with self._rules_lock:
                rows = [self._health_row(_issue_body(i), i.at_ms) for i in self.firmware.tick()]
                pending = RuleOutput()
                changes, self._broker_changes = self._broker_changes, []
                for up in changes:
                    pending.add(self.rules.broker_changed(up))
                rows += self._rule_rows(pending)
                expire = now >= next_report
                if now >= next_report or self._report_now:
                    self._report_now = False
                    rows.append(self._health_row(await self._gateway_body(), now_ms()))
                    next_report = now + GATEWAY_REPORT_S
                if rows:
                    await self._put_rows(rows)
                    self.uplink.notify()
                await self.rules.save()
                self._rearm()
            if expire:  # with the report, each minute; outside the lock (file I/O)
                await self.face_expiry.check()
            self.watch_rounds += 1
            await self._check_critical()
            if self.fallback.active():
                # Published or not: what the cloud has not confirmed, it may not have.
                waiting = await self.outbox.next_batch(
                    1000, priorities=[Priority.LIFE_SAFETY], unsent_only=False
                )
                await self.fallback.announce([r.payload for r in waiting])
            overdue_at = await self._announce_unconfirmed()
            deadlines = [
                d
                for d in (
                    self.firmware.next_deadline(),
                    self.fallback.deadline(),
                    overdue_at,
                )
                if d
            ]
            wake = min([next_report, *deadlines])
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.05, wake - now + 0.01)):
                    await self._wake_watch.wait()
            self._wake_watch.clear()

    async def _announce_unconfirmed(self) -> float | None:
        """Announce life-safety alerts the cloud has not confirmed within `fallback.after_s`,
        though the uplink is up; returns the monotonic second the next one becomes overdue."""
        after_ms = int(self.config.fallback.after_s * 1000)
        wall = now_ms()
        cutoff = wall - after_ms
        overdue = await self.outbox.next_batch(
            1000, priorities=[Priority.LIFE_SAFETY], unsent_only=False, created_before=cutoff
        )
        if overdue:
            await self.fallback.announce(
                [r.payload for r in overdue],
                reason=f"not confirmed by the cloud within {self.config.fallback.after_s:g} s",
            )
        upcoming = await self.outbox.oldest_created(Priority.LIFE_SAFETY, after=cutoff)
        if upcoming is None:
            return None
        return self.clock.monotonic() + (upcoming + after_ms - wall) / 1000

    async def _gateway_body(self) -> dict[str, Any]:
        return {
            "type": "gateway",
            "devices": self.liveness.gateway_health(),
            "outbox_depth": {
                Priority(p).name.lower(): n for p, n in (await self.outbox.depth()).items()
            },
            "outbox_critical": self.outbox.critical,
            "edge_broker": self.edge_mqtt.connected,
            # The alerts this gateway holds open and the version of each it has heard of: the
            # cloud answers with what it missed (cloud/downlink.py).
            "alerts": self.rules.book.versions(),
            # The version of the cloud's watchlists this gateway holds: the acknowledgement,
            # and the cloud sends the current one when it is older (cloud/watchlists.py).
            "watchlist": self.watchlists.held,
            # The cloud's lists it could not match (no tier, or one out of bounds): why.
            "watchlist_refused": dict(self.watchlists.refused),
            # The cloud's signing keys it trusts (fingerprints): the cloud activates a new
            # one only once every gateway has it (docs/face.md).
            "watchlist_keys": await asyncio.to_thread(self.watchlists.trusted),
        }

    def _telemetry_row(self, readings: list[Reading]) -> NewRow:
        """Many readings in one compact message: one row, one publish, one PUBACK."""
        body = {
            "readings": [
                {"id": r.id, "device": r.device, "ts": r.ts, "values": r.values} for r in readings
            ]
        }
        first, last = min(r.ts for r in readings), max(r.ts for r in readings)
        envelope = make_envelope(
            site=self.config.site,
            device=GATEWAY_DEVICE,
            kind="telemetry",
            body=body,
            ts=last,
            id=derived_id(last, self.config.site, *(r.id for r in readings)),
        )
        return NewRow(
            envelope.id,
            Priority.TELEMETRY,
            self._telemetry_topic,
            envelope.to_bytes(),
            len(readings),
            first,
            last,
        )


def _recorded_notice(site: str, event: Event) -> Notice:
    """An event the cloud keeps as it is (a camera's gap ledger); its id from the message."""
    body = {"type": event.name, "event": event.name, "device": event.device, **event.data}
    return Notice(derived_id(event.ts, site, event.id, "recorded"), event.device, event.ts, body)


def _source(topic: str) -> str:
    """The device a topic names, for throttling complaints per device (else the topic)."""
    parts = topic.split("/", 2)
    return parts[1] if len(parts) == 3 and parts[0] == "dev" else topic[:64]


def _transition_body(t: Transition) -> dict[str, Any]:
    return {
        "type": "device_state",
        "device": t.device,
        "dimension": t.dimension,
        "old": t.old,
        "new": t.new,
        "at_ms": t.at_ms,
        "reason": t.reason,
    }


def _issue_body(i: ConfigIssue) -> dict[str, Any]:
    return {"type": "config_issue", "device": i.device, "kind": i.kind, "detail": i.detail}


async def run(config: EdgeConfig) -> None:
    """Run until cancelled (SIGINT/SIGTERM in the CLI)."""
    daemon = EdgeDaemon(config)
    await daemon.start()
    heap.settle()
    try:
        await daemon.wait_failed()
    finally:
        await daemon.stop()


def gateway_offline_notice(site: str, reason: str) -> tuple[str, bytes]:
    """A `gateway_offline` health envelope and its topic: the uplink's will, a planned stop.

    A will is fixed at connect time, so its id and ts are those of the connect; the cloud
    times it by its own receipt and ignores a second delivery of the same id."""
    env = make_envelope(
        site=site, device=GATEWAY_DEVICE, kind="health",
        body={"type": "gateway_offline", "reason": reason},
    )
    return site_up_topic(site, "health"), env.to_bytes()
