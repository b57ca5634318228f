"""Cloud ingest through real Mosquitto on SQLite and PostgreSQL: health, events, site registry."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select

from cloud.fleet import Fleet
from cloud.schema import events, sites
from cloud.server import CloudServer
from shouwang.mqtt import MqttClient
from shouwang.protocol import make_envelope, site_up_topic
from shouwang.services import Mosquitto
from tests.conftest import broker_config, cloud_config, eventually, running_cloud, unique

pytestmark = pytest.mark.integration
T0 = 1_795_000_000_000


def state(device: str, dimension: str, new: str, at_ms: int) -> dict[str, Any]:
    return {"type": "device_state", "device": device, "dimension": dimension,
            "old": "unknown", "new": new, "at_ms": at_ms, "reason": "test"}


async def publisher(cloud_broker: Mosquitto) -> MqttClient:
    client = MqttClient(broker_config(cloud_broker), client_id=unique("site-pub"))
    await client.start()
    await client.wait_connected(10)
    return client


def rejected(cloud: CloudServer, reason: str) -> float:
    return cloud.metrics.rejected_count(reason)


async def count(cloud: CloudServer, table: Any) -> int:
    assert cloud.store is not None
    async with cloud.store.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def test_health_updates_devices_and_sites_in_order_and_events_are_stored_once(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path, database_url: str
) -> None:
    cloud_broker = make_broker("cloud")
    site = unique("s")
    async with running_cloud(cloud_config(cloud_broker, tmp_path, database_url=database_url)) as cloud:
        assert cloud.store is not None
        fleet = Fleet(cloud.store)
        pub = await publisher(cloud_broker)
        try:
            health = site_up_topic(site, "health")
            sends = [
                state("wear-1", "transport", "connected", T0 + 10),
                state("wear-1", "data", "fresh", T0 + 20),
                state("wear-1", "battery", "low", T0 + 30),
                state("wear-1", "transport", "disconnected", T0 + 40),
                # Redelivered late: older than what is stored, so it changes nothing.
                state("wear-1", "transport", "connected", T0 + 15),
            ]
            for body in sends:
                env = make_envelope(site=site, device="gateway", kind="health", body=body, ts=T0)
                await pub.publish(health, env.to_bytes())
            report = {"type": "gateway", "devices": {"devices": 1}, "edge_broker": True}
            gateway = make_envelope(site=site, device="gateway", kind="health", body=report, ts=T0 + 50)
            await pub.publish(health, gateway.to_bytes())
            readings = [
                {"id": f"{site}-{k}", "device": "wear-1", "ts": T0 + k * 1000, "values": {"heart_rate": 70}}
                for k in (3, 9, 1)
            ]
            tele = make_envelope(site=site, device="gateway", kind="telemetry", body={"readings": readings})
            await pub.publish(site_up_topic(site, "telemetry"), tele.to_bytes())
            event = make_envelope(site=site, device="door-1", kind="event", body={"event": "opened"}, ts=T0)
            await pub.publish(site_up_topic(site, "event"), event.to_bytes())
            await pub.publish(site_up_topic(site, "event"), event.to_bytes())
            await eventually(lambda: rejected(cloud, "duplicate") == 1)
            await eventually(lambda: fleet.site(site))
        finally:
            await pub.close()

        device = await fleet.device(site, "wear-1")
        assert device is not None
        assert (device["transport"], device["transport_ms"]) == ("disconnected", T0 + 40)
        assert (device["data"], device["battery"], device["health"]) == ("fresh", "low", None)
        assert device["last_seen_ms"] == T0 + 9000  # the newest reading, not the last listed
        registered = await fleet.site(site)
        assert registered is not None
        assert (registered["last_seen_ms"], registered["last_health"]) == (T0 + 50, report)
        assert await count(cloud, events) == 1
        async with cloud.store.engine.connect() as conn:
            row = (await conn.execute(select(events))).mappings().one()
        assert (row["id"], row["site"], row["device"], row["name"]) == (event.id, site, "door-1", "opened")


async def test_registered_sites_only_when_configured(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path, database_url: str
) -> None:
    cloud_broker = make_broker("cloud")
    known, stranger = unique("known"), unique("stranger")
    config = cloud_config(
        cloud_broker, tmp_path, database_url=database_url, require_registered_sites=True
    )
    async with running_cloud(config) as cloud:
        assert cloud.store is not None
        async with cloud.store.engine.begin() as conn:
            await conn.execute(sites.insert().values(id=known, registered_ms=T0))
        pub = await publisher(cloud_broker)
        try:
            bad_state = {**state("wear-1", "transport", "connected", T0), "dimension": "mood"}
            # door-1 is not imported to the known site (`unknown_device`); its gateway is.
            for s, device in [(stranger, "gateway"), (known, "door-1"), (known, "gateway")]:
                env = make_envelope(site=s, device=device, kind="event", body={"event": "opened"})
                await pub.publish(site_up_topic(s, "event"), env.to_bytes())
            report = make_envelope(site=stranger, device="gateway", kind="health", body={"type": "gateway"})
            await pub.publish(site_up_topic(stranger, "health"), report.to_bytes())
            invalid = make_envelope(site=known, device="gateway", kind="health", body=bad_state)
            await pub.publish(site_up_topic(known, "health"), invalid.to_bytes())
            await eventually(lambda: rejected(cloud, "invalid_health") == 1)
            await eventually(lambda: count(cloud, events))
        finally:
            await pub.close()
        assert rejected(cloud, "unknown_site") == 2
        assert rejected(cloud, "unknown_device") == 1
        assert await count(cloud, events) == 1
        # Nothing of the stranger was written, not even a registration by its gateway report.
        assert await Fleet(cloud.store).site(stranger) is None
        assert await count(cloud, sites) == 1


async def test_queued_telemetry_of_a_site_and_queued_alerts_are_one_write_each_in_order(
    broker: Mosquitto, tmp_path: Path, database_url: str
) -> None:
    from cloud.ingest import Ingest
    from cloud.schema import alerts
    from cloud.store import Store
    from cloud.telemetry.sql import SqlTelemetryStore
    from shouwang.metrics import Metrics
    from shouwang.mqtt import Message
    from shouwang.protocol import site_down_topic

    site, other = unique("s"), unique("s")
    store = await Store.connect(database_url)
    telemetry = SqlTelemetryStore(store)
    writes: list[int] = []
    write = telemetry.write

    async def counted(site_id: str, batch: list[dict[str, Any]]) -> int:
        writes.append(len(batch))
        return await write(site_id, batch)

    telemetry.write = counted  # type: ignore[method-assign]
    client = await publisher(broker)
    confirmed: list[str] = []
    confirmations: list[Message] = []
    watcher = MqttClient(broker_config(broker), client_id=unique("gw"))
    watcher.subscribe(site_down_topic("+", "ack"), 1)
    await watcher.start()
    stored_alerts: list[dict[str, Any]] = []
    ingest = Ingest(client, store, Metrics(unique("cloud").replace("-", "_")),
                    on_alert=stored_alerts.append, max_payload_bytes=1 << 20, telemetry=telemetry,
                    require_registered_sites=False)
    try:
        await watcher.wait_connected(10)

        def tele(s: str, k: int) -> Message:
            readings = [{"id": f"{s}-{k}-{i}", "device": "wear-1", "ts": T0 + k * 10 + i,
                         "values": {"heart_rate": 70 + i}} for i in range(3)]
            env = make_envelope(site=s, device="gateway", kind="telemetry",
                                body={"readings": readings})
            return Message(site_up_topic(s, "telemetry"), env.to_bytes(), 0, False, 0)

        sos = {"type": "sos", "severity": "critical", "subject": "resident:r-1",
               "dedup_key": "resident:r-1|sos", "life_safety": True, "source_id": "m-1"}
        alert = make_envelope(site=site, device="btn-1", kind="alert", body=sos)
        second = make_envelope(site=other, device="btn-2", kind="alert",
                               body={**sos, "subject": "resident:r-2"})

        def up(env: Any) -> Message:
            return Message(site_up_topic(env.site, "alert"), env.to_bytes(), 0, False, 0)

        batch = [tele(site, 1), tele(site, 2), tele(site, 3), up(alert), up(second), up(alert),
                 tele(site, 4), tele(other, 5), tele(other, 6), tele(site, 7)]
        inserts: list[int] = []
        insert_alerts = store.insert_alerts

        async def counted_alerts(envs: list[Any], **kw: Any) -> list[Any]:
            inserts.append(len(envs))
            return await insert_alerts(envs, **kw)

        store.insert_alerts = counted_alerts  # type: ignore[method-assign]

        async def on_ack() -> None:
            while True:
                m = await watcher.messages()
                confirmed.extend(orjson.loads(m.payload)["stored"])
                confirmations.append(m)

        reader = asyncio.create_task(on_ack())
        try:
            await ingest.store_batch(batch)
            ids = [orjson.loads(m.payload)["id"] for m in batch]
            await eventually(lambda: sorted(confirmed) == sorted(ids))
        finally:
            reader.cancel()
        # In order, and telemetry between two other messages, or of another site, apart.
        assert writes == [9, 3, 6, 3]
        # The three alerts (one a redelivery) are one transaction, confirmed once per site.
        assert inserts == [3]
        assert len(confirmations) == 6
        assert await telemetry.count(site) == 15
        assert await telemetry.count(other) == 6
        assert [a["id"] for a in stored_alerts] == [alert.id, second.id]
        assert await count_rows(store, alerts, alerts.c.site == site) == 1
        assert await count_rows(store, alerts, alerts.c.site == other) == 1
    finally:
        await watcher.close()
        await client.close()
        await store.close()


async def count_rows(store: Any, table: Any, where: Any) -> int:
    async with store.engine.connect() as conn:
        query = select(func.count()).select_from(table).where(where)
        return int((await conn.execute(query)).scalar_one())


async def test_an_alerts_worker_and_a_data_worker_split_the_streams(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path, database_url: str
) -> None:
    """The deployment that keeps an SOS from waiting behind telemetry: one process takes the
    alerts (and serves the API), another only data, watched on its own /metrics and /healthz."""
    import aiohttp

    from cloud.schema import alerts

    cloud_broker = make_broker("cloud")
    site = unique("s")
    alerts_only = cloud_config(cloud_broker, tmp_path, database_url=database_url,
                               streams=["alerts"])
    data_only = cloud_config(cloud_broker, tmp_path, database_url=database_url,
                             streams=["data"], api=False)
    async with running_cloud(alerts_only) as front, running_cloud(data_only) as data:
        assert front.store is not None
        assert data.scheduler is not None
        pub = await publisher(cloud_broker)
        try:
            readings = [{"id": f"{site}-{k}", "device": "wear-1", "ts": T0 + k,
                         "values": {"heart_rate": 70}} for k in range(5)]
            tele = make_envelope(site=site, device="gateway", kind="telemetry",
                                 body={"readings": readings})
            await pub.publish(site_up_topic(site, "telemetry"), tele.to_bytes())
            sos = {"type": "sos", "severity": "critical", "subject": "resident:r-1",
                   "dedup_key": "resident:r-1|sos", "life_safety": True, "source_id": "m-1"}
            alert = make_envelope(site=site, device="btn-1", kind="alert", body=sos)
            await pub.publish(site_up_topic(site, "alert"), alert.to_bytes())
            telemetry, store = front.telemetry, front.store
            assert telemetry is not None

            async def both_stored() -> bool:
                return (await telemetry.count(site) == 5
                        and await count_rows(store, alerts, alerts.c.site == site) == 1)

            await eventually(both_stored)
        finally:
            await pub.close()
        # Each took its own stream only.
        assert front.metrics.received_count("alert") == 1
        assert front.metrics.received_count("telemetry") == 0
        assert data.metrics.received_count("telemetry") == 1
        assert data.metrics.received_count("alert") == 0
        # A data worker leaves escalation and the watchdog to the alerts worker.
        assert not any(t.get_name() in ("cloud-escalation", "cloud-watchdog")
                       for t in data._tasks)
        assert data.dispatcher is not None
        assert data.dispatcher._task is None
        assert front.dispatcher is not None
        assert front.dispatcher._task is not None
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{data.http_port}"
            async with http.get(f"{base}/healthz") as res:
                assert (await res.json())["broker_connected"] is True
            async with http.get(f"{base}/metrics") as res:
                assert "shouwang_readings_stored_total 5.0" in await res.text()
            async with http.get(f"{base}/api/alerts") as res:
                assert res.status == 404  # no API, no personal data here


def test_a_stream_named_twice_or_unknown_is_refused() -> None:
    from pydantic import ValidationError

    from cloud.config import STREAMS, CloudConfig
    from shouwang.protocol import CLOUD_STREAMS

    assert set(STREAMS) == set(CLOUD_STREAMS)
    with pytest.raises(ValidationError, match="named twice"):
        CloudConfig.model_validate({"broker": {}, "streams": ["data", "data"]})
    with pytest.raises(ValidationError, match="streams"):
        CloudConfig.model_validate({"broker": {}, "streams": ["telemetry"]})


@pytest.mark.parametrize(
    ("settings", "duties", "nice"),
    [
        ({}, True, 0),
        ({"streams": ["alerts"]}, True, 0),
        ({"ingest": False}, True, 0),  # an API-only worker escalates too
        ({"streams": ["data"]}, False, 0),  # it serves the API: not slowed
        ({"streams": ["data"], "api": False}, False, 10),
        ({"streams": ["data"], "api": False, "data_worker_nice": 0}, False, 0),
    ],
)
def test_only_a_data_worker_leaves_alert_duties_and_yields_the_cpu(
    settings: dict[str, Any], duties: bool, nice: int
) -> None:
    from cloud.config import CloudConfig

    config = CloudConfig.model_validate({"broker": {}, **settings})
    assert (config.alert_duties, config.nice) == (duties, nice)
