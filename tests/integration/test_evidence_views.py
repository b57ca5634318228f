"""Viewing evidence: a clip is served in byte ranges (video seeking), each view is one audit
row however many range requests it takes, and evidence shows only where its alert does."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cloud.access import audit
from shouwang.clock import ManualClock
from tests.conftest import api_config, running_cloud
from tests.evidence_media import attach, h264_clip, jpeg_snapshot
from tests.integration.people import HOME_A, Client, add_alert, add_people

pytestmark = pytest.mark.integration
WINDOW_S = 300  # evidence.view_audit_window_s by default


async def _get(client: Client, path: str, **headers: str) -> tuple[int, bytes, Any]:
    async with client.http.get(client.base + path, headers={**client.headers, **headers}) as res:
        return res.status, await res.read(), res.headers


async def _views(cloud: Any, alert_id: str) -> list[tuple[str, str]]:
    rows = await audit.entries(cloud.store.engine, action="evidence_read", target=alert_id)
    return [(r["actor"], r["detail"]["sha256"]) for r in reversed(rows)]


async def test_a_clip_is_served_in_ranges_and_each_view_is_audited_once(
    database_url: str, tmp_path: Path
) -> None:
    clock = ManualClock()
    config = api_config(database_url, evidence={"dir": str(tmp_path / "blobs")})
    async with running_cloud(config, clock=clock) as cloud, aiohttp.ClientSession() as http:
        await add_people(cloud)
        alert = await add_alert(cloud, location=HOME_A)
        clip = await h264_clip(tmp_path / "clip.mp4")
        sha = await attach(cloud, alert, clip, "video/mp4")
        snap_sha = await attach(cloud, alert, await jpeg_snapshot(tmp_path / "s.jpg"),
                                "image/jpeg")
        path = f"/api/alerts/{alert['id']}/evidence/{sha}"
        police = await Client.login(http, cloud, "police-a")

        # What a video element asks first, then what a seek asks: partial content.
        status, body, headers = await _get(police, path, Range="bytes=0-")
        assert (status, body) == (206, clip)
        assert headers["Content-Range"] == f"bytes 0-{len(clip) - 1}/{len(clip)}"
        assert headers["Accept-Ranges"] == "bytes"
        assert headers["Content-Type"] == "video/mp4"
        # Every view reaches the server (and so the audit log): revalidated, never cached blind.
        assert headers["Cache-Control"] == "private, no-cache"
        status, body, _ = await _get(police, path, Range="bytes=1000-1999")
        assert (status, body) == (206, clip[1000:2000])
        status, body, _ = await _get(police, path, Range=f"bytes={len(clip) - 100}-")
        assert (status, body) == (206, clip[-100:])
        status, body, headers = await _get(police, path)
        assert (status, body) == (200, clip)
        status, _, _ = await _get(police, path, **{"If-None-Match": headers["ETag"]})
        assert status == 304
        status, _, _ = await _get(police, path, Range=f"bytes={len(clip) + 10}-")
        assert status == 416
        # Six requests of one playback: one view.
        assert await _views(cloud, alert["id"]) == [("user:police-a", sha)]

        # Another person, another blob, or the same person later: each a view of its own.
        worker = await Client.login(http, cloud, "worker-a")
        assert (await _get(worker, path, Range="bytes=0-"))[0] == 206
        assert (await _get(police, f"/api/alerts/{alert['id']}/evidence/{snap_sha}"))[0] == 200
        assert (await _get(police, path, Range="bytes=0-"))[0] == 206  # still the first view
        clock.advance((WINDOW_S - 1) * 1000)
        assert (await _get(police, path, Range="bytes=5000-"))[0] == 206  # still the first view
        clock.advance(2 * 1000)
        assert (await _get(police, path, Range="bytes=5000-"))[0] == 206  # a new view
        assert await _views(cloud, alert["id"]) == [
            ("user:police-a", sha), ("user:worker-a", sha), ("user:police-a", snap_sha),
            ("user:police-a", sha)]
        rows = await audit.entries(cloud.store.engine, action="evidence_read",  # type: ignore[union-attr]
                                   target=alert["id"])
        assert {r["remote"] for r in rows} == {"127.0.0.1"}
        assert rows[0]["ts"] == clock.now_ms()


async def test_evidence_is_listed_and_served_only_where_its_alert_is(
    database_url: str, tmp_path: Path
) -> None:
    config = api_config(database_url, evidence={"dir": str(tmp_path / "blobs")})
    async with running_cloud(config) as cloud, aiohttp.ClientSession() as http:
        await add_people(cloud)
        alert = await add_alert(cloud, location=HOME_A)
        ours = await jpeg_snapshot(tmp_path / "ours.jpg")
        sha = await attach(cloud, alert, ours, "image/jpeg")
        # Another site's gateway names this alert's id in its evidence: it is not this alert's.
        foreign = await h264_clip(tmp_path / "foreign.mp4", seconds=1)
        foreign_sha = await attach(cloud, alert, foreign, "video/mp4", site="another-site")
        police_a = await Client.login(http, cloud, "police-a")
        police_b = await Client.login(http, cloud, "police-b")
        admin = await Client.login(http, cloud, "admin")
        for client in (police_a, admin):
            detail = await client.get(f"/api/alerts/{alert['id']}")
            assert [e["sha256"] for e in detail.body["evidence"]] == [sha]
        status, _, _ = await _get(admin, f"/api/alerts/{alert['id']}/evidence/{foreign_sha}")
        assert status == 404
        # Out of scope: the detail, the blob and the package answer as for a missing alert.
        missing = "01NOSUCHALERT00000000000000"
        for suffix in ("", f"/evidence/{sha}", "/package"):
            theirs = await _get(police_b, f"/api/alerts/{alert['id']}{suffix}")
            absent = await _get(police_b, f"/api/alerts/{missing}{suffix}")
            assert theirs[:2] == absent[:2] == (404, b'{"error": "no such alert"}'), suffix
        assert cloud.store is not None
        denied = await audit.entries(cloud.store.engine, action="alert_denied",
                                     target=alert["id"])
        assert sorted(e["detail"]["action"] for e in denied) == [
            "evidence_package", "evidence_read", "read"]
        assert await _views(cloud, alert["id"]) == []
        # A live change carries the alert, never its evidence list.
        async with http.ws_connect(f"{police_a.base}/api/ws", headers=police_a.headers) as ws:
            await ws.receive_json(timeout=5)  # the snapshot
            assert (await admin.post(f"/api/alerts/{alert['id']}/ack")).status == 200
            live = await ws.receive_json(timeout=5)
        assert live["type"] == "alert_updated"
        assert "evidence" not in live["alert"]
        assert hashlib.sha256(ours).hexdigest() == sha
