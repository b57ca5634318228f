"""Prometheus metrics, one registry per component so in-process tests stay independent."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest


class Metrics:
    """The counters both daemons share; each adds its own on `registry`."""

    def __init__(self, component: str) -> None:
        self.registry = CollectorRegistry()
        self.messages_in = Counter(
            "shouwang_messages_in_total",
            "Messages received, by kind",
            ["component", "kind"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "shouwang_messages_rejected_total",
            "Messages or fields rejected, by reason",
            ["component", "reason"],
            registry=self.registry,
        )
        self.alerts = Counter(
            "shouwang_alerts_total",
            "Alerts raised (edge) or stored for the first time (cloud)",
            ["component", "type", "severity"],
            registry=self.registry,
        )
        self.readings_stored = Counter(
            "shouwang_readings_stored_total", "Telemetry readings stored (new ones only)",
            registry=self.registry,
        )
        self.component = component
        # Labelled children by label value: `labels()` validates and hashes its arguments on
        # every call, which the ingest path did twice per message.
        self._received: dict[str, Any] = {}
        self._rejected: dict[str, Any] = {}

    def counter(self, name: str, doc: str, labels: list[str]) -> Counter:
        return Counter(name, doc, labels, registry=self.registry)

    def gauge(self, name: str, doc: str, labels: list[str] | None = None) -> Gauge:
        return Gauge(name, doc, labels or [], registry=self.registry)

    def histogram(self, name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
        return Histogram(name, doc, buckets=buckets, registry=self.registry)

    def received(self, kind: str, n: int = 1) -> None:
        child = self._received.get(kind)
        if child is None:
            child = self._received[kind] = self.messages_in.labels(self.component, kind)
        child.inc(n)

    def reject(self, reason: str) -> None:
        child = self._rejected.get(reason)
        if child is None:
            child = self._rejected[reason] = self.rejected.labels(self.component, reason)
        child.inc()

    def received_count(self, kind: str) -> float:
        return self.messages_in.labels(self.component, kind)._value.get()

    def rejected_count(self, reason: str) -> float:
        return self.rejected.labels(self.component, reason)._value.get()

    async def handle(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )
