"""The alert API: list, read, acknowledge once, and errors that say what was wrong."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from shouwang.protocol import make_envelope
from shouwang.services import Mosquitto
from tests.conftest import cloud_config, running_cloud

pytestmark = pytest.mark.integration


def alert_env(n: int) -> object:
    return make_envelope(
        site="s-1", device=f"btn-{n}", kind="alert", ts=1_795_000_000_000 + n,
        body={
            "type": "sos", "severity": "critical", "subject": f"resident:r-{n}",
            "dedup_key": f"resident:r-{n}|sos", "life_safety": True, "source_id": f"m-{n}",
        },
    )


async def test_ack_lifecycle_and_errors(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path, database_url: str
) -> None:
    async with (
        running_cloud(cloud_config(make_broker("cloud"), tmp_path, database_url=database_url)) as cloud,
        aiohttp.ClientSession() as http,
    ):
        assert cloud.store is not None
        for n in range(5):
            await cloud.store.insert_alert(alert_env(n))  # type: ignore[arg-type]
        base = f"http://127.0.0.1:{cloud.http_port}"
        async with http.get(f"{base}/api/alerts?limit=2") as res:
            page = await res.json()
        assert [a["device"] for a in page["alerts"]] == ["btn-4", "btn-3"]
        async with http.get(f"{base}/api/alerts?limit=2&before={page['next_before']}") as res:
            assert [a["device"] for a in (await res.json())["alerts"]] == ["btn-2", "btn-1"]

        target = page["alerts"][0]["id"]
        async with http.ws_connect(f"{base}/api/ws") as ws:
            snapshot = await ws.receive_json(timeout=5)
            assert len(snapshot["alerts"]) == 5
            async with http.post(f"{base}/api/alerts/{target}/ack", json={"actor": "duty-1", "note": "calling"}) as res:
                assert res.status == 200
                acked = await res.json()
            update = await ws.receive_json(timeout=5)
        assert update["type"] == "alert_updated"
        assert (update["alert"]["id"], update["alert"]["state"]) == (target, "acknowledged")
        assert acked["state"] == "acknowledged"
        assert [(t["from_state"], t["to_state"], t["actor"], t["note"]) for t in acked["timeline"]] == [
            (None, "open", "site:s-1", None),
            ("open", "acknowledged", "unverified:duty-1", "calling"),
        ]

        async with http.post(f"{base}/api/alerts/{target}/ack") as res:
            assert res.status == 409
            assert "is acknowledged; it cannot become acknowledged" in (await res.json())["error"]
        async with http.post(f"{base}/api/alerts/NOPE/ack") as res:
            assert res.status == 404
        async with http.post(f"{base}/api/alerts/{target}/ack", data=b"{not json") as res:
            assert res.status == 400
        for query, message in [
            ("state=melted", "state must be one of"),
            ("limit=0", "limit must be between 1 and 500"),
            ("limit=100000", "limit must be between 1 and 500"),
            ("limit=ten", "must be integers"),
        ]:
            async with http.get(f"{base}/api/alerts?{query}") as res:
                assert res.status == 400, query
                assert message in (await res.json())["error"]
        async with http.get(f"{base}/api/alerts?state=acknowledged") as res:
            assert [a["id"] for a in (await res.json())["alerts"]] == [target]
        async with http.get(f"{base}/") as res:
            assert res.status == 200
            assert "守望" in await res.text()
