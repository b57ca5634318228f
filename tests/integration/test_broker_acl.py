"""Per-device and per-site accounts: real Mosquitto with the files `shouwang edge|cloud
provision` wrote refuses what a device or a gateway may not do (issue 14)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import pwd
import re
import shutil
import stat
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import paho.mqtt.client as paho
import psutil
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from shouwang.broker_accounts import Accounts
from shouwang.certs import Authority
from shouwang.cli import main
from shouwang.config import BrokerConfig, TlsConfig
from shouwang.mqtt import MqttClient, MqttPublishFailed
from shouwang.protocol import CLOUD_STREAMS, make_envelope, site_down_topic
from shouwang.services import Mosquitto, free_port
from tests.conftest import eventually, load_factor, unique

pytestmark = pytest.mark.integration

SITE_FILE = {
    "site": "gw-a",
    "edge_broker": {"port": 1883},
    "cloud_broker": {"port": 1883},
    "devices": [
        {"id": "btn-a", "profile": "emergency_button"},
        {"id": "btn-b", "profile": "emergency_button"},
        {"id": "meter-1", "profile": "water_meter",
         "modbus": {"host": "127.0.0.1", "port": 1502, "unit_id": 1}},
    ],
}
CREDENTIAL = re.compile(r"^\s+(\S+)\s+username=(\S+)\s+password=(\S+)$", re.M)


def provision(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


def printed_credentials(output: str) -> dict[str, str]:
    return {user: password for _, user, password in CREDENTIAL.findall(output)}


def account(broker: Mosquitto, tmp_path: Path, username: str, password: str) -> BrokerConfig:
    secret = tmp_path / f"{username}-{unique('pw')}.password"
    secret.write_text(password)
    return BrokerConfig(port=broker.port, username=username, password_file=secret)


@contextlib.asynccontextmanager
async def connected(config: BrokerConfig, *subscriptions: str) -> AsyncIterator[MqttClient]:
    client = MqttClient(config, client_id=unique(config.username or "anon"))
    for topic in subscriptions:
        client.subscribe(topic, 1)
    await client.start()
    try:
        await client.wait_connected(10 * load_factor())
        yield client
    finally:
        await client.close()


async def nothing_more(client: MqttClient, marker_from: MqttClient, marker_topic: str) -> None:
    """Prove `client` received nothing before a marker it may read arrived after it: the
    broker handles one connection's packets in order, so what it let through would be first."""
    await marker_from.publish(marker_topic, b"marker", qos=1)
    async with asyncio.timeout(10 * load_factor()):
        message = await client.messages()
    assert (message.topic, message.payload) == (marker_topic, b"marker")
    client.ack(message)


async def cannot_take_over(victim: MqttClient, thief_account: BrokerConfig,
                           marker_from: MqttClient, marker_topic: str) -> None:
    """A client of `thief_account` that names `victim`'s client id leaves `victim` connected
    (its session untouched): the broker gives the thief its account name as client id."""
    drops: list[bool] = []
    victim._on_connection_change = drops.append
    thief = MqttClient(thief_account, client_id=victim.client_id)
    await thief.start()
    try:
        await thief.wait_connected(10 * load_factor())
        await nothing_more(victim, marker_from, marker_topic)
    finally:
        await thief.close()
    assert drops == [], "the victim was disconnected"


# MQTT 5 answers a refused SUBSCRIBE or PUBLISH "not authorized" (0x87); 3.1.1 has only the
# SUBACK failure code 0x80 and no PUBACK reason.
NOT_AUTHORIZED = {paho.MQTTv5: 0x87, paho.MQTTv311: 0x80}
PROTOCOLS = pytest.mark.parametrize("protocol", [paho.MQTTv5, paho.MQTTv311],
                                    ids=["mqtt5", "mqtt311"])


def subacks(config: BrokerConfig, topics: list[str], protocol: int) -> dict[str, int]:
    """What the broker answers to each of `topics`, subscribed one by one: a granted QoS
    (0-2) or a failure code, read from the SUBACK itself (paho, not our client, which only
    logs a refusal)."""
    answered: dict[int, int] = {}
    done = threading.Event()
    connack: list[ReasonCode] = []
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("suback"),
                         protocol=protocol)
    client.username_pw_set(config.username, config.password())

    def on_connect(client: paho.Client, userdata: object, flags: object, reason_code: ReasonCode,
                   properties: object) -> None:
        connack.append(reason_code)
        done.set()

    def on_subscribe(client: paho.Client, userdata: object, mid: int,
                     reason_codes: list[ReasonCode], properties: object) -> None:
        answered[mid] = reason_codes[0].value
        done.set()

    client.on_connect, client.on_subscribe = on_connect, on_subscribe
    client.connect("127.0.0.1", config.port)
    client.loop_start()
    try:
        assert done.wait(10 * load_factor()), "no CONNACK"
        assert not connack[0].is_failure, connack
        codes = {}
        for topic in topics:
            done.clear()
            _, mid = client.subscribe(topic, 1)
            assert done.wait(10 * load_factor()), f"no SUBACK for {topic}"
            codes[topic] = answered[mid]
        return codes
    finally:
        client.disconnect()
        client.loop_stop()


def refused_and_granted(config: BrokerConfig, protocol: int, refused: list[str],
                        granted: list[str]) -> None:
    codes = subacks(config, refused + granted, protocol)
    assert {t: codes[t] for t in refused} == dict.fromkeys(refused, NOT_AUTHORIZED[protocol])
    assert {t: codes[t] for t in granted} == dict.fromkeys(granted, 1)


def puback(config: BrokerConfig, topic: str, payload: bytes) -> int:
    """The reason code of the PUBACK to a QoS 1 publish under MQTT 5."""
    acked = threading.Event()
    codes: list[int] = []
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("puback"),
                         protocol=paho.MQTTv5)
    client.username_pw_set(config.username, config.password())

    def on_publish(client: paho.Client, userdata: object, mid: int, reason_code: ReasonCode,
                   properties: object) -> None:
        codes.append(reason_code.value)
        acked.set()

    client.on_publish = on_publish
    client.connect("127.0.0.1", config.port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1)
        assert acked.wait(10 * load_factor()), f"no PUBACK for {topic}"
        return codes[0]
    finally:
        client.disconnect()
        client.loop_stop()


def envelope(device: str, kind: str = "event") -> bytes:
    return make_envelope(site=None, device=device, kind=kind, body={"event": "sos"}).to_bytes()


# --- the gateway's broker -------------------------------------------------------------------


@pytest.fixture
def edge_accounts(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    site_file = tmp_path / "site.yaml"
    site_file.write_text(yaml.safe_dump(SITE_FILE))
    directory = tmp_path / "edge-broker"
    code, output = provision("edge", "provision", "--config", str(site_file), "--dir",
                             str(directory))
    assert code == 0, output
    return directory, printed_credentials(output)


@pytest.fixture
def edge_broker(tmp_path: Path, edge_accounts: tuple[Path, dict[str, str]]) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path / "edge", name="edge broker", accounts=edge_accounts[0])
    broker.start()
    yield broker
    broker.stop()


def test_edge_provision_prints_each_device_once_and_keeps_only_hashes(
    tmp_path: Path, edge_accounts: tuple[Path, dict[str, str]]
) -> None:
    directory, credentials = edge_accounts
    # A device per MQTT device; the Modbus meter is polled by the gateway and has none.
    assert sorted(credentials) == ["btn-a", "btn-b"]
    accounts = (directory / "dynamic-security.json").read_text()
    assert sorted(Accounts.load(directory).hashes) == ["btn-a", "btn-b", "shouwang-edge"]
    for password in credentials.values():
        assert password not in accounts
    for name in ("dynamic-security.json", "edge.password"):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600, name
    # Again: nothing new to show, the same accounts.
    code, output = provision("edge", "provision", "--config", str(tmp_path / "site.yaml"),
                             "--dir", str(directory))
    assert code == 0
    assert printed_credentials(output) == {}
    assert "0 device account(s) issued, 2 kept, 0 removed" in output
    assert (directory / "dynamic-security.json").read_text() == accounts


async def test_a_device_publishes_only_as_itself_and_reads_only_its_own_config(
    tmp_path: Path, edge_broker: Mosquitto, edge_accounts: tuple[Path, dict[str, str]]
) -> None:
    directory, credentials = edge_accounts
    edge = BrokerConfig(port=edge_broker.port, username="shouwang-edge",
                        password_file=directory / "edge.password")
    btn_a = account(edge_broker, tmp_path, "btn-a", credentials["btn-a"])
    async with (
        connected(edge, "dev/+/event", "dev/+/status") as daemon,
        connected(btn_a, "dev/btn-a/config", "dev/btn-b/cmd", "dev/+/event") as device,
    ):
        await device.publish("dev/btn-a/event", envelope("btn-a"), qos=1)
        message = await daemon.messages()
        assert message.topic == "dev/btn-a/event"
        daemon.ack(message)
        # Speaking for another device, or writing its own config: refused by the broker.
        for topic in ("dev/btn-b/event", "dev/btn-a/config"):
            with pytest.raises(MqttPublishFailed, match="Not authorized"):
                await device.publish(topic, envelope("btn-b"), qos=1)
        await nothing_more(daemon, device, "dev/btn-a/event")
        # The daemon's command to the other button never reaches it; its own config does.
        await daemon.publish("dev/btn-b/cmd", b"open", qos=1)
        await nothing_more(device, daemon, "dev/btn-a/config")


async def test_a_device_subscribed_to_everything_receives_only_its_own(
    tmp_path: Path, edge_broker: Mosquitto, edge_accounts: tuple[Path, dict[str, str]]
) -> None:
    # The foreign subscriptions are refused at the SUBACK (the tests below); were one let
    # through, each message is checked again on delivery, retained ones included.
    directory, credentials = edge_accounts
    edge = BrokerConfig(port=edge_broker.port, username="shouwang-edge",
                        password_file=directory / "edge.password")
    async with connected(edge) as daemon:
        await daemon.publish("dev/btn-b/config", b"b's settings", qos=1, retain=True)
        btn_a = account(edge_broker, tmp_path, "btn-a", credentials["btn-a"])
        btn_b = account(edge_broker, tmp_path, "btn-b", credentials["btn-b"])
        async with (
            connected(btn_a, "#", "dev/+/config", "dev/btn-b/cmd", "dev/btn-a/cmd") as device,
            connected(btn_b) as other,
        ):
            await other.publish("dev/btn-b/event", envelope("btn-b"), qos=1)
            await daemon.publish("dev/btn-b/cmd", b"open", qos=1)
            await nothing_more(device, daemon, "dev/btn-a/cmd")
        await daemon.publish("dev/btn-b/config", b"", qos=1, retain=True)


@PROTOCOLS
def test_a_foreign_subscription_on_the_edge_broker_is_refused_at_the_suback(
    tmp_path: Path, edge_broker: Mosquitto, edge_accounts: tuple[Path, dict[str, str]],
    protocol: int,
) -> None:
    directory, credentials = edge_accounts
    btn_a = account(edge_broker, tmp_path, "btn-a", credentials["btn-a"])
    refused_and_granted(
        btn_a, protocol,
        refused=["dev/btn-b/config", "dev/btn-b/cmd", "dev/+/config", "dev/+/cmd", "dev/#", "#",
                 "dev/btn-a/#", "dev/btn-a/event", "local/alarm"],
        granted=["dev/btn-a/config", "dev/btn-a/cmd"])
    # The edge daemon: the device topics it subscribes to (edge/daemon.py) and its own
    # `local/`, nothing of the cloud's shape.
    edge = BrokerConfig(port=edge_broker.port, username="shouwang-edge",
                        password_file=directory / "edge.password")
    refused_and_granted(edge, protocol, refused=["#", "site/gw-a/down/#", "+/+/event"],
                        granted=["dev/+/telemetry", "dev/+/event", "dev/+/status", "local/#"])


async def test_a_device_forging_another_devices_event_gets_puback_not_authorized(
    tmp_path: Path, edge_broker: Mosquitto, edge_accounts: tuple[Path, dict[str, str]]
) -> None:
    directory, credentials = edge_accounts
    edge = BrokerConfig(port=edge_broker.port, username="shouwang-edge",
                        password_file=directory / "edge.password")
    btn_a = account(edge_broker, tmp_path, "btn-a", credentials["btn-a"])
    async with connected(edge, "dev/+/event") as daemon:
        assert await asyncio.to_thread(puback, btn_a, "dev/btn-b/event", envelope("btn-b")) \
            == 0x87
        assert await asyncio.to_thread(puback, btn_a, "dev/btn-a/event", envelope("btn-a")) == 0
        message = await daemon.messages()
        assert message.topic == "dev/btn-a/event"  # the forged one never came before it
        daemon.ack(message)


async def test_a_restart_drops_a_removed_device_and_turns_it_away(
    tmp_path: Path, edge_broker: Mosquitto, edge_accounts: tuple[Path, dict[str, str]]
) -> None:
    directory, credentials = edge_accounts
    btn_a = account(edge_broker, tmp_path, "btn-a", credentials["btn-a"])
    btn_b = account(edge_broker, tmp_path, "btn-b", credentials["btn-b"])
    site = {**SITE_FILE, "devices": [d for d in SITE_FILE["devices"]  # type: ignore[attr-defined]
                                     if d["id"] != "btn-b"]}
    (tmp_path / "site.yaml").write_text(yaml.safe_dump(site))
    async with connected(btn_a) as kept, connected(btn_b) as removed:
        code, output = provision("edge", "provision", "--config", str(tmp_path / "site.yaml"),
                                 "--dir", str(directory))
        assert code == 0, output
        assert "1 removed: btn-b" in output
        assert "systemctl restart mosquitto" in output
        await restart_drops(edge_broker, kept, removed, btn_b)


async def restart_drops(broker: Mosquitto, kept: MqttClient, dropped: MqttClient,
                        dropped_config: BrokerConfig) -> None:
    """The broker reads its accounts only when it starts: a restart (its sessions and queued
    messages persist) drops every connection; `kept` comes back, `dropped` cannot."""
    kept_changes: list[bool] = []
    dropped_changes: list[bool] = []
    kept._on_connection_change = kept_changes.append
    dropped._on_connection_change = dropped_changes.append
    broker.restart()
    await eventually(lambda: kept_changes == [False, True], timeout=30)
    assert dropped_changes == [False]
    await refused_now(dropped_config)


async def refused_now(config: BrokerConfig) -> None:
    client = MqttClient(config, client_id=unique("refused"))
    await client.start()
    try:
        with pytest.raises(TimeoutError):
            await client.wait_connected(2)
    finally:
        await client.close()


async def test_no_anonymous_client_and_no_wrong_password_on_the_edge_broker(
    tmp_path: Path, edge_broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    for config in (
        BrokerConfig(port=edge_broker.port),
        account(edge_broker, tmp_path, "btn-a", "not-its-password"),
        account(edge_broker, tmp_path, "meter-1", "no-account"),
    ):
        client = MqttClient(config, client_id=unique("intruder"))
        await client.start()
        try:
            with pytest.raises(TimeoutError):
                await client.wait_connected(2)
        finally:
            await client.close()
    assert caplog.text.count("refused: Not authorized") + caplog.text.count(
        "refused: Bad user name or password") >= 3, caplog.text


# --- the cloud broker -----------------------------------------------------------------------


@pytest.fixture
def cloud_accounts(tmp_path: Path) -> Path:
    directory = tmp_path / "cloud-broker"
    for site in ("site-a", "site-b"):
        code, output = provision("cloud", "provision", "--site", site, "--dir", str(directory))
        assert code == 0, output
        # Credentials go to files for the gateway, never to the screen.
        secret = (directory / "sites" / site / "cloud-broker.password").read_text().strip()
        assert secret not in output
    return directory


@pytest.fixture
def cloud_broker(tmp_path: Path, cloud_accounts: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path / "cloud", name="cloud broker", accounts=cloud_accounts)
    broker.start()
    yield broker
    broker.stop()


def gateway(broker: Mosquitto, directory: Path, site: str) -> BrokerConfig:
    return BrokerConfig(port=broker.port, username=site,
                        password_file=directory / "sites" / site / "cloud-broker.password")


def worker(broker: Mosquitto, directory: Path, role: str) -> BrokerConfig:
    """A cloud worker role's account, as `cloud.yaml`'s `broker_accounts` gives it."""
    from cloud.config import CloudConfig
    from cloud.provision import worker_accounts

    config = CloudConfig(broker=BrokerConfig(port=broker.port),
                         broker_accounts=worker_accounts(directory))
    return config.broker_for(role)  # type: ignore[arg-type]


async def hears_nothing(client: MqttClient, own_topic: str) -> None:
    """Prove a client that may read nothing received nothing published before: the broker
    writes to one connection in order, so a message it let through would come before the
    PUBACK of this publish on a topic the client may write."""
    await client.publish(own_topic, b"marker", qos=1)
    assert client.drain(100) == []


def test_cloud_provision_writes_the_site_token_and_keeps_its_hash(cloud_accounts: Path) -> None:
    from cloud.evidence import EvidenceConfig, hash_token

    hashes = EvidenceConfig(site_tokens_file=cloud_accounts / "site-tokens.yaml").token_hashes()
    for site in ("site-a", "site-b"):
        token_file = cloud_accounts / "sites" / site / "evidence.token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert hashes[site] == hash_token(token_file.read_text().strip())


async def test_a_gateway_cannot_forge_an_ack_nor_speak_for_another_site(
    cloud_broker: Mosquitto, cloud_accounts: Path
) -> None:
    ingest = worker(cloud_broker, cloud_accounts, "ingest")
    async with (
        connected(ingest, "site/+/up/alert", "$share/cloud/site/+/up/telemetry") as cloud,
        connected(gateway(cloud_broker, cloud_accounts, "site-b"), "site/site-b/down/#") as gw_b,
        connected(gateway(cloud_broker, cloud_accounts, "site-a")) as gw_a,
    ):
        await gw_a.publish("site/site-a/up/alert", b"a's alert", qos=1)
        await gw_a.publish("site/site-a/up/telemetry", b"a's readings", qos=1)
        got = [await cloud.messages(), await cloud.messages()]
        assert sorted(m.topic for m in got) == ["site/site-a/up/alert", "site/site-a/up/telemetry"]
        cloud.ack_many(got)
        # A forged confirmation to another gateway (it would delete b's outbox rows unsent),
        # a forged close of b's alert, an alert in b's name: each refused by the broker.
        for topic in ("site/site-b/down/ack", "site/site-b/down/alert", "site/site-b/up/alert",
                      "site/site-a/down/ack"):
            with pytest.raises(MqttPublishFailed, match="Not authorized"):
                await gw_a.publish(topic, b'{"ids": ["forged"]}', qos=1)
        # Under MQTT 5 the PUBACK says why: not authorized (0x87).
        forger = gateway(cloud_broker, cloud_accounts, "site-a")
        assert await asyncio.to_thread(puback, forger, "site/site-b/down/ack",
                                       b'{"ids": ["forged"]}') == 0x87
        # Nothing of it reached gateway b (its own confirmation comes first) nor the cloud.
        await nothing_more(gw_b, cloud, "site/site-b/down/ack")
        await gw_b.publish("site/site-b/up/alert", b"b's alert", qos=1)
        message = await cloud.messages()
        assert (message.topic, message.payload) == ("site/site-b/up/alert", b"b's alert")
        cloud.ack(message)


async def test_a_gateway_subscribed_to_everything_hears_only_its_own_site(
    cloud_broker: Mosquitto, cloud_accounts: Path
) -> None:
    async with (
        connected(worker(cloud_broker, cloud_accounts, "ingest")) as cloud,
        connected(worker(cloud_broker, cloud_accounts, "alert_downlink")) as news,
        connected(gateway(cloud_broker, cloud_accounts, "site-b")) as gw_b,
        connected(gateway(cloud_broker, cloud_accounts, "site-a"),
                  "#", "site/+/down/#", "site/site-b/up/#", "$share/x/site/+/up/#",
                  "site/site-a/down/ack") as gw_a,
    ):
        await news.publish("site/site-b/down/alert", b"b's alert was resolved", qos=1)
        await cloud.publish("site/site-b/down/ack", b'{"ids": ["b-1"]}', qos=1)
        await gw_b.publish("site/site-b/up/alert", b"b's alert", qos=1)
        await nothing_more(gw_a, cloud, "site/site-a/down/ack")


@PROTOCOLS
def test_a_foreign_subscription_on_the_cloud_broker_is_refused_at_the_suback(
    cloud_broker: Mosquitto, cloud_accounts: Path, protocol: int
) -> None:
    # A gateway: exactly the downlink topics the edge subscribes to (edge/uplink.py).
    refused_and_granted(
        gateway(cloud_broker, cloud_accounts, "site-a"), protocol,
        refused=["site/site-b/down/ack", "site/site-b/down/#", "site/+/down/#", "site/+/down/ack",
                 "site/site-b/up/#", "site/site-a/up/#", "#", "$share/cloud/site/+/up/alert",
                 "$share/x/site/site-a/down/ack"],
        granted=[site_down_topic("site-a", k) for k in ("ack", "alert", "watchlist")])
    # Ingest: exactly its streams' subscriptions (the `$share/cloud/...` ones included).
    streams = [t for topics in CLOUD_STREAMS.values() for t in topics]
    assert any(t.startswith("$share/cloud/") for t in streams)
    refused_and_granted(
        worker(cloud_broker, cloud_accounts, "ingest"), protocol,
        refused=["site/+/down/#", "site/site-a/down/ack", "#", "site/#",
                 "$share/other/site/+/up/telemetry", "$share/cloud/site/+/down/ack"],
        granted=[*streams, "site/+/up/#"])
    # The downlinks read nothing.
    for role in ("alert_downlink", "watchlist_downlink"):
        refused_and_granted(
            worker(cloud_broker, cloud_accounts, role), protocol,
            refused=["site/+/up/#", "site/+/down/#", "site/site-a/down/alert", "#"], granted=[])


WORKER_ROLES = ("ingest", "alert_downlink", "watchlist_downlink")


async def test_each_cloud_worker_role_does_its_job_and_nothing_else(
    cloud_broker: Mosquitto, cloud_accounts: Path
) -> None:
    """Ingest reads the uplink and confirms (down/ack); the alert downlink writes only
    down/alert, the watchlist downlink only down/watchlist. What a role may not write is
    refused and reaches no one; what it may not read it never receives (its subscription
    refused at the SUBACK, `test_a_foreign_subscription_on_the_cloud_broker_...`)."""
    roles = {role: worker(cloud_broker, cloud_accounts, role) for role in WORKER_ROLES}
    assert {r: c.username for r, c in roles.items()} == {
        "ingest": "shouwang-ingest", "alert_downlink": "shouwang-alert-downlink",
        "watchlist_downlink": "shouwang-watchlist-downlink"}
    async with (
        connected(roles["ingest"], "site/+/up/#", "site/+/down/#") as ingest,
        connected(roles["alert_downlink"], "site/+/up/#", "site/+/down/#") as news,
        connected(roles["watchlist_downlink"], "#") as lists,
        connected(gateway(cloud_broker, cloud_accounts, "site-a"), "site/site-a/down/#") as gw_a,
    ):
        # Each does its job: the gateway's alert reaches ingest, which confirms it; each
        # downlink reaches the gateway.
        await gw_a.publish("site/site-a/up/alert", b"a's alert", qos=1)
        message = await ingest.messages()
        assert (message.topic, message.payload) == ("site/site-a/up/alert", b"a's alert")
        for client, topic in ((ingest, "site/site-a/down/ack"), (news, "site/site-a/down/alert"),
                              (lists, "site/site-a/down/watchlist")):
            await client.publish(topic, b"its own", qos=1)
            message = await gw_a.messages()
            assert (message.topic, message.payload) == (topic, b"its own")
        # And nothing else: each other downlink, and speaking for a gateway, is refused.
        refused = {
            ingest: ("down/alert", "down/watchlist", "up/alert"),
            news: ("down/ack", "down/watchlist", "up/alert"),
            lists: ("down/ack", "down/alert", "up/alert"),
        }
        for client, kinds in refused.items():
            for kind in kinds:
                with pytest.raises(MqttPublishFailed, match="Not authorized"):
                    await client.publish(f"site/site-a/{kind}", b"not its job", qos=1)
        # Nothing of it reached the gateway, nor ingest (its marker is the gateway's telemetry).
        await nothing_more(gw_a, ingest, "site/site-a/down/ack")
        await nothing_more(ingest, gw_a, "site/site-a/up/telemetry")
        # The downlinks subscribed to the uplink and to every downlink (refused; they are
        # connected, which waits for the SUBACK) received none of the messages above.
        await hears_nothing(news, "site/site-a/down/alert")
        await hears_nothing(lists, "site/site-a/down/watchlist")


def test_cloud_provision_gives_each_worker_role_an_account_and_drops_the_shared_one(
    tmp_path: Path,
) -> None:
    from cloud.provision import worker_accounts
    from shouwang.broker_accounts import hash_password, verify_password

    directory = tmp_path / "cloud-broker"
    # A directory an older release provisioned: the workers' shared account, in a password
    # file and an ACL.
    directory.mkdir()
    (directory / "passwd").write_text(f"shouwang-cloud:{hash_password('old')}\n")
    (directory / "acl").write_text("user shouwang-cloud\ntopic readwrite #\n")
    (directory / "cloud.password").write_text("old\n")
    code, output = provision("cloud", "provision", "--site", "site-a", "--dir", str(directory))
    assert code == 0, output
    hashes = Accounts.load(directory).hashes
    assert sorted(hashes) == ["shouwang-alert-downlink", "shouwang-ingest",
                              "shouwang-watchlist-downlink", "site-a"]
    assert not (directory / "passwd").exists()
    assert not (directory / "acl").exists()
    assert f"Removed an older release's {directory / 'passwd'}, {directory / 'acl'}" in output
    assert not (directory / "cloud.password").exists()
    assert "removed the workers' shared account shouwang-cloud" in output
    accounts = worker_accounts(directory)
    for role in WORKER_ROLES:
        account = getattr(accounts, role)
        assert account.password_file is not None
        assert stat.S_IMODE(account.password_file.stat().st_mode) == 0o600
        secret = account.password_file.read_text().strip()
        assert verify_password(secret, hashes[account.username])
        assert secret not in output
        # Each new account is named once, with the file that holds its password.
        assert output.count(f"new account {account.username}, password in "
                            f"{account.password_file}") == 1
    roles = {r["rolename"]: r["acls"] for r in json.loads(
        (directory / "dynamic-security.json").read_text())["roles"]}
    assert "shouwang-cloud" not in roles
    assert roles["shouwang-watchlist-downlink"] == [
        {"acltype": "publishClientSend", "topic": "site/+/down/watchlist", "allow": True}]
    # Again, and for another site: the workers keep their accounts, nothing is announced.
    accounts = (directory / "dynamic-security.json").read_text()
    code, output = provision("cloud", "provision", "--site", "site-a", "--dir", str(directory))
    assert code == 0
    assert "new account" not in output
    assert "older release" not in output
    assert (directory / "dynamic-security.json").read_text() == accounts
    code, output = provision("cloud", "provision", "--site", "site-b", "--dir", str(directory))
    assert "new account shouwang" not in output
    assert all(Accounts.load(directory).hashes[a] == hashes[a]
               for a in ("shouwang-ingest", "shouwang-alert-downlink"))


async def test_a_restart_drops_a_revoked_site_and_turns_it_away(
    cloud_broker: Mosquitto, cloud_accounts: Path
) -> None:
    site_b = gateway(cloud_broker, cloud_accounts, "site-b")
    async with connected(site_b) as revoked, connected(
            gateway(cloud_broker, cloud_accounts, "site-a")) as kept:
        code, output = provision("cloud", "provision", "--site", "site-b", "--revoke", "--dir",
                                 str(cloud_accounts))
        assert code == 0, output
        assert "systemctl restart mosquitto" in output
        await restart_drops(cloud_broker, kept, revoked, site_b)


async def test_apply_changes_the_running_broker_without_a_restart(tmp_path: Path) -> None:
    """`--apply`: a new site's gateway connects, and a revoked one is cut off and turned away,
    with the broker never restarted (the same process throughout)."""
    directory = tmp_path / "cloud-broker"
    code, output = provision("cloud", "provision", "--site", "site-a", "--dir", str(directory),
                             "--apply")
    assert code == 0, output
    # The admin account is new: the broker learns it when it starts, this once.
    assert "shouwang-admin has a new password: restart the broker this once" in output
    assert stat.S_IMODE((directory / "admin.password").stat().st_mode) == 0o600
    broker = Mosquitto(tmp_path / "cloud", name="cloud broker", accounts=directory)
    broker.start()
    assert broker.proc is not None
    pid = broker.proc.pid
    apply = ("--dir", str(directory), "--apply", "--broker-port", str(broker.port))
    try:
        site_a = gateway(broker, directory, "site-a")
        async with connected(site_a) as revoked:
            changes: list[bool] = []
            revoked._on_connection_change = changes.append
            code, output = provision("cloud", "provision", "--site", "site-b", *apply)
            assert code == 0, output
            assert f"applied to the running broker at 127.0.0.1:{broker.port}" in output
            # Site b's account and its role, at once.
            site_b = gateway(broker, directory, "site-b")
            await asyncio.to_thread(refused_and_granted, site_b, paho.MQTTv5,
                                    ["site/site-a/down/ack", "#"], ["site/site-b/down/ack"])
            assert await asyncio.to_thread(puback, site_b, "site/site-a/down/ack", b"{}") == 0x87
            # Accepted: 0x10, "no matching subscribers", is a success.
            assert await asyncio.to_thread(puback, site_b, "site/site-b/up/alert", b"{}") == 0x10
            code, output = provision("cloud", "provision", "--site", "site-a", "--revoke", *apply)
            assert code == 0, output
            assert "site site-a: revoked; applied to the running broker" in output
            await eventually(lambda: changes == [False], timeout=30)
            await refused_now(site_a)
            assert changes == [False]
        assert broker.proc is not None
        assert broker.proc.pid == pid
    finally:
        broker.stop()


async def test_apply_rotates_and_removes_devices_on_the_running_edge_broker(
    tmp_path: Path,
) -> None:
    site_file = tmp_path / "site.yaml"
    site_file.write_text(yaml.safe_dump(SITE_FILE))
    directory = tmp_path / "edge-broker"
    code, output = provision("edge", "provision", "--config", str(site_file), "--dir",
                             str(directory), "--apply")
    assert code == 0, output
    old = printed_credentials(output)
    broker = Mosquitto(tmp_path / "edge", name="edge broker", accounts=directory)
    broker.start()
    try:
        btn_b = account(broker, tmp_path, "btn-b", old["btn-b"])
        async with connected(btn_b) as removed:
            changes: list[bool] = []
            removed._on_connection_change = changes.append
            site_file.write_text(yaml.safe_dump({**SITE_FILE, "devices": [
                d for d in SITE_FILE["devices"] if d["id"] != "btn-b"]}))  # type: ignore[attr-defined]
            code, output = provision("edge", "provision", "--config", str(site_file), "--dir",
                                     str(directory), "--rotate", "btn-a", "--apply",
                                     "--broker-port", str(broker.port))
            assert code == 0, output
            assert "1 removed: btn-b" in output
            assert f"applied to the running broker at 127.0.0.1:{broker.port}" in output
            await eventually(lambda: changes == [False], timeout=30)
            await refused_now(btn_b)
        new = printed_credentials(output)
        await refused_now(account(broker, tmp_path, "btn-a", old["btn-a"]))
        async with connected(account(broker, tmp_path, "btn-a", new["btn-a"])):
            pass
    finally:
        broker.stop()


def test_apply_that_cannot_reach_the_broker_says_to_restart(tmp_path: Path) -> None:
    directory = tmp_path / "cloud-broker"
    assert provision("cloud", "provision", "--site", "site-a", "--dir", str(directory),
                     "--apply")[0] == 0
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code, _ = provision("cloud", "provision", "--site", "site-b", "--dir", str(directory),
                            "--apply", "--broker-port", str(free_port()))
    assert code == 2
    assert "cannot connect" in err.getvalue()
    assert "restart it instead: systemctl restart mosquitto" in err.getvalue()
    assert "site-b" in Accounts.load(directory).hashes  # the file is written all the same
    # A lost admin password is replaced, which only a restart teaches the broker.
    (directory / "admin.password").write_text("edited\n")
    code, output = provision("cloud", "provision", "--site", "site-c", "--dir", str(directory),
                             "--apply", "--broker-port", str(free_port()))
    assert code == 0, output
    assert "shouwang-admin has a new password: restart the broker this once" in output


# --- the shipped broker configurations ------------------------------------------------------

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"


class DeployedMosquitto(Mosquitto):
    """Mosquitto run with a file of deploy/mosquitto as it ships: only its paths are moved
    into a directory of the test and its listeners onto free loopback ports. As root it runs
    as the `mosquitto` user it names, reading files `--broker-user mosquitto` gave it."""

    def __init__(self, directory: Path, conf: str, tls_port: int) -> None:
        super().__init__(directory, name=f"deployed {conf}")
        self.conf, self.tls_port = conf, tls_port

    def write_config(self) -> Path:
        text = (DEPLOY / self.conf).read_text()
        text = text.replace("/etc/shouwang/", f"{self.directory}/etc/")
        text = text.replace("/var/lib/mosquitto/", f"{self.directory}/lib/")
        text = text.replace("/var/log/mosquitto/mosquitto.log", str(self.log_path))
        text = re.sub(r"^listener 8883$", f"listener {self.tls_port} 127.0.0.1", text, flags=re.M)
        text = re.sub(r"^listener 1883 127.0.0.1$", f"listener {self.port} 127.0.0.1", text,
                      flags=re.M)
        if not run_as_mosquitto():
            text = text.replace("\nuser mosquitto\n", "\n")
        conf = self.directory / "mosquitto.conf"
        conf.write_text(text)
        return conf


def run_as_mosquitto() -> bool:
    try:
        pwd.getpwnam("mosquitto")
    except KeyError:
        return False
    return os.geteuid() == 0


@pytest.fixture
def deploy_dir() -> Iterator[Path]:
    """A directory the `mosquitto` user can reach (pytest's are mode 700 under root)."""
    directory = Path(tempfile.mkdtemp(prefix="shouwang-deploy-"))
    os.chmod(directory, 0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def install_tls(directory: Path, name: str) -> Path:
    # As an installer does: `shouwang certs --dir /etc/shouwang/tls --server NAME=HOST
    # --broker-user mosquitto` writes {name}.crt and {name}.key, as the conf names them.
    authority = Authority(directory / "etc" / "tls",
                          key_owner="mosquitto" if run_as_mosquitto() else None)
    authority.server(name, ["127.0.0.1"])
    for path in (directory / "etc", directory / "etc" / "tls"):
        path.chmod(0o755)
    (directory / "lib").mkdir()
    if run_as_mosquitto():  # and the broker's persistence
        user = pwd.getpwnam("mosquitto")
        os.chown(directory / "lib", user.pw_uid, user.pw_gid)
    return authority.ca_file


def tls(config: BrokerConfig, port: int, ca_file: Path) -> BrokerConfig:
    return config.model_copy(update={"port": port, "tls": TlsConfig(ca_file=ca_file)})


async def test_the_shipped_cloud_conf_refuses_a_forged_ack_over_tls(deploy_dir: Path) -> None:
    ca_file = install_tls(deploy_dir, "cloud-broker")
    accounts = deploy_dir / "etc" / "cloud-broker"
    user = ["--broker-user", "mosquitto"] if run_as_mosquitto() else []
    for site in ("site-a", "site-b"):
        code, output = provision("cloud", "provision", "--site", site, "--dir", str(accounts),
                                 *user)
        assert code == 0, output
    accounts.chmod(0o755)
    broker = DeployedMosquitto(deploy_dir, "cloud.conf", tls_port=free_port())
    broker.start()
    assert broker.proc is not None
    if run_as_mosquitto():
        assert psutil.Process(broker.proc.pid).username() == "mosquitto"
    try:
        ingest = worker(broker, accounts, "ingest")  # on the loopback listener
        async with (
            connected(ingest, "site/+/up/alert") as cloud,
            connected(tls(gateway(broker, accounts, "site-a"), broker.tls_port, ca_file)) as gw_a,
            connected(tls(gateway(broker, accounts, "site-b"), broker.tls_port, ca_file),
                      "site/site-b/down/ack") as gw_b,
        ):
            with pytest.raises(MqttPublishFailed, match="Not authorized"):
                await gw_a.publish("site/site-b/down/ack", b'{"ids": ["forged"]}', qos=1)
            await nothing_more(gw_b, cloud, "site/site-b/down/ack")
            await gw_a.publish("site/site-a/up/alert", b"a's alert", qos=1)
            message = await cloud.messages()
            assert message.topic == "site/site-a/up/alert"
            cloud.ack(message)
            # Gateway a connecting with b's client id does not push b off its session.
            await cannot_take_over(gw_b, tls(gateway(broker, accounts, "site-a"),
                                              broker.tls_port, ca_file), cloud,
                                   "site/site-b/down/ack")
        anonymous = MqttClient(tls(BrokerConfig(), broker.tls_port, ca_file),
                               client_id=unique("anon"))
        await anonymous.start()
        try:
            with pytest.raises(TimeoutError):
                await anonymous.wait_connected(2)
        finally:
            await anonymous.close()
    finally:
        broker.stop()


async def test_the_shipped_edge_conf_keeps_a_device_to_its_own_topics_over_tls(
    deploy_dir: Path,
) -> None:
    ca_file = install_tls(deploy_dir, "edge-broker")
    site_file = deploy_dir / "site.yaml"
    site_file.write_text(yaml.safe_dump(SITE_FILE))
    accounts = deploy_dir / "etc" / "edge-broker"
    user = ["--broker-user", "mosquitto"] if run_as_mosquitto() else []
    code, output = provision("edge", "provision", "--config", str(site_file), "--dir",
                             str(accounts), *user)
    assert code == 0, output
    credentials = printed_credentials(output)
    accounts.chmod(0o755)
    broker = DeployedMosquitto(deploy_dir, "edge.conf", tls_port=free_port())
    broker.start()
    assert broker.proc is not None
    if run_as_mosquitto():
        assert psutil.Process(broker.proc.pid).username() == "mosquitto"
    try:
        edge = BrokerConfig(port=broker.port, username="shouwang-edge",
                            password_file=accounts / "edge.password")
        btn_a = tls(account(broker, deploy_dir, "btn-a", credentials["btn-a"]),
                    broker.tls_port, ca_file)
        btn_b = tls(account(broker, deploy_dir, "btn-b", credentials["btn-b"]),
                    broker.tls_port, ca_file)
        async with (
            connected(edge, "dev/+/event") as daemon,
            connected(btn_a) as device,
            connected(btn_b) as other,
        ):
            with pytest.raises(MqttPublishFailed, match="Not authorized"):
                await device.publish("dev/btn-b/event", envelope("btn-b"), qos=1)
            await nothing_more(daemon, device, "dev/btn-a/event")
            # A device connecting with the daemon's client id does not push the daemon off.
            await cannot_take_over(daemon, btn_a, other, "dev/btn-b/event")
    finally:
        broker.stop()


# --- the whole road, with accounts and ACLs on both brokers ---------------------------------


async def test_an_sos_travels_and_its_case_closes_through_brokers_with_acls(
    make_broker: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    """Every topic the edge and the cloud use is within their accounts: the press arrives as
    an alert (up/alert), the cloud's confirmation empties the gateway's outbox (down/ack),
    and a worker closing the case reaches the gateway's book (down/alert)."""
    from tests.scenarios.site import community

    async with community(make_broker, tmp_path, acl=True) as site:
        assert site.edge_broker.accounts is not None
        await site.press()
        alert = (await eventually(lambda: site.alerts("sos"), timeout=30))[0]
        await eventually(lambda: site.edge_holds(alert["id"]), timeout=30)

        async def outbox_empty() -> bool:
            depth = await site.edge.outbox.depth()
            return depth.get(0, 0) == 0

        await eventually(outbox_empty, timeout=30)
        await site.act("worker-li", alert["id"], "ack")
        await site.act("worker-li", alert["id"], "resolve", note="all fine")

        async def released() -> bool:
            return not await site.edge_holds(alert["id"])

        await eventually(released, timeout=30)
        assert site.edge.rules.book.closed_by_cloud == 1


async def test_an_sos_travels_through_both_shipped_confs_over_tls(
    deploy_dir: Path, tmp_path: Path
) -> None:
    """The edge daemon and the cloud as deployed: the button and the gateway over TLS with
    their own accounts (client id = account), the daemons on the loopback listeners."""
    from cloud import provision as cloud_provision
    from edge import provision as edge_provision
    from simulators.button import Button
    from tests.conftest import (
        BUTTON,
        api_alerts,
        cloud_config,
        edge_config,
        running_cloud,
        running_edge,
    )

    owner = "mosquitto" if run_as_mosquitto() else None
    brokers = {}
    for name in ("edge", "cloud"):
        directory = deploy_dir / name
        directory.mkdir(mode=0o755)
        ca_file = install_tls(directory, f"{name}-broker")
        brokers[name] = (DeployedMosquitto(directory, f"{name}.conf", free_port()), ca_file)
    (edge_b, edge_ca), (cloud_b, cloud_ca) = brokers["edge"], brokers["cloud"]
    econf = edge_config(edge_b, cloud_b, tmp_path / "edge")
    edge_dir = edge_b.directory / "etc" / "edge-broker"
    cloud_dir = cloud_b.directory / "etc" / "cloud-broker"
    issued = edge_provision.provision(econf, edge_dir, broker_user=owner).issued
    cloud_provision.provision(cloud_dir, econf.site, broker_user=owner)
    site_files = cloud_provision.site_dir(cloud_dir, econf.site)
    econf = econf.model_copy(update={
        "edge_broker": BrokerConfig(port=edge_b.port, username="shouwang-edge",
                                    password_file=edge_dir / "edge.password"),
        "cloud_broker": BrokerConfig(
            port=cloud_b.tls_port, username=econf.site, tls=TlsConfig(ca_file=cloud_ca),
            password_file=site_files / "cloud-broker.password"),
    })
    cconf = cloud_config(cloud_b, tmp_path).model_copy(update={
        "broker": BrokerConfig(port=cloud_b.port),
        "broker_accounts": cloud_provision.worker_accounts(cloud_dir)})
    button = account(edge_b, tmp_path, BUTTON, issued[BUTTON]).model_copy(
        update={"port": edge_b.tls_port, "tls": TlsConfig(ca_file=edge_ca)})
    for broker, _ in brokers.values():
        broker.start()
    try:
        async with (
            running_cloud(cconf) as cloud,
            running_edge(econf) as edge,
            aiohttp.ClientSession() as http,
        ):
            await edge.cloud_mqtt.wait_connected(10 * load_factor())
            async with Button(button, BUTTON) as pressed:
                press_id = await pressed.press()
            alerts = await eventually(lambda: api_alerts(http, cloud.http_port), timeout=30)
            assert [(a["type"], a["source_id"]) for a in alerts] == [("sos", press_id)]

            async def confirmed() -> bool:  # the cloud's down/ack reached the gateway
                return (await edge.outbox.depth()).get(0, 0) == 0

            await eventually(confirmed, timeout=30)
    finally:
        for broker, _ in brokers.values():
            broker.stop()
