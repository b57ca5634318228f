"""Start private local servers (Mosquitto, PostgreSQL, VictoriaMetrics) on free loopback ports."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from shouwang.broker_accounts import DYNSEC_FILE


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


@dataclass(frozen=True)
class ListenerTls:
    """The files of a TLS listener, as `shouwang certs` (shouwang/certs.py) issues them."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    # Clients must present a certificate this CA signed (mutual TLS).
    require_certificate: bool = False

    def lines(self) -> list[str]:
        return [
            f"cafile {self.ca_file}",
            f"certfile {self.cert_file}",
            f"keyfile {self.key_file}",
            "tls_version tlsv1.2",  # the minimum: TLS 1.3 is offered, 1.1 and older refused
            *(["require_certificate true"] if self.require_certificate else []),
        ]


def dynamic_security_plugin() -> Path:
    """Mosquitto's dynamic-security plugin, which holds the accounts and their roles."""
    found = sorted(glob.glob("/usr/lib/*/mosquitto_dynamic_security.so"))
    if not found:
        raise ServiceError(
            "mosquitto_dynamic_security.so is not under /usr/lib/*/: it ships in Debian's "
            "`mosquitto` package (2.0 or newer); run `make deps` (apt-get install mosquitto)"
        )
    return Path(found[0])


class Mosquitto:
    """A private Mosquitto broker: own config, own persistence directory, own port.

    With `tls` its one listener speaks only TLS: a plain MQTT client is refused."""

    def __init__(
        self, directory: Path, port: int | None = None, name: str = "broker",
        listener: list[str] | None = None, accounts: Path | None = None,
        tls: ListenerTls | None = None,
    ) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.name = name
        self.tls = tls
        # Further settings of the one listener.
        self.listener = listener or []
        # A directory with the dynamic-security file `shouwang edge|cloud provision` wrote:
        # then no anonymous client, and every account only where its role lets it. The broker
        # reads it when it starts: after a change, `restart()`.
        self.accounts = accounts
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
                    *(self.tls.lines() if self.tls else []),
                    *self.listener,
                    *self._auth(),
                    "persistence true",
                    f"persistence_location {self.directory}/",
                    "autosave_interval 1",
                    # Queued QoS 1 messages for an absent persistent session: bounded, not lost
                    # silently (mosquitto logs drops). Big enough for long outages in tests.
                    "max_queued_messages 100000",
                    "max_inflight_messages 1000",
                    "message_size_limit 1048576",
                    # No Nagle on the broker's side either: an alert is one small packet.
                    "set_tcp_nodelay true",
                    f"log_dest file {self.log_path}",
                    "log_type error",
                    "log_type warning",
                    "log_type notice",
                    "",
                ]
            )
        )
        return conf

    def _auth(self) -> list[str]:
        if self.accounts is None:
            return ["allow_anonymous true"]
        return [
            "allow_anonymous false",
            f"plugin {dynamic_security_plugin()}",
            f"plugin_opt_config_file {self.accounts / DYNSEC_FILE}",
        ]

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


class Postgres:
    """A private PostgreSQL cluster from Debian's binaries, in its own temp dir and port.

    PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres` system
    user (`runuser`); its directory is made under the system temp dir because pytest's and
    most of ours are mode 700. Never the system server on 5432. Trust auth on 127.0.0.1 only.
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.directory: Path | None = None
        self._bin = _postgres_bin()

    @property
    def data_dir(self) -> Path:
        assert self.directory is not None
        return self.directory / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 30.0) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="shouwang-pg-"))
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.directory, user.pw_uid, user.pw_gid)
        self._run(
            "initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust",
            "--encoding=UTF8", "--locale=C.UTF-8",
        )
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c max_connections=200"  # test data: speed over durability
        )
        log_file = self.directory / "postgres.log"
        try:
            self._run("pg_ctl", "-D", str(self.data_dir), "-o", options, "-l", str(log_file),
                      "-w", "-t", str(int(timeout)), "start")
            wait_port("127.0.0.1", self.port, timeout)
        except (ServiceError, subprocess.CalledProcessError) as err:
            log = log_file.read_text() if log_file.exists() else ""
            self.stop()
            raise ServiceError(f"postgres failed to start: {err}\n{log[-2000:]}") from err

    def create_database(self, name: str) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        self._run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-q",
                  "-c", f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.directory is None:
            return
        if (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory = None

    def _run(self, program: str, *args: str) -> None:
        command = [str(self._bin / program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)


def _postgres_bin() -> Path:
    """Debian's newest installed PostgreSQL bin dir (/usr/lib/postgresql/<version>/bin)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name),
    )
    if not found:
        raise ServiceError(
            "PostgreSQL is not installed; run `make deps` (apt-get install postgresql)"
        )
    return Path(found[-1]).parent


class VictoriaMetrics:
    """A private single-node VictoriaMetrics: own storage dir, own port, fresh reads.

    `-search.latencyOffset=0` and `-search.disableCache` make a sample visible to queries as
    soon as it is written (tests and benches read back at once); retention covers test data
    dated years back or ahead.
    """

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        binary = shutil.which("victoria-metrics") or "/usr/bin/victoria-metrics"
        if not Path(binary).exists():
            raise ServiceError(
                "victoria-metrics is not installed; run `make deps` "
                "(apt-get install victoria-metrics)"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        log = (self.directory / "victoria-metrics.log").open("wb")
        self.proc = subprocess.Popen(
            [
                binary,
                f"-storageDataPath={self.directory / 'data'}",
                f"-httpListenAddr=127.0.0.1:{self.port}",
                "-retentionPeriod=100y",
                "-search.latencyOffset=0s",
                "-search.disableCache",
                "-dedup.minScrapeInterval=1ms",
                "-loggerLevel=WARN",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        try:
            wait_port("127.0.0.1", self.port, timeout, self.proc)
        except ServiceError as err:
            self.stop()
            text = (self.directory / "victoria-metrics.log").read_text(errors="replace")
            raise ServiceError(f"victoria-metrics failed: {err}\n{text[-2000:]}") from err

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
