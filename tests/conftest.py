"""Shared fixtures: real Mosquitto brokers on free ports, edge and cloud in-process, leak checks."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from aiohttp import web

from cloud.access.config import AccessConfig
from cloud.access.users import Access, UserError
from cloud.admin import import_rows
from cloud.config import CloudConfig
from cloud.server import CloudServer
from cloud.store import Store
from edge.config import DeviceBinding, EdgeConfig, OutboxConfig
from edge.daemon import EdgeDaemon
from edge.rules.config import RulesSettings
from shouwang.certs import Authority
from shouwang.clock import SystemClock
from shouwang.config import BrokerConfig, HttpConfig, TlsConfig
from shouwang.records import Reading
from shouwang.services import ListenerTls, Mosquitto, Postgres, VictoriaMetrics, free_port

# Camera simulator and clip fixtures (`camera_sim`, `camera_clip`), for any test.
pytest_plugins = ("tests.video_fixtures",)

_counter = itertools.count(1)
# asyncio debug mode reports every callback that holds the loop longer than this. On a loaded
# two-core machine scheduling alone stalls the loop for more than half a second, so such stalls
# are listed at the end of the run, not failed: tests never assert wall-clock times. A callback
# holding the loop for BLOCKED_FAIL_S is a bug (a synchronous network call, a sleep), and fails.
SLOW_CALLBACK_S = 0.5
BLOCKED_FAIL_S = 5.0
_stalls: list[tuple[str, float, str]] = []


def load_factor() -> float:
    """How much slower than an idle machine this one runs now (at least 1): the load average
    per core. Deadlines and the blocked-loop limit scale with it, so the suite passes with
    `stress-ng --cpu 2` beside it on two cores, and still catches a real hang when idle."""
    try:
        return max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))
    except OSError:
        return 1.0


def unique(prefix: str) -> str:
    """Ids unique within a test session, so persistent broker sessions never collide."""
    return f"{prefix}-{next(_counter)}-{int(time.time() * 1000) % 100000}"


# --- leak checks ---------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves threads or child processes behind (tasks: `_no_task_leaks`)."""
    if request.node.get_closest_marker("asyncio") is not None:
        request.getfixturevalue("_no_task_leaks")
    me = psutil.Process()
    threads_before = set(threading.enumerate())
    children_before = {p.pid for p in me.children(recursive=True)}
    yield
    deadline = time.monotonic() + 5
    while True:
        threads = [
            t
            for t in threading.enumerate()
            if t not in threads_before and t.is_alive() and not _is_pool_thread(t)
        ]
        children = [
            p for p in me.children(recursive=True) if p.pid not in children_before and _alive(p)
        ]
        if not threads and not children:
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    problems = [f"thread {t.name}" for t in threads] + [
        f"process {p.pid} {' '.join(p.cmdline()[:3])}" for p in children
    ]
    pytest.fail(f"test leaked: {', '.join(problems)}")


def _is_pool_thread(t: threading.Thread) -> bool:
    # asyncio's default executor threads belong to the loop and end with it.
    return t.name.startswith("asyncio_")


def _alive(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


_TOOK = re.compile(r"took (\d+(?:\.\d+)?) seconds")


class _SlowCallbacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        took = _TOOK.search(message)
        if message.startswith("Executing") and took:
            self.records.append((float(took.group(1)), message))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _stalls:
        return
    terminalreporter.section(f"event-loop stalls over {SLOW_CALLBACK_S} s (reported, not failed)")
    for test, seconds, message in sorted(_stalls, key=lambda s: -s[1])[:20]:
        terminalreporter.write_line(f"{seconds:6.2f} s  {test}  {message[:160]}")


@pytest.fixture
async def _no_task_leaks(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Asyncio debug mode on; fail on tasks left running or a callback that blocks the loop."""
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = SLOW_CALLBACK_S
    handler = _SlowCallbacks()
    logging.getLogger("asyncio").addHandler(handler)
    before = asyncio.all_tasks()
    yield
    logging.getLogger("asyncio").removeHandler(handler)
    current = asyncio.current_task()
    leaked: list[asyncio.Task[Any]] = []
    for _ in range(50):
        leaked = [t for t in asyncio.all_tasks() if t not in before and t is not current]
        if not leaked:
            break
        await asyncio.sleep(0.02)
    for task in leaked:
        task.cancel()
    assert not leaked, f"test leaked asyncio tasks: {[t.get_name() for t in leaked]}"
    _stalls.extend((request.node.nodeid, took, message) for took, message in handler.records)
    limit = BLOCKED_FAIL_S * load_factor()
    blocked = [message for took, message in handler.records if took >= limit]
    assert not blocked, f"the event loop was blocked for {limit:.1f} s or more: {blocked}"


# --- brokers -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def broker_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("brokers")


@pytest.fixture(scope="session")
def broker_certs(tmp_path_factory: pytest.TempPathFactory) -> ListenerTls:
    """One CA for the session (`shouwang certs`), and the certificate every test broker
    shows, for 127.0.0.1 and localhost. Clients verify it with `broker_config(b)`."""
    authority = Authority(tmp_path_factory.mktemp("tls"), name="Shouwang test CA")
    issued = authority.server("test-broker", ["127.0.0.1", "localhost"])
    return ListenerTls(authority.ca_file, issued.cert, issued.key)


@pytest.fixture(scope="session")
def _session_broker(broker_dir: Path, broker_certs: ListenerTls) -> Iterator[Mosquitto]:
    broker = Mosquitto(broker_dir / "shared", name="shared test broker", tls=broker_certs)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def broker(_session_broker: Mosquitto) -> Mosquitto:
    """A Mosquitto shared by the session; tests keep apart by unique client and site ids."""
    return _session_broker


@pytest.fixture
def make_broker(
    tmp_path: Path, broker_certs: ListenerTls
) -> Iterator[Callable[..., Mosquitto]]:
    """Private brokers for tests that stop, restart or kill them. `accounts`: the directory
    `shouwang edge|cloud provision` writes (see `with_accounts`); `start=False` leaves the
    start to the test, once it has provisioned them (it is stopped here all the same).
    TLS only, like every test broker; `tls=False` for a plain one."""
    started: list[Mosquitto] = []

    def make(
        name: str, *, accounts: Path | None = None, start: bool = True, tls: bool = True
    ) -> Mosquitto:
        b = Mosquitto(tmp_path / name, name=name, accounts=accounts,
                      tls=broker_certs if tls else None)
        if start:
            b.start()
        started.append(b)
        return b

    yield make
    for b in started:
        b.stop()


# --- databases -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Postgres]:
    """A private PostgreSQL cluster for the session (Debian's binaries, a free port)."""
    server = Postgres()
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty database for this test, once on SQLite and once on PostgreSQL.

    Use it for every test of the SQL store: `async def test_x(database_url: str)` runs twice
    (ids `[sqlite]` and `[postgresql]`). Pass it to `cloud_config(..., database_url=...)` or
    `Store.connect(database_url)`. The PostgreSQL database is one of its own on the session's
    private cluster (`postgres_server`), so tests never see each other's rows.
    """
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/cloud.sqlite"
    server: Postgres = request.getfixturevalue("postgres_server")
    return server.create_database(unique("test").replace("-", "_"))


@pytest.fixture(scope="session")
def victoria_metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaMetrics]:
    """A private VictoriaMetrics for the session; tests keep apart by unique site ids."""
    server = VictoriaMetrics(tmp_path_factory.mktemp("victoria-metrics"))
    server.start()
    yield server
    server.stop()


def broker_config(b: Mosquitto) -> BrokerConfig:
    """How edge, cloud and test clients reach `b`: over TLS, verifying it, when it has TLS."""
    tls = TlsConfig(ca_file=b.tls.ca_file) if b.tls is not None else None
    return BrokerConfig(host="127.0.0.1", port=b.port, tls=tls)


def broker_args(b: Mosquitto) -> list[str]:
    """The same for a simulator run as a process: `--host`, `--port` and `--ca-file`."""
    ca = ["--ca-file", str(b.tls.ca_file)] if b.tls is not None else []
    return ["--host", "127.0.0.1", "--port", str(b.port), *ca]


# Run the tests that offer it (the scenarios' `community`) with brokers that have accounts and
# ACLs, as deployed: SHOUWANG_TEST_BROKER_ACL=1 pytest tests/scenarios
BROKER_ACL = os.environ.get("SHOUWANG_TEST_BROKER_ACL") == "1"


def with_accounts(
    econf: EdgeConfig, cconf: CloudConfig, directory: Path
) -> tuple[EdgeConfig, CloudConfig, Callable[[str], BrokerConfig]]:
    """Provision the site's accounts as an installer does (`shouwang edge provision`, `cloud
    provision`) into `directory/edge-accounts` and `directory/cloud-accounts`; the edge and
    cloud configs with their credentials, and each device's broker config by its id."""
    from cloud import provision as cloud_provision
    from edge import provision as edge_provision

    edge_dir, cloud_dir = directory / "edge-accounts", directory / "cloud-accounts"
    issued = edge_provision.provision(econf, edge_dir).issued
    cloud_provision.provision(cloud_dir, econf.site)
    site_files = cloud_provision.site_dir(cloud_dir, econf.site)
    econf = econf.model_copy(update={
        "edge_broker": econf.edge_broker.model_copy(update={
            "username": edge_provision.EDGE_ACCOUNT,
            "password_file": edge_dir / edge_provision.EDGE_PASSWORD_FILE}),
        "cloud_broker": econf.cloud_broker.model_copy(update={
            "username": econf.site,
            "password_file": site_files / cloud_provision.SITE_BROKER_PASSWORD}),
    })
    cconf = cconf.model_copy(
        update={"broker_accounts": cloud_provision.worker_accounts(cloud_dir)})
    secrets = directory / "device-passwords"
    secrets.mkdir(parents=True, exist_ok=True)
    for device, password in issued.items():
        (secrets / device).write_text(password)

    def device(device_id: str) -> BrokerConfig:
        return econf.edge_broker.model_copy(
            update={"username": device_id, "password_file": secrets / device_id}
        )

    return econf, cconf, device


# --- edge and cloud in-process -------------------------------------------------------------

BUTTON = "btn-0001"
WEARABLE = "wear-0001"
LOCATION = "test-district/test-street/test-community/grid-1/bldg-1/unit-1/floor-1/101"


def edge_config(
    edge_broker: Mosquitto, cloud_broker: Mosquitto, data_dir: Path, site: str | None = None
) -> EdgeConfig:
    return EdgeConfig(
        site=site or unique("site"),
        edge_broker=broker_config(edge_broker),
        cloud_broker=broker_config(cloud_broker),
        data_dir=data_dir,
        http=HttpConfig(port=0),
        # A small reserve: hundreds of test gateways must not hold 4 MiB each of the disk.
        outbox=OutboxConfig(reserve_mib=0.25),
        devices=[
            DeviceBinding(id=BUTTON, profile="emergency_button", resident="r-1", location=LOCATION),
            DeviceBinding(id=WEARABLE, profile="wearable", resident="r-1", location=LOCATION),
        ],
    )


def every_press_alerts(config: EdgeConfig, directory: Path) -> EdgeConfig:
    """The site with the SOS debounce off, for tests that count each press as its own alert."""
    rules = directory / "no-debounce-rules.yaml"
    rules.write_text(
        "override:\n"
        "  emergency_button.press: {repeat_after_s: 0}\n"
        "  emergency_button.long_press: {repeat_after_s: 0}\n",
        encoding="utf-8",
    )
    return config.model_copy(update={"rules": RulesSettings(file=rules)})


def cloud_config(
    cloud_broker: Mosquitto,
    data_dir: Path,
    worker: str | None = None,
    *,
    database_url: str | None = None,
    **changes: Any,
) -> CloudConfig:
    """A cloud on `cloud_broker`; SQLite in `data_dir` unless `database_url` is given.

    Sites register themselves (`require_registered_sites: false`, a lab cloud): most tests
    make up a site per test. Tests of the production default pass it true, as do the
    scenarios (tests/scenarios/site.py), which register their site as an admin would."""
    return CloudConfig(
        **{"require_registered_sites": False, **changes},
        broker=broker_config(cloud_broker),
        database_url=database_url or f"sqlite+aiosqlite:///{data_dir}/cloud.sqlite",
        http=HttpConfig(port=0),
        worker_id=worker or unique("cloud"),
    )


def api_config(database_url: str, worker: str | None = None, **extra: Any) -> CloudConfig:
    """A cloud that serves the API only (no broker): for API, access and escalation tests."""
    return CloudConfig.model_validate({
        "broker": {}, "database_url": database_url, "http": {"port": 0},
        "worker_id": worker or unique("cloud"), "ingest": False,
        "require_registered_sites": False, **extra,
    })


async def register_site(store: Store, econf: EdgeConfig, location: str | None = None) -> None:
    """Import the site of `econf` with its devices (cameras too), their places and residents
    into the cloud's registry, as an admin does with `shouwang cloud import`; a device bound
    to no place is put at the site's `location`."""
    now = SystemClock().now_ms()
    places = sorted({d.location for d in econf.devices if d.location} | (
        {location} if location else set()))
    residents: dict[str, str | None] = {}
    for d in econf.devices:
        if d.resident is not None:
            residents.setdefault(d.resident, d.location)
    rows: dict[str, list[dict[str, Any]]] = {
        "sites": [{"id": econf.site, "location": location}],
        "locations": [{"path": p} for p in places],
        "residents": [{"id": r, "name": r, "location": where} for r, where in residents.items()],
        "devices": [
            {"site": econf.site, "id": d.id, "profile": d.profile, "resident": d.resident,
             "location": d.location or (location if d.resident is None else None)}
            for d in econf.devices
        ],
    }
    for kind, data in rows.items():
        if data:
            await import_rows(store, kind, data, now, name=f"{econf.site} {kind}")


@contextlib.asynccontextmanager
async def running_edge(config: EdgeConfig) -> AsyncIterator[EdgeDaemon]:
    daemon = EdgeDaemon(config)
    await daemon.start()
    try:
        await daemon.edge_mqtt.wait_connected(10)
        yield daemon
    finally:
        await daemon.stop()


@contextlib.asynccontextmanager
async def running_cloud(config: CloudConfig, **kwargs: Any) -> AsyncIterator[CloudServer]:
    server = CloudServer(config, **kwargs)
    await server.start()
    try:
        assert server.access is not None
        await ensure_test_admin(server.access)
        await server.wait_connected(10)
        yield server
    finally:
        await server.stop()


# --- logging in: every test that reads the API does so as this admin ------------------------

TEST_ADMIN, TEST_PASSWORD = "test-admin", "test-admin-password"
_tokens: weakref.WeakKeyDictionary[Any, dict[int, str]] = weakref.WeakKeyDictionary()


async def ensure_test_admin(access: Access) -> None:
    with contextlib.suppress(UserError):  # already there (a restarted cloud)
        await access.add_user(TEST_ADMIN, TEST_PASSWORD, "admin", actor="test")


async def ensure_test_admin_in(database_url: str) -> None:
    """For a cloud that runs as a separate process: the admin exists before it starts."""
    store = await Store.connect(database_url)
    try:
        await ensure_test_admin(Access(store.engine, SystemClock(), AccessConfig()))
    finally:
        await store.close()


async def login(http: Any, port: int | None, username: str, password: str) -> str:
    async with http.post(
        f"http://127.0.0.1:{port}/api/login", json={"username": username, "password": password}
    ) as res:
        assert res.status == 200, await res.text()
        return str((await res.json())["token"])


async def auth(http: Any, port: int | None) -> dict[str, str]:
    """`Authorization` header of the test admin on the cloud at `port` (one login per session)."""
    assert port is not None
    tokens = _tokens.setdefault(http, {})
    if port not in tokens:
        tokens[port] = await login(http, port, TEST_ADMIN, TEST_PASSWORD)
    return {"Authorization": f"Bearer {tokens[port]}"}


async def api_alerts(http: Any, port: int | None) -> list[dict[str, Any]]:
    """Every alert the cloud API lists, newest first, across all pages."""
    alerts: list[dict[str, Any]] = []
    cursor = None
    headers = await auth(http, port)
    while True:
        query = "limit=500" + (f"&cursor={cursor}" if cursor is not None else "")
        async with http.get(
            f"http://127.0.0.1:{port}/api/alerts?{query}", headers=headers
        ) as res:
            assert res.status == 200, await res.text()
            page = await res.json()
        alerts += page["alerts"]
        cursor = page["next_cursor"]
        if cursor is None:
            return alerts


async def api_alerts_at_least(http: Any, port: int | None, n: int) -> list[dict[str, Any]] | None:
    """The alerts once there are at least `n` (for `eventually`), else None."""
    alerts = await api_alerts(http, port)
    return alerts if len(alerts) >= n else None


async def eventually(
    check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02
) -> Any:
    """Poll `check` until it returns something truthy; fail with its last value. The
    deadline stretches with the machine's load (`load_factor`)."""
    timeout *= load_factor()
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last value {value!r})")
        await asyncio.sleep(interval)


class Recorder:
    """Collects callbacks and lets a test wait for a condition without polling a clock."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self.availability: list[tuple[str, bool, str]] = []
        self._changed = asyncio.Event()

    def on_reading(self, reading: Reading) -> None:
        self.readings.append(reading)
        self._changed.set()

    def on_availability(self, device: str, available: bool, reason: str) -> None:
        self.availability.append((device, available, reason))
        self._changed.set()

    def of(self, device: str) -> list[Reading]:
        return [r for r in self.readings if r.device == device]

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()


async def life_safety_awaiting_confirmation(edge: Any, n: int) -> bool:
    """`n` life-safety rows are held, all published: the broker has them, the cloud has not
    confirmed them yet."""
    held = (await edge.outbox.depth()).get(0, 0)
    unsent = await edge.outbox.next_batch(n + 1, priorities=[0])
    return held == n and not unsent


@pytest.fixture
async def webhook() -> AsyncIterator[tuple[int, list[dict[str, Any]]]]:
    """A local endpoint speaking what Apprise's json:// sends (an SMS gateway stands in),
    on POST /notify; yields its port and what it received."""
    received: list[dict[str, Any]] = []

    async def notify(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/notify", notify)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield port, received
    finally:
        await runner.cleanup()


def split_retry(reason: str) -> tuple[str, float]:
    """A notification attempt's reason "busy; retry 2 in 1.375 s" -> ("busy; retry 2", 1.375).

    The wait is jittered (shouwang/backoff.py), so tests read it rather than assume it.
    """
    head, sep, tail = reason.rpartition(" in ")
    assert sep, reason
    assert tail.endswith(" s"), reason
    return head, float(tail.removesuffix(" s"))
