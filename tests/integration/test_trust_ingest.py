"""Issue 14, defects 2, 3 and 6: the cloud does not take a gateway's word for what is not its own.

Posing as the gateway of site A (the cloud broker lets it publish on `site/A/up/#`), one could
put an alert into site B's jurisdiction, shown to B's police and family and escalated (2);
attach evidence to B's alert, or name a picture B uploaded and see it in one's own alert (3);
and have events without a name and health reports of any shape stored (6). Each test here
plays the gateway of site A through the real broker and the real evidence endpoint.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from sqlalchemy import func, select

from cloud.admin import import_file
from cloud.config import CloudConfig
from cloud.evidence import EvidenceConfig, evidence, hash_token
from cloud.schema import alerts, drop_reports, events, sites
from cloud.server import CloudServer
from shouwang.mqtt import MqttClient
from shouwang.protocol import Envelope, make_envelope, now_ms, site_up_topic
from shouwang.services import Mosquitto
from tests.conftest import broker_config, cloud_config, eventually, running_cloud, unique
from tests.integration.people import (
    HOME_A,
    HOME_B,
    PASSWORD,
    STATION_A,
    STATION_B,
    Client,
    add_people,
)

pytestmark = pytest.mark.integration
GATE_A = f"{STATION_A}/g1/east-gate"
TOKEN_A, TOKEN_B = "site-a-upload-token-0123456789", "site-b-upload-token-9876543210"


def sos(device: str, resident: str | None, location: str | None) -> dict[str, Any]:
    subject = f"resident:{resident}" if resident else f"device:{device}"
    return {
        "type": "sos", "severity": "critical", "subject": subject,
        "dedup_key": f"{subject}|sos", "life_safety": True, "source_id": unique("m"),
        "resident": resident, "location": location,
        "detail": {"who": {"device": device, "resident": resident, "location": location}},
    }


class Estate:
    """Two sites, A and B, each registered with its people and devices, as an admin imports
    them (`shouwang cloud import`); and a gateway posing as A's on the cloud broker."""

    def __init__(self, cloud: CloudServer, pub: MqttClient, sites: tuple[str, str]) -> None:
        self.cloud = cloud
        self.pub = pub
        self.a, self.b = sites

    async def register(self, directory: Path) -> None:
        a, b = self.a, self.b
        rows: dict[str, list[dict[str, Any]]] = {
            "sites": [{"id": a, "location": STATION_A}, {"id": b, "location": STATION_B}],
            "locations": [{"path": HOME_A}, {"path": HOME_B}, {"path": GATE_A}],
            "residents": [{"id": "r-a1", "name": "甲", "location": HOME_A},
                          {"id": "r-b1", "name": "乙", "location": HOME_B}],
            "devices": [
                {"site": a, "id": "btn-a", "profile": "emergency_button", "resident": "r-a1",
                 "location": HOME_A},
                {"site": a, "id": "cam-a", "profile": "camera", "location": GATE_A},
                {"site": b, "id": "btn-b", "profile": "emergency_button", "resident": "r-b1",
                 "location": HOME_B},
            ],
        }
        assert self.cloud.store is not None
        for kind, data in rows.items():
            path = directory / f"{kind}.yaml"
            path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
            await import_file(self.cloud.store, kind, path, now_ms())

    async def send(self, site: str, device: str, kind: str, body: dict[str, Any]) -> Envelope:
        env = make_envelope(site=site, device=device, kind=kind, body=body)
        await self.pub.publish(site_up_topic(site, kind), env.to_bytes())
        return env

    def rejected(self, reason: str) -> float:
        return self.cloud.metrics.rejected_count(reason)

    async def count(self, table: Any, *where: Any) -> int:
        assert self.cloud.store is not None
        async with self.cloud.store.engine.connect() as conn:
            query = select(func.count()).select_from(table)
            for condition in where:
                query = query.where(condition)
            return int((await conn.execute(query)).scalar_one())

    async def stored(self, table: Any, n: int, *where: Any) -> None:
        async def reached() -> bool:
            return await self.count(table, *where) >= n

        await eventually(reached)


async def publisher(cloud_broker: Mosquitto) -> MqttClient:
    client = MqttClient(broker_config(cloud_broker), client_id=unique("posing-as-a"))
    await client.start()
    await client.wait_connected(10)
    return client


def two_sites() -> tuple[str, str]:
    return unique("site-a"), unique("site-b")


def production(
    cloud_broker: Mosquitto, tmp_path: Path, database_url: str, both: tuple[str, str]
) -> CloudConfig:
    """The cloud as deployed: the defaults, an evidence upload token for each site."""
    tokens = tmp_path / "site-tokens.yaml"
    tokens.write_text(yaml.safe_dump({both[0]: hash_token(TOKEN_A), both[1]: hash_token(TOKEN_B)}))
    config = cloud_config(cloud_broker, tmp_path, database_url=database_url,
                          require_registered_sites=True)
    return config.model_copy(update={
        "evidence": EvidenceConfig(dir=tmp_path / "blobs", site_tokens_file=tokens),
    })


def test_the_cloud_refuses_unregistered_sites_unless_told_otherwise() -> None:
    assert CloudConfig.model_validate({"broker": {}}).require_registered_sites is True


async def test_an_alert_takes_its_place_and_person_from_the_registry_not_the_gateway(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path, database_url: str
) -> None:
    """Defect 2: site A's gateway names B's button, B's home and B's resident; then its own
    button with B's home and resident. Neither reaches B's police or family."""
    cloud_broker = make_broker("cloud")
    config = cloud_config(cloud_broker, tmp_path, database_url=database_url,
                          require_registered_sites=True)
    async with running_cloud(config) as cloud, aiohttp.ClientSession() as http:
        pub = await publisher(cloud_broker)
        estate = Estate(cloud, pub, two_sites())
        try:
            await estate.register(tmp_path)
            await add_people(cloud)
            a = estate.a
            forged = await estate.send(a, "btn-b", "alert", sos("btn-b", "r-b1", HOME_B))
            misplaced = await estate.send(a, "btn-a", "alert", sos("btn-a", "r-b1", HOME_B))
            camera = await estate.send(a, "cam-a", "alert", {
                **sos("cam-a", None, None), "type": "tamper", "severity": "high",
                "life_safety": False})
            gateway = await estate.send(a, "gateway", "alert", {
                **sos("gateway", None, HOME_B), "type": "disk_full", "severity": "high",
                "life_safety": False})
            # Alerts are taken in order: once the last is stored, the forged one was handled.
            await estate.stored(alerts, 1, alerts.c.id == gateway.id)
        finally:
            await pub.close()
        assert await estate.count(alerts, alerts.c.id == forged.id) == 0
        assert estate.rejected("unknown_device") == 1
        police_b = await Client.login(http, cloud, "police-b", PASSWORD)
        family_b = await Client.login(http, cloud, "family-b", PASSWORD)
        police_a = await Client.login(http, cloud, "police-a", PASSWORD)
        family_a = await Client.login(http, cloud, "family-a", PASSWORD)
        assert await police_b.ids() == []
        assert await family_b.ids() == []
        assert sorted(await police_a.ids()) == sorted([misplaced.id, camera.id, gateway.id])
        assert await family_a.ids() == [misplaced.id]
        placed = {i: (await police_a.get(f"/api/alerts/{i}")).body
                  for i in (misplaced.id, camera.id, gateway.id)}
        assert (placed[misplaced.id]["location"], placed[misplaced.id]["resident"]) == (
            HOME_A, "r-a1")
        assert (placed[camera.id]["location"], placed[camera.id]["resident"]) == (GATE_A, None)
        # The gateway itself is where its site is registered.
        assert (placed[gateway.id]["location"], placed[gateway.id]["resident"]) == (
            STATION_A, None)


async def test_a_site_may_show_only_pictures_it_uploaded(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path, database_url: str
) -> None:
    """Defect 3, the blob: B uploads a picture; A claims it without its bytes (a PUT whose
    length matches), then names it in evidence of A's own alert."""
    cloud_broker = make_broker("cloud")
    both = two_sites()
    async with running_cloud(production(cloud_broker, tmp_path, database_url, both)) as cloud, \
            aiohttp.ClientSession() as http:
        pub = await publisher(cloud_broker)
        estate = Estate(cloud, pub, both)
        try:
            await estate.register(tmp_path)
            await add_people(cloud)
            mine = await estate.send(estate.a, "btn-a", "alert", sos("btn-a", "r-a1", HOME_A))
            await estate.stored(alerts, 1, alerts.c.id == mine.id)
            theirs = b"\xff\xd8\xff\xe0" + os.urandom(50_000) + b"\xff\xd9"
            digest = hashlib.sha256(theirs).hexdigest()
            base = f"http://127.0.0.1:{cloud.http_port}/ingest/evidence/{digest}"
            jpeg = {"Content-Type": "image/jpeg"}
            async with http.put(base, data=theirs,
                                headers={**jpeg, "Authorization": f"Bearer {TOKEN_B}"}) as res:
                assert res.status == 201
            async with http.put(base, data=bytes(len(theirs)),
                                headers={**jpeg, "Authorization": f"Bearer {TOKEN_A}"}) as res:
                assert res.status == 422, "a site claimed a blob without its bytes"
            named = await estate.send(estate.a, "btn-a", "evidence", {
                "sha256": digest, "size": len(theirs), "content_type": "image/jpeg",
                "alert": mine.id, "captured_ts": now_ms()})
            await eventually(lambda: estate.rejected("evidence_missing") >= 1)
            # Its own picture, sent after: stored, so the one before was handled (in order).
            own = b"\xff\xd8\xff\xe0" + os.urandom(1_000) + b"\xff\xd9"
            own_digest = hashlib.sha256(own).hexdigest()
            async with http.put(base.replace(digest, own_digest), data=own,
                                headers={**jpeg, "Authorization": f"Bearer {TOKEN_A}"}) as res:
                assert res.status == 201
            await estate.send(estate.a, "btn-a", "evidence", {
                "sha256": own_digest, "size": len(own), "content_type": "image/jpeg",
                "alert": mine.id, "captured_ts": now_ms()})
            await estate.stored(evidence, 1, evidence.c.sha256 == own_digest)
        finally:
            await pub.close()
        assert await estate.count(evidence, evidence.c.id == named.id) == 0
        police_a = await Client.login(http, cloud, "police-a", PASSWORD)
        detail = (await police_a.get(f"/api/alerts/{mine.id}")).body
        assert [e["sha256"] for e in detail["evidence"]] == [own_digest]
        assert (await police_a.get(f"/api/alerts/{mine.id}/evidence/{digest}")).status == 404


async def test_evidence_for_another_sites_alert_is_refused(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path, database_url: str
) -> None:
    """Defect 3, the alert: A uploads its own picture and attaches it to B's alert."""
    cloud_broker = make_broker("cloud")
    both = two_sites()
    async with running_cloud(production(cloud_broker, tmp_path, database_url, both)) as cloud, \
            aiohttp.ClientSession() as http:
        pub = await publisher(cloud_broker)
        estate = Estate(cloud, pub, both)
        try:
            await estate.register(tmp_path)
            theirs = await estate.send(estate.b, "btn-b", "alert", sos("btn-b", "r-b1", HOME_B))
            await estate.stored(alerts, 1, alerts.c.id == theirs.id)
            picture = b"\xff\xd8\xff\xe0" + os.urandom(2_000) + b"\xff\xd9"
            digest = hashlib.sha256(picture).hexdigest()
            async with http.put(
                f"http://127.0.0.1:{cloud.http_port}/ingest/evidence/{digest}", data=picture,
                headers={"Content-Type": "image/jpeg", "Authorization": f"Bearer {TOKEN_A}"},
            ) as res:
                assert res.status == 201
            attached = await estate.send(estate.a, "btn-a", "evidence", {
                "sha256": digest, "size": len(picture), "content_type": "image/jpeg",
                "alert": theirs.id, "captured_ts": now_ms()})
            # The same picture for an alert not stored (yet): taken, in order after the other.
            later = await estate.send(estate.a, "btn-a", "evidence", {
                "sha256": digest, "size": len(picture), "content_type": "image/jpeg",
                "alert": unique("not-yet"), "captured_ts": now_ms()})
            await estate.stored(evidence, 1, evidence.c.id == later.id)
        finally:
            await pub.close()
        assert await estate.count(evidence, evidence.c.id == attached.id) == 0
        assert await estate.count(evidence, evidence.c.alert_id == theirs.id) == 0
        assert estate.rejected("foreign_alert") == 1


async def test_every_body_is_checked_and_every_refusal_counted(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path, database_url: str
) -> None:
    """Defect 6: events without a name, health reports of no known type or of the wrong
    shape, a camera event its profile does not have, a button's battery at 250 %, are refused
    and counted by reason; what the edge really sends is stored."""
    cloud_broker = make_broker("cloud")
    config = cloud_config(cloud_broker, tmp_path, database_url=database_url,
                          require_registered_sites=True)
    async with running_cloud(config) as cloud:
        pub = await publisher(cloud_broker)
        estate = Estate(cloud, pub, two_sites())
        try:
            await estate.register(tmp_path)
            a = estate.a
            await estate.send(a, "btn-a", "event", {"anything": 1})
            await estate.send(a, "btn-a", "event", {"type": "party", "anything": 1})
            await estate.send(a, "cam-a", "event", {"type": "teleport", "event": "teleport",
                                                    "device": "cam-a"})
            await estate.send(a, "cam-a", "event", {"type": "gap", "event": "gap",
                                                    "device": "cam-a", "start_ms": "soon",
                                                    "end_ms": 5})
            await estate.send(a, "gateway", "health", {"type": "whatever", "x": [1, 2, 3]})
            await estate.send(a, "gateway", "health", {"type": "gateway", "alerts": "all"})
            await estate.send(a, "gateway", "health", {"type": "outbox_drops",
                                                       "drops": [{"class": 1}]})
            await estate.send(a, "gateway", "telemetry", {"readings": [
                {"id": unique("r"), "device": "btn-a", "ts": now_ms(), "values": {"battery": 250}},
            ]})
            # What the edge sends: readings, a camera's gap ledger, a resolution, its report.
            await estate.send(a, "gateway", "telemetry", {"readings": [
                {"id": unique("r"), "device": "btn-a", "ts": now_ms(), "values": {"battery": 80}},
                # Not imported: stored as it comes (telemetry stays within its site).
                {"id": unique("r"), "device": "meter-x", "ts": now_ms(), "values": {"flow": 1.5}},
            ]})
            gap = await estate.send(a, "cam-a", "event", {"type": "gap", "event": "gap",
                                                          "device": "cam-a", "start_ms": 1,
                                                          "end_ms": 5})
            await estate.send(a, "btn-a", "event", {
                "type": "alert_resolved", "alert_id": unique("al"), "alert_type": "sos",
                "dedup_key": "resident:r-a1|sos", "subject": "resident:r-a1",
                "opened_ms": 1, "repeats": 0, "why": {"event": "clear"},
                "who": {"device": "btn-a", "kind": "emergency_button", "resident": "r-a1",
                        "tags": [], "location": HOME_A}})
            report = {"type": "gateway", "devices": {"devices": 2}, "edge_broker": True,
                      "outbox_depth": {"telemetry": 0}, "outbox_critical": False,
                      "alerts": [["01ALERT", 2]]}
            await estate.send(a, "gateway", "health", report)

            async def reported() -> bool:
                assert cloud.store is not None
                async with cloud.store.engine.connect() as conn:
                    health = (await conn.execute(
                        select(sites.c.last_health).where(sites.c.id == a))).scalar_one()
                return health == report

            await eventually(reported)
        finally:
            await pub.close()
        assert await estate.count(events, events.c.site == a) == 2
        assert await estate.count(events, events.c.id == gap.id) == 1
        assert await estate.count(drop_reports, drop_reports.c.site == a) == 0
        assert estate.rejected("invalid_event") == 3
        assert estate.rejected("unknown_event") == 1
        assert estate.rejected("invalid_health") == 3
        assert estate.rejected("invalid_telemetry") == 1
        assert cloud.telemetry is not None
        assert await cloud.telemetry.count(a) == 2


async def test_a_dead_letter_is_placed_by_the_registry_too(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path, database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug keeps an alert from being stored: the `processing_failed` alert that carries it
    goes to the station and family of the device's registered place, not the envelope's."""
    async def broken(self: Any, pending: Any) -> None:
        raise RuntimeError("a bug in storing alerts")

    monkeypatch.setattr("cloud.ingest.Ingest._new_alerts", broken)
    cloud_broker = make_broker("cloud")
    config = cloud_config(cloud_broker, tmp_path, database_url=database_url,
                          require_registered_sites=True)
    async with running_cloud(config) as cloud, aiohttp.ClientSession() as http:
        pub = await publisher(cloud_broker)
        estate = Estate(cloud, pub, two_sites())
        try:
            await estate.register(tmp_path)
            await add_people(cloud)
            await estate.send(estate.a, "btn-a", "alert", sos("btn-a", "r-b1", HOME_B))
            await estate.stored(alerts, 1, alerts.c.type == "processing_failed")
        finally:
            await pub.close()
        police_a = await Client.login(http, cloud, "police-a", PASSWORD)
        police_b = await Client.login(http, cloud, "police-b", PASSWORD)
        [failed] = await police_a.ids()
        assert await police_b.ids() == []
        alert = (await police_a.get(f"/api/alerts/{failed}")).body
        assert (alert["type"], alert["location"], alert["resident"]) == (
            "processing_failed", HOME_A, "r-a1")
