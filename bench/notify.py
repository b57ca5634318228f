"""Notification latency: Dispatcher → local push service (VAPID checked, payload decrypted), and
Dispatcher → Apprise → local webhook, each beside a raw baseline measured in the same run.

    .venv/bin/python bench/notify.py --alerts 200 --fanout 100
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import apprise
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cloud.notify import NotifyConfig, build_notify  # noqa: E402
from cloud.notify.config import AppriseConfig, WebPushConfig  # noqa: E402
from cloud.notify.routes import subscription_id  # noqa: E402
from cloud.notify.tables import save_subscription  # noqa: E402
from cloud.store import Store  # noqa: E402
from shouwang.clock import SystemClock  # noqa: E402
from shouwang.services import free_port  # noqa: E402
from simulators.push_service import running_push_service  # noqa: E402


def alert(n: int) -> dict[str, Any]:
    return {"id": f"B{n:06d}", "site": "bench", "type": "sos", "severity": "critical",
            "life_safety": True, "ts": int(time.time() * 1000), "location": "bldg-1/101"}


def row(name: str, samples_ms: list[float]) -> list[str]:
    ordered = sorted(samples_ms)

    def rank(q: float) -> str:  # nearest rank: always one of the samples
        return f"{ordered[max(0, math.ceil(q * len(ordered)) - 1)]:.1f}"

    return [name, str(len(ordered)), rank(0.5), rank(0.95), rank(0.99), f"{ordered[-1]:.1f}"]


def table(rows: list[list[str]]) -> str:
    head = ["path", "n", "p50 ms", "p95 ms", "p99 ms", "max ms"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


async def timed(n: int, call: Any) -> list[float]:
    out = []
    for i in range(n):
        start = time.perf_counter()
        await call(i)
        out.append((time.perf_counter() - start) * 1000)
    return out


async def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.ERROR)
    work = Path(tempfile.mkdtemp(prefix="shouwang-bench-notify-"))
    clock = SystemClock()
    received: list[int] = []

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        received.append(1)
        return web.json_response({"ok": True})

    async def raw(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=201)

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_post("/raw", raw)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    urls = work / "urls.yaml"
    urls.write_text(f"role:bench:\n  - json://127.0.0.1:{port}/hook\n")

    store = await Store.connect(f"sqlite+aiosqlite:///{work}/cloud.sqlite")
    config = NotifyConfig(webpush=WebPushConfig(allow_http_endpoints=True),
                          apprise=AppriseConfig(urls_file=urls))
    dispatcher = build_notify(config, store, clock)
    await dispatcher.start(run=False)
    rows: list[list[str]] = []
    try:
        async with running_push_service(clock) as push, aiohttp.ClientSession() as http:
            push.expected_key = dispatcher.notifiers["webpush"].keys.public_key  # type: ignore[attr-defined]
            for u in range(args.fanout):
                sub = push.subscribe().to_json()
                await save_subscription(store, {
                    "id": subscription_id(sub["endpoint"]), "user_id": f"u{u}",
                    "endpoint": sub["endpoint"], "p256dh": sub["keys"]["p256dh"],
                    "auth": sub["keys"]["auth"], "created_ms": clock.now_ms(),
                })
            body = os.urandom(300)  # about the size of an encrypted critical alert

            async def baseline_post(_i: int) -> None:
                async with http.post(f"http://127.0.0.1:{port}/raw", data=body,
                                     headers={"TTL": "60"}) as res:
                    assert res.status == 201

            async def push_one(i: int) -> None:
                [r] = await dispatcher.notify("user:u0", alert(i), "bench")
                assert r["result"] == "delivered", r

            rows.append(row("baseline: raw aiohttp POST of 300 bytes",
                            await timed(args.alerts, baseline_post)))
            rows.append(row("webpush: notify() → push service decrypted, attempt stored",
                            await timed(args.alerts, push_one)))

            fan: list[float] = []
            for k in range(5):
                start = time.perf_counter()
                await asyncio.gather(*(dispatcher.notify(f"user:u{u}", alert(10**5 + k), "bench")
                                       for u in range(args.fanout)))
                fan.append((time.perf_counter() - start) * 1000)
            rows.append(row(f"webpush: one alert to {args.fanout} users at once (whole fan-out)",
                            fan))
            assert not push.refused, push.refused

            def raw_apprise() -> None:
                a = apprise.Apprise()
                a.add(f"json://127.0.0.1:{port}/hook")
                assert a.notify(title="t", body="b")

            async def baseline_apprise(_i: int) -> None:
                await asyncio.to_thread(raw_apprise)

            async def apprise_one(i: int) -> None:
                [r] = await dispatcher.notify("role:bench", alert(2 * 10**5 + i), "bench")
                assert r["result"] == "delivered", r

            n = max(1, args.alerts // 2)
            rows.append(row("baseline: Apprise json:// in a thread, no dispatcher",
                            await timed(n, baseline_apprise)))
            rows.append(row("apprise: notify() → local webhook, attempt stored",
                            await timed(n, apprise_one)))
    finally:
        await dispatcher.stop()
        await store.close()
        await runner.cleanup()
    print(f"notification latency, {args.alerts} critical alerts one at a time (SQLite store, "
          "synchronous=FULL)")
    print(table(rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--alerts", type=int, default=200)
    parser.add_argument("--fanout", type=int, default=100)
    asyncio.run(main(parser.parse_args()))
