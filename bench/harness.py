"""What the benchmarks share: brokers, a cloud and an edge as separate processes, metrics."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import paho.mqtt.client as paho
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shouwang.certs import Authority  # noqa: E402
from shouwang.config import BrokerConfig, TlsConfig  # noqa: E402
from shouwang.services import ListenerTls, Mosquitto, free_port, wait_port  # noqa: E402

BENCH_PASSWORD = "bench-password-not-secret"
EDGE_BROKERS = ["edge_broker", "cloud_broker"]  # the edge's /healthz keys
CONNECT_TIMEOUT_S = 10.0  # a bench client's TLS handshake and CONNACK on loopback


def bench_tls(work: Path) -> ListenerTls:
    """A CA and a loopback broker certificate in `work` (`shouwang certs`), for a bench whose
    broker listens with TLS only, as deployed. Clients verify with the listener's `ca_file`
    (a config's `tls: {ca_file}`; paho's `tls_set(ca_certs=...)`)."""
    authority = Authority(work / "tls", name="Shouwang bench CA")
    issued = authority.server("bench-broker", ["127.0.0.1", "localhost"])
    return ListenerTls(authority.ca_file, issued.cert, issued.key)


def tls_broker(directory: Path, name: str) -> Mosquitto:
    """A bench broker as deployed: TLS only, its CA and certificate beside it in `directory`."""
    return Mosquitto(directory, name=name, tls=bench_tls(directory))


def _ca_file(broker: Mosquitto) -> Path:
    if broker.tls is None:
        raise SystemExit(f"bench: {broker.name} has no TLS; start it with tls_broker() or "
                         "bench_tls(), as deployed")
    return broker.tls.ca_file


def broker_config(broker: Mosquitto) -> BrokerConfig:
    """How the edge, the cloud and a bench's own `MqttClient` reach `broker`: over TLS,
    verifying it with the bench's CA (the `tls: {ca_file}` of edge.yaml and cloud.yaml)."""
    return BrokerConfig(host="127.0.0.1", port=broker.port,
                        tls=TlsConfig(ca_file=_ca_file(broker)))


def broker_yaml(broker: Mosquitto) -> dict[str, Any]:
    """`broker_config` as written in a YAML config: host, port and `tls: {ca_file}`."""
    return broker_config(broker).model_dump(mode="json", exclude_unset=True)


def broker_args(broker: Mosquitto) -> list[str]:
    """The same for a simulator run as a process: `--host`, `--port` and `--ca-file`."""
    return ["--host", "127.0.0.1", "--port", str(broker.port),
            "--ca-file", str(_ca_file(broker))]


def paho_connect(
    client: paho.Client, broker: Mosquitto, timeout: float = CONNECT_TIMEOUT_S, **connect: Any
) -> None:
    """Connect a bench's bare paho client to `broker` over TLS, verifying its certificate, and
    start its network thread; return once the broker has accepted it (CONNACK). A client that
    cannot connect stops the bench (SystemExit): paho's thread would otherwise retry quietly
    while the bench waited for messages that never come. `connect`: paho's `connect()`
    arguments (`clean_start`, `properties`)."""
    where = f"{broker.name} at 127.0.0.1:{broker.port}"
    client.tls_set(ca_certs=str(_ca_file(broker)))
    try:
        client.connect("127.0.0.1", broker.port, **connect)
    except ssl.SSLCertVerificationError as err:
        raise SystemExit(f"bench: {where}: its certificate does not verify with "
                         f"{_ca_file(broker)}: {err.verify_message}") from err
    except OSError as err:  # refused, reset, or a TLS handshake that failed otherwise
        raise SystemExit(f"bench: cannot connect to {where} over TLS: {err}") from err
    client.loop_start()
    deadline = time.monotonic() + timeout
    while not client.is_connected():
        if time.monotonic() > deadline:
            client.loop_stop()
            client.disconnect()
            raise SystemExit(f"bench: {where} did not accept the bench's client within "
                             f"{timeout:.0f} s (see {broker.log_path})")
        time.sleep(0.01)


async def auth_headers(http_port: int) -> dict[str, str]:
    """`Authorization` header of the bench admin."""
    async with aiohttp.ClientSession() as http, http.post(
        f"http://127.0.0.1:{http_port}/api/login",
        json={"username": "bench", "password": BENCH_PASSWORD},
    ) as r:
        return {"Authorization": f"Bearer {(await r.json())['token']}"}


class System:
    """Edge broker, cloud broker (both TLS only, as deployed), cloud and edge processes in a
    scratch directory. Bench clients reach the brokers with `broker_config`, `paho_connect`
    and `broker_args`, all verifying the scratch CA."""

    def __init__(
        self, devices: list[dict[str, Any]], edge_extra: dict[str, Any] | None = None,
        work: Path | None = None,
    ):
        if work is not None:
            work.mkdir(parents=True, exist_ok=True)
        self.work = work or Path(tempfile.mkdtemp(prefix="shouwang-bench-"))
        # TLS only, as deployed: the cloud, the edge and every bench client verify both
        # brokers with this CA (one certificate serves both: they are on this machine).
        self.tls = bench_tls(self.work)
        self.edge_broker = Mosquitto(self.work / "edge-broker", name="edge broker", tls=self.tls)
        self.cloud_broker = Mosquitto(self.work / "cloud-broker", name="cloud broker",
                                      tls=self.tls)
        self.http_port = free_port()
        self.edge_http = free_port()
        self.devices = devices
        self.edge_extra = edge_extra or {}
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, edge: bool = True, timeout: float = 60.0) -> None:
        """Brokers, cloud and (unless `edge` is False: the caller runs it) the edge; returns
        once each has connected to its brokers, or stops the bench (SystemExit) after
        `timeout` s."""
        os.environ["SHOUWANG_LOG_LEVEL"] = "WARNING"
        self.edge_broker.start()
        self.cloud_broker.start()
        (self.work / "cloud.yaml").write_text(
            yaml.safe_dump(
                {
                    "broker": broker_yaml(self.cloud_broker),
                    "http": {"port": self.http_port},
                    "database_url": f"sqlite+aiosqlite:///{self.work}/cloud.sqlite",
                    "worker_id": "bench-cloud",
                    # Lab mode: the bench's site and devices are not imported (the registry
                    # adds one indexed lookup per message, and per alert for its device).
                    "require_registered_sites": False,
                }
            )
        )
        (self.work / "edge.yaml").write_text(
            yaml.safe_dump(
                {
                    "site": "bench-site",
                    "edge_broker": broker_yaml(self.edge_broker),
                    "cloud_broker": broker_yaml(self.cloud_broker),
                    "data_dir": str(self.work / "edge"),
                    "http": {"port": self.edge_http},
                    "devices": self.devices,
                    **self.edge_extra,
                }
            )
        )
        # The API needs a login: one bench admin, password in the scratch directory.
        (self.work / "password").write_text(BENCH_PASSWORD)
        subprocess.run(
            [sys.executable, "-m", "shouwang", "cloud", "user", "add", "--config",
             str(self.work / "cloud.yaml"), "--username", "bench", "--role", "admin",
             "--password-file", str(self.work / "password")],
            check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
        )
        self.procs.append(
            self.spawn("cloud", ["cloud", "run", "--config", str(self.work / "cloud.yaml")])
        )
        wait_port("127.0.0.1", self.http_port, 30, self.procs[-1])
        self.wait_connected("cloud", self.http_port, ["broker_connected"], timeout)
        if not edge:
            return
        self.procs.append(
            self.spawn("edge", ["edge", "run", "--config", str(self.work / "edge.yaml")])
        )
        wait_port("127.0.0.1", self.edge_http, 30, self.procs[-1])
        self.wait_connected("edge", self.edge_http, EDGE_BROKERS, timeout)

    def wait_connected(self, name: str, port: int, keys: list[str], timeout: float) -> None:
        """Until `name`'s /healthz says true for each of `keys` (its broker connections);
        SystemExit naming what is not connected and the log after `timeout` s. A part that
        cannot reach a broker keeps retrying: the bench would measure it timing out."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                    health = json.load(r)
            except (OSError, ValueError):
                health = {}
            down = [k for k in keys if health.get(k) is not True]
            if not down:
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: the {name} is not connected ({', '.join(down)}) after "
                                 f"{timeout:.0f} s; see {self.work / f'{name}.log'}")
            time.sleep(0.1)

    def spawn_load(self, rate: float, devices: int, seconds: float) -> subprocess.Popen[bytes]:
        """`simulators.load` on the edge broker (over TLS, verifying it); its output in
        load.log. Stopped with the rest by `stop()`."""
        proc = self.spawn(
            "load",
            [*broker_args(self.edge_broker), "--rate", str(rate), "--devices", str(devices),
             "--seconds", str(seconds)],
            module="simulators.load",
        )
        self.procs.append(proc)
        return proc

    def check_exit(self, proc: subprocess.Popen[bytes], name: str) -> None:
        """Stop the bench if a helper process `name` failed (it could not connect, say):
        what was measured meanwhile was not what the table would claim."""
        code = proc.poll()
        if code not in (None, 0):
            raise SystemExit(f"bench: the {name} exited with code {code}; see "
                             f"{self.work / f'{name}.log'}")

    def spawn(
        self, name: str, args: list[str], module: str = "shouwang"
    ) -> subprocess.Popen[bytes]:
        with open(self.work / f"{name}.log", "ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", module, *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=15)
        self.edge_broker.stop()
        self.cloud_broker.stop()


async def metric(port: int, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels`."""
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as r:
        text = await r.text()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]
