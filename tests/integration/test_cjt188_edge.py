"""A CJ/T 188 water meter bound in the site config: readings reach the cloud; silence is one state."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cloud.telemetry import SqlTelemetryStore, readings
from edge.adapters.cjt188 import MeterType
from edge.adapters.cjt188_client import Cjt188Link
from edge.config import DeviceBinding
from shouwang.services import Mosquitto
from simulators.cjt188_meter import Cjt188MeterServer, SimMeter
from tests.conftest import cloud_config, edge_config, eventually, running_cloud, running_edge

pytestmark = pytest.mark.integration
METER = "wm-0002"
ADDRESS = "78330011223344"


async def test_polled_meter_readings_reach_the_cloud_and_silence_is_reported_once(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path
) -> None:
    edge_broker, cloud_broker = make_broker("edge"), make_broker("cloud")
    sim = SimMeter(ADDRESS, MeterType.COLD_WATER, cumulative_m3=321.5)
    async with Cjt188MeterServer([sim]) as server:
        base = edge_config(edge_broker, cloud_broker, tmp_path / "edge")
        link = Cjt188Link(
            host="127.0.0.1", port=server.port, address=ADDRESS, poll_interval_s=0.2,
            # Long enough that a loaded machine's slow TCP connect is no failure of its own:
            # silence must show as timeouts only.
            timeout_s=1.0, retries=0, unavailable_after=2, unavailable_backoff_max_s=0.4,
        )  # fmt: skip
        meter = DeviceBinding(id=METER, profile="water_meter", resident="r-1", cjt188=link)
        config = base.model_copy(update={"devices": [*base.devices, meter]})
        async with (
            running_cloud(cloud_config(cloud_broker, tmp_path)) as cloud,
            running_edge(config) as edge,
        ):
            assert cloud.store is not None
            telemetry = SqlTelemetryStore(cloud.store)
            await eventually(lambda: _count_at_least(telemetry, config.site, 3))
            assert edge.liveness.snapshot()[METER]["transport"] == "connected"
            assert edge.liveness.snapshot()[METER]["data"] == "fresh"
            stored = await _stored(telemetry, config.site)
            assert {device for device, _ in stored} == {METER}
            assert all(values == {"total": 321.5, "valve": "open"} for _, values in stored)

            sim.faults.silent = True
            await eventually(lambda: edge.liveness.snapshot()[METER]["transport"] == "disconnected")
            server.clear_faults()
            await eventually(lambda: edge.liveness.snapshot()[METER]["transport"] == "connected")
            changes = edge.transitions.labels("transport", "disconnected")._value.get()
            assert changes == 1
            poller = edge.pollers["cjt188"]
            assert poller.diagnostics(METER)["counters"]["failure_reasons"] == {
                "timeout": poller.diagnostics(METER)["counters"]["failures"]
            }


async def _stored(store: SqlTelemetryStore, site: str) -> list[tuple[str, Any]]:
    query = select(readings.c.device, readings.c.vals).where(readings.c.site == site)
    async with store.store.engine.connect() as conn:
        return [(row.device, row.vals) for row in await conn.execute(query)]


async def _count_at_least(store: SqlTelemetryStore, site: str, n: int) -> bool:
    return await store.count(site) >= n
