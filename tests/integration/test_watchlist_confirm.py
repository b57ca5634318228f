"""A person confirms a watchlist match before anyone acts on it (issue 16, item 5).

A `watchlist_hit` first goes only to its duty person: the grid worker for a missing elder,
the station's officer for the police list; not to the family, not up to the police. `confirm`
routes it on through the escalation stages the policy names for a confirmed match; `reject`
closes it as a false match, with the reason, counted per list and camera. Both audited. The
policies are the shipped example's (deploy/examples/escalation.yaml), on the injected clock.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cloud.server import CloudServer
from shouwang.clock import ManualClock
from shouwang.protocol import make_envelope
from tests.conftest import api_config, eventually, running_cloud
from tests.integration.people import GRID_A, GRID_B, Client, add_people
from tests.integration.test_escalation import RecordingNotifier

pytestmark = pytest.mark.integration
EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "escalation.yaml"
GATE_A, GATE_B = f"{GRID_A}/gate-1", f"{GRID_B}/gate-1"
_n = iter(range(1, 10_000))


async def add_hit(
    cloud: CloudServer, *, person: str = "r-a1", watchlist: str = "missing_elder",
    camera: str = "cam-gate-a", location: str = GATE_A, score: float = 0.71,
) -> dict[str, Any]:
    """A watchlist_hit as the gateway's rules raise it (edge/video/worker.py, camera profile):
    about a camera at the gate, no resident; the match in the rule's data."""
    n = next(_n)
    env = make_envelope(
        site="s-1", device=camera, kind="alert", ts=1_795_000_000_000 + n,
        body={
            "type": "watchlist_hit", "severity": "high", "subject": f"device:{camera}",
            "dedup_key": f"device:{camera}|watchlist_hit|{n}", "life_safety": True,
            "source_id": f"m-{n}", "resident": None, "location": location,
            "detail": {
                "who": {"device": camera, "kind": "camera", "location": location},
                "what": "watchlist_hit",
                "why": {"rule": "camera.watchlist_hit", "type": "event_alert",
                        "event": "watchlist_hit",
                        "data": {"person": person, "watchlist": watchlist,
                                 "confidence": score, "track": str(n)}},
                "evidence": [],
            },
        },
    )
    assert cloud.store is not None
    alert = await cloud.store.insert_alert(env)
    assert alert is not None
    return alert


@contextlib.asynccontextmanager
async def cloud_with_policies(
    database_url: str, tmp_path: Path, clock: ManualClock, notifier: RecordingNotifier,
    **extra: Any,
) -> AsyncIterator[tuple[CloudServer, aiohttp.ClientSession]]:
    # The loop's own rounds wait a minute: the test drives the rounds on its clock.
    config = api_config(database_url, escalation={"file": str(EXAMPLE), "poll_s": 60},
                        **extra)
    async with running_cloud(config, clock=clock, notifier=notifier) as cloud, \
            aiohttp.ClientSession() as http:
        await add_people(cloud)
        yield cloud, http


async def rounds(cloud: CloudServer, n: int = 2) -> None:
    assert cloud.scheduler is not None
    for _ in range(n):
        await cloud.scheduler.round()


async def audit_of(admin: Client, action: str, target: str) -> list[dict[str, Any]]:
    reply = await admin.get(f"/api/audit?action={action}&target={target}")
    assert reply.status == 200, reply.body
    return list(reply.body["entries"])


async def test_a_missing_elder_match_reaches_the_family_only_after_the_worker_confirms(
    database_url: str, tmp_path: Path
) -> None:
    clock, notifier = ManualClock(), RecordingNotifier()
    async with cloud_with_policies(database_url, tmp_path, clock, notifier) as (cloud, http):
        hit = await add_hit(cloud, person="r-a1", watchlist="missing_elder")
        clock.set(hit["received_ms"])
        await rounds(cloud)
        # Only the duty grid worker: not the family, not the police.
        assert notifier.sent == [("worker-a", hit["id"], "duty-worker")]
        family = await Client.login(http, cloud, "family-a")
        assert (await family.get(f"/api/alerts/{hit['id']}")).status == 404
        assert hit["id"] not in await family.ids()
        worker = await Client.login(http, cloud, "worker-a")
        # Nobody acts on an unconfirmed match: acknowledging or dispatching waits.
        early = await worker.post(f"/api/alerts/{hit['id']}/ack")
        assert early.status == 409
        assert "confirm" in early.body["error"]
        noted = await worker.post(f"/api/alerts/{hit['id']}/note", {"note": "像她"})
        assert noted.status == 409  # nor a note: confirm or reject first
        assert "confirm" in noted.body["error"]
        # An hour later nobody else was told.
        clock.advance(3_600_000)
        await rounds(cloud)
        assert [s[0] for s in notifier.sent] == ["worker-a"]
        # The police officer sees the gate but is not this list's confirmer.
        police = await Client.login(http, cloud, "police-a")
        assert (await police.post(f"/api/alerts/{hit['id']}/confirm")).status == 403

        reply = await worker.post(f"/api/alerts/{hit['id']}/confirm", {"note": "是她，穿蓝外套"})
        assert reply.status == 200, reply.body
        confirmed = reply.body
        assert confirmed["state"] == "open"
        assert confirmed["confirmed"]["by"] == "worker-a"
        assert confirmed["resident"] == "r-a1"  # the elder's case now: her family sees it
        assert (await worker.post(f"/api/alerts/{hit['id']}/confirm")).status == 409
        await rounds(cloud)  # the confirmation woke the loop too: claims keep it to one
        await eventually(lambda: len(notifier.sent) >= 3)
        assert sorted(notifier.sent[1:]) == [
            ("family-a", hit["id"], "family-and-worker"),
            ("worker-a", hit["id"], "family-and-worker"),
        ]
        assert (await family.get(f"/api/alerts/{hit['id']}")).status == 200
        clock.advance(3_600_000)
        await rounds(cloud)
        assert len(notifier.sent) == 3  # never the police
        # Now it is an ordinary case: the worker takes it.
        assert (await worker.post(f"/api/alerts/{hit['id']}/ack")).status == 200
        admin = await Client.login(http, cloud, "admin")
        [entry] = await audit_of(admin, "alert_confirm", hit["id"])
        assert entry["actor"] == "user:worker-a"
        assert entry["detail"]["list"] == "missing_elder"
        assert entry["detail"]["camera"] == "cam-gate-a"
        detail = (await admin.get(f"/api/alerts/{hit['id']}")).body
        assert detail["match"] == {"list": "missing_elder", "person": "r-a1", "score": 0.71,
                                   "confirmers": ["admin", "worker"]}
        assert [(s["from_state"], s["to_state"], s["note"]) for s in detail["timeline"]][1] == (
            "open", "open", "confirmed: 是她，穿蓝外套")


async def test_a_police_match_goes_to_the_station_officer_who_alone_confirms_it(
    database_url: str, tmp_path: Path
) -> None:
    clock, notifier = ManualClock(), RecordingNotifier()
    async with cloud_with_policies(database_url, tmp_path, clock, notifier) as (cloud, http):
        hit = await add_hit(cloud, person="P-0042", watchlist="police")
        clock.set(hit["received_ms"])
        await rounds(cloud)
        assert notifier.sent == [("police-a", hit["id"], "duty-officer")]
        worker = await Client.login(http, cloud, "worker-a")
        refused = await worker.post(f"/api/alerts/{hit['id']}/confirm")
        assert refused.status == 403
        assert "police" in refused.body["error"]
        police = await Client.login(http, cloud, "police-a")
        assert (await police.post(f"/api/alerts/{hit['id']}/confirm")).status == 200
        await rounds(cloud)
        await eventually(lambda: len(notifier.sent) >= 2)
        assert notifier.sent[1:] == [("police-a", hit["id"], "station")]
        # A suspect is nobody's resident: no family is told.
        admin = await Client.login(http, cloud, "admin")
        assert (await admin.get(f"/api/alerts/{hit['id']}")).body["resident"] is None


async def test_rejections_close_the_match_and_are_counted_per_list_and_camera(
    database_url: str, tmp_path: Path
) -> None:
    clock, notifier = ManualClock(), RecordingNotifier()
    async with cloud_with_policies(database_url, tmp_path, clock, notifier) as (cloud, http):
        a1 = await add_hit(cloud, watchlist="police", person="P-1", camera="cam-gate-a")
        a2 = await add_hit(cloud, watchlist="police", person="P-2", camera="cam-gate-a")
        a3 = await add_hit(cloud, watchlist="missing_elder", camera="cam-gate-a")
        b1 = await add_hit(cloud, watchlist="police", person="P-1", camera="cam-gate-b",
                           location=GATE_B)
        police_a = await Client.login(http, cloud, "police-a")
        police_b = await Client.login(http, cloud, "police-b")
        worker_a = await Client.login(http, cloud, "worker-a")
        no_reason = await police_a.post(f"/api/alerts/{a1['id']}/reject")
        assert no_reason.status == 400
        assert no_reason.body["error"].startswith("note:")
        rejected = await police_a.post(f"/api/alerts/{a1['id']}/reject",
                                       {"note": "不是同一人：年龄不符"})
        assert rejected.status == 200, rejected.body
        assert rejected.body["state"] == "false_alarm"
        assert rejected.body["timeline"][-1]["note"] == "不是同一人：年龄不符"
        assert (await police_a.post(f"/api/alerts/{a1['id']}/reject",
                                    {"note": "again"})).status == 409
        assert (await police_a.post(f"/api/alerts/{a2['id']}/confirm")).status == 200
        assert (await worker_a.post(f"/api/alerts/{a3['id']}/reject",
                                    {"note": "是邻居"})).status == 200
        assert (await police_b.post(f"/api/alerts/{b1['id']}/reject",
                                    {"note": "光线太暗"})).status == 200
        # Confirm and reject are for watchlist matches only.
        other = await cloud.store.insert_alert(make_envelope(  # type: ignore[union-attr]
            site="s-1", device="btn-9", kind="alert", ts=1_795_000_000_000, body={
                "type": "sos", "severity": "critical", "subject": "resident:r-a1",
                "dedup_key": "resident:r-a1|sos", "life_safety": True, "resident": "r-a1",
                "location": f"{GRID_A}/b1", "detail": {}}))
        assert other is not None
        assert (await worker_a.post(f"/api/alerts/{other['id']}/confirm")).status == 409

        admin = await Client.login(http, cloud, "admin")
        reply = await admin.get("/api/watchlists/false-matches")
        assert reply.status == 200, reply.body
        assert reply.body["counts"] == [
            {"list": "missing_elder", "camera": "cam-gate-a", "hits": 1, "confirmed": 0,
             "false_matches": 1, "awaiting": 0},
            {"list": "police", "camera": "cam-gate-a", "hits": 2, "confirmed": 1,
             "false_matches": 1, "awaiting": 0},
            {"list": "police", "camera": "cam-gate-b", "hits": 1, "confirmed": 0,
             "false_matches": 1, "awaiting": 0},
        ]
        # Scoped: the other station counts only its own camera; a family may not ask.
        mine = (await police_b.get("/api/watchlists/false-matches")).body["counts"]
        assert [(c["list"], c["camera"]) for c in mine] == [("police", "cam-gate-b")]
        family = await Client.login(http, cloud, "family-a")
        assert (await family.get("/api/watchlists/false-matches")).status == 403
        async with http.get(f"{admin.base}/metrics") as res:
            text = await res.text()
        assert ('shouwang_watchlist_false_matches_total{camera="cam-gate-a",list="police"} 1.0'
                in text)
        assert ('shouwang_watchlist_false_matches_total{camera="cam-gate-a",'
                'list="missing_elder"} 1.0' in text)
        [entry] = await audit_of(admin, "alert_reject", a1["id"])
        assert entry["actor"] == "user:police-a"
        assert entry["detail"] == {"to": "false_alarm", "list": "police",
                                   "camera": "cam-gate-a", "reason": "不是同一人：年龄不符"}
        # A rejected match tells nobody more.
        clock.set(a1["received_ms"] + 3_600_000)
        await rounds(cloud)
        assert not [s for s in notifier.sent if s[1] == a1["id"] and s[2] != "duty-officer"]
