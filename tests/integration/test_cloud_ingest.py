"""Cloud ingest through real Mosquitto on SQLite and PostgreSQL: health, events, site registry."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

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
            for s, body in [(stranger, {"event": "opened"}), (known, {"event": "opened"})]:
                env = make_envelope(site=s, device="door-1", kind="event", body=body)
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
        assert await count(cloud, events) == 1
        # Nothing of the stranger was written, not even a registration by its gateway report.
        assert await Fleet(cloud.store).site(stranger) is None
        assert await count(cloud, sites) == 1
