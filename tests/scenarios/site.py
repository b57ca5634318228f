"""A whole community on real parts for the scenarios: two brokers, an edge, a cloud, people.

Devices publish to the gateway's Mosquitto; the edge daemon and the cloud run in this process
on their own clocks; people act through the HTTP API as themselves. Each scenario plays a
person's day through it and waits on conditions, never on the wall clock.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from cloud.config import CloudConfig
from cloud.evidence import EvidenceConfig as CloudEvidenceConfig
from cloud.evidence import hash_token
from cloud.server import CloudServer
from edge.config import EdgeConfig
from edge.daemon import EdgeDaemon
from edge.evidence import EvidenceConfig as EdgeEvidenceConfig
from shouwang.clock import Clock
from shouwang.config import BrokerConfig, HttpConfig
from shouwang.mqtt import MqttClient
from shouwang.protocol import device_topic, make_envelope
from shouwang.services import Mosquitto, free_port
from tests.conftest import (
    BROKER_ACL,
    BUTTON,
    LOCATION,
    api_alerts,
    broker_config,
    cloud_config,
    edge_config,
    ensure_test_admin,
    register_site,
    unique,
    with_accounts,
)
from tests.integration.people import PASSWORD, Client

COMMUNITY = "/".join(LOCATION.split("/")[:3])  # where the gateway is registered
GRID = "/".join(LOCATION.split("/")[:4])
STATION = "/".join(LOCATION.split("/")[:2])
# Who lives it: the grid's worker, the station's duty officer, the elder's daughter.
PEOPLE = (
    ("worker-li", "worker", {"locations": [GRID]}),
    ("police-wang", "police", {"locations": [STATION]}),
    ("daughter-r1", "family", {"residents": ["r-1"]}),
)


@dataclass
class Site:
    edge: EdgeDaemon
    cloud: CloudServer
    http: aiohttp.ClientSession
    edge_broker: Mosquitto
    cloud_broker: Mosquitto
    device: MqttClient
    cloud_config: CloudConfig
    cloud_kwargs: dict[str, Any] = field(default_factory=dict)
    clients: dict[str, Client] = field(default_factory=dict)
    cloud_running: bool = True
    # With broker accounts and ACLs: each device's broker config, and its own connection.
    device_broker: Callable[[str], BrokerConfig] | None = None
    devices: dict[str, MqttClient] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.cloud.http_port}/"

    async def stop_cloud(self) -> None:
        """The cloud goes down (a crash, a deploy); brokers, edge and devices carry on."""
        self.cloud_running = False
        await self.cloud.stop()

    async def start_cloud(self) -> None:
        """The cloud comes back on the same database, address and broker."""
        self.cloud = CloudServer(self.cloud_config, **self.cloud_kwargs)
        await self.cloud.start()
        self.cloud_running = True
        await self.cloud.wait_connected(10)

    async def send(
        self, device: str, body: dict[str, Any], *, kind: str = "event", ts: int | None = None
    ) -> str:
        """A device message, published once the gateway's broker took it; its id."""
        env = make_envelope(site=None, device=device, kind=kind, body=body, ts=ts)
        client = await self._client_of(device)
        await client.publish(device_topic(device, kind), env.to_bytes(), qos=1)
        return env.id

    async def _client_of(self, device: str) -> MqttClient:
        """One connection speaks for every device on an open broker; with ACLs each device
        speaks with its own account."""
        if self.device_broker is None:
            return self.device
        client = self.devices.get(device)
        if client is None:
            client = MqttClient(self.device_broker(device), client_id=unique(device))
            self.devices[device] = client
            await client.start()
            await client.wait_connected(10)
        return client

    async def press(self, device: str = "btn-0001", ts: int | None = None) -> str:
        return await self.send(device, {"event": "press"}, ts=ts)

    async def alerts(self, type_: str | None = None) -> list[dict[str, Any]]:
        found = await api_alerts(self.http, self.cloud.http_port)
        return [a for a in found if type_ is None or a["type"] == type_]

    async def as_(self, username: str) -> Client:
        if username not in self.clients:
            self.clients[username] = await Client.login(self.http, self.cloud, username)
        return self.clients[username]

    async def act(self, username: str, alert_id: str, action: str, **body: Any) -> Any:
        reply = await (await self.as_(username)).post(f"/api/alerts/{alert_id}/{action}", body)
        assert reply.status == 200, (action, reply.body)
        return reply.body

    async def edge_holds(self, alert_id: str) -> bool:
        return any(e.alert_id == alert_id for e in self.edge.rules.book.open.values())


@contextlib.asynccontextmanager
async def community(
    make_broker: Callable[..., Mosquitto],
    tmp_path: Path,
    *,
    edge_clock: Clock | None = None,
    cloud_clock: Clock | None = None,
    change_edge: Callable[[EdgeConfig], EdgeConfig] = lambda c: c,
    change_cloud: Callable[[CloudConfig], CloudConfig] = lambda c: c,
    evidence: bool = False,
    acl: bool = BROKER_ACL,
    **cloud_kwargs: Any,
) -> AsyncIterator[Site]:
    """The community; `evidence=True` gives the gateway an upload token the cloud knows;
    `acl=True` runs both brokers with the accounts and ACLs `shouwang edge|cloud provision`
    write (default: SHOUWANG_TEST_BROKER_ACL=1). The cloud runs as deployed: it takes
    envelopes only from registered sites and devices, and the community is registered (its
    site, places, residents and devices) before the gateway starts, as an admin imports
    them."""
    accounts = tmp_path / "accounts"
    edge_broker = make_broker("edge", accounts=accounts / "edge-accounts" if acl else None,
                              start=not acl)
    cloud_broker = make_broker("cloud", accounts=accounts / "cloud-accounts" if acl else None,
                               start=not acl)
    port = free_port()  # its own (not 0): a restarted cloud is where the open boards left it
    econf = edge_config(edge_broker, cloud_broker, tmp_path / "edge")
    cconf = cloud_config(cloud_broker, tmp_path, require_registered_sites=True).model_copy(
        update={"http": HttpConfig(port=port)})
    if evidence:
        econf, cconf = _with_evidence(econf, cconf, tmp_path, port)
    econf, cconf = change_edge(econf), change_cloud(cconf)
    device_broker: Callable[[str], BrokerConfig] | None = None
    device_config = broker_config(edge_broker)
    if acl:
        econf, cconf, device_broker = with_accounts(econf, cconf, accounts)
        device_config = device_broker(BUTTON)
        edge_broker.start()
        cloud_broker.start()
    kwargs = {"clock": cloud_clock, **cloud_kwargs}
    cloud = CloudServer(cconf, **kwargs)
    await cloud.start()
    device = MqttClient(device_config, client_id=unique("device"))
    site: Site | None = None
    edge: EdgeDaemon | None = None
    try:
        edge = EdgeDaemon(econf, clock=edge_clock)
        assert cloud.access is not None
        assert cloud.store is not None
        await register_site(cloud.store, econf, location=COMMUNITY)
        await ensure_test_admin(cloud.access)
        for name, role, scope in PEOPLE:
            await cloud.access.add_user(name, PASSWORD, role, **scope)
        await cloud.wait_connected(10)
        await edge.start()
        await edge.edge_mqtt.wait_connected(10)
        await edge.cloud_mqtt.wait_connected(10)
        await device.start()
        await device.wait_connected(10)
        async with aiohttp.ClientSession() as http:
            site = Site(edge, cloud, http, edge_broker, cloud_broker, device, cconf, kwargs,
                        device_broker=device_broker)
            if acl:
                site.devices[BUTTON] = device
            yield site
    finally:
        if site is not None:
            for client in site.devices.values():
                if client is not device:
                    await client.close()
        await device.close()
        if edge is not None:
            await edge.stop()
        if site is None:
            await cloud.stop()
        elif site.cloud_running:
            await site.cloud.stop()


def _with_evidence(
    econf: EdgeConfig, cconf: CloudConfig, tmp_path: Path, port: int
) -> tuple[EdgeConfig, CloudConfig]:
    token = "a-long-random-site-token-for-tests"
    token_file = tmp_path / "site.token"
    token_file.write_text(token + "\n")
    tokens = tmp_path / "site_tokens.yaml"
    tokens.write_text(yaml.safe_dump({econf.site: hash_token(token)}))
    econf = econf.model_copy(update={"evidence": EdgeEvidenceConfig(
        url=f"http://127.0.0.1:{port}", token_file=token_file)})  # type: ignore[arg-type]
    cconf = cconf.model_copy(update={
        "evidence": CloudEvidenceConfig(dir=tmp_path / "blobs", site_tokens_file=tokens),
    })
    return econf, cconf
