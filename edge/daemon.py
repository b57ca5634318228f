"""The edge daemon: one asyncio process wiring broker ingest, pipeline, outbox and uplink."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3

from aiohttp import web

from edge.config import EdgeConfig
from edge.outbox import Outbox, Priority
from edge.pipeline import Outcome, Pipeline
from edge.uplink import Uplink
from shouwang.config import ConfigError
from shouwang.metrics import Metrics
from shouwang.mqtt import SESSION_NEVER_EXPIRES, Message, MqttClient
from shouwang.profiles import DeviceProfile, load_profiles
from shouwang.protocol import Rejection, make_envelope, now_ms, site_up_topic

log = logging.getLogger(__name__)


def check_bindings(config: EdgeConfig, profiles: dict[str, DeviceProfile]) -> None:
    """Every device names a profile that exists; raises ConfigError naming the device."""
    for i, d in enumerate(config.devices):
        if d.profile not in profiles:
            raise ConfigError(
                f"devices[{i}].profile: unknown profile {d.profile!r}"
                f" (known: {', '.join(sorted(profiles))})"
            )


class EdgeDaemon:
    def __init__(
        self, config: EdgeConfig, profiles: dict[str, DeviceProfile] | None = None
    ) -> None:
        self.config = config
        self.profiles = profiles if profiles is not None else load_profiles()
        check_bindings(config, self.profiles)
        self.metrics = Metrics("edge")
        self.alerts_raised = self.metrics.alerts
        self.outbox_depth = self.metrics.gauge(
            "shouwang_outbox_depth", "Messages waiting in the outbox, by priority class", ["klass"]
        )
        self.pipeline = Pipeline(
            config.site, {d.id: d for d in config.devices}, self.profiles, config.max_payload_bytes
        )
        self.outbox = Outbox(config.data_dir / "outbox.sqlite")
        # The gateway's session on its own broker never expires: whatever devices send while
        # the daemon is down (crash, upgrade, a long outage) waits for it there.
        self.edge_mqtt = MqttClient(
            config.edge_broker,
            client_id=f"edge-{config.site}",
            persistent=True,
            session_expiry_s=SESSION_NEVER_EXPIRES,
            manual_ack=True,
        )
        self.cloud_mqtt = MqttClient(
            config.cloud_broker,
            client_id=f"edge-{config.site}-uplink",
            persistent=True,
            on_connection_change=self._cloud_connection_changed,
        )
        self.uplink = Uplink(self.outbox, self.cloud_mqtt, config.uplink)
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self.http_port: int | None = None

    def _cloud_connection_changed(self, up: bool) -> None:
        log.info("uplink to cloud broker %s", "up" if up else "down")
        self.uplink.connection_changed(up)

    async def start(self) -> None:
        await self.outbox.open()
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
        ]
        self.uplink.notify()  # drain whatever a previous run left behind
        log.info("edge daemon for site %s started", self.config.site)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.edge_mqtt.close()
        await self.cloud_mqtt.close()
        await self.outbox.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

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
            }
        )

    async def _refresh_depth(self) -> None:
        depth = await self.outbox.depth()
        for klass in Priority:
            self.outbox_depth.labels(klass.name.lower()).set(depth.get(int(klass), 0))

    async def _consume(self) -> None:
        while True:
            message = await self.edge_mqtt.messages()
            while True:
                try:
                    await self.handle(message)
                    break
                except sqlite3.Error as err:
                    # Disk full or I/O error: keep the message unacknowledged and try again.
                    self.metrics.reject("outbox_error")
                    log.error("outbox write failed, retrying in 1 s: %s", err)
                    await asyncio.sleep(1.0)
                except Exception:
                    # A bug must not stop ingest for every other device.
                    self.metrics.reject("internal_error")
                    log.exception("failed to process a message on %s", message.topic)
                    break
            # Acknowledged only now: whatever it raised is stored in the outbox.
            self.edge_mqtt.ack(message)

    async def wait_failed(self) -> None:
        """Return (raising) when a background task dies; the process should then exit."""
        done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
        raise RuntimeError("an edge task ended unexpectedly")

    async def handle(self, message: Message) -> Outcome | Rejection:
        result = self.pipeline.process(message.topic, message.payload)
        if isinstance(result, Rejection):
            self.metrics.reject(result.reason)
            log.warning("rejected message: %s", result.detail, extra={"reason": result.reason})
            return result
        self.metrics.received(result.envelope.kind)
        for bad in result.field_rejections:
            self.metrics.reject(bad.reason)
            log.warning("dropped field: %s", bad.detail, extra={"reason": bad.reason})
        for alert in result.alerts:
            envelope = make_envelope(
                site=alert.site,
                device=alert.device,
                kind="alert",
                body=alert.body(),
                ts=alert.ts,
                id=alert.id,
            )
            priority = Priority.LIFE_SAFETY if alert.life_safety else Priority.SECURITY
            stored = await self.outbox.put(
                alert.id,
                priority,
                site_up_topic(alert.site, "alert"),
                envelope.to_bytes(),
                now_ms(),
            )
            if stored:
                self.alerts_raised.labels("edge", alert.type, alert.severity).inc()
                log.info(
                    "alert raised",
                    extra={"alert": alert.id, "type": alert.type, "device": alert.device},
                )
            self.uplink.notify()
        return result


async def run(config: EdgeConfig) -> None:
    """Run until cancelled (SIGINT/SIGTERM in the CLI)."""
    daemon = EdgeDaemon(config)
    await daemon.start()
    try:
        await daemon.wait_failed()
    finally:
        await daemon.stop()
