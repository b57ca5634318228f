"""The alert API: pages, filters, bad queries named and counted, and the OpenAPI document."""

from __future__ import annotations

import aiohttp
import pytest

from cloud.openapi import DOCUMENT
from tests.conftest import api_config, running_cloud
from tests.integration.people import HOME_A, HOME_B, Client, add_alert, add_people

pytestmark = pytest.mark.integration


async def test_pages_follow_the_cursor_without_losing_alerts_of_the_same_ms(database_url: str) -> None:
    async with running_cloud(api_config(database_url)) as cloud, aiohttp.ClientSession() as http:
        await add_people(cloud)
        stored = [await add_alert(cloud, ts=1_795_000_000_000 + n // 2) for n in range(7)]
        admin = await Client.login(http, cloud, "admin")
        seen: list[str] = []
        query = "limit=2"
        while True:
            page = (await admin.get(f"/api/alerts?{query}")).body
            seen += [a["id"] for a in page["alerts"]]
            if page["next_cursor"] is None:
                break
            query = f"limit=2&cursor={page['next_cursor']}"
        newest_first = sorted(stored, key=lambda a: (a["ts"], a["id"]), reverse=True)
        assert seen == [a["id"] for a in newest_first]


async def test_filters_combine_and_each_narrows(database_url: str) -> None:
    async with running_cloud(api_config(database_url)) as cloud, aiohttp.ClientSession() as http:
        await add_people(cloud)
        sos_a = await add_alert(cloud, ts=1_000, location=HOME_A)
        fall_b = await add_alert(cloud, ts=2_000, location=HOME_B, type="fall", severity="high")
        gas_a = await add_alert(cloud, ts=3_000, location=HOME_A, type="gas", severity="high")
        admin = await Client.login(http, cloud, "admin")
        assert (await admin.post(f"/api/alerts/{gas_a['id']}/ack")).status == 200
        cases = {
            "": [gas_a, fall_b, sos_a],
            "state=open": [fall_b, sos_a],
            "state=open,acknowledged": [gas_a, fall_b, sos_a],
            "type=sos,fall": [fall_b, sos_a],
            "severity=high": [gas_a, fall_b],
            "location=d1/s1": [gas_a, sos_a],
            "location=d1/s1/c-a/g1/b1/u1/f1/101": [gas_a, sos_a],
            "location=d1/s1/c": [],  # whole segments only
            "from=2000": [gas_a, fall_b],
            "to=2000": [sos_a],
            "from=1000&to=3000": [fall_b, sos_a],
            "severity=high&location=d1/s2&state=open": [fall_b],
        }
        for query, expected in cases.items():
            assert await admin.ids(query) == [a["id"] for a in expected], query


@pytest.mark.parametrize(
    ("query", "param", "message"),
    [
        ("state=melted", "state", "'melted' is not one of open"),
        ("severity=urgent", "severity", "'urgent' is not one of critical"),
        ("type=SOS!", "type", "alert types are"),
        ("location=d1//c", "location", "empty segment"),
        ("from=yesterday", "from", "must be a non-negative integer"),
        ("to=-5", "to", "must be a non-negative integer"),
        ("from=5&to=5", "to", "must be greater than from"),
        ("limit=0", "limit", "must be between 1 and 500"),
        ("limit=501", "limit", "must be between 1 and 500"),
        ("limit=ten", "limit", "must be a non-negative integer"),
        ("cursor=abc", "cursor", "not a cursor"),
        ("before=5", "before", "unknown parameter"),
        ("state=open&state=resolved", "state", "given more than once"),
    ],
)
async def test_a_bad_query_is_refused_naming_the_parameter_and_counted(
    database_url: str, query: str, param: str, message: str
) -> None:
    async with running_cloud(api_config(database_url)) as cloud, aiohttp.ClientSession() as http:
        await add_people(cloud)
        admin = await Client.login(http, cloud, "admin")
        reply = await admin.get(f"/api/alerts?{query}")
        assert reply.status == 400
        assert reply.body["error"].startswith(f"{param}: ")
        assert message in reply.body["error"]
        async with http.get(f"{admin.base}/metrics") as res:
            text = await res.text()
        assert f'shouwang_api_bad_requests_total{{param="{param}"}} 1.0' in text


async def test_every_route_is_documented_and_every_documented_route_exists(database_url: str) -> None:
    async with running_cloud(api_config(database_url)) as cloud, aiohttp.ClientSession() as http:
        assert cloud._runner is not None
        registered = {
            (info.get("path") or info.get("formatter"), route.method.lower())
            for route in cloud._runner.app.router.routes()
            if route.method != "HEAD" and (info := route.resource.get_info() if route.resource else {})
            and "prefix" not in info  # the static files under /static
        }
        documented = {(path, method) for path, ops in DOCUMENT["paths"].items() for method in ops}
        assert registered == documented
        assert len(documented) == 43  # 34 + four watchlist routes + confirm, reject, false-matches, confirm_flat, note
        async with http.get(f"http://127.0.0.1:{cloud.http_port}/api/openapi.json") as res:
            assert res.status == 200
            assert (await res.json())["paths"].keys() == DOCUMENT["paths"].keys()


async def test_without_a_session_every_api_route_but_login_answers_401(database_url: str) -> None:
    async with running_cloud(api_config(database_url)) as cloud, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{cloud.http_port}"
        alert = await add_alert(cloud)
        for method, path in [
            ("GET", "/api/alerts"), ("GET", f"/api/alerts/{alert['id']}"),
            ("POST", f"/api/alerts/{alert['id']}/ack"), ("GET", "/api/ws"), ("GET", "/api/me"),
            ("POST", "/api/logout"),
        ]:
            for headers in ({}, {"Authorization": "Bearer not-a-token"},
                            {"Cookie": "shouwang_session=forged"}):
                async with http.request(method, base + path, headers=headers) as res:
                    assert res.status == 401, (method, path, headers)
                    assert await res.json() == {"error": "login required"}
        async with http.get(f"{base}/") as res:
            assert res.status == 200
            assert "守望" in await res.text()
