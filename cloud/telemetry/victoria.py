"""Telemetry in VictoriaMetrics: Influx line protocol in (influxdb-client), PromQL out.

Each reading becomes one line per numeric field (`shouwang,site=..,device=.. heart_rate=71`,
metric `shouwang_heart_rate`) plus a marker line (`shouwang_readings_count`) that `count`
sums. One message's readings go in one POST to `/api/v2/write`. Idempotency: VictoriaMetrics
keys a sample by series and timestamp, so a redelivered reading writes the identical sample
and deduplication (`-dedup.minScrapeInterval=1ms`, which the server must run with) keeps one.
Consequence: two different readings of one device in the same millisecond are one sample.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Literal, cast

import aiohttp
from influxdb_client import WritePrecision
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.rest import ApiException
from pydantic import Field

from cloud.store import Store
from cloud.telemetry import Point, TelemetryBackendError, backend, check_field, numeric, steps
from shouwang.config import Strict

log = logging.getLogger(__name__)
MEASUREMENT = "shouwang"
MARKER = "shouwang_readings"  # field `count`: one per reading, for count()
BUCKET = "shouwang"  # VictoriaMetrics ignores bucket and org; the client requires them


class VictoriaMetricsConfig(Strict):
    backend: Literal["victoriametrics"] = Field(description="Readings in VictoriaMetrics")
    url: str = Field(description="Base URL of VictoriaMetrics, e.g. http://127.0.0.1:8428")
    timeout_s: float = Field(10.0, gt=0, le=300, description="Per-request timeout (seconds)")


class VictoriaMetricsStore:
    def __init__(self, config: VictoriaMetricsConfig) -> None:
        self.url = config.url.rstrip("/")
        self.batch_readings = 5000  # one POST
        self._client = InfluxDBClientAsync(
            url=self.url, token="unused", org="shouwang", timeout=int(config.timeout_s * 1000)
        )
        self._writer = self._client.write_api()
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=config.timeout_s)
        )

    async def write(self, site: str, batch: list[dict[str, Any]]) -> int:
        """Returns how many readings were written, redeliveries included (VM cannot tell)."""
        lines = [line for r in batch for line in _lines(site, r)]
        if lines:
            precision = cast(WritePrecision, WritePrecision.MS)
            try:
                await self._writer.write(
                    bucket=BUCKET, record="\n".join(lines), write_precision=precision
                )
            except ApiException as err:
                if err.status is not None and err.status < 500:
                    raise  # refused for what was sent: retrying would refuse it forever
                raise TelemetryBackendError(f"write to {self.url}: {err}") from err
            except (aiohttp.ClientError, OSError, TimeoutError) as err:
                raise TelemetryBackendError(f"write to {self.url}: {err}") from err
        return len(batch)

    async def count(self, site: str | None = None) -> int:
        selector = f'{MARKER}_count{{site="{site}"}}' if site else f"{MARKER}_count"
        # From a day ahead (envelopes may run that far ahead of the cloud's clock) back past
        # 2020, the oldest timestamp the protocol accepts; VictoriaMetrics overflows at 100y.
        result = await self._get(
            "/api/v1/query",
            {"query": f"sum(count_over_time({selector}[20y]))", "time": time.time() + 86400},
        )
        return int(float(result[0]["value"][1])) if result else 0

    async def query_range(
        self, site: str, device: str, field: str, start_ms: int, end_ms: int, step_s: int
    ) -> list[Point]:
        check_field(field)
        first, last, _ = steps(start_ms, end_ms, step_s)
        if first > last:
            return []  # no multiple of the step in range
        selector = f'{MEASUREMENT}_{field}{{site="{site}",device="{device}"}}'
        result = await self._get(
            "/api/v1/query_range",
            {
                "query": f"avg_over_time({selector}[{step_s}s])",
                "start": first / 1000,
                "end": last / 1000,
                "step": f"{step_s}s",
                "nocache": 1,
            },
        )
        if not result:
            return []
        return [(round(float(t) * 1000), float(v)) for t, v in result[0]["values"]]

    async def _get(self, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            async with self._http.get(
                self.url + path, params={k: str(v) for k, v in params.items()}
            ) as res:
                data = await res.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as err:
            raise TelemetryBackendError(f"{path}: {err}") from err
        if res.status != 200 or data.get("status") != "success":
            raise TelemetryBackendError(f"{path}: HTTP {res.status}: {data.get('error')}")
        result: list[dict[str, Any]] = data["data"]["result"]
        return result

    async def flush(self) -> None:
        """Make what was written searchable now (tests and benches read back at once)."""
        async with self._http.get(self.url + "/internal/force_flush") as res:
            res.raise_for_status()

    async def close(self) -> None:
        await self._client.close()
        await self._http.close()


def _lines(site: str, reading: dict[str, Any]) -> list[str]:
    # Site and device ids are [A-Za-z0-9_.:-] (checked by the envelope): no escaping needed.
    tags = f"site={site},device={reading['device']}"
    fields = []
    for name, value in reading["values"].items():
        kind = type(value)
        if kind is int:
            fields.append(f"{name}={value}")  # no `i` suffix: a float to the line protocol
        elif kind is float:
            if math.isfinite(value):
                fields.append(f"{name}={value!r}")
        elif (number := numeric(value)) is not None:
            fields.append(f"{name}={number!r}")
    ts = reading["ts"]
    out = [f"{MARKER},{tags} count=1 {ts}"]
    if fields:
        out.append(f"{MEASUREMENT},{tags} {','.join(fields)} {ts}")
    return out


@backend("victoriametrics")
async def _open(config: VictoriaMetricsConfig, store: Store) -> VictoriaMetricsStore:
    return VictoriaMetricsStore(config)
