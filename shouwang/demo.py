"""`make demo`: two brokers, the cloud, an edge gateway, a button and a camera on this machine.

Everything runs as child processes that die with the demo: Ctrl-C (or SIGTERM) stops them in
order, and on Linux each child is also told to exit if the demo itself is killed.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from cloud.provision import (
    SITE_BROKER_PASSWORD,
    SITE_EVIDENCE_TOKEN,
    SITE_TOKENS_FILE,
    worker_accounts,
)
from edge.provision import EDGE_ACCOUNT, EDGE_PASSWORD_FILE
from shouwang.certs import Authority, CertError
from shouwang.services import ListenerTls, Mosquitto, ServiceError, free_port, wait_port

log = logging.getLogger(__name__)

DEMO_SITE = "demo-site-1"
DEMO_LOCATION = "示范区/示范街道/阳光社区/网格01/3号楼/2单元/5层/502"
DEMO_SITE_LOCATION = "示范区/示范街道/阳光社区"
# A made-up elder (name and numbers are fictional; 100… is no real Chinese number), so every
# screen of the demo shows what a real deployment would: a name, tags, numbers to call.
DEMO_RESIDENT = {"id": "r-demo-0001", "name": "王秀兰（示范）", "location": DEMO_LOCATION,
                 "tags": ["elderly", "living_alone"], "birth_year": 1942,
                 "phone": "100 0000 0001",
                 "contacts": [{"name": "李华（示范）", "relation": "daughter",
                               "phone": "100 0000 0002"},
                              {"name": "张阿姨（示范）", "relation": "neighbour",
                               "phone": "100 0000 0003"}]}
DEMO_DEVICES = [
    {
        "id": "btn-demo-0001",
        "profile": "emergency_button",
        "resident": "r-demo-0001",
        "location": DEMO_LOCATION,
    },
    {
        "id": "wear-demo-0001",
        "profile": "wearable",
        "resident": "r-demo-0001",
        "location": DEMO_LOCATION,
    },
]
PRESS_EVERY_S = 20
DEMO_CAMERA = "cam-demo-gate"
DEMO_CAMERA_LOCATION = "示范区/示范街道/阳光社区/网格01/东门"
# Once a minute the camera's lens is covered for 25 s: a tamper alert with a clip and a
# snapshot, then its recovery, so the camera half of the system shows in the demo.
COVER_EVERY_S = 60
COVER_FOR_S = 25
FIRST_COVER_S = 30  # after the camera has learned its view
# Demo accounts: an admin, and a police station covering the demo street.
# Each with a (fictional) display name, what the screens show: "网格员 赵敏（示范） 已出发".
DEMO_USERS = [
    {"username": "demo-admin", "role": "admin", "locations": [], "residents": [],
     "display_name": "系统管理员（示范）"},
    {"username": "demo-police", "role": "police", "locations": ["示范区/示范街道"],
     "residents": [], "display_name": "值班民警 陈刚（示范）"},
    {"username": "demo-worker", "role": "worker", "locations": ["示范区/示范街道/阳光社区/网格01"],
     "residents": [], "display_name": "赵敏（示范）"},
    {"username": "demo-family", "role": "family", "locations": [], "residents": ["r-demo-0001"],
     "display_name": "李华（示范）"},
]
# The community office's number, shown on the family page as the one to call (fictional).
DEMO_COMMUNITY = {"path": DEMO_SITE_LOCATION, "label": "阳光社区（示范）",
                  "phone": "100 0000 0110"}
# The demo's escalation: notifications go to cloud.log (no delivery channel in the demo).
# A face match goes to its duty person only until confirmed (as deploy/examples/escalation.yaml).
DEMO_ESCALATION = {"policies": {
    "*": {"stages": [
        {"name": "family", "after_s": 0, "notify": ["family"]},
        {"name": "grid-worker", "after_s": 60, "notify": ["worker"]},
        {"name": "police", "after_s": 120, "notify": ["police"]},
    ]},
    "watchlist_hit": {
        "stages": [{"name": "duty-worker", "after_s": 0, "notify": ["worker"]}],
        "confirmed": [{"name": "family-and-worker", "after_s": 0, "notify": ["family", "worker"]}],
        "responders": ["worker", "admin"],
    },
    "watchlist_hit/police": {
        "stages": [{"name": "duty-officer", "after_s": 0, "notify": ["police"]}],
        "confirmed": [{"name": "station", "after_s": 0, "notify": ["police"]}],
        "responders": ["police", "admin"],
    },
}}


def _die_with_parent() -> None:
    """In the child: ask Linux to send SIGTERM when the demo process dies (even by kill -9)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Demo:
    def __init__(self, directory: Path, http_port: int) -> None:
        self.dir = directory.resolve()
        self.http_port = http_port
        self.brokers: list[Mosquitto] = []
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.passwords: dict[str, str] = {}
        self.camera: Any = None  # simulators.camera.CameraSimulator
        self._stopping = False

    def run(self) -> int:
        if not self._port_free(self.http_port):
            print(
                f"demo: port {self.http_port} is taken; stop what uses it or run "
                f"`shouwang demo --http-port N`",
                file=sys.stderr,
            )
            return 1
        # Both explicitly: a demo started in the background inherits SIGINT as ignored.
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        try:
            self._start()
            logins = "\n    ".join(f"{u} / {p}" for u, p in self.passwords.items())
            print(
                f"\n  守望 Shouwang demo is up.\n"
                f"  Dashboard: http://127.0.0.1:{self.http_port}\n"
                f"  Log in as (user name / password):\n    {logins}\n"
                f"  (passwords kept in {self.dir}/passwords.json)\n"
                f"  Edge broker: 127.0.0.1:{self.brokers[0].port}   "
                f"Cloud broker: 127.0.0.1:{self.brokers[1].port}\n"
                f"  A simulated button (btn-demo-0001) presses SOS every {PRESS_EVERY_S} s.\n"
                f"  A simulated gate camera ({DEMO_CAMERA}, rtsp://127.0.0.1:{self.camera.port}/"
                f"{DEMO_CAMERA}) has its lens covered for {COVER_FOR_S} s once a minute:\n"
                f"  a tamper alert with a snapshot and a clip, then its recovery.\n"
                f"  Both brokers refuse anonymous clients; each device and the site have\n"
                f"  their own accounts and roles (docs/provisioning.md).\n"
                f"  Both speak TLS only, with certificates of the demo's CA ({self.ca_file}).\n"
                f"  Press one yourself: .venv/bin/shouwang sim button "
                f"--port {self.brokers[0].port} --device btn-demo-0001 --password-file "
                f"{self.device_password('btn-demo-0001')} --ca-file {self.ca_file}\n"
                f"  Logs: {self.dir}/*.log   Stop: Ctrl-C\n",
                flush=True,
            )
            self._watch()
        except KeyboardInterrupt:
            pass
        except ServiceError as err:
            print(f"demo: {err}", file=sys.stderr)
            return 1
        finally:
            self._stop()
        return 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    @staticmethod
    def _port_free(port: int) -> bool:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
        return True

    def _start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        # Both brokers as in production: no anonymous client, an account per device and per
        # site, the roles `shouwang edge|cloud provision` write (docs/provisioning.md).
        edge_accounts = self.dir / "edge-broker-accounts"
        cloud_accounts = self.dir / "cloud-broker-accounts"
        edge_broker = Mosquitto(self.dir / "edge-broker", name="edge broker",
                                accounts=edge_accounts, tls=self._certificate("edge-broker"))
        cloud_broker = Mosquitto(self.dir / "cloud-broker", name="cloud broker",
                                 accounts=cloud_accounts, tls=self._certificate("cloud-broker"))
        tls = {"ca_file": str(self.ca_file)}
        site_files = self._provision_cloud(cloud_accounts)
        database_url = f"sqlite+aiosqlite:///{self.dir}/cloud.sqlite"
        cloud_cfg = {
            "broker": {"port": cloud_broker.port, "tls": tls},
            "broker_accounts": worker_accounts(cloud_accounts).model_dump(
                mode="json", exclude_none=True),
            "database_url": database_url,
            "http": {"host": "127.0.0.1", "port": self.http_port},
            "worker_id": "demo-cloud-1",
            "escalation": {"file": str(self.dir / "escalation.yaml")},
            "evidence": {
                "dir": str(self.dir / "evidence"),
                "site_tokens_file": str(cloud_accounts / SITE_TOKENS_FILE),
            },
        }
        (self.dir / "escalation.yaml").write_text(yaml.safe_dump(DEMO_ESCALATION))
        camera_password = self.dir / "camera.pw"
        if not camera_password.exists():
            camera_password.touch(mode=0o600)
            camera_password.write_text(secrets.token_urlsafe(12))
        self.camera = self._start_camera(camera_password.read_text().strip())
        edge_http_port = free_port()
        edge_cfg = {
            "site": DEMO_SITE,
            "edge_broker": {"port": edge_broker.port, "username": EDGE_ACCOUNT,
                            "password_file": str(edge_accounts / EDGE_PASSWORD_FILE), "tls": tls},
            "cloud_broker": {"port": cloud_broker.port, "username": DEMO_SITE,
                             "password_file": str(site_files / SITE_BROKER_PASSWORD), "tls": tls},
            "data_dir": str(self.dir / "edge"),
            "http": {"host": "127.0.0.1", "port": edge_http_port},
            "devices": DEMO_DEVICES,
            "evidence": {"url": f"http://127.0.0.1:{self.http_port}",
                         "token_file": str(site_files / SITE_EVIDENCE_TOKEN)},
            "cameras": [{
                "id": DEMO_CAMERA, "url": f"rtsp://127.0.0.1:{self.camera.port}/{DEMO_CAMERA}",
                "username": "viewer", "password_file": str(camera_password),
                "location": DEMO_CAMERA_LOCATION, "stall_timeout_s": 20,
                "privacy_masks": [[[0, 0], [160, 0], [160, 90], [0, 90]]],
                "record": {"pre_s": 5, "post_s": 10},
            }],
        }
        self._provision_edge(edge_cfg, edge_accounts)
        for broker in (edge_broker, cloud_broker):
            broker.start()
            self.brokers.append(broker)
        (self.dir / "cloud.yaml").write_text(yaml.safe_dump(cloud_cfg, allow_unicode=True))
        asyncio.run(self._register_site(database_url))
        self.passwords = asyncio.run(self._demo_users(database_url))
        (self.dir / "edge.yaml").write_text(yaml.safe_dump(edge_cfg, allow_unicode=True))

        self._spawn("cloud", ["cloud", "run", "--config", str(self.dir / "cloud.yaml")])
        self._wait_listening("cloud", self.http_port)
        self._spawn("edge", ["edge", "run", "--config", str(self.dir / "edge.yaml")])
        self._wait_listening("edge", edge_http_port)
        self._spawn(
            "sim-button",
            [
                "sim",
                "button",
                "--port",
                str(edge_broker.port),
                "--device",
                "btn-demo-0001",
                "--password-file",
                str(self.device_password("btn-demo-0001")),
                "--every",
                str(PRESS_EVERY_S),
                "--ca-file",
                str(self.ca_file),
            ],
        )

    @property
    def ca_file(self) -> Path:
        return self.dir / "tls" / "ca.crt"

    def _certificate(self, name: str) -> ListenerTls:
        """The broker's certificate from the demo's own CA in `{dir}/tls`, issued by
        `shouwang certs` (shouwang/certs.py): kept across runs while valid."""
        authority = Authority(self.dir / "tls", name="Shouwang demo CA")
        try:
            issued = authority.server(name, ["127.0.0.1", "localhost"])
        except CertError as err:
            raise ServiceError(f"certificates in {self.dir / 'tls'}: {err}") from err
        return ListenerTls(authority.ca_file, issued.cert, issued.key)

    def device_password(self, device: str) -> Path:
        """Where the demo keeps a simulated device's broker password (a real installer
        writes the printed password into the device instead)."""
        return self.dir / "device-passwords" / f"{device}.password"

    def _provision_edge(self, edge_cfg: dict[str, Any], accounts: Path) -> None:
        from edge.config import EdgeConfig
        from edge.provision import mqtt_devices, provision
        from shouwang.broker_accounts import write_private

        config = EdgeConfig.model_validate(edge_cfg)
        # A device whose password the demo no longer has gets a new one.
        lost = [d for d in mqtt_devices(config) if not self.device_password(d).exists()]
        issued = provision(config, accounts, rotate=lost).issued
        for device, password in issued.items():
            write_private(self.device_password(device), password + "\n")

    def _provision_cloud(self, accounts: Path) -> Path:
        from cloud.provision import provision, site_dir

        files = site_dir(accounts, DEMO_SITE)
        complete = all((files / f).exists() for f in (SITE_BROKER_PASSWORD, SITE_EVIDENCE_TOKEN))
        provision(accounts, DEMO_SITE, rotate=not complete)
        return files

    async def _register_site(self, database_url: str) -> None:
        """The demo site, its places, resident and devices (the camera too) in the cloud's
        registry, as an admin imports them: the cloud takes an alert's place and person from
        there, and refuses devices it does not know (docs/security.md)."""
        from cloud.admin import import_rows
        from cloud.store import Store
        from shouwang.clock import SystemClock

        devices = [*DEMO_DEVICES, {"id": DEMO_CAMERA, "profile": "camera",
                                   "location": DEMO_CAMERA_LOCATION}]
        rows: dict[str, list[dict[str, Any]]] = {
            "sites": [{"id": DEMO_SITE, "name": "阳光社区 (demo)",
                       "location": DEMO_SITE_LOCATION}],
            "locations": [DEMO_COMMUNITY, {"path": DEMO_LOCATION},
                          {"path": DEMO_CAMERA_LOCATION}],
            "residents": [DEMO_RESIDENT],
            "devices": [{"site": DEMO_SITE, **d} for d in devices],
        }
        store = await Store.connect(database_url)
        try:
            now = SystemClock().now_ms()
            for kind, data in rows.items():  # idempotent: a second run updates nothing
                await import_rows(store, kind, data, now, name=f"demo {kind}")
        finally:
            await store.close()

    async def _demo_users(self, database_url: str) -> dict[str, str]:
        """The demo accounts, with passwords generated once and kept in the demo directory."""
        from cloud.access.config import AccessConfig
        from cloud.access.users import Access, UserError
        from cloud.store import Store
        from shouwang.clock import SystemClock

        path = self.dir / "passwords.json"
        passwords: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
        store = await Store.connect(database_url)
        try:
            access = Access(store.engine, SystemClock(), AccessConfig())
            for user in DEMO_USERS:
                name = str(user["username"])
                password = passwords.setdefault(name, secrets.token_urlsafe(12))
                try:
                    await access.add_user(name, password, str(user["role"]), actor="demo",
                                          locations=list(user["locations"]),
                                          residents=list(user["residents"]),
                                          display_name=str(user["display_name"]))
                except UserError:  # from an earlier run: make it match the file
                    await access.set_password(name, password, actor="demo")
                    await access.set_display_name(name, str(user["display_name"]), actor="demo")
        finally:
            await store.close()
        path.touch(mode=0o600)
        os.chmod(path, 0o600)
        path.write_text(json.dumps(passwords, indent=1))
        return passwords

    def _wait_listening(self, name: str, port: int) -> None:
        try:
            wait_port("127.0.0.1", port, 30, self.children[-1][1])
        except ServiceError as err:
            raise ServiceError(f"{name}: {err}; see {self.dir}/{name}.log") from err

    def _spawn(self, name: str, args: list[str]) -> None:
        if args[1] == "run":  # a daemon: its JSON log rotates; raw output (a crash) aside
            args = [*args, "--log-file", str(self.dir / f"{name}.log")]
            out = self.dir / f"{name}.out"
        else:
            out = self.dir / f"{name}.log"
        logfile = open(out, "ab")  # noqa: SIM115 - closed with the child
        proc = subprocess.Popen(
            [sys.executable, "-m", "shouwang", *args],
            stdout=logfile,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        logfile.close()
        self.children.append((name, proc))
        log.info("started %s (pid %d)", name, proc.pid)

    def _start_camera(self, password: str) -> Any:
        """The simulated gate camera (GStreamer's RTSP server under Debian's python3)."""
        from simulators.camera import CameraSimulator, CameraSpec

        spec = CameraSpec(id=DEMO_CAMERA, width=1280, height=720, username="viewer",
                          password=password)
        return CameraSimulator([spec], log_path=self.dir / "sim-camera.log").start()

    def _watch(self) -> None:
        covered_until: float | None = None
        next_cover = time.monotonic() + FIRST_COVER_S
        while True:
            for name, proc in self.children:
                if proc.poll() is not None:
                    raise ServiceError(
                        f"{name} exited with code {proc.returncode}; see {self.dir}/{name}.log"
                    )
            now = time.monotonic()
            if self.camera is not None and covered_until is None and now >= next_cover:
                log.info("demo: covering the camera's lens for %d s", COVER_FOR_S)
                self.camera.fault(DEMO_CAMERA, "cover")
                covered_until = now + COVER_FOR_S
            elif covered_until is not None and now >= covered_until:
                self.camera.restore(DEMO_CAMERA, "cover")
                covered_until, next_cover = None, now + COVER_EVERY_S
            time.sleep(0.5)

    def _stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        # A second Ctrl-C or SIGTERM must not interrupt the stop and orphan children.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for name, proc in reversed(self.children):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    log.warning("%s did not stop in 10 s; killing it", name)
                    proc.kill()
                    proc.wait()
        if self.camera is not None:
            self.camera.stop()
        for broker in reversed(self.brokers):
            broker.stop()
        print("demo stopped", flush=True)
