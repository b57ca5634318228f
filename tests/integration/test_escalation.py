"""Escalation with two cloud workers on one database and a restart: each stage fires once."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from cloud.access.scope import SHARED_DETAIL
from cloud.config import CloudConfig
from cloud.escalation.policy import EscalationConfig
from cloud.escalation.timers import Timers
from cloud.server import CloudServer
from shouwang.clock import ManualClock
from shouwang.config import ConfigError
from shouwang.services import Mosquitto
from simulators.button import Button
from tests.conftest import (
    BUTTON,
    LOCATION,
    api_config,
    broker_config,
    cloud_config,
    edge_config,
    eventually,
    running_cloud,
    running_edge,
)
from tests.integration.people import HOME_A, Client, add_alert, add_people

pytestmark = pytest.mark.integration
POLICY = {
    "policies": {
        "sos": {"stages": [
            {"name": "family", "after_s": 0, "notify": ["family"]},
            {"name": "grid-worker", "after_s": 120, "notify": ["worker"]},
            {"name": "police", "after_s": 300, "notify": ["police"]},
        ]},
    }
}
VITALS = {"event": "press", "signals": {"heart_rate": [128, 131]}}


class RecordingNotifier:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []
        self.views: dict[tuple[str, str], dict[str, Any]] = {}
        self.fail_for: set[str] = set()

    async def notify(self, user_id: str, alert: dict[str, Any], stage: str) -> None:
        if user_id in self.fail_for:
            raise ConnectionError("push gateway unreachable")
        self.sent.append((user_id, alert["id"], stage))
        self.views[(user_id, alert["id"])] = alert


def _config(database_url: str, tmp_path: Path, worker: str, poll_s: float = 0.05) -> CloudConfig:
    path = tmp_path / "escalation.yaml"
    path.write_text(yaml.safe_dump(POLICY))
    return api_config(database_url, worker=worker,
                      escalation={"file": str(path), "poll_s": poll_s, "lease_s": 30})


@contextlib.asynccontextmanager
async def worker(config: CloudConfig, clock: ManualClock, notifier: RecordingNotifier) -> Any:
    server = CloudServer(config, clock=clock, notifier=notifier)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def _rounds(*servers: CloudServer) -> None:
    """Let each worker run a round now (their loops run too; claims keep it to one)."""
    for s in servers:
        assert s.scheduler is not None
        await s.scheduler.round()


async def test_two_workers_and_a_restart_notify_each_stage_exactly_once(
    database_url: str, tmp_path: Path
) -> None:
    clock = ManualClock()
    notifier = RecordingNotifier()
    config_a, config_b = (_config(database_url, tmp_path, w) for w in ("worker-1", "worker-2"))
    async with worker(config_b, clock, notifier) as b, aiohttp.ClientSession() as http:
        async with worker(config_a, clock, notifier) as a:
            await add_people(a)
            unanswered = await add_alert(a, location=HOME_A, resident="r-a1", detail=VITALS)
            answered = await add_alert(b, location=HOME_A, resident="r-a1")
            start = max(unanswered["received_ms"], answered["received_ms"])
            clock.set(start)
            await _rounds(a, b)
            await eventually(lambda: len(notifier.sent) >= 2)
            assert sorted(notifier.sent) == sorted([
                ("family-a", unanswered["id"], "family"), ("family-a", answered["id"], "family"),
            ])
            # A responder has it (a family member's "seen" would not stop the escalation).
            responder = await Client.login(http, a, "worker-a")
            assert (await responder.post(f"/api/alerts/{answered['id']}/ack")).status == 200
        # Worker 1 is gone (a deploy); worker 2 carries on alone.
        clock.advance(119_000)
        await _rounds(b)
        assert len(notifier.sent) == 2
        clock.advance(2_000)
        await _rounds(b)
        await eventually(lambda: len(notifier.sent) >= 3)
        assert notifier.sent[2] == ("worker-a", unanswered["id"], "grid-worker")
        # Worker 1 is back, with the same name, on the same database.
        async with worker(config_a, clock, notifier) as a2:
            clock.advance(180_000)  # 301 s after the alert
            await _rounds(a2, b, a2, b)
            await eventually(lambda: len(notifier.sent) >= 4)
            clock.advance(3_600_000)
            await _rounds(a2, b)
            assert notifier.sent[3:] == [("police-a", unanswered["id"], "police")]
            admin = await Client.login(http, b, "admin")
            detail = (await admin.get(f"/api/alerts/{unanswered['id']}")).body
            assert [(n["stage"], n["username"], n["outcome"]) for n in detail["notifications"]] == [
                ("family", "family-a", "sent"), ("grid-worker", "worker-a", "sent"),
                ("police", "police-a", "sent"),
            ]
            assert b.scheduler is not None
            stages = await b.scheduler.timers.stages(answered["id"])
            assert [(s["stage"], s["done_ms"] is not None, s["cancelled_ms"] is not None)
                    for s in stages] == [
                ("family", True, False), ("grid-worker", False, True), ("police", False, True)]
    assert len(notifier.sent) == 4
    # Each was told in their own view: the family sees the vitals, the police do not.
    assert notifier.views[("family-a", unanswered["id"])]["detail"] == VITALS
    assert set(notifier.views[("police-a", unanswered["id"])]["detail"]) <= SHARED_DETAIL
    assert "signals" not in notifier.views[("police-a", unanswered["id"])]["detail"]


async def test_a_stage_claimed_by_a_worker_that_died_is_taken_over_after_the_lease(
    database_url: str, tmp_path: Path
) -> None:
    clock = ManualClock()
    notifier = RecordingNotifier()
    notifier.fail_for = {"family-a"}
    # The loop's own rounds wait a minute: this test drives the rounds itself.
    async with worker(_config(database_url, tmp_path, "worker-2", 60), clock, notifier) as b:
        await add_people(b)
        alert = await add_alert(b, resident="r-a1")
        assert b.scheduler is not None
        assert b.store is not None
        clock.set(alert["received_ms"])
        # A worker claims the first stage and dies before telling anyone.
        dead = Timers(b.store, clock, b.policies, "worker-dead", 30_000)
        await dead.plan_pending()
        assert await dead.claim(alert["id"], "family")
        clock.advance(29_000)
        assert await b.scheduler.round() == 0  # still within the dead worker's lease
        clock.advance(2_000)
        assert await b.scheduler.round() == 1
        assert notifier.sent == []  # the only family member's channel failed ...
        async with aiohttp.ClientSession() as http:
            admin = await Client.login(http, b, "admin")
            detail = (await admin.get(f"/api/alerts/{alert['id']}")).body
        # ... and that is recorded, not lost: the timeline shows the failure.
        assert [(n["stage"], n["username"], n["outcome"]) for n in detail["notifications"]] == [
            ("family", "family-a", "failed")]


def test_a_bad_policy_file_stops_start_up_naming_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "escalation.yaml"
    for policy, message in [
        ({"policies": {"sos": {"stages": [{"name": "f", "after_s": 0, "notify": ["mayor"]}]}}},
         "policies.sos.stages.0.notify.0: Input should be 'family', 'worker', 'police' or 'admin'"),
        ({"policies": {"sos": {"stages": [{"name": "f", "after_s": 60, "notify": ["family"]},
                                          {"name": "g", "after_s": 0, "notify": ["police"]}]}}},
         "stages must be in order of after_s"),
        ({"policies": {"sos": {"stages": [{"name": "f", "after": 0, "notify": ["family"]}]}}},
         "policies.sos.stages.0.after: unknown key"),
    ]:
        path.write_text(yaml.safe_dump(policy))
        config = api_config("sqlite+aiosqlite://", escalation={"file": str(path)})
        with pytest.raises(ConfigError) as err:
            CloudServer(config)
        assert str(err.value).startswith(f"{path}: ")
        assert message in str(err.value)


async def test_a_button_press_reaches_the_family_at_once_through_ingest(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path
) -> None:
    """Real edge, brokers and ingest; the loop's own rounds wait a minute, so only the wake-up
    by the newly stored alert can have told the family."""
    edge_broker, cloud_broker = make_broker("edge"), make_broker("cloud")
    path = tmp_path / "escalation.yaml"
    path.write_text(yaml.safe_dump(POLICY))
    config = cloud_config(cloud_broker, tmp_path).model_copy(
        update={"escalation": EscalationConfig(file=path, poll_s=60)}
    )
    notifier = RecordingNotifier()
    async with (
        running_cloud(config, notifier=notifier) as cloud,
        running_edge(edge_config(edge_broker, cloud_broker, tmp_path / "edge")),
    ):
        assert cloud.access is not None
        await cloud.access.add_user("family-1", "family-password", "family", residents=["r-1"])
        await cloud.access.add_user("worker-1", "worker-password", "worker",
                                    locations=["/".join(LOCATION.split("/")[:4])])
        async with Button(broker_config(edge_broker), BUTTON) as button:
            await button.press()
        await eventually(lambda: notifier.sent)
        assert [(u, stage) for u, _, stage in notifier.sent] == [("family-1", "family")]
