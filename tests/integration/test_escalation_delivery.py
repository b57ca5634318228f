"""An SOS reaches a family member's phone: device → edge → cloud → escalation → a notifier.

No recording stand-in here: the cloud's own Dispatcher delivers through Apprise to a local
webhook (an SMS or bot gateway stands in), and the alert's detail shows who was told, how.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from cloud.escalation.policy import EscalationConfig
from cloud.notify.config import AppriseConfig, NotifyConfig
from shouwang.services import Mosquitto
from simulators.button import Button
from tests.conftest import (
    BUTTON,
    broker_config,
    cloud_config,
    edge_config,
    eventually,
    running_cloud,
    running_edge,
)
from tests.integration.people import Client

pytestmark = pytest.mark.integration
POLICY = {"policies": {"sos": {"stages": [
    {"name": "family", "after_s": 0, "notify": ["family"]},
    {"name": "police", "after_s": 300, "notify": ["police"]},
]}}}


async def test_an_sos_is_delivered_to_the_family_and_the_detail_says_so(
    make_broker: Callable[[str], Mosquitto],
    tmp_path: Path,
    webhook: tuple[int, list[dict[str, Any]]],
) -> None:
    port, received = webhook
    policy = tmp_path / "escalation.yaml"
    policy.write_text(yaml.safe_dump(POLICY))
    urls = tmp_path / "apprise.yaml"
    urls.write_text(yaml.safe_dump({"user:daughter": [f"json://127.0.0.1:{port}/notify"]}))
    edge_broker, cloud_broker = make_broker("edge"), make_broker("cloud")
    config = cloud_config(cloud_broker, tmp_path).model_copy(update={
        "escalation": EscalationConfig(file=policy),
        "notify": NotifyConfig(apprise=AppriseConfig(urls_file=urls)),
    })
    async with (
        running_cloud(config) as cloud,
        running_edge(edge_config(edge_broker, cloud_broker, tmp_path / "edge")),
        aiohttp.ClientSession() as http,
    ):
        assert cloud.access is not None
        await cloud.access.add_user("daughter", "a-long-password", "family", residents=["r-1"])
        async with Button(broker_config(edge_broker), BUTTON) as button:
            press = await button.press()
        [message] = await eventually(lambda: received, timeout=20)
        assert "sos" in message["title"].lower()

        daughter = await Client.login(http, cloud, "daughter", "a-long-password")
        [alert_id] = await daughter.ids()
        detail = (await daughter.get(f"/api/alerts/{alert_id}")).body
        assert detail["source_id"] == press
        assert [(n["stage"], n["username"], n["outcome"]) for n in detail["notifications"]] == [
            ("family", "daughter", "sent")
        ]
        [delivery] = detail["deliveries"]
        assert (delivery["recipient"], delivery["channel"], delivery["result"]) == (
            "user:daughter", "apprise", "delivered"
        )
        assert str(port) not in str(delivery)  # targets are shown redacted
        assert detail["evidence"] == []
