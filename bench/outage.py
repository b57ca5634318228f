"""Outage and recovery: backlog drain rate, first alert after reconnect, disk per reading.

The cloud broker is stopped while a load generator sends wearable telemetry and a button is
pressed; then it comes back. Measured: how long until the edge reconnects, how long from
reconnect to the first SOS on a dashboard WebSocket, how fast the telemetry backlog drains into
the cloud, and how many outbox bytes a buffered reading costs. Baseline in the same run: a bare
paho client publishing the same number of readings, one per QoS 1 message, to the same broker.
Both brokers speak TLS only, as deployed; every client verifies them.

    .venv/bin/python bench/outage.py --rate 4000 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from typing import Any

import aiohttp
import paho.mqtt.client as paho
from harness import (  # type: ignore[import-not-found]
    System,
    auth_headers,
    broker_config,
    metric,
    paho_connect,
)
from paho.mqtt.enums import CallbackAPIVersion

from shouwang.services import Mosquitto
from simulators.button import Button

LOAD_DEVICES = 100
SOS = 10


async def health(port: int) -> dict[str, Any] | None:
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/healthz") as r,
        ):
            return dict(await r.json())
    except aiohttp.ClientError:
        return None


async def healthy(port: int) -> bool:
    h = await health(port)
    return bool(h and h["cloud_broker"])


async def outbox_empty(port: int) -> bool:
    h = await health(port)
    return bool(h is not None and not h["outbox"])


def raw_publish_rate(broker: Mosquitto, n: int, payload: bytes) -> float:
    """Messages/s for `n` QoS 1 publishes of `payload` with at most 1,000 in flight.

    The window matters: paho breaks with more than about 65k unacknowledged QoS 1 messages.
    """
    window = threading.Semaphore(1000)
    done = threading.Event()
    acked = 0

    def on_publish(client: paho.Client, userdata: object, mid: int, rc: object, p: object) -> None:
        nonlocal acked
        acked += 1
        window.release()
        if acked == n:
            done.set()

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw-publisher")
    client.max_inflight_messages_set(1000)
    client.on_publish = on_publish
    paho_connect(client, broker)
    start = time.perf_counter()
    for _ in range(n):
        window.acquire()
        client.publish("bench/raw", payload, qos=1)
    finished = done.wait(600)
    elapsed = time.perf_counter() - start
    client.disconnect()
    client.loop_stop()
    if not finished:
        raise SystemExit(f"bench: raw publisher: {acked} of {n} acknowledged in 600 s")
    return n / elapsed


async def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rate", type=float, default=4000, help="telemetry msgs/s during the outage")
    ap.add_argument("--seconds", type=float, default=20, help="outage length")
    ap.add_argument(
        "--confirm",
        choices=["cloud", "broker"],
        default="cloud",
        help="uplink.confirm: rows leave the outbox on the cloud's confirmation or the PUBACK",
    )
    args = ap.parse_args()
    devices = [{"id": "btn-bench-0001", "profile": "emergency_button", "resident": "r-bench"}]
    devices += [{"id": f"wear-load-{i:04d}", "profile": "wearable"} for i in range(LOAD_DEVICES)]
    system = System(devices, {"uplink": {"confirm": args.confirm}})
    try:
        system.start()
        await asyncio.sleep(1.0)
        system.cloud_broker.stop()
        load = system.spawn_load(args.rate, LOAD_DEVICES, args.seconds)
        async with Button(broker_config(system.edge_broker), "btn-bench-0001") as button:
            for _ in range(SOS):
                await button.press()
                await asyncio.sleep(args.seconds / SOS)
        await asyncio.to_thread(load.wait)
        system.check_exit(load, "load")
        accepted = await metric(system.edge_http, "shouwang_messages_in_total", kind="telemetry")
        await asyncio.sleep(1.0)  # let the last batch commit
        outbox = system.work / "edge" / "outbox.sqlite"
        db_bytes = outbox.stat().st_size
        wal = outbox.with_name("outbox.sqlite-wal")
        wal_bytes = wal.stat().st_size if wal.exists() else 0

        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(
                f"http://127.0.0.1:{system.http_port}/api/ws",
                headers=await auth_headers(system.http_port),
            ) as ws,
        ):
            await ws.receive_json(timeout=10)  # snapshot: nothing yet
            system.cloud_broker.start()
            t_up = time.perf_counter()
            while not await healthy(system.edge_http):
                await asyncio.sleep(0.01)
            t_conn = time.perf_counter()
            first = await ws.receive_json(timeout=60)
            t_alert = time.perf_counter()
            assert first["type"] == "alert"
        deadline = time.perf_counter() + 300
        while (
            stored := await metric(system.http_port, "shouwang_readings_stored_total")
        ) < accepted:
            if time.perf_counter() > deadline:
                raise SystemExit(f"drain stalled: {stored:.0f} of {accepted:.0f} readings stored")
            await asyncio.sleep(0.05)
        t_drained = time.perf_counter()
        while not await outbox_empty(system.edge_http):
            if time.perf_counter() > deadline:
                raise SystemExit("the outbox never emptied")
            await asyncio.sleep(0.05)
        t_empty = time.perf_counter()
        raw = await asyncio.to_thread(
            raw_publish_rate, system.cloud_broker, int(accepted), b"x" * 120
        )

        drain_s = t_drained - t_conn
        print(
            f"\nOutage of {args.seconds:.0f} s at {args.rate:.0f} telemetry msgs/s, {SOS} SOS "
            f"presses; {accepted:.0f} readings buffered; uplink.confirm: {args.confirm}\n"
        )
        print("| measure | value |")
        print("|---|---|")
        print(
            f"| edge reconnect after the cloud broker is back | {(t_conn - t_up) * 1000:.0f} ms |"
        )
        print(
            f"| first SOS on the dashboard after reconnect | {(t_alert - t_conn) * 1000:.0f} ms |"
        )
        print(f"| backlog drain: readings/s into the cloud store | {accepted / drain_s:,.0f} |")
        print(
            "| outbox empty (every row confirmed) after reconnect | "
            f"{(t_empty - t_conn) * 1000:,.0f} ms |"
        )
        print(f"| baseline: raw paho QoS 1 publishes/s, one reading each | {raw:,.0f} |")
        print(f"| outbox database bytes per buffered reading | {db_bytes / accepted:.0f} |")
        print(f"| write-ahead log at the end of the outage | {wal_bytes / 1e6:.1f} MB |")
    finally:
        system.stop()


if __name__ == "__main__":
    asyncio.run(main())
