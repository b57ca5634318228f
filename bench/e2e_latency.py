"""Press → WebSocket latency through the real system, alone and under telemetry load.

Starts two Mosquitto brokers (TLS only), the cloud and the edge as separate processes (as
deployed), then presses a simulated button N times and times each press until its alert arrives on a
dashboard WebSocket. The baseline, measured in the same run, is one raw broker hop: a paho
subscriber on the edge broker receiving the same press.

    .venv/bin/python bench/e2e_latency.py --presses 200 --load-rate 2000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness import (  # type: ignore[import-not-found]  # noqa: E402
    System,
    auth_headers,
    broker_config,
    metric,
    paho_connect,
    pct,
)

from shouwang.mqtt import MqttClient  # noqa: E402
from shouwang.protocol import device_topic, make_envelope, site_up_topic  # noqa: E402
from shouwang.services import Mosquitto  # noqa: E402

LOAD_DEVICES = 100
WARM_UP = 10


def button(i: int) -> str:
    # One button per press: an elder's second press within the debounce window, or while her
    # alert is open, is folded into that alert and would never reach the board as a new one.
    return f"btn-bench-{i:04d}"


class Hop:
    """A bare paho subscriber timing when each press passes a broker, keyed by the press's
    envelope id: on the edge broker the press itself (the baseline, one raw hop), on the cloud
    broker the alert the edge sent on for it (where the time of the whole path goes)."""

    def __init__(
        self, broker: Mosquitto, client_id: str, topic: str, press_id: Callable[[Any], str]
    ):
        self.arrivals: dict[str, float] = {}
        self._press_id = press_id
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.on_message = self._on_message
        paho_connect(self.client, broker)
        self.client.subscribe(topic, qos=1)

    def _on_message(self, client: paho.Client, userdata: object, m: paho.MQTTMessage) -> None:
        now = time.perf_counter()
        with contextlib.suppress(ValueError, KeyError, TypeError):
            self.arrivals[self._press_id(json.loads(m.payload))] = now

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def raw_hop(edge: Mosquitto) -> Hop:
    return Hop(edge, "bench-raw", device_topic("+", "event"), lambda env: env["id"])


def uplink_hop(cloud: Mosquitto) -> Hop:
    return Hop(
        cloud, "bench-uplink-hop", site_up_topic("+", "alert"),
        lambda env: env["body"]["source_id"],
    )


async def presses(
    edge: Mosquitto, http_port: int, buttons: range, gap_s: float, raw: Hop, up: Hop
) -> tuple[list[float], list[float], list[float]]:
    device = MqttClient(broker_config(edge), client_id="bench-button")
    await device.start()
    try:
        await device.wait_connected(10)
    except TimeoutError:
        await device.close()
        raise SystemExit(f"bench: the button did not connect to {edge.name} "
                         f"at 127.0.0.1:{edge.port} over TLS in 10 s") from None
    e2e: list[float] = []
    hop: list[float] = []
    uplink: list[float] = []
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(
            f"http://127.0.0.1:{http_port}/api/ws", headers=await auth_headers(http_port)
        ) as ws,
    ):
        first = await ws.receive_json(timeout=10)
        assert first["type"] == "snapshot"
        for i in buttons:
            env = make_envelope(site=None, device=button(i), kind="event", body={"event": "press"})
            payload = env.to_bytes()
            t0 = time.perf_counter()
            await device.publish(device_topic(button(i), "event"), payload)
            try:
                while True:
                    msg = await ws.receive_json(timeout=30)
                    if msg["type"] == "alert" and msg["alert"]["source_id"] == env.id:
                        break
            except TimeoutError:
                raise SystemExit(
                    f"press {env.id} of {button(i)}: no alert on the board in 30 s"
                ) from None
            e2e.append(time.perf_counter() - t0)
            await asyncio.sleep(0.05)
            if env.id in raw.arrivals:
                hop.append(raw.arrivals.pop(env.id) - t0)
            if env.id in up.arrivals:
                uplink.append(up.arrivals.pop(env.id) - t0)
            await asyncio.sleep(gap_s)
    await device.close()
    return e2e, hop, uplink


def row(name: str, values: list[float]) -> str:
    if not values:
        return f"| {name} | 0 | - | - | - | - |"
    ms = [v * 1000 for v in values]
    return (
        f"| {name} | {len(ms)} | {pct(ms, 50):.1f} | {pct(ms, 95):.1f} | "
        f"{pct(ms, 99):.1f} | {max(ms):.1f} |"
    )


async def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--presses", type=int, default=200)
    ap.add_argument("--gap", type=float, default=0.02, help="seconds between presses")
    ap.add_argument(
        "--load-rate", type=float, default=2000, help="telemetry msgs/s in the loaded run"
    )
    args = ap.parse_args()

    n = args.presses
    total = WARM_UP + 2 * n
    devices = [
        {"id": button(i), "profile": "emergency_button", "resident": f"r-bench-{i:04d}"}
        for i in range(total)
    ]
    devices += [{"id": f"wear-load-{i:04d}", "profile": "wearable"} for i in range(LOAD_DEVICES)]
    system = System(devices)
    try:
        system.start()
        await asyncio.sleep(1.0)  # let both MQTT sessions settle
        edge = system.edge_broker
        raw = raw_hop(edge)
        up = uplink_hop(system.cloud_broker)
        warm_up = range(WARM_UP)
        await presses(edge, system.http_port, warm_up, args.gap, raw, up)  # not reported
        raw.arrivals.clear()
        up.arrivals.clear()
        idle = range(WARM_UP, WARM_UP + n)
        alone, hop_alone, up_alone = await presses(
            edge, system.http_port, idle, args.gap, raw, up
        )

        seconds = args.presses * (args.gap + 0.06) + 30
        load = system.spawn_load(args.load_rate, LOAD_DEVICES, seconds)
        await asyncio.sleep(2.0)
        system.check_exit(load, "load")
        busy = range(WARM_UP + n, total)
        loaded, hop_loaded, up_loaded = await presses(
            edge, system.http_port, busy, args.gap, raw, up
        )
        # Still sending, or done with no error: the loaded rows had their load.
        system.check_exit(load, "load")
        raw.stop()
        up.stop()
        telemetry = await metric(system.edge_http, "shouwang_messages_in_total", kind="telemetry")
        load.terminate()
        load.wait()

        cores = os.cpu_count()
        print(f"\nPress → WebSocket latency, ms ({args.presses} presses each; {cores} cores)\n")
        print("| path | n | p50 | p95 | p99 | max |")
        print("|---|---|---|---|---|---|")
        print(row("baseline: raw broker hop (paho subscriber on edge broker), idle", hop_alone))
        print(row("shouwang: press → edge → cloud broker (part of the next row), idle", up_alone))
        print(row("shouwang: press → edge → cloud → WebSocket, idle", alone))
        print(row(f"baseline: raw broker hop, {args.load_rate:.0f} telemetry msg/s", hop_loaded))
        rate = f"{args.load_rate:.0f} telemetry msg/s"
        print(row(f"shouwang: press → cloud broker, {rate}", up_loaded))
        print(row(f"shouwang: press → WebSocket, {args.load_rate:.0f} telemetry msg/s", loaded))
        ratio = statistics.median(alone) / statistics.median(hop_alone)
        print(f"\nmedian e2e / raw hop (idle): {ratio:.1f}×")
        print(f"edge ingested {telemetry:.0f} telemetry messages during the loaded run")
    finally:
        system.stop()


if __name__ == "__main__":
    asyncio.run(main())
