"""A gateway's rules make an alert worse or end it: the cloud folds that into the one alert."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cloud.store import Store
from cloud.updates import NotApplicable, escalate, resolve
from edge.config import DeviceBinding
from edge.rules.config import RulesSettings
from shouwang.mqtt import MqttClient
from shouwang.protocol import device_topic, make_envelope
from shouwang.services import Mosquitto
from tests.conftest import (
    LOCATION,
    broker_config,
    cloud_config,
    edge_config,
    eventually,
    running_cloud,
    running_edge,
    unique,
)

pytestmark = pytest.mark.integration
GAS = "gas-0001"


def alert_env(site: str, id_: str, severity: str, **detail: Any) -> Any:
    return make_envelope(site=site, device=GAS, kind="alert", id=id_, body={
        "type": "gas_leak", "severity": severity, "subject": "resident:r-1",
        "dedup_key": "resident:r-1|gas_leak", "life_safety": True, "source_id": f"m-{id_}",
        "resident": "r-1", "location": LOCATION, "detail": detail,
    })


def resolved_env(site: str, id_: str, alert_id: str) -> Any:
    return make_envelope(site=site, device=GAS, kind="event", id=id_, body={
        "type": "alert_resolved", "alert_id": alert_id, "why": "below 20 %LEL for 60 s",
    })


async def test_escalations_and_resolutions_apply_once_and_only_to_open_alerts(
    database_url: str,
) -> None:
    store = await Store.connect(database_url)
    try:
        assert await store.insert_alert(alert_env("s-1", "a-1", "high")) is not None
        worse = alert_env("s-1", "a-2", "critical", update="escalated", supersedes="a-1")
        folded = await escalate(store, worse, "a-1")
        assert folded is not None
        assert (folded["severity"], folded["state"]) == ("critical", "open")
        assert folded["detail"]["escalations"] == 1
        assert await escalate(store, worse, "a-1") is None  # a redelivery changes nothing
        assert [a["id"] for a in await store.list_alerts()] == ["a-1"]

        with pytest.raises(NotApplicable):  # another site cannot touch it
            await resolve(store, resolved_env("s-2", "e-0", "a-1"), "a-1")
        done = await resolve(store, resolved_env("s-1", "e-1", "a-1"), "a-1")
        assert done is not None
        assert done["state"] == "resolved"
        assert done["timeline"][-1]["actor"] == "site:s-1"
        assert await resolve(store, resolved_env("s-1", "e-1", "a-1"), "a-1") is None

        # Closed: a later escalation is an alert of its own, and leaves no trace here.
        later = alert_env("s-1", "a-3", "critical", update="escalated", supersedes="a-1")
        with pytest.raises(NotApplicable):
            await escalate(store, later, "a-1")
        assert await store.insert_event(later)  # its id was not recorded by the failed fold

        # Someone is on the way: the worker closes the case; the timeline gets the news.
        assert await store.insert_alert(alert_env("s-1", "b-1", "high")) is not None
        await store.transition("b-1", "acknowledged", actor="user:w")
        await store.transition("b-1", "dispatched", actor="user:w")
        kept = await resolve(store, resolved_env("s-1", "e-2", "b-1"), "b-1")
        assert kept is not None
        assert kept["state"] == "dispatched"
        assert "cleared at the gateway" in kept["timeline"][-1]["note"]
    finally:
        await store.close()


async def test_a_gas_alarm_that_worsens_then_clears_is_one_alert_escalated_then_resolved(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path
) -> None:
    edge_broker, cloud_broker = make_broker("edge"), make_broker("cloud")
    rules = tmp_path / "rules.yaml"
    rules.write_text("override:\n  gas_detector.alarm: {min_clear_s: 0}\n", encoding="utf-8")
    base = edge_config(edge_broker, cloud_broker, tmp_path / "edge")
    econf = base.model_copy(update={
        "devices": [DeviceBinding(id=GAS, profile="gas_detector", resident="r-1", location=LOCATION)],
        "rules": RulesSettings(file=rules),
    })
    async with (
        running_cloud(cloud_config(cloud_broker, tmp_path)) as cloud,
        running_edge(econf),
    ):
        assert cloud.store is not None
        store = cloud.store
        detector = MqttClient(broker_config(edge_broker), client_id=unique("gas"))
        await detector.start()
        await detector.wait_connected(10)

        async def event(body: dict[str, Any]) -> None:
            env = make_envelope(site=None, device=GAS, kind="event", body=body)
            await detector.publish(device_topic(GAS, "event"), env.to_bytes())

        try:
            await event({"event": "alarm", "level": "low", "lel": 24.0})
            [first] = await eventually(lambda: _alerts(store, 1))
            assert first["severity"] == "high"
            await event({"event": "alarm", "level": "high", "lel": 52.0})
            await eventually(lambda: _severity_is(store, first["id"], "critical"))
            await event({"event": "alarm_cleared"})
            await eventually(lambda: _state_is(store, first["id"], "resolved"))
        finally:
            await detector.close()
        [only] = await store.list_alerts()
        assert only["id"] == first["id"]  # one alert, from start to end
        timeline = (await store.get_alert(first["id"]))["timeline"]
        assert [(t["from_state"], t["to_state"]) for t in timeline] == [
            (None, "open"), ("open", "open"), ("open", "resolved")
        ]
        assert "high → critical" in timeline[1]["note"]
        assert timeline[2]["actor"] == f"site:{econf.site}"


async def _alerts(store: Store, n: int) -> list[dict[str, Any]] | None:
    alerts = await store.list_alerts()
    return alerts if len(alerts) == n else None


async def _severity_is(store: Store, alert_id: str, severity: str) -> bool:
    return bool((await store.get_alert(alert_id))["severity"] == severity)


async def _state_is(store: Store, alert_id: str, state: str) -> bool:
    return bool((await store.get_alert(alert_id))["state"] == state)
