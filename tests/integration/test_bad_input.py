"""Bad input through real Mosquitto: refused, logged with a reason, counted; daemons keep going."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shouwang.mqtt import MqttClient
from shouwang.protocol import device_topic, make_envelope
from shouwang.services import Mosquitto
from simulators.button import Button
from tests.conftest import (
    BUTTON,
    WEARABLE,
    api_alerts_at_least,
    auth,
    broker_config,
    cloud_config,
    edge_config,
    eventually,
    running_cloud,
    running_edge,
    unique,
)

pytestmark = pytest.mark.integration


async def scrape(http: aiohttp.ClientSession, port: int) -> dict[tuple[str, str], float]:
    """`shouwang_messages_rejected_total` by (component, reason)."""
    async with http.get(f"http://127.0.0.1:{port}/metrics") as res:
        text = await res.text()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "shouwang_messages_rejected_total":
                out[(sample.labels["component"], sample.labels["reason"])] = sample.value
    return out


def env_bytes(device: str, kind: str, body: dict[str, object], **changes: object) -> bytes:
    data = make_envelope(site=None, device=device, kind=kind, body=body).to_dict()
    data.update(changes)
    return orjson.dumps(data)


EDGE_BAD_INPUT = [
    ("dev/btn-0001/event", b"\x00\x01 not json", "not_json"),
    ("dev/btn-0001/event", orjson.dumps({"v": 1, "id": "x"}), "invalid_envelope"),
    ("dev/btn-0001/event", env_bytes(BUTTON, "event", {"event": "press"}, ts="noon"), "invalid_envelope"),
    ("dev/btn-0001/event", b"{" + b" " * 70_000 + b"}", "oversize"),
    ("dev/ghost-9/event", env_bytes("ghost-9", "event", {"event": "press"}), "unknown_device"),
    ("dev/btn-0001/event", env_bytes("wear-0001", "event", {"event": "sos"}), "device_mismatch"),
    ("dev/btn-0001/event", env_bytes(BUTTON, "event", {"event": "press"}, site="elsewhere"), "wrong_site"),
    ("dev/btn-0001/event", env_bytes(BUTTON, "event", {"event": "detonate"}), "unknown_event"),
    ("dev/wear-0001/telemetry", env_bytes(WEARABLE, "telemetry", {"spo2": 140}), "no_valid_fields"),
]


async def test_edge_counts_each_bad_message_and_still_raises_the_next_sos(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    edge_broker, cloud_broker = make_broker("edge"), make_broker("cloud")
    async with (
        running_cloud(cloud_config(cloud_broker, tmp_path)) as cloud,
        running_edge(edge_config(edge_broker, cloud_broker, tmp_path / "edge")) as edge,
        aiohttp.ClientSession() as http,
    ):
        device = MqttClient(broker_config(edge_broker), client_id=unique("bad-device"))
        await device.start()
        await device.wait_connected(10)
        for topic, payload, _ in EDGE_BAD_INPUT:
            await device.publish(topic, payload)
        # A reading with one bad field keeps its good field and counts the bad one.
        await device.publish(
            device_topic(WEARABLE, "telemetry"),
            env_bytes(WEARABLE, "telemetry", {"heart_rate": 70, "spo2": -3}),
        )
        await device.close()

        async with Button(broker_config(edge_broker), BUTTON) as button:
            await button.press()
        await eventually(lambda: api_alerts_at_least(http, cloud.http_port, 1))

        counts = await scrape(http, edge.http_port)  # type: ignore[arg-type]
        expected: dict[tuple[str, str], float] = {}
        for _, _, reason in EDGE_BAD_INPUT:
            expected[("edge", reason)] = expected.get(("edge", reason), 0) + 1
        expected[("edge", "out_of_range")] = 1
        assert counts == expected
        logged = [r for r in caplog.records if getattr(r, "reason", None) == "unknown_device"]
        assert len(logged) == 1
        assert "device 'ghost-9' is not registered" in logged[0].getMessage()


async def test_cloud_refuses_malformed_and_foreign_site_messages(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path
) -> None:
    cloud_broker = make_broker("cloud")
    async with (
        running_cloud(cloud_config(cloud_broker, tmp_path)) as cloud,
        aiohttp.ClientSession() as http,
    ):
        site = MqttClient(broker_config(cloud_broker), client_id=unique("site"))
        await site.start()
        await site.wait_connected(10)
        good_body = {
            "type": "sos", "severity": "critical", "subject": "resident:r-1",
            "dedup_key": "resident:r-1|sos", "life_safety": True, "source_id": "m-1",
        }
        good = make_envelope(site="s-a", device="btn-1", kind="alert", body=good_body)
        sends = [
            ("site/s-a/up/alert", b"nonsense"),  # not_json
            ("site/s-a/up/alert", make_envelope(site="s-b", device="btn-1", kind="alert", body=good_body).to_bytes()),  # site_mismatch
            ("site/s-a/up/alert", make_envelope(site="s-a", device="btn-1", kind="alert", body={**good_body, "severity": "apocalyptic"}).to_bytes()),  # invalid_alert
            ("site/s-a/up/alert", make_envelope(site="s-a", device="btn-1", kind="event", body={}).to_bytes()),  # kind_mismatch
            ("site/s-a/up/alert", good.to_bytes()),
            ("site/s-a/up/alert", good.to_bytes()),  # duplicate
        ]
        for topic, payload in sends:
            await site.publish(topic, payload)
        await site.close()
        await eventually(lambda: _rejected(http, cloud.http_port, "duplicate"))
        counts = await scrape(http, cloud.http_port)  # type: ignore[arg-type]
        assert counts == {
            ("cloud", "not_json"): 1,
            ("cloud", "site_mismatch"): 1,
            ("cloud", "invalid_alert"): 1,
            ("cloud", "kind_mismatch"): 1,
            ("cloud", "duplicate"): 1,
        }
        async with http.get(
            f"http://127.0.0.1:{cloud.http_port}/api/alerts", headers=await auth(http, cloud.http_port)
        ) as res:
            assert [a["id"] for a in (await res.json())["alerts"]] == [good.id]


async def _rejected(http: aiohttp.ClientSession, port: int | None, reason: str) -> bool:
    return ("cloud", reason) in await scrape(http, port)  # type: ignore[arg-type]
