"""Jurisdiction and roles: each user lists, reads, streams and acts on their own scope only."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from cloud.access import audit
from cloud.access.users import Access
from shouwang.clock import ManualClock
from tests.conftest import api_config, running_cloud
from tests.integration.people import (
    HOME_A,
    HOME_B,
    PASSWORD,
    Client,
    add_alert,
    add_people,
)

pytestmark = pytest.mark.integration
WELFARE_DETAIL = {
    "reason": "no activity for 26 h",
    "signals": {"heart_rate": [72, 70, 41], "water_l": [0.0]},
}
# Who sees which of: a (station A, resident r-a1), a2 (station A, r-a2), b (station B, r-b1).
SEES = {
    "police-a": {"a", "a2"},
    "police-b": {"b"},
    "worker-a": {"a", "a2"},
    "worker-b": {"b"},
    "family-a": {"a"},
    "family-b": {"b"},
    "admin": {"a", "a2", "b"},
}


async def _world(cloud: Any) -> dict[str, dict[str, Any]]:
    await add_people(cloud)
    return {
        "a": await add_alert(cloud, location=HOME_A, resident="r-a1", type="welfare",
                             severity="high", detail=WELFARE_DETAIL),
        "a2": await add_alert(cloud, location=HOME_A.replace("/101", "/102"), resident="r-a2"),
        "b": await add_alert(cloud, location=HOME_B, resident="r-b1"),
    }


async def test_each_role_lists_reads_and_streams_exactly_its_scope(database_url: str) -> None:
    async with running_cloud(api_config(database_url)) as cloud, aiohttp.ClientSession() as http:
        world = await _world(cloud)
        name_of = {a["id"]: n for n, a in world.items()}
        for user, visible in SEES.items():
            client = await Client.login(http, cloud, user)
            assert {name_of[i] for i in await client.ids()} == visible, user
            for name, alert in world.items():
                reply = await client.get(f"/api/alerts/{alert['id']}")
                assert reply.status == (200 if name in visible else 404), (user, name)
            async with http.ws_connect(f"{client.base}/api/ws", headers=client.headers) as ws:
                snapshot = await ws.receive_json(timeout=5)
                assert {name_of[a["id"]] for a in snapshot["alerts"]} == visible, user
                # Live: a new alert in each jurisdiction; only the visible one arrives.
                new_a = await add_alert(cloud, location=HOME_A, resident="r-a1")
                new_b = await add_alert(cloud, location=HOME_B, resident="r-b1")
                for new in (new_a, new_b):
                    cloud.hub.broadcast({"type": "alert", "alert": new})
                name_of.update({new_a["id"]: "a", new_b["id"]: "b"})  # same scopes as a, b
                expected = [a["id"] for n, a in (("a", new_a), ("b", new_b)) if n in visible]
                got = [(await ws.receive_json(timeout=5))["alert"]["id"] for _ in expected]
                assert got == expected, user
                with pytest.raises(asyncio.TimeoutError):
                    await ws.receive_json(timeout=0.3)


async def test_another_stations_alert_is_indistinguishable_from_a_missing_one(
    database_url: str,
) -> None:
    async with running_cloud(api_config(database_url)) as cloud, aiohttp.ClientSession() as http:
        world = await _world(cloud)
        police_a = await Client.login(http, cloud, "police-a")
        theirs, missing = world["b"]["id"], "01NOSUCHALERT00000000000000"
        for path in ("", "/ack", "/dispatch", "/resolve", "/false_alarm"):
            method = police_a.get if path == "" else police_a.post
            out_of_scope, absent = await method(f"/api/alerts/{theirs}{path}"), await method(
                f"/api/alerts/{missing}{path}"
            )
            assert (out_of_scope.status, out_of_scope.raw) == (absent.status, absent.raw), path
            assert out_of_scope.status == 404
            assert out_of_scope.body == {"error": "no such alert"}
        # Nothing changed on station B's alert, and the probing is in the audit log.
        admin = await Client.login(http, cloud, "admin")
        assert (await admin.get(f"/api/alerts/{theirs}")).body["state"] == "open"
        denied = await audit.entries(cloud.store.engine, action="alert_denied", target=theirs)  # type: ignore[union-attr]
        assert [(e["actor"], e["detail"]["action"]) for e in reversed(denied)] == [
            ("user:police-a", a) for a in ("read", "ack", "dispatch", "resolve", "false_alarm")
        ]
        # A location filter cannot widen a scope.
        assert await police_a.ids("location=d1/s2") == []


async def test_each_role_gets_the_least_data_it_needs(database_url: str) -> None:
    async with running_cloud(api_config(database_url)) as cloud, aiohttp.ClientSession() as http:
        world = await _world(cloud)
        welfare = world["a"]["id"]
        shared = {"reason": "no activity for 26 h"}
        expected = {"police-a": shared, "worker-a": shared, "family-a": WELFARE_DETAIL,
                    "admin": WELFARE_DETAIL}
        for user, detail in expected.items():
            client = await Client.login(http, cloud, user)
            assert (await client.get(f"/api/alerts/{welfare}")).body["detail"] == detail, user
            listed = (await client.get("/api/alerts?type=welfare")).body["alerts"]
            assert [a["detail"] for a in listed] == [detail], user
            async with http.ws_connect(f"{client.base}/api/ws", headers=client.headers) as ws:
                snapshot = (await ws.receive_json(timeout=5))["alerts"]
                assert [a["detail"] for a in snapshot if a["id"] == welfare] == [detail], user
                world["a"]["version"] += 1  # a change, so the hub sends it
                cloud.hub.broadcast({"type": "alert_updated", "alert": world["a"]})
                assert (await ws.receive_json(timeout=5))["alert"]["detail"] == detail, user


async def test_login_logout_cookie_and_bearer(database_url: str) -> None:
    jar = aiohttp.CookieJar(unsafe=True)  # keep cookies from 127.0.0.1, like a browser
    async with (
        running_cloud(api_config(database_url)) as cloud,
        aiohttp.ClientSession(cookie_jar=jar) as http,
    ):
        await add_people(cloud)
        base = f"http://127.0.0.1:{cloud.http_port}"
        async with http.post(f"{base}/api/login",
                             json={"username": "family-a", "password": PASSWORD}) as res:
            assert res.status == 200
            cookie = res.cookies["shouwang_session"]
            assert cookie["httponly"] is True
            assert cookie["samesite"] == "Strict"
            token = (await res.json())["token"]
        assert cookie.value == token
        async with http.get(f"{base}/api/me") as res:  # the session's cookie jar
            assert (await res.json())["residents"] == ["r-a1"]
        async with http.post(f"{base}/api/logout", json={}) as res:
            assert res.status == 200
        async with http.get(f"{base}/api/me", headers={"Authorization": f"Bearer {token}"}) as res:
            assert res.status == 401  # the token died with the session, not only the cookie
        for body in ({"username": "family-a", "password": "wrong password"},
                     {"username": "nobody", "password": PASSWORD}):
            async with http.post(f"{base}/api/login", json=body) as res:
                assert res.status == 401
                assert await res.json() == {"error": "wrong user name or password"}
        async with http.post(f"{base}/api/login", json={"username": "x"}) as res:
            assert res.status == 400


async def test_sessions_expire_and_disabling_a_user_ends_them(database_url: str) -> None:
    clock = ManualClock(now_ms=1_795_000_000_000)
    config = api_config(database_url, access={"session_ttl_s": 3600})
    async with running_cloud(config, clock=clock) as cloud, aiohttp.ClientSession() as http:
        await add_people(cloud)
        police = await Client.login(http, cloud, "police-a")
        clock.advance(3_599_000)
        assert (await police.get("/api/me")).status == 200
        clock.advance(1_000)
        assert (await police.get("/api/me")).status == 401
        worker = await Client.login(http, cloud, "worker-a")
        assert cloud.access is not None
        await cloud.access.set_disabled("worker-a", True, actor="test")
        assert (await worker.get("/api/me")).status == 401
        async with http.post(f"http://127.0.0.1:{cloud.http_port}/api/login",
                             json={"username": "worker-a", "password": PASSWORD}) as res:
            assert res.status == 401


async def test_password_guessing_is_throttled_per_user_and_counted(database_url: str) -> None:
    clock = ManualClock(now_ms=1_795_000_000_000)
    config = api_config(database_url, access={"max_failures_per_user": 3, "login_window_s": 60})
    async with running_cloud(config, clock=clock) as cloud, aiohttp.ClientSession() as http:
        await add_people(cloud)
        url = f"http://127.0.0.1:{cloud.http_port}/api/login"
        statuses = []
        for password in ["guess-1", "guess-2", "guess-3", PASSWORD]:
            async with http.post(url, json={"username": "police-a", "password": password}) as res:
                statuses.append(res.status)
                retry = res.headers.get("Retry-After")
        # Even the right password is refused while throttled: guessing learns nothing.
        assert statuses == [401, 401, 401, 429]
        assert retry == "1"  # the first delay (login_delay_base_s); it doubles, never a lock
        async with http.post(url, json={"username": "police-b", "password": PASSWORD}) as res:
            assert res.status == 200  # other users are not locked out by it
        clock.advance(1_000)
        async with http.post(url, json={"username": "police-a", "password": PASSWORD}) as res:
            assert res.status == 200
        async with http.get(f"http://127.0.0.1:{cloud.http_port}/metrics") as res:
            text = await res.text()
        for outcome, n in (("failed", 3), ("throttled", 1), ("succeeded", 2)):
            assert f'shouwang_logins_total{{outcome="{outcome}"}} {n}.0' in text
        assert cloud.store is not None
        actions = [e["action"] for e in reversed(await audit.entries(cloud.store.engine))
                   if e["action"].startswith("login")]
        assert actions == ["login_failed"] * 3 + ["login_throttled"] + ["login_succeeded"] * 2


async def test_accounts_refuse_bad_roles_and_scopes_naming_the_field(database_url: str) -> None:
    async with running_cloud(api_config(database_url)) as cloud:
        access: Access | None = cloud.access
        assert access is not None
        from cloud.access.users import UserError

        cases = [
            (("Bad Name", PASSWORD, "admin"), {}, "username:"),
            (("u1", PASSWORD, "mayor"), {}, "role: 'mayor' is not one of"),
            (("u1", "short", "admin"), {}, "password: at least 10"),
            (("u1", PASSWORD, "police"), {}, "scope: a police user needs location prefixes"),
            (("u1", PASSWORD, "worker"), {"locations": ["d1/s1/c-a"]}, "is a grid"),
            (("u1", PASSWORD, "family"), {"locations": ["d1"]}, "scope: a family user needs"),
            (("u1", PASSWORD, "admin"), {"residents": ["r-1"]}, "scope: an admin"),
            (("u1", PASSWORD, "police"), {"locations": ["d1//x"]}, "empty segment"),
        ]
        for args, kwargs, message in cases:
            with pytest.raises(UserError, match=message):
                await access.add_user(*args, **kwargs)
        await access.add_user("u1", PASSWORD, "admin")
        with pytest.raises(UserError, match="username: 'u1' already exists"):
            await access.add_user("u1", PASSWORD, "admin")


async def test_an_open_websocket_closes_when_its_session_ends(database_url: str) -> None:
    config = api_config(database_url, access={"websocket_recheck_s": 0.05})
    async with running_cloud(config) as cloud, aiohttp.ClientSession() as http:
        await add_people(cloud)
        police, worker = (await Client.login(http, cloud, "police-a"),
                          await Client.login(http, cloud, "worker-a"))
        async with (
            http.ws_connect(f"{police.base}/api/ws", headers=police.headers) as ws_police,
            http.ws_connect(f"{worker.base}/api/ws", headers=worker.headers) as ws_worker,
        ):
            await ws_police.receive_json(timeout=5)
            await ws_worker.receive_json(timeout=5)
            assert (await police.post("/api/logout")).status == 200
            closed = await ws_police.receive(timeout=5)
            assert closed.type == aiohttp.WSMsgType.CLOSE
            assert ws_police.close_code == 4401
            # The other user's stream goes on and still gets its alerts.
            alert = await add_alert(cloud, location=HOME_A)
            cloud.hub.broadcast({"type": "alert", "alert": alert})
            assert (await ws_worker.receive_json(timeout=5))["alert"]["id"] == alert["id"]
