"""Helpers for the people-and-alerts tests: alerts in two jurisdictions, users, an HTTP client."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import aiohttp

from cloud.server import CloudServer
from shouwang.protocol import make_envelope

PASSWORD = "correct horse battery"
# Two police stations, each covering one community; one grid worker in each community.
STATION_A, STATION_B = "d1/s1/c-a", "d1/s2/c-b"
GRID_A, GRID_B = f"{STATION_A}/g1", f"{STATION_B}/g1"
HOME_A = f"{GRID_A}/b1/u1/f1/101"
HOME_B = f"{GRID_B}/b1/u1/f1/101"
_seq = itertools.count(1)


async def add_alert(
    cloud: CloudServer, *, location: str = HOME_A, resident: str = "r-a1", type: str = "sos",
    severity: str = "critical", ts: int | None = None, detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    n = next(_seq)
    env = make_envelope(
        site="s-1", device=f"dev-{n}", kind="alert", ts=ts or 1_795_000_000_000 + n,
        body={
            "type": type, "severity": severity, "subject": f"resident:{resident}",
            "dedup_key": f"resident:{resident}|{type}", "life_safety": True,
            "source_id": f"m-{n}", "resident": resident, "location": location,
            "detail": detail or {"event": "press", "profile": "emergency_button"},
        },
    )
    assert cloud.store is not None
    alert = await cloud.store.insert_alert(env)
    assert alert is not None
    return alert


async def add_people(cloud: CloudServer) -> None:
    """police-a/-b, worker-a/-b, family-a (resident r-a1), family-b (r-b1), admin."""
    access = cloud.access
    assert access is not None
    await access.add_user("police-a", PASSWORD, "police", locations=[STATION_A])
    await access.add_user("police-b", PASSWORD, "police", locations=[STATION_B])
    await access.add_user("worker-a", PASSWORD, "worker", locations=[GRID_A])
    await access.add_user("worker-b", PASSWORD, "worker", locations=[GRID_B])
    await access.add_user("family-a", PASSWORD, "family", residents=["r-a1"])
    await access.add_user("family-b", PASSWORD, "family", residents=["r-b1"])
    await access.add_user("admin", PASSWORD, "admin")


@dataclass
class Reply:
    status: int
    body: Any
    raw: bytes


class Client:
    """One logged-in user talking to the API with a bearer token."""

    def __init__(self, http: aiohttp.ClientSession, cloud: CloudServer, token: str) -> None:
        self.http = http
        self.base = f"http://127.0.0.1:{cloud.http_port}"
        self.headers = {"Authorization": f"Bearer {token}"}

    @classmethod
    async def login(
        cls, http: aiohttp.ClientSession, cloud: CloudServer, username: str,
        password: str = PASSWORD,
    ) -> Client:
        async with http.post(
            f"http://127.0.0.1:{cloud.http_port}/api/login",
            json={"username": username, "password": password},
        ) as res:
            assert res.status == 200, await res.text()
            return cls(http, cloud, (await res.json())["token"])

    async def get(self, path: str) -> Reply:
        async with self.http.get(self.base + path, headers=self.headers) as res:
            raw = await res.read()
            return Reply(res.status, await res.json() if raw else None, raw)

    async def post(self, path: str, body: Any = None) -> Reply:
        """A JSON body always (`{}` when there is nothing to say): the API takes no other."""
        body = {} if body is None else body
        async with self.http.post(self.base + path, json=body, headers=self.headers) as res:
            raw = await res.read()
            return Reply(res.status, await res.json() if raw else None, raw)

    async def ids(self, query: str = "") -> list[str]:
        reply = await self.get(f"/api/alerts?{query}")
        assert reply.status == 200, reply.body
        return [a["id"] for a in reply.body["alerts"]]
