"""高空抛物 after the investigation: the flat a thrown object came from, recorded with the alert.

A grid worker or an officer who found the flat (`POST /api/alerts/{id}/confirm_flat`) records
its floor and window column with a note; it is kept on the alert, shown in its timeline and
audited, refused out of scope exactly like a missing alert, and a bad body names its field.
The camera's own estimate (floor, column, candidates, track) is shared with police and workers:
it is where to look, not a reading about a person.
"""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from cloud.access import audit
from tests.conftest import api_config, running_cloud
from tests.integration.people import (
    THROW_DATA,
    Client,
    add_alert,
    add_people,
    add_throw,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """Refusals are the API's, the same on both stores: SQLite only, for speed."""
    return f"sqlite+aiosqlite:///{tmp_path}/cloud.sqlite"


async def test_the_confirmed_flat_is_kept_with_the_alert_in_its_timeline_and_audited(
    database_url: str,
) -> None:
    async with running_cloud(api_config(database_url)) as cloud, aiohttp.ClientSession() as http:
        await add_people(cloud)
        alert = await add_throw(cloud)
        worker = await Client.login(http, cloud, "worker-a")
        police = await Client.login(http, cloud, "police-a")
        # Where to look: the camera's estimate reaches those who go and look.
        seen = await police.get(f"/api/alerts/{alert['id']}")
        assert seen.status == 200
        assert seen.body["detail"]["why"]["data"] == THROW_DATA
        assert seen.body["confirmed_flat"] is None

        reply = await worker.post(f"/api/alerts/{alert['id']}/confirm_flat",
                                  {"floor": 13, "column": 3, "note": "13 层住户承认扔了花盆"})
        assert reply.status == 200, reply.body
        flat = reply.body["confirmed_flat"]
        assert {k: flat[k] for k in ("floor", "column", "note", "by")} == {
            "floor": 13, "column": 3, "note": "13 层住户承认扔了花盆", "by": "worker-a"}
        assert reply.body["state"] == "open"  # a finding, not a state change
        last = reply.body["timeline"][-1]
        assert (last["from_state"], last["to_state"], last["actor"]) == (
            "open", "open", "user:worker-a")
        assert last["note"] == "flat 13:3: 13 层住户承认扔了花盆"
        # Kept: everyone in scope reads it with the alert.
        again = await police.get(f"/api/alerts/{alert['id']}")
        assert again.body["confirmed_flat"]["floor"] == 13

        # A correction after the alert is resolved: the latest stands, both are in the record.
        assert (await police.post(f"/api/alerts/{alert['id']}/resolve")).status == 200
        reply = await police.post(f"/api/alerts/{alert['id']}/confirm_flat",
                                  {"floor": 14, "column": 3})
        assert reply.status == 200, reply.body
        assert (reply.body["confirmed_flat"]["floor"], reply.body["confirmed_flat"]["by"],
                reply.body["confirmed_flat"]["note"]) == (14, "police-a", None)
        assert [s["note"] for s in reply.body["timeline"] if s["note"] and
                s["note"].startswith("flat ")] == ["flat 13:3: 13 层住户承认扔了花盆", "flat 14:3"]
        assert cloud.store is not None
        rows = await audit.entries(cloud.store.engine, action="alert_confirm_flat",
                                   target=alert["id"])
        assert [(r["actor"], r["detail"]) for r in reversed(rows)] == [
            ("user:worker-a", {"floor": 13, "column": 3}),
            ("user:police-a", {"floor": 14, "column": 3}),
        ]


async def test_out_of_scope_is_missing_and_only_a_throw_has_a_flat(database_url: str) -> None:
    async with running_cloud(api_config(database_url)) as cloud, aiohttp.ClientSession() as http:
        await add_people(cloud)
        alert = await add_throw(cloud)
        body = {"floor": 12, "column": 3}
        for user in ("worker-b", "police-b", "family-a"):
            other = await Client.login(http, cloud, user)
            reply = await other.post(f"/api/alerts/{alert['id']}/confirm_flat", body)
            assert (reply.status, reply.body) == (404, {"error": "no such alert"}), user
        missing = await (await Client.login(http, cloud, "admin")).post(
            "/api/alerts/nope/confirm_flat", body)
        assert (missing.status, missing.body) == (404, {"error": "no such alert"})
        assert cloud.store is not None
        denied = await audit.entries(cloud.store.engine, action="alert_denied",
                                     target=alert["id"])
        assert sorted((r["actor"], r["detail"]["action"]) for r in denied) == [
            ("user:family-a", "confirm_flat"), ("user:police-b", "confirm_flat"),
            ("user:worker-b", "confirm_flat")]
        assert await audit.entries(cloud.store.engine, action="alert_confirm_flat") == []

        worker = await Client.login(http, cloud, "worker-a")
        sos = await add_alert(cloud)
        reply = await worker.post(f"/api/alerts/{sos['id']}/confirm_flat", body)
        assert reply.status == 409
        assert reply.body == {"error": "only a thrown_object alert has a flat to confirm; "
                                       f"alert {sos['id']} is sos"}
        assert (await worker.post(f"/api/alerts/{alert['id']}/false_alarm")).status == 200
        reply = await worker.post(f"/api/alerts/{alert['id']}/confirm_flat", body)
        assert reply.status == 409
        assert reply.body == {"error": f"alert {alert['id']} is a false alarm: nothing was "
                                       "thrown, no flat to confirm"}


@pytest.mark.parametrize(("body", "field"), [
    ({}, "floor"),
    ({"column": 3}, "floor"),
    ({"floor": "12", "column": 3}, "floor"),
    ({"floor": True, "column": 3}, "floor"),
    ({"floor": 0, "column": 3}, "floor"),
    ({"floor": 12.5, "column": 3}, "floor"),
    ({"floor": 12}, "column"),
    ({"floor": 12, "column": 201}, "column"),
    ({"floor": 12, "column": 3, "note": 5}, "note"),
    ({"floor": 12, "column": 3, "note": "x" * 2001}, "note"),
    ({"floor": 12, "column": 3, "flat": "1203"}, "flat"),
])
async def test_a_bad_body_is_400_naming_the_field(
    sqlite_url: str, body: dict[str, object], field: str,
) -> None:
    async with running_cloud(api_config(sqlite_url)) as cloud, aiohttp.ClientSession() as http:
        await add_people(cloud)
        alert = await add_throw(cloud)
        worker = await Client.login(http, cloud, "worker-a")
        reply = await worker.post(f"/api/alerts/{alert['id']}/confirm_flat", body)
        assert reply.status == 400, reply.body
        assert reply.body["error"].startswith(f"{field}: "), reply.body
        assert (await worker.get(f"/api/alerts/{alert['id']}")).body["confirmed_flat"] is None


async def test_a_foreign_page_cannot_record_a_flat_with_the_cookie(sqlite_url: str) -> None:
    jar = aiohttp.CookieJar(unsafe=True)
    async with (
        running_cloud(api_config(sqlite_url)) as cloud,
        aiohttp.ClientSession(cookie_jar=jar) as http,
    ):
        await add_people(cloud)
        alert = await add_throw(cloud)
        base = f"http://127.0.0.1:{cloud.http_port}"
        async with http.post(f"{base}/api/login", headers={"Origin": base},
                             json={"username": "worker-a", "password": "correct horse battery"}
                             ) as res:
            assert res.status == 200
        url = f"{base}/api/alerts/{alert['id']}/confirm_flat"
        body = json.dumps({"floor": 12, "column": 3})
        async with http.post(url, data=body, headers={
                "Origin": "https://evil.example", "Content-Type": "application/json"}) as res:
            assert res.status == 403
        async with http.post(url, data=body, headers={
                "Origin": base, "Content-Type": "application/json"}) as res:
            assert res.status == 200
