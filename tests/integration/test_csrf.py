"""Issue 14, defect 4: cross-site requests cannot act with a user's cookie.

SameSite=Strict alone did not hold: a page on the same host and another port is the same
*site*, so the browser sent the cookie; state-changing POSTs took `text/plain` and missing
bodies; login took cross-origin posts; the WebSocket took a foreign `Origin`. Now every
state-changing request needs a JSON body and, unless it carries only a bearer token, an
`Origin` (and `Sec-Fetch-Site`) of the server itself or of `access.allowed_origins`.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from tests.conftest import api_config, running_cloud
from tests.integration.people import PASSWORD, Client, add_alert, add_people

pytestmark = pytest.mark.integration
FOREIGN = "http://127.0.0.1:1"  # another port of the same host: the same site, another origin


async def _cookie_login(http: aiohttp.ClientSession, base: str, user: str) -> None:
    async with http.post(f"{base}/api/login", json={"username": user, "password": PASSWORD},
                         headers={"Origin": base}) as res:
        assert res.status == 200, await res.text()


async def _post(http: aiohttp.ClientSession, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with http.post(url, **kwargs) as res:
        body = await res.json() if res.content_type == "application/json" else await res.text()
        return res.status, body


async def test_a_foreign_origin_cannot_act_with_the_users_cookie(database_url: str) -> None:
    jar = aiohttp.CookieJar(unsafe=True)  # a browser's jar: the cookie goes to 127.0.0.1
    async with (
        running_cloud(api_config(database_url)) as cloud,
        aiohttp.ClientSession(cookie_jar=jar) as http,
    ):
        await add_people(cloud)
        alert = await add_alert(cloud)
        base = f"http://127.0.0.1:{cloud.http_port}"
        await _cookie_login(http, base, "police-a")
        ack = f"{base}/api/alerts/{alert['id']}/ack"
        forged = [  # what a form or a no-cors fetch on another page can send
            {"data": '{"note": "x"}', "headers": {"Origin": FOREIGN, "Content-Type": "text/plain"}},
            {"headers": {"Origin": FOREIGN}},
            {"json": {}, "headers": {"Origin": FOREIGN}},
            {"json": {}, "headers": {"Origin": "null"}},
            {"json": {}, "headers": {"Sec-Fetch-Site": "same-site"}},
            {"json": {}, "headers": {"Sec-Fetch-Site": "cross-site", "Origin": FOREIGN}},
        ]
        for request in forged:
            status, body = await _post(http, ack, **request)
            assert status == 403, (request, body)
            assert "cross-origin request refused" in body["error"]
        # Same origin, but not JSON: refused too, naming what is wrong.
        status, body = await _post(http, ack, data="note=x", headers={
            "Origin": base, "Content-Type": "application/x-www-form-urlencoded"})
        assert (status, body) == (415, {"error": "Content-Type must be application/json"})
        status, body = await _post(http, ack, headers={"Origin": base})
        assert status == 415, body
        status, body = await _post(http, ack, headers={
            "Origin": base, "Content-Type": "application/json"})
        assert status == 400
        assert body["error"].startswith("a JSON object body is required")
        assert (await cloud.store.get_alert(alert["id"]))["state"] == "open"  # type: ignore[union-attr]
        # The dashboard itself: same origin, JSON.
        status, body = await _post(http, ack, json={}, headers={
            "Origin": base, "Sec-Fetch-Site": "same-origin"})
        assert (status, body["state"]) == (200, "acknowledged")
        async with http.get(f"{base}/metrics") as res:
            text = await res.text()
        for reason, n in (("origin", 6), ("content_type", 2), ("body", 1)):
            assert f'shouwang_http_refused_total{{reason="{reason}"}} {n}.0' in text, reason


async def test_login_from_a_foreign_origin_is_refused(database_url: str) -> None:
    async with running_cloud(api_config(database_url)) as cloud, aiohttp.ClientSession() as http:
        await add_people(cloud)
        base = f"http://127.0.0.1:{cloud.http_port}"
        good = {"username": "police-a", "password": PASSWORD}
        for headers in ({"Origin": FOREIGN}, {"Sec-Fetch-Site": "cross-site"}):
            status, body = await _post(http, f"{base}/api/login", json=good, headers=headers)
            assert status == 403, body
        status, _ = await _post(http, f"{base}/api/login", data=json.dumps(good),
                                headers={"Content-Type": "text/plain"})
        assert status == 415
        status, _ = await _post(http, f"{base}/api/login", json=good, headers={"Origin": base})
        assert status == 200


async def test_the_websocket_refuses_a_foreign_origin(database_url: str) -> None:
    jar = aiohttp.CookieJar(unsafe=True)
    async with (
        running_cloud(api_config(database_url)) as cloud,
        aiohttp.ClientSession(cookie_jar=jar) as http,
    ):
        await add_people(cloud)
        base = f"http://127.0.0.1:{cloud.http_port}"
        await _cookie_login(http, base, "police-a")
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(f"{base}/api/ws", origin=FOREIGN)
        assert refused.value.status == 403
        async with http.ws_connect(f"{base}/api/ws", origin=base) as ws:
            assert (await ws.receive_json(timeout=5))["type"] == "snapshot"


async def test_a_bearer_token_without_a_cookie_is_not_checked_for_origin(
    database_url: str,
) -> None:
    """Gateways and scripts send a token a foreign page cannot know; a browser never adds it
    to a cross-site request by itself. They still send JSON."""
    async with running_cloud(api_config(database_url)) as cloud, aiohttp.ClientSession() as http:
        await add_people(cloud)
        alert = await add_alert(cloud)
        police = await Client.login(http, cloud, "police-a")
        status, _ = await _post(http, f"{police.base}/api/alerts/{alert['id']}/ack", json={},
                                headers={**police.headers, "Origin": FOREIGN})
        assert status == 200
        async with http.ws_connect(f"{police.base}/api/ws", headers=police.headers,
                                   origin=FOREIGN) as ws:
            assert (await ws.receive_json(timeout=5))["type"] == "snapshot"
        status, _ = await _post(http, f"{police.base}/api/alerts/{alert['id']}/resolve",
                                data="{}", headers={**police.headers, "Content-Type": "text/plain"})
        assert status == 415


async def test_a_dashboard_origin_can_be_allowed_by_configuration(database_url: str) -> None:
    """Behind a reverse proxy that rewrites `Host`, the public origin is configured."""
    public = "https://dashboard.example.cn"
    config = api_config(database_url, access={"allowed_origins": [public]})
    jar = aiohttp.CookieJar(unsafe=True)
    async with running_cloud(config) as cloud, aiohttp.ClientSession(cookie_jar=jar) as http:
        await add_people(cloud)
        alert = await add_alert(cloud)
        base = f"http://127.0.0.1:{cloud.http_port}"
        status, _ = await _post(http, f"{base}/api/login", headers={
            "Origin": public, "Sec-Fetch-Site": "same-origin"},
            json={"username": "police-a", "password": PASSWORD})
        assert status == 200
        status, _ = await _post(http, f"{base}/api/alerts/{alert['id']}/ack", json={},
                                headers={"Origin": public})
        assert status == 200
        status, _ = await _post(http, f"{base}/api/alerts/{alert['id']}/resolve", json={},
                                headers={"Origin": "https://evil.example.cn"})
        assert status == 403
