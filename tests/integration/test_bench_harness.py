"""bench/harness.py: the benches measure what is deployed (brokers that speak TLS only, every
part and every bench client verifying them with the CA) and stop, saying why, when a part
cannot connect, instead of hanging or timing nothing."""

from __future__ import annotations

import json
import socket
import sys
import urllib.request
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from shouwang.certs import Authority
from shouwang.services import ListenerTls, Mosquitto, free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from harness import System, broker_config, paho_connect, tls_broker

pytestmark = pytest.mark.integration

# MQTT 3.1.1 CONNECT, client id "plain", clean session, keepalive 30 s.
PLAIN_CONNECT = bytes([0x10, 17, 0, 4, *b"MQTT", 4, 2, 0, 30, 0, 5, *b"plain"])
CONNACK = 0x20


def health(port: int) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
        return dict(json.load(r))


def answer_to_plain_mqtt(broker: Mosquitto) -> bytes:
    """The broker's first answer to a CONNECT in clear: a plain listener's CONNACK; from a
    TLS listener a TLS alert, or nothing as it closes or resets the connection."""
    with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as sock:
        sock.sendall(PLAIN_CONNECT)
        try:
            return sock.recv(4)
        except ConnectionResetError:
            return b""


def test_system_brokers_speak_tls_only_and_every_part_connects_verifying_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOUWANG_LOG_LEVEL", "WARNING")  # System sets it for its children
    system = System([{"id": "btn-harness-1", "profile": "emergency_button"}],
                    work=tmp_path / "bench")
    try:
        system.start()
        edge = health(system.edge_http)
        assert edge["edge_broker"] is True
        assert edge["cloud_broker"] is True
        assert health(system.http_port)["broker_connected"] is True
        for broker in (system.edge_broker, system.cloud_broker):
            assert broker_config(broker).tls is not None
            assert not answer_to_plain_mqtt(broker).startswith(bytes([CONNACK]))
            client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-harness-test")
            paho_connect(client, broker)
            assert client.is_connected()
            client.disconnect()
            client.loop_stop()
    finally:
        system.stop()


def test_a_bench_client_that_cannot_verify_the_broker_stops_the_bench(tmp_path: Path) -> None:
    broker = tls_broker(tmp_path / "broker", "edge broker")
    broker.start()
    try:
        # The same port, verified with another deployment's CA: a broker we must not trust.
        stranger = Authority(tmp_path / "other-ca", name="Someone else's CA")
        issued = stranger.server("broker", ["127.0.0.1"])
        impostor = Mosquitto(tmp_path / "unused", port=broker.port, name="edge broker",
                             tls=ListenerTls(stranger.ca_file, issued.cert, issued.key))
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-harness-test")
        with pytest.raises(SystemExit, match=rf"edge broker.*{broker.port}.*certificate"):
            paho_connect(client, impostor)
    finally:
        broker.stop()


def test_start_stops_the_bench_when_the_edge_never_reaches_a_broker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOUWANG_LOG_LEVEL", "WARNING")
    nobody = free_port()
    system = System([{"id": "btn-harness-1", "profile": "emergency_button"}],
                    edge_extra={"cloud_broker": {"port": nobody}}, work=tmp_path / "bench")
    try:
        with pytest.raises(SystemExit, match=r"edge.*cloud_broker.*edge\.log"):
            system.start(timeout=5)
    finally:
        system.stop()
