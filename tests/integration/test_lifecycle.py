"""Alert lifecycle over the API: every transition from every state, by whom, and audited."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from cloud.access import audit
from cloud.alerts import TRANSITIONS
from cloud.lifecycle import TARGET_STATE
from tests.conftest import api_config, running_cloud
from tests.integration.people import HOME_A, Client, add_alert, add_people

pytestmark = pytest.mark.integration
# How to bring a fresh (open) alert into each state.
PATH_TO = {
    "open": [],
    "acknowledged": ["ack"],
    "dispatched": ["ack", "dispatch"],
    "resolved": ["resolve"],
    "false_alarm": ["false_alarm"],
}
BODY = {"dispatch": {"worker": "worker-a", "note": "go"}}


async def test_every_action_from_every_state_is_done_or_refused_with_the_reason(
    database_url: str,
) -> None:
    async with running_cloud(api_config(database_url)) as cloud, aiohttp.ClientSession() as http:
        await add_people(cloud)
        police = await Client.login(http, cloud, "police-a")
        outcomes = {}
        for state, path in PATH_TO.items():
            for action, target in TARGET_STATE.items():
                alert = await add_alert(cloud)
                for step in path:
                    assert (await police.post(f"/api/alerts/{alert['id']}/{step}",
                                              BODY.get(step, {}))).status == 200
                reply = await police.post(f"/api/alerts/{alert['id']}/{action}",
                                          BODY.get(action, {"note": "n"}))
                outcomes[(state, action)] = reply.status
                if reply.status == 409:
                    assert reply.body == {
                        "error": f"alert {alert['id']} is {state}; it cannot become {target}"
                    }
                else:
                    assert reply.body["state"] == target
                    last = reply.body["timeline"][-1]
                    assert (last["from_state"], last["to_state"], last["actor"]) == (
                        state, target, "user:police-a")
        assert outcomes == {
            (s, a): 200 if TARGET_STATE[a] in TRANSITIONS[s] else 409
            for s in PATH_TO for a in TARGET_STATE
        }
        assert list(outcomes.values()).count(200) == 8


async def test_dispatch_names_a_worker_who_covers_the_alert_and_is_recorded(
    database_url: str,
) -> None:
    async with running_cloud(api_config(database_url)) as cloud, aiohttp.ClientSession() as http:
        await add_people(cloud)
        alert = await add_alert(cloud, location=HOME_A)
        aid = alert["id"]
        police = await Client.login(http, cloud, "police-a")
        assert (await police.post(f"/api/alerts/{aid}/ack", {"note": "calling the family"})).status == 200
        for body, message in [
            ({}, "worker: dispatch names"),
            ({"worker": "worker-b"}, "worker: no community worker 'worker-b' covers"),
            ({"worker": "police-a"}, "worker: no community worker 'police-a' covers"),
            ({"worker": "nobody"}, "worker: no community worker 'nobody'"),
            ({"worker": "worker-a", "urgent": True}, "urgent: unknown field"),
            ({"worker": "worker-a", "note": 5}, "note: must be a string"),
        ]:
            reply = await police.post(f"/api/alerts/{aid}/dispatch", body)
            assert reply.status == 400, body
            assert reply.body["error"].startswith(message), reply.body
        reply = await police.post(f"/api/alerts/{aid}/dispatch", {"worker": "worker-a", "note": "go"})
        assert reply.status == 200
        assert reply.body["dispatched_to"] == "worker-a"
        worker = await Client.login(http, cloud, "worker-a")
        reply = await worker.post(f"/api/alerts/{aid}/resolve", {"note": "resident fine, fell asleep"})
        assert reply.status == 200
        assert [(t["to_state"], t["actor"], t["note"]) for t in reply.body["timeline"]] == [
            ("open", "site:s-1", None),
            ("acknowledged", "user:police-a", "calling the family"),
            ("dispatched", "user:police-a", "go"),
            ("resolved", "user:worker-a", "resident fine, fell asleep"),
        ]
        assert cloud.store is not None
        entries = await audit.entries(cloud.store.engine, target=aid)
        assert [(e["actor"], e["action"]) for e in reversed(entries)] == [
            ("user:police-a", "alert_ack"), ("user:police-a", "alert_dispatch"),
            ("user:worker-a", "alert_resolve"),
        ]
        assert next(e for e in entries if e["action"] == "alert_dispatch")["detail"] == {
            "to": "dispatched", "worker": "worker-a"}


async def test_family_may_acknowledge_but_not_dispatch(database_url: str) -> None:
    async with running_cloud(api_config(database_url)) as cloud, aiohttp.ClientSession() as http:
        await add_people(cloud)
        alert = await add_alert(cloud, resident="r-a1")
        family = await Client.login(http, cloud, "family-a")
        assert (await family.post(f"/api/alerts/{alert['id']}/ack")).status == 200
        reply = await family.post(f"/api/alerts/{alert['id']}/dispatch", {"worker": "worker-a"})
        assert (reply.status, reply.body) == (403, {"error": "a family user may not dispatch alerts"})
        reply = await family.post(f"/api/alerts/{alert['id']}/false_alarm", {"note": "pressed by mistake"})
        assert reply.status == 200


async def test_two_simultaneous_acks_one_wins_the_other_is_told_why(database_url: str) -> None:
    async with running_cloud(api_config(database_url)) as cloud, aiohttp.ClientSession() as http:
        await add_people(cloud)
        alert = await add_alert(cloud)
        police, worker = (await Client.login(http, cloud, "police-a"),
                          await Client.login(http, cloud, "worker-a"))
        replies = await asyncio.gather(
            *(c.post(f"/api/alerts/{alert['id']}/ack") for c in (police, worker, police, worker))
        )
        assert sorted(r.status for r in replies) == [200, 409, 409, 409]
        for r in replies:
            if r.status == 409:
                assert "cannot become acknowledged" in r.body["error"]
        timeline = (await police.get(f"/api/alerts/{alert['id']}")).body["timeline"]
        assert [t["to_state"] for t in timeline] == ["open", "acknowledged"]


async def test_a_transition_reaches_every_websocket_in_scope(database_url: str) -> None:
    async with running_cloud(api_config(database_url)) as cloud, aiohttp.ClientSession() as http:
        await add_people(cloud)
        alert = await add_alert(cloud)
        police, family_b = (await Client.login(http, cloud, "police-a"),
                            await Client.login(http, cloud, "family-b"))
        async with (
            http.ws_connect(f"{police.base}/api/ws", headers=police.headers) as ws_in,
            http.ws_connect(f"{police.base}/api/ws", headers=family_b.headers) as ws_out,
        ):
            assert len((await ws_in.receive_json(timeout=5))["alerts"]) == 1
            assert (await ws_out.receive_json(timeout=5))["alerts"] == []
            assert (await police.post(f"/api/alerts/{alert['id']}/ack")).status == 200
            update = await ws_in.receive_json(timeout=5)
            assert (update["type"], update["alert"]["state"]) == ("alert_updated", "acknowledged")
            with pytest.raises(asyncio.TimeoutError):
                await ws_out.receive_json(timeout=0.3)


async def test_what_each_role_may_do_to_an_alert_in_its_scope(database_url: str) -> None:
    legal_from = {"ack": [], "dispatch": ["ack"], "resolve": [], "false_alarm": []}
    async with running_cloud(api_config(database_url)) as cloud, aiohttp.ClientSession() as http:
        await add_people(cloud)
        admin = await Client.login(http, cloud, "admin")
        outcomes = {}
        for user in ("police-a", "worker-a", "family-a", "admin"):
            client = await Client.login(http, cloud, user)
            for action, path in legal_from.items():
                alert = await add_alert(cloud, location=HOME_A, resident="r-a1")
                for step in path:
                    assert (await admin.post(f"/api/alerts/{alert['id']}/{step}")).status == 200
                reply = await client.post(f"/api/alerts/{alert['id']}/{action}",
                                          BODY.get(action, {}))
                outcomes[(user, action)] = reply.status
                if reply.status == 200:
                    assert reply.body["timeline"][-1]["actor"] == f"user:{user}"
        assert outcomes == {
            (u, a): 403 if (u, a) == ("family-a", "dispatch") else 200
            for u in ("police-a", "worker-a", "family-a", "admin") for a in legal_from
        }


async def test_dispatch_candidates_and_the_audit_log_over_the_api(database_url: str) -> None:
    async with running_cloud(api_config(database_url)) as cloud, aiohttp.ClientSession() as http:
        await add_people(cloud)
        assert cloud.access is not None
        await cloud.access.add_user("worker-a2", "worker-a2-password", "worker",
                                    locations=["d1/s1/c-a/g1"], display_name="网格员 二")
        await cloud.access.add_user("worker-a3", "worker-a3-password", "worker",
                                    locations=["d1/s1/c-a/g2"])
        alert = await add_alert(cloud, location=HOME_A)
        police, family = (await Client.login(http, cloud, "police-a"),
                          await Client.login(http, cloud, "family-a"))
        reply = await police.get(f"/api/alerts/{alert['id']}/workers")
        assert reply.body == {"workers": [
            {"username": "worker-a", "display_name": "worker-a"},
            {"username": "worker-a2", "display_name": "网格员 二"},
        ]}
        assert (await family.get(f"/api/alerts/{alert['id']}/workers")).status == 403
        police_b = await Client.login(http, cloud, "police-b")
        assert (await police_b.get(f"/api/alerts/{alert['id']}/workers")).status == 404

        assert (await police.get("/api/audit")).status == 403
        admin = await Client.login(http, cloud, "admin")
        assert (await police.post(f"/api/alerts/{alert['id']}/ack")).status == 200
        entries = (await admin.get(f"/api/audit?target={alert['id']}")).body["entries"]
        assert [(e["actor"], e["action"]) for e in entries] == [
            ("user:police-a", "alert_ack"), ("user:police-b", "alert_denied")]
        logins = (await admin.get("/api/audit?action=login_succeeded&limit=2")).body["entries"]
        assert [e["target"] for e in logins] == ["admin", "police-b"]
        for query, param in (("limit=0", "limit"), ("who=x", "who")):
            reply = await admin.get(f"/api/audit?{query}")
            assert reply.status == 400
            assert reply.body["error"].startswith(f"{param}: ")


async def test_a_dispatch_whose_assignee_cannot_be_written_leaves_the_alert_as_it_was(
    database_url: str,
) -> None:
    """The state change and the assignee are one transaction: a failure writes neither."""
    from sqlalchemy.exc import IntegrityError

    from cloud.access.tables import assignments

    async with running_cloud(api_config(database_url)) as cloud:
        assert cloud.store is not None
        alert = await add_alert(cloud)
        await cloud.store.transition(alert["id"], "acknowledged", actor="user:x")
        # The same row twice: the second insert breaks the primary key, after the transition.
        row = {"seq": 10**9, "alert_id": alert["id"], "user_id": 1, "ts": 1}
        twice = [assignments.insert().values(row), assignments.insert().values(row)]
        with pytest.raises(IntegrityError):
            await cloud.store.transition(alert["id"], "dispatched", actor="user:x", also=twice)
        after = await cloud.store.get_alert(alert["id"])
        assert after["state"] == "acknowledged"
        assert [t["to_state"] for t in after["timeline"]] == ["open", "acknowledged"]
