"""Telemetry through the cloud ingest into each backend, read back exactly with query_range."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from cloud.fleet import Fleet
from cloud.store import Store
from cloud.telemetry import MAX_POINTS, BadQuery, SqlTelemetryStore
from cloud.telemetry.sql import SqlTelemetryConfig
from cloud.telemetry.victoria import VictoriaMetricsConfig, VictoriaMetricsStore
from shouwang.mqtt import MqttClient
from shouwang.protocol import make_envelope, site_up_topic
from shouwang.services import Mosquitto, VictoriaMetrics
from tests.conftest import broker_config, cloud_config, eventually, running_cloud, unique

pytestmark = pytest.mark.integration
T0 = 1_794_999_960_000  # a multiple of 60 s, so the 60 s steps below start on it


def batch(site: str, ks: range) -> bytes:
    readings = [
        {"id": f"{site}-r{k}", "device": "wear-1", "ts": T0 + k * 10_000,
         "values": {"heart_rate": 60 + k, "worn": k % 2 == 0, "posture": "lying"}}
        for k in ks
    ]
    return make_envelope(
        site=site, device="gateway", kind="telemetry", body={"readings": readings}, ts=T0
    ).to_bytes()


@pytest.mark.parametrize("backend", ["sql", "victoriametrics"])
async def test_readings_through_ingest_read_back_downsampled_and_counted_once(
    backend: str,
    make_broker: Callable[[str], Mosquitto],
    tmp_path: Path,
    database_url: str,
    victoria_metrics: VictoriaMetrics,  # asked for always: a server started mid-test is a "leak"
) -> None:
    if backend == "victoriametrics":
        telemetry: object = VictoriaMetricsConfig(backend="victoriametrics", url=victoria_metrics.url)
    else:
        telemetry = SqlTelemetryConfig()
    cloud_broker = make_broker("cloud")
    site = unique("tele")
    config = cloud_config(cloud_broker, tmp_path, database_url=database_url, telemetry=telemetry)
    async with running_cloud(config) as cloud:
        store = cloud.telemetry
        assert store is not None
        pub = MqttClient(broker_config(cloud_broker), client_id=unique("site-pub"))
        await pub.start()
        await pub.wait_connected(10)
        topic = site_up_topic(site, "telemetry")
        try:
            first = batch(site, range(6))
            for payload in (first, batch(site, range(6, 12)), first):  # the last: a redelivery
                await pub.publish(topic, payload)
            # The data stream is handled in order: once the gateway's report is stored, so is
            # every telemetry message before it.
            report = make_envelope(site=site, device="gateway", kind="health", body={"type": "gateway"})
            await pub.publish(site_up_topic(site, "health"), report.to_bytes())
            assert cloud.store is not None
            await eventually(lambda: Fleet(cloud.store).site(site))
        finally:
            await pub.close()
        if isinstance(store, VictoriaMetricsStore):
            await store.flush()
        assert await store.count(site) == 12
        # (t - 60 s, t]: k=0 | k=1..6 | k=7..11
        assert await store.query_range(site, "wear-1", "heart_rate", T0, T0 + 120_000, 60) == [
            (T0, 60.0), (T0 + 60_000, 63.5), (T0 + 120_000, 69.0)
        ]
        # Booleans chart as 0/1; an empty step has no point; another device has nothing.
        assert await store.query_range(site, "wear-1", "worn", T0 - 60_000, T0 + 60_000, 60) == [
            (T0, 1.0), (T0 + 60_000, 0.5)
        ]
        assert await store.query_range(site, "wear-1", "posture", T0, T0 + 60_000, 60) == []
        assert await store.query_range(site, "wear-2", "heart_rate", T0, T0 + 60_000, 60) == []
        # A range holding no multiple of the step has no point.
        assert await store.query_range(site, "wear-1", "heart_rate", T0 + 60_000, T0 + 60_000, 3600) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("heart_rate", 0, 1000, 0), "step_s must be a whole number of seconds >= 1"),
        (("heart_rate", 2000, 1000, 1), "end_ms 1000 is before start_ms 2000"),
        (("heart_rate", 0, (MAX_POINTS + 1) * 1000, 1), f"points exceed {MAX_POINTS}"),
        (('x"} or vector(1)', 0, 1000, 1), "field must be an identifier"),
    ],
)
async def test_bad_range_queries_say_which_argument(
    tmp_path: Path, args: tuple[str, int, int, int], message: str
) -> None:
    store = await Store.connect(f"sqlite+aiosqlite:///{tmp_path}/cloud.sqlite")
    try:
        with pytest.raises(BadQuery, match=message.replace("(", r"\(")):
            await SqlTelemetryStore(store).query_range("s", "d", *args)
    finally:
        await store.close()


async def test_readings_wait_for_victoria_metrics_to_come_back(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path, database_url: str
) -> None:
    """A dead telemetry backend is a store error: the messages stay unacknowledged, the
    worker retries, and every reading is there once the backend is back."""
    vm = VictoriaMetrics(tmp_path / "vm")
    vm.start()
    cloud_broker = make_broker("cloud")
    site = unique("tele")
    telemetry = VictoriaMetricsConfig(backend="victoriametrics", url=vm.url, timeout_s=2)
    config = cloud_config(cloud_broker, tmp_path, database_url=database_url, telemetry=telemetry)
    try:
        async with running_cloud(config) as cloud:
            store = cloud.telemetry
            assert isinstance(store, VictoriaMetricsStore)
            vm.stop()
            pub = MqttClient(broker_config(cloud_broker), client_id=unique("site-pub"))
            await pub.start()
            await pub.wait_connected(10)
            try:
                await pub.publish(site_up_topic(site, "telemetry"), batch(site, range(6)))
                await pub.publish(site_up_topic(site, "telemetry"), batch(site, range(6, 12)))
                await eventually(lambda: cloud.metrics.rejected_count("store_error") >= 2)
                assert cloud.metrics.rejected_count("internal_error") == 0
                vm.start()

                async def all_there() -> bool:
                    await store.flush()
                    return await store.count(site) == 12

                await eventually(all_there, timeout=20)
            finally:
                await pub.close()
    finally:
        vm.stop()
