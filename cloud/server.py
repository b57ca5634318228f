"""The cloud process: ingest worker and/or API server over one store."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiohttp import web

from cloud.api import build_app
from cloud.config import CloudConfig
from cloud.hub import Hub
from cloud.ingest import Ingest
from cloud.store import Store
from cloud.telemetry import TelemetryStore, open_telemetry
from shouwang.metrics import Metrics
from shouwang.mqtt import MqttClient
from shouwang.protocol import CLOUD_STREAMS

log = logging.getLogger(__name__)
SNAPSHOT_SIZE = 200  # alerts a dashboard gets on (re)connect before live changes


class CloudServer:
    def __init__(self, config: CloudConfig) -> None:
        self.config = config
        self.metrics = Metrics("cloud")
        self.store: Store | None = None
        self.telemetry: TelemetryStore | None = None
        self.hub = Hub(snapshot=self._snapshot)
        self.streams: list[MqttClient] = []
        self.http_port: int | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def _snapshot(self) -> list[dict[str, Any]]:
        assert self.store is not None
        return await self.store.list_alerts(limit=SNAPSHOT_SIZE)

    async def start(self) -> None:
        self.store = await Store.connect(self.config.database_url)
        self.telemetry = await open_telemetry(self.config.telemetry, self.store)
        if self.config.api:
            app = build_app(
                self.store,
                self.hub,
                self.metrics,
                lambda: all(c.connected for c in self.streams) if self.streams else None,
            )
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.config.http.host, self.config.http.port)
            await site.start()
            assert site._server is not None
            self.http_port = site._server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
            log.info("dashboard on http://%s:%s", self.config.http.host, self.http_port)
        if self.config.ingest:
            for stream, topics in CLOUD_STREAMS.items():
                client = MqttClient(
                    self.config.broker,
                    client_id=f"{self.config.worker_id}-{stream}",
                    persistent=True,
                    manual_ack=True,
                )
                for topic in topics:
                    client.subscribe(topic, 1)
                await client.start()
                self.streams.append(client)
                ingest = Ingest(
                    client,
                    self.store,
                    self.metrics,
                    on_alert=lambda a: self.hub.broadcast({"type": "alert", "alert": a}),
                    max_payload_bytes=self.config.max_payload_bytes,
                    telemetry=self.telemetry,
                    require_registered_sites=self.config.require_registered_sites,
                )
                self._tasks.append(asyncio.create_task(ingest.run(), name=f"cloud-{stream}"))

    async def wait_connected(self, timeout: float) -> None:
        for client in self.streams:
            await client.wait_connected(timeout)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for client in self.streams:
            await client.close()
        self.streams = []
        await self.hub.close()
        if self._runner is not None:
            await self._runner.cleanup()
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


async def run(config: CloudConfig) -> None:
    server = CloudServer(config)
    await server.start()
    try:
        await server.wait_failed()
    finally:
        await server.stop()
