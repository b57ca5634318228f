"""A Modbus water meter bound in the site config: readings reach the cloud; silence is one state."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from cloud.telemetry import SqlTelemetryStore
from edge.adapters.modbus import ModbusLink
from edge.config import DeviceBinding
from shouwang.profiles import load_profiles
from shouwang.services import Mosquitto
from simulators.modbus_meter import ModbusMeterServer
from tests.conftest import cloud_config, edge_config, eventually, running_cloud, running_edge

pytestmark = pytest.mark.integration
METER = "wm-0001"


async def test_polled_meter_readings_reach_the_cloud_and_silence_is_reported_once(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path
) -> None:
    profiles = load_profiles()
    edge_broker, cloud_broker = make_broker("edge"), make_broker("cloud")
    async with ModbusMeterServer({5: profiles["water_meter"]}, seed=4) as meters:
        base = edge_config(edge_broker, cloud_broker, tmp_path / "edge")
        link = ModbusLink(
            host="127.0.0.1", port=meters.port, unit_id=5, poll_interval_s=0.2, timeout_s=0.2,
            retries=0, unavailable_after=2, unavailable_backoff_max_s=0.4,
        )
        meter = DeviceBinding(id=METER, profile="water_meter", resident="r-1", modbus=link)
        config = base.model_copy(update={"devices": [*base.devices, meter]})
        async with running_cloud(cloud_config(cloud_broker, tmp_path)) as cloud, running_edge(config) as edge:
            assert cloud.store is not None
            telemetry = SqlTelemetryStore(cloud.store)
            await eventually(lambda: _count_at_least(telemetry, config.site, 3))
            assert edge.liveness.snapshot()[METER]["transport"] == "connected"
            assert edge.liveness.snapshot()[METER]["data"] == "fresh"

            meters.inject("stop_answering")
            await eventually(
                lambda: edge.liveness.snapshot()[METER]["transport"] == "disconnected"
            )
            meters.clear()
            await eventually(lambda: edge.liveness.snapshot()[METER]["transport"] == "connected")
            changes = edge.transitions.labels("transport", "disconnected")._value.get()
            assert changes == 1


async def _count_at_least(store: SqlTelemetryStore, site: str, n: int) -> bool:
    return await store.count(site) >= n
