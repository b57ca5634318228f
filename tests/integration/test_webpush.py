"""Web Push end to end: subscribe over the API, deliver to a local push service that checks
VAPID and decrypts the payload, and the service's 410 and 500 answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from cloud.notify import NotifyConfig, alert_attempts, build_notify
from cloud.notify.config import WebPushConfig
from cloud.notify.dispatcher import Dispatcher
from cloud.notify.routes import family_routes, push_routes
from cloud.notify.tables import subscriptions_of
from cloud.store import Store
from shouwang.clock import ManualClock
from shouwang.services import free_port
from simulators.push_service import BrowserSubscription, PushService, running_push_service
from tests.conftest import split_retry

pytestmark = pytest.mark.integration


def alert(alert_id: str, resident: str, severity: str = "critical", **kw: Any) -> dict[str, Any]:
    """An alert as the store returns it, with the fields a family must not receive."""
    return {
        "id": alert_id, "site": "site-1", "type": "sos", "severity": severity,
        "device": "btn-0001", "subject": f"resident:{resident}", "dedup_key": f"{resident}:sos",
        "resident": resident, "location": "d/s/c/grid-1/bldg-1/unit-1/floor-1/101",
        "life_safety": severity == "critical", "ts": 1_767_225_600_000, "state": "open",
        "detail": {"heart_rate": 41, "note": "private"}, **kw,
    }


@dataclass
class Cloud:
    dispatcher: Dispatcher
    store: Store
    clock: ManualClock
    push: PushService
    http: aiohttp.ClientSession
    base: str

    async def subscribe(self, user: str, sub: BrowserSubscription | dict[str, Any]) -> Any:
        body = sub.to_json() if isinstance(sub, BrowserSubscription) else sub
        async with self.http.post(
            f"{self.base}/api/push/subscriptions", json=body, headers={"X-User": user}
        ) as res:
            return res.status, await res.json()


async def _user(request: web.Request) -> str | None:
    return request.headers.get("X-User")  # stands in for login (another engineer's work)


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[Cloud]:
    clock = ManualClock()
    store = await Store.connect(f"sqlite+aiosqlite:///{tmp_path}/cloud.sqlite")
    config = NotifyConfig(
        webpush=WebPushConfig(allow_http_endpoints=True, endpoint_hosts=("127.0.0.1",))
    )
    dispatcher = build_notify(config, store, clock)
    app = web.Application()
    push_routes(app, _user, dispatcher)
    family_routes(app)
    runner = web.AppRunner(app, access_log=None)
    try:
        await dispatcher.start(run=False)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        async with running_push_service(clock) as push, aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/api/push/vapid-public-key") as res:
                assert res.status == 200
                push.expected_key = (await res.json())["public_key"]
            yield Cloud(dispatcher, store, clock, push, http, f"http://127.0.0.1:{port}")
    finally:
        await dispatcher.stop()
        await runner.cleanup()
        await store.close()


async def test_family_gets_their_elders_sos_decrypted_and_nothing_more(cloud: Cloud) -> None:
    mine, theirs = cloud.push.subscribe(), cloud.push.subscribe()
    assert (await cloud.subscribe("u-1", mine))[0] == 201
    assert (await cloud.subscribe("u-2", theirs))[0] == 201

    rows = await cloud.dispatcher.notify("user:u-1", alert("A1", "r-1"), stage="family")
    await cloud.dispatcher.notify("user:u-2", alert("A2", "r-2", type="fall"), stage="family")

    assert [p.payload for p in cloud.push.of(mine)] == [{
        "title": "[紧急] 一键求助 · SOS",
        "body": "[紧急] 一键求助 · SOS: d/s/c/grid-1/bldg-1/unit-1/floor-1/101 (alert A1)",
        "url": "http://127.0.0.1:8080/#alert=A1",
        "critical": True,
        "digest": False,
        "alerts": [{"id": "A1", "type": "sos", "severity": "critical", "ts": 1_767_225_600_000}],
    }]
    assert [p.payload["alerts"][0]["id"] for p in cloud.push.of(theirs)] == ["A2"]
    assert cloud.push.of(mine)[0].headers["Urgency"] == "high"
    assert cloud.push.refused == []
    assert [(r["channel"], r["result"], r["http_status"], r["attempt"]) for r in rows] == [
        ("webpush", "delivered", 201, 1)
    ]
    timeline = await alert_attempts(cloud.store, "A1")
    assert [(t["recipient"], t["stage"], t["result"]) for t in timeline] == [
        ("user:u-1", "family", "delivered")
    ]
    assert mine.id not in timeline[0]["target"]  # the endpoint is a capability: never shown
    assert timeline[0]["target"].startswith("webpush:127.0.0.1…#")


async def test_a_push_service_that_says_gone_removes_the_subscription(cloud: Cloud) -> None:
    sub = cloud.push.subscribe()
    await cloud.subscribe("u-1", sub)
    cloud.push.answers[sub.id] = [410]
    rows = await cloud.dispatcher.notify("user:u-1", alert("A1", "r-1"), stage="family")
    assert [(r["result"], r["http_status"]) for r in rows] == [("failed", 410)]
    assert "target removed" in rows[0]["reason"]
    assert await subscriptions_of(cloud.store, "u-1") == []
    assert await cloud.dispatcher.pending_count("retry") == 0
    # Nobody left to reach: the timeline says so instead of staying silent.
    rows = await cloud.dispatcher.notify("user:u-1", alert("A2", "r-1"), stage="family")
    assert [(r["channel"], r["result"], r["reason"]) for r in rows] == [
        ("-", "failed", "no channel configured for this recipient")
    ]


async def test_server_errors_are_retried_with_backoff_until_delivered(cloud: Cloud) -> None:
    sub = cloud.push.subscribe()
    await cloud.subscribe("u-1", sub)
    cloud.push.answers[sub.id] = [500, 503]
    rows = await cloud.dispatcher.notify("user:u-1", alert("A1", "r-1"), stage="family")
    reason, wait = split_retry(rows[0]["reason"])
    assert reason == "push service answered 500; retry 2"
    assert 1 <= wait <= 2  # base_s 2, jittered within [d/2, d]
    await cloud.dispatcher.tick()  # not due yet
    assert cloud.push.requests == 1
    cloud.clock.advance(round(wait * 1000) - 1)
    await cloud.dispatcher.tick()
    assert cloud.push.requests == 1
    cloud.clock.advance(1)
    await cloud.dispatcher.tick()
    assert cloud.push.requests == 2
    second = (await alert_attempts(cloud.store, "A1"))[1]["reason"]
    reason, wait = split_retry(second)
    assert reason == "push service answered 503; retry 3"
    assert 2 <= wait <= 4  # doubled
    cloud.clock.advance(round(wait * 1000) - 1)
    await cloud.dispatcher.tick()
    assert cloud.push.requests == 2
    cloud.clock.advance(1)
    await cloud.dispatcher.tick()
    timeline = await alert_attempts(cloud.store, "A1")
    assert [(t["attempt"], t["result"], t["http_status"]) for t in timeline] == [
        (1, "failed", 500), (2, "failed", 503), (3, "delivered", 201)
    ]
    assert [p.payload["alerts"][0]["id"] for p in cloud.push.of(sub)] == ["A1"]
    assert await cloud.dispatcher.pending_count("retry") == 0


async def test_a_retry_for_an_unsubscribed_browser_is_dropped_and_says_so(cloud: Cloud) -> None:
    sub = cloud.push.subscribe()
    await cloud.subscribe("u-1", sub)
    cloud.push.answers[sub.id] = [500]
    await cloud.dispatcher.notify("user:u-1", alert("A1", "r-1"), stage="family")
    async with cloud.http.delete(f"{cloud.base}/api/push/subscriptions",
                                 json={"endpoint": sub.endpoint}, headers={"X-User": "u-1"}) as res:
        assert res.status == 204
    cloud.clock.advance(2_000)
    await cloud.dispatcher.tick()
    timeline = await alert_attempts(cloud.store, "A1")
    assert [(t["attempt"], t["result"]) for t in timeline] == [(1, "failed"), (2, "failed")]
    assert split_retry(timeline[0]["reason"])[0] == "push service answered 500; retry 2"
    assert timeline[1]["reason"] == "target no longer configured: not retried"
    assert cloud.push.requests == 1


async def test_client_errors_and_refused_connections(cloud: Cloud) -> None:
    sub = cloud.push.subscribe()
    await cloud.subscribe("u-1", sub)
    cloud.push.answers[sub.id] = [400]
    rows = await cloud.dispatcher.notify("user:u-1", alert("A1", "r-1"), stage="family")
    assert (rows[0]["result"], rows[0]["http_status"]) == ("failed", 400)
    assert await cloud.dispatcher.pending_count("retry") == 0  # a 4xx will not get better by itself

    # A subscription whose push service is down: connection refused is worth a retry.
    dead = cloud.push.subscribe().to_json()
    dead["endpoint"] = f"http://127.0.0.1:{free_port()}/push/x"
    assert (await cloud.subscribe("u-3", dead))[0] == 201
    rows = await cloud.dispatcher.notify("user:u-3", alert("A2", "r-3"), stage="family")
    assert split_retry(rows[0]["reason"])[0] == (
        "push service unreachable: ClientConnectorError; retry 2"
    )
    assert rows[0]["http_status"] is None
    assert await cloud.dispatcher.pending_count("retry") == 1


async def test_the_push_service_refuses_a_jwt_from_another_key(cloud: Cloud) -> None:
    sub = cloud.push.subscribe()
    await cloud.subscribe("u-1", sub)
    cloud.push.expected_key = cloud.push.subscribe().to_json()["keys"]["p256dh"]  # not ours
    rows = await cloud.dispatcher.notify("user:u-1", alert("A1", "r-1"), stage="family")
    assert (rows[0]["result"], rows[0]["http_status"]) == ("failed", 403)
    assert cloud.push.refused == [
        "k is not the application server key the subscription was made with"
    ]


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"endpoint": "ftp://push.example/x"}, "endpoint must be an https URL"),
        ({"endpoint": "http://10.0.0.7/admin"}, "endpoint host 10.0.0.7 is not a known push service"),
        ({"endpoint": 5}, "endpoint must be a URL of at most 2048 characters"),
        ({"keys": None}, "keys must be an object with p256dh and auth"),
        ({"keys": {"p256dh": "AAAA", "auth": "AAAAAAAAAAAAAAAAAAAAAA"}},
         "keys.p256dh must be an uncompressed P-256 public key"),
        ({"keys": "auth-short"}, "keys must be an object with p256dh and auth"),
    ],
)
async def test_bad_subscriptions_are_refused_naming_the_field(
    cloud: Cloud, change: dict[str, Any], error: str
) -> None:
    body = {**cloud.push.subscribe().to_json(), **change}
    assert await cloud.subscribe("u-1", body) == (400, {"error": error})
    assert await subscriptions_of(cloud.store, "u-1") == []


async def test_subscriptions_need_a_user_and_only_the_owner_removes_one(cloud: Cloud) -> None:
    sub = cloud.push.subscribe()
    url = f"{cloud.base}/api/push/subscriptions"
    async with cloud.http.post(url, json=sub.to_json()) as res:
        assert res.status == 401
    short_auth = sub.to_json()
    short_auth["keys"]["auth"] = "AAAA"
    assert await cloud.subscribe("u-1", short_auth) == (400, {"error": "keys.auth must be 16 bytes"})
    assert (await cloud.subscribe("u-1", sub))[0] == 201
    assert (await cloud.subscribe("u-1", sub))[0] == 201  # again: still one row
    assert len(await subscriptions_of(cloud.store, "u-1")) == 1
    body = {"endpoint": sub.endpoint}
    async with cloud.http.delete(url, json=body, headers={"X-User": "u-2"}) as res:
        assert res.status == 404
    async with cloud.http.delete(url, json=body, headers={"X-User": "u-1"}) as res:
        assert res.status == 204
    assert await subscriptions_of(cloud.store, "u-1") == []


async def test_the_vapid_key_is_made_once_and_kept(tmp_path: Path, cloud: Cloud) -> None:
    # A second worker on the same database signs with the same key.
    other = build_notify(NotifyConfig(), cloud.store, cloud.clock)
    await other.start(run=False)
    try:
        first = cloud.dispatcher.notifiers["webpush"].keys  # type: ignore[attr-defined]
        second = other.notifiers["webpush"].keys  # type: ignore[attr-defined]
        assert second.public_key == first.public_key == cloud.push.expected_key
    finally:
        await other.stop()


async def test_https_only_unless_told_otherwise(cloud: Cloud, tmp_path: Path) -> None:
    strict = build_notify(NotifyConfig(), cloud.store, cloud.clock)
    await strict.start(run=False)
    app = web.Application()
    push_routes(app, _user, strict)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with cloud.http.post(
            f"http://127.0.0.1:{port}/api/push/subscriptions",
            json=cloud.push.subscribe().to_json(), headers={"X-User": "u-1"},
        ) as res:
            assert (res.status, await res.json()) == (400, {"error": "endpoint must be an https URL"})
        fcm = {**cloud.push.subscribe().to_json(), "endpoint": "https://fcm.googleapis.com/wp/x"}
        evil = {**fcm, "endpoint": "https://fcm.googleapis.com.evil.test/wp/x"}
        for body, status in ((fcm, 201), (evil, 400)):
            async with cloud.http.post(
                f"http://127.0.0.1:{port}/api/push/subscriptions",
                json=body, headers={"X-User": "u-1"},
            ) as res:
                assert res.status == status, await res.text()
    finally:
        await runner.cleanup()
        await strict.stop()
