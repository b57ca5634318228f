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


# A thrown_object alert as the edge raises it from a façade camera's event (edge/rules/events.py,
# the fields flattened by edge/video/throw/detector.py `wire_fields`).
THROW_DATA = {
    "confidence": 0.93, "floor": 12, "column": 3,
    "candidates": "12:3:0.71 13:3:0.18 11:3:0.06",
    "track": "3040,616,221;3080,616,222;3120,617,226;3160,617,233;3200,618,243;3240,618,256",
}


async def add_throw(
    cloud: CloudServer, *, location: str = f"{GRID_A}/b1", device: str = "cam-facade",
    data: dict[str, Any] | None = None, ts: int | None = None,
) -> dict[str, Any]:
    n = next(_seq)
    # `data` overrides THROW_DATA; a None drops the field (floor unknown: no floor, no column).
    fields = {k: v for k, v in {**THROW_DATA, **(data or {})}.items() if v is not None}
    why = {"rule": "thrown_object", "type": "event_alert", "event": "thrown_object",
           "data": fields}
    env = make_envelope(
        site="s-1", device=device, kind="alert", ts=ts or 1_795_000_000_000 + n,
        body={
            "type": "thrown_object", "severity": "critical", "subject": f"device:{device}",
            "dedup_key": f"device:{device}|thrown_object", "life_safety": True,
            "source_id": f"m-{n}", "resident": None, "location": location,
            "detail": {"who": {"device": device, "kind": "camera", "resident": None, "tags": [],
                               "location": location},
                       "what": "camera reported thrown_object", "why": why,
                       "evidence": [f"m-{n}"]},
        },
    )
    assert cloud.store is not None
    alert = await cloud.store.insert_alert(env)
    assert alert is not None
    return alert
