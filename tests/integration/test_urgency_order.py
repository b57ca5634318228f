"""The board's order: what needs a person first (issue 15, "Urgency first").

An unhandled critical fall sat below three acknowledged rows because the board was sorted by
time. `order=urgency` sorts by state (open, acknowledged, dispatched, then closed), then
severity (critical first), then age (newest first), and pages through that order without
losing or repeating an alert.
"""

from __future__ import annotations

import aiohttp
import pytest

from tests.conftest import api_config, running_cloud
from tests.integration.people import HOME_A, Client, add_alert, add_people

pytestmark = pytest.mark.integration

STATE_RANK = {"open": 0, "acknowledged": 1, "dispatched": 2, "resolved": 3, "false_alarm": 3}
SEVERITY_RANK = {"critical": 0, "high": 1, "medium": 2, "low": 3, "info": 4}


async def test_an_unhandled_critical_comes_before_handled_and_newer_rows(database_url: str) -> None:
    async with running_cloud(api_config(database_url)) as cloud, aiohttp.ClientSession() as http:
        await add_people(cloud)
        fall = await add_alert(cloud, ts=1_000, type="fall", severity="critical")
        handled = [await add_alert(cloud, ts=2_000 + n) for n in range(3)]
        tamper = await add_alert(cloud, ts=3_000, type="tamper", severity="medium")
        admin = await Client.login(http, cloud, "admin")
        for a in handled:
            assert (await admin.post(f"/api/alerts/{a['id']}/ack")).status == 200
        by_time = (await admin.get("/api/alerts")).body["alerts"]
        assert by_time[-1]["id"] == fall["id"]  # the default stays newest first
        urgent = (await admin.get("/api/alerts?order=urgency")).body["alerts"]
        assert [a["id"] for a in urgent[:2]] == [fall["id"], tamper["id"]]
        assert {a["id"] for a in urgent[2:]} == {a["id"] for a in handled}


async def test_urgency_pages_lose_and_repeat_nothing(database_url: str) -> None:
    async with running_cloud(api_config(database_url)) as cloud, aiohttp.ClientSession() as http:
        await add_people(cloud)
        severities = ["critical", "high", "medium", "low", "info"]
        stored = [
            await add_alert(cloud, location=HOME_A, ts=1_795_000_000_000 + n // 3,
                            severity=severities[n % 5], type=f"t{n % 4}")
            for n in range(23)
        ]
        admin = await Client.login(http, cloud, "admin")
        for a in stored[::4]:
            assert (await admin.post(f"/api/alerts/{a['id']}/ack")).status == 200
        for a in stored[1::6]:
            assert (await admin.post(f"/api/alerts/{a['id']}/resolve")).status == 200
        seen: list[dict] = []
        query = "order=urgency&limit=4"
        while True:
            page = (await admin.get(f"/api/alerts?{query}")).body
            seen += page["alerts"]
            if page["next_cursor"] is None:
                break
            query = f"order=urgency&limit=4&cursor={page['next_cursor']}"
        assert sorted(a["id"] for a in seen) == sorted(a["id"] for a in stored)
        keys = [(STATE_RANK[a["state"]], SEVERITY_RANK[a["severity"]], -a["ts"]) for a in seen]
        assert keys == sorted(keys)


async def test_a_cursor_of_another_order_is_refused_by_name(database_url: str) -> None:
    async with running_cloud(api_config(database_url)) as cloud, aiohttp.ClientSession() as http:
        await add_people(cloud)
        for n in range(3):
            await add_alert(cloud, ts=1_000 + n)
        admin = await Client.login(http, cloud, "admin")
        by_time = (await admin.get("/api/alerts?limit=1")).body["next_cursor"]
        answer = await admin.get(f"/api/alerts?order=urgency&limit=1&cursor={by_time}")
        assert answer.status == 400
        assert "cursor" in answer.body["error"]
        answer = await admin.get("/api/alerts?order=loudest")
        assert answer.status == 400
        assert "order" in answer.body["error"]
