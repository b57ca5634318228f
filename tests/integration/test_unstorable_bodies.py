"""A gateway's message the store cannot keep is refused at the door, not retried for ever.

Found by fuzzing the cloud's envelope checks (tests/fuzz/test_cloud_envelopes.py): an alert
whose `type` is longer than its column, a string holding NUL, a reading's `ts` or a device
state's `at_ms` past 64 bits all passed the body checks. PostgreSQL then refused the write, the
ingest worker took that for the database being away and retried it every second, and every
alert behind it waited (on SQLite the same messages became dead-letter alerts). Each is now
refused as `invalid_...` (or `invalid_envelope`), counted, and the next SOS is stored.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from shouwang.mqtt import MqttClient
from shouwang.protocol import make_envelope, now_ms
from shouwang.services import Mosquitto
from tests.conftest import auth, broker_config, cloud_config, eventually, running_cloud, unique
from tests.integration.test_bad_input import scrape

pytestmark = pytest.mark.integration
SOS = {"type": "sos", "severity": "critical", "subject": "resident:r-1",
       "dedup_key": "resident:r-1|sos", "life_safety": True, "source_id": "m-1"}


async def test_unstorable_messages_are_refused_and_the_next_sos_is_stored(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path, database_url: str
) -> None:
    cloud_broker = make_broker("cloud")
    site = unique("s")
    config = cloud_config(cloud_broker, tmp_path, database_url=database_url)
    async with running_cloud(config) as cloud, aiohttp.ClientSession() as http:
        gateway = MqttClient(broker_config(cloud_broker), client_id=unique("gw"))
        await gateway.start()
        await gateway.wait_connected(10)
        at = now_ms()

        def env(kind: str, body: dict[str, object]) -> bytes:
            return make_envelope(site=site, device="btn-1", kind=kind, body=body).to_bytes()

        sends = [
            ("alert", env("alert", {**SOS, "type": "x" * 65})),  # alerts.type is 64 long
            ("alert", env("alert", {**SOS, "subject": "resident:\x00"})),
            ("telemetry", env("telemetry", {"readings": [
                {"id": "r-1", "device": "w-1", "ts": 2**63, "values": {"heart_rate": 70}}]})),
            ("telemetry", env("telemetry", {"readings": [
                {"id": "r" * 65, "device": "w-1", "ts": at, "values": {"heart_rate": 70}}]})),
            ("health", env("health", {"type": "device_state", "device": "w-1",
                                      "dimension": "transport", "new": "online",
                                      "at_ms": 2**64 - 1})),
        ]
        for kind, payload in sends:
            await gateway.publish(f"site/{site}/up/{kind}", payload)
        good = make_envelope(site=site, device="btn-1", kind="alert", body=SOS)
        await gateway.publish(f"site/{site}/up/alert", good.to_bytes())
        await gateway.close()

        async def stored() -> list[str]:
            async with http.get(f"http://127.0.0.1:{cloud.http_port}/api/alerts",
                                headers=await auth(http, cloud.http_port)) as res:
                return [a["id"] for a in (await res.json())["alerts"]]

        assert await eventually(stored, timeout=30) == [good.id]

        async def refused() -> dict[tuple[str, str], float]:
            counts = await scrape(http, cloud.http_port)  # type: ignore[arg-type]
            return counts if sum(counts.values()) >= len(sends) else {}

        assert await eventually(refused, timeout=30) == {
            ("cloud", "invalid_alert"): 1,
            ("cloud", "invalid_envelope"): 1,
            ("cloud", "invalid_telemetry"): 2,
            ("cloud", "invalid_health"): 1,
        }
