"""MQTT over TLS against a real Mosquitto with certificates of `shouwang certs`: the broker is
verified by our CA, client certificates when it asks for them, and nothing in clear."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from shouwang.certs import Authority
from shouwang.config import BrokerConfig, TlsConfig
from shouwang.mqtt import MqttClient
from shouwang.services import ListenerTls, Mosquitto
from tests.conftest import broker_config, unique

pytestmark = pytest.mark.integration


@pytest.fixture
def authority(tmp_path: Path) -> Authority:
    return Authority(tmp_path / "pki")


@pytest.fixture
def tls_broker(tmp_path: Path, authority: Authority) -> Iterator[Mosquitto]:
    """Mutual TLS: the broker asks every client for a certificate the CA signed."""
    issued = authority.server("broker", ["127.0.0.1"])
    broker = Mosquitto(tmp_path / "tls-broker", name="tls broker", tls=ListenerTls(
        authority.ca_file, issued.cert, issued.key, require_certificate=True))
    broker.start()
    yield broker
    broker.stop()


def config(broker: Mosquitto, tls: TlsConfig | None) -> BrokerConfig:
    return BrokerConfig(host="127.0.0.1", port=broker.port, tls=tls)


async def test_a_client_with_its_certificate_talks_to_the_broker_over_tls(
    tls_broker: Mosquitto, authority: Authority
) -> None:
    client = authority.client("gateway-1")
    tls = TlsConfig(ca_file=authority.ca_file, cert_file=client.cert, key_file=client.key)
    sub = MqttClient(config(tls_broker, tls), client_id=unique("tls-sub"))
    sub.subscribe("site/s-1/up/alert", 1)
    pub = MqttClient(config(tls_broker, tls), client_id=unique("tls-pub"))
    await sub.start()
    await pub.start()
    try:
        await sub.wait_connected(10)
        await pub.wait_connected(10)
        await pub.publish("site/s-1/up/alert", b"sos", qos=1)
        message = await sub.messages()
        assert (message.topic, message.payload) == ("site/s-1/up/alert", b"sos")
    finally:
        await pub.close()
        await sub.close()


def _system_ca() -> Path:
    path = ssl.get_default_verify_paths().cafile
    if path is None or not Path(path).exists():
        pytest.skip("no system CA bundle to stand for 'a client without our CA'")
    return Path(path)


async def refused(config: BrokerConfig, caplog: pytest.LogCaptureFixture, logged: str) -> None:
    client = MqttClient(config, client_id=unique("tls-bad"))
    await client.start()
    try:
        with pytest.raises(TimeoutError):
            await client.wait_connected(3)
        assert not client.connected
        assert logged in caplog.text
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("case", "logged"),
    [
        ("no client certificate", "closed the connection before accepting it"),
        ("another CA's broker", "CERTIFICATE_VERIFY_FAILED"),
    ],
)
async def test_an_unverified_side_never_connects_and_the_log_says_why(
    tls_broker: Mosquitto, authority: Authority, tmp_path: Path, case: str, logged: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if case == "no client certificate":
        tls = TlsConfig(ca_file=authority.ca_file)
    else:  # the client trusts only another CA, so the broker's certificate fails
        other = Authority(tmp_path / "other", name="other CA")
        client = other.client("gateway-2")
        tls = TlsConfig(ca_file=other.ca_file, cert_file=client.cert, key_file=client.key)
    await refused(config(tls_broker, tls), caplog, logged)


# --- the brokers the tests start (and the demo's): TLS only, the server verified -------------


async def test_a_test_broker_speaks_tls_with_clients_that_trust_our_ca(broker: Mosquitto) -> None:
    assert broker.tls is not None
    client = MqttClient(broker_config(broker), client_id=unique("tls-ok"))
    await client.start()
    try:
        await client.wait_connected(10)
    finally:
        await client.close()


@pytest.mark.parametrize("case", ["plain tcp", "system CAs only", "another CA"])
async def test_a_test_broker_refuses_plain_tcp_and_clients_without_our_ca(
    broker: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    if case == "plain tcp":
        # Mosquitto waits for a TLS ClientHello and drops the MQTT CONNECT it gets instead.
        await refused(config(broker, None), caplog, "closed the connection before accepting")
        return
    if case == "system CAs only":
        ca = _system_ca()
    else:
        other = Authority(tmp_path / "other", name="other CA")
        other.ensure_ca()
        ca = other.ca_file
    await refused(config(broker, TlsConfig(ca_file=ca)), caplog, "CERTIFICATE_VERIFY_FAILED")
