"""A whole gateway down is one `gateway_offline` alert raised by the cloud, resolved when it
reports again; its MQTT will makes that quick; a site that never reported raises nothing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloud.fleet import Fleet
from cloud.schema import alerts, sites
from cloud.server import CloudServer
from cloud.watchdog import ACTOR, ALERT_TYPE
from edge.daemon import gateway_offline_notice
from shouwang.clock import ManualClock
from shouwang.mqtt import MqttClient
from shouwang.protocol import make_envelope, site_up_topic
from shouwang.services import Mosquitto, free_port
from tests.conftest import (
    broker_config,
    cloud_config,
    edge_config,
    eventually,
    running_edge,
    unique,
)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SILENCE_S, GRACE_S = 180, 90
SITE_LOCATION = "test-district/test-street/test-community"


def _config(broker: Mosquitto, tmp_path: Path, database_url: str, worker: str) -> Any:
    return cloud_config(
        broker, tmp_path, worker, database_url=database_url,
        # Rounds every 20 ms of real time; the outage itself is timed by the manual clock.
        watchdog={"gateway_silence_s": SILENCE_S, "will_grace_s": GRACE_S, "poll_s": 0.02},
    )


@contextlib.asynccontextmanager
async def workers(
    broker: Mosquitto, tmp_path: Path, database_url: str, clock: ManualClock
) -> AsyncIterator[tuple[CloudServer, CloudServer]]:
    """Two cloud workers on one database, one clock."""
    a = CloudServer(_config(broker, tmp_path, database_url, unique("wd-a")), clock=clock)
    b = CloudServer(_config(broker, tmp_path, database_url, unique("wd-b")), clock=clock)
    await a.start()
    try:
        await b.start()
        try:
            await a.wait_connected(10)
            await b.wait_connected(10)
            yield a, b
        finally:
            await b.stop()
    finally:
        await a.stop()


@contextlib.asynccontextmanager
async def gateway(broker: Mosquitto, site: str) -> AsyncIterator[Callable[[], Any]]:
    """A stand-in for a site's uplink: `report()` publishes one gateway report."""
    client = MqttClient(broker_config(broker), client_id=unique("wd-gw"))
    await client.start()
    await client.wait_connected(10)

    async def report() -> None:
        env = make_envelope(
            site=site, device="gateway", kind="health", body={"type": "gateway", "devices": {}}
        )
        await client.publish(site_up_topic(site, "health"), env.to_bytes())

    try:
        yield report
    finally:
        await client.close()


async def offline_alerts(server: CloudServer, site: str) -> list[dict[str, Any]]:
    assert server.store is not None
    return await server.store.list_alerts(
        where=[alerts.c.type == ALERT_TYPE, alerts.c.site == site]
    )


async def heard(server: CloudServer, site: str, after: int | None = None) -> bool:
    assert server.store is not None
    row = await Fleet(server.store).site(site)
    return row is not None and row["heard_ms"] is not None and (
        after is None or row["heard_ms"] > after
    )


async def rounds(*servers: CloudServer) -> list[tuple[int, int]]:
    """One watchdog round on every worker at once (their own loops run as well)."""
    results = []
    for s in servers:
        assert s.watchdog is not None
        results.append(s.watchdog.round())
    return list(await asyncio.gather(*results))


async def test_silent_gateway_raises_exactly_one_alert_with_two_workers(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path, database_url: str
) -> None:
    # A broker of its own: persistent sessions of earlier tests' workers would take a share.
    broker = make_broker("cloud")
    clock = ManualClock()
    site = unique("wd-site")
    async with workers(broker, tmp_path, database_url, clock) as (a, b), gateway(
        broker, site
    ) as report:
        assert a.store is not None
        async with a.store.engine.begin() as conn:  # the registry knows where the site is
            await conn.execute(
                sites.insert().values(id=site, location=SITE_LOCATION, registered_ms=0)
            )
        heard_at = clock.now_ms()
        await report()
        await eventually(lambda: heard(a, site))
        clock.advance((SILENCE_S - 1) * 1000)
        assert await rounds(a, b) == [(0, 0), (0, 0)]
        assert await offline_alerts(a, site) == []

        clock.advance(2000)
        await rounds(a, b)
        await rounds(a, b)
        found = await offline_alerts(a, site)
        assert len(found) == 1
        alert = found[0]
        assert (alert["severity"], alert["subject"], alert["dedup_key"], alert["location"]) == (
            "high", f"site:{site}", f"site:{site}|{ALERT_TYPE}", SITE_LOCATION
        )
        assert alert["state"] == "open"
        assert alert["ts"] == heard_at
        assert alert["detail"]["reason"] == "silent"
        assert a.store is not None
        full = await a.store.get_alert(alert["id"])
        assert [(t["to_state"], t["actor"]) for t in full["timeline"]] == [("open", ACTOR)]
        # Hours more of silence: still the one alert.
        clock.advance(3 * 3600 * 1000)
        await rounds(a, b)
        assert [x["id"] for x in await offline_alerts(b, site)] == [alert["id"]]


async def test_reports_resuming_resolve_the_alert_once(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path, database_url: str
) -> None:
    # A broker of its own: persistent sessions of earlier tests' workers would take a share.
    broker = make_broker("cloud")
    clock = ManualClock()
    site = unique("wd-site")
    async with workers(broker, tmp_path, database_url, clock) as (a, b), gateway(
        broker, site
    ) as report:
        await report()
        await eventually(lambda: heard(a, site))
        clock.advance((SILENCE_S + 1) * 1000)
        await eventually(lambda: offline_alerts(a, site))
        before = clock.now_ms()
        await report()
        await eventually(lambda: heard(a, site, after=before - 1))
        await rounds(a, b)
        await rounds(a, b)
        found = await offline_alerts(a, site)
        assert len(found) == 1
        assert found[0]["state"] == "resolved"
        assert a.store is not None
        timeline = (await a.store.get_alert(found[0]["id"]))["timeline"]
        assert [(t["to_state"], t["actor"]) for t in timeline] == [
            ("open", ACTOR), ("resolved", ACTOR)
        ]
        assert timeline[1]["note"] == f"gateway reporting again after {SILENCE_S + 1} s"


async def test_alert_a_person_resolved_stays_resolved_and_is_not_raised_again(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path, database_url: str
) -> None:
    # A broker of its own: persistent sessions of earlier tests' workers would take a share.
    broker = make_broker("cloud")
    clock = ManualClock()
    site = unique("wd-site")
    async with workers(broker, tmp_path, database_url, clock) as (a, b), gateway(
        broker, site
    ) as report:
        await report()
        await eventually(lambda: heard(a, site))
        clock.advance((SILENCE_S + 1) * 1000)
        raised = await eventually(lambda: offline_alerts(a, site))
        assert a.store is not None
        await a.store.transition(raised[0]["id"], "resolved", actor="user:worker-1", note="known")
        clock.advance(3600 * 1000)  # the same outage goes on
        await rounds(a, b)
        await report()
        await eventually(lambda: heard(a, site, after=clock.now_ms() - 1))
        await rounds(a, b)
        found = await offline_alerts(a, site)
        assert [x["id"] for x in found] == [raised[0]["id"]]
        timeline = (await a.store.get_alert(found[0]["id"]))["timeline"]
        assert [(t["to_state"], t["actor"]) for t in timeline] == [
            ("open", ACTOR), ("resolved", "user:worker-1")
        ]


async def test_site_that_never_reported_raises_nothing(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path, database_url: str
) -> None:
    # A broker of its own: persistent sessions of earlier tests' workers would take a share.
    broker = make_broker("cloud")
    clock = ManualClock()
    registered, will_only = unique("wd-site"), unique("wd-site")
    async with workers(broker, tmp_path, database_url, clock) as (a, b):
        assert a.store is not None
        async with a.store.engine.begin() as conn:  # imported by the admin, never connected
            await conn.execute(sites.insert().values(id=registered, registered_ms=0))
        # A gateway whose will fires before it ever reported: not a site being watched.
        client = MqttClient(broker_config(broker), client_id=unique("wd-gw"))
        await client.start()
        await client.wait_connected(10)
        topic, payload = gateway_offline_notice(will_only, "connection_lost")
        await client.publish(topic, payload)
        await client.close()
        await asyncio.sleep(0.2)  # the notice is ingested (and ignored) in this time
        clock.advance(7 * 86400 * 1000)
        assert await rounds(a, b) == [(0, 0), (0, 0)]
        assert await offline_alerts(a, registered) == []
        assert await offline_alerts(a, will_only) == []
        assert await Fleet(a.store).site(will_only) is None


def spawn_edge(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "shouwang", "edge", "run", "--config", str(config)],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
        )


async def test_edge_killed_raises_the_alert_after_the_will_grace_not_the_silence(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path, database_url: str
) -> None:
    edge_broker, cloud_broker = make_broker("edge"), make_broker("cloud")
    econf = edge_config(edge_broker, cloud_broker, tmp_path / "edge")
    raw = econf.model_dump(mode="json")
    raw["http"]["port"] = free_port()
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(raw))
    clock = ManualClock()
    async with workers(cloud_broker, tmp_path, database_url, clock) as (a, b):
        edge = await asyncio.to_thread(spawn_edge, path, tmp_path / "edge.log")
        try:
            await eventually(lambda: heard(a, econf.site), timeout=30)
            os.kill(edge.pid, signal.SIGKILL)  # power cut: no clean disconnect
            await asyncio.to_thread(edge.wait)
            assert a.store is not None
            fleet = Fleet(a.store)
            row = await eventually(
                lambda: _offline_noticed(fleet, econf.site), timeout=15
            )
            assert row["offline_reason"] == "connection_lost"
            clock.advance((GRACE_S - 1) * 1000)
            assert await rounds(a, b) == [(0, 0), (0, 0)]
            clock.advance(2000)  # past the grace, far short of the 180 s silence
            await rounds(a, b)
            found = await offline_alerts(a, econf.site)
            assert len(found) == 1
            assert found[0]["detail"]["reason"] == "connection_lost"
        finally:
            if edge.poll() is None:
                edge.kill()
                await asyncio.to_thread(edge.wait)


async def _offline_noticed(
    fleet: Fleet, site: str, after: int | None = None
) -> dict[str, Any] | None:
    row = await fleet.site(site)
    if row is None or row["offline_ms"] is None:
        return None
    return row if after is None or row["offline_ms"] > after else None


async def test_planned_stop_alerts_after_the_grace_unless_the_edge_is_back(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path, database_url: str
) -> None:
    edge_broker, cloud_broker = make_broker("edge"), make_broker("cloud")
    econf = edge_config(edge_broker, cloud_broker, tmp_path / "edge")
    site = econf.site
    clock = ManualClock()
    async with workers(cloud_broker, tmp_path, database_url, clock) as (a, b):
        assert a.store is not None
        fleet = Fleet(a.store)
        async with running_edge(econf):
            await eventually(lambda: heard(a, site))
        # A restart (an upgrade): the stop is announced, the new start reports within the grace.
        notice = await eventually(lambda: _offline_noticed(fleet, site))
        assert notice["offline_reason"] == "stopped"
        clock.advance(1000)
        async with running_edge(econf):
            await eventually(lambda: heard(a, site, after=notice["offline_ms"]))
            clock.advance((GRACE_S + 1) * 1000)
            assert await rounds(a, b) == [(0, 0), (0, 0)]
            clock.advance(1000)
        # Stopped for good: the gateway does not watch the site, so the cloud says so.
        await eventually(lambda: _offline_noticed(fleet, site, after=clock.now_ms() - 1))
        clock.advance((GRACE_S + 1) * 1000)
        await rounds(a, b)
        found = await offline_alerts(a, site)
        assert len(found) == 1
        assert found[0]["detail"]["reason"] == "stopped"
