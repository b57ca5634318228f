"""Presses through kill -9: every accepted press exactly one alert, however the edge dies.

Each of N buttons is pressed once, a different one every 10 ms, while the edge daemon is
killed with SIGKILL at random points and started again; then every alert in the cloud is
counted per button. Baseline in the same run: the same presses with no kill. (Issue 12,
finding 4; `tests/scenarios/test_crash_presses.py` is the short version in `make test`.)

    .venv/bin/python bench/crash_presses.py --buttons 3000 --kills 10
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from typing import Any

import aiohttp
from harness import EDGE_BROKERS, System, auth_headers, broker_config  # type: ignore[import-not-found]

from simulators.crash import EdgeKiller, buttons, press_in_turn

LOCATION = "bench/street/community/grid/b1/u1/f1/101"


async def alerts(port: int) -> list[dict[str, Any]]:
    headers = await auth_headers(port)
    found: list[dict[str, Any]] = []
    cursor = None
    async with aiohttp.ClientSession() as http:
        while True:
            query = "limit=500" + (f"&cursor={cursor}" if cursor else "")
            async with http.get(f"http://127.0.0.1:{port}/api/alerts?{query}",
                                headers=headers) as r:
                page = await r.json()
            found += page["alerts"]
            cursor = page["next_cursor"]
            if cursor is None:
                return found


async def one_run(n: int, kills: int, seed: int) -> dict[str, Any]:
    devices = buttons(n)
    system = System([{"id": d, "profile": "emergency_button", "resident": f"r-{d}",
                      "location": LOCATION} for d in devices])
    killer = EdgeKiller(system.work / "edge.yaml", system.work / "edge.log", seed)
    accepted: dict[str, str] = {}
    try:
        system.start(edge=False)
        await killer.start()
        await asyncio.to_thread(system.wait_connected, "edge", system.edge_http, EDGE_BROKERS, 60)
        started = time.monotonic()
        broker = broker_config(system.edge_broker)
        presses = asyncio.create_task(press_in_turn(broker, devices, 0.01, accepted))
        if kills:
            await killer.kill_now_and_then(kills, 0.5, max(1.0, n * 0.01 / kills))
        await presses
        pressed_s = time.monotonic() - started
        deadline = time.monotonic() + 300
        stored: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            stored = await alerts(system.http_port)
            if len(stored) >= len(accepted):
                break
            await asyncio.sleep(0.5)
        settled_s = time.monotonic() - started
        await asyncio.sleep(3)  # anything late (a doubled press) shows now
        stored = await alerts(system.http_port)
    finally:
        await killer.stop()
        system.stop()
    per_device = Counter(a["device"] for a in stored if a["type"] == "sos")
    have = {a["source_id"] for a in stored}
    return {
        "kills": killer.kills, "accepted": len(accepted), "alerts": len(stored),
        "missing": sum(1 for i in accepted.values() if i not in have),
        "doubled": sum(1 for c in per_device.values() if c > 1),
        "pressed_s": pressed_s, "settled_s": settled_s,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--buttons", type=int, default=3000)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=4)
    args = parser.parse_args()
    rows = [("baseline: no kill", await one_run(args.buttons, 0, args.seed)),
            (f"edge killed {args.kills} times", await one_run(args.buttons, args.kills, args.seed))]
    print("| run | buttons pressed (accepted) | alerts | missing | doubled | kills "
          "| pressing s | all stored s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['accepted']} | {r['alerts']} | {r['missing']} | {r['doubled']} "
              f"| {r['kills']} | {r['pressed_s']:.1f} | {r['settled_s']:.1f} |")


if __name__ == "__main__":
    asyncio.run(main())
