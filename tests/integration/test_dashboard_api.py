"""What the dashboard reads besides alerts: evidence blobs through their alert, and places."""

from __future__ import annotations

import hashlib
from pathlib import Path

import aiohttp
import pytest
import yaml

from cloud.access import audit
from cloud.admin import import_file
from cloud.server import CloudServer
from shouwang.protocol import make_envelope
from tests.conftest import api_config, running_cloud
from tests.integration.people import (
    GRID_A,
    GRID_B,
    HOME_A,
    HOME_B,
    Client,
    add_alert,
    add_people,
)

pytestmark = pytest.mark.integration


async def add_evidence(cloud: CloudServer, alert_id: str, data: bytes, *, write: bool = True) -> str:
    assert cloud.evidence is not None
    sha = hashlib.sha256(data).hexdigest()
    if write:
        cloud.evidence.path(sha).parent.mkdir(parents=True, exist_ok=True)
        cloud.evidence.path(sha).write_bytes(data)
    env = make_envelope(site="s-1", device="cam-1", kind="evidence", ts=1, body={
        "sha256": sha, "size": len(data), "content_type": "image/jpeg", "alert": alert_id,
        "captured_ts": 1_795_000_000_000})
    assert await cloud.evidence.insert(env, received_ms=1)
    return sha


async def test_evidence_is_served_only_through_an_alert_the_caller_may_read(
    database_url: str, tmp_path: Path
) -> None:
    config = api_config(database_url, evidence={"dir": str(tmp_path / "blobs")})
    async with running_cloud(config) as cloud, aiohttp.ClientSession() as http:
        await add_people(cloud)
        a, b = await add_alert(cloud, location=HOME_A), await add_alert(
            cloud, location=HOME_B, resident="r-b1")
        jpeg_a, jpeg_b = b"\xff\xd8 door camera A \xff\xd9", b"\xff\xd8 door camera B \xff\xd9"
        sha_a, sha_b = await add_evidence(cloud, a["id"], jpeg_a), await add_evidence(
            cloud, b["id"], jpeg_b)
        lost = await add_evidence(cloud, a["id"], b"\xff\xd8 never uploaded \xff\xd9", write=False)

        for user in ("police-a", "worker-a", "family-a", "admin"):
            client = await Client.login(http, cloud, user)
            async with http.get(f"{client.base}/api/alerts/{a['id']}/evidence/{sha_a}",
                                headers=client.headers) as res:
                assert res.status == 200, user
                assert await res.read() == jpeg_a
                assert res.headers["Content-Type"] == "image/jpeg"
                assert res.headers["Cache-Control"].startswith("private")
            # The detail lists the references the blob route serves.
            detail = await client.get(f"/api/alerts/{a['id']}")
            assert [e["sha256"] for e in detail.body["evidence"]] == [sha_a, lost]

        police_a = await Client.login(http, cloud, "police-a")
        missing = await police_a.get(f"/api/alerts/no-such-alert/evidence/{sha_a}")
        other = await police_a.get(f"/api/alerts/{b['id']}/evidence/{sha_b}")
        # Another station's alert answers byte for byte like a missing one.
        assert (missing.status, missing.raw) == (other.status, other.raw)
        assert other.status == 404
        # Another alert's hash through an alert one may read, or a blob not on disk: 404 too.
        for sha in (sha_b, lost):
            reply = await police_a.get(f"/api/alerts/{a['id']}/evidence/{sha}")
            assert (reply.status, reply.body) == (404, {"error": "no such evidence"})
        async with http.get(f"{police_a.base}/api/alerts/{a['id']}/evidence/not-a-hash",
                            headers=police_a.headers) as res:
            assert res.status == 404

        reads = await audit.entries(cloud.store.engine, action="evidence_read")  # type: ignore[union-attr]
        assert [(r["actor"], r["target"], r["detail"]) for r in reads] == [
            (f"user:{u}", a["id"], {"sha256": sha_a})
            for u in ("admin", "family-a", "worker-a", "police-a")
        ]
        denied = await audit.entries(cloud.store.engine, action="alert_denied")  # type: ignore[union-attr]
        assert [(r["actor"], r["target"], r["detail"]) for r in denied] == [
            ("user:police-a", b["id"], {"action": "evidence_read"})]


async def test_places_are_the_next_level_down_with_counts_within_the_callers_scope(
    database_url: str, tmp_path: Path
) -> None:
    async with running_cloud(api_config(database_url)) as cloud, aiohttp.ClientSession() as http:
        await add_people(cloud)
        await add_alert(cloud, location=HOME_A)
        await add_alert(cloud, location=HOME_A, severity="high")
        done = await add_alert(cloud, location=HOME_A.replace("/101", "/102"))
        await add_alert(cloud, location=HOME_B, resident="r-b1")
        admin = await Client.login(http, cloud, "admin")
        await admin.post(f"/api/alerts/{done['id']}/resolve")

        # Imported places show without alerts, within scope (and the way down to it).
        places = tmp_path / "locations.yaml"
        places.write_text(yaml.safe_dump([{"path": f"{GRID_A}/b2", "label": "2号楼"},
                                          {"path": f"{GRID_B}/b9"}, {"path": "d2"}]))
        await import_file(cloud.store, "locations", places, 1)  # type: ignore[arg-type]
        top = await admin.get("/api/locations")
        assert top.body == {"prefix": "", "level": "district", "children": [
            {"path": "d1", "name": "d1", "label": None, "alerts": 4, "active": 3,
             "critical_active": 2},
            {"path": "d2", "name": "d2", "label": None, "alerts": 0, "active": 0,
             "critical_active": 0}]}
        grid = await admin.get(f"/api/locations?prefix={GRID_A}")
        assert [(c["name"], c["label"], c["alerts"]) for c in grid.body["children"]] == [
            ("b1", None, 3), ("b2", "2号楼", 0)]
        streets = await admin.get("/api/locations?prefix=d1")
        assert [(c["path"], c["alerts"]) for c in streets.body["children"]] == [
            ("d1/s1", 3), ("d1/s2", 1)]
        floor = HOME_A.rsplit("/", 1)[0]
        homes = await admin.get(f"/api/locations?prefix={floor}/")
        assert homes.body["level"] == "household"
        assert [(c["name"], c["active"]) for c in homes.body["children"]] == [("101", 2), ("102", 0)]

        police_a = await Client.login(http, cloud, "police-a")
        assert [c["path"] for c in (await police_a.get("/api/locations")).body["children"]] == [
            "d1"]
        assert [c["name"] for c in (await police_a.get(
            f"/api/locations?prefix={GRID_A}")).body["children"]] == ["b1", "b2"]
        streets = await police_a.get("/api/locations?prefix=d1")
        assert [(c["path"], c["alerts"]) for c in streets.body["children"]] == [("d1/s1", 3)]
        assert (await police_a.get("/api/locations?prefix=d1/s2")).body["children"] == []
        family_b = await Client.login(http, cloud, "family-b")
        assert [c["alerts"] for c in (await family_b.get("/api/locations")).body["children"]] == [1]

        for query, param in (("prefix=d1//s1", "prefix"), ("where=d1", "where")):
            reply = await admin.get(f"/api/locations?{query}")
            assert reply.status == 400
            assert reply.body["error"].startswith(f"{param}: ")
