"""Bench: a camera event's road to a person, frame → alert, through the real system.

    .venv/bin/python bench/camera_alert.py --covers 20

One simulated 720p25 camera (the GStreamer RTSP server looping a camera-like H.264 clip,
`simulators.camera.make_clip`) watched by the edge daemon as deployed: its camera worker
process, the edge broker, the pipeline, rules, outbox and uplink to the cloud broker, the
cloud, the dashboard WebSocket. The lens is covered (`cover` fault) `--covers` times; each
time the tamper alert is timed, the cover taken off, and the camera's all-clear resolves it.

The clock starts at the frame: the event's `ts`, the worker's clock when it decoded the frame
health judged covered. Three arrivals, all on this machine's clock:
- edge broker: the camera event on `dev/{camera}/event` (the baseline, in the same run: the
  worker's analysis of that frame and one broker hop);
- cloud broker: the alert on `site/{site}/up/alert` (the edge's pipeline, rules, outbox and
  uplink added);
- WebSocket: the alert on a logged-in dashboard's `/api/ws` (the cloud's ingest, store and
  push added): what a duty officer sees.

Health judges one frame a second and is set to raise at once (`raise_after_s: 0`; the
daemon's default waits 10 s on purpose), so cover → event is up to a second of waiting for
the next judgement on top of the road; it is printed apart.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from harness import (  # type: ignore[import-not-found]  # noqa: E402
    System,
    auth_headers,
    paho_connect,
    pct,
)

from shouwang.services import Mosquitto  # noqa: E402
from simulators.camera import CameraSimulator, CameraSpec, make_clip  # noqa: E402

CAMERA = "cam-bench"
SITE = "bench-site"
HEALTH = {"learn_s": 2, "occluded": {"raise_after_s": 0, "clear_after_s": 0}}


class Heard:
    """Arrival times (ms, this machine's clock) of messages on one broker's topics."""

    def __init__(self, broker: Mosquitto, topic: str, name: str) -> None:
        self.messages: list[tuple[float, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{name}")
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_message = self._message
        paho_connect(self.client, broker)

    def _message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        arrived = time.time() * 1000
        try:
            env = orjson.loads(msg.payload)
        except orjson.JSONDecodeError:
            return
        with self._lock:
            self.messages.append((arrived, env))

    def heard(self) -> list[tuple[float, dict[str, Any]]]:
        """(arrival ms, envelope) of every message so far: a copy, taken under the lock (the
        client's thread appends meanwhile)."""
        with self._lock:
            return list(self.messages)

    def find(self, match: Any) -> tuple[float, dict[str, Any]] | None:
        with self._lock:
            for arrived, env in self.messages:
                if match(env):
                    return arrived, env
        return None

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


async def until(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        await asyncio.sleep(0.02)
    raise SystemExit(f"bench: {what}: not within {timeout:.0f} s")


class Board:
    """A logged-in dashboard's WebSocket, read all along: every alert pushed, with its arrival
    time (ms, this machine's clock)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.alerts: list[tuple[float, dict[str, Any]]] = []
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise SystemExit(f"bench: the dashboard's WebSocket ended: {msg.type!r} "
                                 f"{msg.data!r} {msg.extra!r}")
            data = orjson.loads(msg.data)
            if data.get("type") in ("alert", "alert_updated"):
                self.alerts.append((time.time() * 1000, data["alert"]))
        raise SystemExit(f"bench: the dashboard's WebSocket closed ({self.ws.close_code})")

    def find(self, match: Any) -> tuple[float, dict[str, Any]] | None:
        if self.task.done():
            self.task.result()
        return next(((t, a) for t, a in self.alerts if match(a)), None)


async def covers(sim: CameraSimulator, system: System, edge: Heard, cloud: Heard,
                 n: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"edge": [], "cloud": [], "ws": [], "cover": []}
    headers = await auth_headers(system.http_port)
    base = f"http://127.0.0.1:{system.http_port}"
    async with aiohttp.ClientSession() as http, \
            http.ws_connect(f"{base}/api/ws", headers=headers) as ws:
        first = await ws.receive_json(timeout=30)
        assert first["type"] == "snapshot", first
        board = Board(ws)
        seen: set[str] = {a["id"] for a in first.get("alerts", [])}
        # The camera streams and health has learned its view (learn_s) before the first cover.
        await until("camera telemetry", lambda: edge.find(
            lambda e: e.get("device") == CAMERA), 120)
        await asyncio.sleep(4)
        for _ in range(n):
            since = time.time() * 1000
            sim.fault(CAMERA, "cover")

            def tamper(since: float = since) -> tuple[float, dict[str, Any]] | None:
                return edge.find(lambda e: e["body"].get("event") == "tamper"
                                 and e["ts"] >= since - 1000)

            arrived_edge, event = await until("tamper event", tamper, 60)
            frame_ms = float(event["ts"])
            arrived_ws, alert = await until("tamper alert on the WebSocket", lambda: board.find(
                lambda a: a.get("type") == "tamper" and a.get("state") == "open"
                and a["id"] not in seen), 60)
            seen.add(alert["id"])
            up = await until("alert on the cloud broker", lambda a=alert: cloud.find(
                lambda e: e.get("body", {}).get("id") == a["id"]
                or e.get("id") == a["id"]), 30)
            out["edge"].append(arrived_edge - frame_ms)
            out["cloud"].append(up[0] - frame_ms)
            out["ws"].append(arrived_ws - frame_ms)
            out["cover"].append(frame_ms - since)
            sim.restore(CAMERA)
            # The view came back: the camera's own all-clear resolves the alert.
            await until("the alert resolved", lambda i=alert["id"]: board.find(
                lambda a: a["id"] == i and a["state"] == "resolved"), 60)
            await asyncio.sleep(2)  # the gateway hears of it (down/alert) before the next cover
        board.task.cancel()
    return out


def row(name: str, values: list[float]) -> str:
    return (f"| {name} | {len(values)} | {statistics.median(values):.0f} | "
            f"{pct(values, 95):.0f} | {max(values):.0f} |")


async def run(args: argparse.Namespace) -> None:
    clip = make_clip(Path(tempfile.gettempdir()) / "shouwang-bench-clips", seconds=10)
    sim = CameraSimulator([CameraSpec(id=CAMERA, kind="file", file=clip)])
    sim.start()
    system = System([], edge_extra={"cameras": [{
        "id": CAMERA, "url": sim.url(CAMERA), "location": "bench/street/community/gate",
        "health": HEALTH,
    }]})
    edge = cloud = None
    try:
        system.start()
        edge = Heard(system.edge_broker, f"dev/{CAMERA}/#", "edge")
        cloud = Heard(system.cloud_broker, f"site/{SITE}/up/alert", "cloud")
        load0 = os.getloadavg()[0]
        out = await covers(sim, system, edge, cloud, args.covers)
        load1 = os.getloadavg()[0]
    finally:
        for heard in (edge, cloud):
            if heard is not None:
                heard.close()
        system.stop()
        sim.stop()
    print(f"\nCamera tamper, frame → alert, ms ({args.covers} covers; {os.cpu_count()} cores; "
          f"load {load0:.2f} → {load1:.2f})\n")
    print("| arrival (clock from the judged frame's decode) | n | p50 | p95 | max |")
    print("|---|---|---|---|---|")
    print(row("baseline: camera event on the edge broker", out["edge"]))
    print(row("alert on the cloud broker (edge pipeline, outbox, uplink)", out["cloud"]))
    print(row("alert on the dashboard WebSocket", out["ws"]))
    print(row("cover → judged frame (health judges once a second)", out["cover"]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--covers", type=int, default=20)
    asyncio.run(run(p.parse_args()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
