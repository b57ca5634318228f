"""Start local servers (Mosquitto now; more later) on free loopback ports, for demo and tests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path


class ServiceError(Exception):
    """A local server could not be started."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(
    host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServiceError(f"process exited with code {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise ServiceError(f"nothing listens on {host}:{port} after {timeout} s")


class Mosquitto:
    """A private Mosquitto broker: own config, own persistence directory, own port."""

    def __init__(self, directory: Path, port: int | None = None, name: str = "broker") -> None:
        self.directory = directory
        self.port = port or free_port()
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.directory / "mosquitto.log"

    def write_config(self) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "mosquitto.conf"
        conf.write_text(
            "\n".join(
                [
                    *self._run_as(),
                    f"listener {self.port} 127.0.0.1",
                    "allow_anonymous true",
                    "persistence true",
                    f"persistence_location {self.directory}/",
                    "autosave_interval 1",
                    # Queued QoS 1 messages for an absent persistent session: bounded, not lost
                    # silently (mosquitto logs drops). Big enough for long outages in tests.
                    "max_queued_messages 100000",
                    "max_inflight_messages 1000",
                    "message_size_limit 1048576",
                    f"log_dest file {self.log_path}",
                    "log_type error",
                    "log_type warning",
                    "log_type notice",
                    "",
                ]
            )
        )
        return conf

    def _run_as(self) -> list[str]:
        """Started as root, mosquitto drops to the `mosquitto` user, which cannot write
        persistence or logs in our root-owned (often mode 700) directories: sessions then
        silently do not survive a restart. These brokers are private to the demo and the
        tests, so they stay root; production brokers use the configs in deploy/."""
        return ["user root"] if os.geteuid() == 0 else []

    def start(self, timeout: float = 10.0) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise ServiceError(
                "mosquitto is not installed; run `make deps` (apt-get install mosquitto)"
            )
        conf = self.write_config()
        self.proc = subprocess.Popen(
            [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_port("127.0.0.1", self.port, timeout, self.proc)
        except ServiceError as err:
            self.stop()
            log = self.log_path.read_text() if self.log_path.exists() else ""
            raise ServiceError(f"mosquitto ({self.name}) failed: {err}\n{log[-2000:]}") from err

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()
