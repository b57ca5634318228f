"""Defects of issue 14: jurisdiction matched exactly by whole segments and case on both
databases (1); a body that is not UTF-8 is a 400 (5).

SQLite's LIKE ignores ASCII case: a police user scoped to `Demo/StreetX` used to list, count
and receive over the WebSocket the alerts of `demo/streetx/...` (while their detail answered
404, so list and detail disagreed).
"""

from __future__ import annotations

import aiohttp
import pytest

from tests.conftest import api_config, running_cloud
from tests.integration.people import PASSWORD, Client, add_alert

pytestmark = pytest.mark.integration
MINE = "Demo/StreetX/c1/g1/b1/u1/f1/101"
THEIRS = "demo/streetx/c1/g1/b1/u1/f1/101"  # another station's street, spelled in lower case


async def test_a_prefix_differing_only_in_case_is_another_jurisdiction(database_url: str) -> None:
    async with running_cloud(api_config(database_url)) as cloud, aiohttp.ClientSession() as http:
        assert cloud.access is not None
        await cloud.access.add_user("police-x", PASSWORD, "police", locations=["Demo/StreetX"])
        mine = await add_alert(cloud, location=MINE, resident="r-1")
        theirs = await add_alert(cloud, location=THEIRS, resident="r-2")
        police = await Client.login(http, cloud, "police-x")
        assert await police.ids() == [mine["id"]]
        assert await police.ids("location=Demo/StreetX") == [mine["id"]]
        assert (await police.get(f"/api/alerts/{theirs['id']}")).status == 404
        places = (await police.get("/api/locations?prefix=Demo")).body
        assert sum(p["alerts"] for p in places["children"]) == 1
        lower = (await police.get("/api/locations?prefix=demo")).body
        assert sum(p["alerts"] for p in lower["children"]) == 0
        async with http.ws_connect(f"{police.base}/api/ws", headers=police.headers) as ws:
            snapshot = (await ws.receive_json(timeout=5))["alerts"]
        assert [a["id"] for a in snapshot] == [mine["id"]]


async def test_a_body_that_is_not_utf8_is_a_400_that_says_so(database_url: str) -> None:
    """Issue 14, defect 5: invalid UTF-8 to ack, dispatch, resolve, false_alarm was a 500."""
    async with running_cloud(api_config(database_url)) as cloud, aiohttp.ClientSession() as http:
        assert cloud.access is not None
        await cloud.access.add_user("police-x", PASSWORD, "police", locations=["Demo/StreetX"])
        alert = await add_alert(cloud, location=MINE, resident="r-1")
        police = await Client.login(http, cloud, "police-x")
        for action in ("ack", "dispatch", "resolve", "false_alarm"):
            async with http.post(
                f"{police.base}/api/alerts/{alert['id']}/{action}", data=b'{"note": "\xff\xfe"}',
                headers={**police.headers, "Content-Type": "application/json"},
            ) as res:
                assert res.status == 400, action
                assert "UTF-8" in (await res.json())["error"]
