"""Two API workers on one database: a dashboard on either sees what the other did, once."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.conftest import api_config, running_cloud
from tests.integration.people import HOME_A, HOME_B, Client, add_alert, add_people

pytestmark = pytest.mark.integration


async def test_a_change_on_one_worker_reaches_websockets_on_the_other_once(
    database_url: str,
) -> None:
    async with (
        running_cloud(api_config(database_url, feed_poll_s=0.05)) as a,
        running_cloud(api_config(database_url, feed_poll_s=0.05)) as b,
        aiohttp.ClientSession() as http,
    ):
        await add_people(a)
        on_a = await Client.login(http, a, "police-a")
        on_b = await Client.login(http, b, "police-a")
        async with (
            http.ws_connect(f"{on_b.base}/api/ws", headers=on_b.headers) as ws_b,
            http.ws_connect(f"{on_a.base}/api/ws", headers=on_a.headers) as ws_a,
        ):
            assert (await ws_b.receive_json(timeout=5))["alerts"] == []
            assert (await ws_a.receive_json(timeout=5))["alerts"] == []
            # Stored by worker a's ingest (which broadcasts locally), in and out of scope.
            mine = await add_alert(a, location=HOME_A)
            a.hub.broadcast({"type": "alert", "alert": mine})
            await add_alert(a, location=HOME_B)
            for ws in (ws_b, ws_a):
                got = await ws.receive_json(timeout=5)
                assert (got["type"], got["alert"]["id"], got["alert"]["state"]) == (
                    "alert", mine["id"], "open")
            # (Had the ack come before worker b read the new alert, b would send it once,
            # already acknowledged: the current state, never an older one after a newer.)
            assert (await on_a.post(f"/api/alerts/{mine['id']}/ack", {"note": "on it"})).status == 200
            for ws in (ws_b, ws_a):
                got = await ws.receive_json(timeout=5)
                assert (got["type"], got["alert"]["id"], got["alert"]["state"]) == (
                    "alert_updated", mine["id"], "acknowledged")
                with pytest.raises(asyncio.TimeoutError):  # no copies, nothing out of scope
                    await ws.receive_json(timeout=0.3)


async def test_an_alert_opened_and_acknowledged_between_two_polls_is_an_update(
    database_url: str,
) -> None:
    """Else a board would sound the new-alert alarm for an alert somebody already handled."""
    from typing import Any

    from cloud.feed import ChangeFeed
    from cloud.hub import Hub

    async with running_cloud(api_config(database_url)) as cloud:
        assert cloud.store is not None
        sent: list[dict[str, Any]] = []
        hub = Hub()
        hub.broadcast = sent.append  # type: ignore[method-assign]
        feed = ChangeFeed(cloud.store, hub, poll_s=60)
        await feed.start_position()
        alert = await add_alert(cloud)
        await cloud.store.transition(alert["id"], "acknowledged", actor="user:police-a")
        await feed.poll()
        assert [(m["type"], m["alert"]["state"]) for m in sent] == [
            ("alert_updated", "acknowledged"), ("alert_updated", "acknowledged")]
