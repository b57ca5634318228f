"""Residents, their vital signs and device health through the API: least data and scope."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from sqlalchemy import update

from cloud import residents
from cloud.access import audit
from cloud.access.config import AccessConfig
from cloud.access.users import Access
from cloud.admin import import_file
from cloud.api import build_app
from cloud.hub import Hub
from cloud.lifecycle import Lifecycle
from cloud.schema import devices
from cloud.store import Store
from cloud.telemetry import SqlTelemetryStore
from shouwang.clock import ManualClock
from shouwang.metrics import Metrics
from shouwang.services import free_port
from tests.conftest import api_config, running_cloud
from tests.integration.people import GRID_A, GRID_B, HOME_A, HOME_B, PASSWORD, Client

pytestmark = pytest.mark.integration
T0 = 1_794_999_960_000  # a multiple of 60 s
PEOPLE = [("police-a", "police", {"locations": ["d1/s1/c-a"]}),
          ("worker-a", "worker", {"locations": [GRID_A]}),
          ("worker-b", "worker", {"locations": [GRID_B]}),
          ("family-a", "family", {"residents": ["r-a1"]}),
          ("family-b", "family", {"residents": ["r-b1"]}),
          ("admin", "admin", {})]


class Cloud:
    """The API as a cloud builds it, with the telemetry store the cloud opened."""

    def __init__(self, port: int, store: Store) -> None:
        self.http_port = port
        self.store = store


@contextlib.asynccontextmanager
async def api_with_telemetry(database_url: str, tmp_path: Path) -> AsyncIterator[Cloud]:
    store = await Store.connect(database_url)
    clock = ManualClock(T0 + 3_600_000)
    access = Access(store.engine, clock, AccessConfig())
    hub = Hub(snapshot=lambda who: store.list_alerts(limit=200, where=[who.where()]))
    app = build_app(store, hub, Metrics("cloud"), lambda: None, access,
                    Lifecycle(store, access, on_change=lambda a: None))
    app[residents.TELEMETRY] = SqlTelemetryStore(store)
    runner = web.AppRunner(app, access_log=None)
    try:
        for name, role, scope in PEOPLE:
            await access.add_user(name, PASSWORD, role, **scope)
        await seed(store, tmp_path)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield Cloud(port, store)
    finally:
        await hub.close()
        await runner.cleanup()
        await store.close()


async def seed(store: Store, tmp_path: Path) -> None:
    """The places, residents and devices of these tests, their states and some heart rates."""
    files: dict[str, list[dict[str, Any]]] = {
        "sites": [{"id": "s-1"}],
        "locations": [{"path": HOME_A}, {"path": HOME_B}],
        "residents": [
            {"id": "r-a1", "name": "王大爷", "location": HOME_A,
             "tags": ["elderly", "living_alone"]},
            {"id": "r-b1", "name": "李奶奶", "location": HOME_B, "tags": ["dementia"]}],
        "devices": [
            {"site": "s-1", "id": "wear-a", "profile": "wearable", "resident": "r-a1"},
            {"site": "s-1", "id": "btn-a", "profile": "emergency_button",
             "resident": "r-a1"},
            {"site": "s-1", "id": "gas-a", "profile": "gas_detector", "location": HOME_A},
            {"site": "s-1", "id": "wear-b", "profile": "wearable", "resident": "r-b1"}],
    }
    for kind, rows in files.items():
        (tmp_path / f"{kind}.yaml").write_text(yaml.safe_dump(rows, allow_unicode=True))
        await import_file(store, kind, tmp_path / f"{kind}.yaml", T0)
    async with store.engine.begin() as conn:
        for device, values in (("wear-a", {"battery": "low", "data": "fresh"}),
                               ("btn-a", {"transport": "disconnected"}),
                               ("gas-a", {"data": "stale", "health": "faulty"}),
                               ("wear-b", {"transport": "disconnected"})):
            await conn.execute(update(devices).where(devices.c.id == device).values(**values))
    await SqlTelemetryStore(store).write("s-1", [
        {"id": f"hr-{k}", "device": "wear-a", "ts": T0 + k * 30_000,
         "values": {"heart_rate": 70 + k, "battery": 15}} for k in range(8)])


async def test_a_resident_and_their_vitals_for_family_and_grid_workers_never_police(
    database_url: str, tmp_path: Path
) -> None:
    async with api_with_telemetry(database_url, tmp_path) as cloud, \
            aiohttp.ClientSession() as http:
        for user in ("family-a", "worker-a", "admin"):
            client = await Client.login(http, cloud, user)  # type: ignore[arg-type]
            reply = await client.get("/api/residents/r-a1")
            assert reply.status == 200, (user, reply.body)
            assert reply.body["name"] == "王大爷"
            assert reply.body["tags"] == ["elderly", "living_alone"]
            assert [(d["id"], d["battery"]) for d in reply.body["devices"]] == [
                ("btn-a", None), ("wear-a", "low")]
            vitals = await client.get(
                f"/api/residents/r-a1/vitals?field=heart_rate&from={T0}&to={T0 + 240_000}&step=60")
            assert vitals.status == 200, vitals.body
            # Averages per minute, (t - 60 s, t]: 70 at T0, then 71,72 → 71.5, 73,74 → 73.5 ...
            assert vitals.body["series"] == [{"site": "s-1", "device": "wear-a", "points": [
                [T0, 70.0], [T0 + 60_000, 71.5], [T0 + 120_000, 73.5], [T0 + 180_000, 75.5],
                [T0 + 240_000, 77.0]]}]

        police = await Client.login(http, cloud, "police-a")  # type: ignore[arg-type]
        for path in ("/api/residents/r-a1", "/api/residents/r-a1/vitals?field=heart_rate"):
            reply = await police.get(path)
            assert (reply.status, reply.body) == (
                403, {"error": "a police user does not see residents' records"})
        # Another grid's worker and another family: exactly like a resident that does not exist.
        missing = await (await Client.login(http, cloud, "worker-b")).get(  # type: ignore[arg-type]
            "/api/residents/nobody")
        for user in ("worker-b", "family-b"):
            client = await Client.login(http, cloud, user)  # type: ignore[arg-type]
            for path in ("/api/residents/r-a1", "/api/residents/r-a1/vitals?field=heart_rate"):
                reply = await client.get(path)
                assert (reply.status, reply.raw) == (missing.status, missing.raw) == (
                    404, b'{"error": "no such resident"}'), (user, path)

        family = await Client.login(http, cloud, "family-a")  # type: ignore[arg-type]
        for query, param in (("field=heart%20rate", "field"), ("field=x&from=9&to=3", "to"),
                             ("field=x&step=0", "step"), ("field=x&when=1", "when"),
                             (f"field=x&from=0&to={T0}&step=1", "step")):
            reply = await family.get(f"/api/residents/r-a1/vitals?{query}")
            assert reply.status == 400, query
            assert reply.body["error"].startswith(f"{param}: "), reply.body

        engine = cloud.store.engine
        reads = [(r["actor"], r["action"]) for r in await audit.entries(engine, target="r-a1")
                 if r["action"] != "resident_denied"]
        assert reads == [(f"user:{u}", a) for u in ("admin", "worker-a", "family-a")
                         for a in ("vitals_read", "resident_read")]
        denied = await audit.entries(engine, action="resident_denied")
        assert sorted(r["actor"] for r in denied) == ["user:family-b"] * 2 + ["user:worker-b"] * 2


async def test_device_health_by_building_within_scope(database_url: str, tmp_path: Path) -> None:
    async with api_with_telemetry(database_url, tmp_path) as cloud, \
            aiohttp.ClientSession() as http:
        building_a, building_b = HOME_A.split("/f1")[0].rsplit("/", 1)[0], HOME_B.rsplit("/", 3)[0]
        admin = await Client.login(http, cloud, "admin")  # type: ignore[arg-type]
        health = (await admin.get("/api/devices/health")).body
        assert health["buildings"] == [
            {"building": building_a, "devices": 3, "offline": 1, "stale": 1, "faulty": 1,
             "low_battery": 1},
            {"building": building_b, "devices": 1, "offline": 1, "stale": 0, "faulty": 0,
             "low_battery": 0}]
        assert [(d["id"], d["problems"]) for d in health["devices"]] == [
            ("btn-a", ["offline"]), ("gas-a", ["stale", "faulty"]), ("wear-a", ["low_battery"]),
            ("wear-b", ["offline"])]

        # Police see their station's buildings (devices placed through their resident too).
        police = await Client.login(http, cloud, "police-a")  # type: ignore[arg-type]
        mine = (await police.get("/api/devices/health")).body
        assert [b["building"] for b in mine["buildings"]] == [building_a]
        family_b = await Client.login(http, cloud, "family-b")  # type: ignore[arg-type]
        theirs = (await family_b.get("/api/devices/health")).body
        assert [d["id"] for d in theirs["devices"]] == ["wear-b"]
        narrowed = (await admin.get(f"/api/devices/health?location={building_b}")).body
        assert [b["building"] for b in narrowed["buildings"]] == [building_b]
        for query, param in (("location=d1//x", "location"), ("where=1", "where")):
            reply = await admin.get(f"/api/devices/health?{query}")
            assert reply.status == 400
            assert reply.body["error"].startswith(f"{param}: ")


async def test_the_cloud_serves_vitals_from_the_telemetry_store_it_opened(
    database_url: str, tmp_path: Path
) -> None:
    """The whole server, not an app built by the test: its own store reaches the charts."""
    async with running_cloud(api_config(database_url)) as cloud, aiohttp.ClientSession() as http:
        assert cloud.store is not None
        assert cloud.access is not None
        await cloud.access.add_user("family-a", PASSWORD, "family", residents=["r-a1"])
        await seed(cloud.store, tmp_path)
        family = await Client.login(http, cloud, "family-a")
        vitals = await family.get(
            f"/api/residents/r-a1/vitals?field=heart_rate&from={T0}&to={T0 + 240_000}&step=60")
        assert vitals.status == 200, vitals.body
        [series] = vitals.body["series"]
        assert series["device"] == "wear-a"
        assert len(series["points"]) > 0
