"""What the benchmarks share: brokers, a cloud and an edge as separate processes, metrics."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shouwang.certs import Authority  # noqa: E402
from shouwang.services import ListenerTls, Mosquitto, free_port, wait_port  # noqa: E402

BENCH_PASSWORD = "bench-password-not-secret"


def bench_tls(work: Path) -> ListenerTls:
    """A CA and a loopback broker certificate in `work` (`shouwang certs`), for a bench whose
    broker listens with TLS only, as deployed. Clients verify with the listener's `ca_file`
    (a config's `tls: {ca_file}`; paho's `tls_set(ca_certs=...)`)."""
    authority = Authority(work / "tls", name="Shouwang bench CA")
    issued = authority.server("bench-broker", ["127.0.0.1", "localhost"])
    return ListenerTls(authority.ca_file, issued.cert, issued.key)


async def auth_headers(http_port: int) -> dict[str, str]:
    """`Authorization` header of the bench admin."""
    async with aiohttp.ClientSession() as http, http.post(
        f"http://127.0.0.1:{http_port}/api/login",
        json={"username": "bench", "password": BENCH_PASSWORD},
    ) as r:
        return {"Authorization": f"Bearer {(await r.json())['token']}"}


class System:
    """Edge broker, cloud broker, cloud and edge processes in a scratch directory."""

    def __init__(self, devices: list[dict[str, Any]], edge_extra: dict[str, Any] | None = None):
        self.work = Path(tempfile.mkdtemp(prefix="shouwang-bench-"))
        self.edge_broker = Mosquitto(self.work / "edge-broker", name="edge broker")
        self.cloud_broker = Mosquitto(self.work / "cloud-broker", name="cloud broker")
        self.http_port = free_port()
        self.edge_http = free_port()
        self.devices = devices
        self.edge_extra = edge_extra or {}
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, edge: bool = True) -> None:
        """Brokers, cloud and (unless `edge` is False: the caller runs it) the edge."""
        os.environ["SHOUWANG_LOG_LEVEL"] = "WARNING"
        self.edge_broker.start()
        self.cloud_broker.start()
        (self.work / "cloud.yaml").write_text(
            yaml.safe_dump(
                {
                    "broker": {"port": self.cloud_broker.port},
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
                    "edge_broker": {"port": self.edge_broker.port},
                    "cloud_broker": {"port": self.cloud_broker.port},
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
        if not edge:
            return
        self.procs.append(
            self.spawn("edge", ["edge", "run", "--config", str(self.work / "edge.yaml")])
        )
        wait_port("127.0.0.1", self.edge_http, 30, self.procs[-1])

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
