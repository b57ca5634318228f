"""`shouwang demo`: everything comes up, a simulated SOS reaches the API, Ctrl-C leaves nothing."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import paho.mqtt.client as paho
import psutil
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from shouwang.services import free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_demo_shows_an_sos_and_a_covered_camera_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    demo = subprocess.Popen(
        [sys.executable, "-m", "shouwang", "demo", "--dir", str(tmp_path), "--http-port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT,
    )
    try:
        alerts: list[dict[str, object]] = []
        token = None
        deadline = time.monotonic() + 60
        while not alerts and time.monotonic() < deadline:
            assert demo.poll() is None, demo.stdout.read().decode() if demo.stdout else ""
            try:
                if token is None:  # the password the demo generated and printed
                    password = json.loads((tmp_path / "passwords.json").read_text())["demo-police"]
                    token = _login(port, "demo-police", password)
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/api/alerts", headers={"Authorization": f"Bearer {token}"}
                )
                with urllib.request.urlopen(request, timeout=2) as r:
                    alerts = json.load(r)["alerts"]
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.2)
        assert alerts, "no alert reached the dashboard API"
        assert alerts[0]["type"] == "sos"
        assert alerts[0]["device"] == "btn-demo-0001"
        # The gate camera's lens is covered: a tamper alert with its snapshot and clip.
        deadline = time.monotonic() + 180
        evidence: list[dict[str, object]] = []
        while len(evidence) < 2 and time.monotonic() < deadline:
            assert demo.poll() is None, demo.stdout.read().decode() if demo.stdout else ""
            tampers = [a for a in _get(port, token, "/api/alerts?type=tamper")["alerts"]]
            if tampers:
                evidence = _get(port, token, f"/api/alerts/{tampers[0]['id']}")["evidence"]
            time.sleep(1)
        assert sorted(str(e["content_type"]) for e in evidence) == ["image/jpeg", "video/mp4"]
        # The demo's elder has a name, tags and numbers to call, as a real deployment would.
        [elder] = _get(port, token, "/api/residents?ids=r-demo-0001")["residents"]
        assert elder["name"] == "王秀兰（示范）"
        assert elder["tags"] == ["elderly", "living_alone"]
        assert [c["relation"] for c in elder["contacts"]] == ["daughter"]  # police: the first
        # Both brokers speak only TLS, with a certificate of the demo's CA; they run with
        # accounts and ACLs: a client without one is turned away, and the button's account
        # may not speak for the wearable.
        edge = yaml.safe_load((tmp_path / "edge.yaml").read_text())
        cloud = yaml.safe_load((tmp_path / "cloud.yaml").read_text())
        ca = tmp_path / "tls" / "ca.crt"
        assert edge["edge_broker"]["tls"]["ca_file"] == cloud["broker"]["tls"]["ca_file"] == str(ca)
        for broker_port in (edge["edge_broker"]["port"], cloud["broker"]["port"]):
            assert _connack(broker_port) == "closed before CONNACK"  # plain TCP
            assert _connack(broker_port, ca_file=ca) == "Not authorized"
        button_password = (tmp_path / "device-passwords" / "btn-demo-0001.password").read_text()
        assert _connack(edge["edge_broker"]["port"], "btn-demo-0001", button_password.strip(),
                        publish="dev/wear-demo-0001/event",
                        ca_file=ca) == "Success; publish: Not authorized"
        descendants = psutil.Process(demo.pid).children(recursive=True)
        # Two brokers, cloud, edge and its camera worker, button simulator, RTSP server.
        assert len(descendants) >= 7
    finally:
        demo.send_signal(signal.SIGTERM)  # one is enough
        out, _ = demo.communicate(timeout=60)
    assert demo.returncode == 0, out.decode()
    assert "demo stopped" in out.decode()
    assert f"demo-police / {password}" in out.decode()
    assert [p.pid for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []


def _connack(port: int, username: str | None = None, password: str | None = None,
             publish: str | None = None, ca_file: Path | None = None) -> str:
    """The broker's answer to a CONNECT (and to one QoS 1 publish after it), MQTT 5; over
    TLS verified by `ca_file`, plain TCP without."""
    answers: list[str] = []
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    if ca_file is not None:
        client.tls_set(ca_certs=str(ca_file))
    if username is not None:
        client.username_pw_set(username, password)
    client.on_connect = lambda c, u, f, rc, p: answers.append(str(rc))
    client.on_publish = lambda c, u, mid, rc, p: answers.append(f"publish: {rc}")
    client.connect("127.0.0.1", port)
    deadline = time.monotonic() + 10
    published = False
    while time.monotonic() < deadline and len(answers) < (2 if publish else 1):
        if client.loop(0.1) != paho.MQTT_ERR_SUCCESS and not answers:
            return "closed before CONNACK"
        if publish and answers == ["Success"] and not published:
            client.publish(publish, b"{}", qos=1)
            published = True
    client.disconnect()
    return "; ".join(answers)


def _get(port: int, token: str | None, path: str) -> dict[str, object]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=5) as r:
        return dict(json.load(r))


def _login(port: int, username: str, password: str) -> str:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/login", method="POST",
        data=json.dumps({"username": username, "password": password}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as r:
        return str(json.load(r)["token"])
