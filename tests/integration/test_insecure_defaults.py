"""Issue 14, "insecure defaults": the cloud's `/metrics` is for loopback or a token holder; the
session cookie is Secure unless the dashboard is plain http on loopback; the login throttle
lets no parallel guesses through, delays a user's logins more with each failure instead of
locking them, and counts addresses behind a configured reverse proxy per real client."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cloud.access import audit
from shouwang.clock import ManualClock
from tests.conftest import api_config, running_cloud
from tests.integration.people import PASSWORD, add_people

pytestmark = pytest.mark.integration
PROXY = {"trusted_proxies": ["127.0.0.1/32"]}  # the tests' client is the "reverse proxy"


async def _login(
    http: aiohttp.ClientSession, base: str, user: str, password: str = PASSWORD, **headers: str
) -> tuple[int, Any, aiohttp.ClientResponse]:
    async with http.post(f"{base}/api/login", json={"username": user, "password": password},
                         headers=headers) as res:
        return res.status, await res.json(), res


async def test_metrics_answer_only_loopback_or_the_token(database_url: str, tmp_path: Path) -> None:
    async with running_cloud(api_config(database_url)) as cloud, \
            aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{cloud.http_port}/metrics"
        async with http.get(url) as res:
            assert res.status == 200  # a Prometheus on the same host
        for forwarded in ({"X-Forwarded-For": "203.0.113.7"}, {"Forwarded": "for=203.0.113.7"}):
            async with http.get(url, headers=forwarded) as res:  # the Internet, via the proxy
                assert res.status == 403, forwarded
                assert "metrics_token_file" in (await res.json())["error"]
    token_file = tmp_path / "metrics.token"
    token_file.write_text("a-long-random-metrics-token\n")
    config = api_config(database_url, metrics_token_file=str(token_file))
    async with running_cloud(config) as cloud, aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{cloud.http_port}/metrics"
        for headers, status in (({}, 401), ({"Authorization": "Bearer wrong"}, 401),
                                ({"Authorization": "Bearer a-long-random-metrics-token"}, 200)):
            async with http.get(url, headers=headers) as res:
                assert res.status == status, headers


async def test_the_session_cookie_is_secure_unless_plain_http_on_loopback(
    database_url: str,
) -> None:
    async with running_cloud(api_config(database_url)) as cloud, aiohttp.ClientSession() as http:
        await add_people(cloud)
        base = f"http://127.0.0.1:{cloud.http_port}"
        cases = [({}, False), ({"Host": f"localhost:{cloud.http_port}"}, False),
                 ({"Host": "shouwang.example.cn"}, True), ({"Host": "192.168.1.20:8080"}, True)]
        for headers, secure in cases:
            status, _, res = await _login(http, base, "police-a", **headers)
            assert status == 200
            assert bool(res.cookies["shouwang_session"]["secure"]) is secure, headers
    config = api_config(database_url, access={"cookie_secure": False})
    async with running_cloud(config) as cloud, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{cloud.http_port}"
        _, _, res = await _login(http, base, "police-a", Host="shouwang.example.cn")
        assert not res.cookies["shouwang_session"]["secure"]  # said so explicitly


async def test_parallel_guesses_are_checked_one_at_a_time(database_url: str) -> None:
    clock = ManualClock(now_ms=1_795_000_000_000)
    config = api_config(database_url, access={"max_failures_per_user": 3})
    async with running_cloud(config, clock=clock) as cloud, aiohttp.ClientSession() as http:
        await add_people(cloud)
        base = f"http://127.0.0.1:{cloud.http_port}"
        replies = await asyncio.gather(*(
            _login(http, base, "police-a", f"guess-{n}") for n in range(30)))
        statuses = sorted(status for status, _, _ in replies)
        # The clock stands still: after 3 failures every further guess waits, however many
        # arrive at once. Without the per-user claim all 30 were checked.
        assert statuses == [401] * 3 + [429] * 27
        assert cloud.store is not None
        failed = await audit.entries(cloud.store.engine, action="login_failed")
        assert len(failed) == 3


async def test_parallel_guesses_take_turns_across_api_workers(database_url: str) -> None:
    clock = ManualClock(now_ms=1_795_000_000_000)
    config = api_config(database_url, access={"max_failures_per_user": 3})
    async with (
        running_cloud(config, clock=clock) as one,
        running_cloud(config.model_copy(update={"worker_id": "api-2"}), clock=clock) as two,
        aiohttp.ClientSession() as http,
    ):
        await add_people(one)
        bases = [f"http://127.0.0.1:{c.http_port}" for c in (one, two)]
        replies = await asyncio.gather(*(
            _login(http, bases[n % 2], "police-b", f"guess-{n}") for n in range(20)))
        assert sorted(status for status, _, _ in replies) == [401] * 3 + [429] * 17


async def test_a_guessing_attacker_delays_the_duty_officer_but_cannot_lock_them_out(
    database_url: str,
) -> None:
    clock = ManualClock(now_ms=1_795_000_000_000)
    config = api_config(database_url, access={
        **PROXY, "max_failures_per_user": 3, "login_delay_base_s": 1, "login_delay_max_s": 8,
        "max_failures_per_address": 1000})
    async with running_cloud(config, clock=clock) as cloud, aiohttp.ClientSession() as http:
        await add_people(cloud)
        base = f"http://127.0.0.1:{cloud.http_port}"
        desk = {"X-Forwarded-For": "10.1.1.5"}  # the station's desk, where police-a works
        assert (await _login(http, base, "police-a", **desk))[0] == 200
        attacker = {"X-Forwarded-For": "198.51.100.9"}
        waits = []
        for n in range(8):  # guesses as fast as the throttle lets them through
            status, body, res = await _login(http, base, "police-a", f"guess-{n}", **attacker)
            while status == 429:
                waits.append(int(res.headers["Retry-After"]))
                clock.advance(waits[-1] * 1000)
                status, body, res = await _login(http, base, "police-a", f"guess-{n}",
                                                 **attacker)
            assert status == 401, body
        assert waits == [1, 2, 4, 8, 8]  # doubling, up to login_delay_max_s
        # The attacker must wait again; the officer at the desk they logged in from does not.
        assert (await _login(http, base, "police-a", "guess-x", **attacker))[0] == 429
        assert (await _login(http, base, "police-a", **desk))[0] == 200
        # From a new address the officer waits at most login_delay_max_s, never a window.
        phone = {"X-Forwarded-For": "100.64.7.7"}
        status, _, res = await _login(http, base, "police-a", **phone)
        assert status == 429
        assert int(res.headers["Retry-After"]) <= 8
        clock.advance(int(res.headers["Retry-After"]) * 1000)
        assert (await _login(http, base, "police-a", **phone))[0] == 200


async def test_address_limits_count_each_client_behind_a_trusted_proxy(database_url: str) -> None:
    clock = ManualClock(now_ms=1_795_000_000_000)
    config = api_config(database_url, access={**PROXY, "max_failures_per_address": 3})
    async with running_cloud(config, clock=clock) as cloud, aiohttp.ClientSession() as http:
        await add_people(cloud)
        base = f"http://127.0.0.1:{cloud.http_port}"
        sprayer = {"X-Forwarded-For": "198.51.100.9"}
        statuses = [(await _login(http, base, user, "wrong-guess", **sprayer))[0]
                    for user in ("worker-a", "worker-b", "family-a", "family-b")]
        assert statuses == [401, 401, 401, 429]
        # Another client of the same proxy is not punished for it...
        other = {"X-Forwarded-For": "10.1.1.5"}
        assert (await _login(http, base, "police-b", **other))[0] == 200
        # ...and a spoofed X-Forwarded-For in front of the proxy does not hide the sprayer:
        # the proxy appends the address it saw, and that one counts.
        spoofed = {"X-Forwarded-For": "10.1.1.5, 198.51.100.9"}
        assert (await _login(http, base, "police-b", **spoofed))[0] == 429
        assert cloud.store is not None
        throttled = await audit.entries(cloud.store.engine, action="login_throttled")
        assert {e["remote"] for e in throttled} == {"198.51.100.9"}
